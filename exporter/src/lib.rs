//! nodesleuth: a Prometheus exporter for the Kubernetes node failures operators diagnose by hand.

pub mod bpf;
pub mod bpf_source;
pub mod cli;
pub mod collectors;
pub mod doctor;
pub mod genl;
pub mod logging;
pub mod metrics;
pub mod netns;
pub mod pods;
pub mod procfs;
pub mod registry;
pub mod server;
pub mod sock_diag;
pub mod sockets;
pub mod topn;
pub mod webconfig;

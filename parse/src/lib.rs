//! Pure parsers for the kernel text and binary formats nodesleuth reads.
//!
//! Every function here takes bytes and returns structs: no file system, no sockets, no clocks. The exporter's
//! collectors do the I/O and hand the bytes over, so the same parser runs on a fixture tree, on the live host
//! and under a fuzzer. Hot-path parsers (one call per socket or connection row) do not allocate per line.

pub mod cgroup;
pub mod genl;
pub mod gobuildinfo;
pub mod hex;
pub mod inet_diag;
pub mod ipvs;
pub mod netlink;
pub mod netstat;
pub mod output;
pub mod proc_net_tcp;
pub mod smaps;
pub mod tcp_state;

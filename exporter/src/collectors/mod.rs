//! One module per data source. Each collector states at the top of its file what failure it catches, what it
//! reads and what it exports, and offers `XArgs` (its flags, flattened into the command line) and
//! `build(&XArgs, &Shared)`.

use std::sync::Arc;

use crate::cli::ExporterArgs;
use crate::pods::PodResolver;
use crate::registry::Collector;
use crate::sockets::{ScanConfig, SocketScanner};

pub mod ipvs;
pub mod memory;
pub mod systemd;
pub mod tcp;

/// What collectors share: built once at start-up.
pub struct Shared {
    pub pods: Arc<PodResolver>,
    /// The per-scrape socket scan of every network namespace (used by `tcp` and `ipvs`).
    pub sockets: Arc<SocketScanner>,
}

impl Shared {
    pub fn new(args: &ExporterArgs, enabled: &[&str]) -> Shared {
        let pods = Arc::new(PodResolver::new(args.pod_logs.clone(), args.container_logs.clone()));
        let scan = ScanConfig {
            source: args.tcp.source,
            exact_dump: args.tcp.exact_counts,
            ipvs_clients: enabled.contains(&"ipvs"),
        };
        let sockets = SocketScanner::new(scan, pods.clone());
        Shared { pods, sockets }
    }
}

/// Builds the named collector, or `None` for an unknown name.
pub fn build(name: &str, args: &ExporterArgs, shared: &Shared) -> Option<Arc<dyn Collector>> {
    Some(match name {
        "tcp" => tcp::build(&args.tcp, shared),
        "ipvs" => ipvs::build(&args.ipvs, shared),
        "memory" => memory::build(&args.memory, shared),
        "systemd" => systemd::build(&args.systemd, shared),
        _ => return None,
    })
}

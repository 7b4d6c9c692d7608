//! One module per data source. Each collector states at the top of its file what failure it catches, what it
//! reads and what it exports, and declares in one place — its `SPEC` — its name, whether it is on by default, a
//! one-line description and how it is built from its flags (`XArgs`, flattened into [`CollectorArgs`]). Adding a
//! collector is its file plus one line in [`ALL`] and one field in [`CollectorArgs`].

use std::sync::Arc;

use crate::cli::ExporterArgs;
use crate::pods::PodResolver;
use crate::registry::Collector;
use crate::sockets::{ScanConfig, SocketScanner};

pub mod ipvs;
pub mod memory;
pub mod output;
pub mod systemd;
pub mod tcp;

/// What the registry and the command line know of a collector.
pub struct CollectorSpec {
    /// `--collector.<name>`, the `collector` label.
    pub name: &'static str,
    pub enabled_by_default: bool,
    /// One line for `--help`.
    pub help: &'static str,
    pub build: fn(&CollectorArgs, &Shared) -> Arc<dyn Collector>,
}

/// Every collector, in the order they are listed and run.
pub const ALL: &[CollectorSpec] = &[tcp::SPEC, ipvs::SPEC, memory::SPEC, output::SPEC, systemd::SPEC];

/// Every collector's flags.
#[derive(clap::Args, Debug, Clone)]
pub struct CollectorArgs {
    #[command(flatten)]
    pub tcp: tcp::TcpArgs,
    #[command(flatten)]
    pub ipvs: ipvs::IpvsArgs,
    #[command(flatten)]
    pub memory: memory::MemoryArgs,
    #[command(flatten)]
    pub output: output::OutputArgs,
    #[command(flatten)]
    pub systemd: systemd::SystemdArgs,
}

/// What collectors share: built once at start-up.
pub struct Shared {
    pub pods: Arc<PodResolver>,
    /// The per-scrape socket scan of every network namespace (used by `tcp` and `ipvs`).
    pub sockets: Arc<SocketScanner>,
}

impl Shared {
    pub fn new(args: &ExporterArgs, enabled: &[&str]) -> Shared {
        let pods = Arc::new(PodResolver::new(args.paths.pod_logs.clone(), args.paths.container_logs.clone()));
        let scan = ScanConfig {
            source: args.collectors.tcp.source,
            exact_dump: args.collectors.tcp.exact_counts,
            one_walk_max_established: args.collectors.tcp.one_walk_max_established,
            ipvs_clients: enabled.contains(&"ipvs"),
            ebpf_resync_interval: args.collectors.tcp.ebpf_resync_interval,
            procfs_is_kernel: crate::sockets::is_procfs_mount(&args.paths.procfs),
        };
        let sockets = SocketScanner::new(scan, pods.clone());
        Shared { pods, sockets }
    }
}

/// Builds the named collector, or `None` for an unknown name.
pub fn build(name: &str, args: &CollectorArgs, shared: &Shared) -> Option<Arc<dyn Collector>> {
    ALL.iter().find(|spec| spec.name == name).map(|spec| (spec.build)(args, shared))
}

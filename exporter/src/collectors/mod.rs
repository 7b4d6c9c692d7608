//! One module per data source. Each collector states at the top of its file what failure it catches, what it
//! reads and what it exports, and offers `XArgs` (its flags, flattened into the command line) and
//! `build(&XArgs, &Shared)`.

use std::sync::Arc;

use crate::cli::ExporterArgs;
use crate::pods::PodResolver;
use crate::registry::Collector;

pub mod memory;
pub mod systemd;
pub mod tcp;

/// What collectors share: built once at start-up.
pub struct Shared {
    pub pods: Arc<PodResolver>,
}

/// Builds the named collector, or `None` for an unknown name.
pub fn build(name: &str, args: &ExporterArgs, shared: &Shared) -> Option<Arc<dyn Collector>> {
    Some(match name {
        "tcp" => tcp::build(&args.tcp, shared),
        "memory" => memory::build(&args.memory, shared),
        "systemd" => systemd::build(&args.systemd, shared),
        _ => return None,
    })
}

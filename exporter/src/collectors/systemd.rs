//! Placeholder: being written. See the issue for the systemd collector.

use std::sync::Arc;

use crate::metrics::Sink;
use crate::registry::{CollectError, Collector, ScrapeContext};

/// Flags of the systemd collector.
#[derive(clap::Args, Debug, Clone)]
pub struct SystemdArgs {}

pub fn build(_args: &SystemdArgs, _shared: &super::Shared) -> Arc<dyn Collector> {
    Arc::new(SystemdCollector)
}

struct SystemdCollector;

impl Collector for SystemdCollector {
    fn name(&self) -> &'static str {
        "systemd"
    }

    fn collect(&self, _ctx: &ScrapeContext, _sink: &mut Sink) -> Result<(), CollectError> {
        Err(CollectError::Other("not implemented yet".into()))
    }
}

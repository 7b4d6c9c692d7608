//! Placeholder: being written. See the issue for the memory collector.

use std::sync::Arc;

use crate::metrics::Sink;
use crate::registry::{CollectError, Collector, ScrapeContext};

/// Flags of the memory collector.
#[derive(clap::Args, Debug, Clone)]
pub struct MemoryArgs {}

pub fn build(_args: &MemoryArgs, _shared: &super::Shared) -> Arc<dyn Collector> {
    Arc::new(MemoryCollector)
}

struct MemoryCollector;

impl Collector for MemoryCollector {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn collect(&self, _ctx: &ScrapeContext, _sink: &mut Sink) -> Result<(), CollectError> {
        Err(CollectError::Other("not implemented yet".into()))
    }
}

//! The `nodesleuth` binary: the exporter by default, `nodesleuth relay` for the alert relay.

use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

use nodesleuth::cli::{self, Cli};
use nodesleuth::collectors::{self, Shared};
use nodesleuth::registry::{Collector, HostPaths, Registry};
use nodesleuth::server::{self, ServerConfig};
use nodesleuth::webconfig::WebConfig;

fn main() -> std::process::ExitCode {
    let matches = cli::augment(Cli::command()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if let Err(e) = nodesleuth::logging::init(&cli.log.level, &cli.log.format) {
        eprintln!("nodesleuth: {e:#}");
        return std::process::ExitCode::from(2);
    }
    std::panic::set_hook(Box::new(|info| tracing::error!(panic = %info, "panic")));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(32)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            None => run_exporter(cli.exporter, cli::enabled_collectors(&matches)).await,
            Some(cli::Command::Relay(args)) => nodesleuth_relay::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run_exporter(args: cli::ExporterArgs, enabled: Vec<&'static str>) -> anyhow::Result<()> {
    let listen = server::listen_addr(&args.listen_address).map_err(anyhow::Error::msg)?;
    let web = match &args.web_config_file {
        Some(p) => WebConfig::load(p).with_context(|| "--web.config.file")?,
        None => WebConfig::default(),
    };
    let host = HostPaths {
        procfs: args.procfs.clone(),
        rootfs: args.rootfs.clone(),
        pod_logs: args.pod_logs.clone(),
        container_logs: args.container_logs.clone(),
    };
    let shared = Shared::new(&args, &enabled);
    let collectors: Vec<Arc<dyn Collector>> = enabled
        .iter()
        .map(|name| {
            collectors::build(name, &args.collectors, &shared)
                .ok_or_else(|| anyhow::anyhow!("collector {name} is not built"))
        })
        .collect::<anyhow::Result<_>>()?;
    tracing::info!(version = cli::VERSION, collectors = enabled.join(","), procfs = %host.procfs.display(), "starting nodesleuth");
    let cfg = ServerConfig {
        listen,
        telemetry_path: args.telemetry_path.clone(),
        max_requests: args.max_requests,
        collector_timeout: args.collector_timeout,
        web,
    };
    let app = server::router(Registry::new(host, collectors), &cfg);
    server::serve(app, &cfg).await
}

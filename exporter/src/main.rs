//! The `nodesleuth` binary: the exporter by default, `nodesleuth relay` for the alert relay.

use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

use nodesleuth::cli::{self, Cli};
use nodesleuth::collectors::{self, Shared};
use nodesleuth::registry::{Collector, Registry};
use nodesleuth::server::{self, ServerConfig};
use nodesleuth::webconfig::WebConfig;

fn main() -> std::process::ExitCode {
    // `nodesleuth doctor` exits 2 for "critical": its usage errors take EX_USAGE (64) instead of clap's 2.
    let doctor = std::env::args_os().skip(1).any(|a| a == "doctor");
    let usage_exit = |e: clap::Error| -> ! {
        if doctor && e.use_stderr() {
            let _ = e.print();
            std::process::exit(i32::from(nodesleuth::doctor::EXIT_USAGE));
        }
        e.exit()
    };
    let matches = cli::augment(Cli::command()).try_get_matches().unwrap_or_else(|e| usage_exit(e));
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| usage_exit(e));
    // The doctor prints its own findings; collector log lines would only repeat them (unless asked for).
    let level = match (&cli.command, matches.value_source("level")) {
        (Some(cli::Command::Doctor(_)), Some(clap::parser::ValueSource::DefaultValue) | None) => "error",
        _ => cli.log.level.as_str(),
    };
    if let Err(e) = nodesleuth::logging::init(level, &cli.log.format) {
        eprintln!("nodesleuth: {e:#}");
        return std::process::ExitCode::from(if doctor { nodesleuth::doctor::EXIT_USAGE } else { 2 });
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
            return std::process::ExitCode::from(if doctor { nodesleuth::doctor::EXIT_INTERNAL } else { 1 });
        }
    };
    if let Some(cli::Command::Doctor(args)) = cli.command {
        let enabled = matches.subcommand_matches("doctor").map(cli::enabled_collectors).unwrap_or_default();
        let code = runtime.block_on(nodesleuth::doctor::run(*args, enabled));
        // A collector thread stuck in the kernel (a hung /proc read) must not hold the exit: the runtime is not
        // dropped (that would wait for its blocking threads).
        std::process::exit(i32::from(code));
    }
    let result = runtime.block_on(async {
        match cli.command {
            None => run_exporter(cli.exporter, cli::enabled_collectors(&matches)).await,
            Some(cli::Command::Relay(args)) => nodesleuth_relay::run(args).await,
            Some(cli::Command::Doctor(_)) => unreachable!("handled above"),
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
    let host = args.paths.clone();
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

//! `nodesleuth relay`: Alertmanager webhooks to DingTalk and WeCom group robots.
//!
//! Alertmanager posts a notification to `POST /alertmanager/<target>` (or, for drop-in migration from
//! prometheus-webhook-dingtalk, `POST /dingtalk/<target>/send`). The relay renders the alerts as markdown, splits
//! them to fit the platform's size limit, queues them behind the robot's rate limit (merging queued notifications
//! into digests), and answers Alertmanager only once the robot accepted every part: 2xx when delivered, 503 when
//! a retry can help, 4xx with the reason when it cannot. See `relay/README.md`.

pub mod alert;
pub mod config;
pub mod dispatch;
pub mod markdown;
pub mod metrics;
pub mod render;
pub mod robot;
mod server;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{ConfigError, FileConfig, InboundAuth};
use crate::dispatch::{Limits, Worker};
use crate::metrics::Metrics;
use crate::render::Renderer;
use crate::robot::Robot;
use crate::server::AppState;

/// Command-line arguments of `nodesleuth relay`.
#[derive(clap::Args, Debug, Clone)]
pub struct RelayArgs {
    /// The relay's YAML configuration (targets, auth, limits).
    #[arg(long = "config", env = "NODESLEUTH_RELAY_CONFIG", default_value = "/etc/nodesleuth/relay.yaml")]
    pub config: PathBuf,
    /// Address to listen on for Alertmanager webhooks, /metrics and /healthz (`:9898` means all IPv4 addresses).
    #[arg(long = "web.listen-address", default_value = "0.0.0.0:9898", value_parser = parse_listen_address)]
    pub listen_address: SocketAddr,
    /// Validate the configuration and templates, then exit.
    #[arg(long = "check-config", default_value_t = false)]
    pub check_config: bool,
}

/// `host:port`, or `:port` as Prometheus tools (and prometheus-webhook-dingtalk) write it.
fn parse_listen_address(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') { format!("0.0.0.0{s}") } else { s.to_string() };
    full.parse().map_err(|e| format!("{s:?} is not an address like 0.0.0.0:9898 or :9898 ({e})"))
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    // The cause is in the message, not chained as a source: `{:#}` would print it twice.
    #[error("cannot listen on {addr}: {error}")]
    Bind { addr: SocketAddr, error: std::io::Error },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// A configured relay: its targets' sender tasks are running (construct it inside a tokio runtime).
pub struct Relay {
    state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Load and validate the configuration file (secrets, templates, time zones), then start the senders.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let cfg = FileConfig::load(path)?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Self::from_config(cfg, base)
    }

    /// Build from a parsed configuration; relative file paths (secrets, templates) are resolved against `base`.
    pub fn from_config(cfg: FileConfig, base: &Path) -> Result<Self, ConfigError> {
        if cfg.targets.is_empty() {
            return Err(ConfigError::Invalid("the configuration has no targets".to_string()));
        }
        let metrics = Arc::new(Metrics::new());
        let default_auth = InboundAuth::resolve(cfg.auth.as_ref(), "auth", base)?;
        let mut workers = HashMap::new();
        let mut auth = HashMap::new();
        for (name, t) in &cfg.targets {
            let terr = |reason: String| ConfigError::Target { target: name.clone(), reason };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(terr("target names may use only letters, digits, '-', '_' and '.'".to_string()));
            }
            if t.rate_limit.messages == 0 || t.rate_limit.window.0.is_zero() {
                return Err(terr("rate_limit needs messages >= 1 and a non-zero window".to_string()));
            }
            let renderer = Renderer::new(name, t, base)?;
            let url = t.url.resolve(&format!("target {name} url"), base)?;
            let secret = match &t.secret {
                Some(s) => Some(s.resolve(&format!("target {name} secret"), base)?),
                None => None,
            };
            let robot = Robot::new(t.kind, &url, secret, t.timeout.0).map_err(terr)?;
            let limits = Limits {
                messages: t.rate_limit.messages as usize,
                window: t.rate_limit.window.0,
                rate_limited_backoff: t
                    .rate_limited_backoff
                    .map(|d| d.0)
                    .unwrap_or_else(|| t.kind.default_rate_limited_backoff()),
                dedup_window: cfg.server.dedup_window.0,
            };
            let route_auth = match &t.auth {
                Some(a) => InboundAuth::resolve(Some(a), &format!("target {name}"), base)?,
                None => default_auth.clone(),
            };
            workers.insert(name.clone(), Arc::new(Worker::new(name.clone(), renderer, robot, metrics.clone(), limits)));
            auth.insert(name.clone(), route_auth);
        }
        let (shutdown, rx) = watch::channel(false);
        let tasks = workers.values().map(|w| tokio::spawn(w.clone().run(rx.clone()))).collect();
        Ok(Relay {
            state: Arc::new(AppState {
                workers,
                auth,
                metrics,
                max_body_bytes: cfg.server.max_body_bytes,
                max_wait: cfg.server.max_wait.0,
            }),
            shutdown,
            tasks,
        })
    }

    /// The axum router (webhook routes, /healthz, /metrics).
    pub fn router(&self) -> axum::Router {
        server::router(self.state.clone())
    }

    /// The relay's metrics in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        self.state.metrics.render()
    }

    /// Serve on `listener` until `signal` completes, then finish in-flight requests and stop the senders.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        signal: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), RelayError> {
        let result =
            axum::serve(listener, self.router()).with_graceful_shutdown(signal).await.map_err(RelayError::Serve);
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        result
    }

    /// Bind `addr` (use port 0 for an ephemeral port) and serve in the background.
    pub async fn spawn(self, addr: SocketAddr) -> Result<RunningRelay, RelayError> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|error| RelayError::Bind { addr, error })?;
        let local = listener.local_addr().map_err(|error| RelayError::Bind { addr, error })?;
        let metrics = self.state.metrics.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(self.serve(listener, async {
            let _ = stopped.await;
        }));
        Ok(RunningRelay { addr: local, metrics, stop: Some(stop), task })
    }
}

/// A relay serving in the background (see [`Relay::spawn`]).
pub struct RunningRelay {
    pub addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RelayError>>,
}

impl RunningRelay {
    pub fn metrics_text(&self) -> String {
        self.metrics.render()
    }

    /// Graceful stop: in-flight requests finish, then the senders stop.
    pub async fn stop(mut self) -> Result<(), RelayError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(RelayError::Serve(std::io::Error::other(e.to_string()))),
        }
    }
}

/// Run `nodesleuth relay` until SIGTERM or Ctrl-C.
pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let relay = Relay::from_file(&args.config)
        .with_context(|| format!("invalid relay configuration {}", args.config.display()))?;
    if args.check_config {
        tracing::info!(config = %args.config.display(), "relay configuration is valid");
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(args.listen_address)
        .await
        .map_err(|error| RelayError::Bind { addr: args.listen_address, error })?;
    tracing::info!(address = %args.listen_address, targets = relay.state.workers.len(), "relay listening");
    relay.serve(listener, shutdown_signal()).await?;
    tracing::info!("relay stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot install SIGTERM handler; only Ctrl-C stops the relay");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown requested; finishing in-flight notifications");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        relay: RelayArgs,
    }

    #[test]
    fn arguments() {
        let cli = Cli::parse_from(["relay", "--config", "/tmp/r.yaml", "--web.listen-address", "127.0.0.1:1234"]);
        assert_eq!(cli.relay.config, PathBuf::from("/tmp/r.yaml"));
        assert_eq!(cli.relay.listen_address, "127.0.0.1:1234".parse::<SocketAddr>().unwrap());
        assert!(!cli.relay.check_config);
        let cli = Cli::parse_from(["relay", "--check-config"]);
        assert_eq!(cli.relay.listen_address.port(), 9898);
        assert!(cli.relay.check_config);
        let cli = Cli::parse_from(["relay", "--web.listen-address", ":8060"]);
        assert_eq!(cli.relay.listen_address, "0.0.0.0:8060".parse::<SocketAddr>().unwrap());
        assert!(Cli::try_parse_from(["relay", "--web.listen-address", "nonsense"]).is_err());
    }

    #[tokio::test]
    async fn config_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let bad = [
            ("targets: {}\n", "no targets"),
            ("targets:\n  a:\n    kind: wecom\n    url: http://x/?key=k\n    timezone: Mars/Base\n", "Mars/Base"),
            ("targets:\n  a:\n    kind: wecom\n    url: http://x/send\n", "no key"),
            ("targets:\n  a:\n    kind: wecom\n    url: {file: missing}\n", "missing"),
            ("targets:\n  a:\n    kind: dingtalk\n    url: http://x/?access_token=t\n    max_bytes: 30000\n", "30000"),
            ("targets:\n  'a b':\n    kind: dingtalk\n    url: http://x/?access_token=t\n", "target names"),
            (
                "targets:\n  a:\n    kind: dingtalk\n    url: http://x/?access_token=t\n    rate_limit: {messages: 0, window: 1s}\n",
                "rate_limit",
            ),
        ];
        for (yaml, want) in bad {
            let cfg = FileConfig::from_yaml(yaml, Path::new("r.yaml")).unwrap();
            let err = Relay::from_config(cfg, dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }
}

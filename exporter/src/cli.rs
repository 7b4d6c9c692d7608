//! Command-line flags, spelled as node_exporter spells them so that existing DaemonSets and habits carry over.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, ArgMatches, Args, Parser, Subcommand};

/// Default listen port, chosen to stay clear of node_exporter (9100) and process-exporter (9256).
pub const DEFAULT_LISTEN: &str = ":9741";

#[derive(Parser, Debug)]
#[command(
    name = "nodesleuth",
    version,
    about = "Prometheus exporter for Kubernetes node failures: CLOSE_WAIT per pod, accept queues, and more."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub exporter: ExporterArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Relay Alertmanager webhooks to DingTalk and WeCom group robots (see relay/README.md).
    Relay(nodesleuth_relay::RelayArgs),
}

#[derive(Args, Debug, Clone)]
pub struct LogArgs {
    /// Only log messages with the given severity or above: debug, info, warn, error.
    #[arg(long = "log.level", default_value = "info", global = true)]
    pub level: String,
    /// Output format of log messages: logfmt or json.
    #[arg(long = "log.format", default_value = "logfmt", value_parser = ["logfmt", "json"], global = true)]
    pub format: String,
}

#[derive(Args, Debug, Clone)]
pub struct ExporterArgs {
    /// Address on which to expose metrics and the web interface (`:port` listens on all addresses).
    #[arg(long = "web.listen-address", default_value = DEFAULT_LISTEN)]
    pub listen_address: String,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics", value_parser = parse_telemetry_path)]
    pub telemetry_path: String,
    /// Path to a web configuration file (TLS and basic auth, exporter-toolkit format).
    #[arg(long = "web.config.file")]
    pub web_config_file: Option<PathBuf>,
    /// Maximum number of parallel scrape requests; 0 disables the limit.
    #[arg(long = "web.max-requests", default_value_t = 40)]
    pub max_requests: usize,
    /// procfs mountpoint (the DaemonSet mounts the host's at /host/proc).
    #[arg(long = "path.procfs", default_value = "/proc")]
    pub procfs: PathBuf,
    /// Root of the host filesystem (for /run/netns names).
    #[arg(long = "path.rootfs", default_value = "/")]
    pub rootfs: PathBuf,
    /// kubelet's pod log directory: <namespace>_<pod>_<uid>/ entries name pods.
    #[arg(long = "path.pod-logs", default_value = "/var/log/pods")]
    pub pod_logs: PathBuf,
    /// kubelet's container log links: <pod>_<namespace>_<container>-<id>.log entries name containers.
    #[arg(long = "path.container-logs", default_value = "/var/log/containers")]
    pub container_logs: PathBuf,
    /// Upper bound on one scrape's collection time; lowered to the scraper's
    /// X-Prometheus-Scrape-Timeout-Seconds minus 0.5 s when that is shorter.
    #[arg(long = "collector.timeout", default_value = "8s", value_parser = parse_duration)]
    pub collector_timeout: Duration,
    #[command(flatten)]
    pub tcp: crate::collectors::tcp::TcpArgs,
    #[command(flatten)]
    pub ipvs: crate::collectors::ipvs::IpvsArgs,
    #[command(flatten)]
    pub memory: crate::collectors::memory::MemoryArgs,
    #[command(flatten)]
    pub systemd: crate::collectors::systemd::SystemdArgs,
}

/// Collectors known to the binary: name, enabled by default, description.
pub const COLLECTORS: &[(&str, bool, &str)] = &[
    ("tcp", true, "TCP sockets per network namespace: states, CLOSE_WAIT owners, accept queues"),
    ("ipvs", true, "IPVS services, connection table, and client connections IPVS has forgotten (orphaned)"),
    ("memory", true, "process memory per container: RSS, anonymous, LazyFree (MADV_FREE), swap, Go runtime"),
    ("systemd", true, "systemd and dbus-daemon over D-Bus: reply serial, hangs, unit churn, key units"),
];

/// Adds `--collector.<name>` / `--no-collector.<name>` for every collector.
pub fn augment(mut cmd: clap::Command) -> clap::Command {
    for (name, default, help) in COLLECTORS {
        let on: &'static str = Box::leak(format!("collector.{name}").into_boxed_str());
        let off: &'static str = Box::leak(format!("no-collector.{name}").into_boxed_str());
        let state = if *default { "enabled" } else { "disabled" };
        let help_on: &'static str =
            Box::leak(format!("Enable the {name} collector ({state} by default): {help}.").into_boxed_str());
        cmd = cmd
            .arg(clap::Arg::new(on).long(on).action(ArgAction::SetTrue).overrides_with(off).help(help_on))
            .arg(clap::Arg::new(off).long(off).action(ArgAction::SetTrue).overrides_with(on).help("Disable it."));
    }
    cmd
}

/// Collector names enabled by defaults and flags.
pub fn enabled_collectors(m: &ArgMatches) -> Vec<&'static str> {
    COLLECTORS
        .iter()
        .filter(|(name, default, _)| {
            let on = m.get_flag(&format!("collector.{name}"));
            let off = m.get_flag(&format!("no-collector.{name}"));
            if on {
                true
            } else if off {
                false
            } else {
                *default
            }
        })
        .map(|(name, _, _)| *name)
        .collect()
}

/// A telemetry path must be absolute and must not take `/healthz`.
fn parse_telemetry_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with /"));
    }
    if s == "/healthz" || s.contains(['{', '}', '*']) {
        return Err(format!("{s:?} is reserved or not a plain path"));
    }
    Ok(s.to_string())
}

/// Parses `250ms`, `8s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let v: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Resolves `:9741` to `0.0.0.0:9741`; anything else must be a socket address.
pub fn listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    let s = if s.starts_with(':') { format!("0.0.0.0{s}") } else { s.to_string() };
    s.parse().map_err(|e| format!("invalid --web.listen-address {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn parse(args: &[&str]) -> (Cli, Vec<&'static str>) {
        let m = augment(Cli::command()).try_get_matches_from(args).unwrap();
        (Cli::from_arg_matches(&m).unwrap(), enabled_collectors(&m))
    }

    #[test]
    fn node_exporter_spellings_and_collector_toggles() {
        let (cli, enabled) = parse(&["nodesleuth", "--path.procfs", "/host/proc", "--no-collector.tcp"]);
        assert_eq!(cli.exporter.procfs, PathBuf::from("/host/proc"));
        assert!(!enabled.contains(&"tcp"));
        let (_, enabled) = parse(&["nodesleuth", "--no-collector.tcp", "--collector.tcp"]);
        assert!(enabled.contains(&"tcp"));
        let (cli, enabled) = parse(&["nodesleuth"]);
        assert_eq!(enabled, COLLECTORS.iter().filter(|c| c.1).map(|c| c.0).collect::<Vec<_>>());
        assert_eq!(listen_addr(&cli.exporter.listen_address).unwrap().port(), 9741);
    }

    #[test]
    fn telemetry_paths() {
        assert_eq!(parse_telemetry_path("/"), Ok("/".into()));
        assert!(parse_telemetry_path("metrics").is_err());
        assert!(parse_telemetry_path("/healthz").is_err());
        assert!(parse_telemetry_path("/m/{x}").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("8s").unwrap(), Duration::from_secs(8));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("x").is_err());
    }
}

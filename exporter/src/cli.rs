//! Command-line flags, spelled as node_exporter spells them so that existing DaemonSets and habits carry over.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, ArgMatches, Args, Parser, Subcommand};

/// Default listen port, chosen to stay clear of node_exporter (9100) and process-exporter (9256).
pub const DEFAULT_LISTEN: &str = ":9741";

/// `--version`: the crate version and the git revision it was built from.
pub const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (revision ", env!("NODESLEUTH_REVISION"), ", ", env!("NODESLEUTH_RUSTC"), ")");

#[derive(Parser, Debug)]
#[command(
    name = "nodesleuth",
    version = VERSION,
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
    /// Diagnose this node now: sample the collectors twice and print findings, worst first (exit 0 nothing,
    /// 1 warnings, 2 critical, 64 bad flags).
    Doctor(Box<crate::doctor::DoctorArgs>),
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
    #[command(flatten)]
    pub paths: crate::registry::HostPaths,
    /// Upper bound on one scrape's collection time; lowered to the scraper's
    /// X-Prometheus-Scrape-Timeout-Seconds minus 0.5 s when that is shorter.
    #[arg(long = "collector.timeout", default_value = "8s", value_parser = parse_positive_duration)]
    pub collector_timeout: Duration,
    /// Disable every collector not explicitly enabled with --collector.<name>.
    #[arg(long = "collector.disable-defaults")]
    pub disable_defaults: bool,
    /// Every collector's own flags, declared in its module.
    #[command(flatten)]
    pub collectors: crate::collectors::CollectorArgs,
}

/// Adds `--collector.<name>` / `--no-collector.<name>` for every collector of [`crate::collectors::ALL`], to the
/// exporter and to `nodesleuth doctor`.
pub fn augment(cmd: clap::Command) -> clap::Command {
    toggles(cmd).mut_subcommand("doctor", toggles)
}

fn toggles(mut cmd: clap::Command) -> clap::Command {
    for spec in crate::collectors::ALL {
        let (name, default, help) = (spec.name, spec.enabled_by_default, spec.help);
        let on: &'static str = Box::leak(format!("collector.{name}").into_boxed_str());
        let off: &'static str = Box::leak(format!("no-collector.{name}").into_boxed_str());
        let state = if default { "enabled" } else { "disabled" };
        let help_on: &'static str =
            Box::leak(format!("Enable the {name} collector ({state} by default): {help}.").into_boxed_str());
        cmd = cmd
            .arg(clap::Arg::new(on).long(on).action(ArgAction::SetTrue).overrides_with(off).help(help_on))
            .arg(clap::Arg::new(off).long(off).action(ArgAction::SetTrue).overrides_with(on).help("Disable it."));
    }
    cmd
}

/// Collector names enabled by defaults and flags (`--collector.disable-defaults` turns every default off).
pub fn enabled_collectors(m: &ArgMatches) -> Vec<&'static str> {
    let defaults_off = m.get_flag("disable_defaults");
    crate::collectors::ALL
        .iter()
        .filter(|spec| {
            let on = m.get_flag(&format!("collector.{}", spec.name));
            let off = m.get_flag(&format!("no-collector.{}", spec.name));
            if on {
                true
            } else if off {
                false
            } else {
                spec.enabled_by_default && !defaults_off
            }
        })
        .map(|spec| spec.name)
        .collect()
}

/// A path flag that must name an existing directory (a typo in `--path.procfs` otherwise yields an exporter that
/// runs and reports nothing).
pub(crate) fn existing_dir(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_dir() => Ok(p),
        Ok(_) => Err(format!("{s:?} is not a directory")),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
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

/// The longest duration any flag takes: beyond it a value is a typo, not a setting.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses a Prometheus-style duration: one or more `<integer><unit>` with units `ms`, `s`, `m`, `h`, `d` in
/// decreasing order (`250ms`, `8s`, `1m30s`, `1h`), or a bare number of seconds (`3`, `1.5`). Zero is allowed
/// (flags where it means "off"); anything above [`MAX_DURATION`] is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {s:?} (use e.g. 250ms, 8s, 1m30s, 1h)");
    if s.is_empty() {
        return Err(invalid());
    }
    let d = if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 || secs > MAX_DURATION.as_secs_f64() {
            return Err(format!("duration {s:?} is out of range (0 to {}h)", MAX_DURATION.as_secs() / 3600));
        }
        Duration::from_secs_f64(secs)
    } else {
        let units: [(&str, u64); 5] = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)];
        let mut rest = s;
        let mut total_ms: u64 = 0;
        let mut last_unit = None;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
            if digits == 0 {
                return Err(invalid());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            rest = &rest[digits..];
            let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let i = units.iter().position(|(u, _)| *u == unit).ok_or_else(invalid)?;
            if last_unit.is_some_and(|l| i <= l) {
                return Err(invalid()); // units must decrease: `1m30s`, not `30s1m`
            }
            last_unit = Some(i);
            total_ms = n
                .checked_mul(units[i].1)
                .and_then(|ms| total_ms.checked_add(ms))
                .ok_or_else(|| format!("duration {s:?} is out of range"))?;
        }
        Duration::from_millis(total_ms)
    };
    if d > MAX_DURATION {
        return Err(format!("duration {s:?} is out of range (0 to {}h)", MAX_DURATION.as_secs() / 3600));
    }
    Ok(d)
}

/// [`parse_duration`] for timeouts and budgets, where zero would mean "never succeed".
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?}: must be greater than zero")),
        d => Ok(d),
    }
}

/// A fraction in (0, 1].
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        Ok(_) => Err(format!("{s:?} must be greater than 0 and at most 1")),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
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
        let (cli, enabled) = parse(&["nodesleuth", "--path.procfs", "/sys", "--no-collector.tcp"]);
        assert_eq!(cli.exporter.paths.procfs, PathBuf::from("/sys"));
        assert!(!enabled.contains(&"tcp"));
        let (_, enabled) = parse(&["nodesleuth", "--no-collector.tcp", "--collector.tcp"]);
        assert!(enabled.contains(&"tcp"));
        let (cli, enabled) = parse(&["nodesleuth"]);
        assert_eq!(enabled, vec!["tcp", "ipvs", "memory", "output", "systemd"]);
        assert_eq!(crate::server::listen_addr(&cli.exporter.listen_address).unwrap().port(), 9741);
        let (_, enabled) = parse(&["nodesleuth", "--collector.disable-defaults", "--collector.ipvs"]);
        assert_eq!(enabled, vec!["ipvs"]);
    }

    fn rejects(args: &[&str]) -> String {
        match augment(Cli::command()).try_get_matches_from(args) {
            Ok(_) => panic!("{args:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn absurd_flag_values_are_refused_with_the_flag_named() {
        let e = rejects(&["nodesleuth", "--path.procfs", "/nonexistent/proc"]);
        assert!(e.contains("--path.procfs") && e.contains("No such file"), "{e}");
        let e = rejects(&["nodesleuth", "--collector.timeout", "0s"]);
        assert!(e.contains("--collector.timeout") && e.contains("greater than zero"), "{e}");
        let e = rejects(&["nodesleuth", "--collector.timeout", "9999999999999h"]);
        assert!(e.contains("out of range"), "{e}");
        let e = rejects(&["nodesleuth", "--collector.ipvs.near-expiry-ratio", "1.5"]);
        assert!(e.contains("near-expiry-ratio") && e.contains("at most 1"), "{e}");
        let e = rejects(&["nodesleuth", "--collector.systemd.timeout=-1"]);
        assert!(e.contains("--collector.systemd.timeout"), "{e}");
        let e = rejects(&["nodesleuth", "--collector.tcp.owner-search-budget", "NaN"]);
        assert!(e.contains("owner-search-budget"), "{e}");
    }

    #[test]
    fn version_names_the_revision() {
        assert!(VERSION.contains("revision "), "{VERSION}");
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
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
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h1m1s1ms").unwrap(), Duration::from_millis(3_661_001));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_positive_duration("0s").is_err());
        assert!(parse_positive_duration("0").is_err());
        for bad in
            ["x", "", "s", "3x", "30s1m", "1m1m", "-1", "-1s", "1.5s", "NaN", "inf", "2d", "99999999999999999999s"]
        {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_duration("1d").unwrap(), MAX_DURATION);
        assert_eq!(parse_ratio("0.1"), Ok(0.1));
        assert!(parse_ratio("0").is_err() && parse_ratio("1.01").is_err() && parse_ratio("NaN").is_err());
    }
}

//! `nodesleuth doctor`: the documented manual diagnoses in one command, on the node.
//!
//! It builds the exporter's own collectors (same `--path.*` and `--collector.*` flags, so `kubectl exec … --
//! nodesleuth doctor` works inside the DaemonSet's pod), runs them twice `--interval` apart through the same
//! registry with the same per-scrape deadline (`--timeout`, so it never hangs on a frozen systemd or a hung
//! `/proc` read), and turns the two snapshots into findings with pure functions ([`checks`]) that use the names,
//! thresholds and severities of the alert rules. No HTTP, no Prometheus.

pub mod checks;
pub mod report;
pub mod snapshot;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cli::{ExporterArgs, parse_positive_duration};
use crate::collectors::{self, CollectorArgs, Shared};
use crate::metrics::Sink;
use crate::registry::{CollectError, Collector, HostPaths, Registry, ScrapeContext};

pub use report::{EXIT_INTERNAL, EXIT_USAGE, Report, Verdict};

/// Flags of `nodesleuth doctor`. The `--path.*` and `--collector.*` flags are the exporter's, spelled the same.
#[derive(clap::Args, Debug, Clone)]
pub struct DoctorArgs {
    /// Only these areas (repeatable or comma-separated): tcp, ipvs, memory, systemd, output.
    #[arg(id = "doctor_only", long = "only", value_name = "AREA", value_delimiter = ',', value_parser = ["tcp", "ipvs", "memory", "systemd", "output"])]
    pub only: Vec<String>,
    /// Only findings about pods in these namespaces (repeatable or comma-separated; `*` and `?` globs). Node-wide
    /// findings (systemd, IPVS idle times, collectors) are always kept.
    #[arg(id = "doctor_namespace", long = "namespace", value_name = "NAMESPACE", value_delimiter = ',')]
    pub namespace: Vec<String>,
    /// Only findings about these pods (repeatable or comma-separated; `*` and `?` globs, e.g. `api-*`).
    #[arg(id = "doctor_pod", long = "pod", value_name = "POD", value_delimiter = ',')]
    pub pod: Vec<String>,
    /// Time between the two samples; rates (CLOSE_WAIT growth, cookie growth, unit churn) are measured over it.
    #[arg(id = "doctor_interval", long = "interval", value_name = "DURATION", default_value = "10s", value_parser = parse_interval)]
    pub interval: Duration,
    /// Deadline of each sample's collection (the exporter's --collector.timeout, which is accepted too).
    #[arg(id = "doctor_timeout", long = "timeout", value_name = "DURATION", alias = "collector.timeout", default_value = "8s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// Output format: human (aligned text, colour on a terminal unless NO_COLOR is set) or json.
    #[arg(id = "doctor_output", long = "output", value_name = "FORMAT", short = 'o', default_value = "human", value_parser = ["human", "json"])]
    pub output: String,
    /// The rule library's configuration (the TOML file given to `rules/render.py --config`): judge by its
    /// thresholds instead of the shipped defaults, so the doctor agrees with the rules a team deployed.
    #[arg(id = "doctor_rules_config", long = "rules-config", value_name = "FILE", value_parser = parse_rules_config)]
    pub rules_config: Option<checks::Thresholds>,
    #[command(flatten)]
    pub paths: HostPaths,
    /// Disable every collector not explicitly enabled with --collector.<name>.
    #[arg(long = "collector.disable-defaults")]
    pub disable_defaults: bool,
    #[command(flatten)]
    pub collectors: CollectorArgs,
}

fn parse_rules_config(path: &str) -> Result<checks::Thresholds, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    checks::DEFAULTS.with_rules_config(&text).map_err(|e| format!("{path}: {e}"))
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_positive_duration(s)? {
        d if d > Duration::from_secs(3600) => Err(format!("{s:?}: at most 1h")),
        d => Ok(d),
    }
}

/// What one collector's run ended with, recorded by [`Recorder`] for the sample it belongs to.
#[derive(Debug, Clone, Default)]
struct RunOutcome {
    error: Option<String>,
    absent: Option<String>,
}

/// Wraps a collector to keep the reason of a failure or an absent source (the registry only logs them), per
/// sample: a run that outlives its sample's deadline records under that sample, never under the next.
struct Recorder {
    inner: Arc<dyn Collector>,
    sample: Arc<AtomicU64>,
    outcomes: Mutex<BTreeMap<u64, RunOutcome>>,
}

impl Collector for Recorder {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn collect(&self, ctx: &ScrapeContext, sink: &mut Sink) -> Result<(), CollectError> {
        let sample = self.sample.load(Ordering::SeqCst);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.inner.collect(ctx, sink)));
        let error = match &result {
            Err(_) => Some("panicked".to_string()),
            Ok(Err(e)) => Some(e.to_string()),
            Ok(Ok(())) => sink.problems().first().map(|p| {
                let more = sink.problems().len() - 1;
                if more > 0 {
                    format!("partial data: {p} (and {more} more problems)")
                } else {
                    format!("partial data: {p}")
                }
            }),
        };
        let outcome = RunOutcome { error, absent: sink.absent().map(str::to_string) };
        self.outcomes.lock().unwrap_or_else(|p| p.into_inner()).insert(sample, outcome);
        match result {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Runs the doctor and prints its report; returns the exit status (0 nothing, 1 warnings, 2 critical).
pub async fn run(args: DoctorArgs, enabled: Vec<&'static str>) -> u8 {
    let started = Instant::now();
    let areas: Vec<&'static str> =
        report::AREAS.iter().copied().filter(|a| args.only.is_empty() || args.only.iter().any(|o| o == a)).collect();
    // Only the collectors the selected areas need.
    let run_these: Vec<&'static str> = enabled.iter().copied().filter(|c| areas.contains(c)).collect();
    let mut collector_args = args.collectors.clone();
    if !run_these.iter().any(|c| *c == "tcp" || *c == "ipvs") {
        // Nothing scans sockets: skip the socket scanner's start-up self-test (a throwaway network namespace).
        collector_args.tcp.source = crate::collectors::tcp::TcpSource::Procfs;
    }
    let exporter_args = ExporterArgs {
        listen_address: crate::cli::DEFAULT_LISTEN.into(),
        telemetry_path: "/metrics".into(),
        web_config_file: None,
        max_requests: 0,
        paths: args.paths.clone(),
        collector_timeout: args.timeout,
        disable_defaults: args.disable_defaults,
        collectors: collector_args,
    };
    let shared = Shared::new(&exporter_args, &run_these);
    let sample = Arc::new(AtomicU64::new(1));
    let recorders: Vec<Arc<Recorder>> = run_these
        .iter()
        .filter_map(|name| collectors::build(name, &args.collectors, &shared))
        .map(|inner| Arc::new(Recorder { inner, sample: sample.clone(), outcomes: Mutex::new(BTreeMap::new()) }))
        .collect();
    let registry = Registry::new(
        args.paths.clone(),
        recorders.iter().map(|r| r.clone() as Arc<dyn Collector>).collect::<Vec<_>>(),
    );

    let t1 = Instant::now();
    let first = snapshot::Snapshot::from_families(&registry.scrape(args.timeout).await);
    tokio::time::sleep_until((t1 + args.interval).into()).await;
    sample.store(2, Ordering::SeqCst);
    let t2 = Instant::now();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let second = snapshot::Snapshot::from_families(&registry.scrape(args.timeout).await);
    let window = t2.duration_since(t1).as_secs_f64();

    let mut errors = BTreeMap::new();
    let mut absent = BTreeMap::new();
    for r in &recorders {
        let name = r.name().to_string();
        match r.outcomes.lock().unwrap_or_else(|p| p.into_inner()).get(&2) {
            Some(o) => {
                if let Some(e) = &o.error {
                    errors.insert(name.clone(), e.clone());
                }
                if let Some(a) = &o.absent {
                    absent.insert(name, a.clone());
                }
            }
            None => {
                errors.insert(name, format!("did not finish within the {:?} deadline (--timeout)", args.timeout));
            }
        }
    }
    let input = checks::Input {
        first: &first,
        second: &second,
        window,
        only: args.only.clone(),
        filter: checks::Filter { namespaces: args.namespace.clone(), pods: args.pod.clone() },
        thresholds: args.rules_config.clone().unwrap_or(checks::DEFAULTS),
        built: collectors::ALL.iter().map(|c| c.name.to_string()).collect(),
        disabled: collectors::ALL
            .iter()
            .map(|c| c.name)
            .filter(|c| !enabled.contains(c))
            .map(str::to_string)
            .collect::<BTreeSet<_>>(),
        errors,
        absent,
        now,
        systemd_timeout: args.collectors.systemd.timeout.as_secs_f64(),
        capabilities: effective_capabilities(),
    };
    let (findings, unchecked) = checks::diagnose(&input);
    let report = Report {
        version: report::JSON_VERSION,
        nodesleuth_version: env!("CARGO_PKG_VERSION"),
        node: node_name(&args.paths.procfs),
        window_seconds: (window * 1000.0).round() / 1000.0,
        duration_seconds: (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        verdict: Verdict::Ok,
        exit_code: 0,
        filters: report::Filters { only: args.only.clone(), namespace: args.namespace.clone(), pod: args.pod.clone() },
        counts: report::Counts { critical: 0, warning: 0, info: 0, ok: 0, unchecked: 0 },
        findings,
        unchecked,
    }
    .finish();
    let text = if args.output == "json" {
        report.to_json()
    } else {
        let colour = is_tty() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        report.to_human(colour, terminal_width().unwrap_or(100))
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    report.exit_code
}

/// The node's name: `NODE_NAME` when set (e.g. from the downward API's `spec.nodeName`), else the hostname that
/// `<procfs>/sys/kernel/hostname` shows (the UTS namespace of the reader: in a pod without hostNetwork, the pod's).
fn node_name(procfs: &std::path::Path) -> String {
    if let Some(n) = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()) {
        return n;
    }
    std::fs::read_to_string(procfs.join("sys/kernel/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// `CapEff` of this process (the local /proc, not `--path.procfs`: these are the doctor's own powers).
fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

fn is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(1) == 1 }
}

fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

#[cfg(test)]
mod tests;

//! The collector trait and the registry that runs collectors for a scrape.
//!
//! Every collector runs on a blocking thread of its own with a deadline. One that errors, panics or overruns never
//! fails the scrape or the others: it is reported through `nodesleuth_scrape_collector_success` and
//! `nodesleuth_scrape_collector_duration_seconds`, and logged once per change of its error (not once per scrape).
//! A collector never runs twice at once: a second scrape waits for the first (up to its own deadline), so a hung
//! collector costs one stuck thread, not one per scrape.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus::proto::MetricFamily;

use crate::metrics::Sink;
use crate::procfs::{ProcFs, ProcessTable};

/// A data source. Implementations read through [`ScrapeContext`] (never a hard-coded path) so that the same code
/// runs on the live host and on a fixture tree.
pub trait Collector: Send + Sync + 'static {
    /// The name used in `--collector.<name>` and in the `collector` label.
    fn name(&self) -> &'static str;
    /// Collects one scrape. Partial problems go to [`Sink::problem`]; an `Err` means nothing useful was collected.
    fn collect(&self, ctx: &ScrapeContext, sink: &mut Sink) -> Result<(), CollectError>;
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Other(String),
}

impl CollectError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CollectError::Io { path: path.into(), source }
    }
}

/// Where the host's files are. Shared, read-only. Also the `--path.*` flags, flattened into the exporter's and
/// `nodesleuth doctor`'s arguments, so both spell and check them the same way.
#[derive(clap::Args, Debug, Clone)]
pub struct HostPaths {
    /// procfs mountpoint (the DaemonSet mounts the host's at /host/proc).
    #[arg(long = "path.procfs", default_value = "/proc", value_parser = crate::cli::existing_dir)]
    pub procfs: PathBuf,
    /// Root of the host filesystem (for /run/netns names).
    #[arg(long = "path.rootfs", default_value = "/", value_parser = crate::cli::existing_dir)]
    pub rootfs: PathBuf,
    /// kubelet's pod log directory: <namespace>_<pod>_<uid>/ entries name pods.
    #[arg(long = "path.pod-logs", default_value = "/var/log/pods")]
    pub pod_logs: PathBuf,
    /// kubelet's container log links: <pod>_<namespace>_<container>-<id>.log entries name containers.
    #[arg(long = "path.container-logs", default_value = "/var/log/containers")]
    pub container_logs: PathBuf,
}

/// A value computed at most once per scrape, by whichever collector asks first.
type OncePerScrape = Arc<OnceLock<Arc<dyn Any + Send + Sync>>>;

/// Per-scrape state shared by the collectors of one scrape, so that work several collectors need (the process
/// table, the socket scan, the IPVS service table) is done once. The registry knows nothing of what is shared:
/// the module that computes a value owns its type and calls [`ScrapeContext::once`].
pub struct ScrapeContext {
    pub host: Arc<HostPaths>,
    pub proc: ProcFs,
    processes: OnceLock<Arc<ProcessTable>>,
    shared: Mutex<HashMap<TypeId, OncePerScrape>>,
    /// When the registry stops waiting for this scrape's collectors; a collector with its own timeouts (D-Bus)
    /// shortens them to finish before it, so that it reports "down" rather than being cut off.
    pub deadline: Option<Instant>,
}

impl ScrapeContext {
    pub fn new(host: Arc<HostPaths>) -> Self {
        let proc = ProcFs::new(host.procfs.clone());
        ScrapeContext { host, proc, processes: OnceLock::new(), shared: Mutex::new(HashMap::new()), deadline: None }
    }

    /// The value of type `T` for this scrape: computed by `init` for the first caller, shared with every later
    /// one (a concurrent caller waits for the first instead of computing it again).
    pub fn once<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Arc<T> {
        let cell = {
            let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            shared.entry(TypeId::of::<T>()).or_default().clone()
        };
        let value = cell.get_or_init(|| Arc::new(init()) as Arc<dyn Any + Send + Sync>).clone();
        // The cell for TypeId::of::<T>() only ever holds a T.
        value.downcast::<T>().unwrap_or_else(|_| unreachable!("per-scrape value of another type"))
    }

    /// Time left until the scrape's deadline (`None` without one).
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Every process with its network namespace, read once per scrape.
    pub fn processes(&self) -> Arc<ProcessTable> {
        self.processes.get_or_init(|| Arc::new(self.proc.process_table())).clone()
    }
}

struct Entry {
    collector: Arc<dyn Collector>,
    /// Held for the whole run of the collector, including on its blocking thread.
    running: Arc<tokio::sync::Mutex<()>>,
    last_error: Mutex<Option<String>>,
    /// Whether "source not present" was logged (once, until it is present again).
    absent_logged: Mutex<bool>,
}

pub struct Registry {
    entries: Vec<Entry>,
    host: Arc<HostPaths>,
}

/// The outcome of one collector in one scrape.
struct Outcome {
    name: &'static str,
    sink: Sink,
    error: Option<String>,
    seconds: f64,
}

impl Registry {
    pub fn new(host: HostPaths, collectors: Vec<Arc<dyn Collector>>) -> Self {
        let entries = collectors
            .into_iter()
            .map(|collector| Entry {
                collector,
                running: Arc::new(tokio::sync::Mutex::new(())),
                last_error: Mutex::new(None),
                absent_logged: Mutex::new(false),
            })
            .collect();
        Registry { entries, host: Arc::new(host) }
    }

    pub fn collector_names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.collector.name()).collect()
    }

    /// Runs every collector and returns the merged families plus the registry's own series.
    pub async fn scrape(&self, timeout: Duration) -> Vec<MetricFamily> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ctx = ScrapeContext::new(self.host.clone());
        ctx.deadline = Some(deadline.into_std());
        let ctx = Arc::new(ctx);
        let runs: Vec<_> = self.entries.iter().map(|e| run_one(e, ctx.clone(), deadline)).collect();
        let outcomes = futures_util::future::join_all(runs).await;

        let mut merged = Sink::new();
        for (entry, outcome) in self.entries.iter().zip(outcomes) {
            let Outcome { name, error, sink: mut outcome_sink, seconds } = outcome;
            let mut error = error;
            for d in outcome_sink.duplicates() {
                outcome_sink.problem(d);
            }
            let outcome = Outcome { name, error: None, sink: outcome_sink, seconds };
            if error.is_none() && !outcome.sink.problems().is_empty() {
                let p = outcome.sink.problems();
                let more = if p.len() > 1 { format!(" (and {} more problems)", p.len() - 1) } else { String::new() };
                error = Some(format!("partial data: {}{more}", p[0]));
            }
            report(entry, name, error.as_deref());
            let absent = outcome.sink.absent().map(str::to_string);
            report_absent(entry, name, absent.as_deref());
            merged.gauge(
                "nodesleuth_collector_source_present",
                "0 when the collector's data source does not exist on this node (e.g. no IPVS, no D-Bus socket).",
                &[("collector", name)],
                if absent.is_some() { 0.0 } else { 1.0 },
            );
            merged.gauge(
                "nodesleuth_scrape_collector_duration_seconds",
                "Seconds a collector took in this scrape (up to the deadline when it overran).",
                &[("collector", name)],
                outcome.seconds,
            );
            merged.gauge(
                "nodesleuth_scrape_collector_success",
                "1 when a collector completed without error or partial data in this scrape, else 0.",
                &[("collector", name)],
                if error.is_none() { 1.0 } else { 0.0 },
            );
            let mut sink = outcome.sink;
            sink.problems_clear();
            merged.absorb(sink);
        }
        merged.gauge(
            "nodesleuth_build_info",
            "Build information of the running nodesleuth; the value is always 1.",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", env!("NODESLEUTH_REVISION")),
                ("rustc", env!("NODESLEUTH_RUSTC")),
            ],
            1.0,
        );
        merged.into_families()
    }
}

async fn run_one(entry: &Entry, ctx: Arc<ScrapeContext>, deadline: tokio::time::Instant) -> Outcome {
    let name = entry.collector.name();
    let started = Instant::now();
    let elapsed = || started.elapsed().as_secs_f64();
    let guard = match tokio::time::timeout_at(deadline, entry.running.clone().lock_owned()).await {
        Ok(g) => g,
        Err(_) => {
            return Outcome {
                name,
                sink: Sink::new(),
                error: Some("previous collection still running past the deadline (hung?)".into()),
                seconds: elapsed(),
            };
        }
    };
    let collector = entry.collector.clone();
    let task = tokio::task::spawn_blocking(move || {
        let _guard = guard;
        let mut sink = Sink::new();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| collector.collect(&ctx, &mut sink)));
        (result, sink)
    });
    match tokio::time::timeout_at(deadline, task).await {
        Err(_) => Outcome { name, sink: Sink::new(), error: Some("deadline exceeded".into()), seconds: elapsed() },
        Ok(Err(join)) => {
            Outcome { name, sink: Sink::new(), error: Some(format!("task failed: {join}")), seconds: elapsed() }
        }
        Ok(Ok((Err(panic), _))) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Outcome { name, sink: Sink::new(), error: Some(format!("panicked: {msg}")), seconds: elapsed() }
        }
        Ok(Ok((Ok(Err(e)), sink))) => Outcome { name, sink, error: Some(e.to_string()), seconds: elapsed() },
        Ok(Ok((Ok(Ok(())), sink))) => Outcome { name, sink, error: None, seconds: elapsed() },
    }
}

/// Logs once that a collector's source is absent, and once when it appears.
fn report_absent(entry: &Entry, name: &str, absent: Option<&str>) {
    let mut logged = entry.absent_logged.lock().unwrap_or_else(|p| p.into_inner());
    match (absent, *logged) {
        (Some(why), false) => {
            tracing::info!(collector = name, reason = why, "collector source not present on this node")
        }
        (None, true) => tracing::info!(collector = name, "collector source present now"),
        _ => {}
    }
    *logged = absent.is_some();
}

/// Logs a collector's failure once per distinct error, and its recovery once.
fn report(entry: &Entry, name: &str, error: Option<&str>) {
    let mut last = entry.last_error.lock().unwrap_or_else(|p| p.into_inner());
    match (last.as_deref(), error) {
        (None, None) => {}
        (Some(_), None) => tracing::info!(collector = name, "collector recovered"),
        (Some(prev), Some(now)) if prev == now => tracing::debug!(collector = name, error = now, "collector failed"),
        (_, Some(now)) => tracing::warn!(collector = name, error = now, "collector failed"),
    }
    *last = error.map(str::to_string);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_scrape_computes_each_type_once() {
        let ctx = ScrapeContext::new(Arc::new(HostPaths {
            procfs: "/nonexistent".into(),
            rootfs: "/".into(),
            pod_logs: "/x".into(),
            container_logs: "/x".into(),
        }));
        let calls = std::sync::atomic::AtomicU32::new(0);
        let a = ctx.once(|| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            7u32
        });
        let b = ctx.once::<u32>(|| unreachable!("computed twice"));
        assert_eq!((*a, *b), (7, 7));
        assert_eq!(*ctx.once(|| "other type"), "other type");
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    struct Good;
    impl Collector for Good {
        fn name(&self) -> &'static str {
            "good"
        }
        fn collect(&self, _: &ScrapeContext, sink: &mut Sink) -> Result<(), CollectError> {
            sink.gauge("test_good", "good", &[], 1.0);
            Ok(())
        }
    }

    struct Panics;
    impl Collector for Panics {
        fn name(&self) -> &'static str {
            "panics"
        }
        fn collect(&self, _: &ScrapeContext, _: &mut Sink) -> Result<(), CollectError> {
            panic!("boom")
        }
    }

    /// Blocks until released, standing in for a collector stuck in a hung kernel or D-Bus call.
    struct Hangs(Arc<(Mutex<bool>, std::sync::Condvar)>);
    impl Collector for Hangs {
        fn name(&self) -> &'static str {
            "hangs"
        }
        fn collect(&self, _: &ScrapeContext, sink: &mut Sink) -> Result<(), CollectError> {
            let (lock, cv) = &*self.0;
            let mut released = lock.lock().unwrap();
            while !*released {
                released = cv.wait(released).unwrap();
            }
            sink.gauge("test_hangs", "late", &[], 1.0);
            Ok(())
        }
    }

    struct Partial;
    impl Collector for Partial {
        fn name(&self) -> &'static str {
            "partial"
        }
        fn collect(&self, _: &ScrapeContext, sink: &mut Sink) -> Result<(), CollectError> {
            sink.gauge("test_partial", "partial", &[], 2.0);
            sink.problem("line 3 malformed");
            Ok(())
        }
    }

    fn text(families: &[MetricFamily]) -> String {
        String::from_utf8(crate::metrics::encode_text(families)).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_collector_never_fails_the_others() {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let host = HostPaths {
            procfs: "/nonexistent".into(),
            rootfs: "/".into(),
            pod_logs: "/x".into(),
            container_logs: "/x".into(),
        };
        let registry = Registry::new(
            host,
            vec![Arc::new(Good), Arc::new(Panics), Arc::new(Hangs(gate.clone())), Arc::new(Partial)],
        );
        let out = text(&registry.scrape(Duration::from_millis(300)).await);
        assert!(out.contains("test_good 1"), "{out}");
        assert!(out.contains("test_partial 2"), "partial data is kept: {out}");
        assert!(!out.contains("test_hangs"), "{out}");
        for (name, ok) in [("good", 1), ("panics", 0), ("hangs", 0), ("partial", 0)] {
            assert!(
                out.contains(&format!("nodesleuth_scrape_collector_success{{collector=\"{name}\"}} {ok}")),
                "{name}: {out}"
            );
        }
        // While the hung run is still stuck, the next scrape does not start a second copy of it.
        let out = text(&registry.scrape(Duration::from_millis(100)).await);
        assert!(out.contains("nodesleuth_scrape_collector_success{collector=\"hangs\"} 0"), "{out}");
        assert!(out.contains("test_good 1"));
        // Once released, the collector works again.
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let out = text(&registry.scrape(Duration::from_secs(30)).await);
        assert!(out.contains("nodesleuth_scrape_collector_success{collector=\"hangs\"} 1"), "{out}");
        assert!(out.contains("test_hangs 1"), "{out}");
    }
}

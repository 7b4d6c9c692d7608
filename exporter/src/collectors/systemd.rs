//! systemd (PID 1) and dbus-daemon, read over D-Bus.
//!
//! **What it catches.** systemd numbers every message it sends on the system bus with a 32-bit cookie. Unpatched
//! systemd (before the fix of systemd #11818, and RHEL/CentOS builds without its back-port) cannot send anything
//! once the cookie passes 0xFFFFFFFF: every D-Bus call to PID 1 hangs, so `runc` hangs creating a container's
//! cgroup, `containerd`/`docker` calls hang, the kubelet's PLEG turns unhealthy and the node goes NotReady while
//! systemd looks idle. On Kubernetes nodes the cookie is burnt by transient-unit churn (runc's `UseSystemd` probe
//! creates and removes a `libcontainer_<pid>_systemd_test_default.slice`, every container start creates a scope).
//! Until now this took gdb on PID 1. The cookie is the serial number in the header of every reply systemd sends,
//! so this collector reads it from its own calls and exports it with the fraction of 2^32 used, for a rule to
//! predict the overflow date. It also catches a hung or slow PID 1 (`nodesleuth_systemd_up`, call latency), leaking
//! transient slices and scopes, the units a node lives on restarting or failing, and dbus-daemon running out of
//! connections or match rules.
//!
//! **What it reads.** One long-lived zbus connection to the system bus (`--collector.systemd.address`), made on the
//! exporter's tokio runtime and re-made with back-off when the bus goes away. Each scrape: from systemd, the Manager
//! properties (one `Properties.GetAll`), the loaded units matching the configured patterns and key unit names (one
//! `ListUnitsByPatterns`, never a full `ListUnits`, and never loading a unit), `NRestarts` of the loaded key
//! services; from dbus-daemon, `ListNames` and `Debug.Stats.GetStats`. Independent calls run concurrently and all
//! share one deadline (`--collector.systemd.timeout`), so a frozen systemd costs a scrape at most that timeout.
//!
//! **What it exports.** `nodesleuth_systemd_up`, `nodesleuth_dbus_up`, `nodesleuth_systemd_reply_serial` and
//! `_ratio`, `nodesleuth_systemd_last_success_timestamp_seconds`, `nodesleuth_systemd_call_duration_seconds`,
//! `nodesleuth_systemd_info` (version), `nodesleuth_systemd_system_state`, the Manager counts (`_names`, `_jobs`,
//! `_installed_jobs_total`, `_failed_jobs_total`, `_failed_units`), `nodesleuth_systemd_pattern_units`,
//! `nodesleuth_systemd_unit_state` / `_unit_info` / `_unit_restarts_total` for the key units, and dbus-daemon's
//! statistics as `nodesleuth_dbus_*` plus `nodesleuth_dbus_connections_total`.

mod bus;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use crate::metrics::Sink;
use crate::registry::{CollectError, Collector, ScrapeContext};

pub use bus::{BusError, Config, glob_match};
use bus::{Client, Reading};

/// The default system bus address of the D-Bus specification.
pub const DEFAULT_ADDRESS: &str = "unix:path=/var/run/dbus/system_bus_socket";

/// Flags of the systemd collector.
#[derive(clap::Args, Debug, Clone)]
pub struct SystemdArgs {
    /// systemd: D-Bus address of the system bus.
    #[arg(long = "collector.systemd.address", env = "DBUS_SYSTEM_BUS_ADDRESS", default_value = DEFAULT_ADDRESS)]
    pub address: String,
    /// systemd: bound on one scrape's D-Bus work (connecting and every call); a systemd that does not answer
    /// within it is reported down (`nodesleuth_systemd_up 0`) and the scrape goes on.
    #[arg(long = "collector.systemd.timeout", default_value = "2s", value_parser = crate::cli::parse_positive_duration)]
    pub timeout: Duration,
    /// systemd: units whose state and restarts are exported (comma-separated; `.service` is implied when a name
    /// has no unit type).
    #[arg(
        long = "collector.systemd.units",
        value_delimiter = ',',
        default_value = "kubelet,containerd,docker,crio,dbus"
    )]
    pub units: Vec<String>,
    /// systemd: glob patterns (`*`, `?`) whose loaded units are counted (comma-separated).
    #[arg(
        long = "collector.systemd.unit-patterns",
        value_delimiter = ',',
        default_value = "libcontainer_*_systemd_test_default.slice,*.slice,*.scope",
        value_parser = parse_pattern
    )]
    pub unit_patterns: Vec<String>,
}

/// Accepts the part of `fnmatch(3)` that [`bus::glob_match`] implements, so that what systemd lists and what the
/// collector counts agree.
fn parse_pattern(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty unit pattern".into());
    }
    if s.contains(['[', ']', '\\']) {
        return Err(format!("unit pattern {s:?}: only `*` and `?` are supported"));
    }
    Ok(s.to_string())
}

/// `kubelet` → `kubelet.service`; names with a unit type stay as they are.
fn unit_name(s: &str) -> String {
    const TYPES: &[&str] = &[
        ".service",
        ".socket",
        ".target",
        ".slice",
        ".scope",
        ".mount",
        ".automount",
        ".swap",
        ".timer",
        ".path",
        ".device",
    ];
    let s = s.trim();
    if TYPES.iter().any(|t| s.ends_with(t)) { s.to_string() } else { format!("{s}.service") }
}

/// The `systemd` collector: on by default.
pub const SPEC: super::CollectorSpec = super::CollectorSpec {
    name: "systemd",
    enabled_by_default: true,
    help: "systemd and dbus-daemon over D-Bus: reply serial, hangs, unit churn, key units",
    build: |args, shared| build(&args.systemd, shared),
};

/// Builds the collector. Called on the exporter's tokio runtime, whose handle it keeps for its connection.
pub fn build(args: &SystemdArgs, _shared: &super::Shared) -> Arc<dyn Collector> {
    // `kubelet` and `kubelet.service` are one unit: keep the first spelling of each, in order (a unit listed
    // twice would be two identical one-hot series).
    let mut seen = std::collections::HashSet::new();
    let units: Vec<String> = args
        .units
        .iter()
        .filter(|u| !u.trim().is_empty())
        .map(|u| unit_name(u))
        .filter(|u| seen.insert(u.clone()))
        .collect();
    Arc::new(SystemdCollector::new(Config {
        address: args.address.clone(),
        timeout: args.timeout,
        units,
        patterns: args.unit_patterns.clone(),
    }))
}

/// Grace beyond the D-Bus timeout before `collect` gives up on a refresh (which bounds itself by the timeout).
const MARGIN: Duration = Duration::from_millis(500);

pub struct SystemdCollector {
    handle: tokio::runtime::Handle,
    /// A runtime of its own, only when built outside one (tests, tools).
    _runtime: Option<tokio::runtime::Runtime>,
    client: Arc<tokio::sync::Mutex<Client>>,
    timeout: Duration,
    address: String,
}

impl SystemdCollector {
    pub fn new(cfg: Config) -> SystemdCollector {
        let (handle, runtime) = match tokio::runtime::Handle::try_current() {
            Ok(h) => (h, None),
            Err(_) => {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("nodesleuth-dbus")
                    .enable_all()
                    .build()
                    .expect("a one-thread tokio runtime");
                (rt.handle().clone(), Some(rt))
            }
        };
        let timeout = cfg.timeout;
        let address = cfg.address.clone();
        SystemdCollector {
            address,
            handle,
            _runtime: runtime,
            client: Arc::new(tokio::sync::Mutex::new(Client::new(cfg))),
            timeout,
        }
    }
}

impl Drop for SystemdCollector {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime's async context.
        if let Some(rt) = self._runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Collector for SystemdCollector {
    fn name(&self) -> &'static str {
        "systemd"
    }

    /// Runs on a blocking thread (see the registry): drives one refresh on the runtime and waits for it, bounded.
    fn collect(&self, ctx: &ScrapeContext, sink: &mut Sink) -> Result<(), CollectError> {
        if let Some(path) = missing_socket(&self.address) {
            // No bus socket at all (a node without D-Bus, or the DaemonSet without the host's /var/run/dbus):
            // not a failure, and no `up 0` series that would page as "D-Bus down".
            sink.source_absent(format!("D-Bus socket {} does not exist", path.display()));
            return Ok(());
        }
        let client = self.client.clone();
        // Finish before the scrape's deadline even when the scraper's timeout is shorter than ours, so a frozen
        // systemd shows as `up 0` instead of the whole collector being cut off.
        let mut budget = self.timeout + MARGIN;
        if let Some(left) = ctx.time_left() {
            budget = budget.min(left.saturating_sub(MARGIN));
        }
        let reading = self.handle.block_on(async move {
            // Never contended: the registry does not run a collector twice at once.
            let mut client = client.lock().await;
            tokio::time::timeout(budget, client.refresh()).await.ok()
        });
        match reading {
            Some(r) => emit(&r, sink),
            None => {
                sink.gauge(UP, UP_HELP, &[], 0.0);
                Err(CollectError::Other(format!("D-Bus refresh overran {budget:?}")))
            }
        }
    }
}

/// The socket of a `unix:path=` address when it does not exist (every alternative of the address being such a
/// path); `None` when there is one, or the address is of another kind (let the connection attempt tell).
fn missing_socket(address: &str) -> Option<std::path::PathBuf> {
    let mut first = None;
    for alternative in address.split(';').filter(|a| !a.is_empty()) {
        let path = alternative.strip_prefix("unix:")?.split(',').find_map(|kv| kv.strip_prefix("path="))?;
        let path = std::path::PathBuf::from(path);
        if path.exists() {
            return None;
        }
        first.get_or_insert(path);
    }
    first
}

const UP: &str = "nodesleuth_systemd_up";
const UP_HELP: &str = "1 when systemd (PID 1) answered over D-Bus within --collector.systemd.timeout in this scrape.";

/// SystemState values of systemd 252 (`systemctl is-system-running`), always all exported.
const SYSTEM_STATES: &[&str] =
    &["initializing", "starting", "running", "degraded", "maintenance", "stopping", "offline", "unknown"];
/// ActiveState values of systemd 252, always all exported per key unit.
const ACTIVE_STATES: &[&str] =
    &["active", "reloading", "inactive", "failed", "activating", "deactivating", "maintenance"];

/// dbus-daemon GetStats fields exported: (field, metric, help). `Serial` is left out on purpose: it counts only
/// GetStats calls, not the daemon's messages. The memory-pool fields are allocator internals.
const STATS: &[(&str, &str, &str)] = &[
    (
        "ActiveConnections",
        "nodesleuth_dbus_active_connections",
        "Connections to dbus-daemon that completed authentication (GetStats ActiveConnections).",
    ),
    (
        "IncompleteConnections",
        "nodesleuth_dbus_incomplete_connections",
        "Connections to dbus-daemon still authenticating (GetStats IncompleteConnections).",
    ),
    ("BusNames", "nodesleuth_dbus_bus_names", "Names owned on the bus, unique and well-known (GetStats BusNames)."),
    (
        "PeakBusNames",
        "nodesleuth_dbus_bus_names_peak",
        "Most names owned on the bus at once since dbus-daemon started (GetStats PeakBusNames).",
    ),
    (
        "PeakBusNamesPerConnection",
        "nodesleuth_dbus_bus_names_per_connection_peak",
        "Most names one connection owned at once (GetStats PeakBusNamesPerConnection).",
    ),
    ("MatchRules", "nodesleuth_dbus_match_rules", "Match rules registered on the bus (GetStats MatchRules)."),
    (
        "PeakMatchRules",
        "nodesleuth_dbus_match_rules_peak",
        "Most match rules registered at once since dbus-daemon started (GetStats PeakMatchRules).",
    ),
    (
        "PeakMatchRulesPerConnection",
        "nodesleuth_dbus_match_rules_per_connection_peak",
        "Most match rules one connection registered at once (GetStats PeakMatchRulesPerConnection).",
    ),
];

/// Writes one reading into the sink. `Err` when systemd (or the bus) did not answer; the sink still carries `up`
/// and the last reply serial, which the registry exports alongside the failure.
fn emit(r: &Reading, sink: &mut Sink) -> Result<(), CollectError> {
    sink.gauge(UP, UP_HELP, &[], if r.systemd.is_ok() { 1.0 } else { 0.0 });
    sink.gauge(
        "nodesleuth_dbus_up",
        "1 when dbus-daemon answered (ListNames) within --collector.systemd.timeout in this scrape.",
        &[],
        if r.bus.is_ok() { 1.0 } else { 0.0 },
    );
    if let Some(serial) = r.reply_serial {
        sink.gauge(
            "nodesleuth_systemd_reply_serial",
            "Header serial of systemd's latest reply on the system bus: its 32-bit outgoing message cookie.",
            &[],
            f64::from(serial),
        );
        sink.gauge(
            "nodesleuth_systemd_reply_serial_ratio",
            "nodesleuth_systemd_reply_serial / 2^32: the fraction of systemd's 32-bit message cookie space used.",
            &[],
            f64::from(serial) / 4_294_967_296.0,
        );
    }
    if let Some(t) = r.last_success {
        sink.gauge(
            "nodesleuth_systemd_last_success_timestamp_seconds",
            "Unix time at which systemd last answered this exporter.",
            &[],
            t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        );
    }
    if let Ok(b) = &r.bus {
        if let Some(stats) = &b.stats {
            for (field, name, help) in STATS {
                if let Some((_, v)) = stats.iter().find(|(k, _)| k == field) {
                    sink.gauge(name, help, &[], f64::from(*v));
                }
            }
        }
        if b.connections > 0 {
            sink.counter(
                "nodesleuth_dbus_connections_total",
                "Connections dbus-daemon has named since it started (highest :1.N seen; a lower bound).",
                &[],
                b.connections as f64,
            );
        }
        for p in &b.problems {
            sink.problem(p.clone());
        }
    }
    let s = match &r.systemd {
        Ok(s) => s,
        Err(e) => return Err(CollectError::Other(e.to_string())),
    };
    for (method, seconds) in &s.calls {
        sink.gauge(
            "nodesleuth_systemd_call_duration_seconds",
            "Round-trip seconds of this scrape's D-Bus call to systemd, per method.",
            &[("method", method)],
            *seconds,
        );
    }
    let m = &s.manager;
    sink.gauge(
        "nodesleuth_systemd_info",
        "systemd's Version property; the value is always 1.",
        &[("version", &m.version)],
        1.0,
    );
    let mut states: Vec<&str> = SYSTEM_STATES.to_vec();
    if !states.contains(&m.system_state.as_str()) {
        states.push(&m.system_state);
    }
    for state in states {
        sink.gauge(
            "nodesleuth_systemd_system_state",
            "systemd's SystemState (as systemctl is-system-running prints it): 1 for the current state, 0 for the others.",
            &[("state", state)],
            if state == m.system_state { 1.0 } else { 0.0 },
        );
    }
    let counts: [(&'static str, &'static str, Option<u32>, bool); 5] = [
        (
            "nodesleuth_systemd_names",
            "Unit names systemd holds in memory, aliases included (Manager NNames).",
            m.n_names,
            false,
        ),
        ("nodesleuth_systemd_jobs", "Jobs queued in systemd (Manager NJobs).", m.n_jobs, false),
        (
            "nodesleuth_systemd_installed_jobs_total",
            "Jobs systemd has installed since it started (Manager NInstalledJobs); every transient unit started adds one.",
            m.n_installed_jobs,
            true,
        ),
        (
            "nodesleuth_systemd_failed_jobs_total",
            "Jobs that failed since systemd started (Manager NFailedJobs).",
            m.n_failed_jobs,
            true,
        ),
        (
            "nodesleuth_systemd_failed_units",
            "Units in the failed state (Manager NFailedUnits).",
            m.n_failed_units,
            false,
        ),
    ];
    for (name, help, value, counter) in counts {
        match value {
            Some(v) if counter => sink.counter(name, help, &[], f64::from(v)),
            Some(v) => sink.gauge(name, help, &[], f64::from(v)),
            None => sink.problem(format!("Manager property for {name} missing or not a u32")),
        }
    }
    if let Some(patterns) = &s.pattern_units {
        for (pattern, n) in patterns {
            sink.gauge(
                "nodesleuth_systemd_pattern_units",
                "Units in systemd's memory whose name matches the pattern (--collector.systemd.unit-patterns).",
                &[("pattern", pattern)],
                *n as f64,
            );
        }
        for u in &s.units {
            let mut states: Vec<&str> = ACTIVE_STATES.to_vec();
            if !states.contains(&u.active_state.as_str()) {
                states.push(&u.active_state);
            }
            for state in states {
                sink.gauge(
                    "nodesleuth_systemd_unit_state",
                    "ActiveState of a key unit, one-hot (a unit not in memory is inactive).",
                    &[("unit", &u.name), ("state", state)],
                    if state == u.active_state { 1.0 } else { 0.0 },
                );
            }
            sink.gauge(
                "nodesleuth_systemd_unit_info",
                "LoadState and SubState of a key unit (load_state=\"not-loaded\" when systemd does not hold it in memory); the value is always 1.",
                &[("unit", &u.name), ("load_state", &u.load_state), ("sub_state", &u.sub_state)],
                1.0,
            );
            if let Some(n) = u.n_restarts {
                sink.counter(
                    "nodesleuth_systemd_unit_restarts_total",
                    "Automatic restarts of a key service by systemd (NRestarts).",
                    &[("unit", &u.name)],
                    f64::from(n),
                );
            }
        }
    }
    for p in &s.problems {
        sink.problem(p.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bus::{BusReading, Manager, SystemdReading, UnitStatus};
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        s: SystemdArgs,
    }

    fn text(sink: Sink) -> String {
        String::from_utf8(crate::metrics::encode_text(&sink.into_families())).unwrap()
    }

    #[test]
    fn flags_defaults_and_spellings() {
        let f = Flags::try_parse_from(["x", "--collector.systemd.address=unix:path=/tmp/b"]).unwrap();
        assert_eq!(f.s.address, "unix:path=/tmp/b");
        assert_eq!(f.s.timeout, Duration::from_secs(2));
        assert_eq!(f.s.units, ["kubelet", "containerd", "docker", "crio", "dbus"]);
        assert_eq!(f.s.unit_patterns[0], "libcontainer_*_systemd_test_default.slice");
        let f = Flags::try_parse_from([
            "x",
            "--collector.systemd.units=kubelet,foo.socket",
            "--collector.systemd.timeout=500ms",
        ])
        .unwrap();
        assert_eq!(f.s.units.iter().map(|u| unit_name(u)).collect::<Vec<_>>(), ["kubelet.service", "foo.socket"]);
        assert_eq!(f.s.timeout, Duration::from_millis(500));
        assert!(Flags::try_parse_from(["x", "--collector.systemd.unit-patterns=kube[a-z].slice"]).is_err());
    }

    fn reading(systemd: Result<SystemdReading, BusError>) -> Reading {
        Reading {
            bus: Ok(BusReading {
                stats: Some(vec![("ActiveConnections".into(), 7), ("Serial".into(), 3)]),
                connections: 42,
                problems: vec![],
            }),
            systemd,
            reply_serial: Some(3_221_225_472),
            last_success: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        }
    }

    #[test]
    fn emits_one_hot_states_and_the_serial_fraction() {
        let s = SystemdReading {
            manager: Manager {
                version: "252.38-1~deb12u1".into(),
                system_state: "degraded".into(),
                n_names: Some(40),
                n_jobs: Some(0),
                n_installed_jobs: Some(12),
                n_failed_jobs: Some(1),
                n_failed_units: Some(2),
            },
            pattern_units: Some(vec![("*.slice".into(), 4)]),
            units: vec![
                UnitStatus {
                    name: "dbus.service".into(),
                    load_state: "loaded".into(),
                    active_state: "active".into(),
                    sub_state: "running".into(),
                    n_restarts: Some(3),
                },
                UnitStatus {
                    name: "kubelet.service".into(),
                    load_state: "not-loaded".into(),
                    active_state: "inactive".into(),
                    sub_state: "dead".into(),
                    n_restarts: None,
                },
            ],
            calls: vec![("GetAll", 0.001)],
            problems: vec![],
        };
        let mut sink = Sink::new();
        emit(&reading(Ok(s)), &mut sink).unwrap();
        assert!(sink.problems().is_empty(), "{:?}", sink.problems());
        let t = text(sink);
        for line in [
            "nodesleuth_systemd_up 1",
            "nodesleuth_dbus_up 1",
            "nodesleuth_systemd_reply_serial 3221225472",
            "nodesleuth_systemd_reply_serial_ratio 0.75",
            "nodesleuth_systemd_info{version=\"252.38-1~deb12u1\"} 1",
            "nodesleuth_systemd_system_state{state=\"degraded\"} 1",
            "nodesleuth_systemd_system_state{state=\"running\"} 0",
            "nodesleuth_systemd_installed_jobs_total 12",
            "nodesleuth_systemd_failed_units 2",
            "nodesleuth_systemd_pattern_units{pattern=\"*.slice\"} 4",
            "nodesleuth_systemd_unit_state{unit=\"dbus.service\",state=\"active\"} 1",
            "nodesleuth_systemd_unit_state{unit=\"kubelet.service\",state=\"inactive\"} 1",
            "nodesleuth_systemd_unit_state{unit=\"kubelet.service\",state=\"failed\"} 0",
            "nodesleuth_systemd_unit_info{unit=\"kubelet.service\",load_state=\"not-loaded\",sub_state=\"dead\"} 1",
            "nodesleuth_systemd_unit_restarts_total{unit=\"dbus.service\"} 3",
            "nodesleuth_dbus_active_connections 7",
            "nodesleuth_dbus_connections_total 42",
            "nodesleuth_systemd_last_success_timestamp_seconds 1700000000",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        assert_eq!(t.matches("nodesleuth_systemd_system_state{").count(), SYSTEM_STATES.len());
        assert!(!t.contains("unit_restarts_total{unit=\"kubelet"), "{t}");
        assert!(!t.contains("Serial"), "GetStats' Serial counts only GetStats calls: {t}");
    }

    #[test]
    fn a_missing_socket_is_an_absent_source() {
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("none");
        let address = format!("unix:path={}", none.display());
        assert_eq!(missing_socket(&address), Some(none.clone()));
        assert_eq!(missing_socket(&format!("unix:path={}", dir.path().display())), None);
        assert_eq!(missing_socket("tcp:host=127.0.0.1,port=1"), None, "other transports: let the connection tell");
        assert_eq!(missing_socket(&format!("{address};tcp:host=127.0.0.1,port=1")), None);
        let c =
            SystemdCollector::new(Config { address, timeout: Duration::from_secs(2), units: vec![], patterns: vec![] });
        let ctx = ScrapeContext::new(Arc::new(crate::registry::HostPaths {
            procfs: "/proc".into(),
            rootfs: "/".into(),
            pod_logs: "/x".into(),
            container_logs: "/x".into(),
        }));
        let mut sink = Sink::new();
        c.collect(&ctx, &mut sink).unwrap();
        assert!(sink.absent().is_some());
        assert!(text(sink).is_empty(), "no up series when there is no bus at all");
    }

    /// Built outside a runtime (it then brings a one-thread runtime of its own) and pointed at a socket nobody
    /// listens on: `collect` returns promptly with both `up` series at 0 and an error naming the address.
    #[test]
    fn collect_without_a_bus_reports_down() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("dead");
        // A socket file whose listener is gone: connecting is refused.
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let address = format!("unix:path={}", dead.display());
        let c = SystemdCollector::new(Config {
            address: address.clone(),
            timeout: Duration::from_secs(2),
            units: vec!["dbus.service".into()],
            patterns: vec!["*.slice".into()],
        });
        let host = crate::registry::HostPaths {
            procfs: "/proc".into(),
            rootfs: "/".into(),
            pod_logs: "/x".into(),
            container_logs: "/x".into(),
        };
        let ctx = ScrapeContext::new(Arc::new(host));
        let mut sink = Sink::new();
        let err = c.collect(&ctx, &mut sink).unwrap_err();
        assert!(err.to_string().contains(&address), "{err}");
        let t = text(sink);
        assert!(t.contains("nodesleuth_systemd_up 0") && t.contains("nodesleuth_dbus_up 0"), "{t}");
    }

    #[test]
    fn systemd_down_keeps_up_serial_and_bus_series() {
        let e = BusError::Timeout { call: "GetAll", timeout: Duration::from_secs(2) };
        let mut sink = Sink::new();
        let err = emit(&reading(Err(e)), &mut sink).unwrap_err();
        assert_eq!(err.to_string(), "GetAll: no answer within 2s");
        let t = text(sink);
        assert!(t.contains("nodesleuth_systemd_up 0"), "{t}");
        assert!(t.contains("nodesleuth_dbus_up 1"), "{t}");
        assert!(t.contains("nodesleuth_systemd_reply_serial 3221225472"), "{t}");
        assert!(!t.contains("nodesleuth_systemd_info"), "no stale properties when systemd is down: {t}");
    }
}

//! The checks: pure functions from two snapshots (taken `window` seconds apart) to findings. Each check carries
//! the name, threshold and severity of the alert in rules/alerts.py that watches the same metrics, so that the
//! doctor on the node and the alert in Prometheus say the same thing about the same failure. A unit test compares
//! the thresholds with rules/dist/defaults.toml.
//!
//! Where the alert needs time the doctor does not have (`for`, a 6 h rate window), the doctor uses its own window:
//! rates are measured between the two samples, and states are read from the second (latest) sample.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::report::{Finding, Unchecked, Verdict};
use super::snapshot::{Sample, Snapshot};
// The filters' `*`/`?` globs are the ones of --collector.systemd.unit-patterns.
use crate::collectors::systemd::glob_match;

/// Thresholds: the defaults of rules/dist/defaults.toml (checked by a test), one field per rule parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// NodesleuthTCPCloseWaitPileUp `threshold`.
    pub close_wait: f64,
    /// NodesleuthTCPCloseWaitClientLeak `threshold`.
    pub client_leak: f64,
    /// NodesleuthGoMadvFreeRetention `share` and `min_bytes`.
    pub madv_share: f64,
    pub madv_min_bytes: f64,
    /// NodesleuthIPVSIdleNearTimeout `quantile` and `ratio`.
    pub ipvs_idle_quantile: f64,
    pub ipvs_idle_ratio: f64,
    /// NodesleuthSystemdCookieExhaustion: warning `horizon`, critical `horizon` and `ratio`.
    pub cookie_warning_horizon: f64,
    pub cookie_critical_horizon: f64,
    pub cookie_critical_ratio: f64,
    /// NodesleuthSystemdLeakedProbeSlices `threshold` and `pattern`.
    pub probe_slices: f64,
    pub probe_pattern: std::borrow::Cow<'static, str>,
    /// NodesleuthSystemdUnitChurn `threshold` per `window` (1 h): jobs per hour.
    pub churn_per_hour: f64,
    /// NodesleuthContainerOutputStalled threshold (OUTPUT.md: 120 s). The doctor sees a stall for at most its
    /// window, so it flags a thread stalled over the whole window (see [`output`]).
    pub output_stalled_seconds: f64,
}

pub const DEFAULTS: Thresholds = Thresholds {
    close_wait: 100.0,
    client_leak: 100.0,
    madv_share: 0.5,
    madv_min_bytes: 268_435_456.0,
    ipvs_idle_quantile: 0.99,
    ipvs_idle_ratio: 0.8,
    cookie_warning_horizon: 2_592_000.0,
    cookie_critical_horizon: 604_800.0,
    cookie_critical_ratio: 0.95,
    probe_slices: 20.0,
    probe_pattern: std::borrow::Cow::Borrowed("libcontainer_*_systemd_test_default.slice"),
    churn_per_hour: 3000.0,
    output_stalled_seconds: 120.0,
};

impl Thresholds {
    /// The defaults overridden by a rule-library configuration (`--rules-config`, the TOML file given to
    /// `rules/render.py --config`): the doctor then judges by the same thresholds as the rules a team deployed.
    /// Only the keys the doctor uses are read (and must have the right type); everything else in the file
    /// (selectors, `for`, severities, groups) is the renderer's business.
    pub fn with_rules_config(mut self, text: &str) -> Result<Thresholds, String> {
        let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| e.message().to_string())?;
        let Some(alerts) = doc.get("alerts") else {
            return Ok(self);
        };
        let alerts = alerts.as_table().ok_or("`alerts` is not a table")?;
        let num = |alert: &str, key: &str| -> Result<Option<f64>, String> {
            let Some(v) = alerts.get(alert).and_then(|a| a.as_table()).and_then(|a| a.get(key)) else {
                return Ok(None);
            };
            match v {
                toml::Value::Integer(i) => Ok(Some(*i as f64)),
                toml::Value::Float(f) if f.is_finite() => Ok(Some(*f)),
                _ => Err(format!("[alerts.\"{alert}\"] {key}: a {}, not a number", v.type_str())),
            }
        };
        let text_value = |alert: &str, key: &str| -> Result<Option<String>, String> {
            match alerts.get(alert).and_then(|a| a.as_table()).and_then(|a| a.get(key)) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => Err(format!("[alerts.\"{alert}\"] {key}: a {}, not a string", v.type_str())),
            }
        };
        let set = |field: &mut f64, alert: &str, key: &str| -> Result<(), String> {
            if let Some(v) = num(alert, key)? {
                *field = v;
            }
            Ok(())
        };
        set(&mut self.close_wait, "NodesleuthTCPCloseWaitPileUp", "threshold")?;
        set(&mut self.client_leak, "NodesleuthTCPCloseWaitClientLeak", "threshold")?;
        set(&mut self.madv_share, "NodesleuthGoMadvFreeRetention", "share")?;
        set(&mut self.madv_min_bytes, "NodesleuthGoMadvFreeRetention", "min_bytes")?;
        set(&mut self.ipvs_idle_quantile, "NodesleuthIPVSIdleNearTimeout", "quantile")?;
        set(&mut self.ipvs_idle_ratio, "NodesleuthIPVSIdleNearTimeout", "ratio")?;
        set(&mut self.cookie_warning_horizon, "NodesleuthSystemdCookieExhaustion.warning", "horizon")?;
        set(&mut self.cookie_critical_horizon, "NodesleuthSystemdCookieExhaustion.critical", "horizon")?;
        set(&mut self.cookie_critical_ratio, "NodesleuthSystemdCookieExhaustion.critical", "ratio")?;
        set(&mut self.probe_slices, "NodesleuthSystemdLeakedProbeSlices", "threshold")?;
        if let Some(p) = text_value("NodesleuthSystemdLeakedProbeSlices", "pattern")? {
            self.probe_pattern = p.into();
        }
        // The churn threshold counts jobs per `window`; the doctor keeps it per hour.
        let churn = num("NodesleuthSystemdUnitChurn", "threshold")?;
        let window = match text_value("NodesleuthSystemdUnitChurn", "window")? {
            Some(w) => crate::cli::parse_positive_duration(&w)
                .map_err(|e| format!("[alerts.NodesleuthSystemdUnitChurn] window: {e}"))?
                .as_secs_f64(),
            None => 3600.0,
        };
        if churn.is_some() || window != 3600.0 {
            self.churn_per_hour = churn.unwrap_or(DEFAULTS.churn_per_hour) * 3600.0 / window;
        }
        // One threshold for both severities; a file that sets only one of them sets it for both.
        for alert in ["NodesleuthContainerOutputStalled.critical", "NodesleuthContainerOutputStalled.warning"] {
            set(&mut self.output_stalled_seconds, alert, "threshold")?;
        }
        Ok(self)
    }
}

/// `--namespace` / `--pod`: which pods' findings to keep. Node-wide findings (systemd, the IPVS idle quantile,
/// collectors) concern every pod and are always kept. Empty lists match everything; values may use `*` and `?`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub namespaces: Vec<String>,
    pub pods: Vec<String>,
}

impl Filter {
    pub fn keeps(&self, s: &Sample) -> bool {
        let ok = |pats: &[String], v: &str| pats.is_empty() || pats.iter().any(|p| glob_match(p, v));
        ok(&self.namespaces, s.label("namespace")) && ok(&self.pods, s.label("pod"))
    }

    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.pods.is_empty()
    }
}

/// Everything the checks read.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub first: &'a Snapshot,
    pub second: &'a Snapshot,
    /// Seconds between the two samples.
    pub window: f64,
    /// Areas to check (`--only`); all when empty.
    pub only: Vec<String>,
    pub filter: Filter,
    pub thresholds: Thresholds,
    /// Collectors this binary has (`collectors::ALL`).
    pub built: BTreeSet<String>,
    /// Collectors turned off by flags.
    pub disabled: BTreeSet<String>,
    /// Per collector: the error of its latest run (none when it succeeded), and why its source is absent.
    pub errors: BTreeMap<String, String>,
    pub absent: BTreeMap<String, String>,
    /// Unix time of the second sample (for "systemd last answered N s ago").
    pub now: f64,
    /// `--collector.systemd.timeout` in seconds.
    pub systemd_timeout: f64,
    /// The doctor's effective capabilities (`CapEff` of /proc/self/status); `None` when unknown.
    pub capabilities: Option<u64>,
}

/// Capabilities the collectors need to see every pod (deploy/README.md, "what the DaemonSet can see"), with the
/// checks that see less without them.
const CAPABILITIES: &[(u32, &str, &str, &[&str])] = &[
    (
        19,
        "CAP_SYS_PTRACE",
        "other processes' network namespaces, /proc/<pid>/fd, environ and syscall are not readable: pods are \
         invisible, only what this process shares is checked",
        &[CW_PILE_UP, CW_CLIENT_LEAK, ACCEPT_QUEUE_FULL, IPVS_ORPHANED, IPVS_NEAR_EXPIRY, MADV_FREE, OUTPUT_STALLED],
    ),
    (
        21,
        "CAP_SYS_ADMIN",
        "no netlink socket inside pods' namespaces: socket tables are read as text, without accept-queue limits",
        &[ACCEPT_QUEUE_FULL],
    ),
    (
        2,
        "CAP_DAC_READ_SEARCH",
        "/proc/<pid>/fd of non-root processes is not readable: CLOSE_WAIT sockets of non-root pods have no owner",
        &[CW_PILE_UP, CW_CLIENT_LEAK],
    ),
];

/// "Could not check" entries for the capabilities this run lacks, for the areas that ran.
fn capabilities(input: &Input, ran: &[&'static str], out: &mut Out) {
    let Some(eff) = input.capabilities else { return };
    for (bit, name, what, checks) in CAPABILITIES {
        if eff & (1u64 << bit) != 0 {
            continue;
        }
        for check in *checks {
            let area = CHECKS.iter().find(|(_, c)| c.contains(check)).map(|(a, _)| *a).unwrap_or("");
            if ran.contains(&area) {
                out.skip(check, area, "unreadable", format!("no {name}: {what}"));
            }
        }
    }
}

/// The checks of each area, by alert name (what "could not check" lists when an area cannot run).
pub const CHECKS: &[(&str, &[&str])] = &[
    ("tcp", &[CW_PILE_UP, CW_CLIENT_LEAK, ACCEPT_QUEUE_FULL]),
    ("ipvs", &[IPVS_ORPHANED, IPVS_NEAR_EXPIRY, IPVS_IDLE]),
    ("memory", &[MADV_FREE, LIMIT_LAZY_FREE]),
    ("systemd", &[COOKIE, UNRESPONSIVE, DBUS_DOWN, PROBE_SLICES, UNIT_CHURN]),
    ("output", &[OUTPUT_STALLED]),
];

pub const CW_PILE_UP: &str = "NodesleuthTCPCloseWaitPileUp";
pub const CW_CLIENT_LEAK: &str = "NodesleuthTCPCloseWaitClientLeak";
pub const ACCEPT_QUEUE_FULL: &str = "NodesleuthTCPAcceptQueueFull";
pub const IPVS_ORPHANED: &str = "NodesleuthIPVSOrphanedConnections";
pub const IPVS_NEAR_EXPIRY: &str = "NodesleuthIPVSConnectionsNearExpiry";
pub const IPVS_IDLE: &str = "NodesleuthIPVSIdleNearTimeout";
pub const MADV_FREE: &str = "NodesleuthGoMadvFreeRetention";
pub const LIMIT_LAZY_FREE: &str = "NodesleuthMemoryLimitNearButLazyFree";
pub const COOKIE: &str = "NodesleuthSystemdCookieExhaustion";
pub const UNRESPONSIVE: &str = "NodesleuthSystemdUnresponsive";
pub const DBUS_DOWN: &str = "NodesleuthDBusDown";
pub const PROBE_SLICES: &str = "NodesleuthSystemdLeakedProbeSlices";
pub const UNIT_CHURN: &str = "NodesleuthSystemdUnitChurn";
pub const OUTPUT_STALLED: &str = "NodesleuthContainerOutputStalled";
pub const COLLECTOR_FAILING: &str = "NodesleuthCollectorFailing";

/// A family each collector always exports when it ran: without it, the collector produced no data.
fn key_family(collector: &str) -> &'static str {
    match collector {
        "tcp" => "nodesleuth_tcp_sockets",
        "ipvs" => "nodesleuth_ipvs_timeout_seconds",
        "memory" => "nodesleuth_processes",
        "systemd" => "nodesleuth_dbus_up",
        "output" => "nodesleuth_output_candidate_threads",
        _ => "",
    }
}

/// Runs every selected check; returns the findings (problems and one `ok` per check that found nothing) and the
/// checks that could not run.
pub fn diagnose(input: &Input) -> (Vec<Finding>, Vec<Unchecked>) {
    let mut out = Out::default();
    let mut ran = Vec::new();
    for (area, checks) in CHECKS {
        if !input.only.is_empty() && !input.only.iter().any(|a| a == area) {
            continue;
        }
        if let Err((kind, reason)) = gate(input, area) {
            for name in *checks {
                out.skip(name, area, kind, reason.clone());
            }
            continue;
        }
        ran.push(*area);
        match *area {
            "tcp" => tcp(input, &mut out),
            "ipvs" => ipvs(input, &mut out),
            "memory" => memory(input, &mut out),
            "systemd" => systemd(input, &mut out),
            "output" => output(input, &mut out),
            _ => {}
        }
    }
    collector_failing(input, &mut out);
    capabilities(input, &ran, &mut out);
    (out.findings, out.unchecked)
}

#[derive(Default)]
struct Out {
    findings: Vec<Finding>,
    unchecked: Vec<Unchecked>,
}

impl Out {
    fn skip(&mut self, name: &'static str, area: &'static str, kind: &'static str, reason: String) {
        self.unchecked.push(Unchecked { name, area, kind, reason });
    }

    fn ok(&mut self, name: &'static str, area: &'static str, summary: String, evidence: Vec<(&'static str, Value)>) {
        let mut f = finding(name, area, Verdict::Ok, summary);
        f.evidence = evidence.into_iter().collect();
        self.findings.push(f);
    }
}

/// A finding with the meaning, next steps, fix and runbook of its failure mode filled in.
fn finding(name: &'static str, area: &'static str, verdict: Verdict, summary: String) -> Finding {
    Finding {
        name,
        area,
        verdict,
        subject: BTreeMap::new(),
        summary,
        evidence: BTreeMap::new(),
        meaning: meaning(name),
        next: Vec::new(),
        fix: String::new(),
        runbook: format!("docs/runbooks/{name}.md"),
    }
}

/// Whether an area's checks can run: its collector is built, enabled, its source exists and it produced data.
fn gate(input: &Input, area: &'static str) -> Result<(), (&'static str, String)> {
    if !input.built.contains(area) {
        return Err(("disabled", format!("this nodesleuth build has no `{area}` collector")));
    }
    if input.disabled.contains(area) {
        return Err(("disabled", format!("the {area} collector is off (--no-collector.{area})")));
    }
    let s = input.second;
    if s.get("nodesleuth_collector_source_present", &[("collector", area)]) == Some(0.0) {
        let why = input.absent.get(area).cloned().unwrap_or_else(|| "its data source does not exist".into());
        return Err(("absent", format!("{why}: nothing of this kind to diagnose on this node")));
    }
    if !s.has(key_family(area)) {
        let why = input.errors.get(area).cloned().unwrap_or_else(|| "no data".into());
        return Err(("failed", format!("the {area} collector failed: {why}")));
    }
    Ok(())
}

/// Per minute over the window, `None` without a first value.
fn per_minute(first: Option<f64>, second: f64, window: f64) -> Option<f64> {
    first.filter(|_| window > 0.0).map(|f| (second - f) / window * 60.0)
}

fn num(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9e15 { json!(v as i64) } else { json!((v * 1000.0).round() / 1000.0) }
}

fn opt(v: Option<f64>) -> Value {
    v.map(num).unwrap_or(Value::Null)
}

fn subject(s: &Sample, keys: &[&'static str]) -> BTreeMap<&'static str, String> {
    keys.iter().map(|k| (*k, s.label(k).to_string())).filter(|(_, v)| !v.is_empty()).collect()
}

/// `ns/pod` or the network namespace of a host socket.
fn where_(s: &Sample) -> String {
    if s.label("pod").is_empty() {
        match s.label("netns") {
            "" => "the host".into(),
            "host" => "the host network namespace".into(),
            ns => format!("network namespace {ns}"),
        }
    } else if s.label("namespace").is_empty() {
        format!("pod UID {} (no log directory names it)", s.label("pod"))
    } else {
        format!("pod {}/{}", s.label("namespace"), s.label("pod"))
    }
}

fn process_name(s: &Sample) -> String {
    match s.label("process") {
        "" => "an unidentified process".into(),
        p => format!("process {p}"),
    }
}

fn growth_text(g: Option<f64>) -> String {
    match g {
        Some(g) => format!("{g:+.1}/min"),
        None => "new in this sample".into(),
    }
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{v:.0} B") } else { format!("{v:.1} {}", UNITS[i]) }
}

const CW_KEYS: &[&str] = &["namespace", "pod", "container", "process", "local_port", "netns"];

// ------------------------------------------------------------------------------------------------------ tcp

/// CLOSE_WAIT sockets on (netns, port), all groups summed (sockets not yet accepted have no process).
fn close_wait_on_port(s: &Snapshot, netns: &str, port: &str) -> Option<f64> {
    let v: Vec<f64> = s
        .matching("nodesleuth_tcp_close_wait_sockets", &[("netns", netns), ("local_port", port)])
        .map(|x| x.value)
        .collect();
    if v.is_empty() { None } else { Some(v.iter().sum()) }
}

/// (queued, limit) of a listening port, limit only from the netlink source.
fn queue(s: &Snapshot, netns: &str, port: &str) -> (Option<f64>, Option<f64>) {
    let l = [("netns", netns), ("local_port", port)];
    (s.get("nodesleuth_tcp_listen_queue_length", &l), s.get("nodesleuth_tcp_listen_queue_limit", &l))
}

fn is_full(queued: Option<f64>, limit: Option<f64>) -> bool {
    matches!((queued, limit), (Some(q), Some(l)) if q > 0.0 && q >= l)
}

/// The longest output stall in a pod (`nodesleuth_output_stalled_seconds`), with its target.
fn output_stall(s: &Snapshot, ns: &str, pod: &str) -> Option<(f64, String)> {
    if pod.is_empty() {
        return None;
    }
    s.matching("nodesleuth_output_stalled_seconds", &[("namespace", ns), ("pod", pod)])
        .max_by(|a, b| a.value.total_cmp(&b.value))
        .map(|x| (x.value, x.label("target").to_string()))
}

fn tcp(input: &Input, out: &mut Out) {
    let (a, b, th) = (input.first, input.second, &input.thresholds);
    let mut largest: BTreeMap<bool, (f64, String)> = BTreeMap::new();
    let mut flagged_hung_ports: BTreeSet<(String, String)> = BTreeSet::new();
    let mut flagged = [false, false];
    for s in b.all("nodesleuth_tcp_close_wait_sockets").filter(|s| input.filter.keeps(s)) {
        if s.label("process") == "(other)" {
            continue;
        }
        let server = s.label("local_port") != "(ephemeral)";
        let e = largest.entry(server).or_insert((0.0, String::new()));
        if s.value > e.0 {
            let port = match s.label("local_port") {
                "(ephemeral)" => "ephemeral ports".to_string(),
                p => format!("port {p}"),
            };
            *e = (s.value, format!("{} on {port} in {}", process_name(s), where_(s)));
        }
        let (name, threshold) = if server { (CW_PILE_UP, th.close_wait) } else { (CW_CLIENT_LEAK, th.client_leak) };
        if s.value < threshold {
            continue;
        }
        let before = a.same("nodesleuth_tcp_close_wait_sockets", s, CW_KEYS);
        if before.is_some_and(|p| s.value < p) {
            continue; // going down: being drained (the alert's deriv >= 0 does not hold either)
        }
        flagged[usize::from(server)] = true;
        let growth = per_minute(before, s.value, input.window);
        let mut ev = vec![
            ("close_wait_sockets", num(s.value)),
            ("close_wait_first_sample", opt(before)),
            ("growth_per_minute", opt(growth)),
            ("threshold", num(threshold)),
        ];
        let mut verdict = Verdict::Warning;
        let mut summary = format!(
            "{} holds {} CLOSE_WAIT sockets on {} in {} ({} over {:.0}s)",
            process_name(s),
            s.value,
            if server { format!("port {}", s.label("local_port")) } else { "ephemeral ports".into() },
            where_(s),
            growth_text(growth),
            input.window
        );
        if server {
            let (netns, port) = (s.label("netns"), s.label("local_port"));
            let (q, l) = queue(b, netns, port);
            let full = is_full(q, l);
            let port_rising = match (close_wait_on_port(a, netns, port), close_wait_on_port(b, netns, port)) {
                (Some(x), Some(y)) => y > x,
                _ => false,
            };
            let stall = output_stall(b, s.label("namespace"), s.label("pod"));
            let hung = port_rising && (full || stall.is_some());
            ev.push(("accept_queue_length", opt(q)));
            ev.push(("accept_queue_limit", opt(l)));
            ev.push(("accept_queue_full", json!(full)));
            ev.push(("looks_hung", json!(hung)));
            if let Some((secs, target)) = &stall {
                ev.push(("output_stalled_seconds", num(*secs)));
                ev.push(("output_target", json!(target)));
            }
            if hung {
                verdict = Verdict::Critical;
                flagged_hung_ports.insert((netns.to_string(), port.to_string()));
                let why = match (&stall, full) {
                    (Some((secs, t)), true) => format!(
                        "its accept queue is full and a thread is stuck writing to its {t} output for {secs:.0}s"
                    ),
                    (Some((secs, t)), false) => format!("a thread is stuck writing to its {t} output for {secs:.0}s"),
                    _ => "its accept queue is full".to_string(),
                };
                summary.push_str(&format!("; the process looks hung: its CLOSE_WAIT rises while {why}"));
            }
        }
        if s.label("process").is_empty() {
            ev.push(("owner_found", json!(false)));
        }
        let mut f = finding(name, "tcp", verdict, summary);
        f.subject = subject(s, CW_KEYS);
        f.evidence = ev.into_iter().collect();
        f.next = tcp_next(s, server);
        f.fix = if server {
            "Take a goroutine/thread dump before anything restarts it (the sockets and stuck threads go with the \
             restart); then close the connection on every path and give handlers deadlines. A container with \
             `tty: true` whose output is not drained blocks on every write: set `tty: false`."
                .into()
        } else {
            "Make the client or its pool close connections the server closed (idle timeout shorter than the \
             server's, close on read error / EOF, `resp.Body.Close()`)."
                .into()
        };
        out.findings.push(f);
    }
    let biggest = |server: bool| {
        largest
            .get(&server)
            .filter(|(v, _)| *v > 0.0)
            .map(|(v, w)| format!("largest {v}: {w}"))
            .unwrap_or_else(|| "none".into())
    };
    if !flagged[1] {
        out.ok(
            CW_PILE_UP,
            "tcp",
            format!("no process holds >= {} CLOSE_WAIT sockets on a listening port ({})", th.close_wait, biggest(true)),
            vec![("largest_group", num(largest.get(&true).map(|x| x.0).unwrap_or(0.0)))],
        );
    }
    if !flagged[0] {
        out.ok(
            CW_CLIENT_LEAK,
            "tcp",
            format!("no process holds >= {} client-side CLOSE_WAIT sockets ({})", th.client_leak, biggest(false)),
            vec![("largest_group", num(largest.get(&false).map(|x| x.0).unwrap_or(0.0)))],
        );
    }
    accept_queues(input, out, &flagged_hung_ports);
}

/// A shell expression printing the PID of a process in the subject's network namespace: the pod's sandbox
/// through crictl, a process of a named or numbered namespace, PID 1 for the host's.
fn netns_pid(s: &Sample) -> String {
    let (ns, pod, netns) = (s.label("namespace"), s.label("pod"), s.label("netns"));
    if !pod.is_empty() && ns.is_empty() {
        // A pod without a log directory is labelled with its UID.
        format!("crictl inspectp $(crictl pods -q --label io.kubernetes.pod.uid={pod}) | jq .info.pid")
    } else if !pod.is_empty() {
        format!("crictl inspectp $(crictl pods -q --namespace {ns} --name {pod}) | jq .info.pid")
    } else if netns.is_empty() || netns == "host" {
        "echo 1".into()
    } else if netns.bytes().all(|b| b.is_ascii_digit()) {
        format!("lsns -t net -n -o PID,NS | awk '$2=={netns} {{print $1; exit}}'")
    } else {
        format!("ip netns pids {netns} | head -1")
    }
}

/// A command that sets `$PID` to a process in the subject's network namespace.
fn pid_command(s: &Sample) -> String {
    match netns_pid(s).as_str() {
        "echo 1" => "PID=1".into(),
        e => format!("PID=$({e})"),
    }
}

/// A command that sets `$PID` to the subject's process itself (by name, in the subject's network namespace).
fn process_pid_command(s: &Sample) -> String {
    let process = s.label("process");
    if process.is_empty() || process == "(other)" {
        return pid_command(s);
    }
    match netns_pid(s).as_str() {
        "echo 1" if s.label("pod").is_empty() => format!("PID=$(pgrep -o -x '{process}')"),
        e => format!("PID=$(pgrep -o -x '{process}' --nslist net --ns \"$({e})\")"),
    }
}

fn tcp_next(s: &Sample, server: bool) -> Vec<String> {
    let pid = process_pid_command(s);
    let filter = if server { format!(" '( sport = :{} )'", s.label("local_port")) } else { String::new() };
    vec![
        pid,
        format!("nsenter -t \"$PID\" -n ss -tanp state close-wait{filter} | head"),
        "grep -E 'State|Threads' /proc/$PID/status".into(),
        "kill -QUIT $PID  # Go: goroutine dump to the container log; Java: jstack $PID".into(),
    ]
}

fn accept_queues(input: &Input, out: &mut Out, hung_ports: &BTreeSet<(String, String)>) {
    let (a, b) = (input.first, input.second);
    let has_limits = b.has("nodesleuth_tcp_listen_queue_limit");
    if !has_limits {
        let procfs = b.get("nodesleuth_tcp_namespaces", &[("source", "procfs")]).unwrap_or(0.0);
        out.skip(
            ACCEPT_QUEUE_FULL,
            "tcp",
            "unreadable",
            format!(
                "accept-queue limits are only read over netlink; socket tables were read as procfs text in {procfs} \
                 namespace(s) (--collector.tcp.source, or netlink not permitted: needs root / CAP_NET_ADMIN)"
            ),
        );
        return;
    }
    let keys = ["namespace", "pod", "netns", "local_port"];
    let mut full_ports = 0;
    let mut listeners = 0;
    for s in b.all("nodesleuth_tcp_listen_queue_length").filter(|s| input.filter.keeps(s)) {
        listeners += 1;
        let limit = b.same("nodesleuth_tcp_listen_queue_limit", s, &keys);
        if !is_full(Some(s.value), limit) {
            continue;
        }
        full_ports += 1;
        let (netns, port) = (s.label("netns"), s.label("local_port"));
        let (q1, l1) = queue(a, netns, port);
        let cw = (close_wait_on_port(a, netns, port), close_wait_on_port(b, netns, port));
        let rising = matches!(cw, (Some(x), Some(y)) if y > x);
        let stall = output_stall(b, s.label("namespace"), s.label("pod"));
        let hung = rising || stall.is_some();
        let already = hung_ports.contains(&(netns.to_string(), port.to_string()));
        let verdict = if hung && !already { Verdict::Critical } else { Verdict::Warning };
        let mut summary = format!(
            "accept queue full on port {port} in {}: {} connections wait (limit {})",
            where_(s),
            s.value,
            limit.unwrap_or(0.0)
        );
        if hung {
            summary.push_str(&format!(
                "; the owning process looks hung: CLOSE_WAIT on the port {}",
                match cw {
                    (Some(x), Some(y)) if y > x => format!("rose {x} -> {y}"),
                    (_, Some(y)) => format!("at {y}"),
                    _ => "none".into(),
                }
            ));
            if let Some((secs, t)) = &stall {
                summary.push_str(&format!(", a thread stuck writing to its {t} output for {secs:.0}s"));
            }
        }
        let mut ev = vec![
            ("accept_queue_length", num(s.value)),
            ("accept_queue_limit", opt(limit)),
            ("full_in_first_sample", json!(is_full(q1, l1))),
            ("close_wait_on_port", opt(cw.1)),
            ("close_wait_growth_per_minute", opt(cw.1.and_then(|y| per_minute(cw.0, y, input.window)))),
            ("looks_hung", json!(hung)),
        ];
        if let Some((secs, t)) = &stall {
            ev.push(("output_stalled_seconds", num(*secs)));
            ev.push(("output_target", json!(t)));
        }
        let mut f = finding(ACCEPT_QUEUE_FULL, "tcp", verdict, summary);
        f.subject = subject(s, &["namespace", "pod", "netns", "local_port"]);
        f.evidence = ev.into_iter().collect();
        f.next = vec![
            pid_command(s),
            format!("nsenter -t \"$PID\" -n ss -ltn '( sport = :{port} )'  # Recv-Q = queued, Send-Q = limit"),
            "nsenter -t \"$PID\" -n nstat -az TcpExtListenOverflows TcpExtListenDrops".into(),
            "kill -QUIT <server pid>  # Go: goroutine dump to the log; Java: jstack <pid>".into(),
        ];
        f.fix = "Find why the server stopped calling accept() (the thread dump shows the stuck acceptor); raise the \
                 listen backlog (and net.core.somaxconn) only for bursts, not for a hang."
            .into();
        out.findings.push(f);
    }
    if full_ports == 0 {
        out.ok(
            ACCEPT_QUEUE_FULL,
            "tcp",
            format!("no full accept queue among {listeners} listening ports"),
            vec![("listening_ports", num(listeners as f64))],
        );
    }
}

// ----------------------------------------------------------------------------------------------------- ipvs

const VIP_KEYS: &[&str] = &["namespace", "pod", "netns", "virtual_address", "virtual_port"];

fn ipvs(input: &Input, out: &mut Out) {
    let b = input.second;
    let timeout = b.get("nodesleuth_ipvs_timeout_seconds", &[("timeout", "tcp")]);
    let clients: f64 =
        b.all("nodesleuth_ipvs_client_connections").filter(|s| input.filter.keeps(s)).fold(0.0, |n, s| n + s.value);
    for (name, metric, verdict) in [
        (IPVS_ORPHANED, "nodesleuth_ipvs_orphaned_connections", Verdict::Warning),
        (IPVS_NEAR_EXPIRY, "nodesleuth_ipvs_connections_near_expiry", Verdict::Info),
    ] {
        let mut n = 0;
        for s in b.all(metric).filter(|s| input.filter.keeps(s) && s.value > 0.0) {
            n += 1;
            let (vip, port) = (s.label("virtual_address"), s.label("virtual_port"));
            let idle_max = b.get(
                "nodesleuth_ipvs_established_idle_max_seconds",
                &[("virtual_address", vip), ("virtual_port", port)],
            );
            let of = b.same("nodesleuth_ipvs_client_connections", s, VIP_KEYS);
            let what = if name == IPVS_ORPHANED {
                "are no longer known to IPVS (orphaned)"
            } else {
                "are idle so long that their IPVS entries are about to expire"
            };
            let summary = format!(
                "{} of {} connections from {} to Service {vip}:{port} {what}; IPVS TCP timeout {}s, longest idle \
                 entry of this Service {}",
                s.value,
                of.unwrap_or(s.value),
                where_(s),
                timeout.map(|t| format!("{t}")).unwrap_or_else(|| "?".into()),
                idle_max.map(|t| format!("{t}s")).unwrap_or_else(|| "-".into())
            );
            let mut f = finding(name, "ipvs", verdict, summary);
            f.subject = subject(s, VIP_KEYS);
            f.evidence = [
                ("connections", num(s.value)),
                ("client_connections", opt(of)),
                ("ipvs_tcp_timeout_seconds", opt(timeout)),
                ("service_idle_max_seconds", opt(idle_max)),
            ]
            .into_iter()
            .collect();
            f.next = vec![
                pid_command(s),
                format!("nsenter -t \"$PID\" -n ss -tnoi dst {vip}:{port}  # no timer:(keepalive…): no keepalive"),
                format!("ipvsadm -lnc | grep -F '{vip}:{port}'"),
                "ipvsadm -l --timeout".into(),
            ];
            f.fix = "Enable TCP keepalive on the client with an idle time shorter than the IPVS TCP timeout \
                     (SO_KEEPALIVE + TCP_KEEPIDLE, or sysctl net.ipv4.tcp_keepalive_time in the pod), or raise \
                     kube-proxy's --ipvs-tcp-timeout above the longest silent call. Orphaned connections themselves \
                     only end with the client's own timeout or a restart."
                .into();
            out.findings.push(f);
        }
        if n == 0 {
            let what = if name == IPVS_ORPHANED { "orphaned" } else { "near expiry" };
            out.ok(
                name,
                "ipvs",
                format!("none {what} among {clients} connections from pods to Service VIPs"),
                vec![("client_connections", num(clients))],
            );
        }
    }
    // Node-wide: the idle quantile against the TCP timeout, as the alert computes it.
    let th = &input.thresholds;
    let buckets: Vec<(f64, f64)> = b
        .all("nodesleuth_ipvs_established_idle_entries")
        .filter_map(|s| {
            let le = match s.label("idle_le") {
                "+Inf" => f64::INFINITY,
                v => v.parse().ok()?,
            };
            Some((le, s.value))
        })
        .collect();
    let q = histogram_quantile(th.ipvs_idle_quantile, &buckets);
    let entries = buckets.iter().find(|(le, _)| le.is_infinite()).map(|x| x.1).unwrap_or(0.0);
    match (q, timeout) {
        (Some(q), Some(t)) if t > 0.0 && q / t >= th.ipvs_idle_ratio => {
            let mut f = finding(
                IPVS_IDLE,
                "ipvs",
                Verdict::Warning,
                format!(
                    "the {} quantile of the idle time of {entries} ESTABLISHED IPVS entries is {q:.0}s, {:.0}% of \
                     the {t}s TCP timeout",
                    th.ipvs_idle_quantile,
                    q / t * 100.0
                ),
            );
            f.evidence = [
                ("idle_quantile_seconds", num(q)),
                ("quantile", num(th.ipvs_idle_quantile)),
                ("ipvs_tcp_timeout_seconds", num(t)),
                ("ratio", num(q / t)),
                ("threshold_ratio", num(th.ipvs_idle_ratio)),
                ("established_entries", num(entries)),
            ]
            .into_iter()
            .collect();
            f.next = vec![
                "ipvsadm -lnc | awk '$3==\"ESTABLISHED\"' | sort -k2 | head".into(),
                "ipvsadm -l --timeout".into(),
            ];
            f.fix = "Give clients TCP keepalive shorter than the IPVS TCP timeout, or raise kube-proxy's \
                     --ipvs-tcp-timeout."
                .into();
            out.findings.push(f);
        }
        (Some(q), Some(t)) if t > 0.0 => out.ok(
            IPVS_IDLE,
            "ipvs",
            format!(
                "{} quantile of IPVS idle times {q:.0}s of the {t}s TCP timeout ({entries} entries)",
                th.ipvs_idle_quantile
            ),
            vec![("idle_quantile_seconds", num(q)), ("ipvs_tcp_timeout_seconds", num(t))],
        ),
        _ => out.ok(
            IPVS_IDLE,
            "ipvs",
            "no ESTABLISHED TCP entries in the IPVS connection table".into(),
            vec![("established_entries", num(entries))],
        ),
    }
}

/// Prometheus's `histogram_quantile` over cumulative (upper bound, count) buckets: linear interpolation inside
/// the bucket, the lower bound of the first bucket 0, the highest finite bound when the rank falls in `+Inf`.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let mut b: Vec<(f64, f64)> = buckets.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last().filter(|(le, _)| le.is_infinite())?.1;
    if total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let i = b.iter().position(|(_, c)| *c >= rank)?;
    if b[i].0.is_infinite() {
        return b.get(i.wrapping_sub(1)).map(|x| x.0).or(Some(0.0));
    }
    let (lo, lo_count) = if i == 0 { (0.0, 0.0) } else { b[i - 1] };
    let (hi, hi_count) = b[i];
    if hi_count == lo_count {
        return Some(hi);
    }
    Some(lo + (hi - lo) * (rank - lo_count) / (hi_count - lo_count))
}

// --------------------------------------------------------------------------------------------------- memory

const GROUP_KEYS: &[&str] = &["namespace", "pod", "container", "process"];

fn memory(input: &Input, out: &mut Out) {
    let (a, b, th) = (input.first, input.second, &input.thresholds);
    let mut n = 0;
    let mut go_groups = 0;
    let mut top_share: Option<(f64, String)> = None;
    for lazy in b.all("nodesleuth_process_lazyfree_bytes").filter(|s| input.filter.keeps(s)) {
        let Some(rss) = b.same("nodesleuth_process_resident_memory_bytes", lazy, GROUP_KEYS) else { continue };
        let go: Vec<&Sample> = b
            .all("nodesleuth_process_go_info")
            .filter(|g| GROUP_KEYS.iter().all(|k| g.label(k) == lazy.label(k)) && g.label("madvdontneed") != "1")
            .collect();
        if go.is_empty() {
            continue;
        }
        go_groups += 1;
        let share = if rss > 0.0 { lazy.value / rss } else { 0.0 };
        if top_share.as_ref().is_none_or(|(s, _)| share > *s) {
            top_share = Some((share, format!("{} in {}", lazy.label("process"), where_(lazy))));
        }
        if share < th.madv_share || lazy.value < th.madv_min_bytes {
            continue;
        }
        n += 1;
        let g = go[0];
        let (version, madv) = (g.label("go_version"), g.label("madvdontneed"));
        let growth =
            per_minute(a.same("nodesleuth_process_lazyfree_bytes", lazy, GROUP_KEYS), lazy.value, input.window);
        let summary = format!(
            "{:.0}% of the {} RSS of Go process {} ({version}, madvdontneed={madv}) in {} is LazyFree ({}): \
             freed with MADV_FREE, not in use",
            share * 100.0,
            bytes(rss),
            lazy.label("process"),
            where_(lazy),
            bytes(lazy.value)
        );
        let mut f = finding(MADV_FREE, "memory", Verdict::Warning, summary);
        f.subject = subject(lazy, GROUP_KEYS);
        f.evidence = [
            ("resident_bytes", num(rss)),
            ("lazyfree_bytes", num(lazy.value)),
            ("lazyfree_share", num(share)),
            ("resident_minus_lazyfree_bytes", num(rss - lazy.value)),
            ("lazyfree_growth_bytes_per_minute", opt(growth)),
            ("go_version", json!(version)),
            ("madvdontneed", json!(madv)),
            ("module", json!(g.label("module"))),
        ]
        .into_iter()
        .collect();
        f.next = vec![
            process_pid_command(lazy),
            "grep -E '^(Rss|LazyFree)' /proc/$PID/smaps_rollup".into(),
            "tr '\\0' '\\n' < /proc/$PID/environ | grep GODEBUG".into(),
        ];
        f.fix = if madv == "0" {
            "Remove GODEBUG=madvdontneed=0 from the container (or set GODEBUG=madvdontneed=1): freed memory then \
             leaves RSS at once. Do not raise the memory limit for it."
                .into()
        } else {
            "Set GODEBUG=madvdontneed=1 in the container's environment, or rebuild with Go >= 1.16 (MADV_DONTNEED by \
             default): freed memory then leaves RSS at once. Do not raise the memory limit for it."
                .into()
        };
        out.findings.push(f);
    }
    if n == 0 {
        let top =
            top_share.map(|(s, w)| format!("; highest LazyFree share {:.0}% ({w})", s * 100.0)).unwrap_or_default();
        out.ok(
            MADV_FREE,
            "memory",
            format!("no Go process with madvdontneed!=1 has >= {:.0}% of its RSS in LazyFree ({go_groups} such groups{top})", th.madv_share * 100.0),
            vec![("go_groups", num(go_groups as f64))],
        );
    }
    let quarantined = b.get("nodesleuth_memory_quarantined_processes", &[]).unwrap_or(0.0);
    if quarantined > 0.0 {
        out.skip(
            MADV_FREE,
            "memory",
            "unreadable",
            format!(
                "{quarantined} process(es) skipped: their /proc reads hang (nodesleuth_memory_quarantined_processes)"
            ),
        );
    }
    let unknown = b.all("nodesleuth_process_go_info").filter(|g| g.label("madvdontneed") == "unknown").count();
    if unknown > 0 {
        out.skip(
            MADV_FREE,
            "memory",
            "unreadable",
            format!(
                "GODEBUG of {unknown} Go group(s) unknown: /proc/<pid>/environ unreadable (needs root / CAP_SYS_PTRACE)"
            ),
        );
    }
    out.skip(
        LIMIT_LAZY_FREE,
        "memory",
        "not_visible",
        "needs each container's memory limit and working set (cAdvisor's container_spec_memory_limit_bytes and \
         container_memory_working_set_bytes), which nodesleuth does not read; the alert joins them in Prometheus"
            .into(),
    );
}

// -------------------------------------------------------------------------------------------------- systemd

const COOKIE_SPACE: f64 = 4_294_967_296.0;

fn systemd(input: &Input, out: &mut Out) {
    let (a, b, th) = (input.first, input.second, &input.thresholds);
    let up = b.get("nodesleuth_systemd_up", &[]) == Some(1.0);
    let dbus = b.get("nodesleuth_dbus_up", &[]) == Some(1.0);
    let error = input.errors.get("systemd").cloned();
    let serial = b.get("nodesleuth_systemd_reply_serial", &[]);
    let version = b.all("nodesleuth_systemd_info").next().map(|s| s.label("version").to_string());
    let since = b.get("nodesleuth_systemd_last_success_timestamp_seconds", &[]).map(|t| (input.now - t).max(0.0));
    let base_ev = |extra: Vec<(&'static str, Value)>| -> BTreeMap<&'static str, Value> {
        let mut ev: BTreeMap<&'static str, Value> = [
            ("systemd_up", json!(up)),
            ("dbus_up", json!(dbus)),
            ("call_timeout_seconds", num(input.systemd_timeout)),
            ("reply_serial", opt(serial)),
            ("seconds_since_systemd_answered", opt(since)),
            ("error", error.clone().map(Value::String).unwrap_or(Value::Null)),
        ]
        .into_iter()
        .collect();
        ev.extend(extra);
        ev
    };
    // Responsiveness first: without answers the other checks have nothing fresh to read.
    if !dbus {
        let mut f = finding(
            DBUS_DOWN,
            "systemd",
            Verdict::Critical,
            format!(
                "the system D-Bus does not answer within {}s although its socket exists{}",
                input.systemd_timeout,
                error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
            ),
        );
        f.evidence = base_ev(vec![]);
        f.next = vec![
            "systemctl status dbus.service dbus.socket".into(),
            "busctl --system list | head".into(),
            "journalctl -u dbus --since -1h | tail".into(),
        ];
        f.fix = "Restart dbus (`systemctl restart dbus`): systemd re-connects to it; find why it died in its journal."
            .into();
        out.findings.push(f);
    } else {
        out.ok(DBUS_DOWN, "systemd", "dbus-daemon answers".into(), vec![]);
    }
    if !up && dbus {
        let ratio = serial.map(|s| s / COOKIE_SPACE);
        let mut f = finding(
            UNRESPONSIVE,
            "systemd",
            Verdict::Critical,
            format!(
                "systemd (PID 1) does not answer on D-Bus within {}s while dbus-daemon does; last reply serial {} \
                 ({} of the 2^32 cookie space){}",
                input.systemd_timeout,
                serial.map(|s| format!("{s}")).unwrap_or_else(|| "unknown".into()),
                ratio.map(|r| format!("{:.1}%", r * 100.0)).unwrap_or_else(|| "?".into()),
                since.map(|s| format!(", last answer {s:.0}s ago")).unwrap_or_default()
            ),
        );
        f.evidence = base_ev(vec![
            ("reply_serial_ratio", opt(ratio)),
            ("down_in_first_sample", json!(a.get("nodesleuth_systemd_up", &[]) == Some(0.0))),
        ]);
        f.next = vec![
            "timeout 5 busctl --system get-property org.freedesktop.systemd1 /org/freedesktop/systemd1 \
             org.freedesktop.systemd1.Manager Version"
                .into(),
            "grep State /proc/1/status; cat /proc/1/wchan; echo".into(),
            "gdb -p 1 -batch -ex 'thread apply all bt'  # where PID 1 is stuck".into(),
        ];
        f.fix = "If the cookie is near 2^32: drain the node and run `systemctl daemon-reexec` (the cookie restarts \
                 from 1), then update systemd (>= v242, PR #11818; RHEL/CentOS 7: systemd-219-67 or later). A PID 1 \
                 hung otherwise needs its stack before anything else."
            .into();
        out.findings.push(f);
    } else if !dbus {
        out.skip(UNRESPONSIVE, "systemd", "failed", "the system bus does not answer: systemd cannot be asked".into());
    } else {
        let call: Vec<String> = b
            .all("nodesleuth_systemd_call_duration_seconds")
            .map(|s| format!("{} {:.1} ms", s.label("method"), s.value * 1000.0))
            .collect();
        out.ok(
            UNRESPONSIVE,
            "systemd",
            format!("systemd answers ({})", if call.is_empty() { "no call timings".into() } else { call.join(", ") }),
            b.all("nodesleuth_systemd_call_duration_seconds")
                .filter(|s| s.label("method") == "GetAll")
                .map(|s| ("getall_seconds", num(s.value)))
                .collect(),
        );
    }
    if !up {
        let why = format!("systemd does not answer{}", error.as_ref().map(|e| format!(": {e}")).unwrap_or_default());
        for name in [PROBE_SLICES, UNIT_CHURN] {
            out.skip(name, "systemd", "failed", why.clone());
        }
        if serial.is_none() {
            out.skip(COOKIE, "systemd", "failed", why);
            return;
        }
    }
    // The cookie: serial and headroom now, growth over the window, days to 2^32 at that growth.
    if let Some(s2) = serial {
        let s1 = a.get("nodesleuth_systemd_reply_serial", &[]);
        // A drop is systemd re-connecting (daemon-reexec, dbus restart): the serial starts again from 1, and the
        // growth is what it counted since, as rate() treats a counter reset.
        let grown = s1.map(|s1| if s2 >= s1 { s2 - s1 } else { s2 });
        let per_sec = grown.filter(|_| input.window > 0.0 && up).map(|g| g / input.window);
        let headroom = COOKIE_SPACE - s2;
        let secs_left = per_sec.filter(|r| *r > 0.0).map(|r| headroom / r);
        let ratio = s2 / COOKIE_SPACE;
        let verdict = if ratio > th.cookie_critical_ratio || secs_left.is_some_and(|s| s <= th.cookie_critical_horizon)
        {
            Verdict::Critical
        } else if secs_left.is_some_and(|s| s <= th.cookie_warning_horizon) {
            Verdict::Warning
        } else {
            Verdict::Ok
        };
        let days = secs_left.map(|s| s / 86400.0);
        let summary = format!(
            "reply serial {s2} = {:.4}% of 2^32, headroom {headroom}; {} over {:.0}s{}",
            ratio * 100.0,
            match grown {
                Some(g) => format!("+{g}"),
                None => "growth unknown".into(),
            },
            input.window,
            match days {
                Some(d) if d >= 36500.0 => ", overflow in > 100 years at that rate".to_string(),
                Some(d) => format!(", overflow in {d:.1} days at that rate"),
                None => ", no growth measured".into(),
            }
        );
        let ev = vec![
            ("reply_serial", num(s2)),
            ("reply_serial_ratio", json!(ratio)),
            ("headroom", num(headroom)),
            ("serial_growth_per_minute", opt(per_sec.map(|r| r * 60.0))),
            ("projected_days_to_overflow", opt(days.map(|d| (d * 100.0).round() / 100.0))),
            ("systemd_version", version.clone().map(Value::String).unwrap_or(Value::Null)),
        ];
        if verdict == Verdict::Ok {
            out.ok(COOKIE, "systemd", summary, ev);
        } else {
            let mut f = finding(COOKIE, "systemd", verdict, summary);
            f.evidence = ev.into_iter().collect();
            f.next = vec![
                "systemctl --version | head -1".into(),
                "rpm -q systemd || dpkg -l systemd".into(),
                "systemctl list-units --all 'libcontainer_*_systemd_test_default.slice' | tail -1".into(),
            ];
            f.fix = "Drain the node and run `systemctl daemon-reexec` (the cookie restarts from 1, no reboot); for \
                     good, update systemd (>= v242, PR #11818; RHEL/CentOS 7: systemd-219-67 or later) and cut the \
                     churn (runc's leaked probe slices). The doctor's rate is over its short window; the alert uses 6h."
                .into();
            out.findings.push(f);
        }
    }
    if !up {
        return;
    }
    // Leaked runc probe slices.
    match b.get("nodesleuth_systemd_pattern_units", &[("pattern", &th.probe_pattern)]) {
        Some(n) if n >= th.probe_slices => {
            let mut f = finding(
                PROBE_SLICES,
                "systemd",
                Verdict::Warning,
                format!(
                    "systemd holds {n} leaked runc probe slices ({}; threshold {})",
                    th.probe_pattern, th.probe_slices
                ),
            );
            f.evidence = [("units", num(n)), ("threshold", num(th.probe_slices))].into_iter().collect();
            f.next = vec![
                "systemctl list-units --all --plain --no-legend 'libcontainer_*_systemd_test_default.slice' | wc -l"
                    .into(),
                "runc --version".into(),
            ];
            f.fix = "Update runc; remove the leaked slices: systemctl list-units --all --plain --no-legend \
                     'libcontainer_*_systemd_test_default.slice' | awk '{print $1}' | xargs -r systemctl stop"
                .into();
            out.findings.push(f);
        }
        Some(n) => out.ok(
            PROBE_SLICES,
            "systemd",
            format!("{n} runc probe slices (threshold {})", th.probe_slices),
            vec![("units", num(n))],
        ),
        None => out.skip(
            PROBE_SLICES,
            "systemd",
            "disabled",
            format!("{} is not in --collector.systemd.unit-patterns", th.probe_pattern),
        ),
    }
    // Unit churn: jobs installed per hour, measured over the window.
    let jobs =
        (a.get("nodesleuth_systemd_installed_jobs_total", &[]), b.get("nodesleuth_systemd_installed_jobs_total", &[]));
    match jobs {
        (Some(j1), Some(j2)) if j2 >= j1 && input.window > 0.0 => {
            let per_hour = (j2 - j1) / input.window * 3600.0;
            let summary = format!(
                "systemd installed {} jobs in {:.0}s: {per_hour:.0} per hour (threshold {} per hour)",
                j2 - j1,
                input.window,
                th.churn_per_hour
            );
            let ev = vec![
                ("jobs_in_window", num(j2 - j1)),
                ("jobs_per_hour", num(per_hour.round())),
                ("installed_jobs_total", num(j2)),
            ];
            if per_hour >= th.churn_per_hour {
                let mut f = finding(UNIT_CHURN, "systemd", Verdict::Info, summary);
                f.evidence = ev.into_iter().collect();
                f.next = vec![
                    "journalctl -b --since -10min -o cat _PID=1 | grep -E 'Started|Created slice' | sort | uniq -c | sort -rn | head".into(),
                    "systemctl list-units --all --type=scope,slice --no-legend | wc -l".into(),
                ];
                f.fix = "Find the source of the transient units (probe slices, cron-like pods, exec probes) before \
                         the cookie runs out."
                    .into();
                out.findings.push(f);
            } else {
                out.ok(UNIT_CHURN, "systemd", summary, ev);
            }
        }
        _ => out.skip(
            UNIT_CHURN,
            "systemd",
            "failed",
            "installed-jobs counter missing or reset between the samples".into(),
        ),
    }
}

// --------------------------------------------------------------------------------------------------- output

fn output(input: &Input, out: &mut Out) {
    let (b, th) = (input.second, &input.thresholds);
    // The collector reports a stall once it saw the thread blocked in two scrapes in a row with no byte written in
    // between, counted from the first: the doctor sees at most its window (minus how late in its first sample the
    // thread was read). Blocked across both samples for at least half the window is the doctor's stall.
    let bound = th.output_stalled_seconds.min(input.window * 0.5);
    let keys = ["namespace", "pod", "container", "process", "target"];
    let mut n = 0;
    for s in b.all("nodesleuth_output_stalled_seconds").filter(|s| input.filter.keeps(s)) {
        if s.label("process") == "(other)" || s.value < bound {
            continue;
        }
        n += 1;
        let target = s.label("target");
        let threads = b.same("nodesleuth_output_stalled_threads", s, &keys);
        let log_keys =
            [("namespace", s.label("namespace")), ("pod", s.label("pod")), ("container", s.label("container"))];
        let log_age = b.get("nodesleuth_container_log_age_seconds", &log_keys);
        let partial = b.get("nodesleuth_container_log_partial_lines", &log_keys);
        let verdict = if target == "tty" { Verdict::Critical } else { Verdict::Warning };
        let summary = format!(
            "{} thread(s) of {} in {} blocked writing to stdout/stderr ({target}) for {:.0}s without progress{}",
            threads.unwrap_or(1.0),
            s.label("process"),
            where_(s),
            s.value,
            log_age.map(|a| format!("; container log last written {a:.0}s ago")).unwrap_or_default()
        );
        let mut f = finding(OUTPUT_STALLED, "output", verdict, summary);
        f.subject = subject(s, &keys);
        f.evidence = [("stalled_seconds", num(s.value)), ("stalled_threads", opt(threads)), ("target", json!(target))]
            .into_iter()
            .collect();
        // Pod containers only: host processes have no container log.
        if let Some(age) = log_age {
            f.evidence.insert("log_age_seconds", num(age));
        }
        if let Some(p) = partial {
            f.evidence.insert("log_partial_lines", num(p));
        }
        f.next = vec![
            process_pid_command(s),
            "ls -l /proc/$PID/fd/1 /proc/$PID/fd/2".into(),
            "for t in /proc/$PID/task/*; do echo \"$t $(cat $t/wchan) $(cut -d' ' -f1-2 $t/syscall)\"; done".into(),
        ];
        f.fix = if target == "tty" {
            "The container is stuck writing logs to a terminal: set `tty: false` (and `stdin: false`) in the pod \
             spec; nothing drains a tty nobody attached to."
                .into()
        } else {
            "The runtime stopped draining the container's stdout pipe: check the container runtime / shim (crictl \
             logs, the shim's process state) and restart it; log less, or asynchronously."
                .into()
        };
        out.findings.push(f);
    }
    let unreadable = b.get("nodesleuth_output_unreadable_threads", &[]).unwrap_or(0.0);
    if unreadable > 0.0 {
        out.skip(
            OUTPUT_STALLED,
            "output",
            "unreadable",
            format!("{unreadable} candidate thread(s) whose syscall could not be read (no ptrace access: needs CAP_SYS_PTRACE)"),
        );
    }
    if n == 0 {
        let candidates = b.get("nodesleuth_output_candidate_threads", &[]).unwrap_or(0.0);
        out.ok(
            OUTPUT_STALLED,
            "output",
            format!("no thread blocked writing to stdout/stderr across both samples ({candidates} candidate threads inspected)"),
            vec![("candidate_threads", num(candidates))],
        );
    }
}

// ------------------------------------------------------------------------------------------------ collectors

/// A collector that reported failure in the latest sample (partial data, an error, its deadline). A failing
/// systemd collector while systemd or the bus does not answer is the systemd checks' finding, as in the alert.
fn collector_failing(input: &Input, out: &mut Out) {
    let (a, b) = (input.first, input.second);
    for s in b.all("nodesleuth_scrape_collector_success") {
        let c = s.label("collector");
        if s.value != 0.0 || (!input.only.is_empty() && !input.only.iter().any(|o| o == c)) {
            continue;
        }
        if c == "systemd"
            && (b.get("nodesleuth_systemd_up", &[]) == Some(0.0) || b.get("nodesleuth_dbus_up", &[]) == Some(0.0))
        {
            continue;
        }
        let area: &'static str = super::report::AREAS.iter().find(|x| **x == c).copied().unwrap_or("exporter");
        let error = input.errors.get(c).cloned();
        let both = a.get("nodesleuth_scrape_collector_success", &[("collector", c)]) == Some(0.0);
        let mut f = finding(
            COLLECTOR_FAILING,
            area,
            Verdict::Warning,
            format!(
                "the {c} collector failed{}: {}; its findings above may be incomplete",
                if both { " in both samples" } else { " in the latest sample" },
                error.clone().unwrap_or_else(|| "no reason recorded".into())
            ),
        );
        f.subject = [("collector", c.to_string())].into_iter().collect();
        f.evidence = [
            ("error", error.map(Value::String).unwrap_or(Value::Null)),
            ("failed_in_both_samples", json!(both)),
            ("duration_seconds", opt(b.get("nodesleuth_scrape_collector_duration_seconds", &[("collector", c)]))),
        ]
        .into_iter()
        .collect();
        f.next = vec![format!("nodesleuth doctor --only {area} --log.level debug")];
        f.fix = "Partial data usually means missing privileges (run as root in the host PID namespace, or grant the \
                 DaemonSet's SYS_PTRACE, SYS_ADMIN and DAC_READ_SEARCH) or a malformed kernel file; the error names it."
            .into();
        out.findings.push(f);
    }
}

/// Two sentences per failure mode.
fn meaning(name: &str) -> &'static str {
    match name {
        CW_PILE_UP => {
            "Clients closed these connections and the server process has not closed its side: it leaks \
                       them on some path or it is hung. A hung server is restarted by its liveness probe and the \
                       evidence goes with it."
        }
        CW_CLIENT_LEAK => {
            "Servers closed connections this process opened and it never closed them: its client or \
                           connection pool keeps dead connections. Each holds a file descriptor and a request sent on \
                           one fails."
        }
        ACCEPT_QUEUE_FULL => {
            "The listener's accept queue is full: the process does not call accept() fast enough, \
                              or at all. New connections are dropped or time out in SYN_SENT."
        }
        IPVS_ORPHANED => {
            "The pod holds ESTABLISHED connections to a Service VIP that IPVS has forgotten (idle longer \
                          than the IPVS TCP timeout, or flushed). The server's reply is answered with RST by the \
                          client's kernel and the client waits until its own timeout, often forever."
        }
        IPVS_NEAR_EXPIRY => {
            "These connections have been silent so long that their IPVS entries are about to expire. \
                             If the server answers after that, the connection is orphaned."
        }
        IPVS_IDLE => {
            "The longest-idle ESTABLISHED IPVS connections on this node come close to the IPVS TCP timeout. \
                      Calls that stay silent longer lose their entry and hang."
        }
        MADV_FREE => {
            "The Go runtime returned this memory with MADV_FREE, so it stays counted in RSS until the kernel \
                      needs it. RSS looks like a leak while the heap is small; the pod may be OOM-killed or evicted \
                      for memory that is free."
        }
        LIMIT_LAZY_FREE => {
            "A container near its memory limit mostly because of LazyFree pages. It would be killed \
                            for memory that is free."
        }
        COOKIE => {
            "systemd numbers every D-Bus message with a 32-bit cookie; an unpatched systemd stops answering \
                   once it passes 2^32. The projection uses the growth measured over the doctor's window."
        }
        UNRESPONSIVE => {
            "PID 1 does not answer D-Bus calls while the bus itself does: it is hung or its cookie is \
                         exhausted. runc and the container runtime wait for it, so pods hang and the node goes \
                         NotReady."
        }
        DBUS_DOWN => {
            "The system bus does not answer although its socket exists. Nothing can talk to systemd: \
                      container starts through the systemd cgroup driver fail or hang."
        }
        PROBE_SLICES => {
            "runc's systemd probe leaves libcontainer_*_systemd_test_default.slice units behind (a known \
                         runc bug). They pile up in PID 1 and add to its unit churn."
        }
        UNIT_CHURN => {
            "systemd installs jobs (transient units) at an unusual rate. Each costs D-Bus cookies and \
                       drives the cookie towards exhaustion."
        }
        OUTPUT_STALLED => {
            "A thread has been blocked writing to its stdout/stderr without progress: nobody drains the \
                           terminal or pipe. Every other thread that logs blocks too, and the process looks hung."
        }
        COLLECTOR_FAILING => {
            "A nodesleuth collector reported an error, a timeout or partial data. Its checks may \
                              miss something."
        }
        _ => "",
    }
}

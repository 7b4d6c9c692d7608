//! The checks on hand-built snapshots: each finding and verdict, the filters, the gates ("could not check"), the
//! thresholds against the rule library's defaults, and the JSON shape (a golden file).

use std::collections::{BTreeMap, BTreeSet};

use super::checks::{self, DEFAULTS, Filter, Input, histogram_quantile};
use super::report::{Finding, Report, Unchecked, Verdict};
use super::snapshot::Snapshot;

const ALL_UP: &str = r#"
nodesleuth_collector_source_present{collector="tcp"} 1
nodesleuth_collector_source_present{collector="ipvs"} 1
nodesleuth_collector_source_present{collector="memory"} 1
nodesleuth_collector_source_present{collector="systemd"} 1
nodesleuth_collector_source_present{collector="output"} 1
nodesleuth_scrape_collector_success{collector="tcp"} 1
nodesleuth_scrape_collector_success{collector="ipvs"} 1
nodesleuth_scrape_collector_success{collector="memory"} 1
nodesleuth_scrape_collector_success{collector="systemd"} 1
nodesleuth_scrape_collector_success{collector="output"} 1
nodesleuth_tcp_sockets{namespace="",pod="",netns="host",state="established"} 3
nodesleuth_tcp_listen_queue_length{namespace="",pod="",netns="host",local_port="22"} 0
nodesleuth_tcp_listen_queue_limit{namespace="",pod="",netns="host",local_port="22"} 128
nodesleuth_ipvs_timeout_seconds{timeout="tcp",protocol="tcp",source="netlink"} 900
nodesleuth_processes{namespace="",pod="",container="",process="sshd"} 1
nodesleuth_dbus_up 1
nodesleuth_systemd_up 1
nodesleuth_systemd_reply_serial 1000
nodesleuth_systemd_installed_jobs_total 50
nodesleuth_systemd_pattern_units{pattern="libcontainer_*_systemd_test_default.slice"} 0
nodesleuth_systemd_call_duration_seconds{method="GetAll"} 0.002
nodesleuth_output_candidate_threads 4
"#;

fn snap(extra: &str) -> Snapshot {
    Snapshot::parse_text(&format!("{ALL_UP}\n{extra}")).unwrap()
}

/// Replaces the lines of `base` that start with the same series as a line of `over` (so a test can change one
/// value of the baseline), and adds the others.
fn with(over: &str) -> Snapshot {
    let mut lines: Vec<String> = ALL_UP.lines().map(str::to_string).collect();
    for o in over.lines().filter(|l| !l.trim().is_empty()) {
        let series = o.rsplit_once(' ').unwrap().0;
        match lines.iter().position(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series)) {
            Some(i) => lines[i] = o.to_string(),
            None => lines.push(o.to_string()),
        }
    }
    Snapshot::parse_text(&lines.join("\n")).unwrap()
}

fn input<'a>(first: &'a Snapshot, second: &'a Snapshot) -> Input<'a> {
    Input {
        first,
        second,
        window: 10.0,
        only: vec![],
        filter: Filter::default(),
        thresholds: DEFAULTS,
        built: ["tcp", "ipvs", "memory", "systemd", "output"].iter().map(|s| s.to_string()).collect(),
        disabled: BTreeSet::new(),
        errors: BTreeMap::new(),
        absent: BTreeMap::new(),
        now: 1_000_000.0,
        systemd_timeout: 2.0,
        capabilities: None,
    }
}

fn run(i: &Input) -> (Vec<Finding>, Vec<Unchecked>) {
    checks::diagnose(i)
}

fn problems(f: &[Finding]) -> Vec<(&'static str, Verdict)> {
    f.iter().filter(|f| f.verdict != Verdict::Ok).map(|f| (f.name, f.verdict)).collect()
}

fn one<'a>(f: &'a [Finding], name: &str) -> &'a Finding {
    let v: Vec<&Finding> = f.iter().filter(|f| f.name == name).collect();
    assert_eq!(v.len(), 1, "{name}: {f:#?}");
    v[0]
}

fn ev(f: &Finding, key: &str) -> serde_json::Value {
    f.evidence.get(key).cloned().unwrap_or_else(|| panic!("{key} not in {:?}", f.evidence))
}

#[test]
fn a_healthy_node_has_only_ok_findings_and_the_one_invisible_check() {
    let s = snap("");
    let (f, u) = run(&input(&s, &s));
    assert_eq!(problems(&f), vec![]);
    // One ok per check that ran.
    let names: BTreeSet<&str> = f.iter().map(|f| f.name).collect();
    for (_, area) in checks::CHECKS {
        for name in *area {
            if *name != checks::LIMIT_LAZY_FREE {
                assert!(names.contains(name), "{name} has no ok entry: {names:?}");
            }
        }
    }
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!((u[0].name, u[0].kind), (checks::LIMIT_LAZY_FREE, "not_visible"));
    let r = report(f, u);
    assert_eq!((r.verdict, r.exit_code), (Verdict::Ok, 0));
    assert!(r.to_human(false, 100).contains("Nothing found"));
}

const CW: &str = "nodesleuth_tcp_close_wait_sockets";

fn cw(process: &str, port: &str, v: f64) -> String {
    format!(
        "{CW}{{namespace=\"shop\",pod=\"api-1\",container=\"api\",process=\"{process}\",local_port=\"{port}\",netns=\"4026532601\"}} {v}\n"
    )
}

fn queue(port: &str, len: f64, limit: f64) -> String {
    let l = format!("namespace=\"shop\",pod=\"api-1\",netns=\"4026532601\",local_port=\"{port}\"");
    format!("nodesleuth_tcp_listen_queue_length{{{l}}} {len}\nnodesleuth_tcp_listen_queue_limit{{{l}}} {limit}\n")
}

#[test]
fn close_wait_pile_up_with_growth_is_a_warning() {
    let (a, b) = (with(&cw("java", "8080", 120.0)), with(&cw("java", "8080", 130.0)));
    let (f, _) = run(&input(&a, &b));
    assert_eq!(problems(&f), vec![(checks::CW_PILE_UP, Verdict::Warning)]);
    let p = one(&f, checks::CW_PILE_UP);
    assert_eq!(ev(p, "growth_per_minute"), 60);
    assert_eq!(ev(p, "close_wait_sockets"), 130);
    assert_eq!(ev(p, "looks_hung"), false);
    assert_eq!(p.subject.get("process").map(String::as_str), Some("java"));
    assert_eq!(p.subject.get("local_port").map(String::as_str), Some("8080"));
    assert!(p.summary.contains("130 CLOSE_WAIT sockets on port 8080 in pod shop/api-1"), "{}", p.summary);
    assert_eq!(p.runbook, "docs/runbooks/NodesleuthTCPCloseWaitPileUp.md");
    assert!(p.next.iter().any(|c| c.contains("sport = :8080")), "{:?}", p.next);
}

#[test]
fn close_wait_below_threshold_or_draining_is_not_a_pile_up() {
    for (x, y) in [(99.0, 99.0), (140.0, 120.0)] {
        let (a, b) = (with(&cw("java", "8080", x)), with(&cw("java", "8080", y)));
        let (f, _) = run(&input(&a, &b));
        assert_eq!(problems(&f), vec![], "{x} -> {y}");
        assert!(one(&f, checks::CW_PILE_UP).summary.contains(&format!("largest {y}")));
    }
    // Exactly the threshold, flat: the alert fires (>= and deriv >= 0), and so does the doctor.
    let a = with(&cw("java", "8080", 100.0));
    assert_eq!(problems(&run(&input(&a, &a)).0), vec![(checks::CW_PILE_UP, Verdict::Warning)]);
}

#[test]
fn client_side_close_wait_is_a_client_leak() {
    let (a, b) = (with(&cw("java", "(ephemeral)", 150.0)), with(&cw("java", "(ephemeral)", 150.0)));
    let (f, _) = run(&input(&a, &b));
    assert_eq!(problems(&f), vec![(checks::CW_CLIENT_LEAK, Verdict::Warning)]);
    assert_eq!(ev(one(&f, checks::CW_CLIENT_LEAK), "growth_per_minute"), 0);
}

#[test]
fn rising_close_wait_with_a_full_accept_queue_is_a_hung_process() {
    // The process's own group stays at 120; sockets that closed while waiting in the full queue (no owner yet)
    // make the port's CLOSE_WAIT rise.
    let a = with(&format!("{}{}{}", cw("java", "8080", 120.0), cw("", "8080", 1.0), queue("8080", 9.0, 8.0)));
    let b = with(&format!("{}{}{}", cw("java", "8080", 120.0), cw("", "8080", 4.0), queue("8080", 9.0, 8.0)));
    let (f, _) = run(&input(&a, &b));
    let pile = one(&f, checks::CW_PILE_UP);
    assert_eq!(pile.verdict, Verdict::Critical);
    assert_eq!(ev(pile, "looks_hung"), true);
    assert_eq!(ev(pile, "accept_queue_full"), true);
    assert!(pile.summary.contains("looks hung"), "{}", pile.summary);
    // The queue finding is there too, as a warning: the hang is already the pile-up's critical finding.
    let q = one(&f, checks::ACCEPT_QUEUE_FULL);
    assert_eq!(q.verdict, Verdict::Warning);
    assert_eq!(ev(q, "close_wait_on_port"), 124);
    assert_eq!(ev(q, "close_wait_growth_per_minute"), 18);
    assert_eq!(report(f, vec![]).exit_code, 2);
}

#[test]
fn a_full_accept_queue_alone_is_a_warning_and_with_rising_close_wait_below_the_pile_up_threshold_critical() {
    let (a, b) = (with(&queue("8080", 9.0, 8.0)), with(&queue("8080", 9.0, 8.0)));
    let (f, _) = run(&input(&a, &b));
    assert_eq!(problems(&f), vec![(checks::ACCEPT_QUEUE_FULL, Verdict::Warning)]);
    assert_eq!(ev(one(&f, checks::ACCEPT_QUEUE_FULL), "full_in_first_sample"), true);
    let a = with(&format!("{}{}", cw("", "8080", 2.0), queue("8080", 9.0, 8.0)));
    let b = with(&format!("{}{}", cw("", "8080", 5.0), queue("8080", 9.0, 8.0)));
    let (f, _) = run(&input(&a, &b));
    assert_eq!(problems(&f), vec![(checks::ACCEPT_QUEUE_FULL, Verdict::Critical)]);
    // Not full: 8 of 8 queued is full (the kernel's queue is full at limit + 1, but length >= limit is the
    // alert's test); 7 of 8 is not.
    let b = with(&queue("8080", 7.0, 8.0));
    assert_eq!(problems(&run(&input(&b, &b)).0), vec![]);
}

#[test]
fn without_queue_limits_the_accept_queue_check_says_why_it_could_not_run() {
    let s = Snapshot::parse_text(
        &ALL_UP
            .lines()
            .filter(|l| !l.starts_with("nodesleuth_tcp_listen_queue_limit"))
            .chain(["nodesleuth_tcp_namespaces{source=\"procfs\"} 3"])
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let (f, u) = run(&input(&s, &s));
    assert!(f.iter().all(|f| f.name != checks::ACCEPT_QUEUE_FULL));
    let u: Vec<_> = u.iter().filter(|u| u.name == checks::ACCEPT_QUEUE_FULL).collect();
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].kind, "unreadable");
    assert!(u[0].reason.contains("netlink") && u[0].reason.contains("3 namespace"), "{}", u[0].reason);
}

const VIP: &str =
    "namespace=\"batch\",pod=\"report-1\",netns=\"4026532700\",virtual_address=\"10.96.0.10\",virtual_port=\"443\"";

#[test]
fn ipvs_orphans_are_warnings_and_near_expiry_info_with_vip_and_timeout() {
    let s = with(&format!(
        "nodesleuth_ipvs_client_connections{{{VIP}}} 3\nnodesleuth_ipvs_orphaned_connections{{{VIP}}} 2\n\
         nodesleuth_ipvs_connections_near_expiry{{{VIP}}} 1\n\
         nodesleuth_ipvs_established_idle_max_seconds{{protocol=\"tcp\",virtual_address=\"10.96.0.10\",virtual_port=\"443\"}} 880\n"
    ));
    let (f, _) = run(&input(&s, &s));
    assert_eq!(
        problems(&f),
        vec![(checks::IPVS_ORPHANED, Verdict::Warning), (checks::IPVS_NEAR_EXPIRY, Verdict::Info)]
    );
    let o = one(&f, checks::IPVS_ORPHANED);
    assert_eq!(o.subject.get("virtual_address").map(String::as_str), Some("10.96.0.10"));
    assert_eq!((ev(o, "connections"), ev(o, "client_connections")), (2.into(), 3.into()));
    assert_eq!((ev(o, "ipvs_tcp_timeout_seconds"), ev(o, "service_idle_max_seconds")), (900.into(), 880.into()));
    assert!(
        o.summary.contains("2 of 3 connections from pod batch/report-1 to Service 10.96.0.10:443"),
        "{}",
        o.summary
    );
    assert!(o.fix.contains("keepalive") && o.fix.contains("--ipvs-tcp-timeout"));
    // info only: exit 0.
    let s = with(&format!("nodesleuth_ipvs_connections_near_expiry{{{VIP}}} 1\n"));
    assert_eq!(report(run(&input(&s, &s)).0, vec![]).exit_code, 0);
}

fn idle_buckets(counts: &[(&str, f64)]) -> String {
    counts.iter().map(|(le, n)| format!("nodesleuth_ipvs_established_idle_entries{{idle_le=\"{le}\"}} {n}\n")).collect()
}

#[test]
fn histogram_quantile_interpolates_as_prometheus_does() {
    let b = [(5.0, 3.0), (60.0, 13.0), (870.0, 64.0), (900.0, 65.0), (1800.0, 65.0), (f64::INFINITY, 65.0)];
    // rank 0.99 * 65 = 64.35 falls in (870, 900]: 870 + 30 * 0.35 / 1.
    assert!((histogram_quantile(0.99, &b).unwrap() - 880.5).abs() < 1e-9);
    // rank 0.5 * 65 = 32.5 in (60, 870]: 60 + 810 * (32.5 - 13) / 51.
    assert!((histogram_quantile(0.5, &b).unwrap() - (60.0 + 810.0 * 19.5 / 51.0)).abs() < 1e-9);
    // rank in the first bucket: lower bound 0.
    assert!((histogram_quantile(0.01, &b).unwrap() - 5.0 * 0.65 / 3.0).abs() < 1e-9);
    // rank in +Inf: the highest finite bound.
    assert_eq!(histogram_quantile(0.99, &[(10.0, 1.0), (f64::INFINITY, 5.0)]), Some(10.0));
    assert_eq!(histogram_quantile(0.99, &[(10.0, 0.0), (f64::INFINITY, 0.0)]), None);
    assert_eq!(histogram_quantile(0.99, &[(10.0, 1.0)]), None, "no +Inf bucket");
}

#[test]
fn ipvs_idle_quantile_near_the_timeout_is_a_node_wide_warning() {
    let high = with(&idle_buckets(&[("60", 1.0), ("720", 1.0), ("900", 10.0), ("+Inf", 10.0)]));
    let (f, _) = run(&input(&high, &high));
    let w = one(&f, checks::IPVS_IDLE);
    assert_eq!(w.verdict, Verdict::Warning);
    assert!(w.subject.is_empty(), "node-wide");
    // 0.8 is the rule's ratio: a p99 at 700 of 900 is below it.
    let low = with(&idle_buckets(&[("60", 1.0), ("700", 10.0), ("900", 10.0), ("+Inf", 10.0)]));
    assert_eq!(one(&run(&input(&low, &low)).0, checks::IPVS_IDLE).verdict, Verdict::Ok);
}

fn mem(lazy: f64, rss: f64, go: &str, madv: &str) -> String {
    let g = "namespace=\"payments\",pod=\"api-2\",container=\"api\",process=\"platform-api\"";
    let mut s = format!(
        "nodesleuth_process_lazyfree_bytes{{{g}}} {lazy}\nnodesleuth_process_resident_memory_bytes{{{g}}} {rss}\n"
    );
    if !go.is_empty() {
        s += &format!(
            "nodesleuth_process_go_info{{{g},go_version=\"{go}\",module=\"example.com/platform\",madvdontneed=\"{madv}\"}} 1\n"
        );
    }
    s
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

#[test]
fn go_lazyfree_retention_names_the_version_and_the_fix() {
    let s = with(&mem(20.0 * GIB, 35.0 * GIB, "go1.15.15", "default"));
    let (f, _) = run(&input(&s, &s));
    assert_eq!(problems(&f), vec![(checks::MADV_FREE, Verdict::Warning)]);
    let m = one(&f, checks::MADV_FREE);
    assert_eq!(ev(m, "go_version"), "go1.15.15");
    assert!(m.fix.contains("GODEBUG=madvdontneed=1") && m.fix.contains("Go >= 1.16"), "{}", m.fix);
    assert!(m.summary.contains("35.0 GiB RSS"), "{}", m.summary);
    // madvdontneed=0 set by hand on a new Go: the fix is to remove it.
    let s = with(&mem(20.0 * GIB, 35.0 * GIB, "go1.21.0", "0"));
    assert!(one(&run(&input(&s, &s)).0, checks::MADV_FREE).fix.contains("Remove GODEBUG=madvdontneed=0"));
    // Not flagged: madvdontneed=1, not Go, below the share, below min_bytes.
    for m in [
        mem(20.0 * GIB, 35.0 * GIB, "go1.15.15", "1"),
        mem(20.0 * GIB, 35.0 * GIB, "", ""),
        mem(10.0 * GIB, 35.0 * GIB, "go1.15.15", "default"),
        mem(200.0 * 1024.0 * 1024.0, 300.0 * 1024.0 * 1024.0, "go1.15.15", "default"),
    ] {
        let s = with(&m);
        assert_eq!(problems(&run(&input(&s, &s)).0), vec![], "{m}");
    }
}

#[test]
fn systemd_unresponsive_while_the_bus_answers_is_critical() {
    let a = with("nodesleuth_systemd_up 0\nnodesleuth_systemd_reply_serial 4100000000");
    let mut b = with(
        "nodesleuth_systemd_up 0\nnodesleuth_systemd_reply_serial 4100000000\n\
         nodesleuth_systemd_last_success_timestamp_seconds 999900",
    );
    b.samples.retain(|s| s.name != "nodesleuth_systemd_call_duration_seconds");
    let mut i = input(&a, &b);
    i.errors.insert("systemd".into(), "Manager.GetAll: timed out".into());
    let (f, u) = run(&i);
    let x = one(&f, checks::UNRESPONSIVE);
    assert_eq!(x.verdict, Verdict::Critical);
    assert_eq!(ev(x, "seconds_since_systemd_answered"), 100);
    assert_eq!(ev(x, "call_timeout_seconds"), 2);
    assert_eq!(ev(x, "error"), "Manager.GetAll: timed out");
    assert!(x.summary.contains("95.5%"), "{}", x.summary);
    assert!(x.fix.contains("daemon-reexec") && x.fix.contains("v242"));
    // The serial kept from the last answer still says how full the cookie is: above 95%, critical.
    assert_eq!(one(&f, checks::COOKIE).verdict, Verdict::Critical);
    // What needs an answer is not checked, and the failing collector is the systemd finding, not another one.
    assert!(u.iter().any(|u| u.name == checks::PROBE_SLICES && u.kind == "failed"));
    assert!(f.iter().all(|f| f.name != checks::COLLECTOR_FAILING));
    assert_eq!(one(&f, checks::DBUS_DOWN).verdict, Verdict::Ok);
}

#[test]
fn dbus_down_is_critical() {
    let s = with("nodesleuth_dbus_up 0\nnodesleuth_systemd_up 0");
    let (f, _) = run(&input(&s, &s));
    assert_eq!(one(&f, checks::DBUS_DOWN).verdict, Verdict::Critical);
    assert!(f.iter().all(|f| f.name != checks::UNRESPONSIVE), "systemd is not blamed for the bus");
    let (_, u) = run(&input(&s, &s));
    assert!(u.iter().any(|u| u.name == checks::UNRESPONSIVE && u.kind == "failed"), "{u:?}");
}

#[test]
fn cookie_forecast_from_the_growth_over_the_window() {
    let serial = |v: f64| format!("nodesleuth_systemd_reply_serial {v}");
    let verdict = |s1: f64, s2: f64| {
        let (a, b) = (with(&serial(s1)), with(&serial(s2)));
        let (f, _) = run(&input(&a, &b));
        let c = one(&f, checks::COOKIE).clone();
        (c.verdict, c.evidence.get("projected_days_to_overflow").cloned().unwrap())
    };
    let half = 2_147_483_648.0;
    // 2^31 left; at 1,000 per 10 s = 100/s: 248.55 days → ok.
    assert_eq!(verdict(half - 1000.0, half), (Verdict::Ok, serde_json::json!(248.55)));
    // 10,000/s: 2.49 days → critical (<= 7 days).
    assert_eq!(verdict(half - 100_000.0, half).0, Verdict::Critical);
    // 1,000/s: 24.86 days → warning (<= 30 days).
    assert_eq!(verdict(half - 10_000.0, half), (Verdict::Warning, serde_json::json!(24.86)));
    // Above 95% with no growth: critical; no growth: no projection.
    assert_eq!(verdict(4.1e9, 4.1e9), (Verdict::Critical, serde_json::Value::Null));
    // The serial dropped (systemd re-connected to the bus): the growth is what it counted since, 500 in 10 s.
    let (a, b) = (with(&serial(3.0e9)), with(&serial(500.0)));
    let (f, _) = run(&input(&a, &b));
    assert_eq!(ev(one(&f, checks::COOKIE), "serial_growth_per_minute"), 3000);
    // Evidence the issue asks for: serial and headroom to 2^32.
    assert_eq!(ev(one(&f, checks::COOKIE), "headroom"), 4_294_967_296i64 - 500);
}

#[test]
fn leaked_probe_slices_and_unit_churn() {
    let a = with("nodesleuth_systemd_pattern_units{pattern=\"libcontainer_*_systemd_test_default.slice\"} 25");
    let b = with(
        "nodesleuth_systemd_pattern_units{pattern=\"libcontainer_*_systemd_test_default.slice\"} 25\n\
         nodesleuth_systemd_installed_jobs_total 60",
    );
    let (f, _) = run(&input(&a, &b));
    // 10 jobs in 10 s = 3,600 per hour >= 3,000: info.
    assert_eq!(problems(&f), vec![(checks::PROBE_SLICES, Verdict::Warning), (checks::UNIT_CHURN, Verdict::Info)]);
    assert_eq!(ev(one(&f, checks::UNIT_CHURN), "jobs_per_hour"), 3600);
    // 8 in 10 s = 2,880 per hour: below.
    let b = with(
        "nodesleuth_systemd_pattern_units{pattern=\"libcontainer_*_systemd_test_default.slice\"} 25\n\
         nodesleuth_systemd_installed_jobs_total 58",
    );
    assert_eq!(problems(&run(&input(&a, &b)).0), vec![(checks::PROBE_SLICES, Verdict::Warning)]);
}

fn stall(target: &str, secs: f64) -> String {
    let l = format!("namespace=\"shop\",pod=\"api-1\",container=\"api\",process=\"java\",target=\"{target}\"");
    format!("nodesleuth_output_stalled_seconds{{{l}}} {secs}\nnodesleuth_output_stalled_threads{{{l}}} 3\n")
}

#[test]
fn output_stalled_over_the_whole_window_critical_on_a_tty_warning_on_a_pipe() {
    for (target, verdict) in [("tty", Verdict::Critical), ("pipe", Verdict::Warning)] {
        let (a, b) = (with(&stall(target, 0.0)), with(&stall(target, 9.5)));
        let (f, _) = run(&input(&a, &b));
        assert_eq!(problems(&f), vec![(checks::OUTPUT_STALLED, verdict)], "{target}");
        let o = one(&f, checks::OUTPUT_STALLED);
        assert_eq!(ev(o, "stalled_threads"), 3);
        assert!(o.fix.contains(if target == "tty" { "tty: false" } else { "pipe" }), "{}", o.fix);
    }
    // A stall shorter than half the window is not (yet) one.
    let b = with(&stall("tty", 4.0));
    assert_eq!(problems(&run(&input(&b, &b)).0), vec![]);
    // Threads that could not be inspected are said, not hidden.
    let b = with("nodesleuth_output_unreadable_threads 7");
    let (_, u) = run(&input(&b, &b));
    assert!(u.iter().any(|u| u.name == checks::OUTPUT_STALLED && u.kind == "unreadable" && u.reason.contains('7')));
}

#[test]
fn an_output_stall_in_the_pod_of_a_rising_close_wait_pile_up_is_the_hang() {
    let a = with(&format!("{}{}", cw("java", "8080", 120.0), stall("tty", 0.0)));
    let b = with(&format!("{}{}", cw("java", "8080", 125.0), stall("tty", 9.5)));
    let (f, _) = run(&input(&a, &b));
    let p = one(&f, checks::CW_PILE_UP);
    assert_eq!(p.verdict, Verdict::Critical);
    assert_eq!(ev(p, "output_target"), "tty");
    assert!(p.summary.contains("stuck writing to its tty output"), "{}", p.summary);
}

#[test]
fn absent_disabled_and_failed_collectors_are_said_instead_of_silence() {
    let s = with(
        "nodesleuth_collector_source_present{collector=\"ipvs\"} 0\n\
         nodesleuth_scrape_collector_success{collector=\"memory\"} 0",
    );
    let mut s = s;
    s.samples.retain(|x| x.name != "nodesleuth_ipvs_timeout_seconds" && x.name != "nodesleuth_processes");
    let mut i = input(&s, &s);
    i.absent.insert("ipvs".into(), "/proc/net/ip_vs does not exist: IPVS is not loaded".into());
    i.errors.insert("memory".into(), "deadline exceeded".into());
    i.disabled.insert("systemd".into());
    i.built.remove("output");
    let (f, u) = run(&i);
    let kinds: BTreeMap<&str, (&str, &str)> = u.iter().map(|u| (u.name, (u.area, u.kind))).collect();
    assert_eq!(kinds[checks::IPVS_ORPHANED], ("ipvs", "absent"));
    assert_eq!(kinds[checks::MADV_FREE], ("memory", "failed"));
    assert_eq!(kinds[checks::UNRESPONSIVE], ("systemd", "disabled"));
    assert_eq!(kinds[checks::OUTPUT_STALLED], ("output", "disabled"));
    assert!(u.iter().any(|u| u.reason.contains("IPVS is not loaded")));
    assert!(u.iter().any(|u| u.reason.contains("deadline exceeded")));
    // The failed collector is also a warning of its own.
    let c = one(&f, checks::COLLECTOR_FAILING);
    assert_eq!((c.verdict, c.area), (Verdict::Warning, "memory"));
    assert_eq!(ev(c, "error"), "deadline exceeded");
    // Absent or disabled sources are not problems.
    assert_eq!(problems(&f), vec![(checks::COLLECTOR_FAILING, Verdict::Warning)]);
}

#[test]
fn partial_data_runs_the_checks_and_warns_about_the_collector() {
    let s = with(&format!("{}nodesleuth_scrape_collector_success{{collector=\"tcp\"}} 0\n", cw("java", "8080", 150.0)));
    let mut i = input(&s, &s);
    i.errors.insert("tcp".into(), "partial data: /proc/77/net/tcp: permission denied".into());
    let (f, _) = run(&i);
    assert_eq!(
        problems(&f),
        vec![(checks::CW_PILE_UP, Verdict::Warning), (checks::COLLECTOR_FAILING, Verdict::Warning)]
    );
    assert_eq!(ev(one(&f, checks::COLLECTOR_FAILING), "failed_in_both_samples"), true);
}

#[test]
fn filters_keep_matching_pods_and_node_wide_findings_and_only_selects_areas() {
    let other = "nodesleuth_tcp_close_wait_sockets{namespace=\"web\",pod=\"front-7\",container=\"f\",process=\"node\",local_port=\"3000\",netns=\"4026532800\"} 300\n";
    let s = with(&format!("{}{other}nodesleuth_systemd_up 0", cw("java", "8080", 150.0)));
    let pods = |f: &[Finding]| -> Vec<String> {
        f.iter()
            .filter(|f| f.name == checks::CW_PILE_UP && f.verdict != Verdict::Ok)
            .map(|f| f.subject["pod"].clone())
            .collect()
    };
    let mut i = input(&s, &s);
    assert_eq!(pods(&run(&i).0), vec!["api-1", "front-7"]);
    i.filter = Filter { namespaces: vec![], pods: vec!["api-*".into()] };
    let (f, _) = run(&i);
    assert_eq!(pods(&f), vec!["api-1"]);
    assert_eq!(one(&f, checks::UNRESPONSIVE).verdict, Verdict::Critical, "node-wide findings stay");
    i.filter = Filter { namespaces: vec!["web".into()], pods: vec![] };
    assert_eq!(pods(&run(&i).0), vec!["front-7"]);
    i.filter = Filter { namespaces: vec!["nope".into()], pods: vec![] };
    assert_eq!(pods(&run(&i).0), Vec::<String>::new());
    // --only tcp: nothing of the other areas, not even "could not check".
    i.filter = Filter::default();
    i.only = vec!["tcp".into()];
    let (f, u) = run(&i);
    assert!(f.iter().chain(u.iter().map(|_| &f[0])).all(|f| f.area == "tcp"), "{f:#?}");
    assert!(u.iter().all(|u| u.area == "tcp"));
}

/// `[alerts.X]` tables of rules/dist/defaults.toml: (alert, key) → value text.
fn rule_defaults() -> BTreeMap<(String, String), String> {
    let toml = include_str!("../../../rules/dist/defaults.toml");
    let mut out = BTreeMap::new();
    let mut section = String::new();
    for line in toml.lines().map(str::trim) {
        if let Some(s) = line.strip_prefix("[alerts.").and_then(|s| s.strip_suffix(']')) {
            section = s.trim_matches('"').to_string();
        } else if line.starts_with('[') {
            section.clear();
        } else if let Some((k, v)) = line.split_once(" = ").filter(|_| !section.is_empty()) {
            out.insert((section.clone(), k.trim().to_string()), v.trim().trim_matches('"').to_string());
        }
    }
    out
}

#[test]
fn thresholds_are_the_rule_librarys_defaults() {
    let d = rule_defaults();
    let num = |alert: &str, key: &str| -> f64 {
        d.get(&(alert.to_string(), key.to_string()))
            .unwrap_or_else(|| panic!("{alert}.{key} not in rules/dist/defaults.toml"))
            .parse()
            .unwrap()
    };
    let t = DEFAULTS;
    assert_eq!(t.close_wait, num("NodesleuthTCPCloseWaitPileUp", "threshold"));
    assert_eq!(t.client_leak, num("NodesleuthTCPCloseWaitClientLeak", "threshold"));
    assert_eq!(t.madv_share, num("NodesleuthGoMadvFreeRetention", "share"));
    assert_eq!(t.madv_min_bytes, num("NodesleuthGoMadvFreeRetention", "min_bytes"));
    assert_eq!(t.ipvs_idle_quantile, num("NodesleuthIPVSIdleNearTimeout", "quantile"));
    assert_eq!(t.ipvs_idle_ratio, num("NodesleuthIPVSIdleNearTimeout", "ratio"));
    assert_eq!(t.cookie_warning_horizon, num("NodesleuthSystemdCookieExhaustion.warning", "horizon"));
    assert_eq!(t.cookie_critical_horizon, num("NodesleuthSystemdCookieExhaustion.critical", "horizon"));
    assert_eq!(t.cookie_critical_ratio, num("NodesleuthSystemdCookieExhaustion.critical", "ratio"));
    assert_eq!(t.probe_slices, num("NodesleuthSystemdLeakedProbeSlices", "threshold"));
    assert_eq!(d[&("NodesleuthSystemdLeakedProbeSlices".into(), "pattern".into())], t.probe_pattern);
    assert_eq!(d[&("NodesleuthSystemdUnitChurn".into(), "window".into())], "1h", "churn_per_hour assumes 1h");
    assert_eq!(t.churn_per_hour, num("NodesleuthSystemdUnitChurn", "threshold"));
    // One threshold for both severities of the output-stall alert (terminal: critical, pipe: warning).
    assert_eq!(t.output_stalled_seconds, num("NodesleuthContainerOutputStalled.critical", "threshold"));
    assert_eq!(t.output_stalled_seconds, num("NodesleuthContainerOutputStalled.warning", "threshold"));
    assert_eq!(d[&("NodesleuthContainerOutputStalled.critical".into(), "severity".into())], "critical");
    assert_eq!(d[&("NodesleuthContainerOutputStalled.warning".into(), "severity".into())], "warning");
    // Severities: a doctor verdict (other than the raised "hung" critical) is the alert's severity.
    for (alert, severity) in [
        ("NodesleuthTCPCloseWaitPileUp", "warning"),
        ("NodesleuthTCPCloseWaitClientLeak", "warning"),
        ("NodesleuthTCPAcceptQueueFull", "warning"),
        ("NodesleuthIPVSOrphanedConnections", "warning"),
        ("NodesleuthIPVSConnectionsNearExpiry", "info"),
        ("NodesleuthIPVSIdleNearTimeout", "warning"),
        ("NodesleuthGoMadvFreeRetention", "warning"),
        ("NodesleuthSystemdUnresponsive", "critical"),
        ("NodesleuthDBusDown", "critical"),
        ("NodesleuthSystemdLeakedProbeSlices", "warning"),
        ("NodesleuthSystemdUnitChurn", "info"),
        ("NodesleuthCollectorFailing", "warning"),
    ] {
        assert_eq!(d[&(alert.to_string(), "severity".to_string())], severity, "{alert}");
    }
    // Every check is an alert of the library, and its runbook exists.
    for (_, names) in checks::CHECKS {
        for name in names.iter().chain([&checks::COLLECTOR_FAILING]) {
            assert!(d.keys().any(|(a, _)| a.split('.').next() == Some(name)), "{name} is no alert");
            let runbook = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/runbooks/{name}.md"));
            assert!(runbook.is_file(), "{}", runbook.display());
        }
    }
}

fn report(findings: Vec<Finding>, unchecked: Vec<Unchecked>) -> Report {
    Report {
        version: super::report::JSON_VERSION,
        nodesleuth_version: "0.0.0-test",
        node: "node-a".into(),
        window_seconds: 10.0,
        duration_seconds: 10.2,
        verdict: Verdict::Ok,
        exit_code: 0,
        filters: super::report::Filters { only: vec![], namespace: vec![], pod: vec![] },
        counts: super::report::Counts { critical: 0, warning: 0, info: 0, ok: 0, unchecked: 0 },
        findings,
        unchecked,
    }
    .finish()
}

/// The report of a node with one finding of each kind the golden file shows.
fn golden_report() -> Report {
    let a = with(&format!("{}{}{}", cw("java", "8080", 120.0), cw("", "8080", 1.0), queue("8080", 9.0, 8.0)));
    let b = with(&format!(
        "{}{}{}nodesleuth_ipvs_orphaned_connections{{{VIP}}} 1\nnodesleuth_collector_source_present{{collector=\"systemd\"}} 0\n",
        cw("java", "8080", 120.0),
        cw("", "8080", 4.0),
        queue("8080", 9.0, 8.0)
    ));
    let mut i = input(&a, &b);
    i.absent.insert("systemd".into(), "D-Bus socket /run/dbus/system_bus_socket does not exist".into());
    let (f, u) = run(&i);
    report(f, u)
}

#[test]
fn worst_first_exit_codes_and_counts() {
    let r = golden_report();
    assert_eq!((r.verdict, r.exit_code), (Verdict::Critical, 2));
    let verdicts: Vec<Verdict> = r.findings.iter().map(|f| f.verdict).collect();
    let mut sorted = verdicts.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(verdicts, sorted, "worst first");
    assert_eq!(r.findings[0].name, checks::CW_PILE_UP);
    assert_eq!((r.counts.critical, r.counts.warning), (1, 2));
    assert_eq!(super::report::exit_code(Verdict::Warning), 1);
    assert_eq!(super::report::exit_code(Verdict::Info), 0);
}

#[test]
fn json_shape_matches_the_golden_file() {
    let got = golden_report().to_json();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/doctor-report.golden.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} missing", path.display()));
    assert_eq!(got, want, "the JSON shape changed: bump report::JSON_VERSION if a field changed meaning");
    // The fields scripts rely on.
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    for key in ["version", "node", "window_seconds", "verdict", "exit_code", "counts", "findings", "unchecked"] {
        assert!(v.get(key).is_some(), "{key}");
    }
    for key in ["name", "area", "verdict", "subject", "summary", "evidence", "meaning", "next", "fix", "runbook"] {
        assert!(v["findings"][0].get(key).is_some(), "{key}");
    }
}

#[test]
fn human_output_fits_100_columns_and_colours_only_when_asked() {
    let r = golden_report();
    let plain = r.to_human(false, 100);
    for line in plain.lines() {
        assert!(line.chars().count() <= 100, "{} columns: {line}", line.chars().count());
    }
    assert!(!plain.contains('\x1b'));
    assert!(plain.contains("CRITICAL NodesleuthTCPCloseWaitPileUp"), "{plain}");
    assert!(plain.contains("Could not check:") && plain.contains("systemd (5 checks)"), "{plain}");
    assert!(plain.contains("exit 2"));
    assert!(r.to_human(true, 100).contains("\x1b[1;31m"));
    // A narrow terminal narrows it.
    let narrow = r.to_human(false, 72);
    assert!(narrow.lines().all(|l| l.chars().count() <= 72), "{narrow}");
}

#[test]
fn missing_capabilities_are_said_for_the_checks_they_blind() {
    let s = snap("");
    let mut i = input(&s, &s);
    // Root's full set minus CAP_SYS_PTRACE (19): pods are invisible to the tcp, ipvs, memory and output checks.
    i.capabilities = Some(0x1ff_ffff_ffff & !(1 << 19));
    let (f, u) = run(&i);
    let blind: BTreeSet<&str> = u.iter().filter(|u| u.kind == "unreadable").map(|u| u.name).collect();
    for name in [checks::CW_PILE_UP, checks::ACCEPT_QUEUE_FULL, checks::IPVS_ORPHANED, checks::MADV_FREE] {
        assert!(blind.contains(name), "{name}: {u:?}");
    }
    assert!(u.iter().any(|u| u.reason.contains("CAP_SYS_PTRACE")));
    assert!(!blind.contains(checks::UNRESPONSIVE), "D-Bus needs no ptrace");
    let r = report(f, u);
    assert_eq!(r.exit_code, 0, "not knowing is not a finding");
    assert!(r.to_human(false, 100).contains("Nothing found in what could be read"));
    // --only systemd: nothing about the areas that did not run.
    i.only = vec!["systemd".into()];
    assert!(run(&i).1.iter().all(|u| u.area == "systemd"));
    // Every capability there: nothing said.
    i.only = vec![];
    i.capabilities = Some(0x1ff_ffff_ffff);
    assert!(run(&i).1.iter().all(|u| u.kind != "unreadable"));
}

#[test]
fn rules_config_sets_what_the_doctor_judges_by() {
    // The shipped defaults file changes nothing.
    let shipped = include_str!("../../../rules/dist/defaults.toml");
    assert_eq!(DEFAULTS.with_rules_config(shipped).unwrap(), DEFAULTS);
    let t = DEFAULTS
        .with_rules_config(
            r#"
for_cap = "4s"
[selectors]
nodesleuth = 'job="ns"'
[alerts.NodesleuthTCPCloseWaitPileUp]
threshold = 40
for = "2m"
[alerts.NodesleuthSystemdUnitChurn]
window = "30s"
[alerts."NodesleuthSystemdCookieExhaustion.warning"]
horizon = 100000000
[alerts.NodesleuthSystemdLeakedProbeSlices]
pattern = "probe-*.slice"
[alerts."NodesleuthContainerOutputStalled.warning"]
threshold = 60.5
"#,
        )
        .unwrap();
    assert_eq!(t.close_wait, 40.0);
    // 3,000 jobs per 30 s window is 360,000 an hour.
    assert_eq!(t.churn_per_hour, 360_000.0);
    assert_eq!(t.cookie_warning_horizon, 1e8);
    assert_eq!(t.probe_pattern, "probe-*.slice");
    assert_eq!(t.output_stalled_seconds, 60.5);
    assert_eq!(t.client_leak, DEFAULTS.client_leak);
    assert_eq!(t.cookie_critical_horizon, DEFAULTS.cookie_critical_horizon);
    for (bad, says) in [
        (
            "[alerts.NodesleuthTCPCloseWaitPileUp]\nthreshold = \"many\"",
            "NodesleuthTCPCloseWaitPileUp\"] threshold: a string",
        ),
        ("[alerts.NodesleuthSystemdLeakedProbeSlices]\npattern = 3", "pattern"),
        ("[alerts.NodesleuthSystemdUnitChurn]\nwindow = \"0s\"", "window"),
        ("alerts = 3", "`alerts` is not a table"),
        ("[alerts\nthreshold = 1", ""),
    ] {
        let e = DEFAULTS.with_rules_config(bad).unwrap_err();
        assert!(e.contains(says), "{bad:?}: {e}");
    }
}

#[test]
fn prose_wraps_within_the_width_even_with_a_long_path() {
    // A socket path under a deep checkout is one "word" longer than the column left for it.
    let path = "/var/lib/ci/builds/runner-0123456789/project/tests/fixtures/node/no/system_bus_socket";
    let text = format!("absent: D-Bus socket {path} does not exist: nothing of this kind to diagnose");
    let lines = super::report::wrap(&text, 56);
    assert!(lines.iter().all(|l| l.chars().count() <= 56), "{lines:#?}");
    // Broken after a '/', and nothing lost: the pieces put back together give the path again.
    assert_eq!(lines[1], "/var/lib/ci/builds/runner-0123456789/project/tests/");
    assert_eq!(lines.concat().replace(' ', ""), text.replace(' ', ""));
    // No slash to break at: cut at the width.
    assert_eq!(super::report::wrap(&"x".repeat(45), 20), ["x".repeat(20), "x".repeat(20), "x".repeat(5)]);
}

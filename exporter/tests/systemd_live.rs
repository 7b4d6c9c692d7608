//! The systemd collector against a real systemd (PID 1 of its own PID and mount namespaces) and a real
//! dbus-daemon: properties, the reply serial rising with transient-unit churn, libcontainer test slices, a frozen
//! systemd, a restarted dbus-daemon, and no D-Bus at all. Run as root (tests/run-all.sh does).

mod util;

use std::time::{Duration, Instant};

use util::{Exporter, SystemdSandbox, require_root, sample, samples, start_exporter_with_env};

// The tests run with the collector's default D-Bus timeout, 2 s.

/// A hang would show as the registry's deadline, which the tests raise to this so that it cannot hide one.
const SCRAPE_DEADLINE: &str = "--collector.timeout=30s";

/// Generous bound on a scrape while systemd does not answer (the machine is shared and noisy): a hung call would
/// instead take the 30 s registry deadline.
const HANG_BOUND: Duration = Duration::from_secs(8);

fn exporter(sandbox: &SystemdSandbox) -> Exporter {
    Exporter::start(&[
        &format!("--collector.systemd.address={}", sandbox.address()),
        "--no-collector.memory",
        SCRAPE_DEADLINE,
    ])
}

fn value(m: &str, name: &str) -> f64 {
    sample(m, name, &[]).unwrap_or_else(|| panic!("{name} missing in\n{m}"))
}

fn serial(m: &str) -> u64 {
    value(m, "nodesleuth_systemd_reply_serial") as u64
}

fn success(m: &str, collector: &str) -> Option<f64> {
    sample(m, "nodesleuth_scrape_collector_success", &[("collector", collector)])
}

/// The number a `busctl get-property` answer carries (`u 3` → 3).
fn busctl_number(answer: &str) -> f64 {
    answer.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("busctl said {answer:?}"))
}

/// Scrapes until `done` holds, for at most `within`; returns the last scrape.
fn scrape_until(e: &Exporter, within: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + within;
    loop {
        let m = e.scrape();
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached within {within:?}; last scrape:\n{m}\nlog:\n{}",
            e.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn reads_version_properties_key_units_and_bus_stats() {
    let sb = SystemdSandbox::start();
    let e = exporter(&sb);
    let m = e.scrape();
    assert_eq!(value(&m, "nodesleuth_systemd_up"), 1.0, "{m}\n{}", e.log());
    assert_eq!(success(&m, "systemd"), Some(1.0), "{}", e.log());
    assert_eq!(value(&m, "nodesleuth_dbus_up"), 1.0);

    // The same properties read independently by busctl.
    let version = sb.manager_property("Version");
    let version = version.strip_prefix("s \"").and_then(|v| v.strip_suffix('"')).expect(&version);
    assert!(version.starts_with("252"), "this test expects Debian 12's systemd 252, found {version}");
    assert_eq!(sample(&m, "nodesleuth_systemd_info", &[("version", version)]), Some(1.0), "{m}");
    assert_eq!(value(&m, "nodesleuth_systemd_failed_units"), busctl_number(&sb.manager_property("NFailedUnits")));
    assert_eq!(value(&m, "nodesleuth_systemd_failed_jobs_total"), busctl_number(&sb.manager_property("NFailedJobs")));
    let installed = value(&m, "nodesleuth_systemd_installed_jobs_total");
    assert!(installed >= 2.0, "test.target and dbus jobs were installed: {installed}");
    assert!(value(&m, "nodesleuth_systemd_names") >= 5.0, "{m}");
    assert_eq!(value(&m, "nodesleuth_systemd_jobs"), 0.0, "the sandbox is idle: {m}");
    let state = sb.manager_property("SystemState");
    let state = state.trim_start_matches("s ").trim_matches('"');
    assert_eq!(sample(&m, "nodesleuth_systemd_system_state", &[("state", state)]), Some(1.0), "{m}");
    let states = samples(&m, "nodesleuth_systemd_system_state", &[]);
    assert_eq!(states.iter().filter(|(_, v)| *v == 1.0).count(), 1, "one-hot: {states:?}");

    // Key units: dbus runs, the Kubernetes ones do not exist here, and ListUnitsByPatterns did not load them.
    let dbus = [("unit", "dbus.service")];
    assert_eq!(sample(&m, "nodesleuth_systemd_unit_state", &[dbus[0], ("state", "active")]), Some(1.0), "{m}");
    assert_eq!(
        sample(&m, "nodesleuth_systemd_unit_info", &[dbus[0], ("load_state", "loaded"), ("sub_state", "running")]),
        Some(1.0),
        "{m}"
    );
    let restarts = sb
        .busctl(&[
            "get-property",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1/unit/dbus_2eservice",
            "org.freedesktop.systemd1.Service",
            "NRestarts",
        ])
        .unwrap();
    assert_eq!(sample(&m, "nodesleuth_systemd_unit_restarts_total", &dbus), Some(busctl_number(&restarts)));
    for unit in ["kubelet.service", "containerd.service", "docker.service", "crio.service"] {
        assert_eq!(sample(&m, "nodesleuth_systemd_unit_state", &[("unit", unit), ("state", "inactive")]), Some(1.0));
        assert_eq!(
            sample(&m, "nodesleuth_systemd_unit_info", &[("unit", unit), ("load_state", "not-loaded")]),
            Some(1.0),
            "{m}"
        );
    }
    let loaded = sb.run("systemctl", &["list-units", "--all", "--plain", "--no-legend", "kubelet.service"]);
    assert!(loaded.trim().is_empty(), "scraping must not load absent units: {loaded:?}");

    // Units in memory per pattern: the root and system slices, init.scope.
    assert!(sample(&m, "nodesleuth_systemd_pattern_units", &[("pattern", "*.slice")]).unwrap() >= 2.0, "{m}");
    assert!(sample(&m, "nodesleuth_systemd_pattern_units", &[("pattern", "*.scope")]).unwrap() >= 1.0, "{m}");

    // dbus-daemon: systemd and this exporter are connected.
    assert!(value(&m, "nodesleuth_dbus_active_connections") >= 2.0, "{m}");
    assert!(value(&m, "nodesleuth_dbus_bus_names") >= 3.0, "{m}");
    assert!(value(&m, "nodesleuth_dbus_match_rules_peak") >= value(&m, "nodesleuth_dbus_match_rules"));
    // systemd got :1.0, this exporter :1.1 (or later).
    assert!(value(&m, "nodesleuth_dbus_connections_total") >= 2.0, "{m}");
    let serial_now = serial(&m);
    assert!(serial_now >= 1, "{m}");
    assert_eq!(value(&m, "nodesleuth_systemd_reply_serial_ratio"), serial_now as f64 / 4_294_967_296.0);
    assert!(sample(&m, "nodesleuth_systemd_call_duration_seconds", &[("method", "GetAll")]).is_some(), "{m}");
}

/// The reply serial is systemd's outgoing cookie on the bus: it rises with what systemd sends to anyone, not only
/// with this exporter's calls. Units made the way runc makes them (over the bus) raise it by far more than one
/// scrape does; libcontainer's probe slices are counted.
#[test]
fn reply_serial_rises_with_transient_units_and_test_slices_are_counted() {
    let sb = SystemdSandbox::start();
    let e = exporter(&sb);
    let lc = [("pattern", "libcontainer_*_systemd_test_default.slice")];
    let m0 = e.scrape();
    assert_eq!(sample(&m0, "nodesleuth_systemd_pattern_units", &lc), Some(0.0), "{m0}");
    let m1 = e.scrape();
    let idle = serial(&m1) - serial(&m0);
    assert!(idle >= 1, "a scrape's own calls move the serial: {} -> {}", serial(&m0), serial(&m1));

    let mut last = serial(&m1);
    let installed_before = value(&m1, "nodesleuth_systemd_installed_jobs_total");
    let mut rises = Vec::new();
    for i in 0..4 {
        // --wait makes systemd-run use the bus (as runc does) rather than systemd's private socket.
        let unit = format!("nstest-churn-{i}");
        sb.run(
            "systemd-run",
            &["--wait", "-q", "-p", "DefaultDependencies=no", &format!("--unit={unit}"), "/bin/true"],
        );
        let m = e.scrape();
        assert_eq!(value(&m, "nodesleuth_systemd_up"), 1.0, "{m}");
        let now = serial(&m);
        assert!(now > last, "serial must strictly rise: {last} -> {now}");
        assert!(
            now - last >= idle + 3,
            "a transient unit made over the bus costs systemd several messages beyond this scrape's {idle}: \
             {last} -> {now}"
        );
        rises.push(now - last);
        last = now;
    }
    eprintln!("reply serial: idle scrape +{idle}, per transient unit + scrape {rises:?}, now {last}");
    assert!(value(&e.scrape(), "nodesleuth_systemd_installed_jobs_total") >= installed_before + 4.0);

    // runc's UseSystemd probe slices: three held open by a service inside them, one made by StartTransientUnit
    // over the bus exactly as runc does.
    for i in 1..=3 {
        sb.run(
            "systemd-run",
            &[
                "-q",
                "-p",
                "DefaultDependencies=no",
                &format!("--slice=libcontainer_{i}_systemd_test_default.slice"),
                &format!("--unit=nstest-lc-{i}"),
                "/bin/sleep",
                "600",
            ],
        );
    }
    sb.busctl(&[
        "call",
        "org.freedesktop.systemd1",
        "/org/freedesktop/systemd1",
        "org.freedesktop.systemd1.Manager",
        "StartTransientUnit",
        "ssa(sv)a(sa(sv))",
        "libcontainer_4242_systemd_test_default.slice",
        "replace",
        "1",
        "Description",
        "s",
        "libcontainer probe",
        "0",
    ])
    .unwrap();
    let m =
        scrape_until(&e, Duration::from_secs(10), |m| sample(m, "nodesleuth_systemd_pattern_units", &lc) == Some(4.0));
    let slices = sample(&m, "nodesleuth_systemd_pattern_units", &[("pattern", "*.slice")]).unwrap();
    assert!(slices >= 6.0, "-.slice, system.slice and four test slices: {slices}");
    sb.run("systemctl", &["stop", "libcontainer_4242_systemd_test_default.slice"]);
    scrape_until(&e, Duration::from_secs(10), |m| sample(m, "nodesleuth_systemd_pattern_units", &lc) == Some(3.0));
}

/// A stopped PID 1 (what an overflowed cookie looks like from outside: calls to systemd hang) costs a scrape at
/// most the D-Bus timeout, every scrape; the other collectors and dbus-daemon's series are unaffected; the failure
/// is logged once; systemd is back on the first scrape after it is.
#[test]
fn frozen_systemd_never_holds_up_a_scrape_and_recovers() {
    let sb = SystemdSandbox::start();
    let e = exporter(&sb);
    let m = e.scrape();
    assert_eq!(value(&m, "nodesleuth_systemd_up"), 1.0, "{m}");
    let before = serial(&m);

    sb.freeze();
    for _ in 0..3 {
        let started = Instant::now();
        let m = e.scrape();
        let took = started.elapsed();
        // A hang bound, not a performance assertion: the registry's own deadline (8 s) would hide a hang otherwise.
        let durations = samples(&m, "nodesleuth_scrape_collector_duration_seconds", &[]);
        assert!(took < HANG_BOUND, "scrape with systemd frozen took {took:?}: {durations:?}\n{}", e.log());
        let own = sample(&m, "nodesleuth_scrape_collector_duration_seconds", &[("collector", "systemd")]).unwrap();
        assert!(own < HANG_BOUND.as_secs_f64(), "systemd collector took {own} s");
        assert_eq!(value(&m, "nodesleuth_systemd_up"), 0.0, "{m}");
        assert_eq!(success(&m, "systemd"), Some(0.0));
        assert_eq!(value(&m, "nodesleuth_dbus_up"), 1.0, "dbus-daemon still answers: {m}");
        assert!(sample(&m, "nodesleuth_dbus_active_connections", &[]).is_some(), "{m}");
        assert_eq!(serial(&m), before, "the last serial seen is kept: {m}");
        assert!(sample(&m, "nodesleuth_systemd_info", &[]).is_none(), "no stale properties while down: {m}");
        assert_eq!(success(&m, "tcp"), Some(1.0), "{}", e.log());
        assert!(sample(&m, "nodesleuth_tcp_sockets", &[("netns", "host"), ("state", "listen")]).unwrap() >= 1.0);
    }
    // A scraper whose timeout is shorter than the D-Bus timeout: the collector fits itself into the scrape's
    // deadline and still says "down", instead of being cut off with no systemd series at all.
    let (status, m) =
        util::http_request(e.port, "/metrics", &[("X-Prometheus-Scrape-Timeout-Seconds", "1.5")]).unwrap();
    assert_eq!(status, 200);
    assert_eq!(value(&m, "nodesleuth_systemd_up"), 0.0, "{m}");
    sb.thaw();
    let m = scrape_until(&e, Duration::from_secs(10), |m| sample(m, "nodesleuth_systemd_up", &[]) == Some(1.0));
    assert!(serial(&m) > before, "{} -> {}", before, serial(&m));
    assert_eq!(success(&m, "systemd"), Some(1.0));
    let log = e.log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("collector=systemd") && l.contains("collector failed") && l.contains("level=warn"))
        .filter(|l| l.contains("no answer within 2s"))
        .collect();
    assert_eq!(failures.len(), 1, "logged once while frozen:\n{log}");
    assert!(log.contains("collector recovered"), "{log}");
}

/// Frequent scrapes of a frozen systemd do not queue calls in dbus-daemon (where they would hit
/// `max_replies_per_connection` and, after the thaw, be answered one batch per frozen scrape before anything new):
/// the calls of the first frozen scrape are waited on by the next ones, so the thawed systemd answers only those.
#[test]
fn frozen_systemd_calls_do_not_pile_up_in_dbus_daemon() {
    let sb = SystemdSandbox::start();
    let e = exporter(&sb);
    let first = serial(&e.scrape());
    let before = serial(&e.scrape());
    // What one healthy scrape costs in systemd replies (GetAll, ListUnitsByPatterns, NRestarts of loaded key units).
    let per_scrape = before - first;
    assert!((2..=6).contains(&per_scrape), "replies per scrape: {per_scrape}");
    sb.freeze();
    const FROZEN_SCRAPES: u64 = 6;
    for _ in 0..FROZEN_SCRAPES {
        assert_eq!(value(&e.scrape(), "nodesleuth_systemd_up"), 0.0);
    }
    sb.thaw();
    let m = scrape_until(&e, Duration::from_secs(10), |m| sample(m, "nodesleuth_systemd_up", &[]) == Some(1.0));
    let after = serial(&m);
    // Piled up, the backlog alone would be FROZEN_SCRAPES × per_scrape replies; waited on, it is one scrape's worth
    // (plus the scrape that reads the answer and at most one more while the thaw races a scrape).
    assert!(
        after - before <= 3 * per_scrape && after - before < FROZEN_SCRAPES * per_scrape,
        "systemd sent {} replies after the thaw ({per_scrape} per scrape):\n{}",
        after - before,
        e.log()
    );
}

/// dbus-daemon killed: systemd re-activates it through dbus.socket, and the exporter connects to the new daemon
/// without a restart.
#[test]
fn reconnects_after_dbus_daemon_restarts() {
    let sb = SystemdSandbox::start();
    let e = exporter(&sb);
    let m = e.scrape();
    assert_eq!(value(&m, "nodesleuth_systemd_up"), 1.0, "{m}");
    let old = sb.dbus_daemon_pid().expect("dbus-daemon runs in the sandbox");
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(old as libc::pid_t, libc::SIGKILL) }, 0);
    let m = scrape_until(&e, Duration::from_secs(30), |m| {
        sample(m, "nodesleuth_systemd_up", &[]) == Some(1.0)
            && sample(m, "nodesleuth_dbus_up", &[]) == Some(1.0)
            && sb.dbus_daemon_pid().is_some_and(|p| p != old)
            // systemd and this exporter, both on the new daemon (systemd may still be authenticating at first).
            && sample(m, "nodesleuth_dbus_active_connections", &[]).is_some_and(|n| n >= 2.0)
    });
    assert_eq!(success(&m, "systemd"), Some(1.0), "{}", e.log());
    assert!(sample(&m, "nodesleuth_systemd_info", &[]).is_some(), "{m}");
    // Reconnected, not only answered once: a few more scrapes keep working.
    for _ in 0..3 {
        assert_eq!(value(&e.scrape(), "nodesleuth_systemd_up"), 1.0);
    }
}

/// No D-Bus at all (a laptop, a container without the socket): the source is reported absent, not failed, with no
/// `up 0` series to page on; one log line, no spam, other collectors fine. The address comes from
/// DBUS_SYSTEM_BUS_ADDRESS when the flag is not given.
#[test]
fn no_dbus_is_an_absent_source_logged_once() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:path={}/no_bus_here", dir.path().display());
    let e =
        start_exporter_with_env(&["--no-collector.memory", SCRAPE_DEADLINE], &[("DBUS_SYSTEM_BUS_ADDRESS", &address)]);
    for _ in 0..5 {
        let started = Instant::now();
        let m = e.scrape();
        assert!(started.elapsed() < HANG_BOUND, "{:?}", started.elapsed());
        assert!(sample(&m, "nodesleuth_systemd_up", &[]).is_none(), "{m}");
        assert!(sample(&m, "nodesleuth_dbus_up", &[]).is_none(), "{m}");
        assert_eq!(success(&m, "systemd"), Some(1.0));
        assert_eq!(sample(&m, "nodesleuth_collector_source_present", &[("collector", "systemd")]), Some(0.0), "{m}");
        assert_eq!(sample(&m, "nodesleuth_collector_source_present", &[("collector", "tcp")]), Some(1.0), "{m}");
        assert!(sample(&m, "nodesleuth_systemd_reply_serial", &[]).is_none(), "never seen: {m}");
        assert_eq!(success(&m, "tcp"), Some(1.0), "{}", e.log());
    }
    let log = e.log();
    let lines: Vec<&str> =
        log.lines().filter(|l| l.contains("systemd") && !l.contains("starting nodesleuth")).collect();
    assert_eq!(lines.len(), 1, "one line, not one per scrape:\n{log}");
    assert!(lines[0].contains("no_bus_here") && lines[0].contains("does not exist"), "{}", lines[0]);
}

/// A bus whose policy denies dbus-daemon's statistics, and no systemd on it: the bus is up, the statistics are
/// left out with one informational log line, systemd is reported down with the daemon's reason.
#[test]
fn denied_bus_statistics_and_missing_systemd_are_reported_plainly() {
    require_root();
    let bus = util::StatsDeniedBus::start();
    let e = Exporter::start(&[&format!("--collector.systemd.address={}", bus.address()), "--no-collector.memory"]);
    for _ in 0..3 {
        let m = e.scrape();
        assert_eq!(value(&m, "nodesleuth_dbus_up"), 1.0, "{m}\n{}", e.log());
        assert_eq!(value(&m, "nodesleuth_systemd_up"), 0.0, "{m}");
        assert!(sample(&m, "nodesleuth_dbus_active_connections", &[]).is_none(), "denied: {m}");
        assert!(value(&m, "nodesleuth_dbus_connections_total") >= 1.0, "{m}");
        assert!(
            sample(&m, "nodesleuth_systemd_reply_serial", &[]).is_none(),
            "dbus-daemon's serials are not systemd's: {m}"
        );
    }
    let log = e.log();
    let notes: Vec<&str> = log.lines().filter(|l| l.contains("statistics unavailable")).collect();
    assert_eq!(notes.len(), 1, "{log}");
    assert!(notes[0].contains("AccessDenied"), "{}", notes[0]);
    let failures: Vec<&str> = log.lines().filter(|l| l.contains("collector failed")).collect();
    assert_eq!(failures.len(), 1, "{log}");
    assert!(failures[0].contains("ServiceUnknown"), "{}", failures[0]);
}

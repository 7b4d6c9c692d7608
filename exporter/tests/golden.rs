//! Fixture tree end-to-end tests: the real binary reads a tree under `tests/fixtures/` (written by
//! `make_tcp_fixture.py` / `make_ipvs_fixture.py`) through `--path.procfs`, with only that tree's collectors
//! enabled, and its `/metrics` must equal the tree's `metrics.golden` apart from timings and build info.
//! `tests/update-golden.sh` (UPDATE_GOLDEN=1) rewrites the golden files. The output must also pass
//! `promtool check metrics`.

mod util;

use util::{Exporter, repo_root, sample};

fn fixture_root(tree: &str) -> std::path::PathBuf {
    repo_root().join("tests/fixtures").join(tree)
}

fn start(tree: &str) -> Exporter {
    start_at(&fixture_root(tree), if tree.starts_with("ipvs") { "ipvs" } else { "tcp" })
}

fn start_at(root: &std::path::Path, collector: &str) -> Exporter {
    util::start_on_fixture(root, collector, &["--collector.tcp.close-wait-top-n=3"])
}

fn check_golden(tree: &str) {
    let exporter = start(tree);
    let want = util::assert_golden(&util::normalize(&exporter.scrape()), &fixture_root(tree).join("metrics.golden"));
    // A second scrape reuses caches (owners, pod names) and must say the same, except for the walk counter,
    // which counts on: the same walks again.
    let second = util::normalize(&exporter.scrape());
    const WALKS: &str = "nodesleuth_tcp_socket_table_walks_total ";
    let walks = |t: &str| t.lines().find_map(|l| l.strip_prefix(WALKS)).map(|v| v.parse::<u64>().unwrap());
    if let Some(first) = walks(&want) {
        assert!(first > 0, "a scrape walks the socket tables");
        assert_eq!(walks(&second), Some(2 * first), "{second}");
    }
    let without_walks = |t: &str| t.lines().filter(|l| !l.starts_with(WALKS)).collect::<Vec<_>>().join("\n");
    assert_eq!(without_walks(&second), without_walks(&want), "second scrape differs from the first");
}

#[test]
fn fixture_tree_matches_golden_metrics() {
    check_golden("tcp");
}

#[test]
fn ipvs_fixture_tree_matches_golden_metrics() {
    check_golden("ipvs");
}

#[test]
fn fixture_output_passes_promtool() {
    util::check_with_promtool(&start("tcp").scrape());
    util::check_with_promtool(&start("ipvs").scrape());
}

#[test]
fn ipvs_orphans_and_near_expiry_are_attributed_to_pod_and_service() {
    let m = start("ipvs").scrape();
    let job = [("namespace", "batch"), ("pod", "report-job-x1")];
    let get = |name: &str, vip: &str, port: &str| {
        sample(&m, name, &[job[0], job[1], ("virtual_address", vip), ("virtual_port", port)])
    };
    // 10.96.0.1:443: one socket with a live entry, one whose entry is gone.
    assert_eq!(get("nodesleuth_ipvs_client_connections", "10.96.0.1", "443"), Some(2.0));
    assert_eq!(get("nodesleuth_ipvs_orphaned_connections", "10.96.0.1", "443"), Some(1.0));
    // IPv6 Service: the same, in IPv6.
    assert_eq!(get("nodesleuth_ipvs_orphaned_connections", "fd00::96:1", "80"), Some(1.0));
    // 40 s left of 900: near expiry, not orphaned.
    assert_eq!(get("nodesleuth_ipvs_connections_near_expiry", "10.96.0.200", "8080"), Some(1.0));
    // Zero orphans: no series (they are the exception).
    assert_eq!(get("nodesleuth_ipvs_orphaned_connections", "10.96.0.200", "8080"), None);
    assert_eq!(get("nodesleuth_ipvs_client_connections", "10.96.0.200", "8080"), Some(1.0));
    // The dual-stack (IPv4-mapped) socket of another pod matches its IPv4 entry.
    let api = [("pod", "api-1"), ("virtual_address", "10.96.0.1")];
    assert_eq!(sample(&m, "nodesleuth_ipvs_orphaned_connections", &api), None);
    assert_eq!(sample(&m, "nodesleuth_ipvs_client_connections", &api), Some(1.0));
    // Sockets to addresses that are not Services are not counted.
    assert!(
        util::samples(&m, "nodesleuth_ipvs_client_connections", &[("virtual_address", "93.184.216.34")]).is_empty()
    );
    // Templates are left out of the table aggregate; a persistence-engine row is counted.
    assert_eq!(
        sample(
            &m,
            "nodesleuth_ipvs_connection_entries",
            &[("virtual_address", "10.96.0.200"), ("state", "ESTABLISHED")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "nodesleuth_ipvs_connection_entries", &[("virtual_address", "10.96.0.10"), ("state", "UDP")]),
        Some(2.0)
    );
    // An entry of a deleted Service is counted apart, not credited to a live one.
    assert_eq!(sample(&m, "nodesleuth_ipvs_connection_entries_without_service", &[]), Some(1.0));
    // No IPVS over netlink on a fixture tree: the flags' timeouts, labelled as such.
    assert_eq!(sample(&m, "nodesleuth_ipvs_timeout_seconds", &[("timeout", "tcp"), ("source", "flag")]), Some(900.0));
    assert_eq!(
        sample(&m, "nodesleuth_ipvs_timeout_seconds", &[("timeout", "tcpfin"), ("protocol", "tcp")]),
        Some(120.0)
    );
    // One protocol spelling across IPVS series, so they join.
    for series in ["nodesleuth_ipvs_connection_entries", "nodesleuth_ipvs_virtual_services"] {
        assert!(util::samples(&m, series, &[]).iter().all(|(l, _)| !l.contains("protocol=\"TCP\"")), "{series}");
    }
    // Idle times: the longest per service (900 s: an entry about to be forgotten) and a node-wide distribution.
    assert_eq!(
        sample(&m, "nodesleuth_ipvs_established_idle_max_seconds", &[("virtual_address", "10.96.0.200")]),
        Some(860.0)
    );
    assert_eq!(sample(&m, "nodesleuth_ipvs_established_idle_entries", &[("idle_le", "+Inf")]), Some(7.0));
    assert_eq!(sample(&m, "nodesleuth_ipvs_established_idle_entries", &[("idle_le", "870")]), Some(5.0));
    // Per-backend series are opt-in.
    assert!(util::samples(&m, "nodesleuth_ipvs_backend_weight", &[]).is_empty());
    assert_eq!(sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "ipvs")]), Some(1.0));
}

#[test]
fn malformed_ipvs_tables_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    util::run("cp", &["-a", &fixture_root("ipvs").display().to_string(), &dir.path().join("t").display().to_string()]);
    let root = dir.path().join("t");
    let conn = root.join("proc/1/net/ip_vs_conn");
    let mut text = std::fs::read_to_string(&conn).unwrap();
    text.push_str("TCP 0AF4 garbage\nnot a row at all\n");
    std::fs::write(&conn, text).unwrap();
    let services = root.join("proc/1/net/ip_vs");
    let mut text = std::fs::read_to_string(&services).unwrap();
    text.push_str("BOGUS  0A600099:0050 rr\n  -> 0AF40099:0050      Masq    1      0          0\n");
    std::fs::write(&services, text).unwrap();
    let exporter = util::start_on_fixture(&root, "ipvs", &["--collector.ipvs.backend-metrics=true"]);
    let m = exporter.scrape();
    assert_eq!(sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "ipvs")]), Some(0.0));
    // Everything around the bad rows is still there.
    assert_eq!(
        sample(
            &m,
            "nodesleuth_ipvs_orphaned_connections",
            &[("pod", "report-job-x1"), ("virtual_address", "10.96.0.1")]
        ),
        Some(1.0)
    );
    assert!(sample(&m, "nodesleuth_ipvs_backend_weight", &[("virtual_address", "10.96.0.200")]).is_some());
    // The real server under the unknown protocol is not credited to the previous service.
    assert!(util::samples(&m, "nodesleuth_ipvs_backend_weight", &[("real_address", "10.244.0.153")]).is_empty());
    exporter.scrape();
    let log = exporter.log();
    let failures: Vec<&str> = log.lines().filter(|l| l.contains("collector failed") && l.contains("ipvs")).collect();
    assert_eq!(failures.len(), 1, "one log line per distinct failure:\n{log}");
    assert!(failures[0].contains("ip_vs"), "{}", failures[0]);
}

#[test]
fn fixture_attribution_and_bounds() {
    let m = start("tcp").scrape();
    let cw = |labels: &[(&str, &str)]| sample(&m, "nodesleuth_tcp_close_wait_sockets", labels);
    // Owners found through fd links, containers through the cgroup and kubelet's log names.
    assert_eq!(
        cw(&[("pod", "web-7d4b9c-abcde"), ("container", "app"), ("process", "java"), ("local_port", "8443")]),
        Some(12.0)
    );
    assert_eq!(
        cw(&[("pod", "web-7d4b9c-abcde"), ("container", "nginx"), ("process", "nginx"), ("local_port", "8080")]),
        Some(7.0)
    );
    // Top-3 per namespace: the 8081 group and the unowned 7000 socket are summed into (other).
    assert_eq!(cw(&[("pod", "web-7d4b9c-abcde"), ("process", "(other)")]), Some(2.0));
    assert_eq!(cw(&[("local_port", "8081")]), None);
    // The top groups plus (other) add up to the exact total.
    let total: f64 = util::samples(&m, "nodesleuth_tcp_close_wait_sockets", &[("pod", "web-7d4b9c-abcde")])
        .iter()
        .map(|s| s.1)
        .sum();
    assert_eq!(
        Some(total),
        sample(&m, "nodesleuth_tcp_sockets", &[("pod", "web-7d4b9c-abcde"), ("state", "close_wait")])
    );
    // A hostNetwork pod's process in the host namespace keeps its own pod labels.
    assert_eq!(
        cw(&[("netns", "host"), ("namespace", "monitoring"), ("container", "agent"), ("local_port", "9100")]),
        Some(2.0)
    );
    // IPv6 sockets, cgroup v1 with the cgroupfs driver.
    assert_eq!(cw(&[("namespace", "payments"), ("container", "api"), ("local_port", "5000")]), Some(4.0));
    // Client-side CLOSE_WAIT (random local ports) is one bounded group, not one series per socket.
    assert_eq!(cw(&[("namespace", "payments"), ("process", "python3"), ("local_port", "(ephemeral)")]), Some(3.0));
    // Listeners: saturated queue; v4 and v6 listeners on one port summed; no limit from the procfs path.
    assert_eq!(
        sample(&m, "nodesleuth_tcp_listen_queue_length", &[("pod", "web-7d4b9c-abcde"), ("local_port", "8080")]),
        Some(129.0)
    );
    assert_eq!(
        sample(&m, "nodesleuth_tcp_listen_queue_length", &[("pod", "coredns-5d78c9869d-q2x9z"), ("local_port", "53")]),
        Some(3.0)
    );
    assert!(util::samples(&m, "nodesleuth_tcp_listen_queue_limit", &[]).is_empty());
    // established, close_wait and listen of every namespace, zeros included; other states only where present.
    for state in ["established", "close_wait", "listen"] {
        assert_eq!(util::samples(&m, "nodesleuth_tcp_sockets", &[("state", state)]).len(), 6, "{state}");
    }
    assert!(util::samples(&m, "nodesleuth_tcp_sockets", &[]).iter().all(|(labels, v)| *v > 0.0
        || ["established", "close_wait", "listen"].iter().any(|s| labels.contains(&format!("state=\"{s}\"")))));
    assert_eq!(sample(&m, "nodesleuth_tcp_sockets", &[("netns", "host"), ("state", "syn_sent")]), None);
    // A pod without a kubelet log directory is labelled by its UID.
    assert!(
        sample(&m, "nodesleuth_tcp_sockets", &[("pod", "dddddddd-0000-4000-8000-000000000001"), ("state", "listen")])
            .is_some()
    );
    assert_eq!(sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "tcp")]), Some(1.0));
}

#[test]
fn malformed_input_is_reported_not_fatal() {
    let exporter = start("tcp-bad");
    let m = exporter.scrape();
    // Good lines around the bad ones are still counted.
    assert_eq!(sample(&m, "nodesleuth_tcp_sockets", &[("netns", "host"), ("state", "listen")]), Some(1.0));
    assert_eq!(sample(&m, "nodesleuth_tcp_sockets", &[("netns", "host"), ("state", "close_wait")]), Some(1.0));
    assert_eq!(
        sample(&m, "nodesleuth_tcp_listen_queue_length", &[("netns", "host"), ("local_port", "8080")]),
        Some(2.0)
    );
    assert_eq!(
        sample(&m, "nodesleuth_tcp_close_wait_sockets", &[("process", "init"), ("local_port", "8080")]),
        Some(1.0)
    );
    assert_eq!(sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "tcp")]), Some(0.0));
    // Scraping again does not log the same failure again.
    exporter.scrape();
    let log = exporter.log();
    let failures: Vec<&str> = log.lines().filter(|l| l.contains("collector failed")).collect();
    assert_eq!(failures.len(), 1, "one log line per distinct failure, got:\n{log}");
    assert!(failures[0].contains("3 malformed line(s) skipped, first at line 3"), "{}", failures[0]);
    assert!(
        failures[0].contains("more problems") || failures[0].contains("50/net/tcp"),
        "the missing file is reported too: {}",
        failures[0]
    );
}

/// Every collector on at once on one node (tests/fixtures/node, `make_node_fixture.py --small`): the whole
/// exposition compared in order with one golden file, as node_exporter's end-to-end test does. Catches a collector
/// that writes another's series, families that interleave, and any change in order or spelling.
#[test]
fn all_collectors_on_one_node_match_golden() {
    let root = fixture_root("node");
    let args = [
        format!("--path.procfs={}", root.join("proc").display()),
        format!("--path.rootfs={}", root.display()),
        format!("--path.pod-logs={}", root.join("var/log/pods").display()),
        format!("--path.container-logs={}", root.join("var/log/containers").display()),
        "--collector.tcp.source=procfs".to_string(),
        // No D-Bus on a fixture node: the systemd collector reports its source absent.
        format!("--collector.systemd.address=unix:path={}/no/system_bus_socket", root.display()),
    ];
    let exporter = Exporter::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let text = util::normalize(&exporter.scrape());
    util::assert_golden(&text, &root.join("metrics.golden"));
    for collector in ["tcp", "ipvs", "memory", "output", "systemd"] {
        assert_eq!(sample(&text, "nodesleuth_scrape_collector_success", &[("collector", collector)]), Some(1.0));
    }
    assert_eq!(sample(&text, "nodesleuth_collector_source_present", &[("collector", "systemd")]), Some(0.0));
}

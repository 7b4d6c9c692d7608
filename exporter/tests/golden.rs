//! The fixture tree end-to-end test: the real binary reads `tests/fixtures/tcp` (see `make_tcp_fixture.py`)
//! through `--path.procfs`, and its `/metrics` must equal `tests/fixtures/tcp/metrics.golden` apart from timings
//! and build info. `tests/update-golden.sh` (UPDATE_GOLDEN=1) rewrites the golden file. The output must also
//! pass `promtool check metrics`.

mod util;

use std::io::Write;
use std::process::{Command, Stdio};

use util::{Exporter, repo_root, require_tool, sample};

fn fixture_args(tree: &str) -> Vec<String> {
    let root = repo_root().join("tests/fixtures").join(tree);
    vec![
        format!("--path.procfs={}", root.join("proc").display()),
        format!("--path.rootfs={}", root.display()),
        format!("--path.pod-logs={}", root.join("var/log/pods").display()),
        format!("--path.container-logs={}", root.join("var/log/containers").display()),
        "--collector.tcp.close-wait-top-n=3".into(),
        // This tree and its golden file are the TCP collector's; other collectors have their own trees.
        "--no-collector.memory".into(),
        "--no-collector.systemd".into(),
    ]
}

fn start(tree: &str) -> Exporter {
    let args = fixture_args(tree);
    Exporter::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Drops what legitimately changes between runs.
fn normalize(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| {
            !l.starts_with("nodesleuth_scrape_collector_duration_seconds{") && !l.starts_with("nodesleuth_build_info{")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn promtool_check(metrics: &str) {
    let promtool = require_tool("promtool");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fixture_tree_matches_golden_metrics() {
    let exporter = start("tcp");
    let got = normalize(&exporter.scrape());
    let golden_path = repo_root().join("tests/fixtures/tcp/metrics.golden");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden_path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden_path).expect("golden file missing: run tests/update-golden.sh");
    if got != want {
        let diff: Vec<String> = want
            .lines()
            .filter(|l| !got.lines().any(|g| g == *l))
            .map(|l| format!("- {l}"))
            .chain(got.lines().filter(|l| !want.lines().any(|w| w == *l)).map(|l| format!("+ {l}")))
            .collect();
        panic!(
            "/metrics differs from {} (run tests/update-golden.sh if intended):\n{}",
            golden_path.display(),
            diff.join("\n")
        );
    }
    // A second scrape reuses the owner cache and must say the same.
    assert_eq!(normalize(&exporter.scrape()), want, "second scrape differs from the first");
}

#[test]
fn fixture_output_passes_promtool() {
    let exporter = start("tcp");
    promtool_check(&exporter.scrape());
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
    // Every state of every namespace is present, zeros included: 6 namespaces × 11 states.
    assert_eq!(util::samples(&m, "nodesleuth_tcp_sockets", &[]).len(), 66);
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

//! The memory collector on its fixture tree: the real binary reads `tests/fixtures/memory` (see
//! `tests/fixtures/make_memory_fixture.py`) through `--path.procfs`, only the memory collector enabled, and its
//! `/metrics` must equal `tests/fixtures/memory/metrics.golden` apart from timings and build info.
//! `UPDATE_GOLDEN=1` rewrites the golden file. The golden run adds `--collector.memory.detailed`, so that every
//! memory series is covered; a default run is checked against the default series budget. Further tests check
//! grouping, bounds, filters, Go detection and malformed input on the same trees.

mod util;

use util::{Exporter, repo_root, sample, samples};

fn start(tree: &str, extra: &[&str]) -> Exporter {
    util::start_on_fixture(&repo_root().join("tests/fixtures").join(tree), "memory", extra)
}

const TOP_N: &str = "--collector.memory.top-n=14";
const DETAILED: &str = "--collector.memory.detailed";

#[test]
fn memory_fixture_tree_matches_golden_metrics() {
    let exporter = start("memory", &[TOP_N, DETAILED]);
    let want = util::assert_golden(
        &util::normalize(&exporter.scrape()),
        &repo_root().join("tests/fixtures/memory/metrics.golden"),
    );
    // A second scrape answers from the per-process cache and must say the same.
    assert_eq!(util::normalize(&exporter.scrape()), want, "second scrape differs from the first");
    util::check_with_promtool(&exporter.scrape());
    // Nothing in the tree (kernel threads, a zombie, a process gone mid-scan, an unreadable executable) is noise.
    let log = exporter.log();
    assert!(!log.contains("WARN") && !log.contains("level=warn") && !log.contains("collector failed"), "{log}");
}

/// The metric names of a scrape, in order of first appearance.
fn families(m: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in m.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap().to_string();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[test]
fn memory_default_series_are_the_budget() {
    const DEFAULT: [&str; 6] = [
        "nodesleuth_process_go_info",
        "nodesleuth_process_lazyfree_bytes",
        "nodesleuth_process_resident_memory_bytes",
        "nodesleuth_process_resident_memory_minus_lazyfree_bytes",
        "nodesleuth_process_swap_bytes",
        "nodesleuth_processes",
    ];
    const DETAILED_ONLY: [&str; 6] = [
        "nodesleuth_process_anonymous_hugepages_bytes",
        "nodesleuth_process_anonymous_memory_bytes",
        "nodesleuth_process_peak_resident_memory_bytes",
        "nodesleuth_process_proportional_memory_bytes",
        "nodesleuth_process_resident_file_memory_bytes",
        "nodesleuth_process_resident_shmem_memory_bytes",
    ];
    let per_group = |m: &str| -> Vec<String> {
        let mut f: Vec<String> = families(m).into_iter().filter(|n| n.starts_with("nodesleuth_process")).collect();
        f.sort();
        f
    };
    let default = start("memory", &[TOP_N]).scrape();
    assert_eq!(per_group(&default), DEFAULT, "{default}");
    // 15 groups: 5 series each, plus one go_info per distinct Go runtime (7 in the tree).
    let series = |m: &str| m.lines().filter(|l| l.starts_with("nodesleuth_process")).count();
    assert_eq!(series(&default), 15 * 5 + 7, "{default}");
    assert_eq!(sample(&default, "nodesleuth_memory_quarantined_processes", &[]), Some(0.0));
    let detailed = start("memory", &[TOP_N, DETAILED]).scrape();
    let mut both: Vec<&str> = DEFAULT.iter().chain(DETAILED_ONLY.iter()).copied().collect();
    both.sort();
    assert_eq!(per_group(&detailed), both);
    assert_eq!(series(&detailed), 15 * 11 + 7);
    // The heap mapping series needs only its own flag.
    let heap = start("memory", &[TOP_N, "--collector.memory.heap-mapping"]).scrape();
    let mut want: Vec<&str> =
        DEFAULT.iter().copied().chain(["nodesleuth_process_heap_mapping_resident_bytes"]).collect();
    want.sort();
    assert_eq!(per_group(&heap), want);
    // The figures the two runs share are the same.
    for name in DEFAULT {
        assert_eq!(samples(&default, name, &[]), samples(&detailed, name, &[]), "{name}");
    }
}

#[test]
fn memory_grouping_and_bounds() {
    let m = start("memory", &[TOP_N, DETAILED]).scrape();
    let pod = |pod: &str, container: &str, process: &str, name: &str| {
        sample(&m, name, &[("pod", pod), ("container", container), ("process", process)])
    };
    const MIB: f64 = 1024.0 * 1024.0;
    const GIB: f64 = 1024.0 * MIB;
    // Three nginx processes of one container are one group: counts and sums.
    assert_eq!(pod("web-7d4b9c-abcde", "nginx", "nginx", "nodesleuth_processes"), Some(3.0));
    assert_eq!(pod("web-7d4b9c-abcde", "nginx", "nginx", "nodesleuth_process_resident_memory_bytes"), Some(63.0 * MIB));
    assert_eq!(
        pod("web-7d4b9c-abcde", "nginx", "nginx", "nodesleuth_process_resident_shmem_memory_bytes"),
        Some(12.0 * MIB)
    );
    // The incident: RSS 35 GiB, of which 33.5 GiB is LazyFree; the kernel would keep 1.5 GiB.
    let api = ("platform-api-6f9c-xk2lp", "api", "platform-api");
    assert_eq!(pod(api.0, api.1, api.2, "nodesleuth_process_resident_memory_bytes"), Some(35.0 * GIB));
    assert_eq!(pod(api.0, api.1, api.2, "nodesleuth_process_lazyfree_bytes"), Some(33.5 * GIB));
    assert_eq!(pod(api.0, api.1, api.2, "nodesleuth_process_resident_memory_minus_lazyfree_bytes"), Some(1.5 * GIB));
    // cgroup v1 with the cgroupfs driver; swap summed.
    assert_eq!(
        sample(&m, "nodesleuth_process_swap_bytes", &[("namespace", "payments"), ("container", "api")]),
        Some(40.0 * MIB)
    );
    // Host processes group by name; an unreadable executable does not drop the process.
    assert_eq!(sample(&m, "nodesleuth_processes", &[("pod", ""), ("process", "sshd")]), Some(2.0));
    // A pod without a kubelet log directory is labelled by its UID.
    assert_eq!(
        sample(&m, "nodesleuth_processes", &[("pod", "dddddddd-0000-4000-8000-000000000001"), ("process", "mysqld")]),
        Some(1.0)
    );
    // Kernel threads, the zombie and the vanished process are in no group.
    for name in ["kthreadd", "kworker/0:1-events", "defunct-child", "short-lived"] {
        assert!(samples(&m, "nodesleuth_processes", &[("process", name)]).is_empty(), "{name}");
    }
    // Bounded: 14 groups plus (other); the (other) group holds the rest, so node-wide sums stay exact.
    let counts = samples(&m, "nodesleuth_processes", &[]);
    assert_eq!(counts.len(), 15, "{counts:?}");
    let total: f64 = counts.iter().map(|c| c.1).sum();
    assert_eq!(total, 25.0, "every user-space process counted once");
    let rss_all: f64 = samples(&m, "nodesleuth_process_resident_memory_bytes", &[]).iter().map(|s| s.1).sum();
    let unbounded = start("memory", &["--collector.memory.top-n=0"]).scrape();
    let rss_unbounded: f64 =
        samples(&unbounded, "nodesleuth_process_resident_memory_bytes", &[]).iter().map(|s| s.1).sum();
    assert_eq!(rss_all, rss_unbounded);
    assert_eq!(samples(&unbounded, "nodesleuth_processes", &[]).len(), 21);
    assert!(samples(&unbounded, "nodesleuth_processes", &[("process", "(other)")]).is_empty());
    // No pid label anywhere.
    assert!(!m.contains("pid=\""), "a pid label leaked");
    assert_eq!(sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "memory")]), Some(1.0));
}

#[test]
fn memory_go_detection_on_fixture_binaries() {
    let m = start("memory", &[TOP_N]).scrape();
    let info = |process: &str| samples(&m, "nodesleuth_process_go_info", &[("process", process)]);
    // Go 1.15, pointer layout, no GODEBUG: the MADV_FREE default.
    assert_eq!(info("platform-api").len(), 1);
    assert!(
        info("platform-api")[0]
            .0
            .contains("go_version=\"go1.15.15\",module=\"example.com/platform\",madvdontneed=\"default\"")
    );
    // Environment setting, build default (`//go:debug`), environment overriding the build default.
    // Two containerd executables (two files, one version, module and setting) in one group: one series of 1.
    assert_eq!(info("containerd").len(), 1, "{:?}", info("containerd"));
    assert_eq!(info("containerd")[0].1, 1.0, "go_info is always 1, never a sum");
    assert_eq!(sample(&m, "nodesleuth_processes", &[("process", "containerd")]), Some(2.0));
    assert!(info("containerd")[0].0.contains("madvdontneed=\"1\""));
    let envoy = info("envoy-lite");
    assert_eq!(envoy.len(), 2, "{envoy:?}");
    assert!(envoy.iter().any(|s| s.0.contains("container=\"mesh\"") && s.0.contains("madvdontneed=\"1\"")));
    assert!(envoy.iter().any(|s| s.0.contains("container=\"debug\"") && s.0.contains("madvdontneed=\"0\"")));
    // Built outside module mode: the main package path stands in for the module.
    assert!(
        info("node_exporter")[0].0.contains("go_version=\"go1.19.8\",module=\"github.com/prometheus/node_exporter\"")
    );
    // Go before 1.13: recognised, version unknown.
    assert!(info("legacy-go")[0].0.contains("go_version=\"unknown\""));
    // Every go_info series is exactly 1.
    assert!(samples(&m, "nodesleuth_process_go_info", &[]).iter().all(|s| s.1 == 1.0), "{m}");
    // Not Go, or executable unreadable: no info series.
    for name in ["systemd", "sshd", "java", "nginx", "python3"] {
        assert!(info(name).is_empty(), "{name}: {:?}", info(name));
    }
}

#[test]
fn memory_include_and_exclude_filters() {
    let m = start(
        "memory",
        &[
            "--collector.memory.process-include=ssh.*|nginx|java|platform-api",
            "--collector.memory.process-exclude=java",
        ],
    )
    .scrape();
    let names: Vec<String> = samples(&m, "nodesleuth_processes", &[])
        .into_iter()
        .map(|(labels, _)| labels.split("process=\"").nth(1).unwrap().trim_end_matches('"').to_string())
        .collect();
    assert_eq!(names, ["sshd", "platform-api", "nginx"], "excluded processes are not read at all, not even as (other)");
}

#[test]
fn memory_invalid_regex_is_a_clear_startup_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nodesleuth"))
        .args(["--collector.memory.process-include=java(", "--web.listen-address=127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--collector.memory.process-include") && err.contains("invalid process name regex"), "{err}");
}

#[test]
fn memory_malformed_smaps_rollup_is_partial_data() {
    let exporter = start("memory-bad", &[]);
    let m = exporter.scrape();
    // The good lines of the broken file are used: RSS and LazyFree are there.
    assert_eq!(
        sample(&m, "nodesleuth_process_resident_memory_bytes", &[("process", "broken")]),
        Some(50.0 * 1048576.0)
    );
    assert_eq!(sample(&m, "nodesleuth_process_lazyfree_bytes", &[("process", "broken")]), Some(8.0 * 1048576.0));
    assert_eq!(sample(&m, "nodesleuth_processes", &[("process", "fine")]), Some(1.0));
    assert_eq!(sample(&m, "nodesleuth_scrape_collector_success", &[("collector", "memory")]), Some(0.0));
    exporter.scrape();
    let log = exporter.log();
    let failures: Vec<&str> = log.lines().filter(|l| l.contains("collector failed")).collect();
    assert_eq!(failures.len(), 1, "one clear message, logged once:\n{log}");
    assert!(
        failures[0].contains("1 file(s) with malformed content, partial data used; first: ")
            && failures[0]
                .contains("/10/smaps_rollup: 2 malformed line(s) skipped, first at line 3: value is not a number"),
        "{}",
        failures[0]
    );
}

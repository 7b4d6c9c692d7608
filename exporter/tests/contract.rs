//! The metric contract with every collector on at once, on this real host plus the real-systemd sandbox: every
//! series is unique (no collector writes one twice, and two collectors never write the same one), every `_info`
//! series is 1, every one-hot family has exactly one 1 per group, every collector succeeds or says its source is
//! absent, and every metric name is in the README's table.

mod util;

use std::collections::{BTreeMap, HashSet};

use util::{Exporter, SystemdSandbox, require_root};

/// A sample: metric name, label pairs sorted, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Every sample; panics on a line that is not a sample.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {l}"));
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}').unwrap_or_else(|| panic!("bad labels: {l}"))),
                None => (series, ""),
            };
            let mut pairs = Vec::new();
            // Label values here never contain `",`; split on it.
            for kv in labels.split("\",").filter(|s| !s.is_empty()) {
                let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("bad label {kv:?} in {l}"));
                pairs.push((k.to_string(), v.trim_end_matches('"').to_string()));
            }
            pairs.sort();
            (name.to_string(), pairs, value)
        })
        .collect()
}

/// One-hot families: (metric, the label that takes each value, the labels that identify a group).
const ONE_HOT: &[(&str, &str)] =
    &[("nodesleuth_systemd_system_state", "state"), ("nodesleuth_systemd_unit_state", "state")];

#[test]
fn all_collectors_together_keep_the_contract() {
    require_root();
    let sb = SystemdSandbox::start();
    let units = "--collector.systemd.units=dbus,dbus.service,systemd-journald,kubelet";
    // A generous deadline: this asserts the contract, not speed, on a machine other tests keep busy.
    let e =
        Exporter::start(&[&format!("--collector.systemd.address={}", sb.address()), units, "--collector.timeout=60s"]);
    // A writer stalled on a pipe nobody reads, seen by two scrapes, so that the output collector's per-group
    // families are in the output too.
    let mut writer = std::process::Command::new("sh")
        .args(["-c", "while :; do echo aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; done"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(format!("/proc/{}/wchan", writer.id())).is_ok_and(|w| !w.contains("pipe_write")) {
        assert!(std::time::Instant::now() < deadline, "the writer never blocked");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    e.scrape();
    let text = e.scrape();
    let _ = writer.kill();
    let _ = writer.wait();
    let samples = parse(&text);
    assert!(samples.iter().any(|s| s.0 == "nodesleuth_output_stalled_seconds"), "{text}");

    let mut seen = HashSet::new();
    for (name, labels, _) in &samples {
        assert!(seen.insert((name.clone(), labels.clone())), "duplicate series {name}{labels:?}\n{text}");
    }
    for (name, labels, v) in &samples {
        if name.ends_with("_info") {
            assert_eq!(*v, 1.0, "{name}{labels:?} must be 1");
        }
    }
    for (family, key) in ONE_HOT {
        let mut groups: BTreeMap<Vec<(String, String)>, (u32, u32)> = BTreeMap::new();
        for (_, labels, v) in samples.iter().filter(|s| s.0 == *family) {
            assert!(*v == 0.0 || *v == 1.0, "{family}{labels:?} = {v}");
            let group: Vec<_> = labels.iter().filter(|(k, _)| k != key).cloned().collect();
            let g = groups.entry(group).or_default();
            g.0 += 1;
            g.1 += *v as u32;
        }
        assert!(!groups.is_empty(), "{family} missing\n{text}");
        for (group, (n, ones)) in groups {
            assert_eq!(ones, 1, "{family}{group:?}: {ones} of {n} states set");
        }
    }
    // `dbus` and `dbus.service` are one unit: listed once.
    let dbus_states = samples
        .iter()
        .filter(|s| s.0 == "nodesleuth_systemd_unit_state" && s.1.contains(&("unit".into(), "dbus.service".into())))
        .count();
    assert_eq!(dbus_states, 7, "one set of ActiveState series for dbus.service\n{text}");

    for spec in nodesleuth::collectors::ALL {
        let get = |metric: &str| {
            samples
                .iter()
                .find(|s| s.0 == metric && s.1 == vec![("collector".to_string(), spec.name.to_string())])
                .map(|s| s.2)
        };
        let success = get("nodesleuth_scrape_collector_success");
        let present = get("nodesleuth_collector_source_present");
        assert!(present.is_some(), "{} has no source_present series", spec.name);
        // IPVS is not loaded on this kernel: an absent source, not a failure.
        let expected_present = if spec.name == "ipvs" { 0.0 } else { 1.0 };
        assert_eq!(present, Some(expected_present), "{}\n{}", spec.name, e.log());
        assert_eq!(success, Some(1.0), "{} failed:\n{}", spec.name, e.log());
    }
    assert!(samples.iter().any(|s| s.0 == "nodesleuth_systemd_up" && s.2 == 1.0), "{text}");

    let readme = std::fs::read_to_string(util::repo_root().join("README.md")).unwrap();
    let names: HashSet<&str> = samples
        .iter()
        .map(|s| s.0.as_str())
        .filter(|n| n.starts_with("nodesleuth_"))
        .map(|n| n.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count"))
        .collect();
    for name in names {
        assert!(readme.contains(&format!("`{name}`")), "{name} is not in the README's metric table");
    }
}

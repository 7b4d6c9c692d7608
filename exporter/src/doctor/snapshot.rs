//! One scrape as plain samples: what the doctor's checks read. Built from the registry's families on a live run,
//! or from exposition text in the unit tests (hand-built snapshots), so the checks are pure functions of two
//! snapshots and can be tested without a node.

use std::collections::BTreeMap;

use prometheus::proto::{MetricFamily, MetricType};

/// One sample: metric name, labels, value. Histograms are not read by any check and are left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// A label's value, `""` when absent (as PromQL treats a missing label).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Every sample of one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub samples: Vec<Sample>,
}

impl Snapshot {
    /// From the registry's families (gauges and counters; histograms and summaries are skipped).
    pub fn from_families(families: &[MetricFamily]) -> Snapshot {
        let mut samples = Vec::new();
        for f in families {
            let kind = f.get_field_type();
            for m in f.get_metric() {
                let value = match kind {
                    MetricType::GAUGE => m.get_gauge().get_value(),
                    MetricType::COUNTER => m.get_counter().get_value(),
                    _ => continue,
                };
                let labels = m.get_label().iter().map(|l| (l.name().to_string(), l.value().to_string())).collect();
                samples.push(Sample { name: f.name().to_string(), labels, value });
            }
        }
        Snapshot { samples }
    }

    /// From text exposition lines (`name{a="b"} 1`); comments and blank lines are ignored. Label values may not
    /// contain `",` or escaped quotes: this is for hand-built test snapshots and golden files, not a general parser.
    pub fn parse_text(text: &str) -> Result<Snapshot, String> {
        let mut samples = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || format!("line {}: cannot parse {line:?}", n + 1);
            let (series, value) = line.rsplit_once(' ').ok_or_else(bad)?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().map_err(|_| bad())?,
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').ok_or_else(bad)?;
                    let mut labels = BTreeMap::new();
                    for pair in body.split("\",").filter(|p| !p.is_empty()) {
                        let (k, v) = pair.split_once("=\"").ok_or_else(bad)?;
                        labels.insert(k.trim().to_string(), v.trim_end_matches('"').to_string());
                    }
                    (name.to_string(), labels)
                }
            };
            samples.push(Sample { name, labels, value });
        }
        Ok(Snapshot { samples })
    }

    /// Every sample of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Every sample of `name` whose labels include all of `labels`.
    pub fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = &'a Sample> {
        self.all(name).filter(move |s| labels.iter().all(|(k, v)| s.label(k) == *v))
    }

    /// The value of the first sample of `name` with `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels).next().map(|s| s.value)
    }

    /// The sample of `name` whose labels equal `like`'s labels on `keys`.
    pub fn same(&self, name: &str, like: &Sample, keys: &[&str]) -> Option<f64> {
        self.all(name).find(|s| keys.iter().all(|k| s.label(k) == like.label(k))).map(|s| s.value)
    }

    pub fn has(&self, name: &str) -> bool {
        self.all(name).next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_reads_back() {
        let s = Snapshot::parse_text(
            "# HELP x y\nnodesleuth_systemd_up 1\nm{a=\"1\",b=\"x y\"} 2.5\nm{a=\"2\",b=\"\"} +Inf\n",
        )
        .unwrap();
        assert_eq!(s.get("nodesleuth_systemd_up", &[]), Some(1.0));
        assert_eq!(s.get("m", &[("b", "x y")]), Some(2.5));
        assert_eq!(s.get("m", &[("a", "2"), ("b", "")]), Some(f64::INFINITY));
        assert_eq!(s.matching("m", &[]).count(), 2);
        assert!(Snapshot::parse_text("m{a=\"1\" 2").is_err());
        assert!(Snapshot::parse_text("m two").is_err());
    }

    #[test]
    fn reads_the_registrys_families() {
        let mut sink = crate::metrics::Sink::new();
        sink.gauge("g", "g", &[("pod", "p")], 3.0);
        sink.counter("c_total", "c", &[], 7.0);
        sink.histogram("h_seconds", "h", &[], vec![(1.0, 1)], 0.5, 1);
        let s = Snapshot::from_families(&sink.into_families());
        assert_eq!(s.get("g", &[("pod", "p")]), Some(3.0));
        assert_eq!(s.get("c_total", &[]), Some(7.0));
        assert!(!s.has("h_seconds"));
    }
}

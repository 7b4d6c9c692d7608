//! The sink collectors write samples into, and its conversion to the `prometheus` crate's exposition model.
//!
//! Collectors build a fresh set of families per scrape (there is no long-lived metric state to go stale); the
//! registry sorts families and series so that the output is deterministic, which the golden-file tests rely on.

use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};

/// One family under construction.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    series: Vec<(Vec<(&'static str, String)>, Value)>,
}

/// A sample: a number, or a histogram's cumulative buckets (upper bound, count), sum and count.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Number(f64),
    Histogram { buckets: Vec<(f64, u64)>, sum: f64, count: u64 },
}

/// What one collector produced in one scrape: samples plus the problems it met on the way (malformed lines,
/// unreadable files). Any problem marks the collector's scrape as failed while its partial data is still exported.
#[derive(Default)]
pub struct Sink {
    families: Vec<Family>,
    problems: Vec<String>,
}

impl Sink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a gauge sample. Label names are static (the contract); values are data.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: &[(&'static str, &str)], value: f64) {
        self.push(name, help, MetricType::GAUGE, labels, value);
    }

    /// Adds a counter sample (`name` must end in `_total`).
    pub fn counter(&mut self, name: &'static str, help: &'static str, labels: &[(&'static str, &str)], value: f64) {
        debug_assert!(name.ends_with("_total"), "counter {name} must end in _total");
        self.push(name, help, MetricType::COUNTER, labels, value);
    }

    /// Adds a histogram sample from cumulative bucket counts (`le` upper bounds ascending, without +Inf).
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
        buckets: Vec<(f64, u64)>,
        sum: f64,
        count: u64,
    ) {
        let labels = labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
        self.family(name, help, MetricType::HISTOGRAM).series.push((labels, Value::Histogram { buckets, sum, count }));
    }

    /// Records a problem: the collector keeps going, the scrape reports it as failed, the registry logs it.
    pub fn problem(&mut self, message: impl Into<String>) {
        self.problems.push(message.into());
    }

    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Forgets recorded problems once the registry has reported them.
    pub fn problems_clear(&mut self) {
        self.problems.clear();
    }

    fn family(&mut self, name: &'static str, help: &'static str, kind: MetricType) -> &mut Family {
        // Families per collector are few (tens): a linear search beats hashing here.
        let at = match self.families.iter().position(|f| f.name == name) {
            Some(i) => i,
            None => {
                self.families.push(Family { name, help, kind, series: Vec::new() });
                self.families.len() - 1
            }
        };
        &mut self.families[at]
    }

    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        labels: &[(&'static str, &str)],
        v: f64,
    ) {
        let labels = labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
        self.family(name, help, kind).series.push((labels, Value::Number(v)));
    }

    /// Moves everything from `other` into this sink (used to merge collector results).
    pub fn absorb(&mut self, other: Sink) {
        for f in other.families {
            let kind = f.kind;
            self.family(f.name, f.help, kind).series.extend(f.series);
        }
        self.problems.extend(other.problems);
    }

    /// Converts to exposition families, sorted by name, series sorted by label values, duplicates summed (two
    /// sources can legitimately map to the same label set, e.g. two unnamed namespaces with the same process).
    pub fn into_families(self) -> Vec<MetricFamily> {
        let mut families = self.families;
        families.sort_by(|a, b| a.name.cmp(b.name));
        families
            .into_iter()
            // The text encoder rejects families without series.
            .filter(|f| !f.series.is_empty())
            .map(|mut f| {
                f.series.sort_by(|a, b| a.0.cmp(&b.0));
                f.series.dedup_by(|later, earlier| {
                    let same = later.0 == earlier.0;
                    if same && let (Value::Number(e), Value::Number(l)) = (&mut earlier.1, &later.1) {
                        *e += *l;
                    }
                    same
                });
                let mut mf = MetricFamily::default();
                mf.set_name(f.name.to_string());
                mf.set_help(f.help.to_string());
                mf.set_field_type(f.kind);
                let metrics = f
                    .series
                    .into_iter()
                    .map(|(labels, value)| {
                        let mut m = Metric::default();
                        m.set_label(
                            labels
                                .into_iter()
                                .map(|(k, v)| {
                                    let mut p = LabelPair::default();
                                    p.set_name(k.to_string());
                                    p.set_value(v);
                                    p
                                })
                                .collect(),
                        );
                        match value {
                            Value::Number(v) if f.kind == MetricType::COUNTER => {
                                let mut c = Counter::default();
                                c.set_value(v);
                                m.set_counter(c);
                            }
                            Value::Number(v) => {
                                let mut g = Gauge::default();
                                g.set_value(v);
                                m.set_gauge(g);
                            }
                            Value::Histogram { buckets, sum, count } => {
                                let mut h = Histogram::default();
                                h.set_bucket(
                                    buckets
                                        .into_iter()
                                        .map(|(le, n)| {
                                            let mut b = Bucket::default();
                                            b.set_upper_bound(le);
                                            b.set_cumulative_count(n);
                                            b
                                        })
                                        .collect(),
                                );
                                h.set_sample_sum(sum);
                                h.set_sample_count(count);
                                m.set_histogram(h);
                            }
                        }
                        m
                    })
                    .collect();
                mf.set_metric(metrics);
                mf
            })
            .collect()
    }
}

/// Renders families in the text exposition format.
pub fn encode_text(families: &[MetricFamily]) -> Vec<u8> {
    use prometheus::Encoder;
    let mut out = Vec::with_capacity(16 * 1024);
    // Encoding into a Vec only fails on invalid names, which are static in this code base.
    if let Err(e) = prometheus::TextEncoder::new().encode(families, &mut out) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let mut s = Sink::new();
        s.histogram("h_seconds", "h", &[("x", "1")], vec![(1.0, 2), (10.0, 5)], 17.5, 6);
        let text = String::from_utf8(encode_text(&s.into_families())).unwrap();
        assert!(text.contains("h_seconds_bucket{x=\"1\",le=\"1\"} 2\n"), "{text}");
        assert!(text.contains("h_seconds_bucket{x=\"1\",le=\"+Inf\"} 6\n"), "{text}");
        assert!(text.contains("h_seconds_sum{x=\"1\"} 17.5\n"), "{text}");
        assert!(text.contains("h_seconds_count{x=\"1\"} 6\n"), "{text}");
    }

    #[test]
    fn sorts_and_sums_duplicate_series() {
        let mut s = Sink::new();
        s.gauge("b_metric", "b", &[("x", "2")], 1.0);
        s.gauge("b_metric", "b", &[("x", "1")], 1.0);
        s.gauge("b_metric", "b", &[("x", "2")], 2.0);
        s.counter("a_total", "a", &[], 5.0);
        let text = String::from_utf8(encode_text(&s.into_families())).unwrap();
        let expected = "# HELP a_total a\n# TYPE a_total counter\na_total 5\n# HELP b_metric b\n# TYPE b_metric gauge\nb_metric{x=\"1\"} 1\nb_metric{x=\"2\"} 3\n";
        assert_eq!(text, expected);
    }
}

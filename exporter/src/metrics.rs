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
    /// Set when the collector's source does not exist on this node (no IPVS, no D-Bus socket): not a failure.
    absent: Option<String>,
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

    /// Says that the collector's source is not present on this node (why, for the log): the registry exports
    /// `nodesleuth_collector_source_present 0` instead of a failure.
    pub fn source_absent(&mut self, why: impl Into<String>) {
        self.absent = Some(why.into());
    }

    pub fn absent(&self) -> Option<&str> {
        self.absent.as_deref()
    }

    /// Series written twice with the same labels: a bug in the collector (or two sources it should have
    /// aggregated explicitly), never silently summed. One line per duplicated series.
    pub fn duplicates(&self) -> Vec<String> {
        let mut out: Vec<(&str, Vec<(&'static str, String)>)> = Vec::new();
        for f in &self.families {
            let mut labels: Vec<&Vec<(&'static str, String)>> = f.series.iter().map(|s| &s.0).collect();
            labels.sort();
            labels.dedup_by(|later, earlier| {
                let same = later == earlier;
                if same {
                    // Reported once however many copies there are: only for the second.
                    if !out.last().is_some_and(|(n, l)| *n == f.name && l == *earlier) {
                        out.push((f.name, (*earlier).clone()));
                    }
                }
                same
            });
        }
        out.into_iter().map(|(name, labels)| format!("duplicate series {name}{labels:?}")).collect()
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

    /// Converts to exposition families, sorted by name, series sorted by label values. A duplicate series keeps
    /// its first value (the registry has reported it as a collector problem through [`Sink::duplicates`]).
    pub fn into_families(self) -> Vec<MetricFamily> {
        let mut families = self.families;
        families.sort_by(|a, b| a.name.cmp(b.name));
        families
            .into_iter()
            // The text encoder rejects families without series.
            .filter(|f| !f.series.is_empty())
            .map(|mut f| {
                // Stable sort: the first of duplicates stays first and is the one kept.
                f.series.sort_by(|a, b| a.0.cmp(&b.0));
                f.series.dedup_by(|later, earlier| later.0 == earlier.0);
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
    fn sorts_and_reports_duplicate_series_instead_of_summing() {
        let mut s = Sink::new();
        s.gauge("b_metric", "b", &[("x", "2")], 1.0);
        s.gauge("b_metric", "b", &[("x", "1")], 1.0);
        s.gauge("b_metric", "b", &[("x", "2")], 2.0);
        s.gauge("b_metric", "b", &[("x", "2")], 4.0);
        s.counter("a_total", "a", &[], 5.0);
        assert_eq!(s.duplicates(), vec!["duplicate series b_metric[(\"x\", \"2\")]".to_string()]);
        let text = String::from_utf8(encode_text(&s.into_families())).unwrap();
        let expected = "# HELP a_total a\n# TYPE a_total counter\na_total 5\n# HELP b_metric b\n# TYPE b_metric gauge\nb_metric{x=\"1\"} 1\nb_metric{x=\"2\"} 1\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn no_duplicates_no_report() {
        let mut s = Sink::new();
        s.gauge("m", "m", &[("x", "1")], 1.0);
        s.gauge("m", "m", &[("x", "2")], 1.0);
        s.gauge("n", "n", &[("x", "1")], 1.0);
        assert!(s.duplicates().is_empty());
    }
}

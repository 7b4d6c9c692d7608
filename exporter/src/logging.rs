//! Log set-up: logfmt by default (as the Prometheus exporters log), JSON with `--log.format=json`.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The levels `--log.level` takes, as the Prometheus exporters name them.
pub const LEVELS: &[&str] = &["debug", "info", "warn", "error"];

/// Sets up logging. An unknown level is an error (the caller exits 2), never a filter that silences everything.
pub fn init(level: &str, format: &str) -> anyhow::Result<()> {
    let filter = filter(level)?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).with_current_span(false).try_init()
    } else {
        builder.event_format(Logfmt).try_init()
    }
    .map_err(|e| anyhow::anyhow!("logging: {e}"))
}

fn filter(level: &str) -> anyhow::Result<tracing_subscriber::EnvFilter> {
    if !LEVELS.contains(&level) {
        anyhow::bail!("invalid --log.level {level:?}: use one of {}", LEVELS.join(", "));
    }
    Ok(tracing_subscriber::EnvFilter::new(level))
}

/// `ts=… level=… msg="…" key=value …`, one line per event.
struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        write!(w, "ts={} level={} target={}", rfc3339_now(), meta.level().as_str().to_lowercase(), meta.target())?;
        let mut v = LogfmtVisitor { out: String::new(), msg: None };
        event.record(&mut v);
        if let Some(m) = v.msg {
            write!(w, " msg={}", quote(&m))?;
        }
        writeln!(w, "{}", v.out)
    }
}

struct LogfmtVisitor {
    out: String,
    msg: Option<String>,
}

impl Visit for LogfmtVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = Some(value.to_string());
        } else {
            self.out.push(' ');
            self.out.push_str(field.name());
            self.out.push('=');
            self.out.push_str(&quote(value));
        }
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '"' || c == '=' || c.is_control()) {
        return s.to_string();
    }
    format!("{s:?}")
}

/// UTC timestamp with milliseconds, without pulling in a date crate.
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, now.subsec_millis())
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_levels_are_refused() {
        for ok in LEVELS {
            assert!(filter(ok).is_ok(), "{ok}");
        }
        for bad in ["verbose", "INFO ", "", "trace,foo", "nodesleuth=debug"] {
            let err = filter(bad).unwrap_err().to_string();
            assert!(err.contains("invalid --log.level") && err.contains("debug, info, warn, error"), "{bad}: {err}");
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn logfmt_quoting() {
        assert_eq!(quote("tcp"), "tcp");
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("x=\"y\""), "\"x=\\\"y\\\"\"");
    }
}

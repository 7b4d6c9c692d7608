//! The D-Bus side of the systemd collector: one long-lived zbus connection on the tokio runtime, every call bounded
//! by the collector's timeout, reconnection with back-off, and the reading of one scrape.
//!
//! All calls of one refresh share one deadline, and the independent ones run concurrently on the one connection
//! (D-Bus pipelines them), so a refresh costs about two round trips and never more than the timeout.
//!
//! A call that times out on our side is still queued in dbus-daemon for systemd. So that a frozen PID 1 and frequent
//! scrapes do not pile calls up there (dbus-daemon refuses more than `max_replies_per_connection` pending replies
//! with `LimitsExceeded`, and a thawed systemd would first answer the whole backlog), systemd's calls run in a task
//! that outlives the refresh: while it waits, later refreshes wait on it instead of sending new calls. A task still
//! unanswered after [`PENDING_CAP`] drops the connection, which makes dbus-daemon forget its pending calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::future::{join, join_all};
use tokio::time::Instant;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{Connection, Message};

const DBUS_NAME: &str = "org.freedesktop.DBus";
const DBUS_PATH: &str = "/org/freedesktop/DBus";
const SYSTEMD_NAME: &str = "org.freedesktop.systemd1";
const SYSTEMD_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_IFACE: &str = "org.freedesktop.systemd1.Manager";
const PROPERTIES_IFACE: &str = "org.freedesktop.DBus.Properties";

/// First wait after a failed connection attempt; doubled after each further failure up to [`BACKOFF_MAX`].
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long systemd's calls may stay unanswered across refreshes before the connection is dropped.
const PENDING_CAP: Duration = Duration::from_secs(60);

const GETALL: &str = "org.freedesktop.DBus.Properties.GetAll(org.freedesktop.systemd1.Manager)";
const LIST_UNITS: &str = "org.freedesktop.systemd1.Manager.ListUnitsByPatterns";
const NRESTARTS: &str = "org.freedesktop.DBus.Properties.Get(org.freedesktop.systemd1.Service, NRestarts)";

/// systemd's answer and the highest reply serial seen in it.
type SystemdOutcome = (Result<SystemdReading, BusError>, u32);

/// Why part of a reading is missing. Messages are stable across scrapes (no times, no counters) because the
/// registry logs a collector's error once per change: a message that varied would be logged every scrape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to D-Bus at {address}: {reason}")]
    Connect { address: String, reason: String },
    #[error("{call}: no answer within {timeout:?}")]
    Timeout { call: &'static str, timeout: Duration },
    #[error("{call}: {name}: {detail}")]
    Remote { call: &'static str, name: String, detail: String },
    #[error("{call}: {reason}")]
    Transport { call: &'static str, reason: String },
    #[error("{call}: unexpected reply: {reason}")]
    Reply { call: &'static str, reason: String },
}

impl BusError {
    /// True when the connection itself is suspect (as opposed to a peer that answered with an error, or systemd
    /// alone being slow), so that the next scrape should connect afresh.
    fn breaks_connection(&self) -> bool {
        matches!(self, BusError::Transport { .. } | BusError::Connect { .. })
    }
}

/// What the collector was configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// D-Bus address (`unix:path=…`).
    pub address: String,
    /// Bound on one refresh: connection set-up plus every call.
    pub timeout: Duration,
    /// Unit names whose states are exported (full names, e.g. `kubelet.service`).
    pub units: Vec<String>,
    /// Glob patterns (`*` and `?`) whose loaded units are counted.
    pub patterns: Vec<String>,
}

/// The Manager properties exported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manager {
    pub version: String,
    pub system_state: String,
    pub n_names: Option<u32>,
    pub n_jobs: Option<u32>,
    pub n_installed_jobs: Option<u32>,
    pub n_failed_jobs: Option<u32>,
    pub n_failed_units: Option<u32>,
}

/// One of the configured key units.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitStatus {
    pub name: String,
    /// systemd's LoadState, or `not-loaded` when systemd does not hold the unit in memory (no unit file, or an
    /// inactive unit it has garbage-collected; either way not running).
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    /// `NRestarts` of a loaded service.
    pub n_restarts: Option<u32>,
}

/// What systemd answered in one refresh.
#[derive(Debug, Clone, Default)]
pub struct SystemdReading {
    pub manager: Manager,
    /// Per configured pattern, in flag order: loaded units matching it. `None` when the listing failed.
    pub pattern_units: Option<Vec<(String, u64)>>,
    pub units: Vec<UnitStatus>,
    /// Round-trip seconds per method.
    pub calls: Vec<(&'static str, f64)>,
    /// Parts that failed while systemd itself answered.
    pub problems: Vec<String>,
}

/// What dbus-daemon answered in one refresh.
#[derive(Debug, Clone, Default)]
pub struct BusReading {
    /// `org.freedesktop.DBus.Debug.Stats.GetStats` fields; `None` when the daemon does not offer them to us.
    pub stats: Option<Vec<(String, u32)>>,
    /// From the highest unique name seen on this bus (ours at connect time, and every `:1.N` listed since): how
    /// many connections the daemon has named since it started, as a lower bound.
    pub connections: u64,
    pub problems: Vec<String>,
}

/// One refresh.
#[derive(Debug, Clone)]
pub struct Reading {
    pub bus: Result<BusReading, BusError>,
    pub systemd: Result<SystemdReading, BusError>,
    /// The header serial of systemd's latest reply (this refresh's, else the last one seen).
    pub reply_serial: Option<u32>,
    /// When systemd last answered.
    pub last_success: Option<SystemTime>,
}

/// The long-lived client. Owned by the collector behind an async mutex; refreshed once per scrape.
pub struct Client {
    cfg: Config,
    conn: Option<Connection>,
    /// No new connection attempt before this instant (back-off after a failure).
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The last connection failure, repeated while backing off.
    connect_error: Option<BusError>,
    /// Highest unique-name serial seen on the current daemon; reset on reconnect (the daemon may have restarted).
    accepted_max: u64,
    last_serial: Option<u32>,
    last_success: Option<SystemTime>,
    /// Why GetStats is unavailable, as last logged (logged once per change, not per scrape).
    stats_note: Option<String>,
    /// systemd's calls still waiting for an answer from an earlier refresh.
    pending: Option<tokio::task::JoinHandle<SystemdOutcome>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(task) = self.pending.take() {
            task.abort();
        }
    }
}

impl Client {
    pub fn new(cfg: Config) -> Client {
        Client {
            cfg,
            conn: None,
            retry_at: None,
            backoff: BACKOFF_INITIAL,
            connect_error: None,
            accepted_max: 0,
            last_serial: None,
            last_success: None,
            stats_note: None,
            pending: None,
        }
    }

    /// Reads everything once, within the configured timeout. Never fails as a whole: each part carries its error.
    pub async fn refresh(&mut self) -> Reading {
        let deadline = Instant::now() + self.cfg.timeout;
        let conn = match self.connected(deadline).await {
            Ok(c) => c,
            Err(e) => {
                return Reading {
                    bus: Err(e.clone()),
                    systemd: Err(e),
                    reply_serial: self.last_serial,
                    last_success: self.last_success,
                };
            }
        };
        let timeout = self.cfg.timeout;
        let mut task = self.pending.take().unwrap_or_else(|| {
            let (conn, cfg) = (conn.clone(), self.cfg.clone());
            tokio::spawn(async move {
                let serial = AtomicU32::new(0);
                let reading = read_systemd(&conn, &cfg, Instant::now() + PENDING_CAP, &serial).await;
                (reading, serial.load(Ordering::Relaxed))
            })
        });
        let (bus, answered) =
            join(read_bus(&conn, deadline, timeout), tokio::time::timeout_at(deadline, &mut task)).await;
        // Unanswered in this refresh: keep waiting on the same calls next time rather than sending more.
        let (systemd, serial, capped) = match answered {
            Ok(Ok((reading, serial))) => {
                let capped = matches!(reading, Err(BusError::Timeout { .. }));
                (reading, serial, capped)
            }
            Ok(Err(e)) => (Err(BusError::Transport { call: GETALL, reason: e.to_string() }), 0, true),
            Err(_) => {
                self.pending = Some(task);
                (Err(BusError::Timeout { call: GETALL, timeout }), 0, false)
            }
        };

        let bus = bus.map(|(mut reading, stats_note, listed_max)| {
            self.accepted_max = self.accepted_max.max(listed_max);
            reading.connections = self.accepted_max;
            self.note_stats(stats_note);
            reading
        });
        let suspect =
            bus.as_ref().err().is_some_and(|e| e.breaks_connection() || matches!(e, BusError::Timeout { .. }))
                || systemd.as_ref().err().is_some_and(BusError::breaks_connection)
                || capped
                || conn.is_closed();
        if suspect {
            if let Some(task) = self.pending.take() {
                task.abort();
            }
            // dbus-daemon itself did not answer or the socket broke: connect afresh on the next scrape (at once: a
            // restarted daemon is usually back by then; back-off applies only to failed connection attempts).
            tracing::debug!(address = %self.cfg.address, "dropping the D-Bus connection");
            self.conn = None;
        }
        match serial {
            0 => {}
            s => self.last_serial = Some(s),
        }
        if systemd.is_ok() {
            self.last_success = Some(SystemTime::now());
        }
        Reading { bus, systemd, reply_serial: self.last_serial, last_success: self.last_success }
    }

    /// The live connection, connecting when there is none (unless backing off).
    async fn connected(&mut self, deadline: Instant) -> Result<Connection, BusError> {
        if let Some(c) = &self.conn {
            if !c.is_closed() {
                return Ok(c.clone());
            }
            tracing::debug!(address = %self.cfg.address, "D-Bus connection closed by the peer; reconnecting");
            self.conn = None;
        }
        if let (Some(at), Some(e)) = (self.retry_at, &self.connect_error)
            && Instant::now() < at
        {
            return Err(e.clone());
        }
        let attempt = async {
            zbus::connection::Builder::address(self.cfg.address.as_str())?.method_timeout(PENDING_CAP).build().await
        };
        let result = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.cfg.timeout)),
        };
        match result {
            Ok(conn) => {
                self.retry_at = None;
                self.backoff = BACKOFF_INITIAL;
                self.connect_error = None;
                self.accepted_max = conn.unique_name().and_then(|n| unique_name_serial(n.as_str())).unwrap_or(0);
                tracing::debug!(address = %self.cfg.address, unique_name = ?conn.unique_name(), "connected to D-Bus");
                self.conn = Some(conn.clone());
                Ok(conn)
            }
            Err(reason) => {
                let e = BusError::Connect { address: self.cfg.address.clone(), reason };
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                self.connect_error = Some(e.clone());
                Err(e)
            }
        }
    }

    fn note_stats(&mut self, note: Option<String>) {
        if note != self.stats_note {
            if let Some(n) = &note {
                tracing::info!(
                    collector = "systemd",
                    reason = n.as_str(),
                    "dbus-daemon statistics unavailable; nodesleuth_dbus_* statistics are not exported"
                );
            }
            self.stats_note = note;
        }
    }
}

/// One bounded method call. The serial of a reply sent by anyone but dbus-daemon (errors included: they use the
/// same cookie) is folded into `serial`, the highest winning: within one refresh serials only rise, short of the
/// wrap this collector exists to foresee.
#[allow(clippy::too_many_arguments)]
async fn call<B>(
    conn: &Connection,
    what: &'static str,
    destination: &str,
    path: &str,
    interface: &str,
    method: &str,
    body: &B,
    deadline: Instant,
    timeout: Duration,
    serial: Option<&AtomicU32>,
) -> Result<(Message, f64), BusError>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    let started = Instant::now();
    let result =
        tokio::time::timeout_at(deadline, conn.call_method(Some(destination), path, Some(interface), method, body))
            .await;
    let seconds = started.elapsed().as_secs_f64();
    let record = |m: &Message| {
        if let Some(serial) = serial {
            let h = m.header();
            if h.sender().is_some_and(|s| s.as_str() != DBUS_NAME) {
                serial.fetch_max(h.primary().serial_num().get(), Ordering::Relaxed);
            }
        }
    };
    match result {
        Err(_) => Err(BusError::Timeout { call: what, timeout }),
        Ok(Ok(m)) => {
            record(&m);
            Ok((m, seconds))
        }
        Ok(Err(zbus::Error::MethodError(name, detail, m))) => {
            record(&m);
            Err(BusError::Remote { call: what, name: name.to_string(), detail: detail.unwrap_or_default() })
        }
        Ok(Err(zbus::Error::InputOutput(e))) if e.kind() == std::io::ErrorKind::TimedOut => {
            Err(BusError::Timeout { call: what, timeout })
        }
        Ok(Err(e)) => Err(BusError::Transport { call: what, reason: e.to_string() }),
    }
}

fn body<T>(what: &'static str, m: &Message) -> Result<T, BusError>
where
    T: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
{
    m.body().deserialize::<T>().map_err(|e| BusError::Reply { call: what, reason: e.to_string() })
}

/// dbus-daemon's side: ListNames (doubles as the liveness check) and GetStats. Returns the reading, why stats are
/// unavailable (if they are) and the highest unique-name serial listed.
async fn read_bus(
    conn: &Connection,
    deadline: Instant,
    timeout: Duration,
) -> Result<(BusReading, Option<String>, u64), BusError> {
    const LIST: &str = "org.freedesktop.DBus.ListNames";
    const STATS: &str = "org.freedesktop.DBus.Debug.Stats.GetStats";
    let names = call(conn, LIST, DBUS_NAME, DBUS_PATH, DBUS_NAME, "ListNames", &(), deadline, timeout, None);
    let stats = call(
        conn,
        STATS,
        DBUS_NAME,
        DBUS_PATH,
        "org.freedesktop.DBus.Debug.Stats",
        "GetStats",
        &(),
        deadline,
        timeout,
        None,
    );
    let (names, stats) = join(names, stats).await;
    let (names, _) = names?;
    let listed_max = body::<Vec<String>>(LIST, &names)?.iter().filter_map(|n| unique_name_serial(n)).max().unwrap_or(0);
    let mut reading = BusReading::default();
    let mut note = None;
    match stats {
        Ok((m, _)) => {
            let map = body::<HashMap<String, OwnedValue>>(STATS, &m)?;
            let mut fields: Vec<(String, u32)> =
                map.iter().filter_map(|(k, v)| Some((k.clone(), u32::try_from(v).ok()?))).collect();
            fields.sort();
            reading.stats = Some(fields);
        }
        // The daemon's policy or build does not offer the statistics: a fact about the node, not a failure.
        Err(BusError::Remote { name, detail, .. })
            if name.ends_with(".AccessDenied")
                || name.ends_with(".UnknownMethod")
                || name.ends_with(".UnknownInterface") =>
        {
            note = Some(format!("{STATS}: {name}: {detail}"));
        }
        Err(e) => reading.problems.push(e.to_string()),
    }
    Ok((reading, note, listed_max))
}

type UnitRow = (String, String, String, String, String, String, OwnedObjectPath, u32, String, OwnedObjectPath);

/// systemd's side: Manager properties (one GetAll), the units matching the patterns or named as key units (one
/// ListUnitsByPatterns, which lists only units already in memory and never loads one), then NRestarts of the
/// loaded key services. `Err` when the Manager properties did not come back: systemd is then down for this scrape.
async fn read_systemd(
    conn: &Connection,
    cfg: &Config,
    deadline: Instant,
    serial: &AtomicU32,
) -> Result<SystemdReading, BusError> {
    let t = PENDING_CAP;
    let get_all = call(
        conn,
        GETALL,
        SYSTEMD_NAME,
        SYSTEMD_PATH,
        PROPERTIES_IFACE,
        "GetAll",
        &(MANAGER_IFACE,),
        deadline,
        t,
        Some(serial),
    );
    let mut patterns: Vec<&str> = cfg.patterns.iter().map(String::as_str).collect();
    patterns.extend(cfg.units.iter().map(String::as_str));
    let no_states: Vec<&str> = Vec::new();
    let list_args = (no_states, patterns);
    let list = call(
        conn,
        LIST_UNITS,
        SYSTEMD_NAME,
        SYSTEMD_PATH,
        MANAGER_IFACE,
        "ListUnitsByPatterns",
        &list_args,
        deadline,
        t,
        Some(serial),
    );
    let (get_all, list) = join(get_all, list).await;

    let mut reading = SystemdReading::default();
    let (m, seconds) = get_all?;
    reading.calls.push(("GetAll", seconds));
    reading.manager = manager(&body::<HashMap<String, OwnedValue>>(GETALL, &m)?);

    let rows = match list.and_then(|(m, s)| Ok((body::<Vec<UnitRow>>(LIST_UNITS, &m)?, s))) {
        Ok((rows, seconds)) => {
            reading.calls.push(("ListUnitsByPatterns", seconds));
            Some(rows)
        }
        Err(e) => {
            reading.problems.push(e.to_string());
            None
        }
    };
    let Some(rows) = rows else {
        return Ok(reading);
    };
    reading.pattern_units = Some(
        cfg.patterns.iter().map(|p| (p.clone(), rows.iter().filter(|r| glob_match(p, &r.0)).count() as u64)).collect(),
    );

    let mut restarts: Vec<(usize, _)> = Vec::new();
    for name in &cfg.units {
        let status = match rows.iter().find(|r| &r.0 == name) {
            Some(r) => {
                if name.ends_with(".service") && r.2 == "loaded" {
                    let path = r.6.clone();
                    restarts.push((reading.units.len(), async move {
                        let r = call(
                            conn,
                            NRESTARTS,
                            SYSTEMD_NAME,
                            path.as_str(),
                            PROPERTIES_IFACE,
                            "Get",
                            &("org.freedesktop.systemd1.Service", "NRestarts"),
                            deadline,
                            t,
                            Some(serial),
                        )
                        .await?;
                        let v = body::<OwnedValue>(NRESTARTS, &r.0)?;
                        u32::try_from(&v).map_err(|e| BusError::Reply { call: NRESTARTS, reason: e.to_string() })
                    }));
                }
                UnitStatus {
                    name: name.clone(),
                    load_state: r.2.clone(),
                    active_state: r.3.clone(),
                    sub_state: r.4.clone(),
                    n_restarts: None,
                }
            }
            None => UnitStatus {
                name: name.clone(),
                load_state: "not-loaded".into(),
                active_state: "inactive".into(),
                sub_state: "dead".into(),
                n_restarts: None,
            },
        };
        reading.units.push(status);
    }
    let (at, futures): (Vec<usize>, Vec<_>) = restarts.into_iter().unzip();
    for (i, r) in at.into_iter().zip(join_all(futures).await) {
        match r {
            Ok(n) => reading.units[i].n_restarts = Some(n),
            Err(e) => reading.problems.push(format!("{}: {e}", reading.units[i].name)),
        }
    }
    Ok(reading)
}

fn manager(props: &HashMap<String, OwnedValue>) -> Manager {
    let text = |k: &str| props.get(k).and_then(|v| <&str>::try_from(v).ok()).unwrap_or_default().to_string();
    let num = |k: &str| props.get(k).and_then(|v| u32::try_from(v).ok());
    Manager {
        version: text("Version"),
        system_state: text("SystemState"),
        n_names: num("NNames"),
        n_jobs: num("NJobs"),
        n_installed_jobs: num("NInstalledJobs"),
        n_failed_jobs: num("NFailedJobs"),
        n_failed_units: num("NFailedUnits"),
    }
}

/// How many connections dbus-daemon had named when it named this one `:A.B`: it hands out `:1.0`, `:1.1`, … up
/// to B = `i32::MAX`, then moves on to the next A, so the count is (A − 1) · 2^31 + B + 1.
pub fn unique_name_serial(name: &str) -> Option<u64> {
    let (major, minor) = name.strip_prefix(':')?.split_once('.')?;
    let (major, minor): (u64, u64) = (major.parse().ok()?, minor.parse().ok()?);
    Some(major.checked_sub(1)? * (1 << 31) + minor + 1)
}

/// `fnmatch(3)` without flags for the subset the pattern flag accepts: `*` (any run) and `?` (one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_like_fnmatch() {
        let lc = "libcontainer_*_systemd_test_default.slice";
        assert!(glob_match(lc, "libcontainer_12345_systemd_test_default.slice"));
        assert!(glob_match(lc, "libcontainer__systemd_test_default.slice"));
        assert!(!glob_match(lc, "libcontainer_1_systemd_test_default.scope"));
        assert!(!glob_match(lc, "kubepods.slice"));
        assert!(glob_match("*.scope", "cri-containerd-abc.scope"));
        assert!(!glob_match("*.scope", "cri-containerd-abc.scope.x"));
        assert!(glob_match("*.slice", "-.slice"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", ""));
        assert!(glob_match("**x*", "aax"));
        assert!(glob_match("kubelet.service", "kubelet.service"));
        assert!(!glob_match("kubelet.service", "kubelet.services"));
    }

    #[test]
    fn unique_names() {
        assert_eq!(unique_name_serial(":1.0"), Some(1));
        assert_eq!(unique_name_serial(":1.42"), Some(43));
        assert_eq!(unique_name_serial(":2.5"), Some((1 << 31) + 6));
        assert_eq!(unique_name_serial("org.freedesktop.DBus"), None);
        assert_eq!(unique_name_serial(":0.1"), None);
        assert_eq!(unique_name_serial(":1.x"), None);
    }

    /// No bus at the address: the error names the address, repeats unchanged while backing off (so it is logged
    /// once), and no attempt is made before the back-off expires.
    #[tokio::test]
    async fn no_bus_backs_off_with_a_stable_error() {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix:path={}/none", dir.path().display());
        let mut c = Client::new(Config {
            address: address.clone(),
            timeout: Duration::from_secs(2),
            units: vec!["dbus.service".into()],
            patterns: vec!["*.slice".into()],
        });
        let first = tokio::time::timeout(Duration::from_secs(5), c.refresh()).await.expect("refresh is bounded");
        let e = first.systemd.unwrap_err();
        assert!(matches!(&e, BusError::Connect { address: a, .. } if a == &address), "{e}");
        assert!(e.to_string().contains(&address), "{e}");
        let retry_at = c.retry_at.expect("backing off");
        let second = c.refresh().await;
        assert_eq!(second.systemd.unwrap_err(), e);
        assert_eq!(c.retry_at, Some(retry_at), "no new attempt while backing off");
        assert_eq!(c.backoff, BACKOFF_INITIAL * 2);
        assert!(second.reply_serial.is_none() && second.last_success.is_none());
    }
}

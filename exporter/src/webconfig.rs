//! `--web.config.file`: TLS, client certificates, basic auth, response headers and a rate limit in the Prometheus
//! exporter-toolkit format, so that a file written for node_exporter works here unchanged:
//! ```yaml
//! tls_server_config: { cert_file: server.crt, key_file: server.key, client_auth_type: RequireAndVerifyClientCert, client_ca_file: ca.crt, client_allowed_sans: [prometheus.monitoring.svc] }
//! http_server_config: { headers: { X-Frame-Options: deny } }
//! basic_auth_users: { prometheus: "$2y$10$..." }   # bcrypt hashes
//! rate_limit: { interval: 100ms, burst: 20 }
//! ```
//! The rule: every option the toolkit documents is either implemented or refused with an error that names it;
//! nothing that restricts access is accepted and then ignored. Concretely:
//! - `client_auth_type`: all five values (and the toolkit's legacy `RequireClientCert`). The two verifying ones
//!   need a CA (`client_ca_file` or inline `client_ca`); the toolkit would fall back to the system roots, which on
//!   a node would let any publicly issued certificate in.
//! - `client_allowed_sans`: the verified client certificate must carry one of the listed SANs (DNS, IP or URI,
//!   exact match as in the toolkit). Only with a verifying `client_auth_type`: the SAN of an unverified
//!   certificate proves nothing. E-mail SANs are refused (not implemented).
//! - `cipher_suites` (TLS 1.2 only, as in Go), `curve_preferences`, `prefer_server_cipher_suites`: mapped to
//!   rustls; names Go knows but rustls does not implement (CBC suites, P-521) are left out, which only narrows the
//!   set; a list that leaves nothing usable, or an unknown name, is an error.
//! - `min_version` TLS10/TLS11 is raised to TLS12 with a warning (rustls has no TLS < 1.2); `max_version` below
//!   TLS12 is an error.
//! - `http_server_config.headers`: only the toolkit's five headers, with its value checks. `http2`: accepted;
//!   this server speaks HTTP/1.1 (it does not restrict anything).
//! - `rate_limit`: a token bucket like the toolkit's (`interval` between requests, `burst`); requests beyond it
//!   get 429. `/healthz` is exempt from the rate limit and from basic auth (kubelet probes), not from TLS.
//! - Users: an unknown user is checked against a real configured hash (the most expensive one), so it costs the
//!   same bcrypt as a known user; bcrypt runs on a blocking thread, one at a time, after the scrape concurrency
//!   limit; outcomes are cached for a short time under a SHA-256 of (user, hash, password), as the toolkit caches
//!   them, so a Prometheus scraping every 15 s pays bcrypt about once a minute.
//! - Reload: the file and the certificate, key and CA files it names are checked every few seconds (mtime, size,
//!   inode); a change is loaded whole, and a broken new version keeps the old configuration running and is logged
//!   once (cert-manager rotation replaces files underneath a running exporter). Switching between TLS and plain
//!   HTTP needs a restart.
//!
//! Unknown keys are errors, as in the toolkit (strict YAML).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::Deserialize;
use tokio_rustls::rustls;

/// How often the file and the files it names are checked for changes.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long a bcrypt outcome is remembered.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(60);
/// Bound on remembered outcomes (password guessing cannot grow memory).
const AUTH_CACHE_MAX: usize = 256;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    cert: Option<String>,
    key: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<PathBuf>,
    client_ca: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[allow(dead_code)] // accepted for compatibility: this server speaks HTTP/1.1 either way
    http2: Option<bool>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default)]
    interval: Option<GoDuration>,
    #[serde(default)]
    burst: Option<u32>,
}

/// A Go `time.Duration` as yaml.v2 reads it: a string (`1s`, `1m30s`, `250ms`) or an integer of nanoseconds.
#[derive(Debug, Clone, Copy)]
struct GoDuration(Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Nanos(u64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Nanos(n) => Ok(GoDuration(Duration::from_nanos(n))),
            Repr::Text(s) => parse_go_duration(&s).map(GoDuration).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses Go duration syntax: a sequence of `<number><unit>` with units ns, us, µs, ms, s, m, h; or `0`.
fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (use e.g. 100ms, 1s, 1m30s)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(bad)?;
        let value: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() || total > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    // The cause is part of the message and not chained as a source: callers print chains with `{:#}`, which
    // would repeat it.
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("cannot parse {path}: {error}")]
    Parse { path: PathBuf, error: serde_norway::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("TLS setup: {0}")]
    Tls(rustls::Error),
}

fn invalid(msg: impl Into<String>) -> WebConfigError {
    WebConfigError::Invalid(msg.into())
}

/// The compiled form of one version of the file: what a connection and a request need.
pub struct Compiled {
    /// `None`: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// user → bcrypt hash; empty: no basic auth.
    users: BTreeMap<String, String>,
    /// The configured hash an unknown user is checked against (the highest cost, so that no user is cheaper).
    decoy_hash: Option<String>,
    pub headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
    /// (interval between requests, burst); `None`: no rate limit.
    rate_limit: Option<(Duration, u32)>,
}

impl Compiled {
    fn plain() -> Compiled {
        Compiled { tls: None, users: BTreeMap::new(), decoy_hash: None, headers: Vec::new(), rate_limit: None }
    }

    pub fn auth_required(&self) -> bool {
        !self.users.is_empty()
    }
}

/// The live web configuration, shared by the listener (TLS) and the request path (auth, headers, rate limit).
/// Cheap to clone.
#[derive(Clone)]
pub struct WebConfig {
    inner: Arc<Inner>,
}

struct Inner {
    path: Option<PathBuf>,
    current: RwLock<Arc<Compiled>>,
    /// Files watched for changes and their last seen state.
    watch: Mutex<Watch>,
    auth_cache: Mutex<HashMap<[u8; 32], (bool, Instant)>>,
    bcrypt_slot: tokio::sync::Semaphore,
    bucket: Mutex<Option<Bucket>>,
    /// Test hook: bcrypt verifications run, the cost of the last one, and the most that ran at once.
    pub(crate) stats: BcryptStats,
}

#[derive(Default)]
pub(crate) struct BcryptStats {
    pub(crate) runs: AtomicU64,
    pub(crate) last_cost: AtomicU64,
    pub(crate) running: AtomicU64,
    pub(crate) max_running: AtomicU64,
}

#[derive(Default)]
struct Watch {
    files: Vec<PathBuf>,
    stamps: Vec<Option<Stamp>>,
    last_check: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    mtime: Option<SystemTime>,
    len: u64,
    ino: u64,
    dev: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    // `metadata` follows symlinks: Kubernetes swaps a `..data` symlink when a Secret changes.
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { mtime: m.modified().ok(), len: m.len(), ino: m.ino(), dev: m.dev() })
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig::with(None, Compiled::plain(), Vec::new())
    }
}

impl std::fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebConfig").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

impl WebConfig {
    fn with(path: Option<PathBuf>, compiled: Compiled, files: Vec<PathBuf>) -> WebConfig {
        let stamps = files.iter().map(|f| stamp(f)).collect();
        WebConfig {
            inner: Arc::new(Inner {
                path,
                current: RwLock::new(Arc::new(compiled)),
                watch: Mutex::new(Watch { files, stamps, last_check: Some(Instant::now()) }),
                auth_cache: Mutex::new(HashMap::new()),
                bcrypt_slot: tokio::sync::Semaphore::new(1),
                bucket: Mutex::new(None),
                stats: BcryptStats::default(),
            }),
        }
    }

    /// Reads, validates and compiles the file (certificates and keys included): every error is a start-up error.
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let (compiled, files) = compile_file(path);
        Ok(WebConfig::with(Some(path.to_path_buf()), compiled?, files))
    }

    pub fn current(&self) -> Arc<Compiled> {
        self.inner.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    #[cfg(test)]
    pub(crate) fn stats(&self) -> &BcryptStats {
        &self.inner.stats
    }

    /// Checks the watched files (at most once per [`RELOAD_CHECK_INTERVAL`]) and reloads when one changed.
    /// Blocking (reads files): call it from a blocking thread. Returns true when a new version was installed.
    pub fn reload_if_changed(&self) -> bool {
        let Some(path) = self.inner.path.as_deref() else { return false };
        let mut watch = self.inner.watch.lock().unwrap_or_else(|p| p.into_inner());
        // Half the interval: the timer ticks every interval, and jitter must not make it skip every other tick.
        if watch.last_check.is_some_and(|t| t.elapsed() < RELOAD_CHECK_INTERVAL / 2) {
            return false;
        }
        watch.last_check = Some(Instant::now());
        let now: Vec<Option<Stamp>> = watch.files.iter().map(|f| stamp(f)).collect();
        if now == watch.stamps {
            return false;
        }
        let (compiled, files) = compile_file(path);
        // Remember what was seen, good or bad, so that a broken version is reported once, not every check. The
        // stamps taken before reading, when they cover the same files: a change while reading is seen next time.
        watch.stamps = if files == watch.files { now } else { files.iter().map(|f| stamp(f)).collect() };
        watch.files = files;
        let old_tls = self.current().tls.is_some();
        match compiled {
            Ok(c) if c.tls.is_some() != old_tls => {
                tracing::error!(
                    path = %path.display(),
                    "web config changed between TLS and plain HTTP: that needs a restart; keeping the running configuration"
                );
                false
            }
            Ok(c) => {
                *self.inner.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(c);
                tracing::info!(path = %path.display(), "web config reloaded");
                true
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "web config change is invalid; keeping the running configuration");
                false
            }
        }
    }

    /// The token bucket of `rate_limit`: false when this request is over the limit (answer 429).
    pub fn allow_request(&self) -> bool {
        let Some((interval, burst)) = self.current().rate_limit else { return true };
        let mut b = self.inner.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = match b.as_mut() {
            Some(bucket) if bucket.interval == interval && bucket.burst == burst => bucket,
            _ => b.insert(Bucket { interval, burst, tokens: f64::from(burst), last: Instant::now() }),
        };
        bucket.allow(Instant::now())
    }

    /// Checks an `Authorization` header against `basic_auth_users` (true when no users are configured).
    pub async fn check_basic_auth(&self, header: Option<&str>) -> bool {
        let compiled = self.current();
        if compiled.users.is_empty() {
            return true;
        }
        let Some((user, pass)) = header.and_then(decode_basic) else { return false };
        let (hash, known) = match compiled.users.get(&user) {
            Some(h) => (h.clone(), true),
            // Unknown user: the same bcrypt work as a known one, result discarded (no enumeration by timing).
            None => (compiled.decoy_hash.clone().unwrap_or_default(), false),
        };
        let key = cache_key(&user, &hash, &pass);
        if let Some(ok) = self.cached(&key) {
            return ok && known;
        }
        // One bcrypt at a time, as the toolkit does; waiting here takes no thread.
        let Ok(_slot) = self.inner.bcrypt_slot.acquire().await else { return false };
        // A request that waited may find the answer cached by the one before it.
        if let Some(ok) = self.cached(&key) {
            return ok && known;
        }
        let this = self.clone();
        let verified = tokio::task::spawn_blocking(move || this.bcrypt_verify(&pass, &hash)).await.unwrap_or(false);
        let ok = verified && known;
        let mut cache = self.inner.auth_cache.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        cache.retain(|_, (_, at)| now.duration_since(*at) < AUTH_CACHE_TTL);
        if cache.len() >= AUTH_CACHE_MAX {
            // Forget the oldest (guessing cannot grow memory, and cannot evict a busy user's entry for long).
            if let Some(oldest) = cache.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k) {
                cache.remove(&oldest);
            }
        }
        cache.insert(key, (ok, now));
        ok
    }

    fn cached(&self, key: &[u8; 32]) -> Option<bool> {
        let cache = self.inner.auth_cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).filter(|(_, at)| at.elapsed() < AUTH_CACHE_TTL).map(|(ok, _)| *ok)
    }

    /// The one place bcrypt runs.
    fn bcrypt_verify(&self, pass: &str, hash: &str) -> bool {
        let s = &self.inner.stats;
        let running = s.running.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_running.fetch_max(running, Ordering::SeqCst);
        s.runs.fetch_add(1, Ordering::SeqCst);
        s.last_cost
            .store(hash.parse::<bcrypt::HashParts>().map(|p| u64::from(p.get_cost())).unwrap_or(0), Ordering::SeqCst);
        let ok = bcrypt::verify(pass, hash).unwrap_or(false);
        s.running.fetch_sub(1, Ordering::SeqCst);
        ok
    }
}

fn decode_basic(header: &str) -> Option<(String, String)> {
    use base64::Engine;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

/// SHA-256 over length-prefixed (user, hash, password): the cache holds no password.
fn cache_key(user: &str, hash: &str, pass: &str) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [user, hash, pass] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

struct Bucket {
    interval: Duration,
    burst: u32,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// golang.org/x/time/rate semantics: one token per `interval`, at most `burst` stored, starting full.
    fn allow(&mut self, now: Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() / self.interval.as_secs_f64();
        self.tokens = (self.tokens + refill).min(f64::from(self.burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Loads one version of the file: the compiled config (or why not) and the files to watch for the next change.
fn compile_file(path: &Path) -> (Result<Compiled, WebConfigError>, Vec<PathBuf>) {
    let mut files = vec![path.to_path_buf()];
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(error) => return (Err(WebConfigError::Read { path: path.into(), error }), files),
    };
    let mut raw: RawConfig = if text.trim().is_empty() {
        RawConfig::default()
    } else {
        match serde_norway::from_str(&text) {
            Ok(r) => r,
            Err(error) => return (Err(WebConfigError::Parse { path: path.into(), error }), files),
        }
    };
    // Relative file names are relative to the config file, as in exporter-toolkit; empty strings mean unset.
    let base = path.parent().unwrap_or(Path::new("."));
    if let Some(tls) = raw.tls_server_config.as_mut() {
        for p in [&mut tls.cert_file, &mut tls.key_file, &mut tls.client_ca_file] {
            if p.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                *p = None;
            }
            if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
            files.extend(p.clone());
        }
        for s in [&mut tls.cert, &mut tls.key, &mut tls.client_ca, &mut tls.client_auth_type] {
            if s.as_ref().is_some_and(|s| s.is_empty()) {
                *s = None;
            }
        }
    }
    (compile(raw), files)
}

fn compile(raw: RawConfig) -> Result<Compiled, WebConfigError> {
    let users = raw.basic_auth_users.unwrap_or_default();
    let mut decoy: Option<(u32, &String)> = None;
    for (user, hash) in &users {
        let parts = hash.parse::<bcrypt::HashParts>().map_err(|_| {
            invalid(format!("basic_auth_users.{user}: not a bcrypt hash (make one with `htpasswd -nBC 10 \"\"`)"))
        })?;
        if decoy.is_none_or(|(cost, _)| parts.get_cost() > cost) {
            decoy = Some((parts.get_cost(), hash));
        }
    }
    let decoy_hash = decoy.map(|(_, h)| h.clone());

    let mut headers = Vec::new();
    for (k, v) in raw.http_server_config.and_then(|h| h.headers).unwrap_or_default() {
        // The toolkit's list, for consistency across the Prometheus ecosystem.
        let allowed: &[&str] = match k.as_str() {
            "Strict-Transport-Security" | "X-XSS-Protection" | "Content-Security-Policy" => &[],
            "X-Content-Type-Options" => &["nosniff"],
            "X-Frame-Options" => &["deny", "sameorigin"],
            _ => return Err(invalid(format!("http_server_config.headers: header {k:?} can not be configured"))),
        };
        if !allowed.is_empty() && !allowed.contains(&v.as_str()) {
            return Err(invalid(format!("http_server_config.headers.{k}: {v:?} is not one of {allowed:?}")));
        }
        if v.is_empty() {
            continue; // "unset if blank"
        }
        let value = axum::http::HeaderValue::try_from(v.as_str())
            .map_err(|_| invalid(format!("http_server_config.headers.{k}: not a valid header value")))?;
        headers.push((axum::http::HeaderName::try_from(k.as_str()).expect("listed names are valid"), value));
    }

    let rate_limit = match raw.rate_limit {
        None => None,
        Some(r) => {
            let interval = r.interval.map(|d| d.0).unwrap_or_default();
            let burst = r.burst.unwrap_or(0);
            if interval.is_zero() {
                None // the toolkit's "0 disables the rate limiter"
            } else {
                if burst == 0 {
                    tracing::warn!(
                        "rate_limit.burst is 0: every request except /healthz is answered 429 (as in exporter-toolkit)"
                    );
                }
                Some((interval, burst))
            }
        }
    };

    let tls = match raw.tls_server_config {
        Some(t) if tls_enabled(&t) => Some(Arc::new(tls_config(&t)?)),
        Some(t) => {
            for (set, key) in [
                (t.client_allowed_sans.is_some(), "client_allowed_sans"),
                (t.cipher_suites.is_some(), "cipher_suites"),
                (t.curve_preferences.is_some(), "curve_preferences"),
                (t.min_version.is_some(), "min_version"),
                (t.max_version.is_some(), "max_version"),
            ] {
                if set {
                    return Err(invalid(format!(
                        "tls_server_config.{key} is set but TLS is off (no cert/cert_file, key/key_file)"
                    )));
                }
            }
            None
        }
        None => None,
    };
    Ok(Compiled { tls, users, decoy_hash, headers, rate_limit })
}

/// As the toolkit decides: any certificate, key, CA or client auth setting turns TLS on.
fn tls_enabled(t: &RawTls) -> bool {
    t.cert.is_some()
        || t.cert_file.is_some()
        || t.key.is_some()
        || t.key_file.is_some()
        || t.client_ca.is_some()
        || t.client_ca_file.is_some()
        || t.client_auth_type.is_some()
}

fn read_pem(inline: &Option<String>, file: &Option<PathBuf>, what: &str) -> Result<Vec<u8>, WebConfigError> {
    match (inline, file) {
        (Some(s), None) => Ok(s.clone().into_bytes()),
        (None, Some(p)) => std::fs::read(p).map_err(|error| WebConfigError::Read { path: p.clone(), error }),
        (Some(_), Some(_)) => Err(invalid(format!("tls_server_config: both {what} and {what}_file are set; use one"))),
        (None, None) => Err(invalid(format!("tls_server_config: missing one of {what} or {what}_file"))),
    }
}

/// Go's names for the suites `tls.CipherSuites()` lists (what the toolkit accepts).
const GO_CIPHER_SUITES: &[&str] = &[
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
];

fn tls_config(t: &RawTls) -> Result<rustls::ServerConfig, WebConfigError> {
    use rustls::crypto::ring;
    for (inline, file, what) in
        [(t.cert.is_some(), t.cert_file.is_some(), "cert"), (t.key.is_some(), t.key_file.is_some(), "key")]
    {
        if !inline && !file {
            return Err(invalid(format!("tls_server_config: missing one of {what} or {what}_file")));
        }
    }
    let cert_pem = read_pem(&t.cert, &t.cert_file, "cert")?;
    let key_pem = read_pem(&t.key, &t.key_file, "key")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("tls_server_config.cert: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("tls_server_config.cert: no PEM certificate found"));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => invalid("tls_server_config.key: no PEM private key found"),
        e => invalid(format!("tls_server_config.key: {e}")),
    })?;

    let version = |key: &str, v: &str| match v {
        "TLS13" => Ok(13),
        "TLS12" => Ok(12),
        "TLS10" | "TLS11" => Ok(if key == "min_version" { 12 } else { 11 }),
        other => Err(invalid(format!("tls_server_config.{key}: unknown TLS version {other:?} (TLS12 or TLS13)"))),
    };
    if let Some(v @ ("TLS10" | "TLS11")) = t.min_version.as_deref() {
        tracing::warn!(min_version = v, "TLS 1.0 and 1.1 are not implemented (insecure): TLS 1.2 is the minimum");
    }
    let min = version("min_version", t.min_version.as_deref().unwrap_or("TLS12"))?;
    let max = version("max_version", t.max_version.as_deref().unwrap_or("TLS13"))?;
    if max < 12 {
        return Err(invalid("tls_server_config.max_version: TLS 1.0 and 1.1 are not implemented; use TLS12 or TLS13"));
    }
    if min > max {
        return Err(invalid("tls_server_config: min_version is above max_version"));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(n, _)| *n >= min && *n <= max)
            .map(|(_, v)| v)
            .collect();

    let mut provider = ring::default_provider();
    if let Some(names) = &t.cipher_suites {
        // Go applies cipher_suites to TLS 1.2 only; TLS 1.3 keeps its (all strong) suites.
        let mut tls12 = Vec::new();
        for name in names {
            if !GO_CIPHER_SUITES.contains(&name.as_str()) {
                return Err(invalid(format!(
                    "tls_server_config.cipher_suites: unknown or insecure cipher suite {name:?}"
                )));
            }
            if let Some(s) = ring::ALL_CIPHER_SUITES
                .iter()
                .find(|s| s.version() == &rustls::version::TLS12 && format!("{:?}", s.suite()) == *name)
            {
                tls12.push(*s);
            }
        }
        if tls12.is_empty() && min == 12 {
            return Err(invalid(
                "tls_server_config.cipher_suites: none of the listed TLS 1.2 suites is implemented here \
                 (ECDHE with AES-GCM or CHACHA20-POLY1305 are)",
            ));
        }
        let mut suites: Vec<_> =
            provider.cipher_suites.iter().filter(|s| s.version() == &rustls::version::TLS13).copied().collect();
        suites.extend(tls12);
        provider.cipher_suites = suites;
    }
    if let Some(names) = &t.curve_preferences {
        let mut groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup> = Vec::new();
        for name in names {
            match name.as_str() {
                "CurveP256" => groups.push(ring::kx_group::SECP256R1),
                "CurveP384" => groups.push(ring::kx_group::SECP384R1),
                "X25519" => groups.push(ring::kx_group::X25519),
                "CurveP521" => {} // not implemented by ring: leaving it out only narrows the set
                other => return Err(invalid(format!("tls_server_config.curve_preferences: unknown curve {other:?}"))),
            }
        }
        if groups.is_empty() {
            return Err(invalid(
                "tls_server_config.curve_preferences: none of the listed curves is implemented here \
                 (CurveP256, CurveP384, X25519 are)",
            ));
        }
        provider.kx_groups = groups;
    }
    let provider = Arc::new(provider);

    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(WebConfigError::Tls)?;
    let auth = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let ca_pem = match (&t.client_ca, &t.client_ca_file) {
        (None, None) => None,
        _ => Some(read_pem(&t.client_ca, &t.client_ca_file, "client_ca")?),
    };
    let verifying = matches!(auth, "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven");
    let sans = t.client_allowed_sans.clone();
    if sans.as_ref().is_some_and(|s| s.is_empty()) {
        return Err(invalid("tls_server_config.client_allowed_sans is empty: no client certificate could match"));
    }
    if sans.is_some() && !verifying {
        return Err(invalid(format!(
            "tls_server_config.client_allowed_sans needs client_auth_type RequireAndVerifyClientCert or \
             VerifyClientCertIfGiven (is {auth}): the SAN of an unverified certificate proves nothing"
        )));
    }
    let algs = provider.signature_verification_algorithms;
    let builder = match auth {
        "NoClientCert" => {
            if ca_pem.is_some() {
                return Err(invalid(
                    "tls_server_config: a client CA is configured but client_auth_type is NoClientCert",
                ));
            }
            builder.with_no_client_auth()
        }
        "RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert" => {
            builder.with_client_cert_verifier(Arc::new(AnyClientCert { mandatory: auth != "RequestClientCert", algs }))
        }
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let pem = ca_pem.ok_or_else(|| {
                invalid(format!("tls_server_config.client_auth_type {auth} needs client_ca_file or client_ca"))
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| invalid(format!("tls_server_config.client_ca: {e}")))?;
                roots.add(c).map_err(|e| invalid(format!("tls_server_config.client_ca: {e}")))?;
            }
            if roots.is_empty() {
                return Err(invalid("tls_server_config.client_ca: no PEM certificate found"));
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let v = if auth == "VerifyClientCertIfGiven" { v.allow_unauthenticated() } else { v };
            let verifier = v.build().map_err(|e| invalid(format!("tls_server_config.client_ca: {e}")))?;
            match sans {
                Some(allowed) => {
                    let allowed = AllowedSans::new(allowed)?;
                    builder.with_client_cert_verifier(Arc::new(SanCheck { inner: verifier, allowed }))
                }
                None => builder.with_client_cert_verifier(verifier),
            }
        }
        other => return Err(invalid(format!("tls_server_config.client_auth_type: invalid value {other:?}"))),
    };
    let mut server = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => invalid("tls_server_config: the key does not belong to the certificate"),
        e => WebConfigError::Tls(e),
    })?;
    server.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(server)
}

/// `RequestClientCert` / `RequireAnyClientCert`: a certificate is asked for (and required), not verified against
/// any CA, as in Go. The handshake signature is still checked (the client holds the key).
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::server::danger::ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// `client_allowed_sans`, split by kind: IP addresses compare as addresses, the rest as exact strings against
/// the DNS and URI SANs (as the toolkit compares Go's `DNSNames`, `IPAddresses` and `URIs`).
#[derive(Debug)]
struct AllowedSans {
    ips: Vec<std::net::IpAddr>,
    names: Vec<String>,
}

impl AllowedSans {
    fn new(list: Vec<String>) -> Result<AllowedSans, WebConfigError> {
        let mut a = AllowedSans { ips: Vec::new(), names: Vec::new() };
        for s in list {
            if let Ok(ip) = s.parse() {
                a.ips.push(ip);
            } else if s.contains('@') && !s.contains(':') {
                return Err(invalid(format!(
                    "tls_server_config.client_allowed_sans: e-mail SANs ({s:?}) are not supported; use a DNS, IP or URI SAN"
                )));
            } else {
                a.names.push(s);
            }
        }
        Ok(a)
    }

    /// The certificate's SANs that matched, or the reason none did.
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), String> {
        let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("unparsable client certificate: {e}"))?;
        if ee.valid_dns_names().chain(ee.valid_uri_names()).any(|n| self.names.iter().any(|a| a == n)) {
            return Ok(());
        }
        if self.ips.iter().any(|ip| ee.verify_is_valid_for_subject_name(&ServerName::IpAddress((*ip).into())).is_ok()) {
            return Ok(());
        }
        let found: Vec<&str> = ee.valid_dns_names().chain(ee.valid_uri_names()).collect();
        Err(format!("client certificate SANs {found:?} (and IP SANs, if any) are not in client_allowed_sans"))
    }
}

#[derive(Debug)]
struct SanCheck {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    allowed: AllowedSans,
}

impl rustls::server::danger::ClientCertVerifier for SanCheck {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        self.allowed.check(end_entity).map_err(|why| {
            tracing::debug!(reason = %why, "client certificate refused");
            rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)
        })?;
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("web.yml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn load_err(dir: &Path, text: &str) -> String {
        match WebConfig::load(&write(dir, text)) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => format!("{:#}", anyhow::Error::from(e)),
        }
    }

    fn basic(user_pass: &str) -> String {
        use base64::Engine;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass))
    }

    #[test]
    fn refuses_with_the_key_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (text, want) in [
            ("basic_auth_users:\n  alice: notahash\n", "basic_auth_users.alice: not a bcrypt hash"),
            ("tls_server_config:\n  cert_fiel: x\n", "unknown field `cert_fiel`"),
            ("rate_limit:\n  interval: 1x\n", "invalid duration"),
            ("rate_limit:\n  intervall: 1s\n", "unknown field `intervall`"),
            (
                "http_server_config:\n  headers:\n    X-Powered-By: me\n",
                "header \"X-Powered-By\" can not be configured",
            ),
            ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "X-Frame-Options"),
            (
                "tls_server_config:\n  client_allowed_sans: [a]\n",
                "tls_server_config.client_allowed_sans is set but TLS is off",
            ),
            ("tls_server_config:\n  cert_file: c.crt\n", "missing one of key or key_file"),
            ("tls_server_config:\n  cert_file: \"\"\n  key_file: k.key\n", "missing one of cert or cert_file"),
        ] {
            let err = load_err(d, text);
            assert!(err.contains(want), "{text}\n→ {err}");
        }
    }

    #[test]
    fn errors_do_not_repeat_their_cause() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", anyhow::Error::from(WebConfig::load(&dir.path().join("missing.yml")).unwrap_err()));
        assert_eq!(err.matches("os error 2").count(), 1, "{err}");
        let err = load_err(dir.path(), "tls_server_config: [\n");
        let yaml = serde_norway::from_str::<RawConfig>("tls_server_config: [\n").unwrap_err().to_string();
        assert!(err.contains("web.yml"), "{err}");
        assert_eq!(err.matches(&yaml).count(), 1, "YAML error ({yaml}) once: {err}");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("1").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("1d").is_err());
    }

    #[test]
    fn rate_limit_is_a_token_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WebConfig::load(&write(dir.path(), "rate_limit:\n  interval: 1h\n  burst: 3\n")).unwrap();
        let allowed = (0..10).filter(|_| cfg.allow_request()).count();
        assert_eq!(allowed, 3, "burst, then one per interval");
        let cfg = WebConfig::load(&write(dir.path(), "rate_limit:\n  interval: 0\n  burst: 0\n")).unwrap();
        assert!((0..10).all(|_| cfg.allow_request()), "interval 0 disables the limit");
        let mut b = Bucket { interval: Duration::from_millis(100), burst: 2, tokens: 0.0, last: Instant::now() };
        let t = b.last;
        assert!(!b.allow(t));
        assert!(b.allow(t + Duration::from_millis(100)), "refilled after one interval");
        assert!(!b.allow(t + Duration::from_millis(100)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_users_cost_the_same_bcrypt_and_run_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let cheap = bcrypt::hash("other", 4).unwrap();
        let dear = bcrypt::hash("s3cret", 6).unwrap();
        let cfg =
            WebConfig::load(&write(dir.path(), &format!("basic_auth_users:\n  a: '{cheap}'\n  prom: '{dear}'\n")))
                .unwrap();
        let stats = cfg.stats();
        let runs = || stats.runs.load(Ordering::SeqCst);
        assert!(cfg.check_basic_auth(Some(&basic("prom:s3cret"))).await);
        assert_eq!((runs(), stats.last_cost.load(Ordering::SeqCst)), (1, 6));
        assert!(!cfg.check_basic_auth(Some(&basic("prom:wrong"))).await);
        assert_eq!((runs(), stats.last_cost.load(Ordering::SeqCst)), (2, 6));
        // An unknown user runs bcrypt too, against the most expensive configured hash, and is refused even with
        // that hash's password.
        assert!(!cfg.check_basic_auth(Some(&basic("nobody:s3cret"))).await);
        assert_eq!((runs(), stats.last_cost.load(Ordering::SeqCst)), (3, 6), "unknown user: same bcrypt work");
        // Cached: repeats (known, wrong, unknown) cost nothing.
        assert!(cfg.check_basic_auth(Some(&basic("prom:s3cret"))).await);
        assert!(!cfg.check_basic_auth(Some(&basic("prom:wrong"))).await);
        assert!(!cfg.check_basic_auth(Some(&basic("nobody:s3cret"))).await);
        assert_eq!(runs(), 3);
        // Malformed headers never reach bcrypt.
        for h in [None, Some("Bearer x"), Some("Basic !!!"), Some(basic("nocolon").as_str())] {
            assert!(!cfg.check_basic_auth(h).await);
        }
        assert_eq!(runs(), 3);
        // Many distinct guesses at once: bcrypt still runs one at a time.
        let guesses: Vec<_> = (0..8)
            .map(|i| {
                let cfg = cfg.clone();
                tokio::spawn(async move { cfg.check_basic_auth(Some(&basic(&format!("prom:guess{i}")))).await })
            })
            .collect();
        for g in guesses {
            assert!(!g.await.unwrap());
        }
        assert_eq!(runs(), 11);
        assert_eq!(stats.max_running.load(Ordering::SeqCst), 1, "never two bcrypt runs at once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn users_are_reloaded_and_a_broken_version_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let users = |user: &str| format!("basic_auth_users:\n  {user}: '{}'\n", bcrypt::hash("pw", 4).unwrap());
        let path = write(dir.path(), &users("alice"));
        let cfg = WebConfig::load(&path).unwrap();
        let force = |cfg: &WebConfig| {
            cfg.inner.watch.lock().unwrap().last_check = None;
            cfg.reload_if_changed()
        };
        assert!(!force(&cfg), "nothing changed");
        assert!(cfg.check_basic_auth(Some(&basic("alice:pw"))).await);
        // A new file (another inode, as a rename or Kubernetes' symlink swap gives).
        std::fs::write(dir.path().join("new.yml"), users("bob")).unwrap();
        std::fs::rename(dir.path().join("new.yml"), &path).unwrap();
        assert!(force(&cfg));
        assert!(!cfg.check_basic_auth(Some(&basic("alice:pw"))).await, "alice is gone");
        assert!(cfg.check_basic_auth(Some(&basic("bob:pw"))).await);
        // Broken: bob stays; checked once (no retry until the file changes again).
        std::fs::write(dir.path().join("new.yml"), "basic_auth_users: [\n").unwrap();
        std::fs::rename(dir.path().join("new.yml"), &path).unwrap();
        assert!(!force(&cfg));
        assert!(cfg.check_basic_auth(Some(&basic("bob:pw"))).await);
        // Switching to TLS needs a restart: refused (with a valid certificate), bob stays.
        let st = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=x", "-keyout", "a.key", "-out", "a.crt"])
            .current_dir(dir.path())
            .output()
            .expect("openssl is needed (Debian package openssl)");
        assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
        let tls = "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n";
        assert!(WebConfig::load(&write(dir.path(), tls)).unwrap().current().tls.is_some(), "a valid TLS config");
        std::fs::write(&path, users("bob")).unwrap();
        std::fs::write(dir.path().join("new.yml"), format!("{tls}{}", users("carol"))).unwrap();
        std::fs::rename(dir.path().join("new.yml"), &path).unwrap();
        assert!(!force(&cfg));
        assert!(cfg.current().tls.is_none());
        assert!(cfg.check_basic_auth(Some(&basic("bob:pw"))).await);
    }

    #[test]
    fn allowed_sans_split_by_kind() {
        let a = AllowedSans::new(vec!["10.0.0.1".into(), "::1".into(), "prom.example".into(), "spiffe://x/y".into()])
            .unwrap();
        assert_eq!(a.ips.len(), 2);
        assert_eq!(a.names, vec!["prom.example".to_string(), "spiffe://x/y".to_string()]);
        assert!(AllowedSans::new(vec!["ops@example.org".into()]).is_err());
    }
}

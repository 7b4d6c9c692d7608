//! The HTTP side: landing page, `/healthz`, the metrics endpoint, gzip, the web config (TLS, client certificates,
//! basic auth, headers, rate limit), a bound on parallel scrapes, single-flight collection, the exporter's own
//! `process_*` and request metrics, dual-stack listening and graceful shutdown.
//!
//! Order of checks for a request (everything but `/healthz`, which only TLS applies to):
//! rate limit (429) → scrape slots of `--web.max-requests` (503) → basic auth (401; bcrypt one at a time, on a
//! blocking thread) → handler. So a flood of guessed passwords costs at most `--web.max-requests` waiting requests
//! and one bcrypt at a time, never the collectors' threads.
//!
//! Single flight: concurrent scrapes (an HA Prometheus pair scrapes at the same moment) share one collection. A
//! scrape joins the collection in flight when that collection's deadline is not later than its own (so it is
//! answered within its own deadline); otherwise it starts its own, which later scrapes may join. The registry
//! already runs each collector at most once at a time, so the second collection waits for (and, past its deadline,
//! reports) collectors still busy in the first.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::sync::{Semaphore, watch};

use crate::registry::Registry;
use crate::webconfig::WebConfig;

pub struct ServerConfig {
    pub listen: SocketAddr,
    pub telemetry_path: String,
    pub max_requests: usize,
    pub collector_timeout: Duration,
    pub web: WebConfig,
}

/// `--web.listen-address`: `:port` means every address, IPv6 included (`[::]:port`, dual-stack, falling back to
/// `0.0.0.0:port` on a host without IPv6); anything else must be a socket address (`[::1]:9741`, `10.0.0.1:9741`).
pub fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') { format!("[::]{s}") } else { s.to_string() };
    full.parse().map_err(|e| format!("invalid --web.listen-address {s:?}: {e} (use e.g. :9741 or 127.0.0.1:9741)"))
}

/// A collection in flight that later scrapes can join.
struct Flight {
    id: u64,
    deadline: tokio::time::Instant,
    result: watch::Receiver<Option<Arc<Vec<u8>>>>,
}

struct AppState {
    registry: Registry,
    scrape_slots: Option<Semaphore>,
    collector_timeout: Duration,
    telemetry_path: String,
    web: WebConfig,
    flight: Mutex<Option<Flight>>,
    flight_ids: AtomicU64,
    /// Scrapes that joined a collection in flight (tests).
    joined: AtomicU64,
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

/// Builds the router (also used by tests without a socket).
pub fn router(registry: Registry, cfg: &ServerConfig) -> Router {
    build(registry, cfg).0
}

fn build(registry: Registry, cfg: &ServerConfig) -> (Router, Arc<AppState>) {
    let state = Arc::new(AppState {
        registry,
        scrape_slots: (cfg.max_requests > 0).then(|| Semaphore::new(cfg.max_requests)),
        collector_timeout: cfg.collector_timeout,
        telemetry_path: cfg.telemetry_path.clone(),
        web: cfg.web.clone(),
        flight: Mutex::new(None),
        flight_ids: AtomicU64::new(0),
        joined: AtomicU64::new(0),
        // Present from the start, so the family exists in the first scrape.
        requests: Mutex::new(BTreeMap::from([(("metrics", 200), 0)])),
    });
    let mut app = Router::new().route(&cfg.telemetry_path, get(metrics)).route("/healthz", get(|| async { "ok\n" }));
    if cfg.telemetry_path != "/" {
        app = app.route("/", get(landing));
    }
    let app = app
        .with_state(state.clone())
        .layer(tower_http::compression::CompressionLayer::new().gzip(true))
        .layer(middleware::from_fn_with_state(state.clone(), gate));
    (app, state)
}

fn handler_label(state: &AppState, path: &str) -> &'static str {
    if path == state.telemetry_path {
        "metrics"
    } else if path == "/healthz" {
        "healthz"
    } else if path == "/" {
        "landing"
    } else {
        "other"
    }
}

/// Counting, web config headers, and the checks in front of every handler but `/healthz`.
async fn gate(State(state): State<Arc<AppState>>, req: Request<Body>, next: Next) -> Response {
    let handler = handler_label(&state, req.uri().path());
    let web = state.web.current();
    let mut resp = if handler == "healthz" { next.run(req).await } else { checked(&state, req, next).await };
    for (k, v) in &web.headers {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    let mut counts = state.requests.lock().unwrap_or_else(|p| p.into_inner());
    *counts.entry((handler, resp.status().as_u16())).or_default() += 1;
    resp
}

async fn checked(state: &AppState, req: Request<Body>, next: Next) -> Response {
    if !state.web.allow_request() {
        return (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests (rate_limit of --web.config.file)\n")
            .into_response();
    }
    let _permit = match &state.scrape_slots {
        Some(s) => match s.try_acquire() {
            Ok(p) => Some(p),
            Err(_) => {
                return (StatusCode::SERVICE_UNAVAILABLE, "too many parallel requests (see --web.max-requests)\n")
                    .into_response();
            }
        },
        None => None,
    };
    let auth = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if !state.web.check_basic_auth(auth).await {
        let mut r = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        return r;
    }
    next.run(req).await
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let mut timeout = state.collector_timeout;
    if let Some(secs) = headers
        .get("X-Prometheus-Scrape-Timeout-Seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
    {
        // Leave room to encode and send before the scraper gives up. (A huge value cannot shorten anything; the
        // comparison also keeps absurd values away from Duration's constructor.)
        if secs - 0.5 < timeout.as_secs_f64() {
            timeout = Duration::from_secs_f64((secs - 0.5).max(0.1));
        }
    }
    match shared_collection(&state, timeout).await {
        Some(body) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body.as_ref().clone())
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "collection did not finish\n").into_response(),
    }
}

/// The exposition text of a collection finishing within `timeout`: the one in flight when it finishes in time,
/// else a new one.
async fn shared_collection(state: &Arc<AppState>, timeout: Duration) -> Option<Arc<Vec<u8>>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut result = {
        let mut flight = state.flight.lock().unwrap_or_else(|p| p.into_inner());
        match flight.as_ref() {
            Some(f) if f.deadline <= deadline => {
                state.joined.fetch_add(1, Ordering::SeqCst);
                f.result.clone()
            }
            _ => {
                let (tx, rx) = watch::channel(None);
                let id = state.flight_ids.fetch_add(1, Ordering::SeqCst);
                *flight = Some(Flight { id, deadline, result: rx.clone() });
                // Its own task: the collection completes for the joiners even if the scrape that started it
                // goes away.
                let state = state.clone();
                tokio::spawn(async move {
                    let families = state.registry.scrape(timeout).await;
                    let mut body = crate::metrics::encode_text(&families);
                    body.extend_from_slice(self_metrics(&state).as_bytes());
                    let body = Arc::new(body);
                    // Later scrapes start afresh rather than take this (by then old) result.
                    let mut flight = state.flight.lock().unwrap_or_else(|p| p.into_inner());
                    if flight.as_ref().is_some_and(|f| f.id == id) {
                        *flight = None;
                    }
                    drop(flight);
                    let _ = tx.send(Some(body));
                });
                rx
            }
        }
    };
    // The registry stops at the deadline; the margin covers encoding. A collection task that died (it cannot
    // panic past the registry, but still) ends the wait instead of hanging it.
    let wait = result.wait_for(|r| r.is_some());
    match tokio::time::timeout_at(deadline + Duration::from_secs(5), wait).await {
        Ok(Ok(r)) => r.clone(),
        _ => None,
    }
}

/// The exporter's own series, appended to every collection: the standard `process_*` set (from /proc/self, not
/// `--path.procfs`) and `nodesleuth_http_requests_total`.
fn self_metrics(state: &AppState) -> String {
    let mut out = process_metrics();
    out.push_str(
        "# HELP nodesleuth_http_requests_total HTTP requests answered, by handler (metrics, healthz, landing, \
         other) and status code.\n# TYPE nodesleuth_http_requests_total counter\n",
    );
    for ((handler, code), n) in state.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        out.push_str(&format!("nodesleuth_http_requests_total{{code=\"{code}\",handler=\"{handler}\"}} {n}\n"));
    }
    out
}

/// `process_*` as the Prometheus client libraries export them. A value that cannot be read is left out.
pub fn process_metrics() -> String {
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
        }
    };
    // SAFETY: sysconf has no preconditions.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // Fields after the command name, which is in parentheses and may contain anything.
    let fields: Vec<&str> =
        stat.as_deref().and_then(|s| s.rfind(')').map(|i| s[i + 1..].split_whitespace().collect())).unwrap_or_default();
    // proc(5) numbers fields from 1 with the state as field 3: field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let ticks = (ticks > 0).then_some(ticks as f64);
    let cpu = field(14).zip(field(15)).zip(ticks).map(|((u, s), t)| (u + s) / t);
    put("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", cpu);
    put(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        field(24).filter(|_| page > 0).map(|p| p * page as f64),
    );
    put("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", field(23));
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<f64>().ok()));
    let start = field(22).zip(ticks).zip(boot).map(|((st, t), b)| b + st / t);
    put("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch in seconds.", start);
    let fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
    put("process_open_fds", "gauge", "Number of open file descriptors.", fds);
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    let max = (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur as f64);
    put("process_max_fds", "gauge", "Maximum number of open file descriptors.", max);
    out
}

async fn landing(State(state): State<Arc<AppState>>) -> Html<String> {
    let collectors = state.registry.collector_names().iter().map(|c| format!("<li>{c}</li>")).collect::<String>();
    Html(format!(
        "<!doctype html><html><head><title>nodesleuth</title></head><body>\
         <h1>nodesleuth {}</h1><p>Prometheus exporter for Kubernetes node failures.</p>\
         <p><a href=\"{}\">Metrics</a> · <a href=\"/healthz\">Health</a></p>\
         <h2>Enabled collectors</h2><ul>{collectors}</ul></body></html>",
        env!("CARGO_PKG_VERSION"),
        state.telemetry_path
    ))
}

/// Binds the listener. `[::]` is dual-stack (IPV6_V6ONLY off, whatever the sysctl says); on a host without IPv6 it
/// falls back to `0.0.0.0` and says so once.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        match bind_socket(addr, true) {
            Ok(l) => return Ok(l),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)) => {
                tracing::warn!(error = %e, "no IPv6 on this host: listening on IPv4 addresses only");
                return bind_socket(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()), false);
            }
            Err(e) => return Err(e),
        }
    }
    bind_socket(addr, false)
}

fn bind_socket(addr: SocketAddr, dual_stack: bool) -> std::io::Result<tokio::net::TcpListener> {
    use std::os::fd::AsRawFd;
    let socket = if addr.is_ipv6() { tokio::net::TcpSocket::new_v6()? } else { tokio::net::TcpSocket::new_v4()? };
    socket.set_reuseaddr(true)?;
    if dual_stack {
        let off: libc::c_int = 0;
        // SAFETY: a valid socket, a c_int option value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&off as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Serves until SIGTERM or SIGINT, then stops accepting and lets in-flight requests finish (up to 10 s).
pub async fn serve(app: Router, cfg: &ServerConfig) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let listener = bind(cfg.listen).map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    let tls = cfg.web.current().tls.is_some();
    tracing::info!(address = %listener.local_addr()?, tls, "listening");
    // Certificate rotation: check the web config's files on a timer, off the runtime's threads.
    let reloader = cfg.web.path().map(|_| {
        let web = cfg.web.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::webconfig::RELOAD_CHECK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let web = web.clone();
                let _ = tokio::task::spawn_blocking(move || web.reload_if_changed()).await;
            }
        })
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        // The configuration current at accept time: a rotated certificate serves new connections.
        let tls = cfg.web.current().tls.clone();
        let builder = auto::Builder::new(TokioExecutor::new());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let result = match tls {
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            watcher.watch(builder.serve_connection(TokioIo::new(s), service).into_owned()).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
                None => watcher.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned()).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with error");
            }
        });
    }
    tracing::info!("shutting down");
    if let Some(r) = reloader {
        r.abort();
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("in-flight requests did not finish in 10 s"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Condvar, Mutex};

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::metrics::Sink;
    use crate::registry::{CollectError, Collector, HostPaths, ScrapeContext};

    /// Blocks every collection until released, so that scrapes pile up; counts its runs and says when one is
    /// parked.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        parked: Arc<AtomicBool>,
        runs: Arc<AtomicU64>,
    }
    impl Gate {
        fn release(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }
        async fn wait_parked(&self) {
            while !self.parked.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    impl Collector for Gate {
        fn name(&self) -> &'static str {
            "gate"
        }
        fn collect(&self, _: &ScrapeContext, sink: &mut Sink) -> Result<(), CollectError> {
            let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            self.parked.store(true, Ordering::SeqCst);
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            sink.gauge("test_gate_run", "which run of the collector this is", &[], run as f64);
            Ok(())
        }
    }

    fn setup(max_requests: usize, gate: &Gate) -> (Router, Arc<AppState>) {
        let host = HostPaths {
            procfs: "/proc".into(),
            rootfs: "/".into(),
            pod_logs: "/x".into(),
            container_logs: "/x".into(),
        };
        let cfg = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            telemetry_path: "/metrics".into(),
            max_requests,
            collector_timeout: Duration::from_secs(30),
            web: WebConfig::default(),
        };
        build(Registry::new(host, vec![Arc::new(gate.clone())]), &cfg)
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    async fn body(resp: Response) -> String {
        String::from_utf8(axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_beyond_max_requests_get_503() {
        let gate = Gate::default();
        let (app, _) = setup(1, &gate);
        let first = tokio::spawn(app.clone().oneshot(get("/metrics")));
        // Once the first scrape is parked in the gate it holds the only slot.
        gate.wait_parked().await;
        let second = app.clone().oneshot(get("/metrics")).await.unwrap();
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE, "a second parallel scrape is refused");
        // /healthz is not limited.
        assert_eq!(app.clone().oneshot(get("/healthz")).await.unwrap().status(), StatusCode::OK);
        gate.release();
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        // The slot is free again.
        assert_eq!(app.oneshot(get("/metrics")).await.unwrap().status(), StatusCode::OK);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_one_collection() {
        let gate = Gate::default();
        let (app, state) = setup(0, &gate);
        let scrapes: Vec<_> = (0..50).map(|_| tokio::spawn(app.clone().oneshot(get("/metrics")))).collect();
        gate.wait_parked().await;
        // Every other scrape has joined the one collection in flight before it is let go.
        while state.joined.load(Ordering::SeqCst) < 49 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        gate.release();
        let mut bodies = Vec::new();
        for s in scrapes {
            let resp = s.await.unwrap().unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            bodies.push(body(resp).await);
        }
        assert_eq!(gate.runs.load(Ordering::SeqCst), 1, "50 concurrent scrapes, one collection");
        assert!(bodies[0].contains("test_gate_run 1"), "{}", bodies[0]);
        assert!(bodies.iter().all(|b| *b == bodies[0]), "every scrape gets the same body");
        // Once it is done, the next scrape collects afresh.
        let next = body(app.oneshot(get("/metrics")).await.unwrap()).await;
        assert!(next.contains("test_gate_run 2"), "{next}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shorter_deadline_does_not_wait_for_a_longer_collection() {
        let gate = Gate::default();
        let (app, state) = setup(0, &gate);
        let long = tokio::spawn(app.clone().oneshot(get("/metrics")));
        gate.wait_parked().await;
        // 0.7 s scrape timeout → a 0.2 s collection deadline, far shorter than the 30 s one in flight: it does not
        // join; its own collection reports the busy collector as failed, on time.
        let req = Request::get("/metrics").header("X-Prometheus-Scrape-Timeout-Seconds", "0.7").body(Body::empty());
        let short = app.clone().oneshot(req.unwrap()).await.unwrap();
        assert_eq!(short.status(), StatusCode::OK);
        let text = body(short).await;
        assert!(text.contains("nodesleuth_scrape_collector_success{collector=\"gate\"} 0"), "{text}");
        assert_eq!(state.joined.load(Ordering::SeqCst), 0);
        gate.release();
        assert_eq!(long.await.unwrap().unwrap().status(), StatusCode::OK);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn self_metrics_and_request_counts() {
        let gate = Gate::default();
        gate.release();
        let (app, _) = setup(0, &gate);
        assert_eq!(app.clone().oneshot(get("/healthz")).await.unwrap().status(), StatusCode::OK);
        assert_eq!(app.clone().oneshot(get("/nope")).await.unwrap().status(), StatusCode::NOT_FOUND);
        assert_eq!(app.clone().oneshot(get("/")).await.unwrap().status(), StatusCode::OK);
        let text = body(app.oneshot(get("/metrics")).await.unwrap()).await;
        for line in [
            "nodesleuth_http_requests_total{code=\"200\",handler=\"healthz\"} 1",
            "nodesleuth_http_requests_total{code=\"404\",handler=\"other\"} 1",
            "nodesleuth_http_requests_total{code=\"200\",handler=\"landing\"} 1",
            "nodesleuth_http_requests_total{code=\"200\",handler=\"metrics\"} 0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        let value = |name: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
            line.rsplit_once(' ').unwrap().1.parse().unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(start > 1.5e9 && start <= now + 1.0, "start {start} now {now}");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(listen_addr(":9741").unwrap(), "[::]:9741".parse().unwrap());
        assert_eq!(listen_addr("127.0.0.1:1").unwrap(), "127.0.0.1:1".parse().unwrap());
        assert!(listen_addr("nonsense").unwrap_err().contains("invalid --web.listen-address \"nonsense\""));
    }

    #[tokio::test]
    async fn dual_stack_listener_takes_ipv4_and_ipv6() {
        let l = bind("[::]:0".parse().unwrap()).unwrap();
        let port = l.local_addr().unwrap().port();
        for addr in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
            let (c, a) = tokio::join!(tokio::net::TcpStream::connect(&addr), l.accept());
            c.unwrap_or_else(|e| panic!("{addr}: {e}"));
            a.unwrap();
        }
    }
}

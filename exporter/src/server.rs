//! The HTTP side: landing page, `/healthz`, the metrics endpoint, gzip, a bound on parallel scrapes, optional TLS
//! and basic auth, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Semaphore;

use crate::registry::Registry;
use crate::webconfig::{BasicAuth, WebConfig};

pub struct ServerConfig {
    pub listen: SocketAddr,
    pub telemetry_path: String,
    pub max_requests: usize,
    pub collector_timeout: Duration,
    pub web: WebConfig,
}

struct AppState {
    registry: Registry,
    scrape_slots: Option<Semaphore>,
    collector_timeout: Duration,
    telemetry_path: String,
}

/// Builds the router (also used by tests without a socket).
pub fn router(registry: Registry, cfg: &ServerConfig) -> Router {
    let state = Arc::new(AppState {
        registry,
        scrape_slots: (cfg.max_requests > 0).then(|| Semaphore::new(cfg.max_requests)),
        collector_timeout: cfg.collector_timeout,
        telemetry_path: cfg.telemetry_path.clone(),
    });
    let mut app = Router::new().route(&cfg.telemetry_path, get(metrics)).route("/healthz", get(|| async { "ok\n" }));
    if cfg.telemetry_path != "/" {
        app = app.route("/", get(landing));
    }
    let mut app = app.with_state(state).layer(tower_http::compression::CompressionLayer::new().gzip(true));
    let headers: Vec<(HeaderName, HeaderValue)> = cfg
        .web
        .headers()
        .into_iter()
        .filter_map(|(k, v)| Some((HeaderName::try_from(k).ok()?, HeaderValue::try_from(v).ok()?)))
        .collect();
    if !headers.is_empty() {
        let headers = Arc::new(headers);
        app = app.layer(middleware::from_fn(move |req: Request<Body>, next: Next| {
            let headers = headers.clone();
            async move {
                let mut resp = next.run(req).await;
                for (k, v) in headers.iter() {
                    resp.headers_mut().insert(k.clone(), v.clone());
                }
                resp
            }
        }));
    }
    if let Some(auth) = BasicAuth::new(cfg.web.basic_auth_users.clone()) {
        app = app.layer(middleware::from_fn(move |req: Request<Body>, next: Next| {
            let auth = auth.clone();
            async move {
                let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
                let ok = tokio::task::spawn_blocking(move || auth.check(header.as_deref())).await.unwrap_or(false);
                if ok {
                    next.run(req).await
                } else {
                    let mut r = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
                    r
                }
            }
        }));
    }
    app
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let _permit = match &state.scrape_slots {
        Some(s) => match s.try_acquire() {
            Ok(p) => Some(p),
            Err(_) => {
                return (StatusCode::SERVICE_UNAVAILABLE, "too many parallel scrapes (see --web.max-requests)\n")
                    .into_response();
            }
        },
        None => None,
    };
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
    let families = state.registry.scrape(timeout).await;
    let body = crate::metrics::encode_text(&families);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
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

/// Serves until SIGTERM or SIGINT, then stops accepting and lets in-flight requests finish (up to 10 s).
pub async fn serve(app: Router, cfg: &ServerConfig) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let tls = cfg.web.tls_acceptor()?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    tracing::info!(address = %listener.local_addr()?, tls = tls.is_some(), "listening");
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
        let tls = tls.clone();
        let builder = auto::Builder::new(TokioExecutor::new());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let result = match tls {
                Some(acceptor) => match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                    Ok(Ok(s)) => watcher.watch(builder.serve_connection(TokioIo::new(s), service).into_owned()).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
                None => watcher.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned()).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with error");
            }
        });
    }
    tracing::info!("shutting down");
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
    use std::sync::{Arc, Condvar, Mutex};

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::metrics::Sink;
    use crate::registry::{CollectError, Collector, HostPaths, ScrapeContext};

    /// Blocks every scrape until released, so that scrapes pile up; says when one is parked.
    struct Gate(Arc<(Mutex<bool>, Condvar)>, Arc<std::sync::atomic::AtomicBool>);
    impl Collector for Gate {
        fn name(&self) -> &'static str {
            "gate"
        }
        fn collect(&self, _: &ScrapeContext, sink: &mut Sink) -> Result<(), CollectError> {
            self.1.store(true, std::sync::atomic::Ordering::SeqCst);
            let (lock, cv) = &*self.0;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            sink.gauge("test_gate", "gate", &[], 1.0);
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_beyond_max_requests_get_503() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let host = HostPaths {
            procfs: "/proc".into(),
            rootfs: "/".into(),
            pod_logs: "/x".into(),
            container_logs: "/x".into(),
        };
        let cfg = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            telemetry_path: "/metrics".into(),
            max_requests: 1,
            collector_timeout: Duration::from_secs(30),
            web: WebConfig::default(),
        };
        let parked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let app = router(Registry::new(host, vec![Arc::new(Gate(gate.clone(), parked.clone()))]), &cfg);
        let get = || Request::get("/metrics").body(Body::empty()).unwrap();
        let first = tokio::spawn(app.clone().oneshot(get()));
        // Once the first scrape is parked in the gate it holds the only slot.
        while !parked.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let second = app.clone().oneshot(get()).await.unwrap();
        assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE, "a second parallel scrape is refused");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        // The slot is free again.
        assert_eq!(app.oneshot(get()).await.unwrap().status(), StatusCode::OK);
    }
}

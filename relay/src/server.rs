//! The HTTP side: routes, inbound authentication, body limits, strict parsing, and mapping delivery outcomes to
//! the status codes Alertmanager acts on (2xx done, 5xx retry, 4xx give up).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;

use crate::alert::Notification;
use crate::config::InboundAuth;
use crate::dispatch::{Outcome, Worker};
use crate::metrics::Metrics;

pub(crate) struct AppState {
    pub workers: HashMap<String, Arc<Worker>>,
    pub auth: HashMap<String, InboundAuth>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
    pub max_wait: Duration,
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/alertmanager/{target}", post(webhook))
        .route("/dingtalk/{target}/send", post(webhook))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], app.metrics.render()).into_response()
}

fn reply(status: StatusCode, target: &str, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({"status": kind, "target": target, "message": message});
    (status, axum::Json(body)).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Length is not secret-dependent in a useful way; compare all bytes of the expected value regardless.
    let mut diff = (a.len() ^ b.len()) as u8 | u8::from(a.len() != b.len());
    for (i, x) in b.iter().enumerate() {
        diff |= x ^ a.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

fn authorised(auth: &InboundAuth, headers: &HeaderMap) -> Result<(), &'static str> {
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match auth {
        InboundAuth::None => Ok(()),
        InboundAuth::Bearer(token) => {
            let Some(given) = given.and_then(|g| g.strip_prefix("Bearer ")) else {
                return Err("missing bearer token");
            };
            if constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) {
                Ok(())
            } else {
                Err("wrong bearer token")
            }
        }
        InboundAuth::Basic { username, password } => {
            let Some(b64) = given.and_then(|g| g.strip_prefix("Basic ")) else {
                return Err("missing basic credentials");
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| "malformed basic credentials")?;
            let text = String::from_utf8(decoded).map_err(|_| "malformed basic credentials")?;
            let (u, p) = text.split_once(':').ok_or("malformed basic credentials")?;
            let user_ok = constant_time_eq(u.as_bytes(), username.as_bytes());
            let pass_ok = constant_time_eq(p.as_bytes(), password.expose().as_bytes());
            if user_ok & pass_ok { Ok(()) } else { Err("wrong basic credentials") }
        }
    }
}

async fn webhook(
    State(app): State<Arc<AppState>>,
    Path(target): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let reject = |reason: &str| app.metrics.inbound_rejected.with_label_values(&[reason]).inc();
    let Some(worker) = app.workers.get(&target) else {
        reject("unknown_target");
        return reply(StatusCode::NOT_FOUND, &target, "error", "no such target in the relay configuration");
    };
    let target = worker.name();
    if let Err(why) = authorised(&app.auth[target], &headers) {
        reject("unauthorized");
        tracing::warn!(relay_target = %target, reason = why, "refused an unauthenticated webhook request");
        let mut resp = reply(StatusCode::UNAUTHORIZED, target, "error", why);
        let challenge = match &app.auth[target] {
            InboundAuth::Basic { .. } => "Basic realm=\"nodesleuth-relay\"",
            _ => "Bearer realm=\"nodesleuth-relay\"",
        };
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        return resp;
    }
    let too_large = || {
        reject("too_large");
        reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            target,
            "error",
            &format!("request body exceeds the limit of {} bytes (server.max_body_bytes)", app.max_body_bytes),
        )
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > app.max_body_bytes as u64) {
        return too_large();
    }
    let bytes = match axum::body::to_bytes(body, app.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return too_large(),
    };
    let notification: Notification = match serde_json::from_slice(&bytes) {
        Ok(n) => n,
        Err(e) => {
            reject("malformed");
            return reply(
                StatusCode::BAD_REQUEST,
                target,
                "error",
                &format!("body is not an Alertmanager webhook notification: {e}"),
            );
        }
    };
    app.metrics.notifications_received.with_label_values(&[target]).inc();
    let outcome = worker.deliver(&notification, app.max_wait).await;
    let count = |o: &str| app.metrics.notifications.with_label_values(&[target, o]).inc();
    match outcome {
        Outcome::Delivered { alerts, duplicates } => {
            count("delivered");
            let body = serde_json::json!({"status": "success", "target": target, "alerts": alerts,
                "already_delivered_or_queued": duplicates});
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Outcome::Transient(f) => {
            count("transient_failure");
            let mut resp = reply(StatusCode::SERVICE_UNAVAILABLE, target, "retry", &f.to_string());
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            resp
        }
        Outcome::Permanent(f) => {
            count("permanent_failure");
            reply(StatusCode::UNPROCESSABLE_ENTITY, target, "error", &f.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
    }
}

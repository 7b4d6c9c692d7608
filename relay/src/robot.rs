//! Talking to DingTalk and WeCom group robots: DingTalk request signing, sending one message, and classifying the
//! answer into accepted / transient (retry) / rate limited / permanent.
//!
//! Neither the robot URL (it carries the access token or key) nor the signing secret is ever put into an error or
//! a log line: errors from the HTTP client are stripped of their URL, and the platform's error message is scrubbed
//! of the secrets before it is passed on.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{RobotKind, Secret};

/// Why a message was not accepted. The label values of `nodesleuth_relay_send_failures_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    Network,
    Timeout,
    Http5xx,
    Http4xx,
    BadResponse,
    PlatformBusy,
    RateLimited,
    BackingOff,
    BadToken,
    SignatureMismatch,
    ContentRejected,
    RenderFailed,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Network => "network",
            FailureReason::Timeout => "timeout",
            FailureReason::Http5xx => "http_5xx",
            FailureReason::Http4xx => "http_4xx",
            FailureReason::BadResponse => "bad_response",
            FailureReason::PlatformBusy => "platform_busy",
            FailureReason::RateLimited => "rate_limited",
            FailureReason::BackingOff => "backing_off",
            FailureReason::BadToken => "bad_token",
            FailureReason::SignatureMismatch => "signature_mismatch",
            FailureReason::ContentRejected => "content_rejected",
            FailureReason::RenderFailed => "render_failed",
        }
    }

    /// Worth retrying later (Alertmanager gets a 503).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            FailureReason::Network
                | FailureReason::Timeout
                | FailureReason::Http5xx
                | FailureReason::BadResponse
                | FailureReason::PlatformBusy
                | FailureReason::RateLimited
                | FailureReason::BackingOff
        )
    }

    /// Every later message to this robot would fail the same way.
    pub fn affects_robot(self) -> bool {
        matches!(self, FailureReason::BadToken | FailureReason::SignatureMismatch | FailureReason::Http4xx)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: FailureReason,
    /// Human-readable detail, free of secrets.
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}

/// The DingTalk signature for `timestamp_ms`: base64(HMAC-SHA256(key = secret, message = "<ts>\n<secret>")).
/// The caller URL-encodes it.
pub fn dingtalk_sign(timestamp_ms: i64, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

pub struct Robot {
    kind: RobotKind,
    url: url::Url,
    secret: Option<Secret>,
    client: reqwest::Client,
    /// Strings that must never leave the process: token/key values, the secret, the URL.
    scrub: Vec<String>,
}

impl Robot {
    pub fn new(kind: RobotKind, url: &Secret, secret: Option<Secret>, timeout: Duration) -> Result<Self, String> {
        let parsed = url::Url::parse(url.expose()).map_err(|e| format!("url is not a valid URL ({e})"))?;
        if parsed.scheme() != "http" && parsed.scheme() != "https" {
            return Err("url must be http or https".to_string());
        }
        let token_param = match kind {
            RobotKind::Dingtalk => "access_token",
            RobotKind::Wecom => "key",
        };
        let mut scrub: Vec<String> = parsed
            .query_pairs()
            .filter(|(k, v)| !v.is_empty() && (k == token_param || k == "access_token" || k == "key"))
            .map(|(_, v)| v.into_owned())
            .collect();
        if scrub.is_empty() {
            return Err(format!("url has no {token_param} query parameter"));
        }
        if kind == RobotKind::Wecom && secret.is_some() {
            return Err("secret (request signing) exists only for kind: dingtalk".to_string());
        }
        if let Some(s) = &secret {
            if s.expose().is_empty() {
                return Err("secret is empty".to_string());
            }
            scrub.push(s.expose().to_string());
        }
        scrub.push(url.expose().to_string());
        scrub.retain(|s| s.len() >= 3);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("nodesleuth-relay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {}", e.without_url()))?;
        Ok(Robot { kind, url: parsed, secret, client, scrub })
    }

    /// Remove every secret from a text that is about to be logged or returned.
    pub fn scrub(&self, text: &str) -> String {
        let mut t = text.to_string();
        for s in &self.scrub {
            if t.contains(s.as_str()) {
                t = t.replace(s.as_str(), "***");
            }
        }
        t
    }

    fn request_url(&self) -> url::Url {
        self.request_url_at(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0))
    }

    /// The URL to post to, signed (DingTalk with a secret) for `ts` milliseconds since the epoch.
    fn request_url_at(&self, ts: i64) -> url::Url {
        let mut url = self.url.clone();
        if let (RobotKind::Dingtalk, Some(secret)) = (self.kind, &self.secret) {
            let sign = dingtalk_sign(ts, secret.expose());
            url.query_pairs_mut().append_pair("timestamp", &ts.to_string()).append_pair("sign", &sign);
        }
        url
    }

    /// Send one message body; Ok when the robot answered HTTP 200 and errcode 0.
    pub async fn send(&self, body: Vec<u8>) -> Result<(), Failure> {
        let resp = self
            .client
            .post(self.request_url())
            .header(reqwest::header::CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_failure(e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.transport_failure(e))?;
        let snippet = self.scrub(&String::from_utf8_lossy(&bytes[..bytes.len().min(300)]));
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(Failure {
                reason: if status.is_server_error() { FailureReason::Http5xx } else { FailureReason::RateLimited },
                detail: format!("robot answered HTTP {status}: {snippet}"),
            });
        }
        if !status.is_success() {
            return Err(Failure {
                reason: FailureReason::Http4xx,
                detail: format!("robot answered HTTP {status}: {snippet}"),
            });
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            errcode: i64,
            #[serde(default)]
            errmsg: String,
        }
        let answer: Answer = serde_json::from_slice(&bytes).map_err(|_| Failure {
            reason: FailureReason::BadResponse,
            detail: format!("robot answered HTTP {status} without an errcode: {snippet}"),
        })?;
        if answer.errcode == 0 {
            return Ok(());
        }
        let reason = classify(self.kind, answer.errcode);
        Err(Failure {
            reason,
            detail: format!("{} errcode {}: {}", self.kind.as_str(), answer.errcode, self.scrub(&answer.errmsg)),
        })
    }

    fn transport_failure(&self, e: reqwest::Error) -> Failure {
        let reason = if e.is_timeout() { FailureReason::Timeout } else { FailureReason::Network };
        let e = e.without_url();
        let mut detail = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            detail.push_str(&format!(": {s}"));
            src = s.source();
        }
        Failure { reason, detail: self.scrub(&detail) }
    }
}

/// Map a platform error code to what the relay does about it.
pub fn classify(kind: RobotKind, errcode: i64) -> FailureReason {
    match (kind, errcode) {
        (_, -1) => FailureReason::PlatformBusy,
        (RobotKind::Dingtalk, 130101) | (RobotKind::Wecom, 45009) => FailureReason::RateLimited,
        (RobotKind::Dingtalk, 300001 | 300005 | 400101 | 400102) => FailureReason::BadToken,
        (RobotKind::Wecom, 93000 | 40001 | 40014 | 42001) => FailureReason::BadToken,
        (RobotKind::Dingtalk, 310000) => FailureReason::SignatureMismatch,
        _ => FailureReason::ContentRejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_timestamp_and_secret() {
        // Independent recomputation with the primitives, to catch argument order mistakes.
        let secret = "SEC0123456789abcdef";
        let ts = 1_700_000_000_123i64;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(b"1700000000123\nSEC0123456789abcdef");
        let expect = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(dingtalk_sign(ts, secret), expect);
        assert_ne!(dingtalk_sign(ts + 1, secret), expect);
    }

    /// Known-answer vector computed outside this code base, with OpenSSL and Python's standard library:
    /// ```sh
    /// secret='SECnodesleuth0123456789abcdefKnownAnswer'; ts=1764547200002
    /// printf '%s\n%s' "$ts" "$secret" | openssl dgst -sha256 -hmac "$secret" -binary | base64
    /// #   -> P2N+UcxAWV0DOKfrljRx53HCXpscIk8aqvp/yVWcGRY=
    /// python3 -c 'import sys, urllib.parse; print(urllib.parse.quote_plus(sys.argv[1]))' "<that>"
    /// #   -> P2N%2BUcxAWV0DOKfrljRx53HCXpscIk8aqvp%2FyVWcGRY%3D
    /// ```
    /// The timestamp was picked so that the signature contains '+', '/' and '=', which DingTalk needs URL-encoded.
    #[test]
    fn signature_matches_an_openssl_known_answer() {
        let secret = "SECnodesleuth0123456789abcdefKnownAnswer";
        let ts = 1_764_547_200_002i64;
        assert_eq!(dingtalk_sign(ts, secret), "P2N+UcxAWV0DOKfrljRx53HCXpscIk8aqvp/yVWcGRY=");
        let r = Robot::new(
            RobotKind::Dingtalk,
            &Secret::new("https://oapi.example/robot/send?access_token=tok123"),
            Some(Secret::new(secret)),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            r.request_url_at(ts).as_str(),
            "https://oapi.example/robot/send?access_token=tok123&timestamp=1764547200002\
             &sign=P2N%2BUcxAWV0DOKfrljRx53HCXpscIk8aqvp%2FyVWcGRY%3D"
        );
    }

    #[test]
    fn signed_url_is_encoded_once() {
        let r = Robot::new(
            RobotKind::Dingtalk,
            &Secret::new("https://oapi.example/robot/send?access_token=tok123"),
            Some(Secret::new("SECxyz")),
            Duration::from_secs(1),
        )
        .unwrap();
        let url = r.request_url();
        let pairs: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into(), v.into())).collect();
        let ts: i64 = pairs.iter().find(|p| p.0 == "timestamp").unwrap().1.parse().unwrap();
        let sign = &pairs.iter().find(|p| p.0 == "sign").unwrap().1;
        assert_eq!(sign, &dingtalk_sign(ts, "SECxyz"));
        let raw = url.query().unwrap();
        let raw_sign = raw.split('&').find_map(|p| p.strip_prefix("sign=")).unwrap();
        assert!(!raw_sign.contains(['+', '/', '=']), "sign not URL-encoded: {raw}");
        let decoded: String =
            url::form_urlencoded::parse(format!("s={raw_sign}").as_bytes()).next().unwrap().1.into_owned();
        assert_eq!(&decoded, sign);
    }

    #[test]
    fn scrubs_secrets() {
        let r = Robot::new(
            RobotKind::Wecom,
            &Secret::new("https://qyapi.example/cgi-bin/webhook/send?key=abcd-1234"),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(r.scrub("invalid key abcd-1234!"), "invalid key ***!");
        assert!(Robot::new(RobotKind::Wecom, &Secret::new("https://x/send"), None, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn error_codes() {
        assert_eq!(classify(RobotKind::Dingtalk, 130101), FailureReason::RateLimited);
        assert_eq!(classify(RobotKind::Wecom, 45009), FailureReason::RateLimited);
        assert_eq!(classify(RobotKind::Dingtalk, 300005), FailureReason::BadToken);
        assert_eq!(classify(RobotKind::Wecom, 93000), FailureReason::BadToken);
        assert_eq!(classify(RobotKind::Dingtalk, 310000), FailureReason::SignatureMismatch);
        assert!(!classify(RobotKind::Dingtalk, 460101).is_transient());
        assert!(classify(RobotKind::Wecom, -1).is_transient());
    }
}

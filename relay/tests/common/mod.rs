//! Test parts: fake DingTalk/WeCom robot servers that enforce the documented protocol, a real Alertmanager
//! (Debian's `prometheus-alertmanager`), the relay in-process, and a log capture.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::time::Instant;

pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
pub const AMTOOL: &str = "/usr/bin/amtool";

// ---------------------------------------------------------------------------------------------------------------
// Log capture: one global subscriber for the test binary, writing into a buffer.

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for BufWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || BufWriter(b.clone()))
            .init();
        buf
    });
}

pub fn logs() -> String {
    String::from_utf8_lossy(&LOGS.get().expect("init_logs first").lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------------------------------------------------------
// Fake robots.

/// What the next requests (to any robot of the server) get instead of normal processing.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Process normally.
    Normal,
    /// Answer this HTTP status without processing.
    Status(u16),
    /// Answer nothing for this long (the relay's timeout should fire first), then 500.
    Hang(Duration),
    /// Answer HTTP 200 with this errcode.
    Errcode(i64),
}

#[derive(Debug, Clone)]
pub struct Accepted {
    pub robot: String,
    pub at: Instant,
    pub body: Value,
    pub raw_len: usize,
}

impl Accepted {
    /// The markdown text (DingTalk `text`, WeCom `content`).
    pub fn text(&self) -> &str {
        self.body["markdown"]["text"].as_str().or_else(|| self.body["markdown"]["content"].as_str()).unwrap_or("")
    }
}

#[derive(Default)]
struct RobotState {
    dingtalk: HashMap<String, (Option<String>, Option<String>)>,
    wecom: HashSet<String>,
    limit: usize,
    window: Duration,
    arrivals: HashMap<String, VecDeque<Instant>>,
    accepted: Vec<Accepted>,
    /// (robot, errcode) of every refusal.
    refused: Vec<(String, i64)>,
    rate_violations: usize,
    script: VecDeque<Behaviour>,
    requests: usize,
}

#[derive(Clone)]
pub struct Robots {
    pub addr: SocketAddr,
    state: Arc<Mutex<RobotState>>,
}

fn answer(code: i64, msg: &str) -> Response {
    (StatusCode::OK, axum::Json(json!({"errcode": code, "errmsg": msg}))).into_response()
}

impl Robots {
    /// A robot server enforcing `limit` messages per `window` per robot.
    pub async fn start(limit: usize, window: Duration) -> Robots {
        let state = Arc::new(Mutex::new(RobotState { limit, window, ..Default::default() }));
        let app = Router::new()
            .route("/robot/send", post(dingtalk))
            .route("/cgi-bin/webhook/send", post(wecom))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Robots { addr, state }
    }

    /// Register a DingTalk robot; `secret` enables signature checking, `keyword` the keyword security setting.
    pub fn add_dingtalk(&self, token: &str, secret: Option<&str>, keyword: Option<&str>) -> String {
        self.state
            .lock()
            .unwrap()
            .dingtalk
            .insert(token.to_string(), (secret.map(String::from), keyword.map(String::from)));
        format!("http://{}/robot/send?access_token={token}", self.addr)
    }

    pub fn add_wecom(&self, key: &str) -> String {
        self.state.lock().unwrap().wecom.insert(key.to_string());
        format!("http://{}/cgi-bin/webhook/send?key={key}", self.addr)
    }

    pub fn dingtalk_url(&self, token: &str) -> String {
        format!("http://{}/robot/send?access_token={token}", self.addr)
    }

    pub fn wecom_url(&self, key: &str) -> String {
        format!("http://{}/cgi-bin/webhook/send?key={key}", self.addr)
    }

    pub fn script(&self, steps: impl IntoIterator<Item = Behaviour>) {
        self.state.lock().unwrap().script.extend(steps);
    }

    pub fn accepted(&self, robot: &str) -> Vec<Accepted> {
        self.state.lock().unwrap().accepted.iter().filter(|a| a.robot == robot).cloned().collect()
    }

    pub fn refused(&self) -> Vec<(String, i64)> {
        self.state.lock().unwrap().refused.clone()
    }

    pub fn rate_violations(&self) -> usize {
        self.state.lock().unwrap().rate_violations
    }

    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests
    }

    /// The most messages accepted for `robot` within any `window`-long interval.
    pub fn max_in_window(&self, robot: &str, window: Duration) -> usize {
        let times: Vec<Instant> = self.accepted(robot).iter().map(|a| a.at).collect();
        let mut best = 0;
        for (i, t) in times.iter().enumerate() {
            let n = times[i..].iter().take_while(|u| u.duration_since(*t) < window).count();
            best = best.max(n);
        }
        best
    }
}

/// Apply the scripted behaviour; `Some(response)` when the request is not to be processed.
async fn scripted(state: &Arc<Mutex<RobotState>>) -> Option<Response> {
    let step = {
        let mut st = state.lock().unwrap();
        st.requests += 1;
        st.script.pop_front().unwrap_or(Behaviour::Normal)
    };
    match step {
        Behaviour::Normal => None,
        Behaviour::Status(code) => Some((StatusCode::from_u16(code).unwrap(), "scripted failure").into_response()),
        Behaviour::Hang(d) => {
            tokio::time::sleep(d).await;
            Some((StatusCode::INTERNAL_SERVER_ERROR, "hung").into_response())
        }
        Behaviour::Errcode(c) => Some(answer(c, "scripted errcode")),
    }
}

/// Rate limit check and bookkeeping of an accepted message. Returns false when over the limit.
fn admit(st: &mut RobotState, robot: &str, body: Value, raw_len: usize) -> bool {
    let now = Instant::now();
    let (limit, window) = (st.limit, st.window);
    let q = st.arrivals.entry(robot.to_string()).or_default();
    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
        q.pop_front();
    }
    if q.len() >= limit {
        st.rate_violations += 1;
        return false;
    }
    q.push_back(now);
    st.accepted.push(Accepted { robot: robot.to_string(), at: now, body, raw_len });
    true
}

fn refuse(st: &mut RobotState, robot: &str, code: i64, msg: &str) -> Response {
    st.refused.push((robot.to_string(), code));
    answer(code, msg)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// DingTalk's custom robot: `POST /robot/send?access_token=..[&timestamp=..&sign=..]`.
async fn dingtalk(
    State(state): State<Arc<Mutex<RobotState>>>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(r) = scripted(&state).await {
        return r;
    }
    let mut st = state.lock().unwrap();
    let token = q.get("access_token").cloned().unwrap_or_default();
    let robot = format!("ding:{token}");
    let Some((secret, keyword)) = st.dingtalk.get(&token).cloned() else {
        return refuse(&mut st, &robot, 300005, "token is not exist");
    };
    if let Some(secret) = secret {
        let (Some(ts), Some(sign)) = (q.get("timestamp"), q.get("sign")) else {
            return refuse(&mut st, &robot, 310000, "sign not match, more: [https://ding-doc.dingtalk.com/]");
        };
        let Ok(ts_ms) = ts.parse::<i64>() else {
            return refuse(&mut st, &robot, 310000, "invalid timestamp");
        };
        if (now_ms() - ts_ms).abs() > 3_600_000 {
            return refuse(&mut st, &robot, 310000, "invalid timestamp");
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{ts}\n{secret}").as_bytes());
        let expect = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        if *sign != expect {
            return refuse(&mut st, &robot, 310000, "sign not match");
        }
    }
    if body.len() > 20_000 {
        return refuse(&mut st, &robot, 460101, "message too long, exceed 20000 bytes");
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return refuse(&mut st, &robot, 400002, "invalid json");
    };
    let ok_shape = v["msgtype"] == "markdown"
        && v["markdown"]["title"].as_str().is_some_and(|s| !s.is_empty())
        && v["markdown"]["text"].as_str().is_some_and(|s| !s.is_empty())
        && (v.get("at").is_none()
            || (v["at"]["atMobiles"].is_array() && v["at"]["atUserIds"].is_array() && v["at"]["isAtAll"].is_boolean()));
    if !ok_shape {
        return refuse(&mut st, &robot, 40035, "invalid parameter");
    }
    if let Some(k) = keyword {
        let text = v["markdown"]["text"].as_str().unwrap_or("");
        let title = v["markdown"]["title"].as_str().unwrap_or("");
        if !text.contains(&k) && !title.contains(&k) {
            return refuse(&mut st, &robot, 310000, "keywords not in content");
        }
    }
    if !admit(&mut st, &robot, v, body.len()) {
        return refuse(&mut st, &robot, 130101, "send too fast, exceed 20 times per minute");
    }
    answer(0, "ok")
}

/// WeCom's group robot: `POST /cgi-bin/webhook/send?key=..`.
async fn wecom(
    State(state): State<Arc<Mutex<RobotState>>>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(r) = scripted(&state).await {
        return r;
    }
    let mut st = state.lock().unwrap();
    let key = q.get("key").cloned().unwrap_or_default();
    let robot = format!("wecom:{key}");
    if !st.wecom.contains(&key) {
        return refuse(&mut st, &robot, 93000, "invalid webhook url");
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return refuse(&mut st, &robot, 40001, "invalid json");
    };
    let Some(content) = v["markdown"]["content"].as_str().filter(|_| v["msgtype"] == "markdown") else {
        return refuse(&mut st, &robot, 40008, "invalid message type");
    };
    if content.len() > 4096 {
        return refuse(&mut st, &robot, 40058, "markdown.content exceed max length 4096");
    }
    if !admit(&mut st, &robot, v.clone(), body.len()) {
        return refuse(&mut st, &robot, 45009, "api freq out of limit");
    }
    answer(0, "ok")
}

// ---------------------------------------------------------------------------------------------------------------
// Real Alertmanager.

pub struct Alertmanager {
    pub url: String,
    child: tokio::process::Child,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn require_binaries() {
    for b in [ALERTMANAGER, AMTOOL] {
        assert!(
            Path::new(b).exists(),
            "{b} is missing: these tests need Debian's Alertmanager 0.25 \
             (apt-get install -y prometheus-alertmanager)"
        );
    }
}

/// The route/receiver part of an Alertmanager config with fast timers.
pub fn am_config(group_by: &str, receivers: &[(&str, String)]) -> String {
    let mut routes = String::new();
    let mut recv = String::new();
    for (i, (name, webhook)) in receivers.iter().enumerate() {
        routes.push_str(&format!("    - receiver: {name}\n      continue: true\n"));
        let _ = i;
        recv.push_str(&format!("  - name: {name}\n    webhook_configs:\n{webhook}"));
    }
    format!(
        "route:\n  receiver: blackhole\n  group_by: {group_by}\n  group_wait: 1s\n  group_interval: 1s\n  \
         repeat_interval: 1h\n  routes:\n{routes}receivers:\n  - name: blackhole\n{recv}"
    )
}

/// One `webhook_configs` entry.
pub fn webhook(url: &str, bearer: Option<&str>) -> String {
    let mut s = format!("      - url: {url}\n        send_resolved: true\n");
    if let Some(t) = bearer {
        s.push_str(&format!("        http_config:\n          authorization:\n            credentials: {t}\n"));
    }
    s
}

impl Alertmanager {
    pub async fn start(config: &str) -> Alertmanager {
        require_binaries();
        let mut last_err = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let cfg = dir.path().join("alertmanager.yml");
            std::fs::write(&cfg, config).unwrap();
            let port = free_port();
            let url = format!("http://127.0.0.1:{port}");
            let log = std::fs::File::create(dir.path().join("am.log")).unwrap();
            let child = tokio::process::Command::new(ALERTMANAGER)
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!("--web.external-url={url}"))
                .arg("--cluster.listen-address=")
                .arg("--log.level=debug")
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {ALERTMANAGER}: {e}"));
            let mut am = Alertmanager { url, child, dir };
            let client = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = am.child.try_wait() {
                    last_err = format!("alertmanager exited with {status}: {}", am.logs());
                    break;
                }
                if let Ok(r) = client.get(format!("{}/-/ready", am.url)).send().await
                    && r.status().is_success()
                {
                    return am;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if last_err.is_empty() {
                last_err = format!("alertmanager not ready after 30s: {}", am.logs());
            }
        }
        panic!("{last_err}");
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("am.log")).unwrap_or_default()
    }

    /// POST alerts through the v2 API, in one request.
    pub async fn post_alerts(&self, alerts: &[Value]) {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(alerts).unwrap())
            .send()
            .await
            .expect("post alerts to alertmanager");
        assert!(r.status().is_success(), "alertmanager refused alerts: {}", r.status());
    }

    /// Run amtool against this Alertmanager.
    pub async fn amtool(&self, args: &[&str]) -> String {
        let out = tokio::process::Command::new(AMTOOL)
            .arg(format!("--alertmanager.url={}", self.url))
            .args(args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {AMTOOL}: {e}"));
        assert!(out.status.success(), "amtool {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// An alert for the v2 API.
pub fn alert(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Value {
    let l: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let a: serde_json::Map<String, Value> = annotations.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    json!({"labels": l, "annotations": a, "generatorURL": "http://prometheus.test:9090/graph?g0.expr=up"})
}

// ---------------------------------------------------------------------------------------------------------------
// Relay in-process.

pub struct TestRelay {
    pub running: nodesleuth_relay::RunningRelay,
    pub base: String,
    pub dir: tempfile::TempDir,
}

impl TestRelay {
    /// Start the relay with `yaml`; `files` are written into the config directory first.
    pub async fn start(yaml: &str, files: &[(&str, &str)]) -> TestRelay {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let path: PathBuf = dir.path().join("relay.yaml");
        std::fs::write(&path, yaml).unwrap();
        let relay = nodesleuth_relay::Relay::from_file(&path).unwrap_or_else(|e| panic!("relay config: {e}"));
        let running = relay.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let base = format!("http://{}", running.addr);
        TestRelay { running, base, dir }
    }

    pub fn url(&self, target: &str) -> String {
        format!("{}/alertmanager/{target}", self.base)
    }

    /// The value of one metric series (sum over series matching all `labels`), 0 when absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.running.metrics_text(), name, labels)
    }
}

pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut total = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))) {
            total += rest.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
        }
    }
    total
}

/// Poll `cond` until it holds; panic with `what` (and `diag()`) after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool, diag: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cond(), "timed out waiting for {what}\n{}", diag());
}

/// Count, for each uid `uid-NNNN-end` (0..n), how many accepted messages contain it.
pub fn uid_counts(messages: &[Accepted], n: usize) -> Vec<usize> {
    let mut counts = vec![0; n];
    for m in messages {
        let text = m.text();
        for (i, c) in counts.iter_mut().enumerate() {
            if text.contains(&uid(i)) {
                *c += text.matches(&uid(i)).count();
            }
        }
    }
    counts
}

pub fn uid(i: usize) -> String {
    format!("uid-{i:04}-end")
}

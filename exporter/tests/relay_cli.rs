//! `nodesleuth relay` through the real binary: the subcommand is wired, validates its configuration with a clear
//! error, serves health, and refuses unauthenticated webhooks. The relay's delivery behaviour is tested end to end
//! with the real Alertmanager in `relay/tests/`.

mod util;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn write_config(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("relay.yaml");
    std::fs::write(&p, body).unwrap();
    p
}

const VALID: &str = "targets:\n  ops:\n    kind: dingtalk\n    url: http://127.0.0.1:9/robot/send?access_token=abc\n    auth: {bearer_token: am-token}\n";

#[test]
fn check_config_accepts_valid_and_explains_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), VALID);
    let out = Command::new(env!("CARGO_BIN_EXE_nodesleuth"))
        .args(["relay", "--check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = write_config(dir.path(), "targets:\n  ops:\n    kind: telegram\n    url: http://x\n");
    let out = Command::new(env!("CARGO_BIN_EXE_nodesleuth"))
        .args(["relay", "--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("telegram"), "names the bad value: {err}");
    assert!(!err.contains("access_token"), "never logs a token: {err}");
}

#[test]
fn relay_serves_health_and_refuses_unauthenticated_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), VALID);
    let port = util::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodesleuth"))
        .args(["relay", "--config"])
        .arg(&cfg)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while util::http_get(port, "/healthz").is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let health = util::http_get(port, "/healthz");
    let unauth = post(port, "/alertmanager/ops", "{}");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(health.unwrap().0, 200);
    assert_eq!(unauth.0, 401, "{}", unauth.1);
}

fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, raw)
}

//! The HTTP side of the exporter, end to end with real clients: landing page and health, gzip, the
//! exporter-toolkit web config (TLS and bcrypt basic auth, checked with curl and an openssl-made certificate),
//! JSON logs, and graceful shutdown on SIGTERM.

mod util;

use std::process::Command;
use std::time::{Duration, Instant};

use util::{Exporter, http_get, http_request, require_tool};

fn only_tcp() -> Vec<&'static str> {
    vec!["--no-collector.ipvs", "--no-collector.memory", "--no-collector.systemd"]
}

#[test]
fn landing_page_health_and_gzip() {
    let e = Exporter::start(&only_tcp());
    let (status, body) = http_get(e.port, "/").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("href=\"/metrics\"") && body.contains("<li>tcp</li>"), "{body}");
    assert_eq!(http_get(e.port, "/healthz").unwrap(), (200, "ok\n".to_string()));
    assert_eq!(http_get(e.port, "/nope").unwrap().0, 404);
    // Scrape-timeout headers: absurd or malformed values are ignored, never fatal.
    for v in ["1e20", "-3", "NaN", "abc", "0.2"] {
        let (status, body) = http_request(e.port, "/metrics", &[("X-Prometheus-Scrape-Timeout-Seconds", v)]).unwrap();
        assert_eq!(status, 200, "header {v}");
        assert!(body.contains("nodesleuth_build_info"), "header {v}");
    }
    // gzip only when asked, and the payload really is gzip.
    let curl = require_tool("curl");
    let out = Command::new(&curl)
        .args(["-sS", "-D", "-", "-o", "/dev/null", "-H", "Accept-Encoding: gzip"])
        .arg(format!("http://127.0.0.1:{}/metrics", e.port))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(headers.contains("content-encoding: gzip"), "{headers}");
    let out = Command::new(&curl)
        .args(["-sS", "--compressed"])
        .arg(format!("http://127.0.0.1:{}/metrics", e.port))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("nodesleuth_build_info"), "decompressed body");
}

#[test]
fn web_config_tls_and_basic_auth_in_exporter_toolkit_format() {
    let openssl = require_tool("openssl");
    let curl = require_tool("curl");
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let st = Command::new(openssl)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    // Relative file names are relative to the config file, as in exporter-toolkit.
    let config = dir.path().join("web.yml");
    std::fs::write(
        &config,
        format!("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\nbasic_auth_users:\n  prometheus: {hash}\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"),
    )
    .unwrap();
    let mut args = only_tcp();
    let flag = format!("--web.config.file={}", config.display());
    args.push(&flag);
    let e = Exporter::start_when(&args, |port| {
        Command::new(&curl)
            .args(["-s", "-o", "/dev/null", "--cacert"])
            .arg(&crt)
            .arg(format!("https://127.0.0.1:{port}/healthz"))
            .status()
            .is_ok_and(|s| s.success())
    });
    let url = format!("https://127.0.0.1:{}/metrics", e.port);
    let code = |extra: &[&str]| -> String {
        let out = Command::new(&curl)
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&crt)
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(code(&[]), "401", "no credentials");
    assert_eq!(code(&["-u", "nobody:s3cret"]), "401", "unknown user");
    assert_eq!(code(&["-u", "prometheus:wrong"]), "401", "wrong password");
    assert_eq!(code(&["-u", "prometheus:s3cret"]), "200", "right password over TLS");
    let out = Command::new(&curl)
        .args(["-s", "-D", "-", "-u", "prometheus:s3cret", "--cacert"])
        .arg(&crt)
        .arg(&url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("nodesleuth_build_info") && text.to_ascii_lowercase().contains("x-content-type-options: nosniff"),
        "{text}"
    );
    // Kubelet probes: /healthz needs no credentials (it still needs TLS).
    let out = Command::new(&curl)
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&crt)
        .arg(format!("https://127.0.0.1:{}/healthz", e.port))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "/healthz without credentials");
    // Plain HTTP on the TLS port is refused.
    assert!(http_request(e.port, "/metrics", &[]).map(|(s, _)| s != 200).unwrap_or(true));
}

#[test]
fn metrics_can_be_served_at_the_root() {
    let mut args = only_tcp();
    args.push("--web.telemetry-path=/");
    let e = Exporter::start(&args);
    let (status, body) = http_get(e.port, "/").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("nodesleuth_build_info"), "{body}");
    let out = Command::new(env!("CARGO_BIN_EXE_nodesleuth")).args(["--web.telemetry-path=metrics"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("must start with /"));
}

#[test]
fn a_broken_web_config_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("web.yml");
    std::fs::write(&config, "tls_server_config:\n  cert_fiel: x\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodesleuth"))
        .arg(format!("--web.config.file={}", config.display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `cert_fiel`") && err.contains("web.yml"), "{err}");
}

#[test]
fn json_logs_and_graceful_shutdown_on_sigterm() {
    let mut args = only_tcp();
    args.push("--log.format=json");
    let mut e = Exporter::start(&args);
    e.scrape();
    let started = Instant::now();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(e.pid() as i32, libc::SIGTERM) }, 0);
    let status = e.wait_exit(Duration::from_secs(30)).expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(30));
    let log = e.log();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.iter().all(|l| l.starts_with('{') && l.ends_with('}')), "every line is a JSON object:\n{log}");
    assert!(log.contains("\"shutting down\""), "{log}");
}

/// Runs the binary to completion (it is expected to refuse to start) and returns (exit code, stderr).
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodesleuth"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nodesleuth {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn unknown_log_levels_are_refused_by_exporter_and_relay() {
    for args in [
        &["--log.level=verbose", "--web.listen-address=127.0.0.1:0"][..],
        &["relay", "--log.level=verbose", "--config=/nonexistent/relay.yaml"][..],
        &["--log.level=INFO", "--web.listen-address=127.0.0.1:0"][..],
    ] {
        let (code, err) = refused(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains("invalid --log.level") && err.contains("debug, info, warn, error"), "{args:?}: {err}");
    }
}

#[test]
fn bad_listen_addresses_are_reported_once_whatever_the_log_level() {
    for level in ["error", "info"] {
        let (code, err) = refused(&["--web.listen-address=nonsense", &format!("--log.level={level}")]);
        assert_ne!(code, Some(0));
        assert!(err.contains("invalid --web.listen-address") && err.contains("nonsense"), "{err}");
    }
    // A port in use: the OS error appears once, not once per layer of context.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("--web.listen-address={}", taken.local_addr().unwrap());
    let (code, err) = refused(&[&addr, "--log.level=error"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("cannot listen on"), "{err}");
    assert_eq!(err.matches("os error 98").count(), 1, "{err}");
    // The relay too.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relay.yaml");
    std::fs::write(&cfg, "targets:\n  ops:\n    kind: wecom\n    url: http://127.0.0.1:9/send?key=abc\n").unwrap();
    let (code, err) = refused(&["relay", &format!("--config={}", cfg.display()), &addr]);
    assert_ne!(code, Some(0));
    assert_eq!(err.matches("os error 98").count(), 1, "{err}");
}

#[test]
fn config_errors_do_not_repeat_their_cause() {
    let (_, err) = refused(&["--web.config.file=/nonexistent/web.yml", "--web.listen-address=127.0.0.1:0"]);
    assert!(err.contains("/nonexistent/web.yml"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    let (_, err) = refused(&["relay", "--check-config", "--config=/nonexistent/relay.yaml"]);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("relay.yaml");
    std::fs::write(&cfg, "targets: [\n").unwrap();
    let (_, err) = refused(&["relay", "--check-config", &format!("--config={}", cfg.display())]);
    let yaml = serde_norway::from_str::<nodesleuth_relay::config::FileConfig>("targets: [\n").unwrap_err().to_string();
    assert_eq!(err.matches(&yaml).count(), 1, "YAML error ({yaml}) once: {err}");
}

#[test]
fn colon_port_listens_on_ipv4_and_ipv6() {
    let port = util::free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nodesleuth"))
        .args(only_tcp())
        .arg(format!("--web.listen-address=:{port}"))
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let get6 = || -> Option<u16> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("::1", port)).ok()?;
        write!(s, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        raw.split_whitespace().nth(1)?.parse().ok()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(port, "/healthz").is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let v4 = http_get(port, "/healthz").map(|r| r.0).ok();
    let v6 = get6();
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert_eq!(v4, Some(200), "IPv4; log:\n{log}");
    assert_eq!(v6, Some(200), "IPv6 ([::1]) on the same port; log:\n{log}");
}

#[test]
fn own_process_and_request_metrics_are_exported() {
    let e = Exporter::start(&only_tcp());
    let _ = http_get(e.port, "/nope");
    let body = e.scrape();
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let v = util::sample(&body, name, &[]).unwrap_or_else(|| panic!("{name} missing"));
        assert!(v >= 0.0, "{name} {v}");
    }
    assert!(util::sample(&body, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    // The readiness probe's /healthz and the 404 were counted.
    assert!(
        util::sample(&body, "nodesleuth_http_requests_total", &[("handler", "healthz"), ("code", "200")]).unwrap()
            >= 1.0
    );
    assert_eq!(
        util::sample(&body, "nodesleuth_http_requests_total", &[("handler", "other"), ("code", "404")]),
        Some(1.0)
    );
    util::check_with_promtool(&body);
}

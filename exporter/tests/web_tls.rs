//! `--web.config.file` end to end over real TLS on loopback, with certificates made by `openssl` in each test:
//! client certificates (right CA, other CA, allowed and disallowed SANs, all five `client_auth_type`s), inline
//! PEM, cipher and curve restrictions actually enforced, `rate_limit`, certificate rotation while running, and
//! configurations refused with the offending key named. The configs are written here, modelled on the cases of
//! exporter-toolkit's own test data (not copied from it).

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use util::{Exporter, require_tool};

/// A scratch PKI made with the openssl CLI.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        require_tool("openssl");
        Pki { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl").args(args).current_dir(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A self-signed CA: `<name>.crt`, `<name>.key`.
    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }

    /// A leaf `<name>.crt`/`<name>.key` signed by `ca`, with the given SANs (openssl syntax) and usage.
    fn leaf(&self, name: &str, ca: &str, san: &str, usage: &str) {
        self.openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        std::fs::write(self.path(&format!("{name}.ext")), format!("subjectAltName={san}\nextendedKeyUsage={usage}\n"))
            .unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }

    /// The usual set: CA `ca` with a server certificate for 127.0.0.1, an allowed client, a client with another
    /// SAN, and a client of another CA with the allowed SAN.
    fn standard() -> Pki {
        let p = Pki::new();
        p.ca("ca");
        p.ca("otherca");
        p.leaf("server", "ca", "IP:127.0.0.1,DNS:localhost", "serverAuth");
        p.leaf("client", "ca", "DNS:prometheus.monitoring.svc", "clientAuth");
        p.leaf("intruder", "ca", "DNS:intruder.example,IP:10.9.9.9", "clientAuth");
        p.leaf("foreign", "otherca", "DNS:prometheus.monitoring.svc", "clientAuth");
        p.leaf("ipclient", "ca", "IP:10.1.2.3", "clientAuth");
        p
    }

    fn write_config(&self, text: &str) -> PathBuf {
        let p = self.path("web.yml");
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// curl against the exporter: the HTTP code ("000" when the connection or handshake failed) and stderr.
fn curl(port: u16, path: &str, pki: &Pki, client: Option<&str>, extra: &[&str]) -> (String, String) {
    let mut cmd = Command::new(require_tool("curl"));
    cmd.args(["-s", "-v", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "--cacert"])
        .arg(pki.path("ca.crt"));
    if let Some(c) = client {
        cmd.arg("--cert").arg(pki.path(&format!("{c}.crt"))).arg("--key").arg(pki.path(&format!("{c}.key")));
    }
    let out = cmd.args(extra).arg(format!("https://127.0.0.1:{port}{path}")).output().unwrap();
    (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

fn code(port: u16, path: &str, pki: &Pki, client: Option<&str>, extra: &[&str]) -> String {
    curl(port, path, pki, client, extra).0
}

fn start(config: &Path, ready_client: Option<&'static str>, pki: &Pki) -> Exporter {
    let flag = format!("--web.config.file={}", config.display());
    let args = ["--no-collector.ipvs", "--no-collector.memory", "--no-collector.systemd", "--no-collector.tcp", &flag];
    Exporter::start_when(&args, |port| code(port, "/healthz", pki, ready_client, &[]) == "200")
}

#[test]
fn mutual_tls_with_allowed_sans_and_rotation() {
    let pki = Pki::standard();
    let cfg = pki.write_config(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: [prometheus.monitoring.svc, 10.1.2.3]\n",
    );
    let e = start(&cfg, Some("client"), &pki);
    let port = e.port;
    assert_eq!(code(port, "/metrics", &pki, Some("client"), &[]), "200", "allowed DNS SAN, right CA");
    assert_eq!(code(port, "/metrics", &pki, Some("ipclient"), &[]), "200", "allowed IP SAN");
    assert_eq!(code(port, "/metrics", &pki, None, &[]), "000", "no client certificate");
    assert_eq!(code(port, "/metrics", &pki, Some("foreign"), &[]), "000", "right SAN, other CA");
    assert_eq!(code(port, "/metrics", &pki, Some("intruder"), &[]), "000", "right CA, SAN not allowed");
    assert_eq!(code(port, "/healthz", &pki, Some("intruder"), &[]), "000", "/healthz is behind TLS too");
    // Plain HTTP on the TLS port gets nothing useful.
    assert!(util::http_get(port, "/healthz").map(|(s, _)| s != 200).unwrap_or(true));

    // cert-manager style rotation: new certificate and key land under the running exporter.
    let subject = |stderr: &str| {
        stderr.lines().find_map(|l| l.split_once(" subject: ").map(|(_, s)| s.to_string())).unwrap_or_default()
    };
    assert!(subject(&curl(port, "/healthz", &pki, Some("client"), &[]).1).contains("CN=server"));
    pki.leaf("rotated", "ca", "IP:127.0.0.1", "serverAuth");
    for ext in ["crt", "key"] {
        let tmp = pki.path(&format!("server.{ext}.new"));
        std::fs::copy(pki.path(&format!("rotated.{ext}")), &tmp).unwrap();
        std::fs::rename(&tmp, pki.path(&format!("server.{ext}"))).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, stderr) = curl(port, "/metrics", &pki, Some("client"), &[]);
        if subject(&stderr).contains("CN=rotated") {
            assert_eq!(code, "200");
            break;
        }
        assert!(Instant::now() < deadline, "new connections never saw the rotated certificate; log:\n{}", e.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    // A broken new version keeps the running one, and is reported once.
    std::fs::write(pki.path("server.crt"), "not a certificate\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !e.log().contains("web config change is invalid") {
        assert!(Instant::now() < deadline, "broken certificate not noticed; log:\n{}", e.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(5)); // more than two checks
    assert_eq!(e.log().matches("web config change is invalid").count(), 1, "{}", e.log());
    let (code, stderr) = curl(port, "/metrics", &pki, Some("client"), &[]);
    assert_eq!(code, "200");
    assert!(subject(&stderr).contains("CN=rotated"), "{stderr}");
}

#[test]
fn verify_if_given_checks_sans_only_when_a_certificate_is_presented() {
    let pki = Pki::standard();
    let cfg = pki.write_config(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: ca.crt\n  \
         client_auth_type: VerifyClientCertIfGiven\n  client_allowed_sans: [prometheus.monitoring.svc]\n",
    );
    let e = start(&cfg, None, &pki);
    assert_eq!(code(e.port, "/metrics", &pki, None, &[]), "200", "no certificate given");
    assert_eq!(code(e.port, "/metrics", &pki, Some("client"), &[]), "200");
    assert_eq!(code(e.port, "/metrics", &pki, Some("intruder"), &[]), "000", "SAN not allowed");
    assert_eq!(code(e.port, "/metrics", &pki, Some("foreign"), &[]), "000", "other CA");
}

#[test]
fn unverified_client_certificate_modes_and_inline_pem() {
    let pki = Pki::standard();
    let read = |n: &str| std::fs::read_to_string(pki.path(n)).unwrap();
    let indent = |pem: String| pem.lines().map(|l| format!("    {l}\n")).collect::<String>();
    // RequireAnyClientCert: some certificate is required; it is not verified (as in Go).
    let cfg = pki.write_config(&format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}  client_auth_type: RequireAnyClientCert\n",
        indent(read("server.crt")),
        indent(read("server.key"))
    ));
    let e = start(&cfg, Some("client"), &pki);
    assert_eq!(code(e.port, "/metrics", &pki, None, &[]), "000", "a certificate is required");
    assert_eq!(code(e.port, "/metrics", &pki, Some("foreign"), &[]), "200", "any certificate");
    drop(e);
    // RequestClientCert: asked for, not required.
    let cfg = pki.write_config(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequestClientCert\n",
    );
    let e = start(&cfg, None, &pki);
    assert_eq!(code(e.port, "/metrics", &pki, None, &[]), "200");
    assert_eq!(code(e.port, "/metrics", &pki, Some("foreign"), &[]), "200");
    drop(e);
    // Inline client CA.
    let cfg = pki.write_config(&format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca: |\n{}",
        indent(read("ca.crt"))
    ));
    let e = start(&cfg, Some("client"), &pki);
    assert_eq!(code(e.port, "/metrics", &pki, Some("client"), &[]), "200");
    assert_eq!(code(e.port, "/metrics", &pki, Some("foreign"), &[]), "000");
}

#[test]
fn cipher_suites_and_curves_are_enforced() {
    let pki = Pki::standard();
    let cfg = pki.write_config(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  max_version: TLS12\n  \
         cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA]\n  \
         curve_preferences: [CurveP384, CurveP521]\n",
    );
    let e = start(&cfg, None, &pki);
    let p = e.port;
    assert_eq!(
        code(p, "/metrics", &pki, None, &["--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"]),
        "200"
    );
    assert_eq!(
        code(p, "/metrics", &pki, None, &["--tls-max", "1.2", "--ciphers", "ECDHE-ECDSA-AES256-GCM-SHA384"]),
        "000",
        "a suite not listed"
    );
    // (P-256 is offered too, for the P-256 certificate: TLS 1.2 clients apply their curve list to it.)
    let (c, log) = curl(p, "/metrics", &pki, None, &["--tls-max", "1.2", "--curves", "P-384:P-256"]);
    assert_eq!(c, "200", "{log}");
    assert_eq!(code(p, "/metrics", &pki, None, &["--curves", "X25519:P-256"]), "000", "curves not listed");
    assert_eq!(code(p, "/metrics", &pki, None, &["--tlsv1.3"]), "000", "max_version TLS12");
}

#[test]
fn rate_limit_answers_429_beyond_the_burst() {
    let pki = Pki::standard();
    let cfg = pki.write_config(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nrate_limit:\n  interval: 1h\n  burst: 2\n",
    );
    let e = start(&cfg, None, &pki);
    let codes: Vec<String> = (0..4).map(|_| code(e.port, "/metrics", &pki, None, &[])).collect();
    assert_eq!(codes, ["200", "200", "429", "429"]);
    assert_eq!(code(e.port, "/healthz", &pki, None, &[]), "200", "probes are not rate limited");
}

#[test]
fn toolkit_style_configs_load_or_are_refused_naming_the_key() {
    let pki = Pki::standard();
    let tls = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
    let hash = bcrypt::hash("x", 4).unwrap();
    let good = [
        String::new(),
        format!("{tls}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256, TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA]\n"),
        format!("{tls}  curve_preferences: [CurveP256, CurveP384, CurveP521, X25519]\n  prefer_server_cipher_suites: false\n"),
        format!("{tls}  min_version: TLS13\n  max_version: TLS13\n"),
        format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"),
        "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n    Strict-Transport-Security: max-age=31536000\n    Content-Security-Policy: \"default-src 'self'\"\n".to_string(),
        "rate_limit:\n  interval: 1s\n  burst: 0\n".to_string(),
        "rate_limit:\n  interval: 0\n".to_string(),
        format!("basic_auth_users:\n  alice: '{hash}'\n"),
        "tls_server_config: {}\n".to_string(),
    ];
    for text in &good {
        let cfg = pki.write_config(text);
        if let Err(e) = nodesleuth::webconfig::WebConfig::load(&cfg) {
            panic!("refused:\n{text}\n→ {e}");
        }
    }
    let bad = [
        (format!("{tls}  cipher_suites: [TLS_INVENTED_WITH_NOTHING]\n"), "cipher_suites"),
        (
            format!("{tls}  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n  max_version: TLS12\n"),
            "cipher_suites",
        ),
        (format!("{tls}  curve_preferences: [CurveP999]\n"), "curve_preferences"),
        (format!("{tls}  curve_preferences: [CurveP521]\n"), "curve_preferences"),
        (format!("{tls}  min_version: TLS14\n"), "min_version"),
        (format!("{tls}  max_version: TLS11\n"), "max_version"),
        (format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"), "needs client_ca_file or client_ca"),
        (format!("{tls}  client_auth_type: VerifyClientCertIfGiven\n"), "needs client_ca_file or client_ca"),
        (format!("{tls}  client_auth_type: Sometimes\n"), "client_auth_type"),
        (format!("{tls}  client_ca_file: ca.crt\n"), "NoClientCert"),
        (format!("{tls}  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [x]\n"), "client_allowed_sans"),
        (
            format!(
                "{tls}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  client_allowed_sans: []\n"
            ),
            "client_allowed_sans is empty",
        ),
        (
            format!(
                "{tls}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  client_allowed_sans: [ops@example.org]\n"
            ),
            "client_allowed_sans",
        ),
        (format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: nope.crt\n"), "nope.crt"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n".to_string(), "key does not belong"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: missing.key\n".to_string(), "missing.key"),
        ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n".to_string(), "tls_server_config.key"),
        ("http_server_config:\n  headers:\n    X-Extra: 1\n".to_string(), "X-Extra"),
        ("basic_auth_users:\n  alice: plaintext\n".to_string(), "basic_auth_users.alice"),
        ("rate_limit:\n  interval: soon\n".to_string(), "rate_limit"),
        ("junk: true\n".to_string(), "unknown field `junk`"),
    ];
    for (text, want) in &bad {
        let cfg = pki.write_config(text);
        match nodesleuth::webconfig::WebConfig::load(&cfg) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => {
                let msg = format!("{:#}", anyhow::Error::from(e));
                assert!(msg.contains(want), "{text}\n→ {msg}\n(wanted {want:?})");
            }
        }
    }
    // Through the binary: a clear start-up error with the key and the file, the cause printed once.
    let cfg = pki.write_config(&format!("{tls}  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [x]\n"));
    let out = Command::new(env!("CARGO_BIN_EXE_nodesleuth"))
        .arg(format!("--web.config.file={}", cfg.display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--web.config.file") && err.contains("client_allowed_sans"), "{err}");
}

//! `--web.config.file`: TLS and basic auth in the Prometheus exporter-toolkit format, so a config written for
//! node_exporter works here unchanged:
//! ```yaml
//! tls_server_config: { cert_file: server.crt, key_file: server.key, client_auth_type: RequireAndVerifyClientCert, client_ca_file: ca.crt, min_version: TLS12 }
//! http_server_config: { headers: { X-Frame-Options: deny } }
//! basic_auth_users: { prometheus: "$2y$10$..." }   # bcrypt hashes
//! ```
//! Unknown keys are errors (as in exporter-toolkit). Options rustls decides for itself (`cipher_suites`,
//! `curve_preferences`, `prefer_server_cipher_suites`) are accepted and logged as ignored; TLS 1.0/1.1 are refused.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub http_server_config: Option<HttpServerConfig>,
    #[serde(default)]
    pub basic_auth_users: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_auth_type: Option<String>,
    pub client_ca_file: Option<PathBuf>,
    pub client_allowed_sans: Option<Vec<String>>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    pub cipher_suites: Option<Vec<String>>,
    pub prefer_server_cipher_suites: Option<bool>,
    pub curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    pub http2: Option<bool>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing {path}: {source}")]
    Parse { path: PathBuf, source: serde_yaml::Error },
    #[error("{0}")]
    Invalid(String),
    #[error("TLS setup: {0}")]
    Tls(#[from] tokio_rustls::rustls::Error),
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| WebConfigError::Read { path: path.into(), source })?;
        let mut cfg: WebConfig = if text.trim().is_empty() {
            WebConfig::default()
        } else {
            serde_yaml::from_str(&text).map_err(|source| WebConfigError::Parse { path: path.into(), source })?
        };
        // Relative file names are relative to the config file, as in exporter-toolkit.
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(tls) = cfg.tls_server_config.as_mut() {
            for p in [&mut tls.cert_file, &mut tls.key_file, &mut tls.client_ca_file].into_iter().flatten() {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        for (user, hash) in &cfg.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(WebConfigError::Invalid(format!("basic_auth_users.{user}: not a bcrypt hash")));
            }
        }
        Ok(cfg)
    }

    /// Builds the TLS acceptor, or `None` for plain HTTP.
    pub fn tls_acceptor(&self) -> Result<Option<tokio_rustls::TlsAcceptor>, WebConfigError> {
        let Some(tls) = &self.tls_server_config else { return Ok(None) };
        use tokio_rustls::rustls::{self, pki_types};
        let read = |inline: &Option<String>, file: &Option<PathBuf>, what: &str| -> Result<Vec<u8>, WebConfigError> {
            match (inline, file) {
                (Some(s), None) => Ok(s.clone().into_bytes()),
                (None, Some(p)) => std::fs::read(p).map_err(|source| WebConfigError::Read { path: p.clone(), source }),
                (Some(_), Some(_)) => {
                    Err(WebConfigError::Invalid(format!("tls_server_config: both {what} and {what}_file are set")))
                }
                (None, None) => Err(WebConfigError::Invalid(format!("tls_server_config: {what}_file is required"))),
            }
        };
        let cert_pem = read(&tls.cert, &tls.cert_file, "cert")?;
        let key_pem = read(&tls.key, &tls.key_file, "key")?;
        let certs: Vec<pki_types::CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| WebConfigError::Invalid(format!("certificate: {e}")))?;
        if certs.is_empty() {
            return Err(WebConfigError::Invalid("certificate: no PEM certificate found".into()));
        }
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|e| WebConfigError::Invalid(format!("key: {e}")))?
            .ok_or_else(|| WebConfigError::Invalid("key: no PEM private key found".into()))?;

        let version = |v: &str| match v {
            "TLS12" => Ok(&rustls::version::TLS12),
            "TLS13" => Ok(&rustls::version::TLS13),
            "TLS10" | "TLS11" => {
                Err(WebConfigError::Invalid(format!("{v} is not supported (insecure); use TLS12 or TLS13")))
            }
            other => Err(WebConfigError::Invalid(format!("unknown TLS version {other:?}"))),
        };
        let min = version(tls.min_version.as_deref().unwrap_or("TLS12"))?;
        let max = version(tls.max_version.as_deref().unwrap_or("TLS13"))?;
        let versions: Vec<&'static rustls::SupportedProtocolVersion> =
            [&rustls::version::TLS12, &rustls::version::TLS13]
                .into_iter()
                .filter(|v| rank(v) >= rank(min) && rank(v) <= rank(max))
                .collect();
        if versions.is_empty() {
            return Err(WebConfigError::Invalid("min_version is above max_version".into()));
        }
        for (set, name) in [
            (tls.cipher_suites.is_some(), "cipher_suites"),
            (tls.curve_preferences.is_some(), "curve_preferences"),
            (tls.prefer_server_cipher_suites.is_some(), "prefer_server_cipher_suites"),
            (tls.client_allowed_sans.is_some(), "client_allowed_sans"),
        ] {
            if set {
                tracing::warn!(option = name, "web config option is not supported and is ignored");
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            rustls::ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(&versions)?;
        let auth = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
        let builder = match auth {
            "NoClientCert" => builder.with_no_client_auth(),
            "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" | "RequireAnyClientCert" => {
                let ca_file = tls
                    .client_ca_file
                    .as_ref()
                    .ok_or_else(|| WebConfigError::Invalid(format!("client_auth_type {auth} needs client_ca_file")))?;
                let pem =
                    std::fs::read(ca_file).map_err(|source| WebConfigError::Read { path: ca_file.clone(), source })?;
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                    roots.add(c.map_err(|e| WebConfigError::Invalid(format!("client_ca_file: {e}")))?)?;
                }
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let v = if auth == "VerifyClientCertIfGiven" { v.allow_unauthenticated() } else { v };
                let verifier = v.build().map_err(|e| WebConfigError::Invalid(format!("client CA: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
            other => return Err(WebConfigError::Invalid(format!("unsupported client_auth_type {other:?}"))),
        };
        let mut server = builder.with_single_cert(certs, key)?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
    }

    pub fn headers(&self) -> Vec<(String, String)> {
        self.http_server_config.as_ref().map(|h| h.headers.clone().into_iter().collect()).unwrap_or_default()
    }
}

fn rank(v: &tokio_rustls::rustls::SupportedProtocolVersion) -> u8 {
    if v.version == tokio_rustls::rustls::ProtocolVersion::TLSv1_3 { 13 } else { 12 }
}

/// Checks basic-auth credentials against bcrypt hashes. bcrypt is deliberately slow (tens of ms), so the outcome
/// per (user, password) is remembered in memory, bounded to 1,024 entries, as exporter-toolkit does.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    verified: Mutex<HashMap<(String, String), bool>>,
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> Option<Arc<BasicAuth>> {
        (!users.is_empty()).then(|| Arc::new(BasicAuth { users, verified: Mutex::new(HashMap::new()) }))
    }

    /// `header` is the value of the Authorization header.
    pub fn check(&self, header: Option<&str>) -> bool {
        use base64::Engine;
        let Some(encoded) = header.and_then(|h| h.strip_prefix("Basic ")) else { return false };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
        let Ok(decoded) = String::from_utf8(decoded) else { return false };
        let Some((user, pass)) = decoded.split_once(':') else { return false };
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let key = (user.to_string(), pass.to_string());
        if let Some(ok) = self.verified.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return *ok;
        }
        let ok = bcrypt::verify(pass, hash).unwrap_or(false);
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 1024 {
            cache.clear(); // bound memory against password guessing
        }
        cache.insert(key, ok);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_keys_and_bad_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("web.yml");
        std::fs::write(&p, "basic_auth_users:\n  alice: notahash\n").unwrap();
        assert!(WebConfig::load(&p).unwrap_err().to_string().contains("not a bcrypt hash"));
        std::fs::write(&p, "tls_server_config:\n  cert_fiel: x\n").unwrap();
        assert!(WebConfig::load(&p).unwrap_err().to_string().contains("unknown field"));
        std::fs::write(&p, "tls_server_config:\n  cert_file: a.crt\n  key_file: /abs/b.key\n").unwrap();
        let cfg = WebConfig::load(&p).unwrap();
        let tls = cfg.tls_server_config.unwrap();
        assert_eq!(tls.cert_file.unwrap(), dir.path().join("a.crt"));
        assert_eq!(tls.key_file.unwrap(), PathBuf::from("/abs/b.key"));
    }

    #[test]
    fn basic_auth_verifies_bcrypt() {
        use base64::Engine;
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let auth = BasicAuth::new(BTreeMap::from([("prom".to_string(), hash)])).unwrap();
        let h = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert!(auth.check(Some(&h("prom:s3cret"))));
        assert!(auth.check(Some(&h("prom:s3cret"))), "cached answer");
        assert!(!auth.check(Some(&h("prom:wrong"))));
        assert!(!auth.check(Some(&h("other:s3cret"))));
        assert!(!auth.check(None));
        assert!(!auth.check(Some("Bearer x")));
    }
}

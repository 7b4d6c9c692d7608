//! The relay's YAML configuration: targets (robots), inbound authentication, limits.
//!
//! Secrets (robot URLs carry the access token or key, DingTalk signing secrets, inbound credentials) can be given
//! inline, read from a file or taken from an environment variable. They are wrapped in [`Secret`], whose `Debug`
//! never prints the value, so a config dump in a log cannot leak them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything that can go wrong while loading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Causes are part of the message and not chained as sources: the binary prints error chains with `{:#}`,
    // which would repeat them.
    #[error("cannot read config file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("cannot parse config file {path}: {error}")]
    Parse { path: PathBuf, error: serde_norway::Error },
    #[error("cannot read secret file {path} (for {what}): {error}")]
    SecretFile { what: String, path: PathBuf, error: std::io::Error },
    #[error("environment variable {var} (for {what}) is not set or not valid UTF-8")]
    SecretEnv { what: String, var: String },
    #[error("target {target}: {reason}")]
    Target { target: String, reason: String },
    #[error("target {target}: template {path}: {reason}")]
    Template { target: String, path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// A value that must never appear in logs or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where a secret comes from: inline string, `{file: path}` or `{env: NAME}`.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretSource {
    Inline(String),
    File { file: PathBuf },
    Env { env: String },
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("Inline(***)"),
            SecretSource::File { file } => write!(f, "File({})", file.display()),
            SecretSource::Env { env } => write!(f, "Env({env})"),
        }
    }
}

impl SecretSource {
    /// Resolve the secret. Files are read relative to `base` and their trailing newline is dropped.
    pub fn resolve(&self, what: &str, base: &Path) -> Result<Secret, ConfigError> {
        match self {
            SecretSource::Inline(s) => Ok(Secret(s.clone())),
            SecretSource::File { file } => {
                let path = if file.is_absolute() { file.clone() } else { base.join(file) };
                let text = std::fs::read_to_string(&path).map_err(|error| ConfigError::SecretFile {
                    what: what.to_string(),
                    path: path.clone(),
                    error,
                })?;
                Ok(Secret(text.trim_end_matches(['\r', '\n']).to_string()))
            }
            SecretSource::Env { env } => match std::env::var(env) {
                Ok(v) => Ok(Secret(v)),
                Err(_) => Err(ConfigError::SecretEnv { what: what.to_string(), var: env.clone() }),
            },
        }
    }
}

/// A duration written as `250ms`, `3s`, `10m` or `1h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(HumanDuration).map_err(serde::de::Error::custom)
    }
}

/// Parse `500ms`, `3s`, `1.5s`, `10m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {s:?} has no unit (use ms, s, m or h)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("duration {s:?} does not start with a number"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("duration {s:?} has unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("duration {s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The file as written by the operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerConfig,
    /// Default inbound authentication for every route; a target's own `auth` replaces it.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    pub targets: BTreeMap<String, TargetConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Largest accepted webhook body, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long a webhook request waits for its alerts to be delivered before the relay answers 503.
    #[serde(default = "default_max_wait")]
    pub max_wait: HumanDuration,
    /// How long delivered alerts are remembered so that Alertmanager's retries do not send them twice.
    /// Keep it longer than `group_interval` and shorter than `repeat_interval`.
    #[serde(default = "default_dedup_window")]
    pub dedup_window: HumanDuration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: default_max_body_bytes(),
            max_wait: default_max_wait(),
            dedup_window: default_dedup_window(),
        }
    }
}

fn default_max_body_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_max_wait() -> HumanDuration {
    HumanDuration(Duration::from_secs(8))
}
fn default_dedup_window() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub bearer_token: Option<SecretSource>,
    #[serde(default)]
    pub basic: Option<BasicAuthConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    pub username: String,
    pub password: SecretSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RobotKind {
    Dingtalk,
    Wecom,
}

impl RobotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RobotKind::Dingtalk => "dingtalk",
            RobotKind::Wecom => "wecom",
        }
    }
    /// The platform's documented size limit: DingTalk's whole request body, WeCom's markdown content.
    pub fn platform_max_bytes(self) -> usize {
        match self {
            RobotKind::Dingtalk => 20_000,
            RobotKind::Wecom => 4_096,
        }
    }
    /// How long the platform throttles a robot that exceeded its rate limit.
    pub fn default_rate_limited_backoff(self) -> Duration {
        match self {
            // DingTalk throttles a robot for 10 minutes after it exceeded 20 messages a minute.
            RobotKind::Dingtalk => Duration::from_secs(600),
            // WeCom counts per minute.
            RobotKind::Wecom => Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    Zh,
    En,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub messages: u32,
    pub window: HumanDuration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { messages: 20, window: HumanDuration(Duration::from_secs(60)) }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MentionConfig {
    /// Mobiles always mentioned (DingTalk only).
    #[serde(default)]
    pub mobiles: Vec<String>,
    /// User ids always mentioned (DingTalk `atUserIds`, WeCom `<@userid>`).
    #[serde(default)]
    pub user_ids: Vec<String>,
    /// Mention everybody (DingTalk only).
    #[serde(default)]
    pub all: bool,
    /// Label whose value (comma separated) lists mobiles to mention for a firing alert (DingTalk only).
    #[serde(default)]
    pub mobiles_label: Option<String>,
    /// Label whose value (comma separated) lists user ids to mention for a firing alert.
    #[serde(default)]
    pub user_ids_label: Option<String>,
    /// Mention everybody when a firing alert carries one of these label values, e.g. `{severity: [critical]}`
    /// (DingTalk only).
    #[serde(default)]
    pub all_when: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub kind: RobotKind,
    /// The robot's webhook URL including `access_token` (DingTalk) or `key` (WeCom).
    pub url: SecretSource,
    /// DingTalk "additional signature" secret (`SEC...`).
    #[serde(default)]
    pub secret: Option<SecretSource>,
    #[serde(default)]
    pub language: Language,
    /// IANA time zone for the times shown in messages.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// A minijinja template file replacing the built-in message body.
    #[serde(default)]
    pub template: Option<PathBuf>,
    #[serde(default)]
    pub mentions: MentionConfig,
    /// Labels listed for each alert, in this order, when present.
    #[serde(default = "default_key_labels")]
    pub key_labels: Vec<String>,
    /// Size limit in bytes; at most the platform's (DingTalk body 20000, WeCom content 4096).
    #[serde(default)]
    pub max_bytes: Option<usize>,
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// How long to stop sending after the platform answered with its rate-limit error.
    #[serde(default)]
    pub rate_limited_backoff: Option<HumanDuration>,
    /// Timeout of one request to the robot.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

fn default_timezone() -> String {
    "Asia/Shanghai".to_string()
}
fn default_key_labels() -> Vec<String> {
    ["instance", "job", "namespace", "pod", "service", "node"].iter().map(|s| s.to_string()).collect()
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

impl FileConfig {
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        serde_norway::from_str(text).map_err(|error| ConfigError::Parse { path: path.to_path_buf(), error })
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
        Self::from_yaml(&text, path)
    }
}

/// Resolved inbound credentials for one route.
#[derive(Debug, Clone)]
pub enum InboundAuth {
    None,
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

impl InboundAuth {
    pub fn resolve(cfg: Option<&AuthConfig>, what: &str, base: &Path) -> Result<Self, ConfigError> {
        let Some(cfg) = cfg else {
            return Ok(InboundAuth::None);
        };
        match (&cfg.bearer_token, &cfg.basic) {
            (Some(_), Some(_)) => {
                Err(ConfigError::Invalid(format!("{what}: auth has both bearer_token and basic; choose one")))
            }
            (None, None) => Err(ConfigError::Invalid(format!("{what}: auth needs bearer_token or basic"))),
            (Some(t), None) => {
                let token = t.resolve(&format!("{what} bearer_token"), base)?;
                if token.expose().is_empty() {
                    return Err(ConfigError::Invalid(format!("{what}: bearer_token is empty")));
                }
                Ok(InboundAuth::Bearer(token))
            }
            (None, Some(b)) => Ok(InboundAuth::Basic {
                username: b.username.clone(),
                password: b.password.resolve(&format!("{what} basic password"), base)?,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10d").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("SECabc");
        assert!(!format!("{s:?}").contains("SECabc"));
        let src = SecretSource::Inline("https://x/?access_token=abc".into());
        assert!(!format!("{src:?}").contains("abc"));
    }

    #[test]
    fn secret_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "from-file\n").unwrap();
        let f = SecretSource::File { file: "tok".into() };
        assert_eq!(f.resolve("t", dir.path()).unwrap().expose(), "from-file");
        // SAFETY-free: set_var is unsafe in edition 2024 only because of threads; use a unique name read once.
        let missing = SecretSource::Env { env: "NODESLEUTH_RELAY_TEST_SURELY_UNSET_VAR".into() };
        let err = missing.resolve("t", dir.path()).unwrap_err().to_string();
        assert!(err.contains("NODESLEUTH_RELAY_TEST_SURELY_UNSET_VAR"), "{err}");
    }

    #[test]
    fn unknown_config_fields_are_rejected() {
        let y = "targets:\n  a:\n    kind: wecom\n    url: http://x\n    colour: red\n";
        let err = FileConfig::from_yaml(y, Path::new("r.yaml")).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
        // With a position, so the user finds the line.
        assert!(err.contains("r.yaml") && err.contains("line 5"), "{err}");
    }

    #[test]
    fn errors_carry_their_cause_once() {
        // The binary prints chains with `{:#}`: a cause both in the message and as a source would appear twice.
        let dir = tempfile::tempdir().unwrap();
        let e = FileConfig::load(&dir.path().join("missing.yaml")).unwrap_err();
        assert!(std::error::Error::source(&e).is_none());
        assert_eq!(format!("{:#}", anyhow::Error::from(e)).matches("os error 2").count(), 1);
        let e = FileConfig::from_yaml("targets: [\n", Path::new("r.yaml")).unwrap_err();
        assert!(std::error::Error::source(&e).is_none());
        let f = SecretSource::File { file: "nope".into() };
        let e = f.resolve("t", dir.path()).unwrap_err();
        assert_eq!(format!("{:#}", anyhow::Error::from(e)).matches("os error 2").count(), 1);
    }
}

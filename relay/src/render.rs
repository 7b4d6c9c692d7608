//! Turning alerts into robot messages: per-alert views (neutralised text, times in the target's zone, links),
//! the markdown template (built-in zh/en or an operator's minijinja file), mentions, and splitting into messages
//! that respect the platform's size limit.
//!
//! Splitting keeps every alert whole inside one message and measures the bytes the platform measures: DingTalk
//! limits the JSON request body, WeCom the markdown content (measured here JSON-escaped, which is never smaller
//! than its UTF-8 length). Only an alert too large to fit alone is shortened, on a character boundary, with a
//! visible marker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::alert::{Alert, Notification, Status};
use crate::config::{ConfigError, Language, MentionConfig, RobotKind, TargetConfig};
use crate::markdown;

const TEMPLATE_NAME: &str = "message";
const BUILTIN_ZH: &str = include_str!("../templates/zh.md.j2");
const BUILTIN_EN: &str = include_str!("../templates/en.md.j2");
/// Bounds the work one render may do (an operator template with a runaway loop fails instead of hanging).
const TEMPLATE_FUEL: u64 = 50_000_000;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template error: {0}")]
    Template(String),
}

/// What a notification's alerts share: shown once per message when the message holds a single group.
#[derive(Debug)]
pub struct GroupInfo {
    pub group_key: String,
    pub receiver: String,
    pub group_labels: String,
    pub external_url: String,
    pub truncated_alerts: u64,
    pub name: String,
}

impl GroupInfo {
    pub fn new(n: &Notification) -> Self {
        let group_labels = n
            .group_labels
            .iter()
            .map(|(k, v)| format!("{}={}", markdown::inline(k), markdown::inline(v)))
            .collect::<Vec<_>>()
            .join(", ");
        let name = n
            .group_labels
            .get("alertname")
            .or_else(|| n.common_labels.get("alertname"))
            .or_else(|| n.alerts.first().and_then(|a| a.labels.get("alertname")))
            .cloned()
            .unwrap_or_default();
        GroupInfo {
            group_key: n.group_key.clone(),
            receiver: markdown::inline(&n.receiver),
            group_labels,
            external_url: markdown::link_target(&n.external_url).unwrap_or_default(),
            truncated_alerts: n.truncated_alerts,
            name: markdown::plain(&name),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LabelView {
    pub name: String,
    pub value: String,
}

/// One alert as templates see it. Every text field is already neutralised; link fields are safe link targets or
/// empty.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub status: &'static str,
    pub alertname: String,
    pub severity: String,
    pub summary: String,
    pub description: String,
    /// `summary_zh` / `description_zh` annotations when present (the rule library writes them for people paged in
    /// Chinese), otherwise the same text as `summary` / `description`: the zh template can always use these.
    pub summary_zh: String,
    pub description_zh: String,
    /// The target's key labels present on the alert, in configured order.
    pub labels: Vec<LabelView>,
    /// All labels.
    pub all_labels: Vec<LabelView>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    pub runbook_url: String,
    pub source_url: String,
    pub silence_url: String,
    pub fingerprint: String,
    #[serde(skip)]
    pub mentions: Mentions,
}

/// One alert queued for a target.
#[derive(Debug, Clone)]
pub struct Entry {
    pub group: Arc<GroupInfo>,
    pub view: AlertView,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mentions {
    pub mobiles: BTreeSet<String>,
    pub user_ids: BTreeSet<String>,
    pub all: bool,
}

impl Mentions {
    fn merge(&mut self, other: &Mentions) {
        self.mobiles.extend(other.mobiles.iter().cloned());
        self.user_ids.extend(other.user_ids.iter().cloned());
        self.all |= other.all;
    }
}

fn valid_mobile(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    (5..=20).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit() || c == '-')
}

fn valid_user_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A rendered robot request.
#[derive(Debug, Clone)]
pub struct Message {
    /// How many of the packed entries (in order) this message carries.
    pub count: usize,
    /// The JSON request body.
    pub body: Vec<u8>,
    /// The size the platform limit applies to.
    pub measured: usize,
    pub truncated: bool,
}

#[derive(Serialize)]
struct MessageCtx<'a> {
    target: &'a str,
    language: &'static str,
    title: &'a str,
    digest: bool,
    groups: usize,
    part: usize,
    parts: usize,
    firing: Vec<&'a AlertView>,
    resolved: Vec<&'a AlertView>,
    receiver: &'a str,
    group_labels: &'a str,
    external_url: &'a str,
    truncated_alerts: u64,
}

pub struct Renderer {
    target: String,
    kind: RobotKind,
    language: Language,
    tz: Tz,
    key_labels: Vec<String>,
    max_bytes: usize,
    static_mentions: Mentions,
    mention_cfg: MentionConfig,
    env: Environment<'static>,
    /// The built-in template, used if an operator template fails at run time.
    fallback: Option<Environment<'static>>,
}

fn new_env(source: String) -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Values are neutralised before they reach the template; HTML escaping would corrupt markdown.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(64);
    env.add_template_owned(TEMPLATE_NAME, source)?;
    Ok(env)
}

fn describe(err: &minijinja::Error) -> String {
    let mut s = err.to_string();
    if let Some(line) = err.line() {
        s = format!("line {line}: {s}");
    }
    let mut src = std::error::Error::source(err);
    while let Some(e) = src {
        s.push_str(&format!(": {e}"));
        src = e.source();
    }
    s
}

impl Renderer {
    pub fn new(target: &str, cfg: &TargetConfig, base: &Path) -> Result<Self, ConfigError> {
        let terr = |reason: String| ConfigError::Target { target: target.to_string(), reason };
        let tz: Tz = cfg.timezone.parse().map_err(|_| terr(format!("unknown timezone {:?}", cfg.timezone)))?;
        let platform = cfg.kind.platform_max_bytes();
        let max_bytes = cfg.max_bytes.unwrap_or(platform);
        if max_bytes > platform || max_bytes < 512 {
            return Err(terr(format!(
                "max_bytes {max_bytes} must be between 512 and the {} limit of {platform}",
                cfg.kind.as_str()
            )));
        }
        let m = &cfg.mentions;
        for mobile in &m.mobiles {
            if !valid_mobile(mobile) {
                return Err(terr(format!("mentions.mobiles: {mobile:?} is not a phone number")));
            }
        }
        for id in &m.user_ids {
            if !valid_user_id(id) {
                return Err(terr(format!("mentions.user_ids: {id:?} is not a valid user id")));
            }
        }
        if cfg.kind == RobotKind::Wecom
            && (!m.mobiles.is_empty() || m.all || m.mobiles_label.is_some() || !m.all_when.is_empty())
        {
            return Err(terr(
                "WeCom markdown messages can only mention user ids (<@userid>); mentioned_mobile_list and @all \
                 work only for text messages, so mentions.mobiles, mobiles_label, all and all_when are not \
                 supported for kind: wecom"
                    .to_string(),
            ));
        }
        let builtin = match cfg.language {
            Language::Zh => BUILTIN_ZH,
            Language::En => BUILTIN_EN,
        };
        let (env, fallback) = match &cfg.template {
            None => {
                (new_env(builtin.to_string()).map_err(|e| terr(format!("built-in template: {}", describe(&e))))?, None)
            }
            Some(path) => {
                let path = if path.is_absolute() { path.clone() } else { base.join(path) };
                let terr_t =
                    |reason: String| ConfigError::Template { target: target.to_string(), path: path.clone(), reason };
                let source = std::fs::read_to_string(&path).map_err(|e| terr_t(format!("cannot read: {e}")))?;
                let env = new_env(source).map_err(|e| terr_t(describe(&e)))?;
                let fallback =
                    new_env(builtin.to_string()).map_err(|e| terr(format!("built-in template: {}", describe(&e))))?;
                (env, Some(fallback))
            }
        };
        let r = Renderer {
            target: target.to_string(),
            kind: cfg.kind,
            language: cfg.language,
            tz,
            key_labels: cfg.key_labels.clone(),
            max_bytes,
            static_mentions: Mentions {
                mobiles: m.mobiles.iter().cloned().collect(),
                user_ids: m.user_ids.iter().cloned().collect(),
                all: m.all,
            },
            mention_cfg: m.clone(),
            env,
            fallback,
        };
        r.validate().map_err(|reason| match &cfg.template {
            Some(p) => ConfigError::Template { target: target.to_string(), path: base.join(p), reason },
            None => terr(reason),
        })?;
        Ok(r)
    }

    pub fn kind(&self) -> RobotKind {
        self.kind
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Render sample messages (firing, resolved, digest, split) so template mistakes surface at start-up.
    fn validate(&self) -> Result<(), String> {
        let sample: Notification = serde_json::from_str(SAMPLE_NOTIFICATION).map_err(|e| e.to_string())?;
        let group = Arc::new(GroupInfo::new(&sample));
        let entries: Vec<Entry> =
            sample.alerts.iter().map(|a| Entry { group: group.clone(), view: self.view(&sample, a) }).collect();
        let refs: Vec<&Entry> = entries.iter().collect();
        for (part, parts) in [(1, 1), (2, 3)] {
            let text = self.render_text(&self.env, &refs, part, parts).map_err(|e| e.to_string())?;
            if text.trim().is_empty() {
                return Err("the template renders an empty message".to_string());
            }
        }
        Ok(())
    }

    /// The view of one alert of a notification.
    pub fn view(&self, n: &Notification, a: &Alert) -> AlertView {
        let label = |k: &str| a.labels.get(k).map(String::as_str).unwrap_or("");
        let ann = |k: &str| a.annotations.get(k).map(String::as_str).unwrap_or("");
        let labels = self
            .key_labels
            .iter()
            .filter_map(|k| {
                a.labels.get(k).map(|v| LabelView { name: markdown::inline(k), value: markdown::inline(v) })
            })
            .collect();
        let all_labels =
            a.labels.iter().map(|(k, v)| LabelView { name: markdown::inline(k), value: markdown::inline(v) }).collect();
        let annotations = a.annotations.iter().map(|(k, v)| (k.clone(), markdown::block(v))).collect();
        let summary = if ann("summary").is_empty() { ann("message") } else { ann("summary") };
        let summary_zh = if ann("summary_zh").is_empty() { summary } else { ann("summary_zh") };
        let description_zh = if ann("description_zh").is_empty() { ann("description") } else { ann("description_zh") };
        let runbook =
            [ann("runbook_url"), ann("runbook")].into_iter().find_map(markdown::link_target).unwrap_or_default();
        AlertView {
            status: a.status.as_str(),
            alertname: markdown::inline(label("alertname")),
            severity: markdown::inline(label("severity")),
            summary: markdown::inline(summary),
            description: markdown::block(ann("description")),
            summary_zh: markdown::inline(summary_zh),
            description_zh: markdown::block(description_zh),
            labels,
            all_labels,
            annotations,
            starts_at: self.time(a.starts_at),
            ends_at: if a.status == Status::Resolved {
                a.ended_at().map(|t| self.time(t)).unwrap_or_default()
            } else {
                String::new()
            },
            runbook_url: runbook,
            source_url: markdown::link_target(&a.generator_url).unwrap_or_default(),
            silence_url: silence_link(&n.external_url, a).unwrap_or_default(),
            fingerprint: markdown::inline(&a.identity()),
            mentions: self.alert_mentions(a),
        }
    }

    fn time(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.tz).format("%Y-%m-%d %H:%M:%S %Z").to_string()
    }

    fn alert_mentions(&self, a: &Alert) -> Mentions {
        let mut m = Mentions::default();
        if a.status != Status::Firing {
            return m;
        }
        let list = |label: &Option<String>| -> Vec<String> {
            label
                .as_ref()
                .and_then(|l| a.labels.get(l))
                .map(|v| v.split([',', ' ', ';']).map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
                .unwrap_or_default()
        };
        m.mobiles = list(&self.mention_cfg.mobiles_label).into_iter().filter(|s| valid_mobile(s)).collect();
        m.user_ids = list(&self.mention_cfg.user_ids_label).into_iter().filter(|s| valid_user_id(s)).collect();
        m.all = self
            .mention_cfg
            .all_when
            .iter()
            .any(|(k, vals)| a.labels.get(k).is_some_and(|v| vals.iter().any(|x| x == v)));
        m
    }

    fn title(&self, entries: &[&Entry], part: usize, parts: usize) -> String {
        let firing = entries.iter().filter(|e| e.view.status == "firing").count();
        let resolved = entries.len() - firing;
        let groups = count_groups(entries);
        let mut t = match (self.language, groups > 1) {
            (Language::Zh, true) => format!("告警汇总：触发 {firing}，恢复 {resolved}"),
            (Language::En, true) => format!("Alert digest: {firing} firing, {resolved} resolved"),
            (Language::Zh, false) => {
                let name = &entries.first().map(|e| e.group.name.as_str()).unwrap_or("");
                match (firing, resolved) {
                    (f, 0) => format!("【告警 {f}】{name}"),
                    (0, r) => format!("【恢复 {r}】{name}"),
                    (f, r) => format!("【告警 {f} 恢复 {r}】{name}"),
                }
            }
            (Language::En, false) => {
                let name = &entries.first().map(|e| e.group.name.as_str()).unwrap_or("");
                match (firing, resolved) {
                    (f, 0) => format!("[FIRING:{f}] {name}"),
                    (0, r) => format!("[RESOLVED:{r}] {name}"),
                    (f, r) => format!("[FIRING:{f} RESOLVED:{r}] {name}"),
                }
            }
        };
        if parts > 1 {
            t.push_str(&format!(" ({part}/{parts})"));
        }
        t
    }

    fn render_text(
        &self,
        env: &Environment<'static>,
        entries: &[&Entry],
        part: usize,
        parts: usize,
    ) -> Result<String, RenderError> {
        let groups = count_groups(entries);
        let single = if groups == 1 { entries.first().map(|e| &e.group) } else { None };
        let title = self.title(entries, part, parts);
        let ctx = MessageCtx {
            target: &self.target,
            language: match self.language {
                Language::Zh => "zh",
                Language::En => "en",
            },
            title: &title,
            digest: groups > 1,
            groups,
            part,
            parts,
            firing: entries.iter().filter(|e| e.view.status == "firing").map(|e| &e.view).collect(),
            resolved: entries.iter().filter(|e| e.view.status != "firing").map(|e| &e.view).collect(),
            receiver: single.map(|g| g.receiver.as_str()).unwrap_or(""),
            group_labels: single.map(|g| g.group_labels.as_str()).unwrap_or(""),
            external_url: single.map(|g| g.external_url.as_str()).unwrap_or(""),
            truncated_alerts: if groups == 1 && part == parts {
                single.map(|g| g.truncated_alerts).unwrap_or(0)
            } else {
                0
            },
        };
        let tmpl = env.get_template(TEMPLATE_NAME).map_err(|e| RenderError::Template(describe(&e)))?;
        let text = tmpl.render(&ctx).map_err(|e| RenderError::Template(describe(&e)))?;
        Ok(tidy(&text))
    }

    fn mentions(&self, entries: &[&Entry]) -> Mentions {
        let mut m = self.static_mentions.clone();
        for e in entries {
            m.merge(&e.view.mentions);
        }
        m
    }

    /// Build the request body for `text`; returns (body, measured size).
    fn body(&self, title: &str, text: &str, mentions: &Mentions) -> (Vec<u8>, usize) {
        match self.kind {
            RobotKind::Dingtalk => {
                let mut full = text.to_string();
                let tags: Vec<String> =
                    mentions.mobiles.iter().chain(mentions.user_ids.iter()).map(|m| format!("@{m}")).collect();
                if !tags.is_empty() {
                    full.push_str("\n\n");
                    full.push_str(&tags.join(" "));
                }
                let body = serde_json::json!({
                    "msgtype": "markdown",
                    "markdown": {"title": title, "text": full},
                    "at": {
                        "atMobiles": mentions.mobiles,
                        "atUserIds": mentions.user_ids,
                        "isAtAll": mentions.all,
                    },
                });
                let bytes = serde_json::to_vec(&body).expect("serialising a JSON value cannot fail");
                let len = bytes.len();
                (bytes, len)
            }
            RobotKind::Wecom => {
                let mut full = text.to_string();
                if !mentions.user_ids.is_empty() {
                    full.push('\n');
                    for id in &mentions.user_ids {
                        full.push_str(&format!("<@{id}>"));
                    }
                }
                let measured = serde_json::to_string(&full).map(|s| s.len() - 2).unwrap_or(usize::MAX);
                let body = serde_json::json!({"msgtype": "markdown", "markdown": {"content": full}});
                (serde_json::to_vec(&body).expect("serialising a JSON value cannot fail"), measured)
            }
        }
    }

    fn build(&self, entries: &[&Entry], part: usize, parts: usize) -> Result<(Vec<u8>, usize), RenderError> {
        let text = match self.render_text(&self.env, entries, part, parts) {
            Ok(t) => t,
            Err(e) => match &self.fallback {
                Some(fb) => {
                    tracing::warn!(relay_target = %self.target, error = %e,
                        "operator template failed at run time; using the built-in template");
                    self.render_text(fb, entries, part, parts)?
                }
                None => return Err(e),
            },
        };
        let title = self.title(entries, part, parts);
        Ok(self.body(&title, &text, &self.mentions(entries)))
    }

    /// Split `entries` (in order) into as few messages as fit the size limit, every alert whole.
    pub fn pack(&self, entries: &[&Entry]) -> Result<Vec<Message>, RenderError> {
        let n = entries.len();
        // Size with part numbers at least as wide as the real ones, so the final render cannot grow.
        let wide = 10usize.pow(n.max(1).ilog10() + 1) - 1;
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        let mut start = 0;
        while start < n {
            let fits = |k: usize| -> Result<bool, RenderError> {
                Ok(self.build(&entries[start..start + k], wide, wide)?.1 <= self.max_bytes)
            };
            if !fits(1)? {
                ranges.push((start, 1));
                start += 1;
                continue;
            }
            let rest = n - start;
            let mut lo = 1;
            let mut hi;
            loop {
                let cand = (lo * 2).min(rest);
                if cand == lo {
                    hi = lo;
                    break;
                }
                if fits(cand)? {
                    lo = cand;
                } else {
                    hi = cand;
                    break;
                }
            }
            while hi > lo + 1 {
                let mid = lo + (hi - lo) / 2;
                if fits(mid)? {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            ranges.push((start, lo));
            start += lo;
        }
        let parts = ranges.len();
        let mut out = Vec::with_capacity(parts);
        for (i, (s, k)) in ranges.into_iter().enumerate() {
            let slice = &entries[s..s + k];
            let (body, measured) = self.build(slice, i + 1, parts)?;
            if measured <= self.max_bytes {
                out.push(Message { count: k, body, measured, truncated: false });
            } else {
                let (body, measured) = self.shrink(slice, i + 1, parts)?;
                out.push(Message { count: k, body, measured, truncated: true });
            }
        }
        Ok(out)
    }

    /// Make a message that does not fit (a single huge alert) fit, by shortening its longest texts.
    fn shrink(&self, entries: &[&Entry], part: usize, parts: usize) -> Result<(Vec<u8>, usize), RenderError> {
        let marker = match self.language {
            Language::Zh => "…（已截断）",
            Language::En => "… (truncated)",
        };
        for limit in [4000usize, 2000, 1000, 500, 250, 100, 40] {
            let cut: Vec<Entry> = entries
                .iter()
                .map(|e| {
                    let mut e = (*e).clone();
                    let v = &mut e.view;
                    for field in [&mut v.description, &mut v.summary, &mut v.description_zh, &mut v.summary_zh] {
                        cut_chars(field, limit, marker);
                    }
                    for l in v.labels.iter_mut().chain(v.all_labels.iter_mut()) {
                        cut_chars(&mut l.value, limit, marker);
                    }
                    for a in v.annotations.values_mut() {
                        cut_chars(a, limit, marker);
                    }
                    e
                })
                .collect();
            let refs: Vec<&Entry> = cut.iter().collect();
            let (body, measured) = self.build(&refs, part, parts)?;
            if measured <= self.max_bytes {
                return Ok((body, measured));
            }
        }
        // Last resort: cut the rendered text itself.
        let text = self.render_text(self.fallback.as_ref().unwrap_or(&self.env), entries, part, parts)?;
        let title = self.title(entries, part, parts);
        let mentions = self.mentions(entries);
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let (mut lo, mut hi) = (0usize, chars.len());
        while hi > lo + 1 {
            let mid = (lo + hi) / 2;
            let t = format!("{}{marker}", &text[..chars[mid].0]);
            if self.body(&title, &t, &mentions).1 <= self.max_bytes {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let end = chars.get(lo).map(|c| c.0).unwrap_or(0);
        Ok(self.body(&title, &format!("{}{marker}", &text[..end]), &mentions))
    }
}

fn cut_chars(s: &mut String, limit: usize, marker: &str) {
    if let Some((idx, _)) = s.char_indices().nth(limit) {
        // Do not leave a dangling escape backslash.
        let mut end = idx;
        while end > 0 && s[..end].ends_with('\\') {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(marker);
    }
}

fn count_groups(entries: &[&Entry]) -> usize {
    let mut seen: Vec<*const GroupInfo> = entries.iter().map(|e| Arc::as_ptr(&e.group)).collect();
    seen.sort();
    seen.dedup();
    if seen.len() <= 1 {
        return seen.len();
    }
    // Distinct notifications of the same group (e.g. a retry merged with its successor) count once.
    let mut keys: Vec<(&str, &str)> =
        entries.iter().map(|e| (e.group.receiver.as_str(), e.group.group_key.as_str())).collect();
    keys.sort();
    keys.dedup();
    keys.len()
}

/// Collapse runs of blank lines and trim.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.trim().lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out
}

/// Alertmanager's "new silence" page prefilled with the alert's labels.
fn silence_link(external_url: &str, a: &Alert) -> Option<String> {
    let base = markdown::link_target(external_url)?;
    let matchers = a
        .labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(",");
    Some(format!(
        "{}/#/silences/new?filter={}",
        base.trim_end_matches('/'),
        markdown::query_value(&format!("{{{matchers}}}"))
    ))
}

const SAMPLE_NOTIFICATION: &str = r#"{
  "receiver": "sample", "status": "firing", "version": "4", "groupKey": "{}:{alertname=\"Sample\"}",
  "truncatedAlerts": 2, "groupLabels": {"alertname": "Sample"}, "commonLabels": {"alertname": "Sample"},
  "commonAnnotations": {}, "externalURL": "http://alertmanager.example:9093",
  "alerts": [
    {"status": "firing", "labels": {"alertname": "Sample", "severity": "critical", "instance": "node-1:9100",
      "job": "node"}, "annotations": {"summary": "sample summary", "description": "sample description",
      "runbook_url": "https://runbooks.example/sample"}, "startsAt": "2024-05-01T10:00:00Z",
      "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus.example/graph", "fingerprint": "1"},
    {"status": "resolved", "labels": {"alertname": "Sample", "severity": "warning", "instance": "node-2:9100"},
      "annotations": {"summary": "sample resolved"}, "startsAt": "2024-05-01T09:00:00Z",
      "endsAt": "2024-05-01T09:30:00Z", "generatorURL": "", "fingerprint": "2"}
  ]}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;

    fn renderer(yaml: &str) -> Renderer {
        let cfg = FileConfig::from_yaml(yaml, Path::new("t.yaml")).unwrap();
        let (name, t) = cfg.targets.iter().next().unwrap();
        Renderer::new(name, t, Path::new(".")).unwrap()
    }

    fn notification(n: usize, desc: &str) -> Notification {
        let alerts: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!({"status": "firing",
                    "labels": {"alertname": "Big", "instance": format!("host-{i}")},
                    "annotations": {"summary": format!("uid-{i:04}-end"), "description": desc},
                    "startsAt": "2024-05-01T10:00:00Z", "fingerprint": format!("{i:016x}")})
            })
            .collect();
        serde_json::from_value(serde_json::json!({"status": "firing", "receiver": "r", "groupKey": "g",
            "externalURL": "http://am:9093", "alerts": alerts}))
        .unwrap()
    }

    fn entries(r: &Renderer, n: &Notification) -> Vec<Entry> {
        let g = Arc::new(GroupInfo::new(n));
        n.alerts.iter().map(|a| Entry { group: g.clone(), view: r.view(n, a) }).collect()
    }

    #[test]
    fn splits_whole_alerts_within_limit() {
        for kind in ["dingtalk", "wecom"] {
            let r = renderer(&format!("targets:\n  t:\n    kind: {kind}\n    url: http://x\n"));
            let desc = "磁盘将满，\"请\"尽快清理。".repeat(12);
            let n = notification(300, &desc);
            let es = entries(&r, &n);
            let refs: Vec<&Entry> = es.iter().collect();
            let msgs = r.pack(&refs).unwrap();
            assert!(msgs.len() > 1);
            assert_eq!(msgs.iter().map(|m| m.count).sum::<usize>(), 300);
            let mut seen = vec![0; 300];
            for m in &msgs {
                assert!(m.measured <= r.max_bytes(), "{kind}: {} > {}", m.measured, r.max_bytes());
                assert!(!m.truncated);
                let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
                let text = v["markdown"]["text"].as_str().or(v["markdown"]["content"].as_str()).unwrap();
                if kind == "dingtalk" {
                    assert!(m.body.len() <= 20_000);
                } else {
                    assert!(text.len() <= 4096);
                }
                for (i, s) in seen.iter_mut().enumerate() {
                    let uid = format!("uid-{i:04}-end");
                    if text.contains(&uid) {
                        *s += 1;
                        assert!(text.contains(&desc), "alert {i} not whole");
                    }
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{kind}: {seen:?}");
        }
    }

    #[test]
    fn huge_single_alert_is_shortened_on_char_boundary() {
        let r = renderer("targets:\n  t:\n    kind: wecom\n    url: http://x\n");
        let n = notification(1, &"警".repeat(5000));
        let es = entries(&r, &n);
        let msgs = r.pack(&es.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].truncated);
        assert!(msgs[0].measured <= 4096);
        let v: serde_json::Value = serde_json::from_slice(&msgs[0].body).unwrap();
        assert!(v["markdown"]["content"].as_str().unwrap().contains("uid-0000-end"));
    }

    #[test]
    fn template_errors_are_reported_at_startup() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.j2"), "{% for a in firing %}{{ a.nosuchfield }}{% endfor %}").unwrap();
        std::fs::write(dir.path().join("syntax.j2"), "{% if %}").unwrap();
        for f in ["bad.j2", "syntax.j2"] {
            let y = format!("targets:\n  t:\n    kind: wecom\n    url: http://x\n    template: {f}\n");
            let cfg = FileConfig::from_yaml(&y, Path::new("t.yaml")).unwrap();
            let err = Renderer::new("t", &cfg.targets["t"], dir.path()).err().unwrap().to_string();
            assert!(err.contains(f), "{err}");
        }
        std::fs::write(dir.path().join("ok.j2"), "{{ title }} {% for a in firing %}{{ a.summary }}{% endfor %}")
            .unwrap();
        let y = "targets:\n  t:\n    kind: wecom\n    url: http://x\n    template: ok.j2\n";
        let cfg = FileConfig::from_yaml(y, Path::new("t.yaml")).unwrap();
        Renderer::new("t", &cfg.targets["t"], dir.path()).unwrap();
    }

    #[test]
    fn wecom_rejects_mobile_mentions() {
        let y = "targets:\n  t:\n    kind: wecom\n    url: http://x\n    mentions: {mobiles: ['13800000000']}\n";
        let cfg = FileConfig::from_yaml(y, Path::new("t.yaml")).unwrap();
        let err = Renderer::new("t", &cfg.targets["t"], Path::new(".")).err().unwrap().to_string();
        assert!(err.contains("user ids"), "{err}");
    }

    #[test]
    fn zh_template_prefers_chinese_annotations_and_falls_back() {
        let n: Notification = serde_json::from_value(serde_json::json!({"status": "firing", "receiver": "r",
            "groupKey": "g", "externalURL": "http://am:9093", "alerts": [
                {"status": "firing", "labels": {"alertname": "NodesleuthTCPCloseWaitPileUp", "severity": "warning"},
                 "annotations": {"summary": "CLOSE_WAIT pile-up: api holds 162 sockets",
                                 "description": "Clients closed 162 connections",
                                 "summary_zh": "连接堆积：进程 api 有 162 个连接",
                                 "description_zh": "有 162 个连接已被客户端关闭"},
                 "startsAt": "2024-05-01T10:00:00Z", "fingerprint": "0000000000000001"},
                {"status": "firing", "labels": {"alertname": "Plain", "severity": "info"},
                 "annotations": {"summary": "english only summary", "description": "english only description"},
                 "startsAt": "2024-05-01T10:00:00Z", "fingerprint": "0000000000000002"},
                {"status": "firing", "labels": {"alertname": "HalfZh", "severity": "info"},
                 "annotations": {"summary": "english summary", "summary_zh": "中文摘要",
                                 "description": "english description"},
                 "startsAt": "2024-05-01T10:00:00Z", "fingerprint": "0000000000000003"}]}))
        .unwrap();
        let text = |yaml: &str| {
            let r = renderer(yaml);
            let es = entries(&r, &n);
            let msgs = r.pack(&es.iter().collect::<Vec<_>>()).unwrap();
            assert_eq!(msgs.len(), 1);
            let v: serde_json::Value = serde_json::from_slice(&msgs[0].body).unwrap();
            v["markdown"]["content"].as_str().unwrap().to_string()
        };
        let zh = text("targets:\n  t:\n    kind: wecom\n    url: http://x\n    language: zh\n");
        assert!(zh.contains("- 摘要：连接堆积：进程 api 有 162 个连接"), "{zh}");
        assert!(zh.contains("- 详情：有 162 个连接已被客户端关闭"), "{zh}");
        assert!(!zh.contains("pile-up: api holds") && !zh.contains("Clients closed"), "{zh}");
        // no Chinese annotations: the English ones, not nothing
        assert!(zh.contains("- 摘要：english only summary") && zh.contains("- 详情：english only description"), "{zh}");
        // each annotation falls back on its own
        assert!(zh.contains("- 摘要：中文摘要") && zh.contains("- 详情：english description"), "{zh}");
        let en = text("targets:\n  t:\n    kind: wecom\n    url: http://x\n    language: en\n");
        assert!(en.contains("pile-up: api holds 162 sockets") && !en.contains("堆积"), "{en}");
        // a Chinese annotation is defused like every other text
        let mut m = n.clone();
        m.alerts[0].annotations.insert("summary_zh".into(), "[点我](http://evil.example) **粗体**".into());
        let r = renderer("targets:\n  t:\n    kind: wecom\n    url: http://x\n");
        let v = r.view(&m, &m.alerts[0]);
        assert!(!v.summary_zh.contains("](http"), "{}", v.summary_zh);
    }

    #[test]
    fn times_use_target_timezone() {
        let r = renderer("targets:\n  t:\n    kind: dingtalk\n    url: http://x\n    timezone: Asia/Tokyo\n");
        let n = notification(1, "d");
        assert_eq!(r.view(&n, &n.alerts[0]).starts_at, "2024-05-01 19:00:00 JST");
    }
}

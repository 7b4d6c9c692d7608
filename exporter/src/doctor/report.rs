//! What the doctor reports: findings, checks it could not run, and the two renderings (human, JSON).
//!
//! The JSON shape is a contract for scripts (the whole-chain drills read it); `version` changes when a field is
//! removed or changes meaning, never for an added field. README.md "nodesleuth doctor" documents it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

/// Version of the JSON shape.
pub const JSON_VERSION: u32 = 1;

/// The areas, in the order the human output lists them; each is one collector's failure modes.
pub const AREAS: &[&str] = &["tcp", "ipvs", "memory", "systemd", "output"];

/// How bad a finding is: the severity of the alert of the same name, or `ok` when the check found nothing.
/// `info` findings (the alerts' early warnings) are reported but do not change the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Info,
    Warning,
    Critical,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Info => "info",
            Verdict::Warning => "warning",
            Verdict::Critical => "critical",
        }
    }
}

/// One diagnosis: a failure mode (named as its alert) on one subject (pod/process/port, VIP, the node).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The alert name of rules/alerts.py (`NodesleuthTCPCloseWaitPileUp`, …).
    pub name: &'static str,
    /// `tcp`, `ipvs`, `memory`, `systemd` or `output`.
    pub area: &'static str,
    pub verdict: Verdict,
    /// What it is about, as metric labels: `namespace`, `pod`, `container`, `process`, `local_port`, `netns`,
    /// `virtual_address`, `virtual_port`, `collector`, `target` (only those that apply). Empty: the whole node.
    pub subject: BTreeMap<&'static str, String>,
    /// One line with the numbers.
    pub summary: String,
    /// The numbers, by name (counts, bytes, seconds, ratios; growth per minute over the window; `null` when a
    /// number could not be measured).
    pub evidence: BTreeMap<&'static str, Value>,
    /// Two sentences: what it means.
    pub meaning: &'static str,
    /// Commands to run next on the node.
    pub next: Vec<String>,
    pub fix: String,
    /// `docs/runbooks/<name>.md`.
    pub runbook: String,
}

/// A check that could not run, and why (so that silence never passes for health).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unchecked {
    /// The check (alert name) that did not run.
    pub name: &'static str,
    pub area: &'static str,
    /// `absent` (the data source does not exist on this node: nothing to diagnose), `disabled` (the collector is
    /// off), `failed` (the collector errored or overran its deadline), `unreadable` (privileges: some data could not
    /// be read), `not_visible` (the data lives outside the node's kernel, e.g. in cAdvisor).
    pub kind: &'static str,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counts {
    pub critical: usize,
    pub warning: usize,
    pub info: usize,
    pub ok: usize,
    pub unchecked: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Filters {
    pub only: Vec<String>,
    pub namespace: Vec<String>,
    pub pod: Vec<String>,
}

/// The whole result of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub version: u32,
    pub nodesleuth_version: &'static str,
    pub node: String,
    /// Seconds between the starts of the two samples (rates are per this window).
    pub window_seconds: f64,
    /// Wall time of the whole run.
    pub duration_seconds: f64,
    /// The worst verdict found.
    pub verdict: Verdict,
    pub exit_code: u8,
    pub filters: Filters,
    pub counts: Counts,
    /// Worst first; `ok` entries (one per check that found nothing) last.
    pub findings: Vec<Finding>,
    pub unchecked: Vec<Unchecked>,
}

/// Exit status: 0 nothing (or only `info`), 1 warnings, 2 critical. Usage errors exit with [`EXIT_USAGE`].
pub fn exit_code(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Ok | Verdict::Info => 0,
        Verdict::Warning => 1,
        Verdict::Critical => 2,
    }
}

/// Bad flags (EX_USAGE of sysexits.h): clap's own 2 would read as "critical".
pub const EXIT_USAGE: u8 = 64;
/// The doctor itself could not run (e.g. no runtime): EX_SOFTWARE.
pub const EXIT_INTERNAL: u8 = 70;

impl Report {
    /// Sorts findings worst first (then by area order, name, subject) and fills verdict, counts and exit code.
    pub fn finish(mut self) -> Report {
        self.findings.sort_by(|a, b| {
            b.verdict
                .cmp(&a.verdict)
                .then_with(|| area_rank(a.area).cmp(&area_rank(b.area)))
                .then_with(|| a.name.cmp(b.name))
                .then_with(|| a.subject.cmp(&b.subject))
        });
        self.unchecked.sort_by(|a, b| area_rank(a.area).cmp(&area_rank(b.area)).then_with(|| a.name.cmp(b.name)));
        self.verdict = self.findings.iter().map(|f| f.verdict).max().unwrap_or(Verdict::Ok);
        self.exit_code = exit_code(self.verdict);
        let n = |v| self.findings.iter().filter(|f| f.verdict == v).count();
        self.counts = Counts {
            critical: n(Verdict::Critical),
            warning: n(Verdict::Warning),
            info: n(Verdict::Info),
            ok: n(Verdict::Ok),
            unchecked: self.unchecked.len(),
        };
        self
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        s.push('\n');
        s
    }

    /// The terminal rendering: at most `width` columns, worst first; ANSI colour only when `colour`.
    pub fn to_human(&self, colour: bool, width: usize) -> String {
        let width = width.clamp(60, 100);
        let paint = |v: Verdict, text: &str| -> String {
            if !colour {
                return text.to_string();
            }
            let code = match v {
                Verdict::Critical => "1;31",
                Verdict::Warning => "1;33",
                Verdict::Info => "36",
                Verdict::Ok => "32",
            };
            format!("\x1b[{code}m{text}\x1b[0m")
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "nodesleuth doctor on {}: {} samples {:.1}s apart, {:.1}s in all",
            self.node, 2, self.window_seconds, self.duration_seconds
        );
        let problems: Vec<&Finding> = self.findings.iter().filter(|f| f.verdict != Verdict::Ok).collect();
        if problems.is_empty() {
            let partial = self.unchecked.iter().any(|u| matches!(u.kind, "unreadable" | "failed"));
            let text = if partial {
                "Nothing found in what could be read: see \"Could not check\" for what was not."
            } else {
                "Nothing found: every check below passed."
            };
            let _ = writeln!(out, "\n{}", paint(Verdict::Ok, text));
        }
        let mut previous: Option<&str> = None;
        for f in &problems {
            out.push('\n');
            let tag = format!("{:<8}", f.verdict.as_str().to_uppercase());
            let _ = writeln!(out, "{} {}", paint(f.verdict, &tag), f.name);
            let indent = "         ";
            let text = width - indent.len() - 10;
            for line in wrap(&f.summary, width - indent.len()) {
                let _ = writeln!(out, "{indent}{line}");
            }
            let mut field = |label: &str, lines: Vec<String>| {
                for (i, line) in lines.into_iter().enumerate() {
                    let label = if i == 0 { label } else { "" };
                    let _ = writeln!(out, "{indent}{label:<10}{line}");
                }
            };
            if !f.evidence.is_empty() {
                let ev: Vec<String> = f.evidence.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect();
                field("evidence:", wrap(&ev.join("  "), text));
            }
            if previous == Some(f.name) {
                field("", vec!["(meaning, next and fix as above)".into()]);
            } else {
                field("meaning:", wrap(f.meaning, text));
                let cmds: Vec<String> = f.next.iter().flat_map(|c| command_lines(c, text)).collect();
                field("next:", cmds);
                field("fix:", wrap(&f.fix, text));
            }
            field("runbook:", vec![f.runbook.clone()]);
            previous = Some(f.name);
        }
        let oks: Vec<&Finding> = self.findings.iter().filter(|f| f.verdict == Verdict::Ok).collect();
        // Name and text side by side on a wide terminal, stacked on a narrow one.
        let name_col = 38;
        let side = width >= name_col + 6 + 50;
        let text_width = if side { width - name_col - 6 } else { width - 5 };
        let row = |out: &mut String, lead: &str, name: &str, text: &str| {
            let lines = wrap(text, text_width);
            if side {
                for (i, line) in lines.iter().enumerate() {
                    let (lead, name) = if i == 0 { (lead, name) } else { ("  ", "") };
                    let _ = writeln!(out, "  {lead} {name:<name_col$} {line}");
                }
            } else {
                let _ = writeln!(out, "  {lead} {name}");
                for line in lines {
                    let _ = writeln!(out, "     {line}");
                }
            }
        };
        if !oks.is_empty() {
            let _ = writeln!(out, "\nPassed:");
            let ok = paint(Verdict::Ok, "ok");
            for f in oks {
                row(&mut out, &ok, f.name, &f.summary);
            }
        }
        if !self.unchecked.is_empty() {
            let _ = writeln!(out, "\nCould not check:");
            // Checks of one area skipped for one reason are one line.
            let mut groups: Vec<(&str, String, Vec<&str>)> = Vec::new();
            for u in &self.unchecked {
                let text = format!("{}: {}", u.kind, u.reason);
                match groups.iter_mut().find(|(a, t, _)| *a == u.area && *t == text) {
                    Some(g) => g.2.push(u.name),
                    None => groups.push((u.area, text, vec![u.name])),
                }
            }
            for (area, text, names) in groups {
                let name =
                    if names.len() == 1 { names[0].to_string() } else { format!("{area} ({} checks)", names.len()) };
                row(&mut out, "--", &name, &text);
            }
        }
        let c = &self.counts;
        let total = format!(
            "{}: {} critical, {} warning, {} info, {} passed, {} not checked (exit {})",
            self.verdict.as_str().to_uppercase(),
            c.critical,
            c.warning,
            c.info,
            c.ok,
            c.unchecked,
            self.exit_code
        );
        out.push('\n');
        for (i, line) in wrap(&total, width).into_iter().enumerate() {
            let line = if i == 0 {
                let (head, rest) = line.split_once(':').unwrap_or((&line, ""));
                format!("{}:{rest}", paint(self.verdict, head))
            } else {
                line
            };
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

fn area_rank(area: &str) -> usize {
    AREAS.iter().position(|a| *a == area).unwrap_or(AREAS.len())
}

/// A JSON value as a person reads it: strings unquoted, whole numbers without a decimal point.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "?".into(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            Some(f) if f.abs() >= 100.0 => format!("{f:.0}"),
            Some(f) => format!("{}", (f * 1000.0).round() / 1000.0),
            None => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A shell command in lines of at most `width`, continued with ` \\` (a trailing `# comment` is never split).
fn command_lines(cmd: &str, width: usize) -> Vec<String> {
    let cmd = format!("$ {cmd}");
    if cmd.chars().count() <= width {
        return vec![cmd];
    }
    let (code, comment) = match cmd.find("  # ") {
        Some(i) => (cmd[..i].to_string(), Some(cmd[i + 2..].to_string())),
        None => (cmd.clone(), None),
    };
    let mut lines = wrap_words(&code, width.saturating_sub(2));
    let n = lines.len();
    for (i, l) in lines.iter_mut().enumerate() {
        if i + 1 < n {
            l.push_str(" \\");
        }
        if i > 0 {
            l.insert_str(0, "  ");
        }
    }
    if let Some(c) = comment {
        lines.extend(
            wrap_words(&c, width.saturating_sub(2))
                .into_iter()
                .enumerate()
                .map(|(i, l)| if i == 0 { l } else { format!("# {l}") }),
        );
    }
    lines
}

/// Greedy word wrap at `width` characters. A word longer than the width (a path under a long checkout, a socket
/// address) is broken after its last `/` that fits, or at the width, so the promise of 100 columns holds.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(20);
    let words = text.split_whitespace().flat_map(|w| split_long_word(w, width));
    fill(words, width)
}

/// Greedy word wrap that never splits a word: for shell commands, where a split word would change the command.
fn wrap_words(text: &str, width: usize) -> Vec<String> {
    fill(text.split_whitespace().map(str::to_string), width.max(20))
}

fn fill(words: impl Iterator<Item = String>, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in words {
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Pieces of at most `width` characters; each piece but the last ends at a `/` when one falls in its second half.
fn split_long_word(word: &str, width: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest: Vec<char> = word.chars().collect();
    while rest.len() > width {
        let cut = rest[width / 2..width].iter().rposition(|&c| c == '/').map_or(width, |i| width / 2 + i + 1);
        pieces.push(rest.drain(..cut).collect());
    }
    pieces.push(rest.into_iter().collect());
    pieces
}

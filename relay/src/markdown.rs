//! Neutralising text that comes from alerts before it is placed into a robot's markdown.
//!
//! Label values and annotations are written by whoever controls the alerting rules or the monitored software; they
//! must not be able to add links, headings or emphasis to the message, nor mention people. So:
//! - markdown punctuation is backslash-escaped;
//! - `@` becomes the full-width `＠` and `<`/`>` become `＜`/`＞`, so neither a DingTalk `@mobile` nor a WeCom
//!   `<@userid>` can be formed by alert text (mentions are only ever added by the relay, from its configuration);
//! - control characters are dropped; in single-line fields line breaks become spaces.
//!
//! Links (runbook, source, silence) are sanitised separately: only http(s), and the characters that could end a
//! markdown link target are percent-encoded.

const ESCAPED: &[char] = &['\\', '`', '*', '_', '[', ']', '(', ')', '#', '~', '|', '!', '{', '}'];

/// Neutralise alert text for one line of markdown.
pub fn inline(s: &str) -> String {
    escape(s, false)
}

/// Neutralise alert text that may span several lines (descriptions).
pub fn block(s: &str) -> String {
    escape(s.trim(), true)
}

fn escape(s: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '@' => out.push('＠'),
            '<' => out.push('＜'),
            '>' => out.push('＞'),
            '\n' if keep_newlines => out.push('\n'),
            '\n' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c if ESCAPED.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Plain text (DingTalk's title): no markdown, but still no mentions and no line breaks.
pub fn plain(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '@' => Some('＠'),
            '\n' | '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

/// An http(s) URL made safe as a markdown link target, or `None` when the text is not such a URL.
pub fn link_target(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw.trim()).ok()?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return None;
    }
    let mut out = String::with_capacity(raw.len());
    for c in url.as_str().chars() {
        match c {
            '(' => out.push_str("%28"),
            ')' => out.push_str("%29"),
            ' ' => out.push_str("%20"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            '[' => out.push_str("%5B"),
            ']' => out.push_str("%5D"),
            '`' => out.push_str("%60"),
            '@' => out.push_str("%40"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

/// Percent-encode a query parameter value.
pub fn query_value(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_cannot_be_forged() {
        let s = inline("ping @13800000000 and <@all> <@zhangsan> @all");
        assert!(!s.contains('@'), "{s}");
        assert!(!s.contains('<'), "{s}");
        assert!(s.contains("＠13800000000"));
    }

    #[test]
    fn markdown_is_escaped() {
        assert_eq!(inline("[x](http://e)"), "\\[x\\]\\(http://e\\)");
        assert_eq!(inline("**b** _i_"), "\\*\\*b\\*\\* \\_i\\_");
        assert_eq!(inline("a\n# h"), "a \\# h");
        assert_eq!(block("a\n# h"), "a\n\\# h");
        assert_eq!(inline("a\u{0}b\u{7}c"), "abc");
        assert_eq!(inline("中文，没问题"), "中文，没问题");
    }

    #[test]
    fn links() {
        assert_eq!(link_target("javascript:alert(1)"), None);
        assert_eq!(link_target("not a url"), None);
        let l = link_target("http://h/x?q=a) [y](z").unwrap();
        assert!(!l.contains(')') && !l.contains(' ') && !l.contains('['), "{l}");
        assert_eq!(link_target("https://wiki/run book").unwrap(), "https://wiki/run%20book");
    }
}

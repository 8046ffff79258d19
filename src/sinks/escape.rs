//! Escaping of untrusted text (paths, comm names, profile names from the log) for each output
//! language, and truncation of oversized values with an explicit marker.
//!
//! Every value that came from a log is hostile: it may contain control characters, CR/LF, ANSI
//! escapes, bidi overrides or markup (`<!channel>`, `@everyone`, `*bold*`). Each function here
//! returns text that, placed where its name says, shows the value and does nothing else.

use std::fmt::Write as _;

/// The default limit for one value inside a message (characters).
pub const MAX_VALUE_CHARS: usize = 512;

/// The marker appended to a truncated value (followed by the number of characters cut).
pub const TRUNCATED_MARKER: &str = "…[truncated";

/// Cut `s` to at most `max_chars` characters; when cut, append `…[truncated N chars]`.
pub fn truncate(s: &str, max_chars: usize) -> String {
    let total = s.chars().count();
    if total <= max_chars {
        return s.to_string();
    }
    let kept: String = s.chars().take(max_chars).collect();
    format!("{kept}{TRUNCATED_MARKER} {} chars]", total - max_chars)
}

/// True for characters that can change how the surrounding text is shown: C0/C1 controls, DEL,
/// bidi embeddings/overrides/isolates, zero-width and line/paragraph separators.
fn is_invisible_or_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
        )
}

/// Make control characters visible (`\n`, `\r`, `\t`, `\e`, `\xNN`, `\u{NNNN}`) so that a value
/// stays on one line and cannot move the cursor, recolour a terminal or reorder text. The
/// backslash itself is doubled only where it would otherwise be ambiguous (`\\x`, `\\u`, …).
pub fn visible(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{1b}' => out.push_str("\\e"),
            '\\' => {
                // Keep ordinary backslashes readable; double one that could be read as an escape.
                if matches!(chars.peek(), Some('n' | 'r' | 't' | 'e' | 'x' | 'u' | '\\')) {
                    out.push_str("\\\\");
                } else {
                    out.push('\\');
                }
            }
            c if is_invisible_or_control(c) => {
                let n = c as u32;
                if n < 0x100 {
                    let _ = write!(out, "\\x{n:02X}");
                } else {
                    let _ = write!(out, "\\u{{{n:04X}}}");
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// A value for a terminal or a plain-text body: control characters visible, truncated.
pub fn plain(s: &str, max_chars: usize) -> String {
    visible(&truncate(s, max_chars))
}

/// Slack mrkdwn text: `&`, `<`, `>` become entities (so `<!channel>`, `<@U1>` and `<url|text>`
/// are inert). Slack has no escape for `*_~` and backticks, so they are replaced by look-alike
/// forms; prefer [`slack_code`] for values where the exact characters matter.
pub fn slack_mrkdwn(s: &str, max_chars: usize) -> String {
    let v = plain(s, max_chars);
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // Slack has no backslash escape; full-width forms show the same character without
            // turning the rest of the line bold/italic/struck/code.
            '*' => out.push('∗'),
            '_' => out.push('＿'),
            '~' => out.push('～'),
            '`' => out.push('ˋ'),
            c => out.push(c),
        }
    }
    out
}

/// Slack: a value inside an inline code span (`` `value` ``): entities for `&<>`, backticks
/// replaced (they would end the span). Returns the span including its backticks.
pub fn slack_code(s: &str, max_chars: usize) -> String {
    let v = plain(s, max_chars);
    let mut out = String::with_capacity(v.len() + 2);
    out.push('`');
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push('ˋ'),
            c => out.push(c),
        }
    }
    out.push('`');
    out
}

/// Slack: the inside of a ```` ``` ```` code block (several lines allowed; each line's control
/// characters made visible; `&<>` as entities; runs of backticks broken).
pub fn slack_code_block(s: &str, max_chars: usize) -> String {
    let t = truncate(s, max_chars);
    let lines: Vec<String> = t.split('\n').map(visible).collect();
    let joined = lines.join("\n");
    let mut out = String::with_capacity(joined.len());
    for c in joined.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '`' => out.push('ˋ'),
            c => out.push(c),
        }
    }
    out
}

/// Characters with a meaning in Discord's and Teams' markdown.
const MARKDOWN_SPECIAL: &[char] = &[
    '\\', '*', '_', '~', '`', '|', '>', '<', '#', '-', '+', '[', ']', '(', ')', '!', ':', '.', '=',
];

/// Discord markdown: every markdown character backslash-escaped and `@` followed by a zero-width
/// space so `@everyone`/`@here` cannot ping (the payload also sets `allowed_mentions` to none).
pub fn discord(s: &str, max_chars: usize) -> String {
    let v = plain(s, max_chars);
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        if MARKDOWN_SPECIAL.contains(&c) {
            out.push('\\');
            out.push(c);
        } else if c == '@' {
            out.push_str("@\u{200B}");
        } else {
            out.push(c);
        }
    }
    out
}

/// Discord/Teams: the inside of a ```` ``` ```` code block; backtick runs broken, each line made
/// visible.
pub fn code_block(s: &str, max_chars: usize) -> String {
    let t = truncate(s, max_chars);
    t.split('\n')
        .map(|l| visible(l).replace('`', "ˋ"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Teams Adaptive Card `TextBlock` (a markdown subset): markdown characters backslash-escaped,
/// `<`/`>` replaced by entities so nothing reads as a tag (`<at>` mentions).
pub fn teams(s: &str, max_chars: usize) -> String {
    let v = plain(s, max_chars);
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c if MARKDOWN_SPECIAL.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// HTML text or attribute value: `& < > " '` as entities, control characters visible.
pub fn html(s: &str, max_chars: usize) -> String {
    let v = plain(s, max_chars);
    let mut out = String::with_capacity(v.len() + 8);
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An email header value (before RFC 2047 encoding, which the mail builder applies to non-ASCII
/// text): no CR, LF or other control character survives; values are truncated so the header
/// stays well under the line limits.
pub fn header(s: &str, max_chars: usize) -> String {
    plain(s, max_chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_has_marker_and_count() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcdef", 3), "abc…[truncated 3 chars]");
        // Character-, not byte-based: never splits UTF-8.
        assert_eq!(truncate("ééé", 1), "é…[truncated 2 chars]");
    }

    #[test]
    fn visible_controls() {
        assert_eq!(visible("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(visible("\u{1b}[31mred"), "\\e[31mred");
        assert_eq!(visible("x\u{7f}\u{85}"), "x\\x7F\\x85");
        assert_eq!(visible("rtl\u{202E}gnp.exe"), "rtl\\u{202E}gnp.exe");
        assert_eq!(visible("C:\\dir"), "C:\\dir");
        assert_eq!(visible("a\\nb"), "a\\\\nb");
    }

    #[test]
    fn slack_is_inert() {
        let s = slack_mrkdwn("<!channel> *boom* & <https://x|y>", 100);
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('*'));
        assert!(s.contains("&lt;!channel&gt;"));
        let c = slack_code("a`b<!here>", 100);
        assert_eq!(c, "`aˋb&lt;!here&gt;`");
        let b = slack_code_block("```\n<!channel>", 100);
        assert!(!b.contains('`') && !b.contains('<'));
    }

    #[test]
    fn discord_is_inert() {
        let s = discord("@everyone **x** [a](http://e)", 100);
        assert!(s.contains("@\u{200B}everyone"));
        assert!(s.contains("\\*\\*x\\*\\*"));
        assert!(s.contains("\\[a\\]\\(http\\:"));
    }

    #[test]
    fn html_and_teams() {
        assert_eq!(
            html("<b a='1'>&\"", 100),
            "&lt;b a=&#39;1&#39;&gt;&amp;&quot;"
        );
        assert_eq!(teams("<at>x</at>", 100), "&lt;at&gt;x&lt;/at&gt;");
        assert_eq!(teams("**x**", 100), "\\*\\*x\\*\\*");
    }

    #[test]
    fn header_has_no_line_breaks() {
        let h = header("subject\r\nBcc: evil@example.com", 100);
        assert!(!h.contains('\r') && !h.contains('\n'));
    }
}

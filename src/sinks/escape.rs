//! Escaping of untrusted text (paths, comm names, profile names from the log) for each output
//! language, and truncation of oversized values with an explicit marker.
//!
//! Every value that came from a log is hostile: it may contain control characters, CR/LF, ANSI
//! escapes, bidi overrides or markup (`<!channel>`, `@everyone`, `*bold*`). Each function here
//! returns text that, placed where its name says, shows the value and does nothing else.

use std::borrow::Cow;
use std::fmt::Write as _;

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

/// The length a receiver checks a text against, in UTF-16 code units (JavaScript's `length`).
/// Never less than the number of characters, so a text within a limit counted this way is
/// within it however the receiver counts (Slack's and Discord's documents say "characters").
pub fn units(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// `render(s, n)` for the largest `n <= max_chars` whose result is at most `max_units` long
/// ([`units`]). `render` keeps `n` characters of `s` (cutting with [`truncate`]'s marker) and
/// escapes them; the limit applies to its final text, escapes and marker included, because that
/// is what the receiver checks: escaping can make a value eight times longer (`\u{202E}`).
pub fn fit(
    s: &str,
    max_chars: usize,
    max_units: usize,
    render: impl Fn(&str, usize) -> String,
) -> String {
    let top = max_chars.min(s.chars().count());
    let out = render(s, top);
    if units(&out) <= max_units {
        return out;
    }
    // Cut renderings (n below the length of `s`) grow with n: one more character kept adds at
    // least one unit, while the marker's count loses at most one digit. Only renderings that
    // were measured are returned, so the result fits even where that does not hold.
    let (mut lo, mut hi) = (0, top);
    let mut best = None;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let r = render(s, mid);
        if units(&r) <= max_units {
            best = Some(r);
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    best.unwrap_or_else(|| cap(&render(s, 0), max_units))
}

/// Cut an already escaped text to at most `max_units` ([`units`]), marker included, without
/// ending inside an escape (`\` of a backslash escape, `&…` of an entity).
pub fn cap(s: &str, max_units: usize) -> String {
    if units(s) <= max_units {
        return s.to_string();
    }
    let total = s.chars().count();
    // The marker with the largest count it can carry.
    let Some(room) = max_units.checked_sub(units(&format!("{TRUNCATED_MARKER} {total} chars]")))
    else {
        // No room even for the marker (never with the receivers' limits): a bare cut.
        return take_units(s, max_units);
    };
    let mut kept = take_units(s, room);
    // An entity is at most six characters (`&quot;`): only a `&` that close can start one.
    if let Some(amp) = kept
        .rfind('&')
        .filter(|&i| kept.len() - i < 6 && !kept[i..].contains(';'))
    {
        kept.truncate(amp);
    }
    if (kept.len() - kept.trim_end_matches('\\').len()) % 2 == 1 {
        kept.pop();
    }
    let cut = total - kept.chars().count();
    format!("{kept}{TRUNCATED_MARKER} {cut} chars]")
}

/// The longest prefix of `s` at most `max_units` long.
fn take_units(s: &str, max_units: usize) -> String {
    let mut used = 0;
    s.chars()
        .take_while(|c| {
            used += c.len_utf16();
            used <= max_units
        })
        .collect()
}

/// `head`, then the `lines` one per line while they fit in `max_units` ([`units`]), then
/// `… and N more` for those of the `total` items not listed (room for it is kept).
pub fn listing(
    head: String,
    lines: impl IntoIterator<Item = String>,
    total: usize,
    max_units: usize,
) -> String {
    listing_by(head, lines, total, max_units, units)
}

/// [`listing`] with lengths measured by `measure` (UTF-16 units, bytes, …) against `max`.
pub fn listing_by(
    head: String,
    lines: impl IntoIterator<Item = String>,
    total: usize,
    max: usize,
    measure: impl Fn(&str) -> usize,
) -> String {
    let reserve = measure(&format!("\n… and {total} more"));
    let mut used = measure(&head);
    let mut out = head;
    let mut listed = 0;
    for line in lines {
        let after = used + 1 + measure(&line);
        let room_for_more = if listed + 1 == total { 0 } else { reserve };
        if after + room_for_more > max {
            break;
        }
        out.push('\n');
        out.push_str(&line);
        used = after;
        listed += 1;
    }
    if listed < total {
        out.push_str(&format!("\n… and {} more", total - listed));
    }
    out
}

/// Characters a terminal acts on that JSON leaves raw, by the leading byte of their UTF-8
/// form: DEL, C1 controls (U+0080–U+009F, `C2 80`–`C2 9F`; U+009B is a CSI), and zero-width,
/// line-separator and bidi characters (U+200B–U+200F, U+2028–U+202E, U+2060–U+2069: `E2 80`
/// or `E2 81`).
fn terminal_active(c: char) -> bool {
    matches!(
        c,
        '\u{7F}'..='\u{9F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
    )
}

/// Append `value` to `out` as one JSON line (newline included), through [`json_for_terminal`].
/// On an error nothing is appended. The line is rewritten only when one of the bytes that start
/// such a character is in it (one byte scan, no UTF-8 check otherwise).
pub fn push_json_line(out: &mut Vec<u8>, value: &impl serde::Serialize) -> serde_json::Result<()> {
    let mark = out.len();
    if let Err(e) = serde_json::to_writer(&mut *out, value) {
        out.truncate(mark);
        return Err(e);
    }
    if memchr::memchr3(0x7F, 0xC2, 0xE2, &out[mark..]).is_some() {
        let safe = std::str::from_utf8(&out[mark..])
            .ok()
            .and_then(|line| match json_for_terminal(line) {
                Cow::Owned(safe) => Some(safe),
                Cow::Borrowed(_) => None,
            });
        if let Some(safe) = safe {
            out.truncate(mark);
            out.extend_from_slice(safe.as_bytes());
        }
    }
    out.push(b'\n');
    Ok(())
}

/// A JSON text (one line, as serde_json writes it) with the characters a terminal would act on
/// (DEL, C1 controls, zero-width, line-separator and bidi characters) written as `\uXXXX`: the
/// same JSON value, safe to `tail -f`. Such characters only occur inside strings (JSON's
/// structure is ASCII), where `\uXXXX` means the same character. Borrowed, after one byte scan,
/// when there is none (the usual case).
pub fn json_for_terminal(json: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut done = 0;
    for i in memchr::memchr3_iter(0x7F, 0xC2, 0xE2, json.as_bytes()) {
        // Those bytes start a character (UTF-8 continuation bytes are 0x80–0xBF).
        let Some(c) = json[i..].chars().next().filter(|&c| terminal_active(c)) else {
            continue;
        };
        out.push_str(&json[done..i]);
        let _ = write!(out, "\\u{:04x}", c as u32);
        done = i + c.len_utf8();
    }
    if out.is_empty() {
        return Cow::Borrowed(json);
    }
    out.push_str(&json[done..]);
    Cow::Owned(out)
}

/// True for characters that can change how the surrounding text is shown: C0/C1 controls, DEL,
/// bidi embeddings/overrides/isolates, zero-width and line/paragraph separators.
pub fn is_invisible_or_control(c: char) -> bool {
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
/// stays well under the line limits. An `=?` is written `=？` (a full-width question mark): the
/// builder leaves ASCII words as they are, so a value holding an encoded-word of its own
/// (`=?utf-8?b?4oCu…?=`) was decoded by the reader's mail client into whatever it encodes — a
/// right-to-left override, say — past the escaping.
pub fn header(s: &str, max_chars: usize) -> String {
    let v = plain(s, max_chars);
    if v.contains("=?") {
        v.replace("=?", "=\u{FF1F}")
    } else {
        v
    }
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

    /// An encoded-word in a value reaches the Subject as text, not as something the mail client
    /// decodes (here into U+202E, the right-to-left override).
    #[test]
    fn header_values_carry_no_encoded_words() {
        let hostile = "DENIED open /tmp/=?utf-8?b?4oCuZXhlLmdwag==?= x";
        let msg = lettre::Message::builder()
            .from("a@example.com".parse().unwrap())
            .to("b@example.com".parse().unwrap())
            .subject(header(hostile, 150))
            .body(String::new())
            .unwrap();
        let text = String::from_utf8(msg.formatted()).unwrap();
        let subject = text.lines().find(|l| l.starts_with("Subject:")).unwrap();
        assert!(!subject.contains("=?utf-8?b?4oCu"), "{subject}");
        assert!(
            subject.contains("=?utf-8?"),
            "the builder encodes the word itself: {subject}"
        );
    }

    #[test]
    fn fit_measures_the_escaped_text_with_its_marker() {
        // 300 × U+202E: each becomes `\u{202E}` (8 characters) once made visible.
        let rlo = "\u{202E}".repeat(300);
        let out = fit(&rlo, 300, 2000, slack_code);
        assert!(units(&out) <= 2000, "{}", units(&out));
        assert!(
            out.starts_with('`') && out.ends_with('`'),
            "the span stays closed"
        );
        assert!(out.contains(TRUNCATED_MARKER));
        // Close to the limit, not far below it.
        assert!(units(&out) > 1990, "{}", units(&out));
        // What fits is kept whole, and `max_chars` still applies.
        assert_eq!(fit("abc", 10, 5, plain), "abc");
        assert_eq!(fit("abcdef", 3, 100, plain), "abc…[truncated 3 chars]");
        // Astral characters count two units.
        let emoji = "\u{1F600}".repeat(100);
        assert!(units(&fit(&emoji, 100, 150, plain)) <= 150);
    }

    #[test]
    fn cap_never_ends_inside_an_escape() {
        assert_eq!(cap("short", 10), "short");
        let s = format!("{}&amp;{}", "x".repeat(20), "tail".repeat(10));
        // Room for 23 characters (a 21-unit marker): the cut falls inside `&amp;`.
        let c = cap(&s, 44);
        assert!(c.starts_with(&"x".repeat(20)) && !c.contains('&'), "{c}");
        // Room for 21: the cut falls after the backslash of `\*`.
        let d = cap(&format!("{}\\*{}", "y".repeat(20), "rest".repeat(10)), 42);
        assert!(!d.contains('\\'), "{d}");
        assert!(units(&cap(&"z".repeat(50), 40)) <= 40);
        assert_eq!(cap(&"z".repeat(50), 5), "zzzzz");
    }

    #[test]
    fn json_for_terminal_escapes_what_a_terminal_acts_on() {
        let v =
            serde_json::json!({"o": "a\u{9B}31mb\u{7F}\u{202E}c\u{2066}d\u{85}é€\u{200B}\u{2028}"});
        let raw = serde_json::to_string(&v).unwrap();
        let safe = json_for_terminal(&raw);
        assert!(!safe.chars().any(terminal_active), "{safe}");
        assert!(safe.contains("\\u009b") && safe.contains("\\u007f") && safe.contains("\\u202e"));
        assert!(safe.contains("é€"), "other characters stay as they are");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, v);
        // Nothing to do: borrowed.
        assert!(matches!(
            json_for_terminal(r#"{"a":"é"}"#),
            Cow::Borrowed(_)
        ));
    }
}

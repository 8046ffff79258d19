//! Splitting a record body into `key=value` pairs the way the kernel and auditd write them.
//!
//! Values come quoted (`"…"`, no escapes inside: the kernel hex-encodes any value that would need
//! one), single-quoted (`msg='…'` of user-space records), hex-encoded without quotes (untrusted
//! strings containing a space, a quote, a control character or a byte above 0x7e), or bare.
//! Real records also carry doubled spaces (`capability=0  capname="chown"`) and, from some
//! writers, no space at all after a closing quote (`profile="x"name="/tmp/"`).

use std::borrow::Cow;

/// Why a body could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A quote opened at this byte offset is never closed.
    #[error("unterminated {quote} quote in the value of `{key}`")]
    Unterminated {
        /// The key whose value is unterminated.
        key: String,
        /// `"` or `'`.
        quote: char,
    },
    /// Text that is not `key=value` where a field was expected.
    #[error("expected key=value, found {found:?}")]
    NotAField {
        /// The offending text (shortened).
        found: String,
    },
}

/// One field as it appears in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawField<'a> {
    /// The key.
    pub key: &'a str,
    /// The value without its quotes.
    pub value: &'a str,
    /// The quote the value was written with: `"`, `'`, or none.
    pub quote: Option<char>,
}

/// How to split a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Kernel and auditd raw records.
    Raw,
    /// `ausearch -i`: values are already interpreted and written without quotes, so a value may
    /// contain spaces; it runs up to the next ` key=`.
    Interpreted,
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'
}

/// Split `body` into fields. Stops at the auditd ENRICHED separator (0x1d); the caller handles
/// what follows it. Stray tokens without `=` are an error.
pub fn split(body: &str, style: Style) -> Result<Vec<RawField<'_>>, FieldError> {
    let mut out: Vec<RawField<'_>> = Vec::with_capacity(16);
    let bytes = body.as_bytes();
    let mut i = 0;
    let n = bytes.len();
    // The last bare value, so that `subj=snap.x.y (enforce)` (a label with its mode, written
    // without quotes by audit) keeps its `(mode)` suffix.
    let mut last_bare: Option<usize> = None;
    while i < n {
        // Skip separators (spaces, doubled spaces, tabs, newlines). A comma is no separator:
        // in `(hostname=?, addr=?)` it stays on the bare value before it (`?,`).
        while i < n && (bytes[i] == b' ' || bytes[i] == b'\t' || bytes[i] == b'\n') {
            i += 1;
        }
        if i >= n || bytes[i] == 0x1d {
            break;
        }
        let key_start = i;
        while i < n && is_key_byte(bytes[i]) {
            i += 1;
        }
        if i == key_start && bytes[i] == b'(' {
            if let (Some(value_start), Some(last)) = (last_bare, out.last_mut()) {
                let end = memchr::memchr(b')', &bytes[i..]).map_or(n, |p| i + p + 1);
                last.value = &body[value_start..end];
                i = end;
                continue;
            }
        }
        if i == key_start || i >= n || bytes[i] != b'=' {
            let end = body[key_start..]
                .find(' ')
                .map_or(n, |p| key_start + p)
                .min(key_start + 40);
            let end = floor_char_boundary(body, end);
            return Err(FieldError::NotAField {
                found: body[key_start..end].to_string(),
            });
        }
        let key = &body[key_start..i];
        i += 1; // '='
        if i < n && (bytes[i] == b'"' || bytes[i] == b'\'') {
            let quote = bytes[i];
            let value_start = i + 1;
            match memchr::memchr(quote, &bytes[value_start..]) {
                Some(len) => {
                    out.push(RawField {
                        key,
                        value: &body[value_start..value_start + len],
                        quote: Some(quote as char),
                    });
                    last_bare = None;
                    i = value_start + len + 1;
                }
                None => {
                    return Err(FieldError::Unterminated {
                        key: key.to_string(),
                        quote: quote as char,
                    });
                }
            }
        } else {
            let value_start = i;
            let end = match style {
                Style::Raw => {
                    while i < n && !matches!(bytes[i], b' ' | b'\t' | b'\n' | 0x1d) {
                        i += 1;
                    }
                    i
                }
                Style::Interpreted => {
                    let end = next_interpreted_key(bytes, value_start);
                    i = end;
                    // Trim the space(s) before the next key.
                    let mut e = end;
                    while e > value_start && bytes[e - 1] == b' ' {
                        e -= 1;
                    }
                    e
                }
            };
            out.push(RawField {
                key,
                value: &body[value_start..end],
                quote: None,
            });
            last_bare = Some(value_start);
        }
    }
    Ok(out)
}

/// In interpreted output, find where the value starting at `from` ends: at the next
/// ` identifier=` or the end of the body.
fn next_interpreted_key(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < bytes.len() {
        if bytes[i] == 0x1d {
            return i;
        }
        if bytes[i] == b' ' {
            let mut j = i;
            while j < bytes.len() && bytes[j] == b' ' {
                j += 1;
            }
            let k = j;
            let mut m = k;
            if m < bytes.len() && bytes[m].is_ascii_lowercase() {
                while m < bytes.len()
                    && (bytes[m].is_ascii_lowercase()
                        || bytes[m].is_ascii_digit()
                        || bytes[m] == b'_')
                {
                    m += 1;
                }
            }
            if m > k && m < bytes.len() && bytes[m] == b'=' {
                return i;
            }
            i = j;
            continue;
        }
        i += 1;
    }
    bytes.len()
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Keys whose values the kernel or audit user space writes with `audit_log_untrustedstring`,
/// i.e. hex-encoded without quotes when they contain unsafe bytes.
pub fn is_untrusted_key(key: &str) -> bool {
    matches!(
        key,
        "profile"
            | "label"
            | "name"
            | "name2"
            | "comm"
            | "target"
            | "peer"
            | "peer_label"
            | "peer_profile"
            | "namespace"
            | "addr"
            | "peer_addr"
            | "exe"
            | "execpath"
            | "srcname"
            | "fstype"
            | "tcontext"
            | "path"
            | "interface"
            | "member"
            | "method"
            | "bus"
            | "cwd"
            | "proctitle"
            | "cmd"
            | "key"
            | "subj"
            | "info"
    )
}

/// Decode an unquoted hex string (uppercase or lowercase digits, even length). None when `value`
/// is not hex.
pub fn decode_hex(value: &str) -> Option<Vec<u8>> {
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() % 2 != 0 || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 2);
    for pair in bytes.chunks_exact(2) {
        let hi = hex_val(pair[0])?;
        let lo = hex_val(pair[1])?;
        out.push(hi << 4 | lo);
    }
    Some(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The decoded value of a field: quotes removed; unquoted untrusted values hex-decoded.
/// Invalid UTF-8 after hex decoding is replaced with U+FFFD (the raw line keeps the original).
pub fn decode_value<'a>(field: &RawField<'a>) -> Cow<'a, str> {
    if field.quote.is_none() && is_untrusted_key(field.key) && looks_hex(field.value) {
        if let Some(bytes) = decode_hex(field.value) {
            return Cow::Owned(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    Cow::Borrowed(field.value)
}

/// A value the kernel hex-encoded: digits and uppercase A–F only, even length. Lowercase or other
/// letters mean a bare word (`none`, `unconfined`, `?`).
fn looks_hex(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() % 2 == 0
        && b.iter()
            .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
}

/// Decode a PROCTITLE value into argv: hex with NUL separators, or a quoted plain string.
pub fn decode_proctitle(value: &str, quoted: bool) -> Vec<String> {
    if !quoted {
        if let Some(bytes) = decode_hex(value) {
            // NUL-separated; the kernel trims trailing NULs (`audit_proctitle_rtrim`), and an
            // empty argument between two others stays one.
            let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
            if end == 0 {
                return Vec::new();
            }
            return bytes[..end]
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
        }
    }
    vec![value.to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(body: &str) -> Vec<(String, String)> {
        split(body, Style::Raw)
            .unwrap()
            .iter()
            .map(|f| (f.key.to_string(), decode_value(f).into_owned()))
            .collect()
    }

    #[test]
    fn quoted_bare_and_doubled_spaces() {
        let f = kv(r#"operation="capable" pid=114 comm="chown" capability=0  capname="chown""#);
        assert_eq!(f[3], ("capability".into(), "0".into()));
        assert_eq!(f[4], ("capname".into(), "chown".into()));
    }

    #[test]
    fn missing_space_after_quote() {
        let f = kv(r#"profile="x"name="/tmp/" pid=1"#);
        assert_eq!(f[0], ("profile".into(), "x".into()));
        assert_eq!(f[1], ("name".into(), "/tmp/".into()));
    }

    #[test]
    fn hex_values_decoded_only_for_untrusted_keys() {
        let f = kv("profile=74657374207370616365 pid=1234 name=2F746D70");
        assert_eq!(f[0].1, "test space");
        assert_eq!(f[1].1, "1234");
        assert_eq!(f[2].1, "/tmp");
    }

    #[test]
    fn bare_words_are_not_hex() {
        let f = kv("addr=none peer=unconfined name=ADD");
        assert_eq!(f[0].1, "none");
        assert_eq!(f[1].1, "unconfined");
        assert_eq!(f[2].1, "ADD");
    }

    #[test]
    fn multi_word_values() {
        let f = kv(r#"requested="send receive" flags="rw, nosuid""#);
        assert_eq!(f[0].1, "send receive");
        assert_eq!(f[1].1, "rw, nosuid");
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        assert!(matches!(
            split(r#"name="/tmp/x pid=1"#, Style::Raw),
            Err(FieldError::Unterminated { .. })
        ));
    }

    #[test]
    fn stops_at_enriched_separator() {
        let f = split("fsuid=1000 ouid=0\u{1d}FSUID=\"otis\"", Style::Raw).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].value, "0");
    }

    #[test]
    fn interpreted_values_with_spaces() {
        let f = split(
            "apparmor=DENIED operation=open info=Failed name lookup - disconnected path error=-13 profile=/usr/bin/x",
            Style::Interpreted,
        )
        .unwrap();
        assert_eq!(f[2].value, "Failed name lookup - disconnected path");
        assert_eq!(f[3].value, "-13");
        assert_eq!(f[4].value, "/usr/bin/x");
    }

    #[test]
    fn label_with_mode_suffix() {
        let f = kv("pid=1 subj=snap.chromium.chromium (enforce) key=(null)");
        assert_eq!(f[1].1, "snap.chromium.chromium (enforce)");
        assert_eq!(f[2].1, "(null)");
    }

    /// Regression: a bare value ran past a newline (a dbus USER_AVC's newline before ` exe=`,
    /// joined back by the parser), so `peer_pid=1\nexe="/x"` was one field holding both and
    /// `exe` was lost. Newlines separate fields; they end a bare value too.
    #[test]
    fn a_newline_ends_a_bare_value() {
        let f = kv("peer_pid=1\nexe=\"/usr/bin/dbus-daemon\" sauid=102\n");
        assert_eq!(
            f,
            [
                ("peer_pid".into(), "1".into()),
                ("exe".into(), "/usr/bin/dbus-daemon".into()),
                ("sauid".into(), "102".into())
            ]
        );
    }

    #[test]
    fn proctitle_argv() {
        assert_eq!(
            decode_proctitle("2F7573722F62696E2F6E6F6465002D66", false),
            vec!["/usr/bin/node", "-f"]
        );
        assert_eq!(decode_proctitle("/init", true), vec!["/init"]);
        // `sh -c '' x`: an empty argument is an argument (trailing NULs the kernel trims).
        assert_eq!(
            decode_proctitle("7368002D630000780000", false),
            vec!["sh", "-c", "", "x"]
        );
    }
}

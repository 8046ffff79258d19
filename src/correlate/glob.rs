//! AppArmor-style globs (`*`, `**`, `?`, `{a,b}`, `[…]`) used by severity.db, noise rules and
//! delivery policies.
//!
//! Semantics follow AppArmor's utils (`apparmor.common.convert_regexp`): `*` matches within one
//! path segment, `**` across segments, and a `*`/`**` directly after `/` must match at least one
//! character (so `/dev/*` does not match `/dev/`). Matching is linear in pattern × text (no
//! backtracking), because the text comes from logs and is hostile.

use std::fmt;

/// Patterns with more alternatives than this after `{…}` expansion are rejected.
const MAX_ALTERNATIVES: usize = 256;

/// A glob could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad glob {pattern:?}: {reason}")]
pub struct GlobError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`: one character other than `/`.
    One,
    /// One character (other than `/` unless `slash`).
    AnyOne {
        slash: bool,
    },
    /// Zero or more characters (other than `/` unless `slash`).
    Star {
        slash: bool,
    },
    /// `[…]`: ranges, negated with `^` or `!`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// One alternative after `{…}` expansion: the literal text before the first wildcard (checked
/// first, cheaply), then the tokens after it (None when the alternative is all literal).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Alternative {
    prefix: String,
    rest: Option<Vec<Token>>,
}

/// A compiled glob.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    alternatives: Vec<Alternative>,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.pattern)
    }
}

impl Glob {
    /// Compile `pattern`.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let err = |reason| GlobError {
            pattern: pattern.to_owned(),
            reason,
        };
        let expanded = expand_braces(pattern).map_err(err)?;
        let mut alternatives = Vec::with_capacity(expanded.len());
        for alt in &expanded {
            let toks = tokenize(alt).map_err(err)?;
            let n = toks
                .iter()
                .take_while(|t| matches!(t, Token::Char(_)))
                .count();
            let prefix: String = toks[..n]
                .iter()
                .filter_map(|t| match t {
                    Token::Char(c) => Some(*c),
                    _ => None,
                })
                .collect();
            let rest = (n < toks.len()).then(|| toks[n..].to_vec());
            alternatives.push(Alternative { prefix, rest });
        }
        Ok(Glob {
            pattern: pattern.to_owned(),
            alternatives,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// True when the glob has no wildcard at all (matches exactly one string).
    pub fn is_literal(&self) -> bool {
        self.alternatives.len() == 1 && self.alternatives[0].rest.is_none()
    }

    /// True when the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        self.alternatives.iter().any(|alt| {
            let Some(tail) = text.strip_prefix(alt.prefix.as_str()) else {
                return false;
            };
            match &alt.rest {
                None => tail.is_empty(),
                Some(toks) => {
                    let chars: Vec<char> = tail.chars().collect();
                    match_tokens(toks, &chars)
                }
            }
        })
    }
}

/// Expand `{a,b}` (nested allowed) into plain alternatives.
fn expand_braces(pattern: &str) -> Result<Vec<String>, &'static str> {
    let chars: Vec<char> = pattern.chars().collect();
    // Find the first top-level `{` that is not escaped.
    let mut i = 0;
    let mut open = None;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '@' if chars.get(i + 1) == Some(&'{') => i = skip_variable(&chars, i),
            '{' => {
                open = Some(i);
                break;
            }
            '}' => return Err("unbalanced '}'"),
            _ => {}
        }
        i += 1;
    }
    let Some(open) = open else {
        return Ok(vec![pattern.to_owned()]);
    };
    let mut depth = 0;
    let mut parts = Vec::new();
    let mut start = open + 1;
    let mut close = None;
    let mut j = open;
    while j < chars.len() {
        match chars[j] {
            '\\' => j += 1,
            '@' if chars.get(j + 1) == Some(&'{') => j = skip_variable(&chars, j),
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    parts.push(chars[start..j].iter().collect::<String>());
                    close = Some(j);
                    break;
                }
            }
            ',' if depth == 1 => {
                parts.push(chars[start..j].iter().collect::<String>());
                start = j + 1;
            }
            _ => {}
        }
        j += 1;
    }
    let close = close.ok_or("unbalanced '{'")?;
    let prefix: String = chars[..open].iter().collect();
    let suffix: String = chars[close + 1..].iter().collect();
    let mut out = Vec::new();
    for part in parts {
        for tail in expand_braces(&format!("{part}{suffix}"))? {
            out.push(format!("{prefix}{tail}"));
            if out.len() > MAX_ALTERNATIVES {
                return Err("too many alternatives");
            }
        }
    }
    Ok(out)
}

/// `@{name}` is a literal (the placeholders of normalised objects, AppArmor variables): return
/// the index of its closing `}` (or of the `@` when there is none, so `{` is read as usual).
fn skip_variable(chars: &[char], at: usize) -> usize {
    match chars[at + 1..].iter().position(|c| *c == '}') {
        Some(off) => at + 1 + off,
        None => at,
    }
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, &'static str> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                let next = chars.get(i + 1).ok_or("trailing '\\'")?;
                toks.push(Token::Char(*next));
                i += 2;
                continue;
            }
            '*' => {
                let slash = chars.get(i + 1) == Some(&'*');
                let after_slash = i == 0 || chars[i - 1] == '/';
                if after_slash && i > 0 {
                    toks.push(Token::AnyOne { slash });
                }
                toks.push(Token::Star { slash });
                i += if slash { 2 } else { 1 };
                // `***` and more behave like `**`.
                while chars.get(i) == Some(&'*') {
                    i += 1;
                }
                continue;
            }
            '@' if chars.get(i + 1) == Some(&'{') => {
                let end = skip_variable(&chars, i);
                toks.extend(chars[i..=end].iter().map(|c| Token::Char(*c)));
                i = end + 1;
                continue;
            }
            '?' => toks.push(Token::One),
            '[' => {
                let mut j = i + 1;
                let negated = matches!(chars.get(j), Some('^') | Some('!'));
                if negated {
                    j += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let c = *chars.get(j).ok_or("unterminated '['")?;
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    let lo = if c == '\\' {
                        j += 1;
                        *chars.get(j).ok_or("unterminated '['")?
                    } else {
                        c
                    };
                    if chars.get(j + 1) == Some(&'-') && chars.get(j + 2).is_some_and(|c| *c != ']')
                    {
                        let hi = chars[j + 2];
                        if hi < lo {
                            return Err("reversed range in '[…]'");
                        }
                        ranges.push((lo, hi));
                        j += 3;
                    } else {
                        ranges.push((lo, lo));
                        j += 1;
                    }
                }
                toks.push(Token::Class { negated, ranges });
                i = j + 1;
                continue;
            }
            _ => toks.push(Token::Char(c)),
        }
        i += 1;
    }
    Ok(toks)
}

/// Dynamic programming over (token, position), one row at a time: O(tokens × text), no
/// backtracking.
fn match_tokens(toks: &[Token], text: &[char]) -> bool {
    let n = text.len();
    // next[j]: tokens[i+1..] match text[j..]
    let mut next = vec![false; n + 1];
    next[n] = true;
    let mut cur = vec![false; n + 1];
    for tok in toks.iter().rev() {
        match tok {
            Token::Star { slash } => {
                cur[n] = next[n];
                for j in (0..n).rev() {
                    cur[j] = next[j] || ((*slash || text[j] != '/') && cur[j + 1]);
                }
            }
            _ => {
                cur[n] = false;
                for j in 0..n {
                    let c = text[j];
                    let ok = match tok {
                        Token::Char(p) => *p == c,
                        Token::One => c != '/',
                        Token::AnyOne { slash } => *slash || c != '/',
                        Token::Class { negated, ranges } => {
                            let inside = ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
                            inside != *negated && c != '/'
                        }
                        Token::Star { .. } => false,
                    };
                    cur[j] = ok && next[j + 1];
                }
            }
        }
        std::mem::swap(&mut cur, &mut next);
    }
    next[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Glob::new(p).unwrap().matches(t)
    }

    #[test]
    fn star_stays_in_segment() {
        assert!(m("/dev/tty*", "/dev/tty12"));
        assert!(m("/dev/tty*", "/dev/tty"));
        assert!(!m("/dev/tty*", "/dev/tty/x"));
        assert!(m("/dev/*", "/dev/sda"));
        assert!(!m("/dev/*", "/dev/"), "star after slash needs one char");
        assert!(!m("/dev/*", "/dev/a/b"));
    }

    #[test]
    fn double_star_crosses_segments() {
        assert!(m("/home/**", "/home/alice/.ssh/id_rsa"));
        assert!(!m("/home/**", "/home/"));
        assert!(m("/dev/cpu**microcode", "/dev/cpu/0/microcode"));
        assert!(m("/home/*/.ssh/**", "/home/alice/.ssh/id_rsa"));
        assert!(!m("/home/*/.ssh/**", "/home/.ssh/x"));
    }

    #[test]
    fn braces_classes_question() {
        assert!(m("/usr/{s,}bin/foo", "/usr/sbin/foo"));
        assert!(m("/usr/{s,}bin/foo", "/usr/bin/foo"));
        assert!(!m("/usr/{s,}bin/foo", "/usr/xbin/foo"));
        assert!(m("/dev/sd[a-c]", "/dev/sdb"));
        assert!(!m("/dev/sd[a-c]", "/dev/sdd"));
        assert!(m("/dev/sd[^a-c]", "/dev/sdd"));
        assert!(m("snap.?irefox.*", "snap.firefox.firefox"));
        assert!(m("a{b,{c,d}e}f", "adef"));
        // @{…} is a literal placeholder, also inside alternatives
        assert!(m("{/dev/pts/@{n},/dev/tty}", "/dev/pts/@{n}"));
        assert!(m("@{HOME}/.cache/**", "@{HOME}/.cache/x/y"));
        assert!(!m("@{HOME}/**", "/home/a/x"));
    }

    #[test]
    fn errors_name_the_pattern() {
        let e = Glob::new("/a/{b,c").unwrap_err();
        assert!(e.to_string().contains("/a/{b,c"));
        assert!(Glob::new("[abc").is_err());
        assert!(Glob::new("x}").is_err());
    }

    #[test]
    fn hostile_text_is_linear() {
        let p = Glob::new("*a*a*a*a*a*a*a*a*b").unwrap();
        let text = "a".repeat(20_000);
        assert!(!p.matches(&text));
    }

    #[test]
    fn literal_detection() {
        assert!(Glob::new("/etc/passwd").unwrap().is_literal());
        assert!(!Glob::new("/etc/pass*").unwrap().is_literal());
    }
}

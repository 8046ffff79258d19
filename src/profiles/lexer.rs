//! Statement splitter for AppArmor policy text: comments, quotes, glob braces and block braces.
//!
//! AppArmor's grammar is statement-oriented: rules end with `,`, blocks open with a `{` that
//! stands on its own (`profile foo /usr/bin/foo {`), and some directives (`include`, variable
//! assignments) end at the end of the line. A `{` glued to a path (`/{,usr/}bin/sh`) is a glob
//! alternation, not a block. This module turns text into such statements, each with the byte
//! offset where it starts; it never fails — problems are reported as [`LexError`]s beside the
//! statements that could still be read.

/// What ended a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StmtKind {
    /// Text ended by a top-level `,` (rules, `abi <…>,`, `alias …,`).
    Rule,
    /// Text ended by a block-opening `{` (profile, hat, qualifier block); the text is the header.
    Open,
    /// A block-closing `}`.
    Close,
    /// A line-terminated directive: `include …`, `#include …`, `@{VAR} = …`, `$bool = …`.
    Directive,
}

/// One statement with the comments removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    /// How it ended.
    pub kind: StmtKind,
    /// The text without comments, trimmed; for [`StmtKind::Open`] without the `{`.
    pub text: String,
    /// Byte offset of the first character in the source.
    pub start: usize,
}

/// A structural problem, at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    /// Byte offset in the source.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// Split `src` into statements. Never panics; never fails.
pub fn split(src: &str) -> (Vec<Stmt>, Vec<LexError>) {
    let bytes = src.as_bytes();
    let mut stmts = Vec::new();
    let mut errors = Vec::new();
    let mut i = 0usize;
    // Current statement being accumulated.
    let mut cur: Vec<u8> = Vec::new();
    let mut cur_start: Option<usize> = None;
    let mut glob_depth = 0usize;
    let mut paren_depth = 0usize;
    let mut block_depth = 0usize;

    let finish = |cur: &mut Vec<u8>, start: &mut Option<usize>, kind: StmtKind| -> Option<Stmt> {
        let s = start.take()?;
        let text = String::from_utf8_lossy(cur).trim().to_string();
        cur.clear();
        Some(Stmt {
            kind,
            text,
            start: s,
        })
    };

    while i < bytes.len() {
        let b = bytes[i];
        if cur_start.is_none() {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => {
                    i += 1;
                }
                b'#' => {
                    if starts_with_word(&bytes[i..], b"#include") {
                        let end = line_end(bytes, i);
                        stmts.push(Stmt {
                            kind: StmtKind::Directive,
                            text: String::from_utf8_lossy(&bytes[i..end]).trim().to_string(),
                            start: i,
                        });
                        i = end;
                    } else {
                        i = line_end(bytes, i);
                    }
                }
                b'}' => {
                    if block_depth == 0 {
                        errors.push(LexError {
                            offset: i,
                            message: "`}` without a matching `{`".into(),
                        });
                    } else {
                        block_depth -= 1;
                    }
                    stmts.push(Stmt {
                        kind: StmtKind::Close,
                        text: "}".into(),
                        start: i,
                    });
                    i += 1;
                }
                b',' => {
                    // An empty statement; harmless.
                    i += 1;
                }
                _ => {
                    if is_line_directive(&bytes[i..]) {
                        let end = line_end(bytes, i);
                        let text = strip_comment(&bytes[i..end]);
                        stmts.push(Stmt {
                            kind: StmtKind::Directive,
                            text,
                            start: i,
                        });
                        i = end;
                    } else {
                        cur_start = Some(i);
                        glob_depth = 0;
                        paren_depth = 0;
                    }
                }
            }
            continue;
        }
        // Inside a statement.
        match b {
            b'"' => {
                // Quoted string: copy through the closing quote (backslash escapes allowed).
                cur.push(b);
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    if bytes[i] == b'\\' && i + 1 < bytes.len() {
                        cur.push(bytes[i]);
                        cur.push(bytes[i + 1]);
                        i += 2;
                        continue;
                    }
                    cur.push(bytes[i]);
                    i += 1;
                }
                if i < bytes.len() && bytes[i] == b'"' {
                    cur.push(b'"');
                    i += 1;
                } else {
                    errors.push(LexError {
                        offset: i.min(bytes.len()),
                        message: "unterminated quoted string".into(),
                    });
                }
            }
            b'\\' => {
                cur.push(b);
                if i + 1 < bytes.len() {
                    cur.push(bytes[i + 1]);
                }
                i += 2;
            }
            b'#' if i > 0 && bytes[i - 1].is_ascii_whitespace() => {
                // A comment inside a (multi-line) statement.
                i = line_end(bytes, i);
            }
            b'{' => {
                let prev_ws = i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n' | b'\r' | b')');
                // `{}` after a space is an empty block (`^hat {}`), as apparmor_parser reads it.
                let next_ws = i + 1 >= bytes.len()
                    || bytes[i + 1].is_ascii_whitespace()
                    || bytes[i + 1] == b'}';
                if glob_depth == 0 && paren_depth == 0 && prev_ws && next_ws {
                    if let Some(s) = finish(&mut cur, &mut cur_start, StmtKind::Open) {
                        stmts.push(s);
                    }
                    block_depth += 1;
                } else {
                    glob_depth += 1;
                    cur.push(b);
                }
                i += 1;
            }
            b'}' => {
                if glob_depth > 0 {
                    glob_depth -= 1;
                    cur.push(b);
                    i += 1;
                } else {
                    // A block close in the middle of a statement: the statement lacked its `,`.
                    let at = cur_start.unwrap_or(i);
                    errors.push(LexError {
                        offset: at,
                        message: "statement not terminated by `,` before `}`".into(),
                    });
                    if let Some(s) = finish(&mut cur, &mut cur_start, StmtKind::Rule) {
                        stmts.push(s);
                    }
                    // The `}` itself is handled by the outer state on the next iteration.
                }
            }
            b'(' => {
                paren_depth += 1;
                cur.push(b);
                i += 1;
            }
            b')' => {
                paren_depth = paren_depth.saturating_sub(1);
                cur.push(b);
                i += 1;
            }
            b',' if glob_depth == 0 && paren_depth == 0 => {
                if let Some(s) = finish(&mut cur, &mut cur_start, StmtKind::Rule) {
                    stmts.push(s);
                }
                i += 1;
            }
            _ => {
                cur.push(b);
                i += 1;
            }
        }
    }
    if let Some(start) = cur_start {
        errors.push(LexError {
            offset: start,
            message: "statement not terminated by `,` at end of file".into(),
        });
        if let Some(s) = finish(&mut cur, &mut cur_start, StmtKind::Rule) {
            stmts.push(s);
        }
    }
    if block_depth > 0 {
        errors.push(LexError {
            offset: bytes.len(),
            message: format!("{block_depth} block(s) not closed by `}}` at end of file"),
        });
    }
    (stmts, errors)
}

/// True when `s` starts with `word` followed by a non-identifier byte (or the end).
fn starts_with_word(s: &[u8], word: &[u8]) -> bool {
    s.starts_with(word)
        && s.get(word.len())
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-'))
}

/// Directives that end at the end of the line rather than at a `,`.
fn is_line_directive(s: &[u8]) -> bool {
    if starts_with_word(s, b"include") {
        return true;
    }
    if s.starts_with(b"@{") {
        // `@{NAME}` followed by `=` or `+=` is an assignment; otherwise it starts a path rule.
        if let Some(close) = s.iter().position(|&c| c == b'}') {
            let rest = &s[close + 1..];
            let rest = trim_start_ascii(rest);
            return rest.starts_with(b"=") || rest.starts_with(b"+=");
        }
        return false;
    }
    if s.first() == Some(&b'$') {
        let rest = s
            .iter()
            .skip(1)
            .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
            .map(|p| &s[p + 1..])
            .unwrap_or(&[]);
        let rest = trim_start_ascii(rest);
        return rest.starts_with(b"=") || rest.starts_with(b"+=");
    }
    false
}

fn trim_start_ascii(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|c| **c == b' ' || **c == b'\t').count();
    &s[n..]
}

fn line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(bytes.len(), |p| from + p)
}

/// Remove a trailing ` # comment` from a directive line.
fn strip_comment(line: &[u8]) -> String {
    let mut end = line.len();
    let mut in_quote = false;
    for (i, &c) in line.iter().enumerate() {
        match c {
            b'"' => in_quote = !in_quote,
            b'#' if !in_quote && i > 0 && line[i - 1].is_ascii_whitespace() => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&line[..end]).trim().to_string()
}

/// Byte offset → 1-based (line, column); the column counts characters.
#[derive(Debug, Clone)]
pub struct LineMap {
    starts: Vec<usize>,
}

impl LineMap {
    /// Build the map for `src`.
    pub fn new(src: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(memchr::memchr_iter(b'\n', src.as_bytes()).map(|p| p + 1));
        LineMap { starts }
    }

    /// 1-based line and column of `offset`.
    pub fn position(&self, src: &str, offset: usize) -> (u32, u32) {
        let line_idx = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.starts.get(line_idx).copied().unwrap_or(0);
        let end = offset.min(src.len());
        let col = src
            .get(start..end)
            .map_or(end.saturating_sub(start), |s| s.chars().count());
        (
            u32::try_from(line_idx + 1).unwrap_or(u32::MAX),
            u32::try_from(col + 1).unwrap_or(u32::MAX),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<(StmtKind, String)> {
        split(src).0.into_iter().map(|s| (s.kind, s.text)).collect()
    }

    #[test]
    fn profile_with_globs_and_comments() {
        let src = "#include <tunables/global>\n# comment\nprofile x /usr/bin/{a,b} flags=(complain) {\n  /{,usr/}bin/sh ix, # trailing\n  dbus send\n    bus=session # c\n    path=/x,\n  ^hat {\n  }\n}\n";
        let got = kinds(src);
        assert_eq!(
            got,
            vec![
                (StmtKind::Directive, "#include <tunables/global>".into()),
                (
                    StmtKind::Open,
                    "profile x /usr/bin/{a,b} flags=(complain)".into()
                ),
                (StmtKind::Rule, "/{,usr/}bin/sh ix".into()),
                (
                    StmtKind::Rule,
                    "dbus send\n    bus=session \n    path=/x".into()
                ),
                (StmtKind::Open, "^hat".into()),
                (StmtKind::Close, "}".into()),
                (StmtKind::Close, "}".into()),
            ]
        );
    }

    /// Regression: `{}` was taken for an empty alternation, so the statement ran on to the
    /// next `,` and swallowed the next profile's header and first rule.
    #[test]
    fn an_empty_block_on_one_line_is_a_block() {
        let got = kinds("profile foo /usr/bin/foo {}\nprofile bar /usr/bin/bar {\n  /x r,\n}\n");
        assert_eq!(
            got,
            vec![
                (StmtKind::Open, "profile foo /usr/bin/foo".into()),
                (StmtKind::Close, "}".into()),
                (StmtKind::Open, "profile bar /usr/bin/bar".into()),
                (StmtKind::Rule, "/x r".into()),
                (StmtKind::Close, "}".into()),
            ]
        );
        // An empty alternation inside a path stays part of the path.
        assert_eq!(kinds("/a/{}b r,\n")[0], (StmtKind::Rule, "/a/{}b r".into()));
    }

    #[test]
    fn variables_and_includes_are_line_directives() {
        let got = kinds(
            "@{HOME}=@{HOMEDIRS}/*/ /root/\n@{x} += a b # c\ninclude if exists <local/x>\n@{HOME}/.x r,\n",
        );
        assert_eq!(
            got[0],
            (StmtKind::Directive, "@{HOME}=@{HOMEDIRS}/*/ /root/".into())
        );
        assert_eq!(got[1], (StmtKind::Directive, "@{x} += a b".into()));
        assert_eq!(
            got[2],
            (StmtKind::Directive, "include if exists <local/x>".into())
        );
        assert_eq!(got[3], (StmtKind::Rule, "@{HOME}/.x r".into()));
    }

    #[test]
    fn reports_missing_comma_and_unclosed_block() {
        let (stmts, errors) = split("profile x {\n  /a r\n}\nprofile y {\n");
        assert!(stmts.iter().any(|s| s.text == "/a r"));
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn line_map_positions() {
        let src = "ab\ncdé\nf";
        let map = LineMap::new(src);
        assert_eq!(map.position(src, 0), (1, 1));
        assert_eq!(map.position(src, 4), (2, 2));
        assert_eq!(map.position(src, src.len()), (3, 2));
    }
}

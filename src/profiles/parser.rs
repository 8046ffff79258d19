//! AppArmor policy text → items (includes, variables, profile declarations, rules) with spans.
//!
//! The parser is tolerant: a statement it cannot read becomes a [`SyntaxError`] with its file,
//! line and column, and parsing goes on with the next statement, so one bad line never hides the
//! rest of a profile tree. It reads what explanations need, not every corner of the grammar:
//! rule classes other than file, link, capability and network keep their text and class.

use std::sync::Arc;

use super::lexer::{self, LineMap, StmtKind};

/// Where something is written: file (relative to the tree root), 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Span {
    /// Path relative to the profile tree root (`usr.bin.msmtp`, `abstractions/base`).
    pub file: Arc<str>,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (characters).
    pub col: u32,
}

/// A statement that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where.
    pub span: Span,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.span.file, self.span.line, self.span.col, self.message
        )
    }
}

/// `include <…>`, `#include "…"`, `include if exists <…>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// The path between the delimiters.
    pub target: String,
    /// `<…>` (relative to the search path) rather than `"…"`.
    pub angle: bool,
    /// `include if exists`: a missing file is not an error.
    pub if_exists: bool,
    /// Where.
    pub span: Span,
}

/// `@{NAME} = values` or `@{NAME} += values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarAssign {
    /// The name without `@{}`.
    pub name: String,
    /// `+=`.
    pub append: bool,
    /// The whitespace-separated values, quotes removed.
    pub values: Vec<String>,
    /// Where.
    pub span: Span,
}

/// How a profile was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeclKind {
    /// A top-level profile (`profile NAME …` or a path-named profile).
    Profile,
    /// A hat (`^NAME` or `hat NAME`) inside a profile.
    Hat,
    /// A child profile (`profile NAME` inside a profile).
    Child,
}

/// A profile, hat or child profile declaration with its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileDecl {
    /// Declared kind (a `profile` inside a profile is a child).
    pub kind: DeclKind,
    /// The declared name (`msmtp`, `/usr/bin/foo`, `helpers`), namespace prefix included.
    pub name: String,
    /// The attachment glob, for `profile NAME ATTACHMENT` or path-named profiles.
    pub attachment: Option<String>,
    /// `flags=(…)` entries.
    pub flags: Vec<String>,
    /// The header text as written (without `{`).
    pub header: String,
    /// Where the header starts.
    pub span: Span,
    /// Where the closing `}` is (None when missing).
    pub end: Option<Span>,
    /// The body in order.
    pub body: Vec<Item>,
}

/// Rule qualifiers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Qualifiers {
    /// `audit`.
    pub audit: bool,
    /// `deny`.
    pub deny: bool,
    /// `owner`: the rule applies only when the task's fsuid owns the object.
    pub owner: bool,
}

/// File permission bits.
pub mod perm {
    /// `r`.
    pub const READ: u16 = 1;
    /// `w` (implies append).
    pub const WRITE: u16 = 2;
    /// `a`.
    pub const APPEND: u16 = 4;
    /// `l`.
    pub const LINK: u16 = 8;
    /// `k`.
    pub const LOCK: u16 = 16;
    /// `m`.
    pub const MMAP: u16 = 32;
    /// Any exec mode (`ix`, `Px`, `Cx`, `Ux` …).
    pub const EXEC: u16 = 64;
}

/// A file rule's permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Perms {
    /// [`perm`] bits.
    pub bits: u16,
    /// The exec mode as written (`ix`, `Px`, `Cix`, …), when there is one.
    pub exec: Option<String>,
}

impl Perms {
    /// Parse a permission word (`rwk`, `mr`, `Px`, `PUx`). None if any character is not a
    /// permission.
    pub fn parse(word: &str) -> Option<Perms> {
        if word.is_empty() {
            return None;
        }
        let mut perms = Perms::default();
        let mut exec = String::new();
        for c in word.chars() {
            match c {
                'r' => perms.bits |= perm::READ,
                'w' => perms.bits |= perm::WRITE,
                'a' => perms.bits |= perm::APPEND,
                'l' => perms.bits |= perm::LINK,
                'k' => perms.bits |= perm::LOCK,
                'm' => perms.bits |= perm::MMAP,
                'i' | 'p' | 'c' | 'u' | 'P' | 'C' | 'U' => exec.push(c),
                'x' => {
                    exec.push('x');
                    perms.bits |= perm::EXEC;
                }
                _ => return None,
            }
        }
        if !exec.is_empty() {
            if !exec.ends_with('x') {
                return None;
            }
            perms.exec = Some(exec);
        }
        Some(perms)
    }

    /// The canonical letters (`rwalkm` order, then the exec mode).
    pub fn letters(&self) -> String {
        let mut s = String::new();
        for (bit, c) in [
            (perm::READ, 'r'),
            (perm::WRITE, 'w'),
            (perm::APPEND, 'a'),
            (perm::LINK, 'l'),
            (perm::LOCK, 'k'),
            (perm::MMAP, 'm'),
        ] {
            if self.bits & bit != 0 {
                s.push(c);
            }
        }
        if let Some(exec) = &self.exec {
            s.push_str(exec);
        } else if self.bits & perm::EXEC != 0 {
            s.push('x');
        }
        s
    }
}

/// What a rule says, by class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleBody {
    /// `PATH PERMS [-> TARGET]`, `PERMS PATH`, `file …`.
    File {
        /// The path glob as written (variables not expanded). `None` for a bare `file,`.
        path: Option<String>,
        /// The permissions.
        perms: Perms,
        /// `-> TARGET` of an exec rule.
        exec_target: Option<String>,
    },
    /// `link [subset] LINK -> TARGET`.
    Link {
        /// The link path glob.
        link: String,
        /// The target glob.
        target: String,
    },
    /// `capability [NAME…]`; empty means all.
    Capability(Vec<String>),
    /// `network [DOMAIN] [TYPE] [PROTOCOL]`; empty means all.
    Network(Vec<String>),
    /// Any other class, kept as text (`signal`, `ptrace`, `dbus`, `unix`, `mount`, …).
    Other {
        /// The leading keyword.
        class: String,
    },
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// audit/deny/owner.
    pub qualifiers: Qualifiers,
    /// The parsed content.
    pub body: RuleBody,
    /// The statement text without comments and without the trailing `,`.
    pub text: String,
    /// Where it starts.
    pub span: Span,
}

/// One item of a file or profile body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An include directive.
    Include(Include),
    /// A variable assignment.
    Var(VarAssign),
    /// A profile, hat or child declaration.
    Profile(ProfileDecl),
    /// A rule.
    Rule(Rule),
}

/// One parsed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFile {
    /// Path relative to the tree root.
    pub path: Arc<str>,
    /// Top-level items.
    pub items: Vec<Item>,
    /// Statements that could not be read.
    pub errors: Vec<SyntaxError>,
}

enum Frame {
    Profile(ProfileDecl),
    Qualifier(Qualifiers),
}

/// Parse one file. Never panics; problems become [`SyntaxError`]s.
pub fn parse_file(path: &str, src: &str) -> ParsedFile {
    let file: Arc<str> = Arc::from(path);
    let map = LineMap::new(src);
    let span_at = |offset: usize| {
        let (line, col) = map.position(src, offset);
        Span {
            file: file.clone(),
            line,
            col,
        }
    };
    let (stmts, lex_errors) = lexer::split(src);
    let mut errors: Vec<SyntaxError> = lex_errors
        .into_iter()
        .map(|e| SyntaxError {
            span: span_at(e.offset),
            message: e.message,
        })
        .collect();
    let mut top: Vec<Item> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();

    fn current<'a>(top: &'a mut Vec<Item>, stack: &'a mut [Frame]) -> &'a mut Vec<Item> {
        for frame in stack.iter_mut().rev() {
            if let Frame::Profile(p) = frame {
                return &mut p.body;
            }
        }
        top
    }
    fn inherited(stack: &[Frame]) -> Qualifiers {
        let mut q = Qualifiers::default();
        for frame in stack.iter().rev() {
            match frame {
                Frame::Qualifier(fq) => {
                    q.audit |= fq.audit;
                    q.deny |= fq.deny;
                    q.owner |= fq.owner;
                }
                Frame::Profile(_) => break,
            }
        }
        q
    }

    for stmt in stmts {
        let span = span_at(stmt.start);
        match stmt.kind {
            StmtKind::Directive => match parse_directive(&stmt.text, &span) {
                Ok(Some(item)) => current(&mut top, &mut stack).push(item),
                Ok(None) => {}
                Err(message) => errors.push(SyntaxError { span, message }),
            },
            StmtKind::Open => {
                let in_profile = stack.iter().any(|f| matches!(f, Frame::Profile(_)));
                match parse_header(&stmt.text, in_profile) {
                    Ok(Header::Qualifier(q)) => stack.push(Frame::Qualifier(q)),
                    Ok(Header::Profile {
                        kind,
                        name,
                        attachment,
                        flags,
                    }) => stack.push(Frame::Profile(ProfileDecl {
                        kind,
                        name,
                        attachment,
                        flags,
                        header: stmt.text.clone(),
                        span,
                        end: None,
                        body: Vec::new(),
                    })),
                    Err(message) => {
                        errors.push(SyntaxError { span, message });
                        // Keep nesting balanced: treat it as a transparent block.
                        stack.push(Frame::Qualifier(Qualifiers::default()));
                    }
                }
            }
            StmtKind::Close => match stack.pop() {
                Some(Frame::Profile(mut p)) => {
                    p.end = Some(span);
                    current(&mut top, &mut stack).push(Item::Profile(p));
                }
                Some(Frame::Qualifier(_)) | None => {}
            },
            StmtKind::Rule => {
                let q = inherited(&stack);
                match parse_rule(&stmt.text, q, &span) {
                    Ok(Some(item)) => current(&mut top, &mut stack).push(item),
                    Ok(None) => {}
                    Err(message) => errors.push(SyntaxError { span, message }),
                }
            }
        }
    }
    // Unclosed profiles (already reported by the lexer) still count.
    while let Some(frame) = stack.pop() {
        if let Frame::Profile(p) = frame {
            current(&mut top, &mut stack).push(Item::Profile(p));
        }
    }
    ParsedFile {
        path: file,
        items: top,
        errors,
    }
}

/// Split statement text into words: whitespace separates, except inside quotes, parentheses and
/// glob braces. Quotes around a whole word are removed.
pub fn words(text: &str) -> Vec<String> {
    quoted_words(text).into_iter().map(|(w, _)| w).collect()
}

/// [`words`], each with whether any of it was quoted. Backslash escapes are kept for the glob
/// layer, quoted or not, as apparmor_parser keeps them (`"/a\*b"` is a literal `*`, `\ ` a
/// space that does not split the word); only `\"` inside quotes becomes `"`.
pub fn quoted_words(text: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut paren = 0usize;
    let mut brace = 0usize;
    let mut chars = text.chars().peekable();
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            '\\' => match chars.next() {
                Some('"') if quoted => cur.push('"'),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            },
            c if c.is_whitespace() && !quoted && paren == 0 && brace == 0 => {
                if !cur.is_empty() || was_quoted {
                    out.push((std::mem::take(&mut cur), was_quoted));
                }
                was_quoted = false;
            }
            '(' if !quoted => {
                paren += 1;
                cur.push(c);
            }
            ')' if !quoted => {
                paren = paren.saturating_sub(1);
                cur.push(c);
            }
            '{' if !quoted => {
                brace += 1;
                cur.push(c);
            }
            '}' if !quoted => {
                brace = brace.saturating_sub(1);
                cur.push(c);
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() || was_quoted {
        out.push((cur, was_quoted));
    }
    out
}

fn parse_directive(text: &str, span: &Span) -> Result<Option<Item>, String> {
    let t = text.trim();
    if let Some(rest) = t
        .strip_prefix("#include")
        .or_else(|| t.strip_prefix("include"))
    {
        let mut rest = rest.trim();
        let mut if_exists = false;
        if let Some(r) = rest.strip_prefix("if exists") {
            if_exists = true;
            rest = r.trim();
        }
        let rest = rest.trim_end_matches(',').trim();
        let (target, angle) = if let Some(r) = rest.strip_prefix('<') {
            let end = r.find('>').ok_or("include: missing `>`")?;
            (r[..end].trim().to_string(), true)
        } else if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').ok_or("include: missing closing `\"`")?;
            (r[..end].to_string(), false)
        } else if !rest.is_empty() && !rest.contains(char::is_whitespace) {
            (rest.to_string(), false)
        } else {
            return Err(format!("include: cannot read the path in `{t}`"));
        };
        if target.is_empty() {
            return Err("include: empty path".into());
        }
        return Ok(Some(Item::Include(Include {
            target,
            angle,
            if_exists,
            span: span.clone(),
        })));
    }
    if let Some(rest) = t.strip_prefix("@{") {
        let close = rest.find('}').ok_or("variable: missing `}`")?;
        let name = rest[..close].to_string();
        let after = rest[close + 1..].trim_start();
        let (append, values) = if let Some(v) = after.strip_prefix("+=") {
            (true, v)
        } else if let Some(v) = after.strip_prefix('=') {
            (false, v)
        } else {
            return Err("variable: expected `=` or `+=`".into());
        };
        if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(format!("variable: bad name `{name}`"));
        }
        return Ok(Some(Item::Var(VarAssign {
            name,
            append,
            values: words(values.trim_end_matches(',')),
            span: span.clone(),
        })));
    }
    if t.starts_with('$') {
        // Boolean variables only steer `if` blocks, which are kept transparent.
        return Ok(None);
    }
    Err(format!("unrecognised directive `{t}`"))
}

enum Header {
    Qualifier(Qualifiers),
    Profile {
        kind: DeclKind,
        name: String,
        attachment: Option<String>,
        flags: Vec<String>,
    },
}

fn take_qualifiers(words: &[String]) -> (Qualifiers, usize) {
    let mut q = Qualifiers::default();
    let mut n = 0;
    for w in words {
        match w.as_str() {
            "audit" => q.audit = true,
            "deny" => q.deny = true,
            "owner" => q.owner = true,
            "allow" | "other" | "quiet" => {}
            w if w.starts_with("priority=") => {}
            _ => break,
        }
        n += 1;
    }
    (q, n)
}

fn parse_flags(words: &[String]) -> Result<Vec<String>, String> {
    let mut flags = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        let body = if let Some(v) = w.strip_prefix("flags=") {
            v.to_string()
        } else if w == "flags" || w == "flags=" {
            // `flags = (…)` spelled with spaces.
            let mut v = String::new();
            i += 1;
            while i < words.len() {
                let x = words[i].trim_start_matches('=');
                if !x.is_empty() {
                    v = x.to_string();
                    break;
                }
                i += 1;
            }
            v
        } else if w.starts_with('(') {
            w.clone()
        } else if w.starts_with("xattrs=") {
            i += 1;
            continue;
        } else {
            return Err(format!("unexpected `{w}` in profile header"));
        };
        let inner = body.trim().trim_start_matches('(').trim_end_matches(')');
        flags.extend(
            inner
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        i += 1;
    }
    Ok(flags)
}

fn parse_header(text: &str, in_profile: bool) -> Result<Header, String> {
    let w = words(text);
    let (q, n) = take_qualifiers(&w);
    let w = &w[n..];
    let Some(first) = w.first() else {
        return Ok(Header::Qualifier(q));
    };
    if first == "if" || first == "else" {
        return Ok(Header::Qualifier(q));
    }
    let child_kind = if in_profile {
        DeclKind::Child
    } else {
        DeclKind::Profile
    };
    if first == "profile" {
        let name = w.get(1).ok_or("`profile` without a name")?.clone();
        let mut rest = &w[2..];
        let mut attachment = None;
        if let Some(a) = rest.first()
            && !a.starts_with("flags")
            && !a.starts_with('(')
            && !a.starts_with("xattrs=")
        {
            attachment = Some(a.clone());
            rest = &rest[1..];
        }
        let flags = parse_flags(rest)?;
        return Ok(Header::Profile {
            kind: child_kind,
            name,
            attachment,
            flags,
        });
    }
    if first == "hat" || first.starts_with('^') {
        let (name, rest) = if first == "hat" || first == "^" {
            (w.get(1).ok_or("hat without a name")?.clone(), &w[2..])
        } else {
            (first[1..].to_string(), &w[1..])
        };
        // A hat outside a profile is legal in files meant to be included into one
        // (Debian's apache2.d/*).
        return Ok(Header::Profile {
            kind: DeclKind::Hat,
            name,
            attachment: None,
            flags: parse_flags(rest)?,
        });
    }
    if first.starts_with('/') || first.starts_with("@{") || first.starts_with(':') {
        let attachment = (!first.starts_with(':')).then(|| first.clone());
        return Ok(Header::Profile {
            kind: child_kind,
            name: first.clone(),
            attachment,
            flags: parse_flags(&w[1..])?,
        });
    }
    Err(format!("unrecognised block header `{text}`"))
}

const OTHER_CLASSES: &[&str] = &[
    "signal",
    "ptrace",
    "dbus",
    "unix",
    "mount",
    "remount",
    "umount",
    "pivot_root",
    "change_profile",
    "change_hat",
    "userns",
    "io_uring",
    "mqueue",
    "set",
    "rlimit",
    "alias",
    "abi",
    "all",
];

fn is_path_word(w: &str) -> bool {
    w.starts_with('/') || w.starts_with("@{") || w.starts_with('{')
}

fn parse_rule(text: &str, inherited: Qualifiers, span: &Span) -> Result<Option<Item>, String> {
    let with_quotes = quoted_words(text);
    let all: Vec<String> = with_quotes.iter().map(|(w, _)| w.clone()).collect();
    let (mut q, n) = take_qualifiers(&all);
    q.audit |= inherited.audit;
    q.deny |= inherited.deny;
    q.owner |= inherited.owner;
    let w = &all[n..];
    let Some(first) = w.first() else {
        return Err(format!("qualifiers without a rule: `{text}`"));
    };
    let make = |body: RuleBody| {
        Ok(Some(Item::Rule(Rule {
            qualifiers: q,
            body,
            text: normalise_space(text),
            span: span.clone(),
        })))
    };
    match first.as_str() {
        "capability" => make(RuleBody::Capability(
            w[1..].iter().map(|s| s.to_ascii_lowercase()).collect(),
        )),
        "network" => make(RuleBody::Network(w[1..].to_vec())),
        "link" => {
            let mut rest = &w[1..];
            if rest.first().is_some_and(|s| s == "subset") {
                rest = &rest[1..];
            }
            match rest {
                [link, arrow, target] if arrow == "->" => make(RuleBody::Link {
                    link: link.clone(),
                    target: target.clone(),
                }),
                _ => Err(format!(
                    "link rule: expected `link PATH -> TARGET`: `{text}`"
                )),
            }
        }
        "file" => {
            if w.len() == 1 {
                return make(RuleBody::File {
                    path: None,
                    perms: Perms {
                        bits: 0x7f,
                        exec: None,
                    },
                    exec_target: None,
                });
            }
            parse_file_rule(&w[1..], &with_quotes[n + 1..], text).and_then(make)
        }
        c if OTHER_CLASSES.contains(&c) => {
            if c == "abi" || c == "alias" {
                return Ok(None);
            }
            make(RuleBody::Other {
                class: c.to_string(),
            })
        }
        _ => parse_file_rule(w, &with_quotes[n..], text).and_then(make),
    }
}

fn parse_file_rule(
    w: &[String],
    quoted: &[(String, bool)],
    text: &str,
) -> Result<RuleBody, String> {
    // Split `->` glued to words (`Px->target`), not inside quotes (`"/srv/a->b"` is a path).
    let mut toks: Vec<String> = Vec::with_capacity(w.len() + 2);
    for (i, t) in w.iter().enumerate() {
        let was_quoted = quoted.get(i).is_some_and(|(_, q)| *q);
        if t != "->"
            && !was_quoted
            && let Some((a, b)) = t.split_once("->")
        {
            if !a.is_empty() {
                toks.push(a.to_string());
            }
            toks.push("->".into());
            if !b.is_empty() {
                toks.push(b.to_string());
            }
        } else {
            toks.push(t.clone());
        }
    }
    let (main, target) = match toks.iter().position(|t| t == "->") {
        Some(p) => (
            &toks[..p],
            Some(
                toks.get(p + 1)
                    .cloned()
                    .ok_or_else(|| format!("`->` without a target: `{text}`"))?,
            ),
        ),
        None => (&toks[..], None),
    };
    let (path, perms) = match main {
        [a, b] if is_path_word(a) => (a, b),
        [a, b] if is_path_word(b) => (b, a),
        [a] if is_path_word(a) => {
            return Err(format!("file rule without permissions: `{text}`"));
        }
        _ => return Err(format!("cannot read rule `{text}`")),
    };
    let perms =
        Perms::parse(perms).ok_or_else(|| format!("bad permissions `{perms}` in `{text}`"))?;
    Ok(RuleBody::File {
        path: Some(path.clone()),
        perms,
        exec_target: target,
    })
}

fn normalise_space(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSMTP: &str = include_str!("../../tests/fixtures/profiles/etc/apparmor.d/usr.bin.msmtp");

    fn rules(items: &[Item]) -> Vec<&Rule> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Rule(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn msmtp_profile() {
        let f = parse_file("usr.bin.msmtp", MSMTP);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        let Some(Item::Include(inc)) = f.items.first() else {
            panic!("first item should be the tunables include");
        };
        assert_eq!(inc.target, "tunables/global");
        let Some(Item::Profile(p)) = f.items.get(1) else {
            panic!("profile expected");
        };
        assert_eq!(p.name, "msmtp");
        assert_eq!(p.attachment.as_deref(), Some("/usr/bin/msmtp"));
        assert_eq!(p.flags, vec!["attach_disconnected"]);
        assert_eq!((p.span.line, p.span.col), (5, 1));
        let log = rules(&p.body)
            .into_iter()
            .find(|r| r.text == "/var/log/msmtp wk")
            .expect("log rule");
        assert_eq!((log.span.line, log.span.col), (24, 3));
        let RuleBody::File { perms, .. } = &log.body else {
            panic!("file rule")
        };
        assert_eq!(perms.letters(), "wk");
        let child = p
            .body
            .iter()
            .find_map(|i| match i {
                Item::Profile(c) => Some(c),
                _ => None,
            })
            .expect("child");
        assert_eq!(
            (child.kind, child.name.as_str()),
            (DeclKind::Child, "helpers")
        );
        let dbus = rules(&p.body)
            .into_iter()
            .filter(|r| matches!(&r.body, RuleBody::Other { class } if class == "dbus"))
            .count();
        assert_eq!(dbus, 5);
    }

    #[test]
    fn qualifiers_exec_and_errors() {
        let src = "profile p {\n  audit deny owner /a/** w,\n  owner {\n    /b r,\n  }\n  /c Px -> other,\n  rw /d,\n  /e qq,\n  ^hat flags=(complain) {\n  }\n}\n";
        let f = parse_file("p", src);
        assert_eq!(f.errors.len(), 1, "{:?}", f.errors);
        assert_eq!(f.errors[0].span.line, 8);
        let Item::Profile(p) = &f.items[0] else {
            panic!()
        };
        let r = rules(&p.body);
        assert!(r[0].qualifiers.deny && r[0].qualifiers.owner && r[0].qualifiers.audit);
        assert!(r[1].qualifiers.owner);
        assert!(
            matches!(&r[2].body, RuleBody::File { exec_target: Some(t), perms, .. } if t == "other" && perms.exec.as_deref() == Some("Px"))
        );
        assert!(matches!(&r[3].body, RuleBody::File { path: Some(p), .. } if p == "/d"));
        let hat = p
            .body
            .iter()
            .find_map(|i| match i {
                Item::Profile(c) => Some(c),
                _ => None,
            })
            .expect("hat");
        assert_eq!(hat.kind, DeclKind::Hat);
        assert_eq!(hat.flags, vec!["complain"]);
    }
}

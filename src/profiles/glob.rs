//! AppArmor glob matching, hand-written to follow apparmor_parser's own translation.
//!
//! AppArmor globs are not shell globs and no general-purpose glob crate has their semantics.
//! What apparmor_parser 3.0 does (checked with `apparmor_parser -D rule-exprs`, and tested
//! against its compiled DFA in `tests/profiles.rs`):
//!
//! * `*` matches any run of characters except `/` (and NUL); `**` also crosses `/`.
//! * A `*` or `**` run that directly follows a `/` and is followed by `/` or the end of the
//!   pattern must match at least one character: `/dir/*` does not match `/dir/`, `/a/**/b`
//!   needs a non-empty component after `/a/`.
//! * `?` matches one character except `/`.
//! * `[abc]`, `[a-z]` match one character; `[^…]` matches any other character, `/` included.
//! * `{a,b,}` alternation, nested, with empty alternatives.
//! * `\` escapes the next character, and as in apparmor_parser's lexer (`strn_escseq`) `\NNN`
//!   (up to three octal digits), `\xHH` (up to two hex digits), `\dNNN` (up to three decimal
//!   digits), each at most 255, and `\a \e \f \n \r \t` stand for the byte they encode. The
//!   byte is always a literal: `\x2a` is a `*`, not a glob.
//! * Variables (`@{HOME}`) are expanded before matching into an alternation of their values; a
//!   value's trailing `/` is dropped when the pattern continues with `/`, and `//` collapses to `/`.
//!
//! Matching runs a Thompson NFA (no backtracking blow-up on hostile paths), and [`Glob::probe`]
//! reports how far a path got, which the explainer turns into a caret under the difference.

use std::collections::HashMap;

/// A set of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    const EMPTY: ByteSet = ByteSet([0; 4]);

    fn single(b: u8) -> ByteSet {
        let mut s = ByteSet::EMPTY;
        s.insert(b);
        s
    }

    fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1u64 << (b & 63);
    }

    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1u64 << (b & 63)) != 0
    }

    fn complement(self) -> ByteSet {
        ByteSet([!self.0[0], !self.0[1], !self.0[2], !self.0[3]])
    }

    /// Any byte except NUL and, when `cross_slash` is false, `/`.
    fn any(cross_slash: bool) -> ByteSet {
        let mut s = ByteSet::single(0);
        if !cross_slash {
            s.insert(b'/');
        }
        s.complement()
    }
}

/// A pattern that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at byte {offset} of `{pattern}`)")]
pub struct GlobError {
    /// The pattern.
    pub pattern: String,
    /// Byte offset of the problem.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

#[derive(Debug, Clone)]
enum Node {
    /// One byte from the set.
    Set(ByteSet),
    /// Zero or more bytes from the set.
    Star(ByteSet),
    /// Alternatives.
    Alt(Vec<Vec<(Node, usize)>>),
}

#[derive(Debug, Clone, Copy)]
enum Inst {
    Byte(ByteSet),
    Split(usize, usize),
    Jmp(usize),
    Match,
}

/// A compiled AppArmor glob.
#[derive(Debug, Clone)]
pub struct Glob {
    pattern: String,
    prog: Vec<Inst>,
    /// Pattern byte offset of each instruction (for carets).
    offsets: Vec<usize>,
}

/// How far a path got through a glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The whole path matches.
    pub matched: bool,
    /// Bytes of the path consumed before every thread died (the path's length when matched,
    /// or when the pattern ran out first).
    pub consumed: usize,
    /// Pattern offset where the furthest thread was waiting (the pattern's length when the
    /// pattern could end there).
    pub pattern_offset: usize,
    /// The pattern could have ended at `consumed` (the path is longer than the pattern).
    pub pattern_could_end: bool,
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    pattern: &'a str,
}

impl Parser<'_> {
    fn err(&self, offset: usize, message: &str) -> GlobError {
        GlobError {
            pattern: self.pattern.to_string(),
            offset,
            message: message.to_string(),
        }
    }

    /// The byte the escape sequence at `at` (a `\\`) stands for, and the offset after it, as
    /// apparmor_parser's lexer reads it (`strn_escseq`, lib.c): up to three octal digits, `x`
    /// and up to two hex digits, `d` and up to three decimal digits, each stopping before the
    /// value would pass 255; `a e f n r t` are the C control characters; any other character
    /// (`\\`, `\*`, `\{`, `\ `, or `x`/`d` without a digit) stands for itself.
    fn escape(&self, at: usize) -> Result<(u8, usize), GlobError> {
        let Some(&c) = self.src.get(at + 1) else {
            return Err(self.err(at, "trailing `\\`"));
        };
        let number = |start: usize, radix: u32, max_digits: usize| {
            let mut value: u32 = 0;
            let mut end = start;
            while end < start + max_digits {
                let Some(d) = self
                    .src
                    .get(end)
                    .and_then(|&b| char::from(b).to_digit(radix))
                else {
                    break;
                };
                let next = value * radix + d;
                if next > 255 {
                    break;
                }
                value = next;
                end += 1;
            }
            (end > start).then(|| (u8::try_from(value).unwrap_or(u8::MAX), end))
        };
        let decoded = match c {
            b'0'..=b'7' => number(at + 1, 8, 3),
            b'x' => number(at + 2, 16, 2),
            b'd' => number(at + 2, 10, 3),
            b'a' => Some((0x07, at + 2)),
            b'e' => Some((0x1b, at + 2)),
            b'f' => Some((0x0c, at + 2)),
            b'n' => Some((b'\n', at + 2)),
            b'r' => Some((b'\r', at + 2)),
            b't' => Some((b'\t', at + 2)),
            _ => None,
        };
        Ok(decoded.unwrap_or((c, at + 2)))
    }

    /// Parse a sequence until end, `,` or `}` (when inside an alternation).
    fn seq(&mut self, depth: usize) -> Result<Vec<(Node, usize)>, GlobError> {
        let mut out = Vec::new();
        // Where the last escape that encodes a `/` ended.
        let mut decoded_slash_end = None;
        while self.pos < self.src.len() {
            let at = self.pos;
            let b = self.src[at];
            match b {
                b',' | b'}' if depth > 0 => break,
                b'\\' => {
                    let (byte, end) = self.escape(at)?;
                    out.push((Node::Set(ByteSet::single(byte)), at));
                    self.pos = end;
                    // apparmor_parser's lexer writes an encoded `/` (`\x2f`, `\057`) as a
                    // plain one, which the glob layer then sees before a `*`.
                    decoded_slash_end = (byte == b'/' && end > at + 2).then_some(end);
                }
                b'*' => {
                    let mut run = 0;
                    while self.src.get(self.pos) == Some(&b'*') {
                        run += 1;
                        self.pos += 1;
                    }
                    let after = self.src.get(self.pos).copied();
                    let after_slash = decoded_slash_end == Some(at)
                        || (at > 0
                            && self.src[at - 1] == b'/'
                            && !(at > 1 && self.src[at - 2] == b'\\'));
                    if after_slash && (after.is_none() || after == Some(b'/')) {
                        out.push((Node::Set(ByteSet::any(false)), at));
                    }
                    while run >= 2 {
                        out.push((Node::Star(ByteSet::any(true)), at));
                        run -= 2;
                    }
                    if run == 1 {
                        out.push((Node::Star(ByteSet::any(false)), at));
                    }
                }
                b'?' => {
                    out.push((Node::Set(ByteSet::any(false)), at));
                    self.pos += 1;
                }
                b'[' => {
                    let set = self.class()?;
                    out.push((Node::Set(set), at));
                }
                b'{' => {
                    if depth > 32 {
                        return Err(self.err(at, "alternations nested too deeply"));
                    }
                    self.pos += 1;
                    let mut alts = Vec::new();
                    loop {
                        let alt = self.seq(depth + 1)?;
                        // apparmor_parser rejects `,,` (an empty alternative between commas).
                        if alt.is_empty()
                            && !alts.is_empty()
                            && self.src.get(self.pos) == Some(&b',')
                        {
                            return Err(self.err(self.pos, "`,,` in an alternation"));
                        }
                        alts.push(alt);
                        match self.src.get(self.pos) {
                            Some(b',') => self.pos += 1,
                            Some(b'}') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(self.err(at, "`{` without a closing `}`")),
                        }
                    }
                    // apparmor_parser: "Invalid number of items between {}".
                    if alts.len() < 2 {
                        return Err(self.err(at, "`{…}` needs at least two alternatives"));
                    }
                    out.push((Node::Alt(alts), at));
                }
                b'}' => return Err(self.err(at, "`}` without an opening `{`")),
                _ => {
                    out.push((Node::Set(ByteSet::single(b)), at));
                    self.pos += 1;
                }
            }
        }
        Ok(out)
    }

    fn class(&mut self) -> Result<ByteSet, GlobError> {
        let open = self.pos;
        self.pos += 1;
        let mut negate = false;
        if self.src.get(self.pos) == Some(&b'^') {
            negate = true;
            self.pos += 1;
        }
        let mut set = ByteSet::EMPTY;
        let mut first = true;
        loop {
            let Some(&b) = self.src.get(self.pos) else {
                return Err(self.err(open, "`[` without a closing `]`"));
            };
            if b == b']' && !first {
                self.pos += 1;
                break;
            }
            first = false;
            let lo = if b == b'\\' {
                let (byte, end) = self
                    .escape(self.pos)
                    .map_err(|_| self.err(open, "`[` without a closing `]`"))?;
                self.pos = end;
                byte
            } else {
                self.pos += 1;
                b
            };
            if self.src.get(self.pos) == Some(&b'-')
                && self.src.get(self.pos + 1).is_some_and(|c| *c != b']')
            {
                let mut hi = self.src[self.pos + 1];
                self.pos += 2;
                if hi == b'\\' {
                    let (byte, end) = self
                        .escape(self.pos - 1)
                        .map_err(|_| self.err(open, "`[` without a closing `]`"))?;
                    hi = byte;
                    self.pos = end;
                }
                if hi < lo {
                    return Err(self.err(open, "reversed range in `[…]`"));
                }
                for c in lo..=hi {
                    set.insert(c);
                }
            } else {
                set.insert(lo);
            }
        }
        Ok(if negate { set.complement() } else { set })
    }
}

fn emit(nodes: &[(Node, usize)], prog: &mut Vec<Inst>, offsets: &mut Vec<usize>) {
    for (node, at) in nodes {
        match node {
            Node::Set(s) => {
                prog.push(Inst::Byte(*s));
                offsets.push(*at);
            }
            Node::Star(s) => {
                let split = prog.len();
                prog.push(Inst::Split(split + 1, split + 3));
                offsets.push(*at);
                prog.push(Inst::Byte(*s));
                offsets.push(*at);
                prog.push(Inst::Jmp(split));
                offsets.push(*at);
            }
            Node::Alt(alts) => {
                let mut jumps = Vec::new();
                for (i, alt) in alts.iter().enumerate() {
                    let last = i + 1 == alts.len();
                    let split = prog.len();
                    if !last {
                        prog.push(Inst::Split(split + 1, 0));
                        offsets.push(*at);
                    }
                    emit(alt, prog, offsets);
                    if !last {
                        jumps.push(prog.len());
                        prog.push(Inst::Jmp(0));
                        offsets.push(*at);
                        let next = prog.len();
                        prog[split] = Inst::Split(split + 1, next);
                    }
                }
                let end = prog.len();
                for j in jumps {
                    prog[j] = Inst::Jmp(end);
                }
            }
        }
    }
}

impl Glob {
    /// Compile an (already variable-expanded) pattern.
    pub fn compile(pattern: &str) -> Result<Glob, GlobError> {
        let mut p = Parser {
            src: pattern.as_bytes(),
            pos: 0,
            pattern,
        };
        let nodes = p.seq(0)?;
        let mut prog = Vec::new();
        let mut offsets = Vec::new();
        emit(&nodes, &mut prog, &mut offsets);
        prog.push(Inst::Match);
        offsets.push(pattern.len());
        Ok(Glob {
            pattern: pattern.to_string(),
            prog,
            offsets,
        })
    }

    /// The pattern as compiled.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// True when the whole `path` matches.
    pub fn is_match(&self, path: &str) -> bool {
        self.probe(path).matched
    }

    fn add(&self, list: &mut Vec<usize>, mark: &mut [u32], gen_: u32, pc: usize) {
        let mut stack = vec![pc];
        while let Some(pc) = stack.pop() {
            if mark[pc] == gen_ {
                continue;
            }
            mark[pc] = gen_;
            match self.prog[pc] {
                Inst::Jmp(t) => stack.push(t),
                Inst::Split(a, b) => {
                    stack.push(b);
                    stack.push(a);
                }
                Inst::Byte(_) | Inst::Match => list.push(pc),
            }
        }
    }

    /// Run `path` through the glob and report how far it got.
    pub fn probe(&self, path: &str) -> Probe {
        let input = path.as_bytes();
        let mut mark = vec![0u32; self.prog.len()];
        let mut gen_ = 1u32;
        let mut cur = Vec::new();
        let mut next = Vec::new();
        self.add(&mut cur, &mut mark, gen_, 0);
        let mut consumed = 0;
        let mut last_alive = cur.clone();
        for (i, &b) in input.iter().enumerate() {
            gen_ += 1;
            next.clear();
            for &pc in &cur {
                if let Inst::Byte(set) = self.prog[pc]
                    && set.contains(b)
                {
                    self.add(&mut next, &mut mark, gen_, pc + 1);
                }
            }
            std::mem::swap(&mut cur, &mut next);
            if cur.is_empty() {
                break;
            }
            consumed = i + 1;
            last_alive.clone_from(&cur);
        }
        let matched =
            consumed == input.len() && cur.iter().any(|&pc| matches!(self.prog[pc], Inst::Match));
        let pattern_could_end = last_alive
            .iter()
            .any(|&pc| matches!(self.prog[pc], Inst::Match));
        // Prefer where a thread still wanted input (the `*` that stopped at `/`) over the end.
        let pattern_offset = last_alive
            .iter()
            .filter(|&&pc| matches!(self.prog[pc], Inst::Byte(_)))
            .map(|&pc| self.offsets[pc])
            .max()
            .unwrap_or(self.pattern.len());
        Probe {
            matched,
            consumed,
            pattern_offset,
            pattern_could_end,
        }
    }
}

/// Expansions beyond this size are refused (a hostile or broken tree cannot blow up memory).
pub const MAX_EXPANDED_BYTES: usize = 1 << 20;

/// Variable values: name (without `@{}`) → values, in definition order.
pub type Vars = HashMap<String, Vec<String>>;

/// A pattern with its variables expanded, and for each byte the offset in the original text it
/// came from (so carets land under the original rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    /// The expanded pattern.
    pub text: String,
    /// `origin[i]` is the original offset of byte `i` of `text`; one extra entry for the end.
    pub origin: Vec<usize>,
}

/// Expand `@{VAR}` references as apparmor_parser does. Unknown variables are an error.
pub fn expand(pattern: &str, vars: &Vars) -> Result<Expanded, GlobError> {
    let mut text = Vec::with_capacity(pattern.len());
    let mut origin = Vec::with_capacity(pattern.len() + 1);
    expand_into(pattern, vars, &mut text, &mut origin, None, 0)?;
    origin.push(pattern.len());
    // Collapse runs of `/` the way apparmor_parser's filter_slashes does: textually, except a
    // leading `//` not followed by a third `/`, which is kept.
    let mut out = Vec::with_capacity(text.len());
    let mut out_origin = Vec::with_capacity(origin.len());
    let mut start = 0;
    if text.len() >= 2 && text[0] == b'/' && text[1] == b'/' && text.get(2) != Some(&b'/') {
        out.extend_from_slice(&text[..2]);
        out_origin.extend_from_slice(&origin[..2]);
        start = 2;
    }
    let mut seen_slash = false;
    for (i, &b) in text.iter().enumerate().skip(start) {
        if b == b'/' {
            if seen_slash {
                continue;
            }
            seen_slash = true;
        } else {
            seen_slash = false;
        }
        out.push(b);
        out_origin.push(origin[i]);
    }
    out_origin.push(pattern.len());
    Ok(Expanded {
        text: String::from_utf8_lossy(&out).into_owned(),
        origin: out_origin,
    })
}

fn expand_into(
    pattern: &str,
    vars: &Vars,
    text: &mut Vec<u8>,
    origin: &mut Vec<usize>,
    fixed_origin: Option<usize>,
    depth: usize,
) -> Result<(), GlobError> {
    let err = |offset: usize, message: String| GlobError {
        pattern: pattern.to_string(),
        offset,
        message,
    };
    if depth > 16 {
        return Err(err(0, "variables nested too deeply (a cycle?)".into()));
    }
    if text.len() > MAX_EXPANDED_BYTES {
        return Err(err(0, "variable expansion too large".into()));
    }
    let src = pattern.as_bytes();
    let mut i = 0;
    while i < src.len() {
        let at = fixed_origin.unwrap_or(i);
        if src[i] == b'\\' && i + 1 < src.len() {
            text.extend_from_slice(&src[i..i + 2]);
            origin.extend([at, fixed_origin.unwrap_or(i + 1)]);
            i += 2;
            continue;
        }
        if src[i] == b'@' && src.get(i + 1) == Some(&b'{') {
            let Some(close) = pattern[i + 2..].find('}') else {
                return Err(err(i, "`@{` without `}`".into()));
            };
            let name = &pattern[i + 2..i + 2 + close];
            let end = i + 3 + close;
            let values = vars
                .get(name)
                .ok_or_else(|| err(i, format!("variable @{{{name}}} is not defined")))?;
            let followed_by_slash = src.get(end) == Some(&b'/');
            // apparmor_parser (parser_variable.c, expand_by_alternations) drops a value's
            // leading `/` after a `/` and its trailing `/` before one: `/x/@{V}` with
            // `@{V}=/a /b` is `/x/{a,b}`, not `/x/{/a,/b}` (whose `//` the textual slash
            // collapse cannot reach inside the braces).
            let after_slash = text.last() == Some(&b'/');
            let multi = values.len() != 1;
            if multi {
                text.push(b'{');
                origin.push(at);
            }
            for (n, v) in values.iter().enumerate() {
                if n > 0 {
                    text.push(b',');
                    origin.push(at);
                }
                let mut sub = Vec::new();
                let mut sub_origin = Vec::new();
                expand_into(v, vars, &mut sub, &mut sub_origin, Some(at), depth + 1)?;
                if after_slash {
                    let lead = sub.iter().take_while(|&&b| b == b'/').count();
                    sub.drain(..lead);
                    sub_origin.drain(..lead);
                }
                if followed_by_slash {
                    while sub.len() > 1 && sub.last() == Some(&b'/') {
                        sub.pop();
                        sub_origin.pop();
                    }
                }
                text.extend_from_slice(&sub);
                origin.extend_from_slice(&sub_origin);
                if text.len() > MAX_EXPANDED_BYTES {
                    return Err(err(i, "variable expansion too large".into()));
                }
            }
            if multi {
                text.push(b'}');
                origin.push(at);
            }
            i = end;
            continue;
        }
        text.push(src[i]);
        origin.push(at);
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, path: &str) -> bool {
        Glob::compile(glob).expect("compiles").is_match(path)
    }

    /// The table follows AppArmor's documented semantics (apparmor.d(5) "Globbing") and the
    /// translations `apparmor_parser -D rule-exprs` prints; `tests/profiles.rs` checks the same
    /// cases against the parser's compiled DFA.
    #[test]
    fn semantics_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("/var/log/msmtp", "/var/log/msmtp", true),
            ("/var/log/msmtp", "/var/log/msmtp.log", false),
            ("/a/*", "/a/b", true),
            ("/a/*", "/a/", false),
            ("/a/*", "/a/b/c", false),
            ("/a/*b", "/a/b", true),
            ("/a/*b", "/a/xb", true),
            ("/a/**", "/a/b/c", true),
            ("/a/**", "/a/", false),
            ("/a/**", "/a", false),
            ("/a/**/x", "/a/b/c/x", true),
            ("/a/**/x", "/a//x", false),
            ("/a/**.log", "/a/.log", true),
            ("/a/**.log", "/a/b/c.log", true),
            ("/a/*/", "/a/b/", true),
            ("/a/*/", "/a/b", false),
            ("/f/?", "/f/x", true),
            ("/f/?", "/f//", false),
            ("/f/?", "/f/xy", false),
            ("/g{,/h}", "/g", true),
            ("/g{,/h}", "/g/h", true),
            ("/j/{a,b{c,d}}e", "/j/bde", true),
            ("/j/{a,b{c,d}}e", "/j/be", false),
            ("/i/[a-c]*", "/i/cat", true),
            ("/i/[a-c]*", "/i/dog", false),
            ("/k/[^a]", "/k/b", true),
            ("/k/[^a]", "/k/a", false),
            ("/k/[^a]", "/k//", true),
            ("/m/\\{a\\}", "/m/{a}", true),
            ("/tmp/{,.}krb5cc_*", "/tmp/.krb5cc_0", true),
            ("/dev/pts/[0-9]*", "/dev/pts/12", true),
            (
                "/usr/lib*/samba/{,samba/}rpcd_{a,b}",
                "/usr/lib64/samba/samba/rpcd_b",
                true,
            ),
            ("/l/*x*y", "/l/axbxy", true),
            ("/l/*x*y", "/l/axb/xy", false),
        ];
        for &(glob, path, want) in cases {
            assert_eq!(m(glob, path), want, "{glob} vs {path}");
        }
    }

    /// Regression: the byte after a `\\` was always taken as a literal, so `\040` read as the
    /// characters `040` (`/srv/a\040b` matched `/srv/a040b`, not `/srv/a b`) and `\x2a` as
    /// `x2a`. apparmor_parser decodes octal, hex and decimal escapes to the byte, which is a
    /// literal even when it is a glob character.
    #[test]
    fn numeric_escapes_stand_for_their_byte() {
        let cases: &[(&str, &str, bool)] = &[
            ("/srv/a\\040b", "/srv/a b", true),
            ("/srv/a\\040b", "/srv/a040b", false),
            ("/srv/a\\x2ab", "/srv/a*b", true),
            ("/srv/a\\x2ab", "/srv/aXb", false),
            ("/srv/a\\x2ab", "/srv/ax2ab", false),
            ("/srv/a\\X2ab", "/srv/aX2ab", true),
            ("/srv/a\\d042b", "/srv/a*b", true),
            ("/srv/a\\d042b", "/srv/aXb", false),
            ("/srv/a\\052b", "/srv/a*b", true),
            ("/srv/a\\052b", "/srv/aXb", false),
            // Upper-case hex digits; a `{` that is encoded opens no alternation.
            ("/srv/\\x7Ba,b\\x7D", "/srv/{a,b}", true),
            ("/srv/\\x7ba,b\\x7d", "/srv/a", false),
            // At most two hex digits, three octal or decimal ones, and never past 255.
            ("/srv/\\x414", "/srv/A4", true),
            ("/srv/\\1011", "/srv/A1", true),
            ("/srv/\\400", "/srv/ 0", true),
            ("/srv/\\d0651", "/srv/A1", true),
            ("/srv/\\d256", "/srv/\x196", true),
            // `x` and `d` without a digit, and other characters, stand for themselves.
            ("/srv/\\xg", "/srv/xg", true),
            ("/srv/\\d", "/srv/d", true),
            ("/srv/\\*", "/srv/*", true),
            ("/srv/\\*", "/srv/a", false),
            ("/srv/a\\\\b", "/srv/a\\b", true),
            ("/srv/a\\tb", "/srv/a\tb", true),
            // In a class, and as a range's ends.
            ("/srv/[\\x41-\\x43]", "/srv/B", true),
            ("/srv/[\\x41-\\x43]", "/srv/D", false),
            ("/srv/[\\x2a]", "/srv/*", true),
            ("/srv/[\\x2a]", "/srv/x", false),
            // An encoded `/` is a `/` to the `*` after it: `*` needs a character.
            ("/srv\\x2f*", "/srv/a", true),
            ("/srv\\x2f*", "/srv/", false),
        ];
        for &(glob, path, want) in cases {
            assert_eq!(m(glob, path), want, "{glob} vs {path:?}");
        }
    }

    #[test]
    fn probe_reports_the_difference() {
        let g = Glob::compile("/var/log/msmtp").expect("compiles");
        let p = g.probe("/var/log/msmtp.log");
        assert!(!p.matched);
        assert_eq!(p.consumed, "/var/log/msmtp".len());
        assert!(p.pattern_could_end);
        let g = Glob::compile("/var/log/apache2/*").expect("compiles");
        let p = g.probe("/var/log/apache2/ssl/x.log");
        assert_eq!(p.consumed, "/var/log/apache2/ssl".len());
        assert_eq!(p.pattern_offset, "/var/log/apache2/".len());
    }

    #[test]
    fn expansion_like_apparmor_parser() {
        let mut vars = Vars::new();
        vars.insert("HOMEDIRS".into(), vec!["/home/".into()]);
        vars.insert(
            "HOME".into(),
            vec!["@{HOMEDIRS}/*/".into(), "/root/".into()],
        );
        vars.insert("run".into(), vec!["/run/".into(), "/var/run/".into()]);
        let e = expand("@{HOME}/.x", &vars).expect("expands");
        assert_eq!(e.text, "{/home/*,/root}/.x");
        assert_eq!(e.origin.len(), e.text.len() + 1);
        assert_eq!(
            expand("@{run}/foo", &vars).expect("ok").text,
            "{/run,/var/run}/foo"
        );
        assert_eq!(expand("/a//b", &vars).expect("ok").text, "/a/b");
        // After a `/`, each value's leading `/` goes. Debian's sbin.syslog-ng has
        // `@{CHROOT_BASE}=""` and `@{CHROOT_BASE}/@{run}/syslog-ng.pid krw,`.
        vars.insert("CHROOT_BASE".into(), vec![String::new()]);
        assert_eq!(
            expand("@{CHROOT_BASE}/@{run}/syslog-ng.pid", &vars)
                .expect("ok")
                .text,
            "/{run,var/run}/syslog-ng.pid"
        );
        assert_eq!(
            expand("/srv/@{run}/x", &vars).expect("ok").text,
            "/srv/{run,var/run}/x"
        );
        assert_eq!(
            expand("/srv/@{HOME}", &vars).expect("ok").text,
            "/srv/{home/*/,root/}"
        );
        assert!(expand("@{nope}/x", &vars).is_err());
        let g = Glob::compile(&e.text).expect("compiles");
        assert!(g.is_match("/home/otis/.x"));
        assert!(g.is_match("/root/.x"));
        assert!(!g.is_match("/home/.x"));
    }

    #[test]
    fn exponential_variables_are_refused() {
        let mut vars = Vars::new();
        vars.insert("v0".into(), vec!["0123456789".into(); 8]);
        for i in 1..12 {
            let prev = format!("@{{v{}}}", i - 1);
            vars.insert(format!("v{i}"), vec![format!("{prev}{prev}{prev}")]);
        }
        assert!(expand("/@{v11}", &vars).is_err());
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert!(Glob::compile("/a/{b").is_err());
        assert!(Glob::compile("/a/[b").is_err());
        assert!(Glob::compile("/a/b}").is_err());
        assert!(Glob::compile("/a/\\").is_err());
        // As apparmor_parser: one alternative or `,,` are errors; empty ones are fine.
        assert!(Glob::compile("/{a}").is_err());
        assert!(Glob::compile("/{a,,b}").is_err());
        assert!(Glob::compile("/{,a}").is_ok());
        assert!(Glob::compile("/{a,}").is_ok());
        assert!(Glob::compile("/{,}").is_ok());
    }
}

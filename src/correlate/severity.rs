//! Severity 0–10: AppArmor's own `severity.db` (capability and path ranks) combined with the
//! event's kind and class.
//!
//! The database is parsed and looked up the way AppArmor's utils do it
//! (`apparmor/severity.py`): `CAP_NAME rank` lines, and `path r w x` lines where a path without
//! `*` is an exact entry and a path with `*` is stored under its literal leading directories with
//! the rest as a glob. A lookup takes the exact entry if there is one, else descends the literal
//! directories as deep as they match and takes the highest rank of the globs that match at the
//! deepest level that has a match.

use std::collections::HashMap;

use super::glob::Glob;
use crate::event::{Event, Kind};

/// Debian's `/etc/apparmor/severity.db` (apparmor-utils 3.0.8), shipped so that severity works
/// without the package; the daemon may load the system file instead.
pub const BUNDLED_SEVERITY_DB: &str = include_str!("../../data/severity.db");

/// Rank used when the database has no entry. AppArmor's tools use 10 (to make the user look);
/// for alert routing a middle value is more useful.
pub const DEFAULT_UNKNOWN_RANK: u8 = 5;

/// A line of severity.db could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("severity.db line {line}: {reason}: {text:?}")]
pub struct SeverityDbError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
    /// The offending line.
    pub text: String,
}

/// Ranks for read, write and execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rwx {
    /// Read.
    pub r: u8,
    /// Write (also append, create, delete, link, lock, chmod …).
    pub w: u8,
    /// Execute (also mmap with exec).
    pub x: u8,
}

#[derive(Debug, Default)]
struct Tree {
    children: HashMap<String, Tree>,
    globs: Vec<(Glob, Rwx)>,
}

/// A parsed severity.db.
#[derive(Debug, Default)]
pub struct SeverityDb {
    capabilities: HashMap<String, u8>,
    files: HashMap<String, Rwx>,
    tree: Tree,
    unknown_rank: u8,
}

/// Which of r/w/x a permission mask asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modes {
    /// Read.
    pub r: bool,
    /// Write-like.
    pub w: bool,
    /// Execute-like.
    pub x: bool,
}

impl Modes {
    /// From an AppArmor file mask (`r w a c d l k m x`, possibly with the legacy `::` owner split).
    pub fn from_file_mask(mask: &str) -> Modes {
        let mut m = Modes::default();
        for c in mask.chars() {
            match c {
                'r' => m.r = true,
                'w' | 'a' | 'c' | 'd' | 'l' | 'k' | 'D' | 'R' | 'W' | 'A' | 'M' | 'L' | 'K'
                | 'N' => m.w = true,
                'x' | 'm' | 'X' | 'i' | 'I' | 'p' | 'P' | 'u' | 'U' => m.x = true,
                _ => {}
            }
        }
        m
    }

    fn any(self) -> bool {
        self.r || self.w || self.x
    }

    fn rank(self, rwx: Rwx) -> Option<u8> {
        let mut best: Option<u8> = None;
        for (on, v) in [(self.r, rwx.r), (self.w, rwx.w), (self.x, rwx.x)] {
            if on {
                best = Some(best.map_or(v, |b| b.max(v)));
            }
        }
        best
    }
}

fn parse_rank(s: &str) -> Option<u8> {
    s.parse::<u8>().ok().filter(|v| *v <= 10)
}

impl SeverityDb {
    /// Parse the text of a severity.db.
    pub fn parse(text: &str) -> Result<SeverityDb, SeverityDbError> {
        let mut db = SeverityDb {
            unknown_rank: DEFAULT_UNKNOWN_RANK,
            ..SeverityDb::default()
        };
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let err = |reason: &str| SeverityDbError {
                line: i + 1,
                reason: reason.to_owned(),
                text: line.to_owned(),
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let Some(path) = line.strip_prefix('/') {
                let _ = path;
                let [path, r, w, x] = parts[..] else {
                    return Err(err("expected `path r w x`"));
                };
                let (Some(r), Some(w), Some(x)) = (parse_rank(r), parse_rank(w), parse_rank(x))
                else {
                    return Err(err("ranks must be 0–10"));
                };
                db.insert_path(&path[1..], Rwx { r, w, x })
                    .map_err(|e| err(&e.to_string()))?;
            } else if line.starts_with("CAP_") {
                let [cap, rank] = parts[..] else {
                    return Err(err("expected `CAP_NAME rank`"));
                };
                let rank = parse_rank(rank).ok_or_else(|| err("rank must be 0–10"))?;
                db.capabilities.insert(cap.to_owned(), rank);
            } else {
                return Err(err("unexpected line"));
            }
        }
        Ok(db)
    }

    /// The bundled Debian database.
    pub fn bundled() -> SeverityDb {
        // The bundled file is tested to parse; an empty database is a safe fallback.
        SeverityDb::parse(BUNDLED_SEVERITY_DB).unwrap_or_default()
    }

    fn insert_path(&mut self, path: &str, rwx: Rwx) -> Result<(), super::glob::GlobError> {
        // Like severity.py: entries without '*' are exact (a later duplicate wins).
        if !path.contains('*') {
            self.files.insert(path.to_owned(), rwx);
            return Ok(());
        }
        let pieces: Vec<&str> = path.split('/').collect();
        let mut node = &mut self.tree;
        for (i, piece) in pieces.iter().enumerate() {
            if piece.contains('*') {
                let rest = pieces[i..].join("/");
                // severity.py keys globs by their regex: a repeated entry replaces the earlier
                // one (severity.db lists /etc/shadow* as 7 9 0 and later as 5 9 0).
                match node.globs.iter_mut().find(|(g, _)| g.as_str() == rest) {
                    Some(entry) => entry.1 = rwx,
                    None => node.globs.push((Glob::new(&rest)?, rwx)),
                }
                return Ok(());
            }
            node = node.children.entry((*piece).to_owned()).or_default();
        }
        Ok(())
    }

    /// Rank of a capability by name (`sys_admin`, `CAP_SYS_ADMIN`, any case).
    pub fn rank_capability(&self, name: &str) -> u8 {
        let upper = name.to_ascii_uppercase();
        let key = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        self.capabilities
            .get(&key)
            .copied()
            .unwrap_or(self.unknown_rank)
    }

    /// Rank of a path for the given modes; None when nothing in the database matches.
    pub fn lookup_path(&self, path: &str, modes: Modes) -> Option<u8> {
        let rel = path.strip_prefix('/')?;
        if !modes.any() {
            return None;
        }
        if let Some(rwx) = self.files.get(rel) {
            return modes.rank(*rwx);
        }
        let pieces: Vec<&str> = rel.split('/').collect();
        check_subtree(&self.tree, modes, &pieces)
    }

    /// Rank of a path, falling back to the unknown rank.
    pub fn rank_path(&self, path: &str, modes: Modes) -> u8 {
        self.lookup_path(path, modes).unwrap_or(self.unknown_rank)
    }

    /// The rank used when nothing matches.
    pub fn unknown_rank(&self) -> u8 {
        self.unknown_rank
    }

    /// Number of capability entries, exact path entries and glob entries.
    pub fn len(&self) -> (usize, usize, usize) {
        fn globs(t: &Tree) -> usize {
            t.globs.len() + t.children.values().map(globs).sum::<usize>()
        }
        (self.capabilities.len(), self.files.len(), globs(&self.tree))
    }

    /// True when the database has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0, 0)
    }
}

/// severity.py `check_subtree`: descend literal directories first; only when that finds nothing,
/// try the globs of this level against the remaining path.
fn check_subtree(tree: &Tree, modes: Modes, segments: &[&str]) -> Option<u8> {
    let (first, rest) = match segments.split_first() {
        Some((f, r)) => (*f, r),
        None => ("", &[][..]),
    };
    let mut sev = None;
    if let Some(child) = tree.children.get(first) {
        sev = check_subtree(child, modes, rest);
    }
    if sev.is_none() {
        let path = if segments.is_empty() {
            String::new()
        } else {
            segments.join("/")
        };
        for (glob, rwx) in &tree.globs {
            if glob.matches(&path)
                && let Some(r) = modes.rank(*rwx)
            {
                sev = Some(sev.map_or(r, |s: u8| s.max(r)));
            }
        }
    }
    sev
}

/// How the kind shifts the object's rank (killed > denied > allowed > audit).
pub fn kind_adjustment(kind: Kind) -> i8 {
    match kind {
        Kind::Killed => 1,
        Kind::Denied => 0,
        Kind::Allowed => -2,
        Kind::Error | Kind::Hint | Kind::Auto => -3,
        Kind::Audit => -4,
        Kind::Status => 0,
    }
}

/// The severity of one event (0–10), before noise rules.
///
/// The object's rank comes from severity.db for files (by the denied, else requested, mask)
/// and capabilities; other classes get a fixed rank. Exec, ptrace and capability rank higher
/// (+1), then the kind shifts the result.
pub fn event_severity(db: &SeverityDb, event: &Event, class: &str) -> u8 {
    if event.kind == Kind::Status {
        return status_severity(event);
    }
    let op = event.operation().unwrap_or("");
    let mask = event.denied().or_else(|| event.requested()).unwrap_or("");
    let (base, bonus): (u8, i8) = match class {
        "cap" => {
            let name = event
                .field("capname")
                .or_else(|| event.name())
                .unwrap_or("");
            (db.rank_capability(name), 1)
        }
        "file" | "" => {
            let modes = Modes::from_file_mask(mask);
            let exec = op == "exec" || modes.x;
            let base = event
                .name()
                .map_or(db.unknown_rank(), |n| db.rank_path(n, modes));
            // An exec that severity.db rates 0 for x is still a program running where it should not.
            let base = if op == "exec" { base.max(6) } else { base };
            (base, i8::from(exec))
        }
        "ptrace" => {
            let trace = mask.contains("trace");
            (if trace { 8 } else { 6 }, 1)
        }
        "mount" => (8, 0),
        "domain" => (7, 0),
        "signal" => (if mask.contains("send") { 5 } else { 4 }, 0),
        "net" => {
            let raw = matches!(event.field("sock_type"), Some("raw") | Some("packet"))
                || matches!(event.field("family"), Some("packet") | Some("netlink"));
            (if raw { 6 } else { 4 }, 0)
        }
        "namespace" => (5, 0),
        "io_uring" => (6, 0),
        "dbus" => (3, 0),
        "module" => (9, 0),
        _ => (db.unknown_rank(), 0),
    };
    clamp(i16::from(base) + i16::from(bonus) + i16::from(kind_adjustment(event.kind)))
}

fn status_severity(event: &Event) -> u8 {
    match event.operation() {
        Some("profile_remove") => 4,
        _ if event.field("error").is_some() => 5,
        _ => 2,
    }
}

/// Clamp to 0–10.
pub fn clamp(v: i16) -> u8 {
    v.clamp(0, 10) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> SeverityDb {
        SeverityDb::parse(BUNDLED_SEVERITY_DB).unwrap()
    }

    fn r() -> Modes {
        Modes::from_file_mask("r")
    }

    #[test]
    fn bundled_db_parses_fully() {
        let (caps, files, globs) = db().len();
        assert!(caps >= 40, "{caps}");
        assert!(files >= 200, "{files}");
        assert!(globs >= 100, "{globs}");
    }

    #[test]
    fn capability_ranks() {
        let db = db();
        assert_eq!(db.rank_capability("sys_admin"), 10);
        assert_eq!(db.rank_capability("CAP_SETUID"), 9);
        assert_eq!(db.rank_capability("net_raw"), 8);
        assert_eq!(db.rank_capability("dac_read_search"), 7);
        assert_eq!(db.rank_capability("net_broadcast"), 0);
        assert_eq!(db.rank_capability("no_such_cap"), DEFAULT_UNKNOWN_RANK);
    }

    #[test]
    fn path_ranks_exact_and_glob() {
        let db = db();
        // exact
        assert_eq!(
            db.lookup_path("/dev/null", Modes::from_file_mask("rw")),
            Some(0)
        );
        // /etc/shadow* is listed as 7 9 0 and again, later, as 5 9 0: the later one counts
        assert_eq!(db.lookup_path("/etc/shadow", r()), Some(5));
        assert_eq!(
            db.lookup_path("/etc/shadow-", Modes::from_file_mask("w")),
            Some(9)
        );
        // /home/*/.ssh/** (7) and /home/** (4) at the same level: the maximum wins
        assert_eq!(db.lookup_path("/home/alice/.ssh/id_rsa", r()), Some(7));
        assert_eq!(db.lookup_path("/home/alice/notes.txt", r()), Some(4));
        // /proc/** r=6, but the exact /proc/kallsyms r=7
        assert_eq!(db.lookup_path("/proc/1234/status", r()), Some(6));
        assert_eq!(db.lookup_path("/proc/kallsyms", r()), Some(7));
        // /dev/pts/* 8 9
        assert_eq!(
            db.lookup_path("/dev/pts/3", Modes::from_file_mask("w")),
            Some(9)
        );
        // no entry
        assert_eq!(db.lookup_path("/opt/thing", r()), None);
        assert_eq!(db.rank_path("/opt/thing", r()), DEFAULT_UNKNOWN_RANK);
    }

    #[test]
    fn rejects_bad_lines_with_line_number() {
        let e = SeverityDb::parse("# c\nCAP_X 11\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = SeverityDb::parse("/etc/x 1 2\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(SeverityDb::parse("bogus 1\n").is_err());
    }

    #[test]
    fn mask_modes() {
        assert_eq!(
            Modes::from_file_mask("wc"),
            Modes {
                r: false,
                w: true,
                x: false
            }
        );
        assert_eq!(
            Modes::from_file_mask("m"),
            Modes {
                r: false,
                w: false,
                x: true
            }
        );
    }
}

//! The profile index: every file of a profile tree parsed, every declaration (profiles, hats,
//! children) named, includes resolved in all their spellings, variables collected.
//!
//! Built from a [`ProfileTree`] held in memory (see `loader` for reading one from disk), so it
//! is pure and testable with literal text. A file with bad syntax contributes what could be
//! read plus [`SyntaxError`]s; the rest of the tree is indexed as usual.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::glob::{Glob, Vars};
use super::parser::{self, DeclKind, Include, Item, ParsedFile, ProfileDecl, Rule, SyntaxError};

/// A profile tree in memory: file paths relative to the root → contents.
#[derive(Debug, Clone, Default)]
pub struct ProfileTree {
    /// The root as it would appear on the system (`/etc/apparmor.d`), for messages and commands.
    pub base: String,
    /// Relative path → text.
    pub files: BTreeMap<String, Arc<str>>,
    /// File names found in `disable/` (profiles switched off by the admin).
    pub disabled: BTreeSet<String>,
    /// Every directory below the root (relative), so that an include of an empty directory
    /// resolves.
    pub dirs: BTreeSet<String>,
}

/// One declaration with its place in the hierarchy.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Full name as the kernel reports it: `msmtp`, `msmtp//helpers`, `/usr/sbin/httpd2-prefork//DEFAULT_URI`.
    pub name: String,
    /// The declaration (with its body).
    pub decl: ProfileDecl,
    /// The enclosing profile, for hats and children.
    pub parent: Option<usize>,
    /// The top-level profile this belongs to (itself for top-level profiles).
    pub top: usize,
    /// The top-level file the (top) profile was declared in.
    pub top_file: Arc<str>,
    /// Items at file level before the declaration (includes of tunables, variables).
    pub preamble: Arc<Vec<Item>>,
}

impl Profile {
    /// The file this declaration is written in.
    pub fn file(&self) -> &Arc<str> {
        &self.decl.span.file
    }
}

/// The rules, variables and include facts that apply to one profile.
#[derive(Debug, Clone, Default)]
pub struct Effective<'a> {
    /// Rules in order, the profile's own and those of included files.
    pub rules: Vec<&'a Rule>,
    /// Variables visible to the profile.
    pub vars: Vars,
    /// The `local/…` include of the profile's own body, when there is one.
    pub local_include: Option<String>,
    /// Includes that name files not in the tree (without `if exists`).
    pub missing: Vec<&'a Include>,
}

/// The index of a profile tree.
#[derive(Debug, Clone)]
pub struct Index {
    base: String,
    files: HashMap<String, ParsedFile>,
    sources: HashMap<String, Arc<str>>,
    /// Relative directory → files directly in it (sorted), for directory includes.
    dirs: HashMap<String, Vec<String>>,
    profiles: Vec<Profile>,
    by_name: HashMap<String, Vec<usize>>,
    errors: Vec<SyntaxError>,
    disabled: BTreeSet<String>,
    globs: BoundedCache<String, Arc<Glob>>,
    paths: BoundedCache<usize, PreparedPaths>,
}

/// A file rule's path with the profile's variables expanded, and compiled.
#[derive(Debug)]
pub struct PreparedPath {
    /// The expanded pattern, with offsets back into the rule as written.
    pub expanded: super::glob::Expanded,
    /// The pattern compiled.
    pub glob: Arc<Glob>,
}

/// Per profile, aligned with [`Effective::rules`]: each file rule's path prepared (None for
/// other rules, `file,` and paths that do not expand or compile).
pub type PreparedPaths = Arc<[Option<Arc<PreparedPath>>]>;

/// Profiles whose prepared paths are kept at most.
const PATH_CACHE_PROFILES: usize = 256;

/// Compiled globs kept at most.
const GLOB_CACHE_ENTRIES: usize = 4096;

/// A cache filled through `&Index`, bounded: cleared when full. A clone starts empty.
///
/// The index keeps two: compiled globs by expanded pattern, shared by every profile (the rules
/// of an abstraction are compiled once, not once per profile including it; compiling them for
/// each denial was a third of the explainer's cost), and [`PreparedPaths`] by profile index (a
/// profile's variables and rules do not change while the index lives, so each rule is expanded
/// once, not per denial).
struct BoundedCache<K, V> {
    map: std::sync::Mutex<HashMap<K, V>>,
    capacity: usize,
    what: &'static str,
}

impl<K: std::hash::Hash + Eq, V: Clone> BoundedCache<K, V> {
    fn new(capacity: usize, what: &'static str) -> Self {
        BoundedCache {
            map: std::sync::Mutex::new(HashMap::new()),
            capacity,
            what,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
        match self.map.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.lock().get(key).cloned()
    }

    fn insert(&self, key: K, value: V) {
        let mut map = self.lock();
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(key, value);
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Clone for BoundedCache<K, V> {
    fn clone(&self) -> Self {
        BoundedCache::new(self.capacity, self.what)
    }
}

impl<K, V> std::fmt::Debug for BoundedCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.map.lock().map(|m| m.len()).unwrap_or(0);
        write!(f, "{}: {n}", self.what)
    }
}

/// Files that are never policy (editor and package manager leftovers).
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || [
            ".dpkg-new",
            ".dpkg-old",
            ".dpkg-dist",
            ".dpkg-bak",
            ".dpkg-remove",
            ".pacsave",
            ".pacnew",
            ".rpmnew",
            ".rpmsave",
            ".orig",
            ".rej",
            ".swp",
        ]
        .iter()
        .any(|s| name.ends_with(s))
        || name == "README"
}

impl Index {
    /// Parse and index a tree.
    pub fn build(tree: &ProfileTree) -> Index {
        let mut files = HashMap::with_capacity(tree.files.len());
        let mut sources = HashMap::with_capacity(tree.files.len());
        let mut dirs: HashMap<String, Vec<String>> = HashMap::new();
        let mut errors = Vec::new();
        for (path, text) in &tree.files {
            let parsed = parser::parse_file(path, text);
            errors.extend(parsed.errors.iter().cloned());
            files.insert(path.clone(), parsed);
            sources.insert(path.clone(), text.clone());
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path.as_str()));
            if !is_ignored_name(name) {
                dirs.entry(dir.to_string()).or_default().push(path.clone());
            }
        }
        for d in &tree.dirs {
            dirs.entry(d.clone()).or_default();
        }
        for list in dirs.values_mut() {
            list.sort();
        }
        let mut index = Index {
            base: tree.base.trim_end_matches('/').to_string(),
            files,
            sources,
            dirs,
            profiles: Vec::new(),
            by_name: HashMap::new(),
            errors,
            disabled: tree.disabled.clone(),
            globs: BoundedCache::new(GLOB_CACHE_ENTRIES, "compiled globs"),
            paths: BoundedCache::new(PATH_CACHE_PROFILES, "profiles with prepared paths"),
        };
        index.collect_declarations();
        index
    }

    /// `pattern` (variables already expanded) compiled, from the cache when it was compiled
    /// before; None when it does not compile.
    pub fn compiled_glob(&self, pattern: &str) -> Option<Arc<Glob>> {
        if let Some(g) = self.globs.get(pattern) {
            return Some(g);
        }
        let g = Arc::new(Glob::compile(pattern).ok()?);
        self.globs.insert(pattern.to_string(), g.clone());
        Some(g)
    }

    /// The file rules of declaration `idx` (whose rules and variables are `eff`) with their
    /// paths expanded and compiled, from the cache after the first time.
    pub fn prepared_paths(&self, idx: usize, eff: &Effective<'_>) -> PreparedPaths {
        if let Some(p) = self.paths.get(&idx) {
            return p;
        }
        let prepared: PreparedPaths = eff
            .rules
            .iter()
            .map(|rule| {
                let parser::RuleBody::File {
                    path: Some(path), ..
                } = &rule.body
                else {
                    return None;
                };
                let expanded = super::glob::expand(path, &eff.vars).ok()?;
                let glob = self.compiled_glob(&expanded.text)?;
                Some(Arc::new(PreparedPath { expanded, glob }))
            })
            .collect();
        self.paths.insert(idx, prepared.clone());
        prepared
    }

    fn collect_declarations(&mut self) {
        let mut top_files: Vec<&String> = self.dirs.get("").into_iter().flatten().collect();
        top_files.sort();
        let mut out = Vec::new();
        for path in top_files {
            let Some(file) = self.files.get(path.as_str()) else {
                continue;
            };
            let mut preamble = Vec::new();
            for item in &file.items {
                match item {
                    Item::Profile(decl) => {
                        let pre = Arc::new(preamble.clone());
                        self.flatten(decl, None, &pre, &file.path, &mut out);
                    }
                    other => preamble.push(other.clone()),
                }
            }
        }
        for (i, p) in out.iter().enumerate() {
            self.by_name.entry(p.name.clone()).or_default().push(i);
        }
        self.profiles = out;
    }

    fn flatten(
        &self,
        decl: &ProfileDecl,
        parent: Option<usize>,
        preamble: &Arc<Vec<Item>>,
        top_file: &Arc<str>,
        out: &mut Vec<Profile>,
    ) {
        let idx = out.len();
        let name = match parent {
            Some(p) => format!("{}//{}", out[p].name, decl.name),
            None => decl.name.clone(),
        };
        let top = parent.map_or(idx, |p| out[p].top);
        out.push(Profile {
            name,
            decl: decl.clone(),
            parent,
            top,
            top_file: top_file.clone(),
            preamble: preamble.clone(),
        });
        for item in &decl.body {
            match item {
                Item::Profile(child) => self.flatten(child, Some(idx), preamble, top_file, out),
                Item::Include(inc) => {
                    // Hats and children kept in included files (apache2.d/*).
                    for target in self
                        .resolve_include(inc, &decl.span.file)
                        .unwrap_or_default()
                    {
                        if let Some(f) = self.files.get(&target) {
                            for it in &f.items {
                                if let Item::Profile(child) = it {
                                    self.flatten(child, Some(idx), preamble, top_file, out);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The tree root as given (`/etc/apparmor.d`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Every declaration, in file order.
    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }

    /// A declaration by index.
    pub fn profile(&self, idx: usize) -> Option<&Profile> {
        self.profiles.get(idx)
    }

    /// Declarations with this exact full name.
    pub fn by_name(&self, name: &str) -> &[usize] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// Syntax errors of all files.
    pub fn errors(&self) -> &[SyntaxError] {
        &self.errors
    }

    /// Number of files indexed.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// True when the admin disabled this profile file (`disable/<file>`).
    pub fn is_disabled(&self, file: &str) -> bool {
        self.disabled.contains(file)
    }

    /// The text of a file.
    pub fn source(&self, file: &str) -> Option<&Arc<str>> {
        self.sources.get(file)
    }

    /// One line (1-based) of a file, without the newline.
    pub fn line(&self, file: &str, line: u32) -> Option<&str> {
        let src = self.sources.get(file)?;
        src.lines().nth(usize::try_from(line).ok()?.checked_sub(1)?)
    }

    /// An absolute path for a relative one.
    pub fn absolute(&self, rel: &str) -> String {
        if self.base.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.base)
        }
    }

    /// The files an include names, relative to the root (a directory include names every file
    /// directly in it, possibly none). None when nothing in the tree matches.
    pub fn resolve_include(&self, inc: &Include, from_file: &str) -> Option<Vec<String>> {
        let mut candidates = Vec::new();
        let t = inc.target.trim();
        if let Some(abs) = t.strip_prefix('/') {
            let base = self.base.trim_start_matches('/');
            if let Some(rel) = abs.strip_prefix(base).and_then(|r| r.strip_prefix('/')) {
                candidates.push(rel.to_string());
            }
        } else {
            candidates.push(t.to_string());
            if !inc.angle
                && let Some((dir, _)) = from_file.rsplit_once('/')
            {
                candidates.push(format!("{dir}/{t}"));
            }
        }
        for c in candidates {
            let c = c.trim_end_matches('/').to_string();
            if self.files.contains_key(&c) {
                return Some(vec![c]);
            }
            if let Some(list) = self.dirs.get(&c) {
                return Some(list.clone());
            }
        }
        None
    }

    /// Rules, variables and include facts for a declaration.
    pub fn effective(&self, idx: usize) -> Effective<'_> {
        let mut eff = Effective::default();
        let Some(profile) = self.profiles.get(idx) else {
            return eff;
        };
        let mut seen = HashSet::new();
        // Variables of the preamble (tunables), then of the enclosing profiles' bodies.
        self.walk(&profile.preamble, "", &mut eff, &mut seen, false, 0);
        let mut chain = Vec::new();
        let mut cur = profile.parent;
        while let Some(p) = cur {
            chain.push(p);
            cur = self.profiles[p].parent;
        }
        for &p in chain.iter().rev() {
            let mut vars_only = Effective::default();
            let mut seen_vars = seen.clone();
            self.walk(
                &self.profiles[p].decl.body,
                &self.profiles[p].decl.span.file,
                &mut vars_only,
                &mut seen_vars,
                false,
                0,
            );
            merge_vars(&mut eff.vars, vars_only.vars);
        }
        for item in &profile.decl.body {
            if let Item::Include(inc) = item
                && inc.target.starts_with("local/")
            {
                eff.local_include = Some(inc.target.clone());
            }
        }
        self.walk(
            &profile.decl.body,
            &profile.decl.span.file,
            &mut eff,
            &mut seen,
            true,
            0,
        );
        eff
    }

    fn walk<'a>(
        &'a self,
        items: &'a [Item],
        from_file: &str,
        eff: &mut Effective<'a>,
        seen: &mut HashSet<String>,
        with_rules: bool,
        depth: usize,
    ) {
        if depth > 32 {
            return;
        }
        for item in items {
            match item {
                Item::Rule(r) if with_rules => eff.rules.push(r),
                Item::Var(v) => {
                    let entry = eff.vars.entry(v.name.clone()).or_default();
                    if !v.append {
                        entry.clear();
                    }
                    entry.extend(v.values.iter().cloned());
                }
                Item::Include(inc) => {
                    let Some(targets) = self.resolve_include(inc, from_file) else {
                        if !inc.if_exists {
                            eff.missing.push(inc);
                        }
                        continue;
                    };
                    for t in targets {
                        if !seen.insert(t.clone()) {
                            continue;
                        }
                        if let Some(f) = self.files.get(&t) {
                            self.walk(&f.items, &t, eff, seen, with_rules, depth + 1);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn merge_vars(into: &mut Vars, from: Vars) {
    for (k, v) in from {
        into.insert(k, v);
    }
}

/// The mode a declaration asks for in its flags (`complain`, `kill`, `unconfined`, …), else
/// `enforce`.
pub fn declared_mode(decl: &ProfileDecl) -> &'static str {
    for f in &decl.flags {
        match f.as_str() {
            "complain" => return "complain",
            "kill" => return "kill",
            "unconfined" => return "unconfined",
            "prompt" => return "prompt",
            _ => {}
        }
    }
    "enforce"
}

/// Kind of a declaration as a word.
pub fn kind_word(kind: DeclKind) -> &'static str {
    match kind {
        DeclKind::Profile => "profile",
        DeclKind::Hat => "hat",
        DeclKind::Child => "child profile",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> ProfileTree {
        ProfileTree {
            base: "/etc/apparmor.d".into(),
            files: files
                .iter()
                .map(|(p, t)| ((*p).to_string(), Arc::from(*t)))
                .collect(),
            disabled: BTreeSet::new(),
            dirs: BTreeSet::new(),
        }
    }

    #[test]
    fn declarations_includes_and_variables() {
        let t = tree(&[
            (
                "tunables/global",
                "include <tunables/home>\n@{x}=a\n@{x}+=b\n",
            ),
            (
                "tunables/home",
                "@{HOME}=/home/*/ /root/\ninclude <tunables/home.d>\n",
            ),
            ("tunables/home.d/site", "@{HOME}+=/srv/home/*/\n"),
            (
                "abstractions/base",
                "/etc/ld.so.cache r,\n#include \"abstractions/extra\"\n",
            ),
            ("abstractions/extra", "/extra r,\n"),
            (
                "usr.bin.foo",
                "include <tunables/global>\nprofile foo /usr/bin/foo {\n  include <abstractions/base>\n  /own r,\n  ^hat {\n    /hat r,\n  }\n  include if exists <local/usr.bin.foo>\n  include <missing/file>\n}\n/usr/bin/bar {\n}\n",
            ),
            ("broken", "profile broken {\n  /x qq,\n  /y r,\n}\n"),
        ]);
        let idx = Index::build(&t);
        let names: Vec<&str> = idx.profiles().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["broken", "foo", "foo//hat", "/usr/bin/bar"]);
        assert_eq!(idx.errors().len(), 1);
        assert_eq!(idx.errors()[0].span.line, 2);
        let foo = idx.by_name("foo")[0];
        let eff = idx.effective(foo);
        let texts: Vec<&str> = eff.rules.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, vec!["/etc/ld.so.cache r", "/extra r", "/own r"]);
        assert_eq!(eff.vars["x"], vec!["a", "b"]);
        assert_eq!(eff.vars["HOME"], vec!["/home/*/", "/root/", "/srv/home/*/"]);
        assert_eq!(eff.local_include.as_deref(), Some("local/usr.bin.foo"));
        assert_eq!(eff.missing.len(), 1);
        let hat = idx.by_name("foo//hat")[0];
        let eff = idx.effective(hat);
        assert_eq!(eff.rules.len(), 1);
        assert!(eff.vars.contains_key("HOME"));
        assert_eq!(idx.line("usr.bin.foo", 4), Some("  /own r,"));
    }
}

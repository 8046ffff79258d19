//! Optional facts from the running system, kept apart from the pure explainer: the
//! `apparmor_parser` compile check of a suggestion (on a temporary copy of the tree), the package
//! owning a file (`dpkg -S`, `rpm -qf`), whether a conffile was modified, and the profile modes
//! the kernel reports. Every function degrades to "unknown" when a tool or file is missing.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::explain::Context;
use super::index::Index;
use super::resolve;
use super::suggest::{CheckStatus, Edit, Suggestion};
use crate::event::Event;

/// Where the kernel lists loaded profiles and their modes.
pub const KERNEL_PROFILES: &str = "/sys/kernel/security/apparmor/profiles";

/// Find an executable in PATH, /usr/sbin or /sbin.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Copy a profile tree (files and directories; symlinked files as their contents; `cache`
/// directories skipped).
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        let src = entry.path();
        let dst = to.join(&name);
        let meta = match fs::metadata(&src) {
            Ok(m) => m,
            Err(_) => continue, // dangling symlink
        };
        if meta.is_dir() {
            if name == "cache" || entry.file_type()?.is_symlink() {
                continue;
            }
            copy_tree(&src, &dst)?;
        } else if meta.is_file() {
            fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Run `apparmor_parser -Q -K --base ROOT ROOT/FILE` (compile only, no kernel, no cache).
/// Ok(()) when it compiles, Err(message) with the parser's complaint otherwise.
pub fn compile(parser: &Path, root: &Path, profile_file: &str) -> Result<(), String> {
    let out = Command::new(parser)
        .arg("-Q")
        .arg("-K")
        .arg("--base")
        .arg(root)
        .arg(root.join(profile_file))
        .output()
        .map_err(|e| format!("cannot run {}: {e}", parser.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let msg: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("Cache read/write disabled"))
        .collect();
    let root_s = root.to_string_lossy();
    Err(msg
        .join(" ")
        .replace(root_s.as_ref(), "")
        .trim()
        .to_string())
}

/// Apply `edit` with `line_text` to the tree at `root` (a copy, for the compile check).
pub fn apply_edit(root: &Path, edit: &Edit, line_text: &str) -> io::Result<()> {
    let path = root.join(edit.file());
    match edit {
        Edit::Append { .. } => {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            let mut text = fs::read_to_string(&path).unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(line_text);
            text.push('\n');
            fs::write(&path, text)
        }
        Edit::InsertBefore { line, col, .. } => {
            let text = fs::read_to_string(&path)?;
            let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
            let at = usize::try_from(*line)
                .ok()
                .filter(|l| (1..=lines.len()).contains(l))
                .ok_or_else(|| io::Error::other(format!("no line {line}")))?;
            let target = lines[at - 1].clone();
            let skip = usize::try_from(col.saturating_sub(1)).unwrap_or(usize::MAX);
            let split = target
                .char_indices()
                .nth(skip)
                .map_or(target.len(), |(i, _)| i);
            let (before, after) = target.split_at(split);
            let indent: String = target.chars().take_while(|c| c.is_whitespace()).collect();
            let mut new = Vec::new();
            if !before.trim().is_empty() {
                new.push(before.trim_end().to_string());
            }
            new.push(format!("{indent}  {line_text}"));
            new.push(format!("{indent}{}", after.trim_start()));
            lines.splice(at - 1..at, new);
            let mut out = lines.join("\n");
            out.push('\n');
            fs::write(&path, out)
        }
        Edit::InsertAfter { line, .. } | Edit::ReplaceLine { line, .. } => {
            let text = fs::read_to_string(&path)?;
            let mut lines: Vec<&str> = text.lines().collect();
            let at = usize::try_from(*line)
                .unwrap_or(usize::MAX)
                .min(lines.len());
            let indented = format!("  {line_text}");
            if matches!(edit, Edit::ReplaceLine { .. }) {
                if at == 0 {
                    return Err(io::Error::other("line 0"));
                }
                lines[at - 1] = line_text;
            } else {
                lines.insert(at, &indented);
            }
            let mut out = lines.join("\n");
            out.push('\n');
            fs::write(&path, out)
        }
    }
}

/// Compile-check a suggestion: copy the tree at `root` to a temporary directory, make sure the
/// profile compiles as it is, apply the edit, compile again. Sets `check` and `check_message`.
pub fn check_suggestion(root: &Path, suggestion: &mut Suggestion) {
    check_suggestion_with(root, suggestion, &mut Baselines::default());
}

/// Whether each top-level profile file compiles unchanged, per tree: the first half of a check,
/// done once per file (it is as slow as the second half) until the tree changes.
pub type Baselines = HashMap<String, Result<(), String>>;

/// [`check_suggestion`], remembering in `baselines` whether the unchanged profile compiles.
pub fn check_suggestion_with(root: &Path, suggestion: &mut Suggestion, baselines: &mut Baselines) {
    let Some(parser) = find_program("apparmor_parser") else {
        suggestion.check = CheckStatus::Skipped;
        suggestion.check_message = Some("apparmor_parser is not installed".into());
        return;
    };
    let result = (|| -> Result<Result<(), String>, String> {
        let tmp = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        copy_tree(root, tmp.path()).map_err(|e| format!("copying {}: {e}", root.display()))?;
        let baseline = match baselines.get(&suggestion.profile_file) {
            Some(known) => known.clone(),
            None => {
                let r = compile(&parser, tmp.path(), &suggestion.profile_file);
                baselines.insert(suggestion.profile_file.clone(), r.clone());
                r
            }
        };
        if let Err(e) = baseline {
            return Err(format!("the profile does not compile even unchanged: {e}"));
        }
        apply_edit(tmp.path(), &suggestion.edit, &suggestion.rule)
            .map_err(|e| format!("applying the edit: {e}"))?;
        Ok(compile(&parser, tmp.path(), &suggestion.profile_file))
    })();
    match result {
        Ok(Ok(())) => {
            suggestion.check = CheckStatus::Passed;
            suggestion.check_message = None;
        }
        Ok(Err(msg)) => {
            suggestion.check = CheckStatus::Failed;
            suggestion.check_message = Some(msg);
        }
        Err(msg) => {
            suggestion.check = CheckStatus::Skipped;
            suggestion.check_message = Some(msg);
        }
    }
}

/// Package lookups, cached.
///
/// `dpkg -S` reads every `*.list` file of the dpkg database (~40 ms each on Debian); with dozens
/// of confined binaries that used to cost seconds on the alert path. So the file lists are read
/// once, into a map from a hash of each path to its package (~25 bytes an entry; paths under
/// [`UNINDEXED_PREFIXES`] — documentation, headers, sources, half of a system's files — are
/// left out), and read again when the database changes. Paths left out still ask
/// `dpkg-query -S`, and without dpkg `rpm -qf` is asked.
#[derive(Debug)]
pub struct Packages {
    owner: HashMap<PathBuf, Option<String>>,
    info_dir: PathBuf,
    index: Option<DpkgIndex>,
}

impl Default for Packages {
    fn default() -> Self {
        Packages::with_dpkg_info(PathBuf::from(DPKG_INFO))
    }
}

/// Where dpkg keeps its file lists.
pub const DPKG_INFO: &str = "/var/lib/dpkg/info";

/// Path prefixes not indexed: no profile or confined binary lives there.
pub const UNINDEXED_PREFIXES: &[&str] = &["/usr/share/", "/usr/include/", "/usr/src/"];

fn is_indexed(path: &str) -> bool {
    path.starts_with('/') && !UNINDEXED_PREFIXES.iter().any(|p| path.starts_with(p))
}

fn path_hash(path: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    h.finish()
}

/// Hash of each indexed path → package, as of the database's modification time. (A 64-bit hash
/// collision among some 10⁵ paths has a chance of about 10⁻⁹.)
#[derive(Debug)]
struct DpkgIndex {
    mtime: Option<std::time::SystemTime>,
    files: HashMap<u64, u32>,
    packages: Vec<String>,
}

impl DpkgIndex {
    fn read(info_dir: &Path) -> Option<DpkgIndex> {
        let mtime = fs::metadata(info_dir).ok()?.modified().ok();
        let mut files = HashMap::new();
        let mut packages = Vec::new();
        for entry in fs::read_dir(info_dir).ok()?.flatten() {
            let name = entry.file_name();
            let Some(package) = name.to_str().and_then(|n| n.strip_suffix(".list")) else {
                continue;
            };
            let Ok(text) = fs::read_to_string(entry.path()) else {
                continue;
            };
            let id = packages.len() as u32;
            packages.push(package.to_string());
            for line in text.lines().filter(|l| is_indexed(l)) {
                files.entry(path_hash(line)).or_insert(id);
            }
        }
        files.shrink_to_fit();
        Some(DpkgIndex {
            mtime,
            files,
            packages,
        })
    }

    /// The owner of `path`, trying the merged-/usr twin (`/bin/x` ↔ `/usr/bin/x`) too.
    fn owner(&self, path: &str) -> Option<String> {
        let merged = ["/bin/", "/sbin/", "/lib/"];
        let twin = match path.strip_prefix("/usr") {
            Some(rest) if merged.iter().any(|p| rest.starts_with(p)) => Some(rest.to_string()),
            _ if merged.iter().any(|p| path.starts_with(p)) => Some(format!("/usr{path}")),
            _ => None,
        };
        self.files
            .get(&path_hash(path))
            .or_else(|| twin.and_then(|t| self.files.get(&path_hash(&t))))
            .and_then(|&id| self.packages.get(id as usize))
            .cloned()
    }
}

impl Packages {
    /// Lookups against the dpkg database in `info_dir` (tests use their own).
    pub fn with_dpkg_info(info_dir: PathBuf) -> Packages {
        Packages {
            owner: HashMap::new(),
            info_dir,
            index: None,
        }
    }

    /// The package owning `path`, cached per path.
    pub fn owner(&mut self, path: &Path) -> Option<String> {
        if let Some(hit) = self.owner.get(path) {
            return hit.clone();
        }
        let found = match path.to_str() {
            Some(p) if is_indexed(p) => match self.indexed() {
                Some(index) => index.owner(p),
                None => dpkg_owner(path).or_else(|| rpm_owner(path)),
            },
            _ => dpkg_owner(path).or_else(|| rpm_owner(path)),
        };
        self.owner.insert(path.to_path_buf(), found.clone());
        found
    }

    /// The index, read (again) when the database is newer than it; None without dpkg.
    fn indexed(&mut self) -> Option<&DpkgIndex> {
        let mtime = fs::metadata(&self.info_dir).ok()?.modified().ok();
        if self.index.as_ref().is_some_and(|i| i.mtime != mtime) {
            self.index = None;
            self.owner.clear();
        }
        if self.index.is_none() {
            self.index = DpkgIndex::read(&self.info_dir);
        }
        self.index.as_ref()
    }
}

fn dpkg_owner(path: &Path) -> Option<String> {
    let dpkg = find_program("dpkg-query")?;
    let out = Command::new(dpkg).arg("-S").arg(path).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| !l.starts_with("diversion by"))
        .find_map(|l| l.split_once(": ").map(|(pkg, _)| pkg.trim().to_string()))
}

fn rpm_owner(path: &Path) -> Option<String> {
    let rpm = find_program("rpm")?;
    let out = Command::new(rpm).arg("-qf").arg(path).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Whether a dpkg conffile differs from the packaged version (None when unknown).
pub fn conffile_modified(package: &str, path: &Path) -> Option<bool> {
    let dpkg = find_program("dpkg-query")?;
    let out = Command::new(dpkg)
        .args(["-W", "-f=${Conffiles}\n", package])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let want = path.to_string_lossy();
    let md5 = text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next()? == want).then(|| parts.next().map(str::to_string))?
    })?;
    let md5sum = find_program("md5sum")?;
    let out = Command::new(md5sum).arg(path).output().ok()?;
    let actual = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .to_string();
    Some(actual != md5)
}

/// Gathers a [`Context`] for events: the kernel's mode of the profile, the packages owning the
/// profile file and the binary, whether the profile was modified locally. Lookups are cached.
#[derive(Debug)]
pub struct Facts {
    modes: HashMap<String, String>,
    packages: Option<Packages>,
    modified: HashMap<String, Option<bool>>,
}

impl Facts {
    /// Read the kernel's profile list now; ask dpkg/rpm only when `packages` is true.
    pub fn new(packages: bool) -> Self {
        Facts {
            modes: kernel_modes(),
            packages: packages.then(Packages::default),
            modified: HashMap::new(),
        }
    }

    /// Re-read the kernel's profile list (after a policy load/replace).
    pub fn refresh_modes(&mut self) {
        self.modes = kernel_modes();
    }

    /// The context for one event.
    pub fn context(&mut self, index: &Index, event: &Event) -> Context {
        let mut ctx = Context::default();
        let Some(label) = event.profile() else {
            return ctx;
        };
        ctx.mode = self.modes.get(label).cloned();
        let declared = resolve::resolve(index, label)
            .profile
            .and_then(|i| index.profile(i));
        // The binary: the record's exe, else an attachment that is a plain path.
        ctx.binary = event
            .process
            .as_ref()
            .and_then(|p| p.exe.clone())
            .or_else(|| {
                declared
                    .and_then(|p| p.decl.attachment.clone())
                    .filter(|a| a.starts_with('/') && !a.contains(['*', '?', '{', '[', '@']))
            });
        let Some(packages) = self.packages.as_mut() else {
            return ctx;
        };
        if let Some(bin) = &ctx.binary {
            ctx.binary_package = packages.owner(Path::new(bin));
        }
        if let Some(p) = declared {
            let file = index.absolute(p.file());
            let path = PathBuf::from(&file);
            ctx.package = packages.owner(&path);
            if let Some(pkg) = &ctx.package {
                ctx.modified_locally = *self
                    .modified
                    .entry(file)
                    .or_insert_with(|| conffile_modified(pkg, &path));
            }
        }
        ctx
    }
}

/// Profile name → mode, from the kernel's list (empty when not readable).
pub fn kernel_modes() -> HashMap<String, String> {
    fs::read_to_string(KERNEL_PROFILES)
        .map(|t| parse_kernel_profiles(&t))
        .unwrap_or_default()
}

/// Parse lines like `msmtp (enforce)`.
pub fn parse_kernel_profiles(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_end();
            let open = l.rfind(" (")?;
            let mode = l[open + 2..].strip_suffix(')')?;
            Some((l[..open].to_string(), mode.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_index_finds_owners_and_merged_usr_twins() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("msmtp.list"),
            "/.\n/etc\n/etc/apparmor.d/usr.bin.msmtp\n/usr/bin/msmtp\n/usr/share/doc/msmtp\n",
        )
        .unwrap();
        fs::write(dir.path().join("bash.list"), "/bin/bash\n").unwrap();
        fs::write(dir.path().join("bash.md5sums"), "/bin/zsh\n").unwrap();
        let mut p = Packages::with_dpkg_info(dir.path().to_path_buf());
        assert_eq!(
            p.owner(Path::new("/usr/bin/msmtp")).as_deref(),
            Some("msmtp")
        );
        assert_eq!(
            p.owner(Path::new("/etc/apparmor.d/usr.bin.msmtp"))
                .as_deref(),
            Some("msmtp")
        );
        assert_eq!(p.owner(Path::new("/usr/bin/bash")).as_deref(), Some("bash"));
        assert_eq!(p.owner(Path::new("/bin/zsh")), None);
        assert_eq!(p.owner(Path::new("/usr/sbin/nothing")), None);
    }

    /// Against the real dpkg database of this machine: the index agrees with `dpkg-query -S`.
    #[test]
    fn package_index_agrees_with_dpkg_query() {
        if find_program("dpkg-query").is_none() || !Path::new(DPKG_INFO).is_dir() {
            assert!(
                std::env::var_os("AW_REQUIRE_ALL").is_none(),
                "no dpkg here and AW_REQUIRE_ALL is set"
            );
            eprintln!("SKIPPED: no dpkg here");
            return;
        }
        let mut p = Packages::default();
        for path in [
            "/usr/bin/dpkg",
            "/usr/bin/msmtp",
            "/usr/sbin/apparmor_parser",
            "/etc/apparmor.d/usr.bin.msmtp",
            "/usr/lib/systemd/systemd",
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/bin/no-such-binary",
            "/sbin/no-such-binary",
        ] {
            // dpkg does not know merged /usr: Debian 12 ships /sbin/apparmor_parser, and
            // `dpkg -S /usr/sbin/apparmor_parser` finds nothing; the index tries the twin.
            let twin = match path.strip_prefix("/usr") {
                Some(rest) => rest.to_string(),
                None => format!("/usr{path}"),
            };
            let expected = dpkg_owner(Path::new(path)).or_else(|| dpkg_owner(Path::new(&twin)));
            assert_eq!(p.owner(Path::new(path)), expected, "{path}");
        }
    }

    #[test]
    fn kernel_profile_list() {
        let m = parse_kernel_profiles(
            "msmtp (enforce)\nmsmtp//helpers (enforce)\n/usr/bin/x (complain)\n",
        );
        assert_eq!(m["msmtp"], "enforce");
        assert_eq!(m["/usr/bin/x"], "complain");
    }
}

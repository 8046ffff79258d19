//! The one place `profiles` reads from disk: a profile tree (default /etc/apparmor.d) into a
//! [`ProfileTree`] in memory. Everything else in the module works on that copy.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::index::{ProfileTree, is_ignored_name};

/// Files larger than this are skipped (no real profile comes close).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Directories below the root that hold no policy text to index.
const SKIP_DIRS: &[&str] = &["abi", "cache", "disable", "force-complain"];

/// Why a tree could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The root itself cannot be read.
    #[error("cannot read profile directory {path}: {source}")]
    Root {
        /// The root.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What was skipped while loading, for the caller to report.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Files that could not be read, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
}

/// `path` made absolute (against the current directory) without resolving symlinks.
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    std::env::current_dir().map_or_else(|_| path.to_path_buf(), |d| d.join(path))
}

/// Read every policy file under `root` (recursively; symlinked files followed, symlinked
/// directories not; editor/package leftovers skipped). Names in `disable/` are recorded.
pub fn load_tree(root: &Path) -> Result<(ProfileTree, LoadReport), LoadError> {
    let mut files = BTreeMap::new();
    let mut dirs = BTreeSet::new();
    let mut report = LoadReport::default();
    fs::read_dir(root).map_err(|source| LoadError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            report
                .unreadable
                .push((dir.clone(), "cannot list directory".into()));
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let rel_path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if name.starts_with('.') || (depth == 0 && SKIP_DIRS.contains(&name.as_str())) {
                    continue;
                }
                if depth < 16 {
                    dirs.insert(rel_path.clone());
                    stack.push((path, rel_path, depth + 1));
                }
                continue;
            }
            if is_ignored_name(&name) {
                continue;
            }
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            if meta.len() > MAX_FILE_BYTES {
                report
                    .unreadable
                    .push((path, format!("larger than {MAX_FILE_BYTES} bytes")));
                continue;
            }
            match fs::read(&path) {
                Ok(bytes) => {
                    let text = String::from_utf8(bytes)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    files.insert(rel_path, Arc::from(text));
                }
                Err(e) => report.unreadable.push((path, e.to_string())),
            }
        }
    }
    let mut disabled = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(root.join("disable")) {
        for e in entries.flatten() {
            disabled.insert(e.file_name().to_string_lossy().into_owned());
        }
    }
    Ok((
        ProfileTree {
            base: absolute(root)
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string(),
            files,
            disabled,
            dirs,
        },
        report,
    ))
}

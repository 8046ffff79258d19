//! Versioned source positions, written atomically (temp file, fsync, rename, fsync of the
//! directory) so that a crash leaves either the old or the new state, never a torn one.
//!
//! Positions advance only after the records before them were accepted by the output
//! (at-least-once): after a crash, what was delivered since the last save is delivered again.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The version of the state file.
pub const STATE_VERSION: u32 = 1;

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "checkpoints.json";

/// Where a source stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Position {
    /// A journal cursor: the last entry handed over.
    Journald {
        /// sd-journal cursor.
        cursor: String,
    },
    /// A journal that held no kernel or audit entry when the source first started following
    /// it: every such entry it holds later is still to be read, from its head. Without it, a
    /// start on an empty journal (a new collector's directory) saved nothing, and every restart
    /// was a first start at the end: what came while armorwatch was stopped was never read.
    JournaldHead,
    /// A byte offset in a file identified by device and inode (a rotated file keeps both).
    File {
        /// The configured path (shared: every line read carries its position).
        path: std::sync::Arc<Path>,
        /// `st_dev`.
        dev: u64,
        /// `st_ino`.
        ino: u64,
        /// Bytes consumed (always at a line boundary).
        offset: u64,
        /// Lines consumed, for the line numbers in events.
        line: u64,
        /// The line that ends at `offset`, checked on resume: a file truncated and written
        /// again, or deleted and created anew under the same inode, is then not resumed in the
        /// middle of other lines. Absent in checkpoints of earlier versions and when nothing was
        /// read (the identity alone is trusted then).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_line: Option<LinePrint>,
    },
    /// Audit netlink: the highest audit serial received, valid for one boot. Not a place to
    /// resume (the kernel keeps no history), but it tells the next start which records it did
    /// not receive: those made while armorwatch was stopped.
    Netlink {
        /// `/proc/sys/kernel/random/boot_id`.
        boot_id: String,
        /// The highest audit serial received.
        serial: u64,
        /// Ranges of serials below it (`from`, `to`, inclusive) not received yet and still
        /// waiting to be reported as lost (records may come out of order): a start after a
        /// kill reports them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        waiting: Vec<(u64, u64)>,
    },
    /// /dev/kmsg: the next sequence number expected, valid for one boot.
    Kmsg {
        /// `/proc/sys/kernel/random/boot_id`.
        boot_id: String,
        /// The last sequence number handed over.
        seq: u64,
    },
}

/// A line's fingerprint: its length in the file (with its newline, if it has one) and a hash of
/// its first [`LinePrint::HEAD`] bytes (where an audit or syslog line holds its time stamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinePrint {
    /// Bytes of the file the line takes.
    pub len: u64,
    /// [`LinePrint::hash`] of its first bytes.
    pub hash: u64,
}

impl LinePrint {
    /// Bytes of the line's start that are hashed.
    pub const HEAD: usize = 256;

    /// The print of a line taking `len` bytes of the file, whose text (without newline) starts
    /// with `text` (at least [`LinePrint::HEAD`] bytes of it, or all of it).
    pub fn of(text: &[u8], len: u64) -> LinePrint {
        LinePrint {
            len,
            hash: Self::hash(&text[..text.len().min(Self::HEAD)]),
        }
    }

    /// FNV-1a over 8-byte words, then the remaining bytes: stable across versions and machines
    /// (it is saved), and a few nanoseconds a line.
    pub fn hash(bytes: &[u8]) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            h = (h ^ u64::from_le_bytes(word)).wrapping_mul(PRIME);
        }
        for &b in words.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
        h ^ (bytes.len() as u64)
    }

    /// Whether the line ending at `offset` of `file` is the one this print was taken of.
    pub fn matches(&self, file: &File, offset: u64) -> bool {
        use std::os::unix::fs::FileExt;
        if self.len == 0 || self.len > offset {
            return false;
        }
        let start = offset - self.len;
        let mut last = [0u8; 1];
        if file.read_exact_at(&mut last, offset - 1).is_err() {
            return false;
        }
        // The line starts a line: the byte before it ends the previous one.
        if start > 0 {
            let mut before = [0u8; 1];
            if file.read_exact_at(&mut before, start - 1).is_err() || before[0] != b'\n' {
                return false;
            }
        }
        let text_len = self.len - u64::from(last[0] == b'\n');
        let mut head = vec![0u8; text_len.min(Self::HEAD as u64) as usize];
        file.read_exact_at(&mut head, start).is_ok() && Self::hash(&head) == self.hash
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    sources: BTreeMap<String, Position>,
    /// Duplicate-detection keys of the events delivered last, so that a record delivered through
    /// one channel before a restart is not delivered again when a slower channel (journald)
    /// brings it after the restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    recent: Vec<u64>,
    /// Counts the saves. Outputs that keep state of their own (the correlator's open incidents)
    /// tag it with the generation it belongs to, so that after a crash between the two writes
    /// the state matching these positions is the one restored.
    #[serde(default)]
    generation: u64,
}

/// Errors reading or writing the state.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// I/O on the state directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Another process holds the state directory.
    #[error(
        "{dir}: the state directory is in use by another armorwatch (pid {holder}); stop it first, or give this one another `state.dir`"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The holder's pid as it wrote it.
        holder: String,
        /// The error of flock(2).
        source: io::Error,
    },
    /// The state file is from a newer armorwatch.
    #[error(
        "{path}: state version {found} is newer than this armorwatch understands ({STATE_VERSION})"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
}

/// The positions of all sources, backed by `DIR/checkpoints.json`.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    state: StateFile,
    dirty: bool,
}

impl Checkpoints {
    /// Open (creating the directory if needed). A leftover temp file from a crash during a save
    /// is used when it is complete and valid (it is newer), and removed otherwise. A corrupt state
    /// file is set aside as `checkpoints.json.corrupt` and the sources start fresh.
    pub fn open(dir: &Path) -> Result<Checkpoints, CheckpointError> {
        fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(STATE_FILE);
        let tmp = temp_path(&path);
        if let Ok(bytes) = fs::read(&tmp) {
            match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(s) if s.version <= STATE_VERSION => {
                    fs::rename(&tmp, &path).map_err(|source| CheckpointError::Io {
                        path: tmp.clone(),
                        source,
                    })?;
                }
                _ => {
                    let _ = fs::remove_file(&tmp);
                }
            }
        }
        let state = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<StateFile>(&bytes) {
                Ok(s) if s.version > STATE_VERSION => {
                    return Err(CheckpointError::Version {
                        path,
                        found: s.version,
                    });
                }
                Ok(s) => s,
                Err(e) => {
                    crate::log_warn!(
                        "{}: unreadable checkpoint ({e}); starting fresh",
                        path.display()
                    );
                    let _ = fs::rename(&path, path.with_extension("json.corrupt"));
                    StateFile::default()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => StateFile::default(),
            Err(source) => return Err(CheckpointError::Io { path, source }),
        };
        Ok(Checkpoints {
            path,
            state: StateFile {
                version: STATE_VERSION,
                sources: state.sources,
                recent: state.recent,
                generation: state.generation,
            },
            dirty: false,
        })
    }

    /// The saved position of a source.
    pub fn get(&self, source: &str) -> Option<&Position> {
        self.state.sources.get(source)
    }

    /// Record a new position (saved by [`Checkpoints::save`]).
    pub fn set(&mut self, source: &str, position: Position) {
        if self.state.sources.get(source) != Some(&position) {
            self.state.sources.insert(source.to_string(), position);
            self.dirty = true;
        }
    }

    /// The duplicate-detection keys saved last time.
    pub fn recent(&self) -> &[u64] {
        &self.state.recent
    }

    /// Remember the duplicate-detection keys of the events delivered last (saved with the
    /// positions).
    pub fn set_recent(&mut self, keys: Vec<u64>) {
        if self.state.recent != keys {
            self.state.recent = keys;
            self.dirty = true;
        }
    }

    /// The generation of the state on disk (0 before the first save).
    pub fn generation(&self) -> u64 {
        self.state.generation
    }

    /// The generation the next [`Checkpoints::save`] writes.
    pub fn next_generation(&self) -> u64 {
        self.state.generation + 1
    }

    /// True when positions changed since the last save.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Write the state atomically if it changed.
    pub fn save(&mut self) -> Result<(), CheckpointError> {
        if !self.dirty {
            return Ok(());
        }
        self.state.generation += 1;
        // An empty file would read back as corrupt (a fresh start): not written then.
        let written = serde_json::to_vec_pretty(&self.state)
            .map_err(io::Error::other)
            .and_then(|bytes| write_atomic(&self.path, &bytes));
        if let Err(source) = written {
            // Not written: the generation on disk is still the old one.
            self.state.generation -= 1;
            return Err(CheckpointError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.dirty = false;
        Ok(())
    }
}

/// The name of the lock file inside the state directory.
pub const LOCK_FILE: &str = "lock";

/// The state directory held by this process (an exclusive `flock(2)` on `DIR/lock`, released
/// when dropped or when the process ends, however it ends). Two armorwatch processes on one
/// state directory — a `replay` next to the daemon, a second `run` — would each save positions,
/// incidents and outbox journals the other overwrites.
#[derive(Debug)]
pub struct StateLock {
    dir: PathBuf,
    _file: File,
}

impl StateLock {
    /// Take the lock, creating the directory if needed; fails at once if another process
    /// holds it, naming that process.
    pub fn acquire(dir: &Path) -> Result<StateLock, CheckpointError> {
        use rustix::fs::{FlockOperation, flock};
        let io_err = |source| CheckpointError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let path = dir.join(LOCK_FILE);
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path);
        // A lock file left by a run as another user (`sudo armorwatch replay` once, root-owned
        // 0644): flock(2) needs no write access, so the lock still works; only the pid is not
        // recorded. Replacing the file instead would let two processes lock two files.
        let (mut file, writable) = match opened {
            Ok(f) => (f, true),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => match File::open(&path) {
                Ok(f) => (f, false),
                Err(_) => return Err(CheckpointError::Io { path, source: e }),
            },
            Err(source) => return Err(CheckpointError::Io { path, source }),
        };
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            // The kernel knows the holder; the pid in the file is stale when the holder could
            // not write it (it took the lock read-only).
            let holder = file
                .metadata()
                .ok()
                .and_then(|m| {
                    let locks = fs::read_to_string("/proc/locks").ok()?;
                    flock_holder(&locks, m.dev(), m.ino())
                })
                .map(|pid| pid.to_string())
                .unwrap_or_else(|| {
                    let written = fs::read_to_string(&path).unwrap_or_default();
                    written.trim().to_string()
                });
            return Err(CheckpointError::Locked {
                dir: dir.to_path_buf(),
                holder,
                source: e.into(),
            });
        }
        // Who holds it, for the message another process gives.
        if writable {
            let _ = file.set_len(0);
            let _ = writeln!(file, "{}", std::process::id());
        }
        Ok(StateLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// The directory held.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The pid holding a `flock(2)` on the file of device `dev` and inode `ino`, from the text of
/// `/proc/locks` (`1: FLOCK  ADVISORY  WRITE 3468 fd:01:1234 0 EOF`; the device's major and
/// minor in hex; waiters' lines, with `->`, are skipped).
fn flock_holder(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let file = format!(
        "{:02x}:{:02x}:{ino}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    );
    locks.lines().find_map(|line| {
        let mut words = line.split_whitespace().skip(1);
        if words.next()? != "FLOCK" {
            return None;
        }
        let mut words = words.skip(2);
        // 0: a holder outside this pid namespace.
        let pid = words.next()?.parse().ok().filter(|&pid| pid != 0)?;
        (words.next()? == file).then_some(pid)
    })
}

/// The generation of the checkpoints saved in `dir` as [`Checkpoints::open`] will find them (a
/// complete leftover temp file counts, it is newer); 0 when there are none.
pub fn saved_generation(dir: &Path) -> u64 {
    let path = dir.join(STATE_FILE);
    let read = |p: &Path| {
        fs::read(p)
            .ok()
            .and_then(|b| serde_json::from_slice::<StateFile>(&b).ok())
            .filter(|s| s.version <= STATE_VERSION)
    };
    read(&temp_path(&path))
        .or_else(|| read(&path))
        .map_or(0, |s| s.generation)
}

fn temp_path(path: &Path) -> PathBuf {
    with_suffix(path, ".tmp")
}

/// `path` with `suffix` appended to its file name (`state.json` → `state.json.tmp`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Replace `path` with `bytes` atomically: write `PATH.tmp`, fsync it, rename it over `path`,
/// fsync the directory. Readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(n: u64) -> Position {
        Position::Kmsg {
            boot_id: "b".into(),
            seq: n,
        }
    }

    #[test]
    fn a_state_directory_is_held_by_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateLock::acquire(&state).unwrap();
        let err = StateLock::acquire(&state).unwrap_err().to_string();
        assert!(
            err.contains("in use by another armorwatch")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        StateLock::acquire(&state).unwrap();
    }

    /// A holder that took the lock read-only (a lock file left by root) could not write its
    /// pid: the message names the process that holds the lock, not the pid left in the file.
    #[test]
    fn the_holder_is_named_even_when_the_lock_file_has_a_stale_pid() {
        use rustix::fs::{FlockOperation, flock};
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK_FILE);
        fs::write(&lock, "999999999\n").unwrap();
        let held = File::open(&lock).unwrap();
        flock(&held, FlockOperation::NonBlockingLockExclusive).unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("(pid {})", std::process::id())),
            "{err}"
        );
    }

    #[test]
    fn flock_holders_are_found_by_device_and_inode() {
        let locks = "1: POSIX  ADVISORY  WRITE 10 fd:01:77 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 11 fd:01:78 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 12 fd:01:77 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 13 fd:01:77 0 EOF\n\
                     4: FLOCK  ADVISORY  WRITE 0 fd:01:80 0 EOF\n";
        let dev = rustix::fs::makedev(0xfd, 1);
        assert_eq!(flock_holder(locks, dev, 77), Some(13));
        assert_eq!(flock_holder(locks, dev, 78), Some(11));
        assert_eq!(flock_holder(locks, dev, 79), None);
        assert_eq!(flock_holder(locks, dev, 80), None);
        assert_eq!(flock_holder(locks, rustix::fs::makedev(0xfd, 2), 78), None);
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::open(dir.path()).unwrap();
        assert!(c.get("kernel_log").is_none());
        c.set("kernel_log", pos(7));
        c.save().unwrap();
        let c = Checkpoints::open(dir.path()).unwrap();
        assert_eq!(c.get("kernel_log"), Some(&pos(7)));
        assert_eq!(c.generation(), 1);
        assert_eq!(saved_generation(dir.path()), 1);
        let text = fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
    }

    #[test]
    fn complete_leftover_temp_is_used_and_torn_one_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::open(dir.path()).unwrap();
        c.set("a", pos(1));
        c.save().unwrap();
        let tmp = dir.path().join("checkpoints.json.tmp");
        fs::write(
            &tmp,
            r#"{"version":1,"sources":{"a":{"kind":"kmsg","boot_id":"b","seq":2}}}"#,
        )
        .unwrap();
        let c = Checkpoints::open(dir.path()).unwrap();
        assert_eq!(c.get("a"), Some(&pos(2)));
        assert!(!tmp.exists());
        fs::write(&tmp, r#"{"version":1,"sources":{"a":{"kind":"km"#).unwrap();
        let c = Checkpoints::open(dir.path()).unwrap();
        assert_eq!(c.get("a"), Some(&pos(2)));
        assert!(!tmp.exists());
    }

    #[test]
    fn newer_version_is_refused_and_corrupt_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        fs::write(&path, r#"{"version":99,"sources":{}}"#).unwrap();
        assert!(matches!(
            Checkpoints::open(dir.path()),
            Err(CheckpointError::Version { found: 99, .. })
        ));
        fs::write(&path, "garbage").unwrap();
        let c = Checkpoints::open(dir.path()).unwrap();
        assert!(c.get("a").is_none());
        assert!(dir.path().join("checkpoints.json.corrupt").exists());
    }
}

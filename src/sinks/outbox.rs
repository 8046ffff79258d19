//! The outbox: a per-sink spool directory holding every alert not yet accepted by its receiver.
//!
//! Each alert is one file `<seq>.json` (16 digits, so names sort in arrival order) written to a
//! temporary name, fsynced and renamed, then the directory fsynced: after `push` returns, the alert
//! survives a crash. The file holds one metadata line and the alert JSON exactly as serialized, so
//! a receiver gets the same bytes after a restart. Files are removed only when the receiver
//! accepted the alert, or when it expired (counted by the caller).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::view::AlertView;

/// Outbox failures.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The spool directory could not be created, read or written.
    #[error("outbox {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The outbox holds its maximum number of alerts.
    #[error("outbox {0} is full")]
    Full(PathBuf),
    /// The alert JSON could not be read.
    #[error("alert JSON: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    v: u32,
    seq: u64,
    created_ms: u64,
    key: String,
    incident: String,
}

/// One spooled alert.
#[derive(Debug)]
pub struct Entry {
    /// Arrival order within this outbox.
    pub seq: u64,
    /// When it was spooled (ms since the Unix epoch).
    pub created_ms: u64,
    /// `id:seq` of the alert (the idempotency key).
    pub key: String,
    /// The incident id (order is kept per incident).
    pub incident: String,
    /// The alert JSON as serialized by the producer.
    pub json: Arc<str>,
    /// The parsed view.
    pub view: Arc<AlertView>,
}

/// A spool directory.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    next_seq: u64,
    entries: BTreeMap<u64, Arc<Entry>>,
    fsync: bool,
    max_entries: usize,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Outbox {
    /// Open (creating it, mode 0700) the spool at `dir` and load what is in it. Returns the outbox
    /// and the number of unreadable files that were moved aside (`*.corrupt`).
    pub fn open(dir: &Path, fsync: bool, max_entries: usize) -> Result<(Outbox, u64), OutboxError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        }
        let mut entries = BTreeMap::new();
        let mut corrupt = 0;
        let mut next_seq = 1;
        for item in fs::read_dir(dir).map_err(io_err(dir))? {
            let item = item.map_err(io_err(dir))?;
            let path = item.path();
            let name = item.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                // A crash between write and rename: the alert was never acknowledged as spooled.
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(seq) = stem.parse::<u64>() else {
                continue;
            };
            match read_entry(&path) {
                Some(e) if e.seq == seq => {
                    next_seq = next_seq.max(seq + 1);
                    entries.insert(seq, Arc::new(e));
                }
                _ => {
                    corrupt += 1;
                    let _ = fs::rename(&path, path.with_extension("corrupt"));
                }
            }
        }
        Ok((
            Outbox {
                dir: dir.to_path_buf(),
                next_seq,
                entries,
                fsync,
                max_entries,
            },
            corrupt,
        ))
    }

    /// Spool an alert (its JSON as serialized); durable when this returns.
    pub fn push(&mut self, json: &str, now_ms: u64) -> Result<Arc<Entry>, OutboxError> {
        if self.entries.len() >= self.max_entries {
            return Err(OutboxError::Full(self.dir.clone()));
        }
        let value: serde_json::Value = serde_json::from_str(json)?;
        let view = AlertView::from_json(&value)?;
        let seq = self.next_seq;
        let meta = Meta {
            v: 1,
            seq,
            created_ms: now_ms,
            key: view.idempotency_key(),
            incident: view.id.clone(),
        };
        let mut bytes = serde_json::to_vec(&meta)?;
        bytes.push(b'\n');
        bytes.extend_from_slice(json.trim_end().as_bytes());
        bytes.push(b'\n');
        let tmp = self.dir.join(format!(".tmp-{seq:016}"));
        let path = self.dir.join(format!("{seq:016}.json"));
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            f.write_all(&bytes).map_err(io_err(&tmp))?;
            if self.fsync {
                f.sync_data().map_err(io_err(&tmp))?;
            }
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        if self.fsync {
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.dir))?;
        }
        self.next_seq += 1;
        let entry = Arc::new(Entry {
            seq,
            created_ms: now_ms,
            key: meta.key,
            incident: meta.incident,
            json: Arc::from(json.trim_end()),
            view: Arc::new(view),
        });
        self.entries.insert(seq, entry.clone());
        Ok(entry)
    }

    /// Remove an entry (accepted or expired).
    pub fn remove(&mut self, seq: u64) -> Result<(), OutboxError> {
        if self.entries.remove(&seq).is_some() {
            let path = self.dir.join(format!("{seq:016}.json"));
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(())
    }

    /// The entries in arrival order.
    pub fn snapshot(&self) -> Vec<Arc<Entry>> {
        self.entries.values().cloned().collect()
    }

    /// How many alerts wait.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn read_entry(path: &Path) -> Option<Entry> {
    let text = fs::read_to_string(path).ok()?;
    let (meta_line, json) = text.split_once('\n')?;
    let meta: Meta = serde_json::from_str(meta_line).ok()?;
    let json = json.trim_end();
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let view = AlertView::from_json(&value).ok()?;
    Some(Entry {
        seq: meta.seq,
        created_ms: meta.created_ms,
        key: meta.key,
        incident: meta.incident,
        json: Arc::from(json),
        view: Arc::new(view),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_reload_remove() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("ob");
        let (mut ob, c) = Outbox::open(&d, true, 10).unwrap();
        assert_eq!(c, 0);
        let a = r#"{"schema":1,"type":"incident.opened","id":"i1","seq":1,"host":"h","zeta":1,"alpha":2}"#;
        let e = ob.push(a, 5).unwrap();
        assert_eq!(e.key, "i1:1");
        ob.push(&a.replace("\"seq\":1", "\"seq\":2"), 6).unwrap();
        fs::write(d.join("0000000000000099.json"), "garbage").unwrap();
        fs::write(d.join(".tmp-0000000000000100"), "partial").unwrap();
        drop(ob);
        let (mut ob, c) = Outbox::open(&d, true, 10).unwrap();
        assert_eq!(c, 1);
        let s = ob.snapshot();
        assert_eq!(s.len(), 2);
        // Byte-exact JSON (field order kept).
        assert_eq!(&*s[0].json, a);
        assert_eq!(s[1].key, "i1:2");
        ob.remove(s[0].seq).unwrap();
        let e3 = ob.push(a, 7).unwrap();
        assert_eq!(e3.seq, 3);
        drop(ob);
        let (ob, _) = Outbox::open(&d, false, 2).unwrap();
        assert_eq!(ob.len(), 2);
        let mut ob = ob;
        assert!(matches!(ob.push(a, 8), Err(OutboxError::Full(_))));
    }
}

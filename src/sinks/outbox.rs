//! The outbox: a per-sink spool holding every alert not yet accepted by its receiver.
//!
//! The spool is an append-only journal `<dir>/journal`: `+ META\tALERT` adds an alert (the alert
//! JSON exactly as serialized, so a receiver gets the same bytes after a restart), `- SEQ` removes
//! one. Adding appends and `fdatasync`s: after `push` returns, the alert survives a crash, at the
//! cost of one sync (the journal already exists, so no directory sync). Removals are appended
//! without a sync: a removal lost in a crash only means the alert is sent again, under the same
//! idempotency key. When nothing is pending the journal is truncated; when it grows large it is
//! rewritten (temporary file, fsync, rename, directory fsync). An append that fails part-way
//! (disk full) is cut off again, so the next one does not continue its line. A torn last line
//! (crash during an append) is cut off at the next open; unreadable lines are counted and appended, byte for byte,
//! to `<dir>/journal.corrupt` before the journal is rewritten without them.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::view::AlertView;

/// Rewrite the journal when it is larger than this and mostly removed entries.
const COMPACT_BYTES: u64 = 8 << 20;

/// Outbox failures.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The spool could not be created, read or written.
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

/// A spool.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    journal: File,
    journal_bytes: u64,
    next_seq: u64,
    entries: BTreeMap<u64, Arc<Entry>>,
    /// Pending entries by idempotency key: an alert produced again after a crash (same
    /// `id:seq`) is not spooled twice, so it is not sent twice (an email cannot be taken back).
    keys: HashMap<String, u64>,
    fsync: bool,
    max_entries: usize,
    /// An append failed and its partial line could not be cut off: rewrite the journal before
    /// the next append, which would otherwise continue that line (both lost at the next open).
    torn_tail: bool,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn add_line(e: &Entry) -> Result<Vec<u8>, OutboxError> {
    let meta = Meta {
        v: 1,
        seq: e.seq,
        created_ms: e.created_ms,
        key: e.key.clone(),
        incident: e.incident.clone(),
    };
    let mut line = b"+ ".to_vec();
    serde_json::to_writer(&mut line, &meta)?;
    line.push(b'\t');
    line.extend_from_slice(e.json.as_bytes());
    line.push(b'\n');
    Ok(line)
}

fn parse_add(rest: &str) -> Option<Entry> {
    let (meta, json) = rest.split_once('\t')?;
    let meta: Meta = serde_json::from_str(meta).ok()?;
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

/// Append unreadable journal lines to `<dir>/journal.corrupt` (created 0600) and sync it, so
/// that what the loss alert announces can be looked at.
fn keep_corrupt(dir: &Path, lines: &[u8]) -> Result<(), OutboxError> {
    let path = dir.join("journal.corrupt");
    let created = !path.exists();
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    f.write_all(lines).map_err(io_err(&path))?;
    f.sync_data().map_err(io_err(&path))?;
    if created {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

impl Outbox {
    /// Open (creating it, mode 0700) the spool in `dir` and load what is pending. Returns the
    /// outbox and the number of unreadable journal lines, which are kept in
    /// [`Outbox::corrupt_path`] (a torn last line is neither counted nor kept).
    pub fn open(dir: &Path, fsync: bool, max_entries: usize) -> Result<(Outbox, u64), OutboxError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        }
        let path = dir.join("journal");
        let existed = path.exists();
        let mut entries = BTreeMap::new();
        let mut corrupt = 0;
        let mut bad_lines = Vec::new();
        let mut next_seq = 1;
        let mut torn = false;
        // The bytes up to the end of the last complete line.
        let mut whole = 0;
        if existed {
            let f = File::open(&path).map_err(io_err(&path))?;
            let mut reader = BufReader::new(f);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let n = reader.read_until(b'\n', &mut buf).map_err(io_err(&path))?;
                if n == 0 {
                    break;
                }
                if buf.last() != Some(&b'\n') {
                    // Torn append (crash): never acknowledged to the caller.
                    torn = true;
                    break;
                }
                whole += n as u64;
                let line = String::from_utf8_lossy(&buf[..buf.len() - 1]);
                let readable = if let Some(rest) = line.strip_prefix("+ ") {
                    parse_add(rest).map(|e| {
                        next_seq = next_seq.max(e.seq + 1);
                        entries.insert(e.seq, Arc::new(e));
                    })
                } else if let Some(seq) = line.strip_prefix("- ") {
                    seq.trim().parse::<u64>().ok().map(|seq| {
                        next_seq = next_seq.max(seq + 1);
                        entries.remove(&seq);
                    })
                } else {
                    line.trim().is_empty().then_some(())
                };
                if readable.is_none() {
                    corrupt += 1;
                    bad_lines.extend_from_slice(&buf);
                }
            }
        }
        if !bad_lines.is_empty() {
            // Kept before the rewrite below drops them from the journal.
            keep_corrupt(dir, &bad_lines)?;
        }
        let journal = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        let journal_bytes = journal.metadata().map_err(io_err(&path))?.len();
        let keys = entries.values().map(|e| (e.key.clone(), e.seq)).collect();
        let mut ob = Outbox {
            dir: dir.to_path_buf(),
            journal,
            journal_bytes,
            next_seq,
            entries,
            keys,
            fsync,
            max_entries,
            torn_tail: false,
        };
        if !existed && fsync {
            sync_dir(dir)?;
        }
        if corrupt > 0 {
            ob.rewrite()?;
        } else if torn || ob.entries.is_empty() && ob.journal_bytes > 0 {
            // Cut in place, which needs no space: the disk may be full (perhaps why the line
            // was torn), and a rewrite would need another file as large as the journal.
            let keep = if ob.entries.is_empty() { 0 } else { whole };
            ob.journal.set_len(keep).map_err(io_err(&path))?;
            ob.journal_bytes = keep;
        }
        Ok((ob, corrupt))
    }

    /// Write the pending entries to a fresh journal (tmp, fsync, rename, directory fsync).
    fn rewrite(&mut self) -> Result<(), OutboxError> {
        let path = self.dir.join("journal");
        let tmp = self.dir.join("journal.tmp");
        let mut bytes = Vec::new();
        for e in self.entries.values() {
            bytes.extend(add_line(e)?);
        }
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            f.write_all(&bytes).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.dir)?;
        self.journal = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        self.journal_bytes = bytes.len() as u64;
        self.torn_tail = false;
        Ok(())
    }

    /// Append `line` (and sync it with `sync`). On failure the journal is cut back to where it
    /// was: a write that failed part-way (ENOSPC, EIO) leaves a partial line, which the next
    /// append would continue; the merged line would not parse at the next open, losing an
    /// alert whose push had succeeded.
    fn append(&mut self, line: &[u8], sync: bool) -> Result<(), OutboxError> {
        let path = self.dir.join("journal");
        if self.torn_tail {
            self.rewrite()?;
        }
        let mut result = self.journal.write_all(line);
        if sync && result.is_ok() {
            result = self.journal.sync_data();
        }
        if let Err(e) = result {
            if self.journal.set_len(self.journal_bytes).is_err() {
                self.torn_tail = true;
            }
            return Err(io_err(&path)(e));
        }
        self.journal_bytes += line.len() as u64;
        Ok(())
    }

    /// Spool an alert (its JSON as serialized); durable when this returns.
    pub fn push(&mut self, json: &str, now_ms: u64) -> Result<Arc<Entry>, OutboxError> {
        let value: serde_json::Value = serde_json::from_str(json)?;
        let view = Arc::new(AlertView::from_json(&value)?);
        self.push_view(json, view, now_ms)
    }

    /// [`Outbox::push`] with the view already parsed from `json`.
    pub fn push_view(
        &mut self,
        json: &str,
        view: Arc<AlertView>,
        now_ms: u64,
    ) -> Result<Arc<Entry>, OutboxError> {
        let key = view.idempotency_key();
        if let Some(e) = self.keys.get(&key).and_then(|seq| self.entries.get(seq)) {
            return Ok(e.clone());
        }
        if self.entries.len() >= self.max_entries {
            return Err(OutboxError::Full(self.dir.clone()));
        }
        // Compact JSON has no raw newline or tab (serde_json escapes them in strings); re-encode
        // anything else so one alert stays one journal line.
        let json = json.trim();
        let json: String = if json.contains(['\n', '\t', '\r']) {
            let value: serde_json::Value = serde_json::from_str(json)?;
            serde_json::to_string(&value)?
        } else {
            json.to_string()
        };
        let entry = Arc::new(Entry {
            seq: self.next_seq,
            created_ms: now_ms,
            key,
            incident: view.id.clone(),
            json: Arc::from(json),
            view,
        });
        let line = add_line(&entry)?;
        self.append(&line, self.fsync)?;
        self.next_seq += 1;
        self.entries.insert(entry.seq, entry.clone());
        self.keys.insert(entry.key.clone(), entry.seq);
        Ok(entry)
    }

    /// Remove an entry (accepted or expired).
    pub fn remove(&mut self, seq: u64) -> Result<(), OutboxError> {
        let Some(removed) = self.entries.remove(&seq) else {
            return Ok(());
        };
        if self.keys.get(&removed.key) == Some(&seq) {
            self.keys.remove(&removed.key);
        }
        let path = self.dir.join("journal");
        if self.entries.is_empty() {
            // Nothing pending: start the journal afresh (a crash before this only means
            // re-sending, under the same idempotency keys).
            self.journal.set_len(0).map_err(io_err(&path))?;
            self.journal_bytes = 0;
            self.torn_tail = false;
            return Ok(());
        }
        self.append(format!("- {seq}\n").as_bytes(), false)?;
        if self.journal_bytes > COMPACT_BYTES {
            let live: u64 = self
                .entries
                .values()
                .map(|e| e.json.len() as u64 + 100)
                .sum();
            if live * 2 < self.journal_bytes {
                self.rewrite()?;
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

    /// Where unreadable journal lines are kept (`<dir>/journal.corrupt`), byte for byte.
    pub fn corrupt_path(&self) -> PathBuf {
        self.dir.join("journal.corrupt")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_pending_under_its_key_is_spooled_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("ob");
        let (mut ob, _) = Outbox::open(&d, false, 10).unwrap();
        let a = r#"{"schema":1,"type":"incident.opened","id":"i1","seq":1,"host":"h"}"#;
        let first = ob.push(a, 5).unwrap();
        // Produced again after a crash, before it was delivered: the pending entry stands.
        assert_eq!(ob.push(a, 6).unwrap().seq, first.seq);
        assert_eq!(ob.len(), 1);
        drop(ob);
        let (mut ob, _) = Outbox::open(&d, false, 10).unwrap();
        assert_eq!(
            ob.push(a, 7).unwrap().seq,
            first.seq,
            "also after a restart"
        );
        // Once delivered (removed), the same key is spooled again: at least once.
        ob.remove(first.seq).unwrap();
        assert_ne!(ob.push(a, 8).unwrap().seq, first.seq);
        assert_eq!(ob.len(), 1);
    }

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
        ob.push(&a.replace("\"seq\":1", "\"seq\":3"), 7).unwrap();
        ob.remove(2).unwrap();
        drop(ob);
        // A garbage line and a torn append (crash mid-write).
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join("journal"))
            .unwrap();
        f.write_all(b"garbage\n+ {\"v\":1,\"seq\":9").unwrap();
        drop(f);
        let (mut ob, c) = Outbox::open(&d, true, 10).unwrap();
        assert_eq!(c, 1);
        let s = ob.snapshot();
        assert_eq!(s.len(), 2);
        // Byte-exact JSON (field order kept).
        assert_eq!(&*s[0].json, a);
        assert_eq!(s[1].key, "i1:3");
        ob.remove(s[0].seq).unwrap();
        let e4 = ob.push(a, 8).unwrap();
        assert_eq!(e4.seq, 4);
        drop(ob);
        let (ob, c) = Outbox::open(&d, false, 2).unwrap();
        assert_eq!(c, 0, "the journal was rewritten clean");
        assert_eq!(ob.len(), 2);
        let mut ob = ob;
        let another = a.replace("\"seq\":1", "\"seq\":7");
        assert!(matches!(ob.push(&another, 9), Err(OutboxError::Full(_))));
        // Empty outbox: the journal is truncated.
        ob.remove(3).unwrap();
        ob.remove(4).unwrap();
        assert_eq!(fs::metadata(d.join("journal")).unwrap().len(), 0);
        let e = ob.push(a, 10).unwrap();
        assert_eq!(e.seq, 5, "sequence numbers keep growing");
    }

    #[test]
    fn multi_line_json_stays_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, _) = Outbox::open(dir.path(), false, 10).unwrap();
        ob.push("{\n \"id\": \"x\",\t\"seq\": 1\n}", 1).unwrap();
        drop(ob);
        let (ob, c) = Outbox::open(dir.path(), false, 10).unwrap();
        assert_eq!(c, 0);
        assert_eq!(&*ob.snapshot()[0].json, r#"{"id":"x","seq":1}"#);
    }

    #[test]
    fn unreadable_lines_are_kept_in_journal_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, _) = Outbox::open(dir.path(), true, 10).unwrap();
        ob.push(
            r#"{"schema":1,"type":"incident.opened","id":"i1","seq":1}"#,
            1,
        )
        .unwrap();
        drop(ob);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join("journal"))
            .unwrap();
        f.write_all(b"+ {\"v\":1,\"seq\":2}\tnot json\n- x\n\xff\xfe garbage\n")
            .unwrap();
        drop(f);
        let (ob, corrupt) = Outbox::open(dir.path(), true, 10).unwrap();
        assert_eq!((corrupt, ob.len()), (3, 1));
        let kept = fs::read(dir.path().join("journal.corrupt")).unwrap();
        assert_eq!(
            kept, b"+ {\"v\":1,\"seq\":2}\tnot json\n- x\n\xff\xfe garbage\n",
            "byte for byte"
        );
        assert_eq!(ob.corrupt_path(), dir.path().join("journal.corrupt"));
        drop(ob);
        // A clean journal now; a later bad line is added to what the file holds.
        let (_, corrupt) = Outbox::open(dir.path(), true, 10).unwrap();
        assert_eq!(corrupt, 0);
        fs::write(dir.path().join("journal"), b"junk\n").unwrap();
        Outbox::open(dir.path(), true, 10).unwrap();
        let kept = fs::read(dir.path().join("journal.corrupt")).unwrap();
        assert!(kept.ends_with(b"garbage\njunk\n"));
    }
}

//! Following a growing text file through rotation: the shared reader behind the audit.log and
//! syslog-file sources, and behind the files named on the `replay` command line.
//!
//! - Appends are noticed through inotify on the directory (`notify`), with a slow timer as a
//!   safety net; no polling loop in the normal path.
//! - Rotation by rename + create: the old file (same device and inode) is read to its end, then
//!   the new file from its start. A reader more than one rotation behind (its file is now
//!   `PATH.3`) reads `PATH.2` and `PATH.1` in between.
//! - Rotation by copytruncate: the file shrinks below what was read; the rest is read from the
//!   copy (`PATH.1`) when it is there, then the truncated file from its start.
//! - Resume: the position is (device, inode, offset). If the file at the path is another one, the
//!   rotated file with that identity is looked up beside it and finished first.
//! - A last line without its newline is held until the newline arrives (or, for a rotated file,
//!   until the writer has moved on).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::{SourceError, SourceHandle};
use crate::checkpoint::Position;
use crate::pipeline::{
    Batch, BatchSender, CutShort, FileLine, FileLines, Mode, SourceItem, StopSignal,
};

/// Lines per batch sent to the parser.
const BATCH_LINES: usize = 512;
/// Safety-net wake-up when inotify stays silent (e.g. on filesystems without inotify).
const SAFETY_POLL: Duration = Duration::from_millis(500);
/// A line longer than this is cut (the parser never needs more; memory stays bounded).
const MAX_LINE: usize = 1 << 20;

/// What to follow.
#[derive(Debug, Clone)]
pub struct TailSpec {
    /// `audit_log`, `kernel_log`, or `file` for command-line files.
    pub name: &'static str,
    /// The path.
    pub path: PathBuf,
    /// The saved position.
    pub position: Option<Position>,
    /// Whether positions are reported (false for command-line files).
    pub checkpointed: bool,
    /// Read the file whole from the start and emit a last line without newline too.
    pub whole: bool,
}

impl TailSpec {
    /// A file named on the command line.
    pub fn whole(path: PathBuf) -> TailSpec {
        TailSpec {
            name: "file",
            path,
            position: None,
            checkpointed: false,
            whole: true,
        }
    }
}

/// Start following (or reading) a file.
pub fn start(
    spec: TailSpec,
    mode: Mode,
    tx: BatchSender,
    stop: StopSignal,
) -> Result<SourceHandle, SourceError> {
    let (wake_tx, wake_rx) = sync_channel::<()>(1);
    let watcher = if mode == Mode::Follow {
        let dir = match spec.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut w = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
            let _ = wake_tx.try_send(());
        })
        .map_err(|e| SourceError::Watch {
            source_name: spec.name.to_string(),
            path: dir.clone(),
            error: e.to_string(),
        })?;
        w.watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|e| SourceError::Watch {
                source_name: spec.name.to_string(),
                path: dir.clone(),
                error: e.to_string(),
            })?;
        Some(w)
    } else {
        None
    };
    let mut reader = Reader::new(&spec, tx);
    reader.open_initial(&spec, mode)?;
    let thread = std::thread::Builder::new()
        .name(format!("armorwatch-{}", spec.name))
        .spawn(move || {
            let _watcher = watcher;
            reader.run(mode, &wake_rx, &stop, spec.whole);
        })
        .map_err(|error| SourceError::Open {
            source_name: spec.name.to_string(),
            path: spec.path.clone(),
            error,
        })?;
    Ok(SourceHandle::Thread(thread))
}

#[derive(Debug)]
struct Reader {
    /// The configured path (shared with every position this reader hands over).
    path: Arc<Path>,
    checkpointed: bool,
    file: Option<File>,
    id: (u64, u64),
    shown: Arc<str>,
    /// Bytes of complete lines consumed.
    offset: u64,
    /// Lines consumed.
    line: u64,
    partial: Vec<u8>,
    /// Lines read and not yet in `batch`.
    chunk: FileLines,
    batch: Batch,
    tx: BatchSender,
    closed: bool,
    cut: CutShort,
}

fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

impl Reader {
    fn new(spec: &TailSpec, tx: BatchSender) -> Reader {
        Reader {
            path: Arc::from(spec.path.as_path()),
            checkpointed: spec.checkpointed,
            file: None,
            id: (0, 0),
            shown: Arc::from(spec.path.display().to_string()),
            offset: 0,
            line: 0,
            partial: Vec::new(),
            chunk: FileLines::default(),
            batch: Vec::new(),
            tx,
            closed: false,
            cut: CutShort::default(),
        }
    }

    fn open_err(&self, spec: &TailSpec, path: &Path, error: io::Error) -> SourceError {
        SourceError::Open {
            source_name: spec.name.to_string(),
            path: path.to_path_buf(),
            error,
        }
    }

    /// Open the file at the saved position (finishing a rotated file first when the saved one was
    /// rotated away), at the end (follow, no position) or at the start.
    fn open_initial(&mut self, spec: &TailSpec, mode: Mode) -> Result<(), SourceError> {
        let current = match File::open(&self.path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound && mode == Mode::Follow => {
                eprintln!(
                    "armorwatch: {}: {} does not exist yet; waiting for it",
                    spec.name,
                    self.path.display()
                );
                None
            }
            Err(e) => return Err(self.open_err(spec, &self.path, e)),
        };
        let current_meta = match &current {
            Some(f) => Some(
                f.metadata()
                    .map_err(|e| self.open_err(spec, &self.path, e))?,
            ),
            None => None,
        };
        if let Some(Position::File {
            dev,
            ino,
            offset,
            line,
            ..
        }) = spec.position.clone()
        {
            if let (Some(f), Some(m)) = (&current, &current_meta) {
                if identity(m) == (dev, ino) {
                    if m.len() >= offset {
                        self.attach(
                            f.try_clone()
                                .map_err(|e| self.open_err(spec, &self.path, e))?,
                            m,
                            None,
                            offset,
                            line,
                        )
                        .map_err(|e| self.open_err(spec, &self.path, e))?;
                    } else {
                        // Truncated while we were away.
                        self.attach(
                            f.try_clone()
                                .map_err(|e| self.open_err(spec, &self.path, e))?,
                            m,
                            None,
                            0,
                            0,
                        )
                        .map_err(|e| self.open_err(spec, &self.path, e))?;
                    }
                    return Ok(());
                }
            }
            if let Some((rotated, meta, p)) = find_by_identity(&self.path, (dev, ino)) {
                if meta.len() >= offset {
                    self.attach(rotated, &meta, Some(&p), offset, line)
                        .map_err(|e| self.open_err(spec, &p, e))?;
                    // Read it now; `run` then switches to the current file (another identity).
                    return Ok(());
                }
            }
            // The saved file is gone: the current one is new since, read it from the start.
            if let (Some(f), Some(m)) = (current, current_meta) {
                self.attach(f, &m, None, 0, 0)
                    .map_err(|e| self.open_err(spec, &self.path, e))?;
            }
            return Ok(());
        }
        if let (Some(f), Some(m)) = (current, current_meta) {
            let start = if mode == Mode::Follow && !spec.whole {
                m.len()
            } else {
                0
            };
            self.attach(f, &m, None, start, 0)
                .map_err(|e| self.open_err(spec, &self.path, e))?;
        }
        Ok(())
    }

    fn attach(
        &mut self,
        mut f: File,
        m: &std::fs::Metadata,
        shown: Option<&Path>,
        offset: u64,
        line: u64,
    ) -> io::Result<()> {
        f.seek(SeekFrom::Start(offset))?;
        self.seal();
        self.file = Some(f);
        self.id = identity(m);
        self.shown = Arc::from(shown.unwrap_or(&self.path).display().to_string());
        self.chunk.shown = self.shown.clone();
        self.chunk.file = self.file_identity();
        self.offset = offset;
        self.line = line;
        self.partial.clear();
        Ok(())
    }

    fn run(&mut self, mode: Mode, wake: &Receiver<()>, stop: &StopSignal, whole: bool) {
        loop {
            if *stop.borrow() || self.closed {
                break;
            }
            if let Err(e) = self.read_available() {
                eprintln!("armorwatch: reading {}: {e}", self.shown);
            }
            let switched = self.check_rotation(mode);
            self.send();
            if switched {
                continue;
            }
            if mode == Mode::Replay {
                break;
            }
            match wake.recv_timeout(SAFETY_POLL) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if whole {
            self.finish_partial();
        }
        self.send();
    }

    /// Notice rotation or truncation at the path; true when the reader moved to another file.
    fn check_rotation(&mut self, mode: Mode) -> bool {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(_) => return false,
        };
        if self.file.is_none() || identity(&meta) != self.id {
            if mode == Mode::Replay && self.file.is_some() && !self.reading_rotated() {
                return false;
            }
            // Renamed away (or finishing a rotated file at start-up): finish it, then the files
            // rotated after it (a reader more than one rotation behind: `PATH.2` was ours, so
            // `PATH.1` comes next), then the new one. The new one is opened first: if it is
            // rotated too while the others are read, the handle still reads it, and the next
            // check finds what came after it.
            let next = File::open(&self.path).and_then(|f| {
                let m = f.metadata()?;
                Ok((f, m))
            });
            let (next, next_meta) = match next {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("armorwatch: opening {}: {e}", self.path.display());
                    return false;
                }
            };
            if self.file.is_some() {
                if let Err(e) = self.read_available() {
                    eprintln!("armorwatch: reading {}: {e}", self.shown);
                }
                self.finish_partial();
                for (f, m, p) in rotated_after(&self.path, self.id, identity(&next_meta)) {
                    if let Err(e) = self.attach(f, &m, Some(&p), 0, 0) {
                        eprintln!("armorwatch: reading {}: {e}", p.display());
                        continue;
                    }
                    if let Err(e) = self.read_available() {
                        eprintln!("armorwatch: reading {}: {e}", p.display());
                    }
                    self.finish_partial();
                    self.send();
                    if self.closed {
                        return false;
                    }
                }
            }
            match self.attach(next, &next_meta, None, 0, 0) {
                Ok(()) => return true,
                Err(e) => {
                    eprintln!("armorwatch: opening {}: {e}", self.path.display());
                    self.file = None;
                    return false;
                }
            }
        }
        let read_pos = self.offset + self.partial.len() as u64;
        if meta.len() < read_pos {
            // copytruncate: what we have not read yet is in the copy.
            if let Some((copy, copy_meta, p)) = find_copy(&self.path, read_pos) {
                let partial = std::mem::take(&mut self.partial);
                let (offset, line) = (self.offset, self.line);
                if self
                    .attach(copy, &copy_meta, Some(&p), read_pos, line)
                    .is_ok()
                {
                    self.offset = offset;
                    self.partial = partial;
                    if let Err(e) = self.read_available() {
                        eprintln!("armorwatch: reading {}: {e}", p.display());
                    }
                    self.finish_partial();
                }
            }
            match File::open(&self.path).and_then(|f| {
                let m = f.metadata()?;
                self.attach(f, &m, None, 0, 0)
            }) {
                Ok(()) => return true,
                Err(e) => {
                    eprintln!("armorwatch: opening {}: {e}", self.path.display());
                    self.file = None;
                }
            }
        }
        false
    }

    fn reading_rotated(&self) -> bool {
        *self.shown != *self.path.display().to_string()
    }

    /// Read to the current end of the open file.
    fn read_available(&mut self) -> io::Result<()> {
        let Some(mut file) = self.file.take() else {
            return Ok(());
        };
        let r = self.read_from(&mut file);
        self.file = Some(file);
        r
    }

    fn read_from(&mut self, file: &mut File) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            let mut rest = &buf[..n];
            while let Some(nl) = memchr::memchr(b'\n', rest) {
                let (head, tail) = rest.split_at(nl);
                let consumed = self.partial.len() + head.len() + 1;
                if self.partial.is_empty() {
                    self.push_line(head, consumed);
                } else {
                    let mut partial = std::mem::take(&mut self.partial);
                    partial.extend_from_slice(head);
                    self.push_line(&partial, consumed);
                    partial.clear();
                    self.partial = partial;
                }
                rest = &tail[1..];
            }
            if self.partial.len() < MAX_LINE {
                let room = MAX_LINE - self.partial.len();
                self.partial
                    .extend_from_slice(&rest[..rest.len().min(room)]);
            }
            if self.chunk.lines.len() >= BATCH_LINES {
                self.seal();
                self.batch.push(SourceItem::MoreFollows);
                self.send();
                if self.closed {
                    return Ok(());
                }
            }
        }
    }

    /// A complete line (`consumed` bytes of the file with its newline) joins the lines to send.
    fn push_line(&mut self, bytes: &[u8], consumed: usize) {
        self.offset += consumed as u64;
        self.line += 1;
        match std::str::from_utf8(bytes) {
            Ok(text) => self.chunk.text.push_str(text),
            Err(_) => self.chunk.text.push_str(&String::from_utf8_lossy(bytes)),
        }
        self.chunk.lines.push(FileLine {
            end: self.chunk.text.len(),
            line: self.line,
            offset: self.offset,
        });
    }

    /// The file is finished: a last line without newline is complete as it is.
    fn finish_partial(&mut self) {
        if !self.partial.is_empty() {
            let partial = std::mem::take(&mut self.partial);
            self.push_line(&partial, partial.len());
        }
    }

    /// The lines read so far become the next item of the batch (before the file changes: the
    /// lines of one item share its name and identity).
    fn seal(&mut self) {
        if self.chunk.lines.is_empty() {
            return;
        }
        let next = FileLines {
            text: String::with_capacity(self.chunk.text.capacity()),
            lines: Vec::with_capacity(BATCH_LINES),
            shown: self.shown.clone(),
            file: self.file_identity(),
        };
        let chunk = std::mem::replace(&mut self.chunk, next);
        self.batch.push(SourceItem::FileLines(chunk));
    }

    fn file_identity(&self) -> Option<(Arc<Path>, u64, u64)> {
        self.checkpointed
            .then(|| (self.path.clone(), self.id.0, self.id.1))
    }

    fn send(&mut self) {
        self.seal();
        if !self.cut.should_send(&self.batch) {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        if self.tx.blocking_send(batch).is_err() {
            self.closed = true;
        }
    }
}

/// Rotated siblings of `path` (`audit.log.1`, `kern.log.1`, `audit.log.2` …), compressed ones
/// excluded.
fn siblings(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{name}.");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            (n.starts_with(&prefix)
                && !n.ends_with(".gz")
                && !n.ends_with(".xz")
                && !n.ends_with(".zst"))
            .then(|| e.path())
        })
        .collect();
    out.sort();
    out
}

/// The rotated files newer than the one with identity `id`, oldest first: with `id` at
/// `PATH.k`, the files `PATH.k-1` … `PATH.1` (numbered rotation, as auditd and logrotate do it).
/// Empty when `id` is not among them (it was deleted, or the rotation does not number). The file
/// now at the path (`current`) is never included.
fn rotated_after(
    path: &Path,
    id: (u64, u64),
    current: (u64, u64),
) -> Vec<(File, std::fs::Metadata, PathBuf)> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let prefix = format!("{name}.");
    let mut numbered: Vec<(u64, PathBuf)> = siblings(path)
        .into_iter()
        .filter_map(|p| {
            let file = p.file_name()?.to_str()?;
            let n = file.strip_prefix(&prefix)?.parse::<u64>().ok()?;
            Some((n, p))
        })
        .collect();
    numbered.sort();
    let opened: Vec<(u64, File, std::fs::Metadata, PathBuf)> = numbered
        .into_iter()
        .filter_map(|(n, p)| {
            let f = File::open(&p).ok()?;
            let m = f.metadata().ok()?;
            Some((n, f, m, p))
        })
        .collect();
    let Some(ours) = opened.iter().position(|(_, _, m, _)| identity(m) == id) else {
        return Vec::new();
    };
    let mut newer: Vec<(File, std::fs::Metadata, PathBuf)> = opened
        .into_iter()
        .take(ours)
        .filter(|(_, _, m, _)| identity(m) != current)
        .map(|(_, f, m, p)| (f, m, p))
        .collect();
    newer.reverse();
    newer
}

fn find_by_identity(path: &Path, id: (u64, u64)) -> Option<(File, std::fs::Metadata, PathBuf)> {
    siblings(path).into_iter().find_map(|p| {
        let f = File::open(&p).ok()?;
        let m = f.metadata().ok()?;
        (identity(&m) == id).then_some((f, m, p))
    })
}

/// The copy made by copytruncate: the first sibling at least `len` bytes long.
fn find_copy(path: &Path, len: u64) -> Option<(File, std::fs::Metadata, PathBuf)> {
    siblings(path).into_iter().find_map(|p| {
        let f = File::open(&p).ok()?;
        let m = f.metadata().ok()?;
        (m.len() >= len).then_some((f, m, p))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::{mpsc, watch};

    /// A batch cut short at the end of what there is to read is followed by an empty one, so
    /// the parser stops waiting for the rest (a follower would otherwise hold the last events
    /// of a burst of exactly 512 lines for `MORE_FOLLOWS_WAIT`).
    #[test]
    fn a_batch_cut_short_at_the_end_of_the_input_is_followed_by_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, "line\n".repeat(BATCH_LINES)).unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let (_stop_tx, stop) = watch::channel(false);
        let handle = start(TailSpec::whole(path), Mode::Replay, tx, stop).unwrap();
        let mut batches = Vec::new();
        while let Some(b) = rx.blocking_recv() {
            batches.push(b);
        }
        if let SourceHandle::Thread(t) = handle {
            t.join().unwrap();
        }
        let shape: Vec<(usize, bool)> = batches
            .iter()
            .map(|b| (b.len(), matches!(b.last(), Some(SourceItem::MoreFollows))))
            .collect();
        assert_eq!(
            shape,
            [(2, true), (0, false)],
            "(items, cut short) per batch"
        );
    }
}

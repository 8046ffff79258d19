//! Following a growing text file through rotation: the shared reader behind the audit.log and
//! syslog-file sources, and behind the files named on the `replay` command line.
//!
//! - Appends are noticed through inotify on the directory (`notify`); the stop signal wakes the
//!   reader too, so an idle reader does not run at all. A timer reads every
//!   [`SAFETY_POLL`] only where inotify misses writes (a network or FUSE filesystem, a path
//!   that is a symbolic link) and while a renamed file is still read after a rotation.
//! - Rotation by rename + create: the old file (same device and inode) is read to its end, then
//!   the new file from its start. A writer may go on appending to the renamed file for a while
//!   (rsyslog does, until logrotate's postrotate HUPs it), so its handle stays open and what is
//!   appended to it is read too, until it has been quiet for [`ROTATED_QUIET`]; only then is a
//!   last line without newline taken as it is. A reader more than one rotation behind (its file
//!   is now `PATH.3`) reads `PATH.2` and `PATH.1` in between.
//! - Rotation by copytruncate: the file shrinks below what was read; the rest is read from the
//!   copy (`PATH.1`) when it is there, then the truncated file from its start. A sibling counts
//!   as the copy only when it holds the last line read at the same offset: a file emptied by
//!   hand is read from its start, and older rotated files are not read again.
//! - Resume: the position is (device, inode, offset) and the print of the line before the offset
//!   ([`LinePrint`]). If the file at the path is another one, the rotated file with that identity
//!   is looked up beside it (`PATH.N`, `PATH-DATE`) and finished first. If it is the same file
//!   but no longer holds that line there (copytruncate while armorwatch was stopped, or the file
//!   written anew under a reused inode), the copy is finished first when there is one, then the
//!   file is read from its start.
//! - First start (follow, no position): at the end of the file, and that position is handed over
//!   at once, so what is written while armorwatch is stopped before it read anything is read
//!   after its next start. A checkpoint saved for another path counts as none.
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
use crate::checkpoint::{LinePrint, Position};
use crate::pipeline::{
    Batch, BatchSender, CutShort, FileLine, FileLines, Mode, SourceItem, StopSignal,
};

/// Lines per batch sent to the parser.
const BATCH_LINES: usize = 512;
/// How often the file is read where inotify misses writes, and while a rotated file is read.
const SAFETY_POLL: Duration = Duration::from_millis(500);

/// Filesystems whose files change without inotify saying so (writes from other hosts, FUSE
/// daemons): `f_type` magic numbers from linux/magic.h and statfs(2).
const UNWATCHED_FILESYSTEMS: [u32; 12] = [
    0x6969,      // NFS
    0x517B,      // SMB
    0xFF53_4D42, // CIFS
    0xFE53_4D42, // SMB2
    0x6573_5546, // FUSE
    0x0102_1997, // 9P (v9fs)
    0x00C3_6400, // Ceph
    0x5346_414F, // AFS
    0x6B41_4653, // kAFS
    0x7375_7245, // Coda
    0x0116_1970, // GFS2
    0x0BD0_0BD0, // Lustre
];

/// Does inotify on `dir` miss changes to `path`? Where that cannot be told, it is assumed.
fn inotify_misses(dir: &Path, path: &Path) -> bool {
    let symlink = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    symlink
        || rustix::fs::statfs(dir)
            .map_or(true, |s| UNWATCHED_FILESYSTEMS.contains(&(s.f_type as u32)))
}
/// How long a renamed file is still read after rotation when nothing is appended to it.
const ROTATED_QUIET: Duration = Duration::from_secs(10);
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
    let mut poll = false;
    let watcher = if mode == Mode::Follow {
        let dir = match spec.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // The stop signal wakes the reader (it waits for inotify without a timeout); without a
        // runtime to watch the signal, it reads on a timer and looks at the signal then.
        let wake = wake_tx.clone();
        poll = !super::wake_on_stop(&stop, move || {
            let _ = wake.try_send(());
        }) || inotify_misses(&dir, &spec.path);
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
    reader.poll = poll;
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
    /// The print of the line ending at `offset`.
    last_print: Option<LinePrint>,
    /// The start of the line being read (at most [`MAX_LINE`] bytes of it) …
    partial: Vec<u8>,
    /// … and the bytes of it beyond those.
    partial_cut: u64,
    /// Following started in the middle of a line (none of the last [`MAX_LINE`] bytes was a
    /// newline): its rest, up to the next newline, is dropped rather than read as a line.
    skip_line: bool,
    /// Lines read and not yet in `batch`.
    chunk: FileLines,
    batch: Batch,
    tx: BatchSender,
    closed: bool,
    cut: CutShort,
    /// The file renamed away by the last rotation, still read while its writer may append.
    rotated: Option<Rotated>,
    /// [`ROTATED_QUIET`] (shorter in tests).
    rotated_quiet: Duration,
    /// Lines read now go without positions (see [`Reader::read_rotated`]).
    positions_off: bool,
    /// Read every [`SAFETY_POLL`] (inotify misses this file's writes).
    poll: bool,
}

/// A file renamed away, still open: where it is read up to, and since when nothing came.
#[derive(Debug)]
struct Rotated {
    file: Option<File>,
    id: (u64, u64),
    shown: Arc<str>,
    offset: u64,
    line: u64,
    last_print: Option<LinePrint>,
    partial: Vec<u8>,
    partial_cut: u64,
    quiet_since: std::time::Instant,
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
            last_print: None,
            partial: Vec::new(),
            partial_cut: 0,
            skip_line: false,
            chunk: FileLines::default(),
            batch: Vec::new(),
            tx,
            closed: false,
            cut: CutShort::default(),
            rotated: None,
            rotated_quiet: ROTATED_QUIET,
            positions_off: false,
            poll: false,
        }
    }

    fn open_err(&self, spec: &TailSpec, path: &Path, error: io::Error) -> SourceError {
        SourceError::Open {
            source_name: spec.name.to_string(),
            path: path.to_path_buf(),
            error,
        }
    }

    /// Open the file at the saved position (finishing a rotated file, or the copy of a file
    /// truncated since, first), at the end (follow, no position) or at the start.
    fn open_initial(&mut self, spec: &TailSpec, mode: Mode) -> Result<(), SourceError> {
        let current = match File::open(&self.path) {
            // A directory opens; reading it fails (a replay read nothing and exited 0).
            Ok(f) if f.metadata().is_ok_and(|m| m.is_dir()) => {
                let e = io::Error::from_raw_os_error(libc::EISDIR);
                return Err(self.open_err(spec, &self.path, e));
            }
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound && mode == Mode::Follow => {
                crate::log_warn!(
                    "{}: {} does not exist yet; waiting for it",
                    spec.name,
                    self.path.display()
                );
                None
            }
            Err(e) => return Err(self.open_err(spec, &self.path, e)),
        };
        let current = match current {
            Some(f) => {
                let m = f
                    .metadata()
                    .map_err(|e| self.open_err(spec, &self.path, e))?;
                Some((f, m))
            }
            None => None,
        };
        let position = match spec.position.clone() {
            Some(Position::File { path, .. }) if *path != *self.path => {
                crate::log_warn!(
                    "{}: the checkpoint is for {}, not {}; starting as on a first start",
                    spec.name,
                    path.display(),
                    self.path.display()
                );
                None
            }
            p => p,
        };
        let Some(Position::File {
            dev,
            ino,
            offset,
            line,
            last_line,
            ..
        }) = position
        else {
            if let Some((f, m)) = current {
                self.attach_first(spec, f, &m, mode)
                    .map_err(|e| self.open_err(spec, &self.path, e))?;
            }
            return Ok(());
        };
        let holds_line = |f: &File| last_line.is_none_or(|p| p.matches(f, offset));
        if let Some((f, m)) = &current {
            if identity(m) == (dev, ino) {
                if m.len() >= offset && holds_line(f) {
                    let f = f
                        .try_clone()
                        .map_err(|e| self.open_err(spec, &self.path, e))?;
                    self.attach(f, m, None, offset, line, last_line)
                        .map_err(|e| self.open_err(spec, &self.path, e))?;
                    return Ok(());
                }
                // Truncated, or written anew, while we were away: what we had not read is in
                // the copy, if copytruncate made one. `run` goes on with this file (another
                // identity) from its start.
                if let Some((copy, copy_meta, p)) =
                    find_copy(&self.path, offset, offset, last_line, &[])
                {
                    self.attach(copy, &copy_meta, Some(&p), offset, line, last_line)
                        .map_err(|e| self.open_err(spec, &p, e))?;
                    return Ok(());
                }
                crate::log_warn!(
                    "{}: {} no longer holds the checkpoint's line at byte {offset} (truncated or written anew) and no copy of it is beside it; reading it from its start",
                    spec.name,
                    self.path.display()
                );
                let f = f
                    .try_clone()
                    .map_err(|e| self.open_err(spec, &self.path, e))?;
                self.attach(f, m, None, 0, 0, None)
                    .map_err(|e| self.open_err(spec, &self.path, e))?;
                return Ok(());
            }
        }
        if let Some((rotated, meta, p)) = find_by_identity(&self.path, (dev, ino)) {
            if meta.len() >= offset && holds_line(&rotated) {
                self.attach(rotated, &meta, Some(&p), offset, line, last_line)
                    .map_err(|e| self.open_err(spec, &p, e))?;
                // Read it now; `run` then switches to the current file (another identity).
                return Ok(());
            }
        }
        crate::log_warn!(
            "{}: the file of the checkpoint is no longer beside {} (deleted, or compressed by the rotation); what was written to it after the checkpoint is not read",
            spec.name,
            self.path.display()
        );
        // The current file is new since: read it from the start.
        if let Some((f, m)) = current {
            self.attach(f, &m, None, 0, 0, None)
                .map_err(|e| self.open_err(spec, &self.path, e))?;
        }
        Ok(())
    }

    /// No position: follow from the end of the file (after its last complete line), handing
    /// that position over at once; read from the start otherwise.
    fn attach_first(
        &mut self,
        spec: &TailSpec,
        f: File,
        m: &std::fs::Metadata,
        mode: Mode,
    ) -> io::Result<()> {
        if mode != Mode::Follow || spec.whole {
            return self.attach(f, m, None, 0, 0, None);
        }
        let (start, print, mid_line) = end_of_last_line(&f, m.len())?;
        self.attach(f, m, None, start, 0, print)?;
        self.skip_line = mid_line;
        // In the middle of a line, a position there would make the next start read the rest
        // of the line as a line. Without one the next start is a first start again: until the
        // line ends, nothing after it can have been written.
        if mid_line {
            return Ok(());
        }
        if let Some((path, dev, ino)) = self.file_identity() {
            self.batch.push(SourceItem::Position(Position::File {
                path,
                dev,
                ino,
                offset: start,
                line: 0,
                last_line: print,
            }));
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
        last_print: Option<LinePrint>,
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
        self.last_print = last_print;
        self.partial.clear();
        self.partial_cut = 0;
        self.skip_line = false;
        Ok(())
    }

    fn run(&mut self, mode: Mode, wake: &Receiver<()>, stop: &StopSignal, whole: bool) {
        loop {
            if *stop.borrow() || self.closed {
                break;
            }
            if self.turn(mode) {
                continue;
            }
            if mode == Mode::Replay {
                break;
            }
            // A renamed file may be appended to without a word from inotify (it can be
            // moved out of the watched directory), and goes once it has been quiet.
            if self.poll || self.rotated.is_some() {
                match wake.recv_timeout(SAFETY_POLL) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else if wake.recv().is_err() {
                break;
            }
        }
        if whole {
            self.finish_partial();
        }
        // Its writer has had the time of a rotation to move on.
        self.finish_rotated();
        self.send();
    }

    /// One turn of following: read what was appended, notice rotation or truncation, read the
    /// renamed file, hand the lines over. True when the reader moved to another file.
    fn turn(&mut self, mode: Mode) -> bool {
        // Checked before reading: a file emptied in place (copytruncate) and written past our
        // position since the last turn is not shorter than the position, and what is there now
        // would be read from the middle, the rest of the old text (in the copy) and the start of
        // the new lost.
        let overwritten = self.overwritten();
        if !overwritten {
            if let Err(e) = self.read_available() {
                super::read_error(
                    super::ReadErrorSource::File,
                    format_args!("reading {}: {e}", self.shown),
                );
            }
        }
        let switched = self.check_rotation(mode, overwritten);
        self.read_rotated(false);
        self.send();
        switched
    }

    /// The line read last is no longer where it was in the open file: the file was emptied and
    /// written again (one `pread` of the line's start and the bytes around it). Before the first
    /// line ended, the start of it read so far is checked the same way.
    fn overwritten(&self) -> bool {
        use std::os::unix::fs::FileExt;
        match (&self.file, self.last_print) {
            (Some(f), Some(print)) if self.offset > 0 => !print.matches(f, self.offset),
            (Some(f), None) if self.offset == 0 && !self.partial.is_empty() => {
                let head = &self.partial[..self.partial.len().min(LinePrint::HEAD)];
                let mut now = vec![0u8; head.len()];
                f.read_exact_at(&mut now, 0).is_err() || now != head
            }
            _ => false,
        }
    }

    /// Notice rotation or truncation at the path (`overwritten`: truncated whatever its size);
    /// true when the reader moved to another file.
    fn check_rotation(&mut self, mode: Mode, overwritten: bool) -> bool {
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
                    super::read_error(
                        super::ReadErrorSource::File,
                        format_args!("opening {}: {e}", self.path.display()),
                    );
                    return false;
                }
            };
            if self.file.is_some() {
                if let Err(e) = self.read_available() {
                    super::read_error(
                        super::ReadErrorSource::File,
                        format_args!("reading {}: {e}", self.shown),
                    );
                }
                let newer = rotated_after(&self.path, self.id, identity(&next_meta));
                if mode == Mode::Follow && newer.is_empty() {
                    // Renamed by this rotation: its writer may still append to it.
                    self.keep_rotated();
                } else {
                    self.finish_partial();
                }
                for (f, m, p) in newer {
                    if let Err(e) = self.attach(f, &m, Some(&p), 0, 0, None) {
                        super::read_error(
                            super::ReadErrorSource::File,
                            format_args!("reading {}: {e}", p.display()),
                        );
                        continue;
                    }
                    if let Err(e) = self.read_available() {
                        super::read_error(
                            super::ReadErrorSource::File,
                            format_args!("reading {}: {e}", p.display()),
                        );
                    }
                    self.finish_partial();
                    self.send();
                    if self.closed {
                        return false;
                    }
                }
            }
            match self.attach(next, &next_meta, None, 0, 0, None) {
                Ok(()) => return true,
                Err(e) => {
                    super::read_error(
                        super::ReadErrorSource::File,
                        format_args!("opening {}: {e}", self.path.display()),
                    );
                    self.file = None;
                    return false;
                }
            }
        }
        let read_pos = self.offset + self.partial.len() as u64 + self.partial_cut;
        if meta.len() < read_pos || overwritten {
            // copytruncate: what we have not read yet is in the copy.
            let copy = find_copy(
                &self.path,
                self.offset,
                read_pos,
                self.last_print,
                if self.partial_cut == 0 {
                    &self.partial
                } else {
                    &[]
                },
            );
            if let Some((copy, copy_meta, p)) = copy {
                let partial = std::mem::take(&mut self.partial);
                let (offset, line, cut, print) =
                    (self.offset, self.line, self.partial_cut, self.last_print);
                if self
                    .attach(copy, &copy_meta, Some(&p), read_pos, line, print)
                    .is_ok()
                {
                    self.offset = offset;
                    self.partial = partial;
                    self.partial_cut = cut;
                    if let Err(e) = self.read_available() {
                        super::read_error(
                            super::ReadErrorSource::File,
                            format_args!("reading {}: {e}", p.display()),
                        );
                    }
                    self.finish_partial();
                }
            }
            match File::open(&self.path).and_then(|f| {
                let m = f.metadata()?;
                self.attach(f, &m, None, 0, 0, None)
            }) {
                Ok(()) => return true,
                Err(e) => {
                    super::read_error(
                        super::ReadErrorSource::File,
                        format_args!("opening {}: {e}", self.path.display()),
                    );
                    self.file = None;
                }
            }
        }
        false
    }

    /// The open file was renamed away: keep reading it beside the new one (see
    /// [`Reader::read_rotated`]). A file kept from the rotation before is finished now.
    fn keep_rotated(&mut self) {
        self.finish_rotated();
        self.seal();
        let shown = find_by_identity(&self.path, self.id).map_or_else(
            || self.shown.clone(),
            |(_, _, p)| Arc::from(p.display().to_string()),
        );
        self.rotated = Some(Rotated {
            file: self.file.take(),
            id: self.id,
            shown,
            offset: self.offset,
            line: self.line,
            last_print: self.last_print,
            partial: std::mem::take(&mut self.partial),
            partial_cut: std::mem::take(&mut self.partial_cut),
            quiet_since: std::time::Instant::now(),
        });
    }

    /// Read what was appended to the renamed file; once it has been quiet for
    /// `rotated_quiet`, its last line without newline is complete as it is and it is closed.
    fn read_rotated(&mut self, finish: bool) {
        let Some(mut old) = self.rotated.take() else {
            return;
        };
        // Once the current file has been read from, the last position handed over must stay
        // one of it: lines of the renamed file read after that go without positions (else a
        // restart would resume the renamed file and read the current one again from its start).
        self.positions_off = self.offset > 0 || self.line > 0 || !self.partial.is_empty();
        self.swap_rotated(&mut old);
        let before = self.offset + self.partial.len() as u64 + self.partial_cut;
        if let Err(e) = self.read_available() {
            super::read_error(
                super::ReadErrorSource::File,
                format_args!("reading {}: {e}", self.shown),
            );
        }
        if self.offset + self.partial.len() as u64 + self.partial_cut != before {
            old.quiet_since = std::time::Instant::now();
        }
        let done = finish || old.quiet_since.elapsed() >= self.rotated_quiet;
        if done {
            self.finish_partial();
        }
        self.seal();
        self.positions_off = false;
        self.swap_rotated(&mut old);
        if !done {
            self.rotated = Some(old);
        }
    }

    /// Finish the renamed file kept from the last rotation now.
    fn finish_rotated(&mut self) {
        self.read_rotated(true);
    }

    /// Exchange the file being read with the renamed one (the lines read so far are sealed
    /// first: a batch item's lines share their file).
    fn swap_rotated(&mut self, old: &mut Rotated) {
        use std::mem::swap;
        self.seal();
        swap(&mut self.file, &mut old.file);
        swap(&mut self.id, &mut old.id);
        swap(&mut self.shown, &mut old.shown);
        swap(&mut self.offset, &mut old.offset);
        swap(&mut self.line, &mut old.line);
        swap(&mut self.last_print, &mut old.last_print);
        swap(&mut self.partial, &mut old.partial);
        swap(&mut self.partial_cut, &mut old.partial_cut);
        self.chunk.shown = self.shown.clone();
        self.chunk.file = self.file_identity();
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
                // What is cut off a long line still counts in the offset.
                let consumed = (self.partial.len() + head.len() + 1) as u64 + self.partial_cut;
                if std::mem::take(&mut self.skip_line) {
                    // The end of a line whose start was not read: no line of its own.
                    self.offset += consumed;
                } else if self.partial.is_empty() {
                    self.push_line(head, consumed);
                } else {
                    let mut partial = std::mem::take(&mut self.partial);
                    let room = MAX_LINE.saturating_sub(partial.len());
                    partial.extend_from_slice(&head[..head.len().min(room)]);
                    self.push_line(&partial, consumed);
                    partial.clear();
                    self.partial = partial;
                }
                self.partial_cut = 0;
                rest = &tail[1..];
            }
            let keep = if self.skip_line {
                0
            } else {
                rest.len().min(MAX_LINE.saturating_sub(self.partial.len()))
            };
            self.partial.extend_from_slice(&rest[..keep]);
            self.partial_cut += (rest.len() - keep) as u64;
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
    fn push_line(&mut self, bytes: &[u8], consumed: u64) {
        self.offset += consumed;
        self.line += 1;
        let print = LinePrint::of(bytes, consumed);
        self.last_print = Some(print);
        match std::str::from_utf8(bytes) {
            Ok(text) => self.chunk.text.push_str(text),
            Err(_) => self.chunk.text.push_str(&String::from_utf8_lossy(bytes)),
        }
        self.chunk.lines.push(FileLine {
            end: self.chunk.text.len(),
            line: self.line,
            offset: self.offset,
            print,
        });
    }

    /// The file is finished: a last line without newline is complete as it is.
    fn finish_partial(&mut self) {
        if !self.partial.is_empty() {
            let partial = std::mem::take(&mut self.partial);
            let consumed = partial.len() as u64 + self.partial_cut;
            self.partial_cut = 0;
            self.push_line(&partial, consumed);
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
        (self.checkpointed && !self.positions_off)
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

/// Rotated siblings of `path` (`audit.log.1`, `kern.log.1`, `audit.log.2` …, and logrotate's
/// `dateext` names `kern.log-20261202`), compressed ones excluded.
fn siblings(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let (dot, dash) = (format!("{name}."), format!("{name}-"));
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            ((n.starts_with(&dot) || n.starts_with(&dash))
                && !n.ends_with(".gz")
                && !n.ends_with(".xz")
                && !n.ends_with(".zst"))
            .then(|| e.path())
        })
        .collect();
    out.sort();
    out
}

/// The rotated files newer than the one with identity `id`, oldest first. Numbered rotation (as
/// auditd and logrotate do it): with `id` at `PATH.k`, the files `PATH.k-1` … `PATH.1`. Dated
/// rotation (logrotate's `dateext`): with `id` at `PATH-D`, the `PATH-…` files whose names sort
/// after it (the dates do, in every `dateformat` that keeps one width). Empty when `id` is not
/// among them (it was deleted or compressed). The file now at the path (`current`) is never
/// included.
fn rotated_after(
    path: &Path,
    id: (u64, u64),
    current: (u64, u64),
) -> Vec<(File, std::fs::Metadata, PathBuf)> {
    rotated_after_with(path, id, current, &mut |_| {})
}

/// How many times [`rotated_after_with`] scans the rotated files again when a rotation moved
/// them while it opened them.
const ROTATED_SCANS: usize = 20;

/// [`rotated_after`], `opened` called after each rotated file is opened (tests rotate there).
///
/// The files are opened one name at a time, and a rotation that runs meanwhile (auditd renames
/// `.4` → `.5` … `.1` → `.2`, the log → `.1`) moves them between names: ours may be seen under
/// no name at all (opened at `.3` before it came there, gone from `.2` when that was opened),
/// and the file after ours, whose lines the reader has not read, was then taken for one it had
/// (1 000 records of a 1M-record stream rotated every 1 000 lines, lost in a robustness run).
/// So a scan counts only when, after every open, the names are the same and each still holds
/// the file opened under it: every rename in between changes the file under its source or its
/// target name. Otherwise the scan is repeated.
fn rotated_after_with(
    path: &Path,
    id: (u64, u64),
    current: (u64, u64),
    opened: &mut dyn FnMut(&Path),
) -> Vec<(File, std::fs::Metadata, PathBuf)> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let (dot, dash) = (format!("{name}."), format!("{name}-"));
    let mut scans = 0;
    let (numbered, dated) = loop {
        scans += 1;
        let names = siblings(path);
        // Each scheme's files, oldest first.
        let mut numbered: Vec<(u64, PathBuf)> = Vec::new();
        let mut dated: Vec<PathBuf> = Vec::new();
        for p in &names {
            let Some(file) = p.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            if let Some(n) = file.strip_prefix(&dot).and_then(|n| n.parse::<u64>().ok()) {
                numbered.push((n, p.clone()));
            } else if file.starts_with(&dash) {
                dated.push(p.clone());
            }
        }
        numbered.sort_by_key(|e| std::cmp::Reverse(e.0));
        dated.sort();
        let mut complete = true;
        let mut open = |paths: Vec<PathBuf>| -> Vec<(File, std::fs::Metadata, PathBuf)> {
            paths
                .into_iter()
                .filter_map(|p| {
                    let got = File::open(&p).and_then(|f| {
                        let m = f.metadata()?;
                        Ok((f, m))
                    });
                    opened(&p);
                    match got {
                        Ok((f, m)) => Some((f, m, p)),
                        Err(_) => {
                            complete = false;
                            None
                        }
                    }
                })
                .collect()
        };
        let numbered = open(numbered.into_iter().map(|(_, p)| p).collect());
        let dated = open(dated);
        let held = numbered
            .iter()
            .chain(&dated)
            .map(|(_, m, p)| (p.as_path(), Some(identity(m))));
        let stable = complete && unmoved(path, &names, held);
        if stable || scans >= ROTATED_SCANS {
            break (numbered, dated);
        }
    };
    // Of dated names, only those of our name's shape (digits where it has digits): a `PATH-old`
    // left by hand sorts after every date, but is no rotation of ours. Numbered names differ in
    // width (`PATH.10` before `PATH.9`) and are taken as they are.
    let shape = |p: &Path| -> String {
        let n = p.file_name().and_then(|f| f.to_str()).unwrap_or_default();
        n.chars()
            .map(|c| if c.is_ascii_digit() { '9' } else { c })
            .collect()
    };
    for (opened, same_shape) in [(numbered, false), (dated, true)] {
        let Some(ours) = opened.iter().position(|(_, m, _)| identity(m) == id) else {
            continue;
        };
        let our_shape = shape(&opened[ours].2);
        return opened
            .into_iter()
            .skip(ours + 1)
            .filter(|(_, m, p)| identity(m) != current && (!same_shape || shape(p) == our_shape))
            .collect();
    }
    Vec::new()
}

/// Did no rotation run while files beside `path` were opened one by one? `held`: each name
/// opened and the file it held then (None: it could not be opened). Every rename changes the
/// file under its source or its target name, so the scan stands when every name was opened and
/// still holds that file, and `path`'s siblings are still `names`.
fn unmoved<'a>(
    path: &Path,
    names: &[PathBuf],
    held: impl IntoIterator<Item = (&'a Path, Option<(u64, u64)>)>,
) -> bool {
    held.into_iter()
        .all(|(p, was)| was.is_some() && std::fs::metadata(p).ok().map(|m| identity(&m)) == was)
        && siblings(path) == names
}

/// The rotated file with identity `id`. A rotation running meanwhile can move it from a name
/// not opened yet to one already opened, so a miss counts only when the names did not change
/// while they were opened (see [`rotated_after_with`]).
fn find_by_identity(path: &Path, id: (u64, u64)) -> Option<(File, std::fs::Metadata, PathBuf)> {
    for _ in 0..ROTATED_SCANS {
        let names = siblings(path);
        // What each name held when it was opened (None: it could not be).
        let mut seen: Vec<Option<(u64, u64)>> = Vec::with_capacity(names.len());
        for p in &names {
            let got = File::open(p).and_then(|f| {
                let m = f.metadata()?;
                Ok((f, m))
            });
            match got {
                Ok((f, m)) if identity(&m) == id => return Some((f, m, p.clone())),
                Ok((_, m)) => seen.push(Some(identity(&m))),
                Err(_) => seen.push(None),
            }
        }
        let held = names.iter().zip(&seen).map(|(p, was)| (p.as_path(), *was));
        if unmoved(path, &names, held) {
            return None;
        }
    }
    None
}

/// The copy made by copytruncate of the file read to `offset` (complete lines; `partial` more
/// bytes of the next one): a sibling at least `len` bytes long that holds the line with `print`
/// ending at `offset` (or, before the first line ended, starts with `partial`). None when no
/// sibling does: the file was emptied by other means, and the rotated files beside it are older.
fn find_copy(
    path: &Path,
    offset: u64,
    len: u64,
    print: Option<LinePrint>,
    partial: &[u8],
) -> Option<(File, std::fs::Metadata, PathBuf)> {
    use std::os::unix::fs::FileExt;
    siblings(path).into_iter().find_map(|p| {
        let f = File::open(&p).ok()?;
        let m = f.metadata().ok()?;
        let same = match print {
            Some(print) => print.matches(&f, offset),
            None if offset == 0 && !partial.is_empty() => {
                let mut start = vec![0u8; partial.len()];
                f.read_exact_at(&mut start, 0).is_ok() && start == partial
            }
            None => false,
        };
        (m.len() >= len && same).then_some((f, m, p))
    })
}

/// Where following a file of `len` bytes starts: after its last complete line (an incomplete one
/// is being written, and is read whole when it is done), with that line's print when the line
/// is in the 64 KiB block its newline was found in. Looks back block by block, at most
/// [`MAX_LINE`] past the end (a line longer is cut anyway): a file holding one incomplete line
/// is read from its start. Past that the start is the end of the file, in the middle of a line
/// (`true`): the rest of that line is not a line of its own.
fn end_of_last_line(f: &File, len: u64) -> io::Result<(u64, Option<LinePrint>, bool)> {
    use std::os::unix::fs::FileExt;
    const BLOCK: u64 = 1 << 16;
    let mut end = len;
    let mut block = Vec::new();
    loop {
        let base = end.saturating_sub(BLOCK);
        block.resize((end - base) as usize, 0);
        f.read_exact_at(&mut block, base)?;
        if let Some(nl) = memchr::memrchr(b'\n', &block) {
            let start = match memchr::memrchr(b'\n', &block[..nl]) {
                Some(prev) => prev + 1,
                None if base == 0 => 0,
                None => return Ok((base + nl as u64 + 1, None, false)),
            };
            let print = LinePrint::of(&block[start..nl], (nl + 1 - start) as u64);
            return Ok((base + nl as u64 + 1, Some(print), false));
        }
        if base == 0 {
            return Ok((0, None, false));
        }
        if len - base > MAX_LINE as u64 {
            return Ok((len, None, true));
        }
        end = base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::sync::{mpsc, watch};

    /// A reader driven by hand: each `step` is one turn of `run`'s loop.
    struct Rig {
        _dir: tempfile::TempDir,
        path: PathBuf,
        rx: mpsc::Receiver<Batch>,
        reader: Reader,
        mode: Mode,
        /// The last position handed over.
        position: Option<Position>,
        /// The file names lines were shown with.
        shown: std::collections::BTreeSet<String>,
    }

    impl Rig {
        /// `audit.log` holding `content`, followed (or replayed) from `position`.
        fn new(content: &str, position: Option<Position>, mode: Mode) -> Rig {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.log");
            std::fs::write(&path, content).unwrap();
            Rig::open(dir, path, position, mode)
        }

        fn open(
            dir: tempfile::TempDir,
            path: PathBuf,
            position: Option<Position>,
            mode: Mode,
        ) -> Rig {
            let spec = TailSpec {
                name: "audit_log",
                path: path.clone(),
                position,
                checkpointed: true,
                whole: false,
            };
            let (tx, rx) = mpsc::channel(1024);
            let mut reader = Reader::new(&spec, tx);
            reader.open_initial(&spec, mode).unwrap();
            Rig {
                _dir: dir,
                path,
                rx,
                reader,
                mode,
                position: None,
                shown: Default::default(),
            }
        }

        /// The reader stopped and started again from its last position, in the same directory.
        fn restart(self, mode: Mode) -> Rig {
            let position = self.position.clone();
            Rig::open(self._dir, self.path, position, mode)
        }

        fn sibling(&self, name: &str) -> PathBuf {
            self.path.with_file_name(name)
        }

        /// logrotate's `copytruncate`: the file copied to `audit.log.1`, then emptied in place.
        fn copytruncate(&self) {
            std::fs::copy(&self.path, self.sibling("audit.log.1")).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&self.path)
                .unwrap()
                .set_len(0)
                .unwrap();
        }

        /// Rotation by rename and create: the file goes to the sibling `to` (returned), a new
        /// one holding `next` takes its place.
        fn rotate(&self, to: &str, next: &str) -> PathBuf {
            let old = self.sibling(to);
            std::fs::rename(&self.path, &old).unwrap();
            std::fs::write(&self.path, next).unwrap();
            old
        }

        fn append(&self, text: &str) {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&self.path)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        }

        /// Read what there is, follow rotations, hand it over; the lines handed over.
        fn step(&mut self) -> Vec<String> {
            while self.reader.turn(self.mode) {}
            let mut lines = Vec::new();
            while let Ok(batch) = self.rx.try_recv() {
                for item in batch {
                    match item {
                        SourceItem::FileLines(chunk) => {
                            self.shown.insert(chunk.shown.to_string());
                            for (text, _, position) in chunk.iter() {
                                lines.push(text.to_string());
                                // As the pipeline: a line without a position keeps the last.
                                if position.is_some() {
                                    self.position = position;
                                }
                            }
                        }
                        SourceItem::Position(p) => self.position = Some(p),
                        _ => {}
                    }
                }
            }
            lines
        }
    }

    fn numbered(tag: &str, range: std::ops::Range<u32>) -> String {
        range.map(|i| format!("{tag} {i}\n")).collect()
    }

    fn lines(tag: &str, range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| format!("{tag} {i}")).collect()
    }

    #[test]
    fn lines_appended_to_the_renamed_file_after_rotation_are_read_until_it_is_quiet() {
        let mut rig = Rig::new("", None, Mode::Follow);
        rig.append(&numbered("a", 0..2));
        rig.append("a 2 half");
        assert_eq!(rig.step(), lines("a", 0..2));
        // Renamed; the writer (rsyslog before its HUP) goes on with the old file.
        let old = rig.rotate("audit.log.1", &numbered("b", 0..1));
        assert_eq!(rig.step(), lines("b", 0..1), "the held line was cut short");
        let append_old = |text: &str| {
            let mut f = std::fs::OpenOptions::new().append(true).open(&old).unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        append_old(" done\n");
        append_old(&numbered("a", 3..5));
        let mut want = vec!["a 2 half done".to_string()];
        want.extend(lines("a", 3..5));
        assert_eq!(rig.step(), want);
        // Once quiet, a last line without newline is taken as it is, and the file let go.
        append_old("a 5 torn");
        rig.reader.rotated_quiet = Duration::ZERO;
        let mut got = rig.step();
        assert!(rig.reader.rotated.is_none());
        rig.append(&numbered("b", 1..2));
        got.extend(rig.step());
        assert_eq!(got, ["a 5 torn", "b 1"]);
        // Events name the file each line came from.
        assert!(
            rig.shown.iter().any(|s| s.ends_with("audit.log.1")),
            "{:?}",
            rig.shown
        );
    }

    /// Regression: lines appended to the renamed file after the new one had been read carried
    /// the renamed file's position, so the last position handed over named it: a restart
    /// resumed it and read the new file again from its start (every line delivered twice).
    #[test]
    fn a_restart_after_late_lines_in_the_renamed_file_does_not_read_the_new_file_again() {
        let mut rig = Rig::new("", None, Mode::Follow);
        rig.append(&numbered("a", 0..2));
        assert_eq!(rig.step(), lines("a", 0..2));
        let old = rig.rotate("audit.log.1", &numbered("b", 0..3));
        assert_eq!(rig.step(), lines("b", 0..3));
        let mut f = std::fs::OpenOptions::new().append(true).open(&old).unwrap();
        f.write_all(numbered("a", 2..3).as_bytes()).unwrap();
        assert_eq!(rig.step(), lines("a", 2..3));
        let mut rig = rig.restart(Mode::Follow);
        assert!(rig.step().is_empty(), "read again after the restart");
        rig.append(&numbered("b", 3..4));
        assert_eq!(rig.step(), lines("b", 3..4));
    }

    #[test]
    fn a_file_emptied_by_hand_is_read_from_its_start_not_from_an_older_rotated_file() {
        let mut rig = Rig::new(&numbered("new", 0..5), None, Mode::Follow);
        assert!(rig.step().is_empty(), "a first start begins at the end");
        rig.append(&numbered("new", 5..10));
        assert_eq!(rig.step(), lines("new", 5..10));
        // An older rotated file, long enough to pass for a copy of what was read.
        std::fs::write(rig.sibling("audit.log.1"), numbered("old", 0..40)).unwrap();
        std::fs::write(&rig.path, "").unwrap();
        assert!(rig.step().is_empty(), "old lines read again");
        rig.append(&numbered("after", 0..2));
        assert_eq!(rig.step(), lines("after", 0..2));
    }

    #[test]
    fn copytruncate_reads_the_rest_from_the_copy_then_the_file_from_its_start() {
        let mut rig = Rig::new("", None, Mode::Follow);
        rig.append(&numbered("a", 0..5));
        assert_eq!(rig.step(), lines("a", 0..5));
        // Written, then copied and truncated before the reader saw it; a partial line too.
        rig.append(&numbered("a", 5..8));
        rig.append("a 8 with");
        std::fs::write(rig.sibling("audit.log.2"), numbered("older", 0..50)).unwrap();
        rig.copytruncate();
        rig.append(&numbered("b", 0..2));
        let mut want = lines("a", 5..8);
        want.push("a 8 with".into());
        want.extend(lines("b", 0..2));
        assert_eq!(rig.step(), want);
    }

    #[test]
    fn a_line_longer_than_the_cap_is_cut_and_counted_whole_in_the_offset() {
        let long = format!("long {}\n", "x".repeat(MAX_LINE + 300_000));
        let text = format!("{}{long}{}", numbered("a", 0..2), numbered("b", 0..2));
        let mut rig = Rig::new(&text, None, Mode::Replay);
        let got = rig.step();
        assert_eq!(got.len(), 5);
        assert_eq!(got[2].len(), MAX_LINE);
        assert_eq!(got[3..], lines("b", 0..2));
        let Some(Position::File { offset, line, .. }) = rig.position.clone() else {
            panic!("no position: {:?}", rig.position);
        };
        assert_eq!((offset, line), (text.len() as u64, 5));
        // Resumed there, nothing is read twice.
        let mut rig = rig.restart(Mode::Replay);
        rig.append(&numbered("c", 0..1));
        assert_eq!(rig.step(), lines("c", 0..1));
    }

    #[test]
    fn a_file_written_anew_under_the_same_inode_is_not_resumed_mid_way() {
        let mut rig = Rig::new(&numbered("first", 0..10), None, Mode::Replay);
        assert_eq!(rig.step().len(), 10);
        // Emptied and written again past the saved offset while armorwatch was stopped.
        let text = numbered("second", 0..30);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&rig.path)
            .unwrap()
            .set_len(0)
            .unwrap();
        rig.append(&text);
        let mut rig = rig.restart(Mode::Replay);
        assert_eq!(rig.step(), lines("second", 0..30));
    }

    #[test]
    fn copytruncate_while_stopped_finishes_the_copy_first() {
        let mut rig = Rig::new(&numbered("a", 0..5), None, Mode::Replay);
        assert_eq!(rig.step().len(), 5);
        rig.append(&numbered("a", 5..8));
        std::fs::copy(&rig.path, rig.sibling("audit.log.1")).unwrap();
        std::fs::write(&rig.path, "").unwrap();
        rig.append(&numbered("b", 0..2));
        let mut rig = rig.restart(Mode::Replay);
        let mut want = lines("a", 5..8);
        want.extend(lines("b", 0..2));
        assert_eq!(rig.step(), want);
    }

    #[test]
    fn a_file_rotated_to_a_dated_name_while_stopped_is_finished_first() {
        let mut rig = Rig::new(&numbered("a", 0..5), None, Mode::Replay);
        assert_eq!(rig.step().len(), 5);
        rig.append(&numbered("a", 5..7));
        rig.rotate("audit.log-20261202", &numbered("b", 0..2));
        let mut rig = rig.restart(Mode::Replay);
        let mut want = lines("a", 5..7);
        want.extend(lines("b", 0..2));
        assert_eq!(rig.step(), want);
    }

    #[test]
    fn a_first_start_hands_over_its_position_so_the_next_start_reads_what_came_between() {
        let mut rig = Rig::new(&numbered("old", 0..5), None, Mode::Follow);
        assert!(rig.step().is_empty());
        assert!(rig.position.is_some(), "no position handed over");
        // Written while stopped, before the first run read anything.
        rig.append(&numbered("between", 0..3));
        let mut rig = rig.restart(Mode::Follow);
        assert_eq!(rig.step(), lines("between", 0..3));
    }

    #[test]
    fn a_first_start_waits_for_the_end_of_an_incomplete_last_line() {
        let mut rig = Rig::new(
            &format!("{}half", numbered("old", 0..2)),
            None,
            Mode::Follow,
        );
        assert!(rig.step().is_empty());
        rig.append(" done\n");
        assert_eq!(rig.step(), ["half done"]);
    }

    /// A first start on a file whose last [`MAX_LINE`] bytes hold no newline starts at its end,
    /// in the middle of a line. The rest of that line was read as a line of its own: a fragment
    /// that anyone writing the line could make look like a record. Neither does a restart
    /// before the line ended read it: no position is handed over in the middle of a line.
    #[test]
    fn a_first_start_in_the_middle_of_a_line_drops_its_rest() {
        let junk = "x".repeat(MAX_LINE + (1 << 17));
        let mut rig = Rig::new(
            &format!("{}{junk}", numbered("old", 0..2)),
            None,
            Mode::Follow,
        );
        assert!(rig.step().is_empty());
        assert!(rig.position.is_none(), "a position in the middle of a line");
        rig.append(" type=AVC");
        // Stopped and started again before the line ended.
        let mut rig = rig.restart(Mode::Follow);
        assert!(rig.step().is_empty());
        rig.append(" forged\nnext\n");
        assert_eq!(rig.step(), ["next"]);
        let Some(Position::File { offset, .. }) = rig.position.clone() else {
            panic!("no position");
        };
        assert_eq!(offset, std::fs::metadata(&rig.path).unwrap().len());
    }

    #[test]
    fn a_checkpoint_for_another_path_counts_as_none() {
        let mut rig = Rig::new(&numbered("a", 0..3), None, Mode::Replay);
        assert_eq!(rig.step().len(), 3);
        let Some(Position::File {
            dev,
            ino,
            offset,
            line,
            last_line,
            ..
        }) = rig.position.clone()
        else {
            panic!("no position");
        };
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("audit.log");
        std::fs::write(&other, numbered("other", 0..4)).unwrap();
        let saved = Position::File {
            path: Arc::from(rig.path.as_path()),
            dev,
            ino,
            offset,
            line,
            last_line,
        };
        let mut follow = Rig::open(dir, other, Some(saved), Mode::Follow);
        assert!(follow.step().is_empty(), "history of the new path read");
    }

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

    /// A first start on a file holding one incomplete line (auditd writing its first record
    /// just after a rotation) reads that line whole once it ends; it began reading at the end,
    /// in the middle of the line, and the record was lost. A longer file whose last 64 KiB hold
    /// no newline starts after the newline before them.
    #[test]
    fn a_first_start_inside_the_only_line_reads_it_whole() {
        let mut rig = Rig::new("type=AVC msg=audit(1.0:1): apparmor=", None, Mode::Follow);
        assert!(rig.step().is_empty());
        rig.append("\"DENIED\"\n");
        assert_eq!(
            rig.step(),
            ["type=AVC msg=audit(1.0:1): apparmor=\"DENIED\""]
        );

        let long = "y".repeat(100_000);
        let mut rig = Rig::new(&format!("old\n{long}"), None, Mode::Follow);
        assert!(rig.step().is_empty());
        rig.append("z\n");
        assert_eq!(rig.step(), [format!("{long}z")]);
    }

    /// copytruncate, and the writer appends more than had been read before the reader looks:
    /// the file is not shorter than the position, yet what is there is new. The rest of the old
    /// text is read from the copy and the new file from its start; it was read from the old
    /// position on (a torn line, the copy's rest and the new start lost).
    #[test]
    fn copytruncate_regrown_past_the_position_is_noticed() {
        let mut rig = Rig::new("", None, Mode::Follow);
        rig.append(&numbered("a", 0..3));
        assert_eq!(rig.step(), lines("a", 0..3));
        rig.append(&numbered("a", 3..5));
        rig.copytruncate();
        rig.append(&numbered("bbbbbbbbbbbb", 0..10));
        let mut want = lines("a", 3..5);
        want.extend(lines("bbbbbbbbbbbb", 0..10));
        assert_eq!(rig.step(), want);
    }

    /// copytruncate while the file held only the start of its first line, and the writer
    /// appends past it before the reader looks: the file was not taken as truncated (with no
    /// complete line read there was no print to check), so the held start was joined to the
    /// new file's text from that byte on (one garbled line, the new file's start lost).
    #[test]
    fn copytruncate_before_the_first_line_ended_is_noticed() {
        let mut rig = Rig::new("", None, Mode::Follow);
        rig.append("a 0 half");
        assert!(rig.step().is_empty());
        rig.copytruncate();
        rig.append(&numbered("bbbbbbbbbbbb", 0..2));
        let mut want = vec!["a 0 half".to_string()];
        want.extend(lines("bbbbbbbbbbbb", 0..2));
        assert_eq!(rig.step(), want);
    }

    /// Two dated rotations (logrotate's `dateext`) while stopped: the file of the checkpoint is
    /// finished, then the one rotated after it, then the current one. The middle file was
    /// skipped (only `PATH.N` names counted as rotated after ours).
    #[test]
    fn two_dated_rotations_while_stopped_read_the_middle_file() {
        let mut rig = Rig::new(&numbered("a", 0..5), None, Mode::Follow);
        assert!(rig.step().is_empty());
        rig.append(&numbered("a", 5..7));
        assert_eq!(rig.step(), lines("a", 5..7));
        rig.append(&numbered("a", 7..9));
        rig.rotate("audit.log-20261201", &numbered("b", 0..3));
        rig.rotate("audit.log-20261202", &numbered("c", 0..2));
        std::fs::write(rig.sibling("audit.log-old"), numbered("stale", 0..2)).unwrap();
        let mut rig = rig.restart(Mode::Follow);
        let mut want = lines("a", 7..9);
        want.extend(lines("b", 0..3));
        want.extend(lines("c", 0..2));
        assert_eq!(rig.step(), want);
    }

    /// Numbered rotation past nine files: with the checkpoint's file at `PATH.10`, the files
    /// rotated after it are `PATH.9` … `PATH.1`, though their names are shorter (the dated
    /// names' shape check must not apply to them).
    #[test]
    fn a_reader_at_path_10_reads_path_9_to_path_1() {
        let mut rig = Rig::new(&numbered("a", 0..2), None, Mode::Follow);
        assert!(rig.step().is_empty());
        rig.append(&numbered("a", 2..3));
        assert_eq!(rig.step(), lines("a", 2..3));
        rig.append(&numbered("a", 3..4));
        // Ten rotations while stopped: ours ends as PATH.10, file k as PATH.(10-k).
        let mut want = lines("a", 3..4);
        for k in 0..10u32 {
            for n in (1..=k).rev() {
                let from = rig.sibling(&format!("audit.log.{n}"));
                std::fs::rename(&from, rig.sibling(&format!("audit.log.{}", n + 1))).unwrap();
            }
            let tag = format!("f{k}");
            rig.rotate("audit.log.1", &numbered(&tag, 0..1));
            want.extend(lines(&tag, 0..1));
        }
        let mut rig = rig.restart(Mode::Follow);
        assert_eq!(rig.step(), want);
    }

    /// A rotation that runs while the rotated files are opened one by one: ours (`.2`) moves to
    /// `.3` after `.3` was opened and the file after it to `.2` before `.2` is, so one scan
    /// saw ours under no name and gave nothing, and the reader skipped the file after it as
    /// renamed by this rotation (1 000 records lost in a robustness run).
    #[test]
    fn a_rotation_while_the_rotated_files_are_opened_loses_none_of_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let log = p("audit.log");
        for (name, text) in [
            ("audit.log.3", "w\n"),
            ("audit.log.2", "x\n"),
            ("audit.log.1", "y\n"),
            ("audit.log", "z\n"),
        ] {
            std::fs::write(p(name), text).unwrap();
        }
        let id = |n: &str| identity(&std::fs::metadata(p(n)).unwrap());
        let (ours, current) = (id("audit.log.2"), id("audit.log"));
        let mut rotated = false;
        let newer = rotated_after_with(&log, ours, current, &mut |opened| {
            if !rotated && opened.ends_with("audit.log.3") {
                rotated = true;
                for k in (1..=3).rev() {
                    std::fs::rename(
                        p(&format!("audit.log.{k}")),
                        p(&format!("audit.log.{}", k + 1)),
                    )
                    .unwrap();
                }
                std::fs::rename(&log, p("audit.log.1")).unwrap();
                std::fs::write(&log, "").unwrap();
            }
        });
        assert!(rotated);
        let texts: Vec<String> = newer
            .iter()
            .map(|(_, _, path)| std::fs::read_to_string(path).unwrap())
            .collect();
        // The file after ours (now `.2`); the one that was current is left to the caller.
        assert_eq!(texts, ["y\n"]);
    }
}

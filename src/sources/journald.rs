//! The journal through sd-journal (the `systemd` crate): entries of `_TRANSPORT=kernel` and
//! `_TRANSPORT=audit`. The binding's `Journal` is not `Send`, so it lives on its own OS thread
//! and hands lines to the async pipeline.
//!
//! `MESSAGE` is parsed, not the `_AUDIT_FIELD_*` copies (journald cuts those at the first space).
//! An audit-transport entry is turned back into an auditd line (`type=1400
//! msg=audit(SEC.MS:SERIAL): …`, the stamp from `_SOURCE_REALTIME_TIMESTAMP` and `_AUDIT_ID`),
//! so the parser assembles SYSCALL/PROCTITLE companions and the stamp matches the kernel
//! transport's copy of the same record for deduplication.
//!
//! Start: from the saved cursor (the entry at the cursor was delivered, so it is skipped when
//! `test_cursor` matches), else from the tail (follow) or the head (replay). sd-journal itself
//! follows rotation, vacuuming and journald restarts; the thread waits in poll(2) on the
//! journal's inotify descriptor and on a pipe closed at the stop signal, as `sd_journal_wait`
//! would but without waking up to look at the stop signal: idle, it does not run at all.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use systemd::journal::{self, Journal, JournalRef};

use super::{SourceError, SourceHandle};
use crate::checkpoint::Position;
use crate::event::Source;
use crate::pipeline::{Batch, BatchSender, CutShort, Mode, SourceItem, SourceLine, StopSignal};

/// Entries per batch.
const BATCH_ENTRIES: usize = 512;
/// A position is handed on at least every this many skipped entries.
const SKIPPED_POSITION_EVERY: usize = 1024;
/// How often a configured directory that is gone is looked for again (it may be created anew).
const MISSING_DIRECTORY_WAIT: Duration = Duration::from_secs(1);

fn open(directory: Option<&PathBuf>) -> Result<Journal, SourceError> {
    let err = |error: std::io::Error| SourceError::Journal {
        directory: directory.cloned(),
        error,
    };
    let mut j = match directory {
        Some(d) => {
            let s = d
                .to_str()
                .ok_or_else(|| err(std::io::Error::other("path is not UTF-8")))?;
            journal::OpenDirectoryOptions::default()
                .open_directory(s)
                .map_err(err)?
        }
        None => journal::OpenOptions::default()
            .system(true)
            .open()
            .map_err(err)?,
    };
    j.set_data_threshold(0).map_err(err)?;
    // Filtering the audit types by match (`_AUDIT_TYPE=1400 OR …`) was measured slower than
    // reading `_AUDIT_TYPE` here: sd_journal_next then bisects one entry array per value.
    j.match_add("_TRANSPORT", "kernel").map_err(err)?;
    j.match_add("_TRANSPORT", "audit").map_err(err)?;

    Ok(j)
}

/// Can the system journal be opened, and does it hold entries we may read (an empty result
/// means journald does not run here, or we lack the permission to see its files)?
pub fn probe() -> Result<(), String> {
    let mut j = open(None).map_err(|e| e.to_string())?;
    j.seek_tail().map_err(|e| e.to_string())?;
    match j.previous() {
        Ok(0) => Err(
            "no kernel or audit entries visible (journald not running, or no permission: \
                      add the user to group systemd-journal or adm)"
                .into(),
        ),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Start reading the journal.
pub fn start(
    directory: Option<PathBuf>,
    position: Option<Position>,
    mode: Mode,
    tx: BatchSender,
    stop: StopSignal,
) -> Result<SourceHandle, SourceError> {
    // Opened here once to report errors before running; the thread opens its own handle
    // because `Journal` cannot be moved across threads.
    drop(open(directory.as_ref())?);
    let resume = match position {
        Some(Position::Journald { cursor }) => Some(Resume::Cursor(cursor)),
        Some(Position::JournaldHead) => Some(Resume::Head),
        _ => None,
    };
    let stop_pipe = stop_pipe(&stop).map_err(|error| SourceError::Journal {
        directory: directory.clone(),
        error,
    })?;
    let thread = std::thread::Builder::new()
        .name("armorwatch-journald".into())
        .spawn(move || {
            let mut resume = resume;
            loop {
                let mut j = match open(directory.as_ref()) {
                    Ok(j) => j,
                    Err(e) => {
                        super::read_error(super::ReadErrorSource::Journald, format_args!("{e}"));
                        return;
                    }
                };
                let woken = Wake {
                    stop: &stop,
                    pipe: stop_pipe.as_fd(),
                };
                match follow(&mut j, directory.as_deref(), resume, mode, &tx, woken) {
                    Ok(Ended::Done) => return,
                    Ok(Ended::Replaced) => {
                        crate::log_warn!(
                            "journald: {} was replaced by another directory; reading it from its start",
                            directory.as_deref().unwrap_or(Path::new("")).display()
                        );
                        resume = Some(Resume::Head);
                    }
                    Err(e) => {
                        super::read_error(super::ReadErrorSource::Journald, format_args!("journald: {e}"));
                        return;
                    }
                }
            }
        })
        .map_err(|error| SourceError::Journal {
            directory: None,
            error,
        })?;
    Ok(SourceHandle::Thread(thread))
}

/// The read end of a pipe whose write end is closed when `stop` turns true (or its sender is
/// gone): poll(2) then sees it hung up.
fn stop_pipe(stop: &StopSignal) -> std::io::Result<OwnedFd> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    if !super::wake_on_stop(stop, move || drop(write)) {
        return Err(std::io::Error::other(
            "no async runtime to watch the stop signal on",
        ));
    }
    Ok(read)
}

/// What ends a wait besides the journal: the stop signal and the pipe closed with it.
#[derive(Clone, Copy)]
struct Wake<'a> {
    stop: &'a StopSignal,
    pipe: BorrowedFd<'a>,
}

/// Wait until the journal changes (and process the change, as `sd_journal_wait` does), the
/// source is to stop, `dir_events` is readable (the configured directory's parent changed), or
/// `limit` is over. True when stopping.
#[allow(unsafe_code)]
fn wait(
    j: &mut JournalRef,
    wake: Wake<'_>,
    dir_events: Option<BorrowedFd<'_>>,
    limit: Option<Duration>,
) -> std::io::Result<bool> {
    use foreign_types::ForeignTypeRef;
    use rustix::event::{PollFd, PollFlags, Timespec, poll};

    let fd = j.fd()?;
    // SAFETY: the journal handle owns this descriptor (sd_journal_get_fd's inotify fd) and keeps
    // it open until the handle is closed; `j` is borrowed for the whole of this function.
    let journal_fd = unsafe { BorrowedFd::borrow_raw(fd) };
    // SAFETY: `j.as_ptr()` is a valid `sd_journal *` for the lifetime of `j`; the calls only
    // read the handle's state (sd_journal_get_events returns POLLIN; sd_journal_get_timeout
    // writes the deadline, CLOCK_MONOTONIC µs, when the journal needs rechecking by time, e.g.
    // files on a network filesystem, which inotify does not report).
    let (events, deadline) = unsafe {
        let events = libsystemd_sys::journal::sd_journal_get_events(j.as_ptr());
        let mut deadline = u64::MAX;
        let r = libsystemd_sys::journal::sd_journal_get_timeout(j.as_ptr(), &mut deadline);
        if r < 0 {
            deadline = u64::MAX;
        }
        (events, deadline)
    };
    let events = PollFlags::from_bits_truncate(u16::try_from(events.max(0)).unwrap_or(0));
    let journal_timeout = (deadline != u64::MAX).then(|| {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let now_us = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
        Duration::from_micros(deadline.saturating_sub(now_us))
    });
    let timeout = journal_timeout
        .into_iter()
        .chain(limit)
        .min()
        .map(|t| Timespec {
            tv_sec: t.as_secs() as i64,
            tv_nsec: i64::from(t.subsec_nanos()),
        });
    let mut fds = vec![
        PollFd::from_borrowed_fd(journal_fd, events),
        PollFd::from_borrowed_fd(wake.pipe, PollFlags::IN),
    ];
    fds.extend(dir_events.map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN)));
    match poll(&mut fds, timeout.as_ref()) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(e) => return Err(e.into()),
    }
    if !fds[1].revents().is_empty() || *wake.stop.borrow() {
        return Ok(true);
    }
    j.process()?;
    Ok(false)
}

/// Where a saved position says to go on.
#[derive(Debug)]
enum Resume {
    /// After the entry with this cursor.
    Cursor(String),
    /// At the head: the journal had no entry to read when the source first started.
    Head,
}

/// Why [`follow`] returned.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Stopped, or the end of a replay.
    Done,
    /// The configured directory is another one now (deleted and created again): sd-journal
    /// watches the old one, which gets nothing more, so the source would wait forever.
    Replaced,
}

/// A directory's device and inode.
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// The configured directory as it was when reading began.
///
/// - Held open: a deleted directory's inode number is free for the next one made (ext4 gives it
///   to the very next `mkdir`), so its number alone would not tell the new directory from the
///   old one. Held open, the old inode stays in use and the new one gets another number.
/// - Its parent is watched for names created, deleted and moved: sd-journal's own watch is on
///   the directory, which says nothing of a new directory made under the same name (and, held
///   open here, not even that the old one was deleted). Found by CI: the test of a replaced
///   directory waited forever in 1 run of 8.
struct Watched<'a> {
    path: &'a Path,
    _held: OwnedFd,
    id: (u64, u64),
    /// inotify on the parent directory (non-blocking), drained at each wake. None where the
    /// parent cannot be watched (not readable): a replacement is then noticed at the next wake.
    parent: Option<OwnedFd>,
}

impl<'a> Watched<'a> {
    fn new(path: &'a Path) -> std::io::Result<Option<Watched<'a>>> {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        use rustix::fs::{Mode, OFlags};
        let parent_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let parent = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK)?;
        let parent = match inotify::add_watch(
            &parent,
            parent_dir,
            WatchFlags::CREATE
                | WatchFlags::DELETE
                | WatchFlags::MOVED_FROM
                | WatchFlags::MOVED_TO
                | WatchFlags::ONLYDIR,
        ) {
            Ok(_) => Some(parent),
            Err(e) => {
                crate::log_warn!(
                    "journald: cannot watch {} ({e}); a replaced {} is noticed only when the journal next changes",
                    parent_dir.display(),
                    path.display()
                );
                None
            }
        };
        // Watched first, then opened: a replacement from here on is seen by one or the other.
        let Ok(held) = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return Ok(None);
        };
        let st = rustix::fs::fstat(&held)?;
        Ok(Some(Watched {
            path,
            _held: held,
            id: (st.st_dev, st.st_ino),
            parent,
        }))
    }

    /// Read and drop the parent's pending events: what they mean is read from the directory.
    fn drain(&self) {
        let Some(parent) = &self.parent else {
            return;
        };
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut events = rustix::fs::inotify::Reader::new(parent, &mut buf);
        while events.next().is_ok() {}
    }
}

fn follow(
    j: &mut JournalRef,
    directory: Option<&Path>,
    resume: Option<Resume>,
    mode: Mode,
    tx: &BatchSender,
    wake: Wake<'_>,
) -> std::io::Result<Ended> {
    let stop = wake.stop;
    // The directory read, to notice it replaced (a missing one may come back: waited for).
    let watched = match directory {
        Some(d) if mode == Mode::Follow => Watched::new(d)?,
        _ => None,
    };
    // The journal's change notification is set up before anything is read, so no change made
    // from here on is missed by the first wait.
    if mode == Mode::Follow {
        j.fd()?;
    }
    let mut batch: Batch = Vec::new();
    // The entry the journal is on has not been delivered: read it before moving on.
    let mut on_undelivered = false;
    let (cursor, head) = match resume {
        Some(Resume::Cursor(c)) => (Some(c), false),
        Some(Resume::Head) => (None, true),
        None => (None, false),
    };
    // A cursor sd-journal cannot read (a state file edited or damaged) is no position: ending
    // here would end the daemon, and every restart after it, on the same cursor.
    let cursor = cursor.filter(|c| match j.seek_cursor(c.as_str()) {
        Ok(()) => true,
        Err(e) => {
            let from = match mode {
                Mode::Follow => "following from the end of the journal",
                Mode::Replay => "reading the journal from its start",
            };
            crate::log_warn!("journald: the saved position {c:?} is unusable ({e}); {from}");
            false
        }
    });
    match (&cursor, head) {
        (Some(c), _) => {
            // The entry at the cursor was delivered already; when it is gone (vacuumed, or the
            // cursor is another journal's), the entry the seek found is the first not delivered.
            if j.next()? > 0 && !j.test_cursor(c.as_str())? {
                crate::log_warn!(
                    "journald: the saved position is no longer in the journal (vacuumed, or another journal's); going on from the first entry after it"
                );
                on_undelivered = true;
            }
        }
        // Nothing was there to read at the first start: every entry there is now is new (the
        // position stays until an entry is read). Not the time of that start: a collector's
        // entries carry their machines' clocks, which may be behind this one.
        (None, true) => {
            j.seek_head()?;
            batch.push(SourceItem::Position(Position::JournaldHead));
        }
        (None, false) if mode == Mode::Follow => {
            j.seek_tail()?;
            // A first start begins at the end and hands that position over at once, so a
            // restart before anything new was read resumes there, not at the end again; on a
            // journal without any kernel or audit entry, its head.
            let position = if j.previous()? > 0 {
                Position::Journald {
                    cursor: j.cursor()?,
                }
            } else {
                j.seek_tail()?;
                Position::JournaldHead
            };
            batch.push(SourceItem::Position(position));
        }
        (None, false) => j.seek_head()?,
    }
    // Entries passed over since the last position handed on; their cursor is fetched lazily
    // (formatting a cursor costs more than reading most entries).
    let mut skipped: usize = 0;
    let mut cut = CutShort::default();
    loop {
        if *stop.borrow() {
            break;
        }
        let found = std::mem::take(&mut on_undelivered) || j.next()? > 0;
        if !found {
            if skipped > 0 {
                // After a `next` that found nothing, the current entry is still the last one.
                batch.push(SourceItem::Position(Position::Journald {
                    cursor: j.cursor()?,
                }));
                skipped = 0;
            }
            if cut.should_send(&batch) && tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                return Ok(Ended::Done);
            }
            if mode == Mode::Replay {
                break;
            }
            // The configured directory is checked before each wait, not after it: one deleted
            // and created again between two checks would otherwise be waited on forever (the
            // old directory's watch gets nothing more). Gone, it is looked for again now and
            // then; otherwise the journal's notification (or the stop pipe) wakes this thread.
            let mut limit = None;
            if let Some(watched) = &watched {
                watched.drain();
                match dir_identity(watched.path) {
                    None => limit = Some(MISSING_DIRECTORY_WAIT),
                    Some(now) if now != watched.id => {
                        if !batch.is_empty()
                            && tx.blocking_send(std::mem::take(&mut batch)).is_err()
                        {
                            return Ok(Ended::Done);
                        }
                        return Ok(Ended::Replaced);
                    }
                    Some(_) => {}
                }
            }
            if wait(
                j,
                wake,
                watched
                    .as_ref()
                    .and_then(|w| w.parent.as_ref())
                    .map(|p| p.as_fd()),
                limit,
            )? {
                break;
            }
            continue;
        }
        if entry_lines(j, &mut batch)? {
            skipped = 0;
        } else {
            skipped += 1;
            if skipped >= SKIPPED_POSITION_EVERY {
                batch.push(SourceItem::Position(Position::Journald {
                    cursor: j.cursor()?,
                }));
                skipped = 0;
            }
        }
        if batch.len() >= BATCH_ENTRIES {
            batch.push(SourceItem::MoreFollows);
            if cut.should_send(&batch) && tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                return Ok(Ended::Done);
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(batch);
    }
    Ok(Ended::Done)
}

/// Audit record types worth parsing: AppArmor records (AVC, USER_AVC, the legacy 1500–1507)
/// and the companions the parser attaches (SYSCALL, PATH, CWD, EOE, PROCTITLE).
const WANTED_AUDIT_TYPES: [u32; 15] = [
    1107, 1300, 1302, 1307, 1320, 1327, 1400, 1500, 1501, 1502, 1503, 1504, 1505, 1506, 1507,
];

fn audit_type_wanted(t: u32) -> bool {
    // A linear scan of 15 numbers; cheaper than anything the journal could do for us.
    WANTED_AUDIT_TYPES.contains(&t)
}

/// Companion records: parsed only to enrich an AppArmor record, so they need no position of
/// their own (the AppArmor record's position covers them; re-reading one after a crash is
/// harmless) and no cursor, which is costly to format.
fn audit_type_companion(t: u32) -> bool {
    matches!(t, 1300 | 1302 | 1307 | 1320 | 1327)
}

/// Kernel messages worth parsing: audit records, `kauditd_printk_skb` and `audit_lost` notices,
/// and stamp-less `apparmor=` text.
fn kernel_message_wanted(message: &[u8]) -> bool {
    memchr::memmem::find(message, b"audit").is_some()
        || memchr::memmem::find(message, b"apparmor").is_some()
}

fn number<T: std::str::FromStr>(v: &[u8]) -> Option<T> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The current entry as parser lines; false when it holds nothing to parse or its lines carry
/// no position (the caller then fetches one lazily).
fn entry_lines(j: &mut JournalRef, batch: &mut Batch) -> std::io::Result<bool> {
    // One pass over the entry's fields (each `get_data` would scan them again).
    let mut transport: Vec<u8> = Vec::new();
    let mut message: Vec<u8> = Vec::new();
    let mut audit_type: Option<u32> = None;
    let mut audit_id: Option<u64> = None;
    let mut source_realtime: Option<u64> = None;
    j.restart_data();
    while let Some(field) = j.enumerate_data()? {
        let Some(value) = field.value() else { continue };
        match field.name() {
            b"_TRANSPORT" => transport = value.to_vec(),
            b"MESSAGE" => message = value.to_vec(),
            b"_AUDIT_TYPE" => audit_type = number(value),
            b"_AUDIT_ID" => audit_id = number(value),
            b"_SOURCE_REALTIME_TIMESTAMP" => source_realtime = number(value),
            _ => {}
        }
    }
    let positioned;
    let text = match transport.as_slice() {
        b"audit" => {
            let (Some(t), Some(serial)) = (audit_type, audit_id) else {
                return Ok(false);
            };
            if !audit_type_wanted(t) {
                return Ok(false);
            }
            let usec = match source_realtime {
                Some(u) => u,
                None => j.timestamp_usec()?,
            };
            positioned = !audit_type_companion(t);
            audit_line(&String::from_utf8_lossy(&message), t, serial, usec)
        }
        b"kernel" if kernel_message_wanted(&message) => {
            // Kernel-transport companions (`audit: type=1300 …`) likewise.
            positioned = memchr::memmem::find(&message, b"apparmor").is_some()
                || memchr::memmem::find(&message, b"type=1300").is_none()
                    && memchr::memmem::find(&message, b"type=1327").is_none();
            String::from_utf8_lossy(&message).into_owned()
        }
        _ => return Ok(false),
    };
    let (cursor, position) = if positioned {
        let c = j.cursor()?;
        (c.clone(), Some(Position::Journald { cursor: c }))
    } else {
        (String::new(), None)
    };
    let source = Source::Journald {
        cursor,
        transport: String::from_utf8_lossy(&transport).into_owned(),
    };
    for line in text.split('\n') {
        batch.push(SourceItem::Line(SourceLine {
            text: line.to_string(),
            source: source.clone(),
            position: position.clone(),
        }));
    }
    Ok(positioned)
}

/// Rebuild an auditd line from an audit-transport entry: `MESSAGE` is `NAME body` (the type name
/// first, when journald knew it).
pub fn audit_line(message: &str, audit_type: u32, serial: u64, realtime_usec: u64) -> String {
    let body = match message.split_once(' ') {
        Some((first, rest))
            if !first.is_empty()
                && first.bytes().all(|b| {
                    b.is_ascii_uppercase()
                        || b.is_ascii_digit()
                        || b == b'_'
                        || b == b'['
                        || b == b']'
                }) =>
        {
            rest
        }
        _ => message,
    };
    format!(
        "type={audit_type} msg=audit({}.{:03}:{serial}): {body}",
        realtime_usec / 1_000_000,
        (realtime_usec / 1000) % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_transport_becomes_an_auditd_line() {
        assert_eq!(
            audit_line(
                "AVC apparmor=\"DENIED\" operation=\"open\"",
                1400,
                101,
                1_700_000_000_123_000
            ),
            "type=1400 msg=audit(1700000000.123:101): apparmor=\"DENIED\" operation=\"open\""
        );
    }
}

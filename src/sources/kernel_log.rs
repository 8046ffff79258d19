//! The kernel log: `/dev/kmsg` (records read one per `read`, resumable by sequence number within
//! a boot, overwritten records counted as loss) or a syslog file such as `kern.log` (followed with
//! [`super::tail`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;

use tokio::io::unix::AsyncFd;

use super::tail::{self, TailSpec};
use super::{SourceError, SourceHandle, boot_id};
use crate::checkpoint::Position;
use crate::event::Source;
use crate::pipeline::{
    BatchSender, CutShort, LossEvent, LossReason, Mode, SourceItem, SourceLine, StopSignal,
};

/// Start reading the kernel log at `path`.
pub fn start(
    path: PathBuf,
    position: Option<Position>,
    mode: Mode,
    tx: BatchSender,
    stop: StopSignal,
) -> Result<SourceHandle, SourceError> {
    let is_device = std::fs::metadata(&path)
        .map(|m| m.file_type().is_char_device())
        .unwrap_or(false);
    if !is_device {
        let spec = TailSpec {
            name: "kernel_log",
            path,
            position,
            checkpointed: true,
            whole: false,
        };
        return tail::start(spec, mode, tx, stop);
    }
    let open_err = |error: io::Error| SourceError::Open {
        source_name: "kernel_log".into(),
        path: path.clone(),
        error,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(open_err)?;
    let boot = boot_id();
    let (resume, first) = match saved_resume(position.as_ref(), &boot) {
        Some(Resume::NewBoot) => {
            crate::log_warn!(
                "kernel_log: a new boot since the saved position; reading /dev/kmsg from its oldest record"
            );
            (Resume::NewBoot, None)
        }
        Some(r) => (r, None),
        // A first start skips what the ring holds and hands over the last sequence number at
        // once, so that a restart before anything new was read resumes there instead of at the
        // end again (what came in between would be skipped).
        None if mode == Mode::Follow => {
            let last = skip_to_end(&mut file).map_err(open_err)?;
            let first = last.map(|seq| Position::Kmsg {
                boot_id: boot.clone(),
                seq,
            });
            (last.map_or(Resume::Oldest, Resume::After), first)
        }
        None => (Resume::Oldest, None),
    };
    // `AsyncFd::new` is deprecated because a `T` that does not own its descriptor could close it
    // while registered; this `T` owns it (and `register`, the replacement, is `unsafe`).
    #[allow(deprecated)]
    let fd = AsyncFd::new(file).map_err(open_err)?;
    let task = tokio::spawn(read_kmsg(fd, boot, resume, first, mode, tx, stop));
    Ok(SourceHandle::Task(task))
}

/// Read past every record `/dev/kmsg` holds (opened non-blocking); the last one's sequence number.
fn skip_to_end(file: &mut File) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; 8192];
    let mut last = None;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(last),
            Ok(n) => last = record_seq(&buf[..n]).or(last),
            // Overwritten while read: the next read returns the oldest record left.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(last),
            Err(e) => return Err(e),
        }
    }
}

/// The sequence number of a `/dev/kmsg` record: `PRIO,SEQ,USEC,FLAGS[,…];MESSAGE` then
/// continuation lines.
pub fn record_seq(record: &[u8]) -> Option<u64> {
    record_header(record).map(|(_, seq)| seq)
}

/// (facility, sequence number) of a `/dev/kmsg` record. Audit records come from the kernel
/// (facility 0); the kernel forces anything written to /dev/kmsg from user space to a non-zero
/// facility, so filtering on it keeps forged "audit:" lines out.
pub fn record_header(record: &[u8]) -> Option<(u64, u64)> {
    let head = &record[..memchr::memchr(b';', record)?];
    let mut parts = head.split(|&b| b == b',');
    let prio: u64 = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let seq = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    Some((prio >> 3, seq))
}

/// Where a saved position says to go on in the ring of boot `boot`: after its sequence number in
/// the same boot; from the oldest record after a reboot (armorwatch was watching before it, so
/// nothing of this boot was delivered). None without a kmsg position (a first start).
fn saved_resume(position: Option<&Position>, boot: &str) -> Option<Resume> {
    match position? {
        Position::Kmsg { boot_id, seq } if boot_id == boot => Some(Resume::After(*seq)),
        Position::Kmsg { .. } => Some(Resume::NewBoot),
        _ => None,
    }
}

/// Where reading /dev/kmsg starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// After this sequence number of this boot.
    After(u64),
    /// A boot after the saved position's: from the oldest record; a first sequence number above
    /// 0 means the records before it were overwritten unread.
    NewBoot,
    /// From the oldest record (no position).
    Oldest,
}

async fn read_kmsg(
    fd: AsyncFd<File>,
    boot: String,
    resume: Resume,
    first: Option<Position>,
    mode: Mode,
    tx: BatchSender,
    mut stop: StopSignal,
) {
    if let Some(position) = first {
        if tx.send(vec![SourceItem::Position(position)]).await.is_err() {
            return;
        }
    }
    let mut buf = vec![0u8; 8192];
    let mut last: Option<u64> = match resume {
        Resume::After(seq) => Some(seq),
        Resume::NewBoot | Resume::Oldest => None,
    };
    let mut new_boot = resume == Resume::NewBoot;
    let mut batch = Vec::new();
    let mut cut = CutShort::default();
    let mut overwritten = false;
    loop {
        let read = {
            let mut guard = None;
            if mode == Mode::Follow {
                tokio::select! {
                    g = fd.readable() => guard = g.ok(),
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    break;
                }
            }
            match guard {
                Some(mut g) => match g.try_io(|inner| inner.get_ref().read(&mut buf)) {
                    Ok(r) => r,
                    Err(_would_block) => Err(io::ErrorKind::WouldBlock.into()),
                },
                None => fd.get_ref().read(&mut buf),
            }
        };
        match read {
            Ok(0) => {
                if mode == Mode::Follow {
                    crate::log_warn!("reading /dev/kmsg: end of file");
                }
                break;
            }
            Ok(n) => {
                let record = &buf[..n];
                let Some((facility, seq)) = record_header(record) else {
                    continue;
                };
                if let Some(prev) = last {
                    if seq <= prev && !overwritten {
                        // Resuming: already delivered.
                        continue;
                    }
                    if seq > prev + 1 {
                        batch.push(SourceItem::Loss(LossEvent::now(
                            LossReason::KmsgOverwritten,
                            Some(seq - prev - 1),
                            Some(
                                "kernel log records were overwritten before armorwatch read them"
                                    .into(),
                            ),
                            Source::Kmsg { seq },
                        )));
                    }
                }
                if std::mem::take(&mut new_boot) && last.is_none() && seq > 0 {
                    batch.push(SourceItem::Loss(LossEvent::now(
                        LossReason::KmsgOverwritten,
                        Some(seq),
                        Some(
                            "kernel log records of this boot were overwritten before armorwatch read them"
                                .into(),
                        ),
                        Source::Kmsg { seq },
                    )));
                }
                overwritten = false;
                last = Some(seq);
                let end = match facility {
                    0 => memchr::memchr(b'\n', record).unwrap_or(record.len()),
                    // Not from the kernel: only the position is kept.
                    _ => 0,
                };
                // The record goes on with its `PRIO,SEQ,USEC,FLAGS;` header and its `\xHH`
                // escapes (control bytes, bytes >= 0x7f, `\`; so the text is ASCII): the parser
                // decodes them behind that header, the same way for a saved kmsg dump, and once.
                batch.push(SourceItem::Line(SourceLine {
                    text: String::from_utf8_lossy(&record[..end]).into_owned(),
                    source: Source::Kmsg { seq },
                    position: Some(Position::Kmsg {
                        boot_id: boot.clone(),
                        seq,
                    }),
                }));
                if batch.len() < 256 {
                    continue;
                }
                batch.push(SourceItem::MoreFollows);
            }
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                // Records were overwritten under us; the next read returns the oldest one left
                // and the gap is counted from the sequence numbers.
                overwritten = true;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if mode == Mode::Replay {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                super::read_error(
                    super::ReadErrorSource::Kmsg,
                    format_args!("reading /dev/kmsg: {e}"),
                );
                break;
            }
        }
        if cut.should_send(&batch) && tx.send(std::mem::take(&mut batch)).await.is_err() {
            return;
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_sequence() {
        assert_eq!(
            record_seq(b"5,1234,5678,-;audit: type=1400 audit(1:2): x\n SUBSYSTEM=x"),
            Some(1234)
        );
        assert_eq!(record_seq(b"garbage"), None);
        assert_eq!(record_header(b"13,7,1,-;audit: forged"), Some((1, 7)));
    }

    /// Regression: a position of another boot counted as none, and a follow start then skipped
    /// the whole ring: the denials of the boot before armorwatch started were never read.
    #[test]
    fn a_position_of_another_boot_reads_this_boot_from_its_oldest_record() {
        let at = |boot: &str, seq| Position::Kmsg {
            boot_id: boot.into(),
            seq,
        };
        assert_eq!(
            saved_resume(Some(&at("b1", 5000)), "b1"),
            Some(Resume::After(5000))
        );
        assert_eq!(
            saved_resume(Some(&at("b0", 5000)), "b1"),
            Some(Resume::NewBoot)
        );
        assert_eq!(saved_resume(None, "b1"), None);
    }
}

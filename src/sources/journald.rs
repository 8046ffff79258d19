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
//! follows rotation, vacuuming and journald restarts through `sd_journal_wait`.

use std::path::PathBuf;
use std::time::Duration;

use systemd::journal::{self, Journal, JournalRef};

use super::{SourceError, SourceHandle};
use crate::checkpoint::Position;
use crate::event::Source;
use crate::pipeline::{Batch, BatchSender, Mode, SourceItem, SourceLine, StopSignal};

/// Entries per batch.
const BATCH_ENTRIES: usize = 512;
/// How long one `sd_journal_wait` lasts before the stop signal is checked again.
const WAIT: Duration = Duration::from_millis(200);

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
    j.match_add("_TRANSPORT", "kernel").map_err(err)?;
    j.match_add("_TRANSPORT", "audit").map_err(err)?;
    Ok(j)
}

/// Can the system journal be opened (and does it hold anything we may read)?
pub fn probe() -> Result<(), String> {
    let mut j = open(None).map_err(|e| e.to_string())?;
    j.seek_tail().map_err(|e| e.to_string())?;
    match j.previous() {
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
    let cursor = match position {
        Some(Position::Journald { cursor }) => Some(cursor),
        _ => None,
    };
    let thread = std::thread::Builder::new()
        .name("armorwatch-journald".into())
        .spawn(move || {
            let mut j = match open(directory.as_ref()) {
                Ok(j) => j,
                Err(e) => {
                    eprintln!("armorwatch: {e}");
                    return;
                }
            };
            if let Err(e) = follow(&mut j, cursor, mode, &tx, &stop) {
                eprintln!("armorwatch: journald: {e}");
            }
        })
        .map_err(|error| SourceError::Journal {
            directory: None,
            error,
        })?;
    Ok(SourceHandle::Thread(thread))
}

fn follow(
    j: &mut JournalRef,
    cursor: Option<String>,
    mode: Mode,
    tx: &BatchSender,
    stop: &StopSignal,
) -> std::io::Result<()> {
    match &cursor {
        Some(c) => {
            j.seek_cursor(c.as_str())?;
            // The entry at the cursor was delivered already.
            if j.next()? > 0 && !j.test_cursor(c.as_str())? {
                j.previous()?;
            }
        }
        None if mode == Mode::Follow => {
            j.seek_tail()?;
            j.previous()?;
        }
        None => j.seek_head()?,
    }
    let mut batch: Batch = Vec::new();
    loop {
        if *stop.borrow() {
            break;
        }
        if j.next()? == 0 {
            if !batch.is_empty() && tx.blocking_send(std::mem::take(&mut batch)).is_err() {
                return Ok(());
            }
            if mode == Mode::Replay {
                break;
            }
            j.wait(Some(WAIT))?;
            continue;
        }
        entry_lines(j, &mut batch)?;
        if batch.len() >= BATCH_ENTRIES && tx.blocking_send(std::mem::take(&mut batch)).is_err() {
            return Ok(());
        }
    }
    if !batch.is_empty() {
        let _ = tx.blocking_send(batch);
    }
    Ok(())
}

fn field(j: &mut JournalRef, name: &str) -> std::io::Result<Option<String>> {
    Ok(j.get_data(name)?
        .and_then(|f| f.value().map(|v| String::from_utf8_lossy(v).into_owned())))
}

/// The current entry as parser lines.
fn entry_lines(j: &mut JournalRef, batch: &mut Batch) -> std::io::Result<()> {
    let cursor = j.cursor()?;
    let Some(transport) = field(j, "_TRANSPORT")? else {
        return Ok(());
    };
    let Some(message) = field(j, "MESSAGE")? else {
        return Ok(());
    };
    let text = if transport == "audit" {
        let audit_type = field(j, "_AUDIT_TYPE")?.and_then(|t| t.parse::<u32>().ok());
        let serial = field(j, "_AUDIT_ID")?.and_then(|t| t.parse::<u64>().ok());
        let usec = match field(j, "_SOURCE_REALTIME_TIMESTAMP")?.and_then(|t| t.parse::<u64>().ok())
        {
            Some(u) => u,
            None => j.timestamp_usec()?,
        };
        match (audit_type, serial) {
            (Some(t), Some(s)) => audit_line(&message, t, s, usec),
            _ => message,
        }
    } else {
        message
    };
    let position = Position::Journald {
        cursor: cursor.clone(),
    };
    let source = Source::Journald { cursor, transport };
    for line in text.split('\n') {
        batch.push(SourceItem::Line(SourceLine {
            text: line.to_string(),
            source: source.clone(),
            position: Some(position.clone()),
        }));
    }
    Ok(())
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

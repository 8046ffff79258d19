//! The audit netlink read-only multicast group (`AUDIT_NLGRP_READLOG`): every audit record the
//! kernel emits, alongside auditd and journald. Joining needs `CAP_AUDIT_READ`.
//!
//! Each message is `nlmsghdr` + text `audit(SEC.MS:SERIAL): body`; it is turned into an auditd
//! line (`type=NNNN msg=audit(…): body`) so the parser assembles companions. Live only: the kernel
//! keeps no history. Gaps in serials and receive-buffer overruns are reported as loss; the
//! highest serial received is saved with the checkpoints, so a start in the same boot reports
//! the records made while armorwatch was stopped as a gap too (when the pipeline passes the
//! position on: only where no other source carries the same records).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_AUDIT};
use tokio::io::unix::AsyncFd;

use super::{SourceError, SourceHandle, boot_id};
use crate::checkpoint::Position;
use crate::event::Source;
use crate::pipeline::{
    BatchSender, CutShort, LossEvent, LossReason, SourceItem, SourceLine, StopSignal,
};

/// `AUDIT_NLGRP_READLOG` from linux/audit.h.
pub const AUDIT_NLGRP_READLOG: u32 = 1;

fn open() -> Result<Socket, String> {
    let mut s = Socket::new(NETLINK_AUDIT)
        .map_err(|e| format!("cannot create an audit netlink socket: {e}"))?;
    s.bind(&SocketAddr::new(0, 0))
        .map_err(|e| format!("cannot bind the audit netlink socket: {e}"))?;
    s.add_membership(AUDIT_NLGRP_READLOG).map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            "joining the audit multicast group (AUDIT_NLGRP_READLOG) needs CAP_AUDIT_READ: run as root or grant it (AmbientCapabilities=CAP_AUDIT_READ)".to_string()
        } else {
            format!("cannot join the audit multicast group: {e}")
        }
    })?;
    let _ = s.set_rx_buf_sz(4 << 20);
    Ok(s)
}

/// Can this process join the group?
pub fn probe() -> Result<(), String> {
    open().map(drop)
}

/// Start reading (follow only). `position`: the highest serial an earlier run received; in
/// the same boot, the records after it are missing unless the first received follows it.
pub fn start(
    position: Option<Position>,
    tx: BatchSender,
    stop: StopSignal,
) -> Result<SourceHandle, SourceError> {
    let socket = open().map_err(SourceError::Netlink)?;
    socket
        .set_non_blocking(true)
        .map_err(|e| SourceError::Netlink(e.to_string()))?;
    // `AsyncFd::new` is deprecated because a `T` that does not own its descriptor could close it
    // while registered; this `T` owns it (and `register`, the replacement, is `unsafe`).
    #[allow(deprecated)]
    let fd = AsyncFd::new(socket).map_err(|e| SourceError::Netlink(e.to_string()))?;
    let boot: std::sync::Arc<str> = boot_id().into();
    let serials = Serials::resumed(position.as_ref(), &boot, Instant::now());
    Ok(SourceHandle::Task(tokio::spawn(read(
        fd, boot, serials, tx, stop,
    ))))
}

/// Split a datagram into (type, text) messages.
pub fn messages(buf: &[u8]) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() >= at + 16 {
        let h = &buf[at..at + 16];
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let kind = u16::from_ne_bytes([h[4], h[5]]);
        // The kernel's audit multicast messages sometimes carry a length of just the payload;
        // accept whatever fits in the datagram.
        let end = if len >= 16 && at + len <= buf.len() {
            at + len
        } else {
            buf.len()
        };
        let payload = &buf[at + 16..end];
        let text_end = payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(payload.len());
        let text = String::from_utf8_lossy(&payload[..text_end]);
        out.push((kind, text.trim_end_matches('\n').to_string()));
        at = (end + 3) & !3;
    }
    out
}

fn serial_of(text: &str) -> Option<u64> {
    let inner = text.strip_prefix("audit(")?;
    let close = inner.find(')')?;
    inner[..close].rsplit(':').next()?.parse().ok()
}

/// Loss accounting over the serials received: serials skipped past the highest one seen are
/// missing, and missing serials that have not come within [`REORDER_WAIT`] are a gap. They may
/// come late: the kernel takes a record's serial before it queues the record, so on more than
/// one CPU records leave slightly out of serial order (a real 2-CPU guest: 14 of 1 611). An
/// overrun (ENOBUFS) is reported together with the gap it leaves, as one loss with its count,
/// not as an overrun and then the same records again as a gap. The kernel reports ENOBUFS before
/// the records still queued, so the gap shows only once those are read and a newer record comes;
/// an overrun no gap follows within [`OVERRUN_WAIT`] is reported without a count.
///
/// Time is passed in (`now`), so tests drive it.
#[derive(Debug, Default)]
struct Serials {
    max: Option<u64>,
    /// Ranges of serials not received yet, oldest first, at most [`MAX_MISSING`].
    missing: VecDeque<Missing>,
    /// When the socket reported an overrun not yet reported.
    overrun: Option<Instant>,
}

/// Serials `from..=to` skipped at `since`.
#[derive(Debug, Clone, Copy)]
struct Missing {
    from: u64,
    to: u64,
    since: Instant,
    /// Skipped after an overrun: they were dropped with it.
    overrun: bool,
}

/// How long an overrun waits for the serial gap that gives its count.
const OVERRUN_WAIT: Duration = Duration::from_secs(1);

/// How long skipped serials may take to come before they count as lost. The kernel's window
/// between taking a serial and queueing the record is the time to format one record.
const REORDER_WAIT: Duration = Duration::from_secs(1);

/// Ranges of missing serials kept waiting; a newer one beyond this reports the oldest at once.
const MAX_MISSING: usize = 256;

impl Serials {
    /// Accounting that goes on from a saved position of the same boot (another boot's serials
    /// start again at 1: what its last records were is unknown, and not counted).
    /// Ranges that were still waiting when the position was saved cannot come any more (they
    /// were queued to the old socket): they are due at once.
    fn resumed(position: Option<&Position>, boot: &str, now: Instant) -> Serials {
        match position {
            Some(Position::Netlink {
                boot_id,
                serial,
                waiting,
            }) if boot_id == boot => Serials {
                max: Some(*serial),
                missing: waiting
                    .iter()
                    .filter(|(from, to)| from <= to && to < serial)
                    .take(MAX_MISSING)
                    .map(|&(from, to)| Missing {
                        from,
                        to,
                        since: now.checked_sub(REORDER_WAIT).unwrap_or(now),
                        overrun: false,
                    })
                    .collect(),
                overrun: None,
            },
            _ => Serials::default(),
        }
    }

    /// Where the accounting is, to be saved with the records: the highest serial and the
    /// ranges still waiting.
    fn position(&self, boot: &str) -> Option<Position> {
        self.max.map(|serial| Position::Netlink {
            boot_id: boot.to_string(),
            serial,
            waiting: self.missing.iter().map(|m| (m.from, m.to)).collect(),
        })
    }

    /// The socket reported ENOBUFS at `now`: records were dropped after those still queued.
    fn overrun(&mut self, now: Instant) {
        self.overrun.get_or_insert(now);
    }

    /// When the next loss is due to be reported, if one is waiting.
    fn deadline(&self) -> Option<Instant> {
        let overrun = self.overrun.map(|at| at + OVERRUN_WAIT);
        let missing = self.missing.front().map(|m| m.since + REORDER_WAIT);
        overrun.into_iter().chain(missing).min()
    }

    /// A record with `serial` was received at `now`: the losses now due, if any (the oldest
    /// missing range when more than [`MAX_MISSING`] wait).
    fn observe(&mut self, serial: u64, now: Instant) -> Vec<LossEvent> {
        if serial == 0 {
            return Vec::new();
        }
        match self.max {
            Some(max) if serial <= max => {
                self.received_late(serial);
                return Vec::new();
            }
            Some(max) if serial > max + 1 => {
                self.missing.push_back(Missing {
                    from: max + 1,
                    to: serial - 1,
                    since: now,
                    overrun: self.overrun.take().is_some(),
                });
            }
            _ => {}
        }
        self.max = Some(serial);
        match self.missing.len() > MAX_MISSING {
            true => report(self.missing.pop_front().into_iter().collect()),
            false => Vec::new(),
        }
    }

    /// A serial below the highest came: no longer missing, if it was.
    fn received_late(&mut self, serial: u64) {
        let Some(i) = self
            .missing
            .iter()
            .position(|m| (m.from..=m.to).contains(&serial))
        else {
            return;
        };
        let m = self.missing[i];
        match (serial == m.from, serial == m.to) {
            (true, true) => {
                self.missing.remove(i);
            }
            (true, false) => self.missing[i].from += 1,
            (false, true) => self.missing[i].to -= 1,
            (false, false) => {
                self.missing[i].to = serial - 1;
                self.missing.insert(
                    i + 1,
                    Missing {
                        from: serial + 1,
                        ..m
                    },
                );
            }
        }
    }

    /// The losses due at `now`: missing serials whose wait is over, and an overrun no gap
    /// followed within its wait (without a count).
    fn due(&mut self, now: Instant) -> Vec<LossEvent> {
        let mut out = Vec::new();
        if self.overrun.is_some_and(|at| at + OVERRUN_WAIT <= now) {
            out.extend(self.flush_overrun());
        }
        let n = self
            .missing
            .iter()
            .take_while(|m| m.since + REORDER_WAIT <= now)
            .count();
        let due: Vec<Missing> = self.missing.drain(..n).collect();
        out.extend(report(due));
        out
    }

    /// Stopping: everything still waiting is reported now (nothing more will be received).
    fn flush(&mut self) -> Vec<LossEvent> {
        let mut out: Vec<LossEvent> = self.flush_overrun().into_iter().collect();
        out.extend(report(self.missing.drain(..).collect()));
        out
    }

    fn flush_overrun(&mut self) -> Option<LossEvent> {
        self.overrun
            .take()
            .map(|_| loss(LossReason::NetlinkOverrun, None, OVERRUN.to_string()))
    }
}

/// Missing ranges as at most two losses: those an overrun dropped, and the others.
fn report(ranges: Vec<Missing>) -> Vec<LossEvent> {
    let (overrun, gap): (Vec<Missing>, Vec<Missing>) = ranges.into_iter().partition(|m| m.overrun);
    [(overrun, true), (gap, false)]
        .into_iter()
        .filter(|(r, _)| !r.is_empty())
        .map(|(r, is_overrun)| {
            // Saturating: ranges read back from a (hostile) state file can be of any size.
            let count = r
                .iter()
                .map(|m| (m.to - m.from).saturating_add(1))
                .fold(0u64, u64::saturating_add);
            let mut listed: Vec<String> = r
                .iter()
                .take(8)
                .map(|m| match m.from == m.to {
                    true => m.from.to_string(),
                    false => format!("{}..{}", m.from, m.to),
                })
                .collect();
            if r.len() > 8 {
                listed.push(format!("{} more ranges", r.len() - 8));
            }
            let missing = format!("audit serials {} not received", listed.join(", "));
            match is_overrun {
                true => loss(
                    LossReason::NetlinkOverrun,
                    Some(count),
                    format!("{OVERRUN}: {missing}"),
                ),
                false => loss(LossReason::NetlinkSerialGap, Some(count), missing),
            }
        })
        .collect()
}

const OVERRUN: &str = "the netlink receive buffer overflowed";

fn loss(reason: LossReason, count: Option<u64>, detail: String) -> LossEvent {
    LossEvent::now(reason, count, Some(detail), Source::Netlink)
}

async fn read(
    fd: AsyncFd<Socket>,
    boot: std::sync::Arc<str>,
    mut serials: Serials,
    tx: BatchSender,
    mut stop: StopSignal,
) {
    let mut cut = CutShort::default();
    loop {
        let deadline = serials.deadline();
        let mut guard = tokio::select! {
            g = fd.readable() => match g { Ok(g) => g, Err(_) => break },
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                let lost = serials.due(Instant::now());
                let lost = reported(lost, &serials, &boot);
                if !lost.is_empty() && tx.send(lost).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let mut batch = Vec::new();
        let mut more = false;
        loop {
            let mut buf = Vec::with_capacity(16384);
            match guard.try_io(|s| s.get_ref().recv(&mut buf, 0)) {
                Ok(Ok(_)) => {
                    let now = Instant::now();
                    for (kind, text) in messages(&buf) {
                        if let Some(serial) = serial_of(&text) {
                            let lost = serials.observe(serial, now);
                            batch.extend(lost.into_iter().map(SourceItem::Loss));
                        }
                        batch.push(SourceItem::Line(SourceLine {
                            text: format!("type={kind} msg={text}"),
                            source: Source::Netlink,
                            // The highest serial so far (records may come slightly out of
                            // order), with the serials still waiting below it.
                            position: serials.position(&boot),
                        }));
                    }
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    serials.overrun(Instant::now());
                }
                Ok(Err(e)) => {
                    super::read_error(
                        super::ReadErrorSource::Netlink,
                        format_args!("netlink: {e}"),
                    );
                    let lost = serials.flush();
                    batch.extend(reported(lost, &serials, &boot));
                    let _ = tx.send(batch).await;
                    return;
                }
                Err(_would_block) => break,
            }
            if batch.len() >= 256 {
                more = true;
                break;
            }
        }
        // A socket never idle still reports what is due.
        let lost = serials.due(Instant::now());
        batch.extend(reported(lost, &serials, &boot));
        if more {
            batch.push(SourceItem::MoreFollows);
        }
        if cut.should_send(&batch) && tx.send(batch).await.is_err() {
            return;
        }
    }
    // Stopping: losses still waiting are reported all the same.
    let lost = serials.flush();
    let lost = reported(lost, &serials, &boot);
    if !lost.is_empty() {
        let _ = tx.send(lost).await;
    }
}

/// Losses to hand over, followed by the position without their serials (else a start after
/// this one would report them again).
fn reported(lost: Vec<LossEvent>, serials: &Serials, boot: &str) -> Vec<SourceItem> {
    if lost.is_empty() {
        return Vec::new();
    }
    let mut items: Vec<SourceItem> = lost.into_iter().map(SourceItem::Loss).collect();
    items.extend(serials.position(boot).map(SourceItem::Position));
    items
}

/// Netlink audit sockets subscribed to a multicast group, from /proc/net/netlink:
/// (port id, comm of that pid if any).
pub fn audit_multicast_listeners(text: &str) -> Vec<(u32, Option<String>)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let proto: u32 = cols.get(1)?.parse().ok()?;
            let port: u32 = cols.get(2)?.parse().ok()?;
            let groups = u32::from_str_radix(cols.get(3)?, 16).ok()?;
            (proto == 9 && groups & 1 != 0).then(|| {
                let comm = std::fs::read_to_string(format!("/proc/{port}/comm"))
                    .ok()
                    .map(|c| c.trim().to_string());
                (port, comm)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One loss, the first of `v`, with its reason, count and detail.
    fn one(v: Vec<LossEvent>) -> (LossReason, Option<u64>, String) {
        assert_eq!(v.len(), 1, "{v:?}");
        let l = &v[0];
        (l.reason, l.count, l.detail.clone().unwrap_or_default())
    }

    /// An overrun and the serial gap it leaves are one loss, with the gap's count, also when
    /// the records still queued at the overrun come first (the kernel's order); a gap alone is a
    /// gap; an overrun no gap follows is reported without a count when its wait is over.
    #[test]
    fn an_overrun_and_its_gap_are_one_loss() {
        let t0 = Instant::now();
        let mut s = Serials::default();
        assert!(s.observe(10, t0).is_empty());
        s.overrun(t0);
        assert_eq!(s.deadline(), Some(t0 + OVERRUN_WAIT));
        // Queued before the overrun: no gap yet, the overrun keeps waiting.
        assert!(s.observe(11, t0).is_empty() && s.observe(12, t0).is_empty());
        assert!(s.due(t0 + OVERRUN_WAIT / 2).is_empty());
        let t1 = t0 + OVERRUN_WAIT / 2;
        assert!(
            s.observe(16, t1).is_empty(),
            "reported once its wait is over"
        );
        assert_eq!(s.deadline(), Some(t1 + REORDER_WAIT), "the gap's wait");
        let (reason, count, detail) = one(s.due(t1 + REORDER_WAIT));
        assert_eq!((reason, count), (LossReason::NetlinkOverrun, Some(3)));
        assert!(detail.contains("13..15"), "{detail}");
        assert!(
            s.flush().is_empty() && s.deadline().is_none(),
            "reported once"
        );

        assert!(s.observe(19, t1).is_empty());
        let (reason, count, _) = one(s.flush());
        assert_eq!((reason, count), (LossReason::NetlinkSerialGap, Some(2)));
        assert!(s.observe(0, t1).is_empty() && s.observe(20, t1).is_empty());

        s.overrun(t1);
        assert!(s.observe(21, t1).is_empty());
        assert!(s.due(t1 + OVERRUN_WAIT / 2).is_empty());
        let (reason, count, _) = one(s.due(t1 + OVERRUN_WAIT));
        assert_eq!((reason, count), (LossReason::NetlinkOverrun, None));
        s.observe(25, t1);
        let (reason, ..) = one(s.flush());
        assert_eq!(
            reason,
            LossReason::NetlinkSerialGap,
            "the overrun was reported already"
        );
    }

    /// Records come out of serial order on more than one CPU (the kernel takes the serial
    /// before it queues the record): a serial skipped and received within the wait is no loss
    /// (each was reported as one lost record: 14 false losses for 1 611 records from four
    /// concurrent writers in a 2-CPU guest). What has not come when the wait is over is lost,
    /// with its exact count, however the late ones split the range.
    #[test]
    fn records_out_of_serial_order_are_no_loss() {
        let t0 = Instant::now();
        let mut s = Serials::default();
        for serial in [10, 12, 11, 13, 15, 16, 14, 17] {
            assert!(s.observe(serial, t0).is_empty());
        }
        assert!(s.due(t0 + REORDER_WAIT).is_empty() && s.deadline().is_none());

        // 21..=29 skipped; 22, 25 and 29 come late.
        for serial in [20, 30, 22, 25, 29, 31] {
            assert!(s.observe(serial, t0).is_empty());
        }
        // 18..=19 were skipped too (17 → 20).
        assert!(s.due(t0 + REORDER_WAIT / 2).is_empty(), "still waiting");
        let (reason, count, detail) = one(s.due(t0 + REORDER_WAIT));
        assert_eq!((reason, count), (LossReason::NetlinkSerialGap, Some(8)));
        assert_eq!(
            detail,
            "audit serials 18..19, 21, 23..24, 26..28 not received"
        );
        assert!(s.due(t0 + 2 * REORDER_WAIT).is_empty(), "reported once");

        // The waiting ranges are bounded: past the bound the oldest is reported at once.
        let mut s = Serials::default();
        s.observe(1, t0);
        for i in 0..MAX_MISSING as u64 {
            assert!(s.observe(3 + 2 * i, t0).is_empty());
        }
        let (_, count, detail) = one(s.observe(1000, t0));
        assert_eq!(
            (count, detail.as_str()),
            (Some(1), "audit serials 2 not received")
        );
        assert_eq!(s.missing.len(), MAX_MISSING);
    }

    /// A start in the same boot goes on from the saved serial: the records made while
    /// armorwatch was stopped are a gap with their count (they were lost without a word: a
    /// review helper's real-kernel run received serials 3–7 and 13–17 and reported nothing).
    /// Another boot's position counts nothing.
    #[test]
    fn a_restart_in_the_same_boot_reports_the_records_made_while_stopped() {
        let t0 = Instant::now();
        let saved = Position::Netlink {
            boot_id: "b1".into(),
            serial: 7,
            waiting: Vec::new(),
        };
        let mut s = Serials::resumed(Some(&saved), "b1", t0);
        s.observe(13, t0);
        let (reason, count, detail) = one(s.due(t0 + REORDER_WAIT));
        assert_eq!((reason, count), (LossReason::NetlinkSerialGap, Some(5)));
        assert!(detail.contains("8..12"), "{detail}");
        let mut s = Serials::resumed(Some(&saved), "b1", t0);
        s.observe(8, t0);
        assert!(s.flush().is_empty(), "nothing missed");
        let mut s = Serials::resumed(Some(&saved), "b2", t0);
        s.observe(13, t0);
        assert!(s.flush().is_empty(), "another boot");
        let mut s = Serials::resumed(None, "b1", t0);
        s.observe(13, t0);
        assert!(s.flush().is_empty());
    }

    /// Serials still waiting to come out of order are saved with the position: a kill before
    /// their wait was over lost them without a word (the next start knew only the highest).
    /// Reported, they leave the position, so no start reports them twice.
    #[test]
    fn serials_waiting_at_a_kill_are_reported_by_the_next_start() {
        let t0 = Instant::now();
        let mut s = Serials::default();
        for serial in [10, 12, 13, 17] {
            assert!(s.observe(serial, t0).is_empty());
        }
        let saved = s.position("b1").unwrap();
        assert_eq!(
            saved,
            Position::Netlink {
                boot_id: "b1".into(),
                serial: 17,
                waiting: vec![(11, 11), (14, 16)],
            }
        );
        let text = serde_json::to_string(&saved).unwrap();
        let saved: Position = serde_json::from_str(&text).unwrap();

        let mut s = Serials::resumed(Some(&saved), "b1", t0);
        assert_eq!(
            s.deadline(),
            Some(t0),
            "due at once: they cannot come any more"
        );
        s.observe(18, t0);
        let (reason, count, detail) = one(s.due(t0));
        assert_eq!((reason, count), (LossReason::NetlinkSerialGap, Some(4)));
        assert!(detail.contains("11, 14..16"), "{detail}");
        assert_eq!(
            s.position("b1"),
            Some(Position::Netlink {
                boot_id: "b1".into(),
                serial: 18,
                waiting: Vec::new(),
            })
        );
        // A position of before this field is read as nothing waiting.
        let old: Position =
            serde_json::from_str(r#"{"kind":"netlink","boot_id":"b1","serial":5}"#).unwrap();
        assert!(Serials::resumed(Some(&old), "b1", t0).missing.is_empty());

        // A state file with the largest serial and ranges: counted, no overflow; backwards
        // or out-of-range ranges are left out.
        let max = u64::MAX;
        let hostile = Position::Netlink {
            boot_id: "b1".into(),
            serial: max,
            waiting: vec![(0, max - 1), (1, max - 1), (9, 3), (4, max)],
        };
        let mut s = Serials::resumed(Some(&hostile), "b1", t0);
        assert!(s.observe(max, t0).is_empty());
        assert!(s.observe(7, t0).is_empty());
        let (_, count, _) = one(s.due(t0));
        assert_eq!(count, Some(max));
    }

    #[test]
    fn datagram_to_messages() {
        let text = b"audit(1700000000.123:45): apparmor=\"DENIED\"";
        let mut buf = Vec::new();
        buf.extend_from_slice(&((16 + text.len()) as u32).to_ne_bytes());
        buf.extend_from_slice(&1400u16.to_ne_bytes());
        buf.extend_from_slice(&[0; 10]);
        buf.extend_from_slice(text);
        let m = messages(&buf);
        assert_eq!(
            m,
            [(
                1400,
                "audit(1700000000.123:45): apparmor=\"DENIED\"".to_string()
            )]
        );
        assert_eq!(serial_of(&m[0].1), Some(45));
    }
}

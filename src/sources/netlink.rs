//! The audit netlink read-only multicast group (`AUDIT_NLGRP_READLOG`): every audit record the
//! kernel emits, alongside auditd and journald. Joining needs `CAP_AUDIT_READ`.
//!
//! Each message is `nlmsghdr` + text `audit(SEC.MS:SERIAL): body`; it is turned into an auditd
//! line (`type=NNNN msg=audit(…): body`) so the parser assembles companions. Live only: the kernel
//! keeps no history. Gaps in serials and receive-buffer overruns are reported as loss; the
//! highest serial received is saved with the checkpoints, so a start in the same boot reports
//! the records made while armorwatch was stopped as a gap too (when the pipeline passes the
//! position on: only where no other source carries the same records).

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
    let serials = Serials::resumed(position.as_ref(), &boot);
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

/// Loss accounting over the serials received: a jump past the highest serial seen is a gap. An
/// overrun (ENOBUFS) is reported together with the gap it leaves, as one loss with its count,
/// not as an overrun and then the same records again as a gap. The kernel reports ENOBUFS before
/// the records still queued, so the gap shows only once those are read and a newer record comes;
/// an overrun no gap follows within [`OVERRUN_WAIT`] is reported without a count.
#[derive(Debug, Default)]
struct Serials {
    max: Option<u64>,
    /// When the socket reported an overrun not yet reported.
    overrun: Option<Instant>,
}

/// How long an overrun waits for the serial gap that gives its count.
const OVERRUN_WAIT: Duration = Duration::from_secs(1);

impl Serials {
    /// Accounting that goes on from a saved position of the same boot (another boot's serials
    /// start again at 1: what its last records were is unknown, and not counted).
    fn resumed(position: Option<&Position>, boot: &str) -> Serials {
        let max = match position {
            Some(Position::Netlink { boot_id, serial }) if boot_id == boot => Some(*serial),
            _ => None,
        };
        Serials { max, overrun: None }
    }

    /// The socket reported ENOBUFS at `now`: records were dropped after those still queued.
    fn overrun(&mut self, now: Instant) {
        self.overrun.get_or_insert(now);
    }

    /// When an unreported overrun stops waiting for its gap.
    fn overrun_deadline(&self) -> Option<Instant> {
        self.overrun.map(|at| at + OVERRUN_WAIT)
    }

    /// A record with `serial` was received: the loss it shows, if any.
    fn observe(&mut self, serial: u64) -> Option<LossEvent> {
        if serial == 0 {
            return None;
        }
        let gap = self.max.filter(|&max| serial > max + 1).map(|max| {
            (
                serial - max - 1,
                format!("audit serials {}..{} not received", max + 1, serial - 1),
            )
        });
        self.max = Some(self.max.map_or(serial, |m| m.max(serial)));
        let (n, missing) = gap?;
        Some(match self.overrun.take() {
            Some(_) => loss(
                LossReason::NetlinkOverrun,
                Some(n),
                format!("{OVERRUN}: {missing}"),
            ),
            None => loss(LossReason::NetlinkSerialGap, Some(n), missing),
        })
    }

    /// An overrun still waiting for its gap, reported now without a count (its wait is over, or
    /// the source stops).
    fn flush(&mut self) -> Option<LossEvent> {
        self.overrun
            .take()
            .map(|_| loss(LossReason::NetlinkOverrun, None, OVERRUN.to_string()))
    }
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
        let deadline = serials.overrun_deadline();
        let mut guard = tokio::select! {
            g = fd.readable() => match g { Ok(g) => g, Err(_) => break },
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                let lost: Vec<_> = serials.flush().map(SourceItem::Loss).into_iter().collect();
                if tx.send(lost).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let mut batch = Vec::new();
        loop {
            let mut buf = Vec::with_capacity(16384);
            match guard.try_io(|s| s.get_ref().recv(&mut buf, 0)) {
                Ok(Ok(_)) => {
                    for (kind, text) in messages(&buf) {
                        if let Some(lost) = serial_of(&text).and_then(|s| serials.observe(s)) {
                            batch.push(SourceItem::Loss(lost));
                        }
                        batch.push(SourceItem::Line(SourceLine {
                            text: format!("type={kind} msg={text}"),
                            source: Source::Netlink,
                            // The highest serial so far (records may come slightly out of order).
                            position: serials.max.map(|serial| Position::Netlink {
                                boot_id: boot.to_string(),
                                serial,
                            }),
                        }));
                    }
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    serials.overrun(Instant::now());
                }
                Ok(Err(e)) => {
                    eprintln!("armorwatch: netlink: {e}");
                    batch.extend(serials.flush().map(SourceItem::Loss));
                    let _ = tx.send(batch).await;
                    return;
                }
                Err(_would_block) => break,
            }
            if batch.len() >= 256 {
                batch.push(SourceItem::MoreFollows);
                break;
            }
        }
        if cut.should_send(&batch) && tx.send(batch).await.is_err() {
            return;
        }
    }
    // Stopping: an overrun still waiting for its gap is reported all the same.
    if let Some(lost) = serials.flush() {
        let _ = tx.send(vec![SourceItem::Loss(lost)]).await;
    }
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

    /// An overrun and the serial gap it leaves are one loss, with the gap's count, also when
    /// the records still queued at the overrun come first (the kernel's order); a gap alone is a
    /// gap; an overrun no gap follows is reported without a count when flushed.
    #[test]
    fn an_overrun_and_its_gap_are_one_loss() {
        let mut s = Serials::default();
        assert!(s.observe(10).is_none());
        let at = Instant::now();
        s.overrun(at);
        assert_eq!(s.overrun_deadline(), Some(at + OVERRUN_WAIT));
        // Queued before the overrun: no gap yet, the overrun keeps waiting.
        assert!(s.observe(11).is_none() && s.observe(12).is_none());
        let l = s.observe(16).unwrap();
        assert_eq!((l.reason, l.count), (LossReason::NetlinkOverrun, Some(3)));
        assert!(l.detail.as_deref().unwrap().contains("13..15"), "{l:?}");
        assert!(
            s.flush().is_none() && s.overrun_deadline().is_none(),
            "reported once"
        );

        let l = s.observe(19).unwrap();
        assert_eq!((l.reason, l.count), (LossReason::NetlinkSerialGap, Some(2)));
        assert!(s.observe(0).is_none() && s.observe(20).is_none());

        s.overrun(Instant::now());
        assert!(s.observe(21).is_none());
        let l = s.flush().unwrap();
        assert_eq!((l.reason, l.count), (LossReason::NetlinkOverrun, None));
        let l = s.observe(25).unwrap();
        assert_eq!(
            l.reason,
            LossReason::NetlinkSerialGap,
            "the overrun was reported already"
        );
    }

    /// A start in the same boot goes on from the saved serial: the records made while
    /// armorwatch was stopped are a gap with their count (they were lost without a word: a
    /// review helper's real-kernel run received serials 3–7 and 13–17 and reported nothing).
    /// Another boot's position counts nothing.
    #[test]
    fn a_restart_in_the_same_boot_reports_the_records_made_while_stopped() {
        let saved = Position::Netlink {
            boot_id: "b1".into(),
            serial: 7,
        };
        let mut s = Serials::resumed(Some(&saved), "b1");
        let l = s.observe(13).unwrap();
        assert_eq!((l.reason, l.count), (LossReason::NetlinkSerialGap, Some(5)));
        assert!(l.detail.as_deref().unwrap().contains("8..12"), "{l:?}");
        let mut s = Serials::resumed(Some(&saved), "b1");
        assert!(s.observe(8).is_none(), "nothing missed");
        let mut s = Serials::resumed(Some(&saved), "b2");
        assert!(s.observe(13).is_none(), "another boot");
        assert!(Serials::resumed(None, "b1").observe(13).is_none());
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

//! The audit netlink read-only multicast group (`AUDIT_NLGRP_READLOG`): every audit record the
//! kernel emits, alongside auditd and journald. Joining needs `CAP_AUDIT_READ`.
//!
//! Each message is `nlmsghdr` + text `audit(SEC.MS:SERIAL): body`; it is turned into an auditd
//! line (`type=NNNN msg=audit(…): body`) so the parser assembles companions. Live only: the kernel
//! keeps no history, so there is no checkpoint. Gaps in serials and receive-buffer overruns are
//! reported as loss.

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_AUDIT};
use tokio::io::unix::AsyncFd;

use super::{SourceError, SourceHandle};
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

/// Start reading (follow only).
pub fn start(tx: BatchSender, stop: StopSignal) -> Result<SourceHandle, SourceError> {
    let socket = open().map_err(SourceError::Netlink)?;
    socket
        .set_non_blocking(true)
        .map_err(|e| SourceError::Netlink(e.to_string()))?;
    // `AsyncFd::new` is deprecated because a `T` that does not own its descriptor could close it
    // while registered; this `T` owns it (and `register`, the replacement, is `unsafe`).
    #[allow(deprecated)]
    let fd = AsyncFd::new(socket).map_err(|e| SourceError::Netlink(e.to_string()))?;
    Ok(SourceHandle::Task(tokio::spawn(read(fd, tx, stop))))
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
/// not as an overrun and then the same records again as a gap.
#[derive(Debug, Default)]
struct Serials {
    max: Option<u64>,
    overrun: bool,
}

impl Serials {
    /// The socket reported ENOBUFS: records were dropped before the next one received.
    fn overrun(&mut self) {
        self.overrun = true;
    }

    /// A record with `serial` was received: the loss it shows, if any.
    fn observe(&mut self, serial: u64) -> Option<LossEvent> {
        if serial == 0 {
            return None;
        }
        let gap = self
            .max
            .filter(|&max| serial > max + 1)
            .map(|max| (serial - max - 1, max + 1, serial - 1));
        self.max = Some(self.max.map_or(serial, |m| m.max(serial)));
        let missing =
            gap.map(|(n, from, to)| (n, format!("audit serials {from}..{to} not received")));
        if std::mem::take(&mut self.overrun) {
            let detail = match &missing {
                Some((_, m)) => format!("the netlink receive buffer overflowed: {m}"),
                None => OVERRUN.to_string(),
            };
            return Some(loss(
                LossReason::NetlinkOverrun,
                missing.map(|(n, _)| n),
                detail,
            ));
        }
        missing.map(|(n, m)| loss(LossReason::NetlinkSerialGap, Some(n), m))
    }

    /// The end of what could be read: an overrun no record has followed yet is reported
    /// without a count.
    fn flush(&mut self) -> Option<LossEvent> {
        std::mem::take(&mut self.overrun)
            .then(|| loss(LossReason::NetlinkOverrun, None, OVERRUN.to_string()))
    }
}

const OVERRUN: &str = "the netlink receive buffer overflowed";

fn loss(reason: LossReason, count: Option<u64>, detail: String) -> LossEvent {
    LossEvent::now(reason, count, Some(detail), Source::Netlink)
}

async fn read(fd: AsyncFd<Socket>, tx: BatchSender, mut stop: StopSignal) {
    let mut serials = Serials::default();
    let mut cut = CutShort::default();
    loop {
        let mut guard = tokio::select! {
            g = fd.readable() => match g { Ok(g) => g, Err(_) => return },
            _ = stop.changed() => return,
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
                            position: None,
                        }));
                    }
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => serials.overrun(),
                Ok(Err(e)) => {
                    eprintln!("armorwatch: netlink: {e}");
                    return;
                }
                Err(_would_block) => {
                    batch.extend(serials.flush().map(SourceItem::Loss));
                    break;
                }
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

    /// An overrun and the serial gap it leaves are one loss, with the gap's count; a gap alone
    /// is a gap; an overrun nothing followed is reported at the end of the read.
    #[test]
    fn an_overrun_and_its_gap_are_one_loss() {
        let mut s = Serials::default();
        assert!(s.observe(10).is_none());
        assert!(s.observe(11).is_none());
        s.overrun();
        let l = s.observe(15).unwrap();
        assert_eq!((l.reason, l.count), (LossReason::NetlinkOverrun, Some(3)));
        assert!(l.detail.as_deref().unwrap().contains("12..14"), "{l:?}");
        assert!(s.flush().is_none(), "reported once");

        let l = s.observe(18).unwrap();
        assert_eq!((l.reason, l.count), (LossReason::NetlinkSerialGap, Some(2)));
        assert!(s.observe(0).is_none() && s.observe(19).is_none());

        s.overrun();
        let l = s.flush().unwrap();
        assert_eq!((l.reason, l.count), (LossReason::NetlinkOverrun, None));
        assert!(s.observe(20).is_none(), "the overrun was reported already");
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

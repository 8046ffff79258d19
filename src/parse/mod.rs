//! Pure, synchronous parsing: text → AppArmor [`Event`]s. No I/O, no tokio.
//!
//! [`Parser`] is fed physical lines in input order and hands back events in the same order. It
//! joins the two physical lines of a dbus `USER_AVC` (the message contains a newline before
//! ` exe=`), decodes the `\xHH` escapes of raw /dev/kmsg records, and attaches the SYSCALL,
//! PROCTITLE, CWD and PATH records that share an AppArmor record's `(node, serial)` — to every
//! AppArmor record of that serial, in whatever order they come — until EOE (or a PROCTITLE after
//! the SYSCALL: the kernel's last record before EOE, which auditd does not log), until a bounded number
//! of later records has gone by, or until [`Parser::finish`] (or [`Parser::flush_idle`]). Its
//! memory is bounded by that window, whatever the input size.

pub mod fields;
pub mod line;
pub mod record;

use std::collections::VecDeque;

use crate::event::{Event, Process, Source};
use line::{Envelope, Line, LossReport, RecordType};
use record::Built;

/// Records (lines with an audit stamp or an `apparmor=` key) after which an AppArmor event stops
/// waiting for companions with its serial. auditd writes an event's records together, so a
/// handful would do; 64 leaves room for interleaving from many CPUs.
pub const DEFAULT_GRACE_RECORDS: u64 = 64;

/// How many graces an event may wait in all, its companions renewing the wait.
const WAIT_RENEWED_MAX: u64 = 4;

/// How many companion records are remembered for AppArmor records of their serial still to come
/// (companions written first, a second denial of one syscall, the other transport's copy).
const EARLY_COMPANIONS: usize = 32;

/// Kernel AppArmor events in a row that the idle flush released without a companion (the input
/// went quiet and none came), after which a source is taken to write none (no audit context:
/// kmsg and journald on a machine without auditd, where every denial stands alone): its events
/// stop waiting for companions and go out as they are read, instead of after the idle flush.
/// The first companion record seen makes them wait again; one event may then go out without its
/// process. Events released by the grace window (a burst of denials of one syscall) or at the
/// end of input, and dbus USER_AVC records (userspace: never any companions), do not count.
pub const LONELY_AFTER: u32 = 32;

/// Something the parser produced.
#[derive(Debug)]
pub enum Output {
    /// An AppArmor event.
    Event(Box<Event>),
    /// A line that looked like AppArmor but could not be parsed.
    Malformed(Malformed),
    /// The kernel reported lost records.
    Loss(Loss),
}

/// An AppArmor-looking line that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// Where it was.
    pub source: Source,
    /// Why it was rejected.
    pub reason: String,
    /// The line.
    pub line: String,
}

/// A kernel notice of lost records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// Where it was.
    pub source: Source,
    /// What the kernel said.
    pub report: LossReport,
}

/// Running counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Physical lines fed.
    pub lines: u64,
    /// AppArmor events produced.
    pub events: u64,
    /// AppArmor-looking lines rejected.
    pub malformed: u64,
    /// Legacy free-text AppArmor records (`type=APPARMOR … REJECTING …`) accepted and ignored.
    pub legacy_ignored: u64,
    /// Kernel loss notices seen.
    pub loss_notices: u64,
}

#[derive(Debug)]
struct Pending {
    node: Option<String>,
    serial: u64,
    event: Box<Event>,
    /// [`Parser::records`] when the record came, and when a companion came last.
    arrived: u64,
    last_touch: u64,
    done: bool,
    /// A kernel record (not a userspace USER_AVC), which may have companions.
    kernel: bool,
}

#[derive(Debug, Default)]
struct Early {
    node: Option<String>,
    serial: u64,
    line: String,
}

#[derive(Debug)]
struct Held {
    line: String,
    source: Source,
}

/// The streaming parser. See the module documentation.
#[derive(Debug)]
pub struct Parser {
    pending: VecDeque<Pending>,
    early: VecDeque<Early>,
    held: Option<Held>,
    /// Buffers for decoding /dev/kmsg escapes, kept to be reused.
    kmsg_bytes: Vec<u8>,
    kmsg_text: String,
    records: u64,
    grace_records: u64,
    /// Kernel events in a row released by the idle flush without companions, reset by any
    /// companion record.
    lonely: u32,
    stats: Stats,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser with the default assembly window.
    pub fn new() -> Self {
        Self::with_grace(DEFAULT_GRACE_RECORDS)
    }

    /// A parser whose events wait for companions for at most `grace_records` later records.
    pub fn with_grace(grace_records: u64) -> Self {
        Parser {
            pending: VecDeque::new(),
            early: VecDeque::with_capacity(EARLY_COMPANIONS),
            held: None,
            kmsg_bytes: Vec::new(),
            kmsg_text: String::new(),
            records: 0,
            grace_records,
            lonely: 0,
            stats: Stats::default(),
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Feed one physical line (without its newline). Finished outputs are appended to `out`.
    pub fn push_line(&mut self, line: &str, source: &Source, out: &mut Vec<Output>) {
        self.stats.lines += 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line::is_escaped_kmsg(line) {
            // Decoded once, here, for /dev/kmsg read live and saved dumps alike; the buffers are
            // the parser's, so only lines with escapes pay, and without an allocation.
            let mut text = std::mem::take(&mut self.kmsg_text);
            line::unescape_kmsg(line, &mut self.kmsg_bytes, &mut text);
            self.push_text(&text, source, out);
            self.kmsg_text = text;
            return;
        }
        self.push_text(line, source, out);
    }

    fn push_text(&mut self, line: &str, source: &Source, out: &mut Vec<Output>) {
        if let Some(held) = self.held.take() {
            if let Some(cont) = continuation(line) {
                let mut joined = held.line;
                joined.push('\n');
                joined.push_str(cont);
                self.process(&joined, &held.source, out);
                self.emit_ready(out);
                return;
            }
            self.process(&held.line, &held.source, out);
        }
        if opens_unterminated_msg(line) {
            self.held = Some(Held {
                line: line.to_string(),
                source: source.clone(),
            });
            return;
        }
        self.process(line, source, out);
        self.emit_ready(out);
    }

    /// End of input: everything pending is emitted.
    pub fn finish(&mut self, out: &mut Vec<Output>) {
        if let Some(held) = self.held.take() {
            self.process(&held.line, &held.source, out);
        }
        for p in &mut self.pending {
            p.done = true;
        }
        self.emit_ready(out);
    }

    /// The input has been quiet past the companion wait (a live source calls this): a held
    /// USER_AVC first line is taken as it is (its continuation is not coming: libapparmor's
    /// testcase_dbus_10), then every pending event is emitted.
    pub fn flush_idle(&mut self, out: &mut Vec<Output>) {
        if let Some(held) = self.held.take() {
            self.process(&held.line, &held.source, out);
        }
        let released = self
            .pending
            .iter()
            .filter(|p| !p.done && p.kernel && p.event.process.is_none())
            .count();
        self.lonely = self
            .lonely
            .saturating_add(u32::try_from(released).unwrap_or(u32::MAX));
        self.flush_pending(out);
    }

    /// Stop waiting for companions (the caller tracks too many lines): every pending event is
    /// emitted. A held USER_AVC first line stays held, its continuation may be the next line.
    pub fn flush_pending(&mut self, out: &mut Vec<Output>) {
        for p in &mut self.pending {
            p.done = true;
        }
        self.emit_ready(out);
    }

    /// True when events are waiting for companions or a continuation line.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || self.held.is_some()
    }

    fn process(&mut self, text: &str, source: &Source, out: &mut Vec<Output>) {
        match line::classify(text) {
            Line::Other => {}
            Line::Loss { what } => {
                self.stats.loss_notices += 1;
                out.push(Output::Loss(Loss {
                    source: source.clone(),
                    report: what,
                }));
            }
            Line::Malformed { reason } => self.malformed(text, source, reason, out),
            Line::Record(env) => {
                // Stamp-less records too: events queued behind a waiting one must not grow
                // without bound.
                self.records += 1;
                match env.record_type {
                    Some(t) if t.is_companion() => self.companion(&env, t, text),
                    // A SELinux AVC shares the type: AppArmor's carry `apparmor=`.
                    Some(RecordType::Avc | RecordType::UserAvc)
                        if line::find_apparmor_key(env.body).is_some() =>
                    {
                        self.apparmor(&env, text, source, out);
                    }
                    Some(RecordType::Legacy(_) | RecordType::LegacyText) => {
                        self.apparmor(&env, text, source, out);
                    }
                    _ => {}
                }
            }
        }
    }

    fn malformed(&mut self, text: &str, source: &Source, reason: String, out: &mut Vec<Output>) {
        self.stats.malformed += 1;
        out.push(Output::Malformed(Malformed {
            source: source.clone(),
            reason,
            line: text.to_string(),
        }));
    }

    fn apparmor(&mut self, env: &Envelope<'_>, text: &str, source: &Source, out: &mut Vec<Output>) {
        match record::build(env, text, source) {
            Ok(Built::Event(mut event)) => {
                self.stats.events += 1;
                let stamp = env.stamp.filter(|s| s.serial != 0 || s.epoch != 0);
                let Some(stamp) = stamp else {
                    self.pending.push_back(Pending {
                        node: None,
                        serial: 0,
                        event,
                        arrived: self.records,
                        last_touch: self.records,
                        done: true,
                        kernel: false,
                    });
                    return;
                };
                let node = env.node.map(str::to_string);
                let kernel = env.record_type != Some(RecordType::UserAvc);
                // Companions that arrived first. They stay: another record of the same serial
                // (a second denial of the syscall, the other journald transport's copy) may follow.
                let mut done = kernel && self.lonely >= LONELY_AFTER;
                for e in &self.early {
                    if e.serial == stamp.serial && e.node == node {
                        done |= attach(&mut event, &e.line);
                    }
                }
                self.pending.push_back(Pending {
                    node,
                    serial: stamp.serial,
                    event,
                    arrived: self.records,
                    last_touch: self.records,
                    done,
                    kernel,
                });
            }
            Ok(Built::NotAppArmor) => {}
            Ok(Built::LegacyText) => self.stats.legacy_ignored += 1,
            Err(e) => self.malformed(text, source, e.to_string(), out),
        }
    }

    fn companion(&mut self, env: &Envelope<'_>, t: RecordType, text: &str) {
        let Some(stamp) = env.stamp else { return };
        self.lonely = 0;
        let records = self.records;
        // Every record of the serial: one syscall can cause several denials, and with both of
        // journald's transports on, each record comes twice.
        for p in self
            .pending
            .iter_mut()
            .filter(|p| p.serial == stamp.serial && !p.done && p.node.as_deref() == env.node)
        {
            p.last_touch = records;
            if t == RecordType::Eoe {
                p.done = true;
            } else {
                merge(&mut p.event, env);
                p.done = completes(&p.event, t);
            }
        }
        // Remembered for records of the serial still to come (or whose companions come first),
        // reusing the oldest slot's buffer.
        let mut slot = if self.early.len() >= EARLY_COMPANIONS {
            self.early.pop_front().unwrap_or_default()
        } else {
            Early::default()
        };
        slot.line.clear();
        slot.line.push_str(text);
        slot.serial = stamp.serial;
        match (env.node, &mut slot.node) {
            (Some(node), Some(buf)) => {
                buf.clear();
                buf.push_str(node);
            }
            (node, slot_node) => *slot_node = node.map(str::to_string),
        }
        self.early.push_back(slot);
    }

    fn emit_ready(&mut self, out: &mut Vec<Output>) {
        while let Some(front) = self.pending.front() {
            // Each companion renews the wait, up to a bound: companions without end (forged
            // lines of a syslog file) must not hold this event and all after it.
            let expired = self.records.saturating_sub(front.last_touch) > self.grace_records
                || self.records.saturating_sub(front.arrived)
                    > WAIT_RENEWED_MAX * self.grace_records;
            if !(front.done || expired) {
                break;
            }
            if let Some(p) = self.pending.pop_front() {
                out.push(Output::Event(p.event));
            }
        }
    }
}

/// Merge an early companion line into an event; true when it was an EOE.
fn attach(event: &mut Event, line: &str) -> bool {
    if let Line::Record(env) = line::classify(line) {
        match env.record_type {
            Some(RecordType::Eoe) => return true,
            Some(t) => {
                merge(event, &env);
                return completes(event, t);
            }
            None => {}
        }
    }
    false
}

/// True when the companion just merged completes the event: a PROCTITLE after the SYSCALL. The
/// kernel writes a syscall's records in one order (`audit_log_exit`: SYSCALL, CWD, PATH …,
/// PROCTITLE, then EOE), and auditd does not write EOE to audit.log, so without this a live event
/// waited out the idle flush (2 ms) for an EOE that never comes. A PROCTITLE seen before the
/// SYSCALL (a reordering transport) completes nothing: the event keeps waiting as before.
fn completes(event: &Event, merged: RecordType) -> bool {
    merged == RecordType::Proctitle && event.process.as_ref().is_some_and(|p| p.syscall.is_some())
}

/// Companion records enrich `process`; `raw` keeps only the AppArmor record's own line(s).
fn merge(event: &mut Event, env: &Envelope<'_>) {
    let process = event.process.get_or_insert_with(Process::default);
    record::merge_companion(process, env);
}

/// A line that opens `msg='` (USER_AVC) and does not close it: dbus-daemon put a newline before
/// ` exe=`, so the rest comes on the next line.
fn opens_unterminated_msg(line: &str) -> bool {
    // Only AppArmor records matter; `find_apparmor_key` is a memchr-speed scan.
    let Some(at) = line::find_apparmor_key(line) else {
        return false;
    };
    let head = &line.as_bytes()[..at];
    match head.windows(5).rposition(|w| w == b"msg='") {
        Some(_) => memchr::memchr(b'\'', &line.as_bytes()[at..]).is_none(),
        None => false,
    }
}

/// The text of a USER_AVC continuation line (` exe="/usr/bin/dbus-daemon" sauid=… terminal=?'`),
/// possibly behind a syslog or kernel-log prefix. auditd's ENRICHED format appends `\x1d` and
/// the interpreted fields after the closing quote; they stay with the text returned.
fn continuation(line: &str) -> Option<&str> {
    let own = memchr::memchr(0x1d, line.as_bytes()).map_or(line, |gs| &line[..gs]);
    let p = own
        .find(" exe=")
        .or_else(|| own.strip_prefix("exe=").map(|_| 0))?;
    // A record of its own (it has a stamp) is no continuation, even with ` exe=` in it.
    if own.ends_with('\'') && !own.contains("audit(") {
        Some(line[p..].trim_start())
    } else {
        None
    }
}

/// Parse a single record given as text (a command-line argument, a journald kernel-transport
/// MESSAGE). Companion records are not attached.
pub fn parse_text(text: &str, source: &Source) -> Vec<Output> {
    let mut parser = Parser::with_grace(0);
    let mut out = Vec::new();
    for line in text.lines() {
        parser.push_line(line, source, &mut out);
    }
    parser.finish(&mut out);
    out
}

/// Parse a journald audit-transport entry: `MESSAGE` (e.g. `AVC apparmor="DENIED" …`), together
/// with `_AUDIT_TYPE`, `_AUDIT_ID` and `_SOURCE_REALTIME_TIMESTAMP` in microseconds — journald sets
/// that field from the audit stamp (`__REALTIME_TIMESTAMP` is when journald received the record;
/// use it only when the source timestamp is missing). `None` when the entry is not an AppArmor
/// record.
pub fn parse_journal_audit(
    message: &str,
    audit_type: u32,
    serial: u64,
    realtime_usec: u64,
    source: &Source,
) -> Option<Result<Box<Event>, String>> {
    let body = match message.split_once(' ') {
        Some((first, rest)) if first.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') => rest,
        _ => message,
    };
    line::find_apparmor_key(body)?;
    let env = Envelope {
        node: None,
        host: None,
        record_type: Some(RecordType::from_number(audit_type)),
        stamp: Some(line::Stamp {
            epoch: realtime_usec / 1_000_000,
            millis: ((realtime_usec / 1000) % 1000) as u32,
            serial,
        }),
        body,
        interpreted: false,
        kmsg_seq: None,
    };
    match record::build(&env, message, source) {
        Ok(Built::Event(e)) => Some(Ok(e)),
        Ok(_) => None,
        Err(e) => Some(Err(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Kind;

    /// A parser fed every line of `input` (not finished) and what it gave so far.
    fn pushed(input: &str) -> (Parser, Vec<Output>) {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for (i, l) in input.lines().enumerate() {
            p.push_line(l, &Source::Stdin { line: i as u64 + 1 }, &mut out);
        }
        (p, out)
    }

    fn events(input: &str) -> Vec<Event> {
        let (mut p, mut out) = pushed(input);
        p.finish(&mut out);
        out.into_iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(*e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn assembles_companions_in_any_order() {
        let input = "\
type=PROCTITLE msg=audit(1700000015.544:140): proctitle=2F7573722F62696E2F636F6E7461696E657264002D66
type=AVC msg=audit(1700000015.544:140): apparmor=\"DENIED\" operation=\"open\" profile=\"/usr/bin/containerd\" name=\"/sys/devices/system/cpu/online\" pid=3441879 comm=\"containerd\" requested_mask=\"wr\" denied_mask=\"wr\" fsuid=0 ouid=0
type=BPF msg=audit(1700000015.600:141): prog-id=69 op=UNLOAD
type=SYSCALL msg=audit(1700000015.544:140): arch=c000003e syscall=257 success=no exit=-13 ppid=1 pid=3441879 auid=4294967295 uid=0 ses=4294967295 comm=\"containerd\" exe=\"/usr/bin/containerd\" subj=/usr/bin/containerd key=(null)
type=CWD msg=audit(1700000015.544:140): cwd=\"/\"
type=EOE msg=audit(1700000015.544:140):
";
        let ev = events(input);
        assert_eq!(ev.len(), 1);
        let p = ev[0].process.as_ref().unwrap();
        assert_eq!(p.exe.as_deref(), Some("/usr/bin/containerd"));
        assert_eq!(
            p.cmdline.as_deref(),
            Some(&["/usr/bin/containerd".to_string(), "-f".to_string()][..])
        );
        assert_eq!(p.cwd.as_deref(), Some("/"));
        assert_eq!(p.key, None);
        assert_eq!(ev[0].raw.len(), 1, "raw keeps the AppArmor line only");
    }

    #[test]
    fn events_keep_input_order_and_eoe_completes() {
        let input = "\
type=AVC msg=audit(1.000:1): apparmor=\"DENIED\" operation=\"open\" profile=\"a\" name=\"/x\" pid=1 comm=\"c\"
type=AVC msg=audit(1.000:2): apparmor=\"DENIED\" operation=\"open\" profile=\"b\" name=\"/y\" pid=1 comm=\"c\"
type=EOE msg=audit(1.000:2):
";
        let (mut p, mut out) = pushed(input);
        // Serial 2 is complete but must wait for serial 1.
        assert!(out.is_empty());
        p.finish(&mut out);
        let profiles: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::Event(e) => e.profile().map(str::to_string),
                _ => None,
            })
            .collect();
        assert_eq!(profiles, ["a", "b"]);
    }

    #[test]
    fn grace_window_releases_events() {
        let mut p = Parser::with_grace(2);
        let mut out = Vec::new();
        p.push_line(
            "type=AVC msg=audit(1.000:1): apparmor=\"DENIED\" operation=\"open\" profile=\"a\" pid=1",
            &Source::Text,
            &mut out,
        );
        for serial in 2..5 {
            p.push_line(
                &format!("type=BPF msg=audit(1.000:{serial}): prog-id=1 op=LOAD"),
                &Source::Text,
                &mut out,
            );
        }
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn user_avc_continuation_is_joined() {
        let input = "type=USER_AVC msg=audit(1375323372.644:157): pid=363 uid=102 auid=4294967295 ses=4294967295 subj=unconfined msg='apparmor=\"DENIED\" operation=\"dbus_method_call\"  bus=\"system\" path=\"/org/freedesktop/DBus\" interface=\"org.freedesktop.DBus\" member=\"Hello\" mask=\"send\" name=\"org.freedesktop.DBus\" pid=2833 label=\"/usr/bin/x\" peer_label=\"unconfined\"\n exe=\"/usr/bin/dbus-daemon\" sauid=102 hostname=? addr=? terminal=?'\n";
        let ev = events(input);
        assert_eq!(ev.len(), 1);
        let e = &ev[0];
        assert_eq!(e.kind, Kind::Denied);
        assert_eq!(e.pid(), Some(2833));
        assert_eq!(e.field("exe"), Some("/usr/bin/dbus-daemon"));
        let outer = e.outer.as_ref().unwrap();
        assert_eq!(outer.get("pid"), Some("363"));
        assert_eq!(outer.get("subj"), Some("unconfined"));
        assert_eq!(e.raw.len(), 1);
        assert!(e.raw[0].contains('\n'));
    }

    /// Every AppArmor record of an audit event gets its companions: one syscall can cause several
    /// denials, all with the same serial.
    #[test]
    fn every_record_of_a_serial_gets_its_companions() {
        let avcs = "\
type=AVC msg=audit(1700000001.100:500): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/a\" pid=10 comm=\"x\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0
type=AVC msg=audit(1700000001.100:500): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/b\" pid=10 comm=\"x\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0
";
        let companions = "\
type=SYSCALL msg=audit(1700000001.100:500): arch=c000003e syscall=257 success=no exit=-13 ppid=1 pid=10 auid=0 uid=0 ses=1 tty=pts0 comm=\"x\" exe=\"/usr/bin/x\" subj=p key=(null)
type=CWD msg=audit(1700000001.100:500): cwd=\"/root\"
type=PATH msg=audit(1700000001.100:500): item=0 name=\"/a\" inode=5 mode=0100644 ouid=0 nametype=NORMAL
type=PROCTITLE msg=audit(1700000001.100:500): proctitle=78002D61
";
        // Companions after the records (auditd's order), and before them.
        for input in [
            format!("{avcs}{companions}type=EOE msg=audit(1700000001.100:500): \n"),
            format!("{companions}{avcs}"),
        ] {
            let ev = events(&input);
            assert_eq!(ev.len(), 2, "{input}");
            for e in &ev {
                let p = e
                    .process
                    .as_ref()
                    .unwrap_or_else(|| panic!("{:?}", e.name()));
                assert_eq!(p.exe.as_deref(), Some("/usr/bin/x"), "{:?}", e.name());
                assert_eq!(p.cwd.as_deref(), Some("/root"));
                assert_eq!(p.paths.len(), 1);
                assert_eq!(p.cmdline.as_ref().map(Vec::len), Some(2));
            }
        }
    }

    /// auditd writes no EOE: a PROCTITLE after the SYSCALL (the kernel's last record of a
    /// syscall) completes the event at once, so a live source does not wait out the idle flush.
    /// A PROCTITLE before the SYSCALL completes nothing.
    #[test]
    fn proctitle_after_syscall_completes_the_event() {
        let avc = "type=AVC msg=audit(1.000:9): apparmor=\"DENIED\" operation=\"open\" profile=\"a\" name=\"/x\" pid=1 comm=\"c\"\n";
        let syscall = "type=SYSCALL msg=audit(1.000:9): arch=c000003e syscall=257 success=no exit=-13 pid=1 comm=\"c\" exe=\"/usr/bin/c\"\n";
        let cwd = "type=CWD msg=audit(1.000:9): cwd=\"/root\"\n";
        let proctitle = "type=PROCTITLE msg=audit(1.000:9): proctitle=\"/usr/bin/c\"\n";

        let (p, out) = pushed(&format!("{avc}{syscall}{cwd}{proctitle}"));
        assert!(!p.has_pending());
        let [Output::Event(e)] = &out[..] else {
            panic!("{out:?}")
        };
        let process = e.process.as_ref().unwrap();
        assert_eq!(process.exe.as_deref(), Some("/usr/bin/c"));
        assert_eq!(process.cwd.as_deref(), Some("/root"));
        assert_eq!(process.cmdline.as_ref().map(Vec::len), Some(1));

        // Companions first (journald's other transport): complete as well.
        let (p, out) = pushed(&format!("{syscall}{proctitle}{avc}"));
        assert!(!p.has_pending());
        assert_eq!(out.len(), 1);

        // Out of the kernel's order: the SYSCALL may still come, so the event waits.
        for input in [
            format!("{avc}{proctitle}"),
            format!("{proctitle}{avc}{cwd}"),
        ] {
            let (p, out) = pushed(&input);
            assert!(p.has_pending(), "{input}");
            assert!(out.is_empty(), "{input}");
        }
    }

    /// A source whose AppArmor records never come with companions (kmsg, journald without
    /// auditd) stops holding them after LONELY_AFTER such events in a row; the first companion
    /// record seen makes events wait again.
    #[test]
    fn lonely_source_stops_waiting_for_companions() {
        let avc = |serial: u32| {
            format!(
                "type=AVC msg=audit(1.000:{serial}): apparmor=\"DENIED\" operation=\"open\" profile=\"a\" name=\"/x\" pid=1 comm=\"c\""
            )
        };
        let mut p = Parser::new();
        let mut out = Vec::new();
        for serial in 1..=LONELY_AFTER {
            p.push_line(&avc(serial), &Source::Text, &mut out);
            assert!(p.has_pending(), "event {serial} waits for companions");
            p.flush_idle(&mut out);
        }
        assert_eq!(out.len(), LONELY_AFTER as usize);
        out.clear();
        p.push_line(&avc(100), &Source::Text, &mut out);
        assert!(!p.has_pending());
        assert_eq!(out.len(), 1, "out at once");

        // A companion (here of an event already gone) and events wait again.
        p.push_line(
            "type=SYSCALL msg=audit(1.000:100): arch=c000003e syscall=257 pid=1 exe=\"/c\"",
            &Source::Text,
            &mut out,
        );
        p.push_line(&avc(101), &Source::Text, &mut out);
        assert!(p.has_pending());
        assert_eq!(out.len(), 1);
    }

    /// What does not make a source "lonely": dbus USER_AVC records (userspace, never any
    /// companions) released by the idle flush, and a burst of denials of one syscall released
    /// by the grace window before the syscall's companions come.
    #[test]
    fn user_avcs_and_grace_releases_do_not_stop_the_wait() {
        let kernel_event = |serial: u32| {
            format!(
                "type=AVC msg=audit(2.000:{serial}): apparmor=\"DENIED\" operation=\"open\" profile=\"a\" name=\"/x\" pid=1 comm=\"c\"\n\
                 type=SYSCALL msg=audit(2.000:{serial}): arch=c000003e syscall=257 pid=1 exe=\"/c\"\n\
                 type=PROCTITLE msg=audit(2.000:{serial}): proctitle=\"/c\""
            )
        };
        let mut p = Parser::new();
        let mut out = Vec::new();
        for serial in 1..=2 * LONELY_AFTER {
            let line = format!(
                "type=USER_AVC msg=audit(1.000:{serial}): pid=363 uid=102 auid=4294967295 ses=4294967295 subj=unconfined msg='apparmor=\"DENIED\" operation=\"dbus_method_call\" bus=\"system\" path=\"/org/freedesktop/DBus\" interface=\"org.freedesktop.DBus\" member=\"Hello\" mask=\"send\" name=\"org.freedesktop.DBus\" pid=2833 label=\"/usr/bin/x\" peer_label=\"unconfined\" exe=\"/usr/bin/dbus-daemon\" sauid=102 hostname=? addr=? terminal=?'"
            );
            p.push_line(&line, &Source::Text, &mut out);
            p.flush_idle(&mut out);
        }
        assert_eq!(out.len(), 2 * LONELY_AFTER as usize);
        out.clear();
        for line in kernel_event(1000).lines() {
            p.push_line(line, &Source::Text, &mut out);
        }
        let [Output::Event(e)] = &out[..] else {
            panic!("{out:?}")
        };
        assert!(e.process.is_some(), "the kernel AVC waited for its SYSCALL");

        // 150 denials of one syscall, its SYSCALL and PROCTITLE after them: the last 64 are
        // within the grace window and get them, as before the lonely count.
        let avc = "type=AVC msg=audit(3.000:2000): apparmor=\"DENIED\" operation=\"file_inherit\" profile=\"a\" name=\"/x\" pid=1 comm=\"c\"\n";
        let mut input = avc.repeat(150);
        input += "type=SYSCALL msg=audit(3.000:2000): arch=c000003e syscall=59 pid=1 exe=\"/c\"\n";
        input += "type=PROCTITLE msg=audit(3.000:2000): proctitle=\"/c\"\n";
        let ev = events(&input);
        assert_eq!(ev.len(), 150);
        let with = ev.iter().filter(|e| e.process.is_some()).count();
        assert!(
            ev[149].process.is_some() && with >= 60,
            "{with} with their process"
        );
    }

    /// EOE completes every record of its serial: nothing waits for the grace window.
    #[test]
    fn eoe_completes_every_record_of_its_serial() {
        let input = "\
type=AVC msg=audit(1.000:7): apparmor=\"DENIED\" operation=\"open\" profile=\"a\" name=\"/x\" pid=1 comm=\"c\"
type=AVC msg=audit(1.000:7): apparmor=\"DENIED\" operation=\"open\" profile=\"a\" name=\"/y\" pid=1 comm=\"c\"
type=EOE msg=audit(1.000:7):
";
        let (p, out) = pushed(input);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(!p.has_pending());
    }

    /// journald with both transports on: the kernel copy, the audit copy, then the companions
    /// through each. Both copies get the process (the duplicate filter keeps whichever comes
    /// first), and a PATH record seen twice is one path.
    #[test]
    fn journald_both_transports_both_copies_get_the_process() {
        let input = "\
audit: type=1400 audit(1700000001.100:600): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/a\" pid=10 comm=\"x\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0
type=1400 msg=audit(1700000001.100:600): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/a\" pid=10 comm=\"x\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0
audit: type=1300 audit(1700000001.100:600): arch=c000003e syscall=257 success=no exit=-13 ppid=1 pid=10 auid=0 uid=0 ses=1 comm=\"x\" exe=\"/usr/bin/x\" subj=p key=(null)
type=1300 msg=audit(1700000001.100:600): arch=c000003e syscall=257 success=no exit=-13 ppid=1 pid=10 auid=0 uid=0 ses=1 comm=\"x\" exe=\"/usr/bin/x\" subj=p key=(null)
audit: type=1302 audit(1700000001.100:600): item=0 name=\"/a\" inode=5 mode=0100644 ouid=0 nametype=NORMAL
type=1302 msg=audit(1700000001.100:600): item=0 name=\"/a\" inode=5 mode=0100644 ouid=0 nametype=NORMAL
type=1320 msg=audit(1700000001.100:600):
";
        let ev = events(input);
        assert_eq!(ev.len(), 2);
        for e in &ev {
            let p = e.process.as_ref().unwrap_or_else(|| panic!("{:?}", e.raw));
            assert_eq!(p.exe.as_deref(), Some("/usr/bin/x"), "{:?}", e.raw);
            assert_eq!(p.paths.len(), 1, "{:?}", p.paths);
        }
        assert_eq!(ev[0].fields, ev[1].fields);
    }

    /// /dev/kmsg writes control bytes, bytes >= 0x7f and `\` as `\xHH`; a dbus USER_AVC's newline
    /// before ` exe=` is `\x0a` there. Decoded, the record equals the netlink copy.
    #[test]
    fn kmsg_escapes_are_decoded() {
        let body = |nl: &str, bs: &str| {
            format!(
                "audit(1561053426.749:186): pid=640 uid=103 auid=4294967295 ses=4294967295 msg='apparmor=\"ALLOWED\" operation=\"dbus_method_call\"  bus=\"system\" path=\"/org/freedesktop/systemd1\" interface=\"org.freedesktop.systemd1.Manager\" member=\"A{bs}B\" mask=\"send\" name=\"org.freedesktop.systemd1\" pid=20596 label=\"/x\" peer_pid=1 peer_label=\"unconfined\"{nl}                  exe=\"/usr/bin/dbus-daemon\" sauid=103 hostname=? addr=? terminal=?'"
            )
        };
        let kmsg = format!("6,1234,5678,-;audit: type=1107 {}", body("\\x0a", "\\x5c"));
        let netlink = format!("type=1107 msg={}", body("\n", "\\"));
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.push_line(&kmsg, &Source::Kmsg { seq: 1234 }, &mut out);
        p.push_line(&netlink, &Source::Netlink, &mut out);
        p.finish(&mut out);
        let ev: Vec<&Event> = out
            .iter()
            .map(|o| match o {
                Output::Event(e) => &**e,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].field("member"), Some("A\\B"));
        assert_eq!(ev[0].field("exe"), Some("/usr/bin/dbus-daemon"));
        assert_eq!(ev[0].fields, ev[1].fields);
        assert_eq!(ev[0].outer, ev[1].outer);
        assert_eq!(ev[0].raw[0].matches('\n').count(), 1, "{:?}", ev[0].raw);
    }

    /// Escapes the kernel would not write stay as they are; bytes that are not UTF-8 after
    /// decoding are replaced. Nothing splits the record.
    #[test]
    fn kmsg_escapes_hostile_input() {
        let line = "6,1,2,-;audit: type=1400 audit(1.000:5): apparmor=\"DENIED\" operation=\"open\" profile=\"p\\xff\\xc3\" name=\"/a\\x\\x4\\xZZ\\x0a type=1400 audit(1.000:6):\" pid=1 comm=\"c\" tail=\\";
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.push_line(line, &Source::Kmsg { seq: 1 }, &mut out);
        p.finish(&mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        let Output::Event(e) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(e.profile(), Some("p\u{fffd}\u{fffd}"));
        assert_eq!(e.name(), Some("/a\\x\\x4\\xZZ\n type=1400 audit(1.000:6):"));
        assert_eq!(e.field("tail"), Some("\\"));
        assert_eq!(e.audit.as_ref().map(|a| a.serial), Some(5));
    }

    /// ENRICHED appends `\x1d` and the interpreted fields to the continuation line of a dbus
    /// USER_AVC.
    #[test]
    fn enriched_user_avc_continuation_is_joined() {
        let input = "type=USER_AVC msg=audit(1375323372.644:157): pid=363 uid=102 auid=4294967295 ses=4294967295 subj=unconfined msg='apparmor=\"DENIED\" operation=\"dbus_method_call\"  bus=\"system\" path=\"/org/freedesktop/DBus\" interface=\"org.freedesktop.DBus\" member=\"Hello\" mask=\"send\" name=\"org.freedesktop.DBus\" pid=2833 label=\"/usr/bin/x\" peer_label=\"unconfined\"\n exe=\"/usr/bin/dbus-daemon\" sauid=102 hostname=? addr=? terminal=?'\x1dUID=\"messagebus\" AUID=\"unset\" SAUID=\"messagebus\"\n";
        let ev = events(input);
        assert_eq!(ev.len(), 1);
        let e = &ev[0];
        assert_eq!(e.field("exe"), Some("/usr/bin/dbus-daemon"));
        assert_eq!(e.field("sauid"), Some("102"));
        let interpreted = e.interpreted.as_ref().expect("interpreted fields");
        assert_eq!(interpreted.get("SAUID"), Some("messagebus"));
        assert_eq!(e.raw.len(), 1);
    }

    /// A USER_AVC first line whose continuation never comes is released by the idle flush (a
    /// live source calls it once its input has been quiet past the companion wait).
    #[test]
    fn idle_flush_releases_a_held_user_avc() {
        let line = "Jun 20 17:57:06 ns1 kernel: [4835959.046111] audit: type=1107 audit(1561053426.749:186): pid=640 uid=103 auid=4294967295 ses=4294967295 msg='apparmor=\"ALLOWED\" operation=\"dbus_method_call\"  bus=\"system\" path=\"/org/freedesktop/systemd1\" interface=\"org.freedesktop.systemd1.Manager\" member=\"LookupDynamicUserByName\" mask=\"send\" name=\"org.freedesktop.systemd1\" pid=20596 label=\"/x\" peer_pid=1 peer_label=\"unconfined\"";
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.push_line(line, &Source::Text, &mut out);
        assert!(out.is_empty(), "held for its continuation");
        assert!(p.has_pending());
        p.flush_idle(&mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            matches!(&out[0], Output::Event(e) if e.field("member") == Some("LookupDynamicUserByName"))
        );
        assert!(!p.has_pending());
    }

    #[test]
    fn journal_audit_transport() {
        let e = parse_journal_audit(
            "AVC apparmor=\"DENIED\" operation=\"open\" profile=\"aatest\" name=\"/var/log/msmtp.log\" pid=109 comm=\"busybox-aa\" requested_mask=\"ac\" denied_mask=\"ac\" fsuid=0 ouid=0",
            1400,
            6,
            1_795_623_516_359_000,
            &Source::Text,
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.time().as_deref(), Some("2026-11-25T16:18:36.359Z"));
        assert_eq!(e.audit.as_ref().unwrap().serial, 6);
        assert_eq!(e.name(), Some("/var/log/msmtp.log"));
    }

    /// Regression: a file name holding `msg='` (any user can create `/tmp/msg='x`; the kernel
    /// hex-encodes only names with spaces, `"`, control or high bytes) made a kernel record look
    /// like a USER_AVC whose `msg='` was never closed: a `'` was appended to the body, the last
    /// field became `ouid=1000'` and the denial was rejected as malformed.
    #[test]
    fn a_name_holding_msg_quote_is_not_an_unclosed_user_avc() {
        let line = "type=AVC msg=audit(1.000:1): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/tmp/msg='x\" pid=1 comm=\"c\" requested_mask=\"r\" denied_mask=\"r\" fsuid=1000 ouid=1000";
        let (mut p, mut out) = pushed(line);
        p.finish(&mut out);
        let [Output::Event(e)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(e.name(), Some("/tmp/msg='x"));
        assert_eq!(e.field("ouid"), Some("1000"));
    }

    /// Regression: stamp-less records (dbus-daemon's syslog fallback) did not count as records
    /// gone by, so a kernel record waiting for companions before a flood of them never expired
    /// and every one of them was held behind it until the end of input (memory unbounded in
    /// `armorwatch parse`).
    #[test]
    fn stampless_records_count_towards_the_companion_wait() {
        let mut p = Parser::new();
        let mut out = Vec::new();
        p.push_line(
            "type=AVC msg=audit(1.000:1): apparmor=\"DENIED\" operation=\"open\" profile=\"a\" name=\"/x\" pid=1 comm=\"c\"",
            &Source::Text,
            &mut out,
        );
        let dbus = "Jul 31 17:10:35 host dbus[1692]: apparmor=\"DENIED\" operation=\"dbus_method_call\"  bus=\"session\" name=\"org.freedesktop.DBus\" path=\"/org/freedesktop/DBus\" interface=\"org.freedesktop.DBus\" member=\"Hello\" mask=\"send\" pid=2922 profile=\"/x\" peer_profile=\"unconfined\"";
        for _ in 0..1000 {
            p.push_line(dbus, &Source::Text, &mut out);
        }
        assert!(
            p.pending.len() <= DEFAULT_GRACE_RECORDS as usize + 1,
            "{} events held",
            p.pending.len()
        );
        assert!(out.len() >= 1000 - DEFAULT_GRACE_RECORDS as usize);
    }

    /// Regression: every companion of its serial renewed an event's wait, and every PATH item
    /// was added to it. A stream of forged PATH records with the serial of a waiting event (a
    /// syslog file takes lines from any local user) held that event, and every event after it,
    /// until the end of input, and grew its paths without bound.
    #[test]
    fn companions_without_end_neither_hold_an_event_nor_grow_it() {
        let mut p = Parser::new();
        let mut out = Vec::new();
        let avc = |serial: u32| {
            format!(
                "type=AVC msg=audit(1.000:{serial}): apparmor=\"DENIED\" operation=\"open\" profile=\"a\" name=\"/x\" pid=1 comm=\"c\""
            )
        };
        p.push_line(&avc(1), &Source::Text, &mut out);
        for i in 0..10_000 {
            p.push_line(&avc(i + 2), &Source::Text, &mut out);
            p.push_line(
                &format!("type=PATH msg=audit(1.000:1): item={i} name=\"/f{i}\" nametype=NORMAL"),
                &Source::Text,
                &mut out,
            );
        }
        assert!(
            p.pending.len() <= 10 * DEFAULT_GRACE_RECORDS as usize,
            "{} events held",
            p.pending.len()
        );
        let Some(Output::Event(first)) = out.first() else {
            panic!("the first event is still held")
        };
        assert_eq!(first.name(), Some("/x"));
        let paths = first.process.as_ref().map_or(0, |p| p.paths.len());
        assert!(paths <= record::MAX_PATHS, "{paths} paths");
    }

    /// Regression: the SYSCALL record's `key=` is written by the kernel as an untrusted string
    /// (hex when the audit rule's key holds a space, or for several keys, joined by 0x01), and
    /// `process.key` kept the hex text.
    #[test]
    fn a_hex_encoded_syscall_key_is_decoded() {
        let input = "\
type=AVC msg=audit(1.000:9): apparmor=\"DENIED\" operation=\"open\" profile=\"a\" name=\"/x\" pid=1 comm=\"c\"
type=SYSCALL msg=audit(1.000:9): arch=c000003e syscall=257 success=no exit=-13 pid=1 comm=\"c\" exe=\"/usr/bin/c\" key=6D79206B6579016F74686572
type=EOE msg=audit(1.000:9):
";
        let ev = events(input);
        let process = ev[0].process.as_ref().unwrap();
        assert_eq!(process.key.as_deref(), Some("my key\u{1}other"));
    }

    #[test]
    fn selinux_avc_is_not_an_event() {
        let ev = events(
            "type=AVC msg=audit(1720899391.878:361): avc:  denied  { connectto } for  pid=25089 comm=\"updatedb\" permissive=1",
        );
        assert!(ev.is_empty());
    }
}

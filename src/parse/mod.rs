//! Pure, synchronous parsing: text → AppArmor [`Event`]s. No I/O, no tokio.
//!
//! [`Parser`] is fed physical lines in input order and hands back events in the same order. It
//! joins the two physical lines of a dbus `USER_AVC` (the message contains a newline before
//! ` exe=`), and attaches the SYSCALL, PROCTITLE, CWD and PATH records that share an AppArmor
//! record's `(node, serial)` — in whatever order they come — until EOE, until a bounded number of
//! later records has gone by, or until [`Parser::finish`]. Its memory is bounded by that window,
//! whatever the input size.

pub mod fields;
pub mod line;
pub mod record;

use std::collections::VecDeque;

use crate::event::{Event, Process, Source};
use line::{Envelope, Line, LossReport, RecordType};
use record::Built;

/// Records (lines with an audit stamp) after which an AppArmor event stops waiting for companions
/// with its serial. auditd writes an event's records together, so a handful would do; 64 leaves
/// room for interleaving from many CPUs.
pub const DEFAULT_GRACE_RECORDS: u64 = 64;

/// How many companion records seen *before* their AppArmor record are remembered.
const EARLY_COMPANIONS: usize = 32;

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
    last_touch: u64,
    done: bool,
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
    records: u64,
    grace_records: u64,
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
            records: 0,
            grace_records,
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

    /// Stop waiting for companions (a live source calls this when its input has been quiet):
    /// every pending event is emitted. A held USER_AVC first line stays held.
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
                if env.stamp.is_some() {
                    self.records += 1;
                }
                match env.record_type {
                    Some(t) if t.is_companion() => self.companion(&env, t, text),
                    // A SELinux AVC shares the type: AppArmor's carry `apparmor=`.
                    Some(RecordType::Avc | RecordType::UserAvc) => {
                        if line::find_apparmor_key(env.body).is_some() {
                            self.apparmor(&env, text, source, out);
                        }
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
                        last_touch: self.records,
                        done: true,
                    });
                    return;
                };
                let node = env.node.map(str::to_string);
                // Companions that arrived first.
                let mut done = false;
                let mut i = 0;
                while i < self.early.len() {
                    if self.early[i].serial == stamp.serial && self.early[i].node == node {
                        if let Some(e) = self.early.remove(i) {
                            done |= attach(&mut event, &e.line);
                        }
                    } else {
                        i += 1;
                    }
                }
                self.pending.push_back(Pending {
                    node,
                    serial: stamp.serial,
                    event,
                    last_touch: self.records,
                    done,
                });
            }
            Ok(Built::NotAppArmor) => {}
            Ok(Built::LegacyText) => self.stats.legacy_ignored += 1,
            Err(e) => self.malformed(text, source, e.to_string(), out),
        }
    }

    fn companion(&mut self, env: &Envelope<'_>, t: RecordType, text: &str) {
        let Some(stamp) = env.stamp else { return };
        let records = self.records;
        if let Some(p) = self
            .pending
            .iter_mut()
            .rev()
            .find(|p| p.serial == stamp.serial && p.node.as_deref() == env.node && !p.done)
        {
            p.last_touch = records;
            if t == RecordType::Eoe {
                p.done = true;
            } else {
                merge(&mut p.event, env, text);
            }
            return;
        }
        if t == RecordType::Eoe {
            return;
        }
        // Possibly ahead of its AppArmor record: remember it, reusing the oldest slot's buffer.
        let mut slot = if self.early.len() >= EARLY_COMPANIONS {
            self.early.pop_front().unwrap_or_default()
        } else {
            Early::default()
        };
        slot.line.clear();
        slot.line.push_str(text);
        slot.serial = stamp.serial;
        slot.node = env.node.map(str::to_string);
        self.early.push_back(slot);
    }

    fn emit_ready(&mut self, out: &mut Vec<Output>) {
        while let Some(front) = self.pending.front() {
            let expired = self.records.saturating_sub(front.last_touch) > self.grace_records;
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
        if env.record_type == Some(RecordType::Eoe) {
            return true;
        }
        merge(event, &env, line);
    }
    false
}

fn merge(event: &mut Event, env: &Envelope<'_>, text: &str) {
    let process = event.process.get_or_insert_with(Process::default);
    record::merge_companion(process, env);
    event.raw.push(text.to_string());
}

/// A line that opens `msg='` (USER_AVC) and does not close it: dbus-daemon put a newline before
/// ` exe=`, so the rest comes on the next line.
fn opens_unterminated_msg(line: &str) -> bool {
    match line.find("msg='") {
        Some(p) => {
            let rest = &line[p + 5..];
            rest.contains("apparmor=") && !rest.contains('\'')
        }
        None => false,
    }
}

/// The text of a USER_AVC continuation line (` exe="/usr/bin/dbus-daemon" sauid=… terminal=?'`),
/// possibly behind a syslog or kernel-log prefix.
fn continuation(line: &str) -> Option<&str> {
    let p = line
        .find(" exe=")
        .or_else(|| line.strip_prefix("exe=").map(|_| 0))?;
    let cont = line[p..].trim_start();
    if cont.ends_with('\'') && !cont.contains("msg=audit(") && !cont.contains("audit(") {
        Some(cont)
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
/// with `_AUDIT_TYPE`, `_AUDIT_ID` and the entry's realtime timestamp (journald sets it from the
/// audit stamp). `None` when the entry is not an AppArmor record.
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

    fn events(input: &str) -> Vec<Box<Event>> {
        let mut p = Parser::new();
        let mut out = Vec::new();
        for (i, l) in input.lines().enumerate() {
            p.push_line(l, &Source::Stdin { line: i as u64 + 1 }, &mut out);
        }
        p.finish(&mut out);
        out.into_iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(e),
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
        assert_eq!(ev[0].raw.len(), 4);
    }

    #[test]
    fn events_keep_input_order_and_eoe_completes() {
        let input = "\
type=AVC msg=audit(1.000:1): apparmor=\"DENIED\" operation=\"open\" profile=\"a\" name=\"/x\" pid=1 comm=\"c\"
type=AVC msg=audit(1.000:2): apparmor=\"DENIED\" operation=\"open\" profile=\"b\" name=\"/y\" pid=1 comm=\"c\"
type=EOE msg=audit(1.000:2):
";
        let mut p = Parser::new();
        let mut out = Vec::new();
        for l in input.lines() {
            p.push_line(l, &Source::Text, &mut out);
        }
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

    #[test]
    fn selinux_avc_is_not_an_event() {
        let ev = events(
            "type=AVC msg=audit(1720899391.878:361): avc:  denied  { connectto } for  pid=25089 comm=\"updatedb\" permissive=1",
        );
        assert!(ev.is_empty());
    }
}

//! Recognising one physical line: which log form wrapped it (auditd, kernel log, syslog, kmsg,
//! `ausearch -i`, dbus syslog, bare text), its audit stamp, record type and body.
//!
//! Every form contains either an audit stamp `audit(…)` or, for the stamp-less forms (dbus-daemon's
//! syslog fallback, bare text), an `apparmor=` key; lines with neither are dropped after two
//! `memchr` scans, which is what keeps the parser near grep's speed on busy audit logs.

use memchr::memmem;
use std::sync::OnceLock;

/// The parsed `audit(…)` stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    /// Seconds since the epoch.
    pub epoch: u64,
    /// Milliseconds.
    pub millis: u32,
    /// Serial.
    pub serial: u64,
}

/// What kind of audit record a line holds, from its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// AVC (1400): AppArmor kernel records.
    Avc,
    /// USER_AVC (1107): user-space mediation (dbus-daemon, dbus-broker).
    UserAvc,
    /// Pre-2.6.36 AppArmor record types 1501–1507 (`APPARMOR_DENIED`, `UNKNOWN[1503]`, …).
    Legacy(u32),
    /// `type=APPARMOR` / `UNKNOWN[1500]` free text (`REJECTING r access to …`).
    LegacyText,
    /// SYSCALL (1300).
    Syscall,
    /// PATH (1302).
    Path,
    /// CWD (1307).
    Cwd,
    /// PROCTITLE (1327).
    Proctitle,
    /// EOE (1320): end of a multi-record event.
    Eoe,
    /// Anything else (PAM, SERVICE_START, SELinux AVCs …).
    Other(u32),
}

impl RecordType {
    /// Classify a `type=` token: a name (`AVC`), a number (`1400`) or `UNKNOWN[1503]`.
    pub fn from_token(token: &str) -> RecordType {
        let number = token
            .strip_prefix("UNKNOWN[")
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(token)
            .parse::<u32>()
            .ok();
        if let Some(n) = number {
            return RecordType::from_number(n);
        }
        match token {
            "AVC" => RecordType::Avc,
            "USER_AVC" => RecordType::UserAvc,
            "APPARMOR" => RecordType::LegacyText,
            "APPARMOR_AUDIT" => RecordType::Legacy(1501),
            "APPARMOR_ALLOWED" => RecordType::Legacy(1502),
            "APPARMOR_DENIED" => RecordType::Legacy(1503),
            "APPARMOR_HINT" => RecordType::Legacy(1504),
            "APPARMOR_STATUS" => RecordType::Legacy(1505),
            "APPARMOR_ERROR" => RecordType::Legacy(1506),
            "APPARMOR_KILL" => RecordType::Legacy(1507),
            "SYSCALL" => RecordType::Syscall,
            "PATH" => RecordType::Path,
            "CWD" => RecordType::Cwd,
            "PROCTITLE" => RecordType::Proctitle,
            "EOE" => RecordType::Eoe,
            _ => RecordType::Other(0),
        }
    }

    /// Classify a numeric type.
    pub fn from_number(n: u32) -> RecordType {
        match n {
            1400 => RecordType::Avc,
            1107 => RecordType::UserAvc,
            1500 => RecordType::LegacyText,
            1501..=1507 => RecordType::Legacy(n),
            1300 => RecordType::Syscall,
            1302 => RecordType::Path,
            1307 => RecordType::Cwd,
            1327 => RecordType::Proctitle,
            1320 => RecordType::Eoe,
            n => RecordType::Other(n),
        }
    }

    /// The numeric type.
    pub fn number(self) -> u32 {
        match self {
            RecordType::Avc => 1400,
            RecordType::UserAvc => 1107,
            RecordType::Legacy(n) => n,
            RecordType::LegacyText => 1500,
            RecordType::Syscall => 1300,
            RecordType::Path => 1302,
            RecordType::Cwd => 1307,
            RecordType::Proctitle => 1327,
            RecordType::Eoe => 1320,
            RecordType::Other(n) => n,
        }
    }

    /// SYSCALL, PATH, CWD, PROCTITLE or EOE: records that complete an AppArmor event.
    pub fn is_companion(self) -> bool {
        matches!(
            self,
            RecordType::Syscall
                | RecordType::Path
                | RecordType::Cwd
                | RecordType::Proctitle
                | RecordType::Eoe
        )
    }
}

/// One line taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// `node=` of an auditd line.
    pub node: Option<&'a str>,
    /// Host from a syslog prefix.
    pub host: Option<&'a str>,
    /// The record type (from `type=`, or the body's leading `type=` on old kernels; AVC when a
    /// stamped line carries `apparmor=` but no type, as netlink text does).
    pub record_type: Option<RecordType>,
    /// The audit stamp, when the line had one.
    pub stamp: Option<Stamp>,
    /// The `key=value` text after the stamp (or from `apparmor=` for stamp-less forms).
    pub body: &'a str,
    /// `ausearch -i` output: values already interpreted and unquoted.
    pub interpreted: bool,
    /// The /dev/kmsg sequence number of a raw kmsg record.
    pub kmsg_seq: Option<u64>,
}

/// What a line is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line with an audit stamp or an `apparmor=` key.
    Record(Envelope<'a>),
    /// The kernel announcing lost records: `kauditd_printk_skb: N callbacks suppressed`,
    /// `audit: audit_lost=N …`, `audit: backlog limit exceeded`.
    Loss {
        /// What was reported.
        what: LossReport,
    },
    /// A line that looks like AppArmor but whose envelope is broken (e.g. a mangled stamp).
    Malformed {
        /// Why.
        reason: String,
    },
    /// Nothing for us.
    Other,
}

/// A loss notice from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossReport {
    /// `kauditd_printk_skb: N callbacks suppressed`: N records not printed.
    PrintkSuppressed(u64),
    /// `audit_lost=N`: the kernel's running total of lost audit records.
    AuditLost(u64),
    /// `audit: backlog limit exceeded`.
    BacklogExceeded,
}

fn finder(
    needle: &'static str,
    cell: &'static OnceLock<memmem::Finder<'static>>,
) -> &'static memmem::Finder<'static> {
    cell.get_or_init(|| memmem::Finder::new(needle))
}

static AUDIT_OPEN: OnceLock<memmem::Finder<'static>> = OnceLock::new();
static APPARMOR_KEY: OnceLock<memmem::Finder<'static>> = OnceLock::new();

/// Find `apparmor=` at a token boundary.
pub fn find_apparmor_key(line: &str) -> Option<usize> {
    let f = finder("apparmor=", &APPARMOR_KEY);
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(p) = f.find(&bytes[from..]) {
        let at = from + p;
        let boundary = at == 0 || matches!(bytes[at - 1], b' ' | b'\'' | b'"' | b'\t' | b'\x1d');
        // AppArmor writes `apparmor="DENIED"` (`apparmor=DENIED` after `ausearch -i`); the kernel
        // command line's `apparmor=1` is not a record.
        let value = bytes.get(at + 9).copied();
        if boundary && matches!(value, Some(b'"' | b'A'..=b'Z')) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Take one physical line apart. `line` has no trailing newline.
pub fn classify(line: &str) -> Line<'_> {
    let bytes = line.as_bytes();
    let Some(open) = finder("audit(", &AUDIT_OPEN).find(bytes) else {
        if let Some(at) = find_apparmor_key(line) {
            return Line::Record(stampless(line, at));
        }
        return loss_notice(line).map_or(Line::Other, |what| Line::Loss { what });
    };
    let (prefix, after_open) = (&line[..open], &line[open + 6..]);
    let Some((stamp, interpreted, rest)) = parse_stamp(after_open) else {
        if find_apparmor_key(line).is_some() {
            return Line::Malformed {
                reason: "malformed audit stamp".to_string(),
            };
        }
        return loss_notice(line).map_or(Line::Other, |what| Line::Loss { what });
    };
    let mut env = Envelope {
        node: None,
        host: None,
        record_type: None,
        stamp: Some(stamp),
        body: rest,
        interpreted,
        kmsg_seq: None,
    };
    let mut prefix = prefix;
    if let Some((seq, after)) = kmsg_prefix(prefix) {
        env.kmsg_seq = Some(seq);
        prefix = after;
    }
    if let Some(t) = prefix.strip_suffix("msg=") {
        // auditd: `[node=HOST ]type=NAME msg=audit(…)`, possibly behind a `file:` grep prefix.
        let t = t.trim_end();
        if let Some(tp) = t.rfind("type=") {
            env.record_type = Some(RecordType::from_token(&t[tp + 5..]));
            let before = &t[..tp];
            if let Some(np) = before.rfind("node=") {
                env.node = before[np + 5..].split_whitespace().next();
            }
        }
    } else if let Some(tp) = prefix.rfind("type=") {
        // kernel log: `… audit: type=1400 audit(…)`.
        let token = prefix[tp + 5..].trim_end();
        if !token.is_empty() && !token.contains(' ') {
            env.record_type = Some(RecordType::from_token(token));
        }
        env.host = syslog_host(&prefix[..tp]);
    } else {
        env.host = syslog_host(prefix);
    }
    if env.record_type.is_none() {
        // Old kernels: `audit(…): type=1503 operation=…`; netlink text: `audit(…): apparmor=…`.
        let body = env.body.trim_start();
        if let Some(t) = body.strip_prefix("type=") {
            let end = t.find(' ').unwrap_or(t.len());
            env.record_type = Some(RecordType::from_token(&t[..end]));
            env.body = &t[end..];
        } else if find_apparmor_key(env.body).is_some() {
            env.record_type = Some(RecordType::Avc);
        } else {
            return Line::Other;
        }
    } else if let Some(t) = env.body.trim_start().strip_prefix("type=") {
        // `type=APPARMOR_DENIED msg=audit(…):  type=1503 operation=…`: the inner type repeats.
        let end = t.find(' ').unwrap_or(t.len());
        env.body = &t[end..];
    }
    Line::Record(env)
}

/// A stamp-less line: dbus-daemon's syslog fallback or bare `apparmor=…` text.
fn stampless(line: &str, at: usize) -> Envelope<'_> {
    let prefix = &line[..at];
    let host = syslog_host(prefix);
    Envelope {
        node: None,
        host,
        record_type: Some(RecordType::Avc),
        stamp: None,
        body: &line[at..],
        interpreted: false,
        kmsg_seq: None,
    }
}

/// Parse what follows `audit(`: `EPOCH.MS:SERIAL): ` or, from `ausearch -i`,
/// `MM/DD/YYYY HH:MM:SS.mmm:SERIAL) : `. Returns the stamp, whether it was interpreted, and the
/// body.
pub fn parse_stamp(s: &str) -> Option<(Stamp, bool, &str)> {
    let close = s.find(')')?;
    let inner = &s[..close];
    let rest = &s[close + 1..];
    let (body, interpreted_sep) = if let Some(b) = rest.strip_prefix(": ") {
        (b, false)
    } else if let Some(b) = rest.strip_prefix(" : ") {
        (b, true)
    } else if let Some(b) = rest.strip_prefix(':') {
        (b, false)
    } else {
        return None;
    };
    let colon = inner.rfind(':')?;
    let serial = parse_u64(&inner[colon + 1..])?;
    let time = &inner[..colon];
    if let Some((date, clock)) = time.split_once(' ') {
        // ausearch -i: local time as written by ausearch; taken as UTC (the log gives no zone).
        let mut d = date.split('/');
        let month: u32 = d.next()?.parse().ok()?;
        let day: u32 = d.next()?.parse().ok()?;
        let year = d.next()?;
        // `%x` of the C locale has a two-digit year, read with POSIX's `%y` pivot.
        let year: i64 = match year.parse().ok()? {
            y @ 0..=68 if year.len() == 2 => 2000 + y,
            y @ 69..=99 if year.len() == 2 => 1900 + y,
            y => y,
        };
        let (hms, ms) = clock.split_once('.')?;
        let mut t = hms.split(':');
        let h: u64 = t.next()?.parse().ok()?;
        let m: u64 = t.next()?.parse().ok()?;
        let sec: u64 = t.next()?.parse().ok()?;
        // ausearch writes years of two or four digits and three-digit milliseconds; anything
        // larger would overflow the epoch computed from it.
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || !(0..=9999).contains(&year)
            || h > 23
            || m > 59
            || sec > 60
            || ms.len() > 3
        {
            return None;
        }
        let days = crate::event::days_from_civil(year, month, day);
        let epoch = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + sec;
        let millis = u32::try_from(parse_u64(ms)?).ok()?;
        return Some((
            Stamp {
                epoch,
                millis,
                serial,
            },
            true,
            body,
        ));
    }
    let (sec, ms) = time.split_once('.')?;
    let epoch = parse_u64(sec)?;
    let millis = parse_u64(ms)?;
    if ms.len() > 3 || millis > 999 {
        return None;
    }
    Some((
        Stamp {
            epoch,
            millis: millis as u32,
            serial,
        },
        interpreted_sep,
        body,
    ))
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A raw /dev/kmsg record (`PRIO,SEQ,USEC,FLAGS;…`, read live or from a saved dump) that holds
/// escapes: the kernel writes control bytes, bytes >= 0x7f and `\` itself as `\xHH` there (a dbus
/// USER_AVC's newline before ` exe=` comes as `\x0a`). Lines of other forms are turned away by
/// their first byte or by having no `\`, so the check costs nothing on an audit.log.
pub fn is_escaped_kmsg(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.first().is_some_and(u8::is_ascii_digit)
        && memchr::memchr(b'\\', bytes).is_some()
        && kmsg_prefix(line).is_some()
}

/// Undo /dev/kmsg's `\xHH` escapes: the bytes go to `bytes`, the text (invalid UTF-8 replaced)
/// to `text`; both are cleared first, so a caller reuses them. A `\` not followed by `x` and two
/// hex digits, which the kernel does not write, stays as it is.
pub fn unescape_kmsg(line: &str, bytes: &mut Vec<u8>, text: &mut String) {
    bytes.clear();
    text.clear();
    let src = line.as_bytes();
    let mut from = 0;
    while let Some(p) = memchr::memchr(b'\\', &src[from..]) {
        let at = from + p;
        bytes.extend_from_slice(&src[from..at]);
        let escape = match src.get(at + 1..at + 4) {
            Some([b'x', hi, lo]) => hex_digit(*hi).zip(hex_digit(*lo)),
            _ => None,
        };
        match escape {
            Some((hi, lo)) => {
                bytes.push((hi << 4) | lo);
                from = at + 4;
            }
            None => {
                bytes.push(b'\\');
                from = at + 1;
            }
        }
    }
    bytes.extend_from_slice(&src[from..]);
    text.push_str(&String::from_utf8_lossy(bytes));
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `PRIO,SEQ,USEC,FLAGS;` at the start of a raw /dev/kmsg record.
fn kmsg_prefix(prefix: &str) -> Option<(u64, &str)> {
    let semi = prefix.find(';')?;
    let head = &prefix[..semi];
    let mut parts = head.split(',');
    let _prio: u64 = parse_u64(parts.next()?)?;
    let seq = parse_u64(parts.next()?)?;
    let _usec = parse_u64(parts.next()?)?;
    Some((seq, &prefix[semi + 1..]))
}

/// The host of a syslog prefix: the word before the program tag (`kernel:`, `dbus[1692]:`),
/// when what comes before it is a timestamp.
fn syslog_host(prefix: &str) -> Option<&str> {
    let mut prefix = prefix.trim_end();
    // Drop `[ 123.456]` / `[Tue Nov 14 22:14:46 2023]` and `audit:`.
    loop {
        let before = prefix;
        if let Some(p) = prefix.strip_suffix("audit:") {
            prefix = p.trim_end();
        }
        if prefix.ends_with(']') {
            if let Some(open) = prefix.rfind('[') {
                let inner = &prefix[open + 1..prefix.len() - 1];
                if inner.trim().chars().all(|c| c.is_ascii_digit() || c == '.')
                    || inner.contains(':')
                {
                    prefix = prefix[..open].trim_end();
                }
            }
        }
        if prefix == before {
            break;
        }
    }
    let mut words = prefix.rsplitn(3, ' ');
    let tag = words.next()?;
    if !tag.ends_with(':') {
        return None;
    }
    let host = words.next()?;
    let rest = words.next()?;
    let looks_like_time = |w: &str| {
        w.contains(':')
            || w.chars()
                .all(|c| c.is_ascii_digit() || c == '-' || c == '.')
    };
    if host.is_empty() || looks_like_time(host) || host.contains('=') {
        return None;
    }
    // What precedes the host must end in a time of day.
    let last = rest.rsplit(' ').next().unwrap_or(rest);
    if !last.contains(':') {
        return None;
    }
    Some(host)
}

/// Kernel notices that report lost records.
fn loss_notice(line: &str) -> Option<LossReport> {
    static PRINTK: OnceLock<memmem::Finder<'static>> = OnceLock::new();
    static LOST: OnceLock<memmem::Finder<'static>> = OnceLock::new();
    static BACKLOG: OnceLock<memmem::Finder<'static>> = OnceLock::new();
    let bytes = line.as_bytes();
    if let Some(p) = finder("kauditd_printk_skb: ", &PRINTK).find(bytes) {
        let rest = &line[p + 20..];
        let n: u64 = rest.split(' ').next()?.parse().ok()?;
        if rest.contains("callbacks suppressed") {
            return Some(LossReport::PrintkSuppressed(n));
        }
    }
    if let Some(p) = finder("audit_lost=", &LOST).find(bytes) {
        let n: u64 = line[p + 11..].split(' ').next()?.parse().ok()?;
        return Some(LossReport::AuditLost(n));
    }
    if finder("audit: backlog limit exceeded", &BACKLOG)
        .find(bytes)
        .is_some()
    {
        return Some(LossReport::BacklogExceeded);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(line: &str) -> Envelope<'_> {
        match classify(line) {
            Line::Record(e) => e,
            other => panic!("not a record: {other:?}"),
        }
    }

    #[test]
    fn auditd_raw_with_node() {
        let e = rec(r#"node=web1 type=AVC msg=audit(1700000000.123:4567): apparmor="DENIED" x=1"#);
        assert_eq!(e.node, Some("web1"));
        assert_eq!(e.record_type, Some(RecordType::Avc));
        assert_eq!(
            e.stamp,
            Some(Stamp {
                epoch: 1_700_000_000,
                millis: 123,
                serial: 4567
            })
        );
        assert!(e.body.starts_with("apparmor="));
    }

    #[test]
    fn kernel_forms_and_hosts() {
        let e = rec(
            r#"Jul 24 12:25:33 spriggan kernel: [42416.178567] type=1400 audit(1279967133.365:54): apparmor="DENIED""#,
        );
        assert_eq!(e.host, Some("spriggan"));
        assert_eq!(e.record_type, Some(RecordType::Avc));
        let e = rec(
            r#"2026-05-26T19:47:43.396634-04:00 philippe-OMEN-25L kernel: audit: type=1400 audit(1779839263.395:472): apparmor="DENIED""#,
        );
        assert_eq!(e.host, Some("philippe-OMEN-25L"));
        let e =
            rec(r#"5,357,10976144,-;audit: type=1400 audit(1795623516.359:5): apparmor="DENIED""#);
        assert_eq!(e.kmsg_seq, Some(357));
        assert_eq!(e.host, None);
        let e = rec(
            r#"[Tue Nov 14 22:14:46 2023] audit: type=1400 audit(1700000086.685:866): apparmor="DENIED""#,
        );
        assert_eq!(e.host, None);
        assert_eq!(e.stamp.map(|s| s.serial), Some(866));
    }

    #[test]
    fn old_kernel_type_after_stamp() {
        let e = rec(
            r#"Sep  7 17:47:53 rix kernel: audit(1189201672.746:537): type=1503 operation="file_lock""#,
        );
        assert_eq!(e.record_type, Some(RecordType::Legacy(1503)));
        assert_eq!(e.body.trim_start(), r#"operation="file_lock""#);
        assert_eq!(e.host, Some("rix"));
    }

    /// Regression: ausearch writes the date with `strftime("%x")`, which in the C/POSIX locale
    /// (`LANG=C.UTF-8`, the default of many server images) has a two-digit year. The year was
    /// taken as year 24 AD, the epoch came out negative, and every record of such output was
    /// rejected as malformed.
    #[test]
    fn ausearch_interpreted_stamp_with_two_digit_year() {
        let e =
            rec("type=AVC msg=audit(04/24/24 20:21:11.708:1626) : apparmor=DENIED operation=open");
        let s = e.stamp.unwrap();
        assert_eq!(s.serial, 1626);
        assert_eq!(
            crate::event::format_rfc3339_millis(s.epoch, s.millis),
            "2024-04-24T20:21:11.708Z"
        );
        // POSIX's pivot for `%y`: 69–99 are 1969–1999, 00–68 are 2000–2068.
        for (stamp, want) in [
            ("01/01/70 00:00:01.000:1", "1970-01-01T00:00:01.000Z"),
            ("12/31/68 23:59:59.000:1", "2068-12-31T23:59:59.000Z"),
        ] {
            let (s, _, _) = parse_stamp(&format!("{stamp}) : x=1")).unwrap();
            assert_eq!(crate::event::format_rfc3339_millis(s.epoch, s.millis), want);
        }
    }

    #[test]
    fn ausearch_interpreted_stamp() {
        let e = rec(
            "type=AVC msg=audit(04/24/2024 20:21:11.708:1626) : apparmor=DENIED operation=open",
        );
        assert!(e.interpreted);
        let s = e.stamp.unwrap();
        assert_eq!(s.serial, 1626);
        assert_eq!(s.millis, 708);
        assert_eq!(
            crate::event::format_rfc3339_millis(s.epoch, s.millis),
            "2024-04-24T20:21:11.708Z"
        );
    }

    #[test]
    fn stampless_forms() {
        let e = rec(
            r#"Jul 31 17:10:35 dbusdev-saucy-amd64 dbus[1692]: apparmor="DENIED" operation="dbus_method_call""#,
        );
        assert_eq!(e.host, Some("dbusdev-saucy-amd64"));
        assert!(e.stamp.is_none());
        assert!(e.body.starts_with("apparmor="));
    }

    #[test]
    fn mangled_stamp_is_malformed_only_when_apparmor() {
        assert!(matches!(
            classify(r#"type=AVC msg=audit(12799====8288.415:39): apparmor="DENIED""#),
            Line::Malformed { .. }
        ));
        assert_eq!(
            classify("type=BPF msg=audit(12x:1): prog-id=1"),
            Line::Other
        );
    }

    #[test]
    fn kernel_command_line_is_not_a_record() {
        assert_eq!(
            classify("[    0.000000] Command line: console=ttyS0 apparmor=1 security=apparmor"),
            Line::Other
        );
    }

    #[test]
    fn kmsg_unescape() {
        let (mut bytes, mut text) = (Vec::new(), String::new());
        let mut un = |line: &str| {
            unescape_kmsg(line, &mut bytes, &mut text);
            text.clone()
        };
        assert_eq!(un(r"6,1,2,-;a\x0ab\x5cc\x5Cd"), "6,1,2,-;a\nb\\c\\d");
        assert_eq!(un(r"\x\x4\xzz\y\"), r"\x\x4\xzz\y\");
        assert_eq!(un(r"\xc3\xa9\xff"), "\u{e9}\u{fffd}");
        assert!(is_escaped_kmsg(r"6,1,2,-;audit: a\x0ab"));
        assert!(!is_escaped_kmsg("6,1,2,-;audit: plain"));
        assert!(!is_escaped_kmsg(
            r"2026-05-26T19:47:43.396634-04:00 host kernel: a\x0a;b"
        ));
        assert!(!is_escaped_kmsg(r"type=USER_AVC msg=audit(1.000:1): a\x0a"));
    }

    /// Regression: the year of an `ausearch -i` stamp was taken at any size, and the epoch
    /// computed from it overflowed (a panic in debug builds, a wrapped time in release); its
    /// milliseconds were taken at any size too and cut to `u32`.
    #[test]
    fn interpreted_stamp_out_of_range_is_rejected() {
        for stamp in [
            "01/01/9223372036854775807 00:00:00.000:1",
            "01/01/999999999999 00:00:00.000:1",
            "04/24/2024 20:21:11.4294967296:1",
            "04/24/2024 20:21:11.1000:1",
        ] {
            assert_eq!(parse_stamp(&format!("{stamp}) : x=1")), None, "{stamp}");
        }
        assert!(parse_stamp("12/31/9999 23:59:59.999:1) : x=1").is_some());
    }

    #[test]
    fn loss_notices() {
        assert_eq!(
            classify("[445828.720133] kauditd_printk_skb: 12 callbacks suppressed"),
            Line::Loss {
                what: LossReport::PrintkSuppressed(12)
            }
        );
        assert_eq!(
            classify(
                "[    9.074416] audit: audit_lost=1 audit_rate_limit=0 audit_backlog_limit=64"
            ),
            Line::Loss {
                what: LossReport::AuditLost(1)
            }
        );
    }
}

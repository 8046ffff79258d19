//! The domain types every stage shares: one AppArmor event (JSON schema 1).
//!
//! The JSON form is a contract documented field by field in `docs/event-schema.md`; change it only
//! together with that document and the golden files under `tests/golden/`.

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};
use std::fmt;

/// The version of the event JSON (`"schema": 1`).
pub const EVENT_SCHEMA: u32 = 1;

/// What AppArmor said about the access, from the record's `apparmor=` field (or, for legacy
/// records, from the record type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Access denied by an enforcing profile.
    Denied,
    /// Access that would have been denied, allowed because the profile is in complain mode.
    Allowed,
    /// Access allowed and logged because of an `audit` rule.
    Audit,
    /// Policy change: profile load, replace or remove.
    Status,
    /// A hint for the tools (e.g. `clone`).
    Hint,
    /// AppArmor reported an error.
    Error,
    /// Access denied and the task killed (kill-mode profile).
    Killed,
    /// `apparmor="AUTO"` (auto-generated; rarely seen).
    Auto,
}

impl Kind {
    /// Map the value of `apparmor=` (case-insensitive) to a kind.
    pub fn from_apparmor_value(value: &str) -> Option<Kind> {
        let kind = match value.to_ascii_uppercase().as_str() {
            "DENIED" => Kind::Denied,
            "ALLOWED" => Kind::Allowed,
            "AUDIT" => Kind::Audit,
            "STATUS" => Kind::Status,
            "HINT" => Kind::Hint,
            "ERROR" => Kind::Error,
            "KILLED" | "KILL" => Kind::Killed,
            "AUTO" => Kind::Auto,
            _ => return None,
        };
        Some(kind)
    }

    /// Map a legacy record type (`APPARMOR_DENIED`, `1503`, …) to a kind.
    pub fn from_legacy_type(number: u32) -> Option<Kind> {
        let kind = match number {
            1501 => Kind::Audit,
            1502 => Kind::Allowed,
            1503 => Kind::Denied,
            1504 => Kind::Hint,
            1505 => Kind::Status,
            1506 => Kind::Error,
            1507 => Kind::Killed,
            _ => return None,
        };
        Some(kind)
    }

    /// The lowercase name used in JSON (`"denied"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Denied => "denied",
            Kind::Allowed => "allowed",
            Kind::Audit => "audit",
            Kind::Status => "status",
            Kind::Hint => "hint",
            Kind::Error => "error",
            Kind::Killed => "killed",
            Kind::Auto => "auto",
        }
    }
}

/// The audit stamp `audit(EPOCH.MILLIS:SERIAL)` plus the record type and the optional `node=`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct AuditStamp {
    /// Seconds since the Unix epoch; 0 for the zero stamp `audit(0000000000.000:0000)`.
    pub epoch: u64,
    /// Milliseconds (0–999).
    pub millis: u32,
    /// The audit serial; records of one event share it.
    pub serial: u64,
    /// The numeric record type (1400 for AVC, 1107 for USER_AVC, …).
    #[serde(rename = "type")]
    pub record_type: u32,
    /// `node=` of the auditd line, for records forwarded from other hosts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl AuditStamp {
    /// True for the zero stamp, which carries no time and no usable serial.
    pub fn is_zero(&self) -> bool {
        self.epoch == 0 && self.millis == 0 && self.serial == 0
    }
}

/// Ordered `key=value` pairs, values decoded (quotes removed, hex decoded). Serialized as a JSON
/// object in record order. A key that appears twice keeps its first value in JSON; all pairs
/// stay available to Rust callers.
///
/// Keys and values live in one string, so a record's fields cost two allocations (and a clone
/// two copies), not two per pair.
#[derive(Clone, Default)]
pub struct Fields {
    /// Every key followed by its value, in record order.
    text: String,
    /// Per pair: where its key starts, where its value starts (the key's end) and ends.
    spans: Vec<[usize; 3]>,
}

impl Fields {
    /// Room for `pairs` pairs of `bytes` bytes in all.
    pub fn with_capacity(pairs: usize, bytes: usize) -> Fields {
        Fields {
            text: String::with_capacity(bytes),
            spans: Vec::with_capacity(pairs),
        }
    }

    fn pair(&self, [k, v, end]: [usize; 3]) -> (&str, &str) {
        (&self.text[k..v], &self.text[v..end])
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        // Keys compared as bytes: only the value found is sliced (with its boundary checks).
        let text = self.text.as_bytes();
        self.spans
            .iter()
            .find(|[k, v, _]| &text[*k..*v] == key.as_bytes())
            .map(|&[_, v, end]| &self.text[v..end])
    }

    /// True when no pair is present.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Iterate over the pairs in record order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans.iter().map(|s| self.pair(*s))
    }

    /// Append a pair.
    pub fn push(&mut self, key: &str, value: &str) {
        let k = self.text.len();
        self.text.push_str(key);
        let v = self.text.len();
        self.text.push_str(value);
        self.spans.push([k, v, self.text.len()]);
    }

    /// Give the first `key` the value `value` (append the pair when there is none).
    pub fn set(&mut self, key: &str, value: &str) {
        if self.get(key).is_none() {
            return self.push(key, value);
        }
        let mut replaced = false;
        let mut next = Fields::with_capacity(self.len(), self.text.len() + value.len());
        for (k, v) in self.iter() {
            if k == key && !replaced {
                replaced = true;
                next.push(k, value);
            } else {
                next.push(k, v);
            }
        }
        *self = next;
    }
}

impl PartialEq for Fields {
    fn eq(&self, other: &Fields) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Fields {}

/// The same hash as the `Vec<(String, String)>` the pairs once were, so the duplicate filter's
/// keys saved by an older build still match.
impl std::hash::Hash for Fields {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_usize(self.len());
        for (k, v) in self.iter() {
            k.hash(state);
            v.hash(state);
        }
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Fields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Fields {
        let mut f = Fields::default();
        for (k, v) in pairs {
            f.push(k.as_ref(), v.as_ref());
        }
        f
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // JSON objects with duplicate keys are ambiguous; keep the first occurrence. A record
        // has a dozen pairs, where a scan of the earlier keys is cheapest; a hostile line can
        // have a hundred thousand, where the scan would take minutes.
        const SCAN_MAX: usize = 32;
        let mut seen =
            (self.len() > SCAN_MAX).then(|| std::collections::HashSet::with_capacity(self.len()));
        let mut map = serializer.serialize_map(None)?;
        for (i, (k, v)) in self.iter().enumerate() {
            let repeated = match &mut seen {
                Some(seen) => !seen.insert(k),
                None => self.iter().take(i).any(|(prev, _)| prev == k),
            };
            if !repeated {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// One path item from an auditd `PATH` record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PathItem {
    /// `item=`: the index in the syscall.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
    /// `name=`, decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `inode=`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
    /// `mode=` as written (octal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `ouid=`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ouid: Option<u32>,
    /// `nametype=` (NORMAL, PARENT, CREATE, DELETE …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nametype: Option<String>,
}

/// The process behind an event, assembled from auditd's SYSCALL, PROCTITLE, CWD and PATH records
/// that share the AppArmor record's serial.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Process {
    /// `exe=` of SYSCALL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// `comm=` of SYSCALL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// `pid=` of SYSCALL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// `ppid=` of SYSCALL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    /// `uid=` of SYSCALL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// `auid=` of SYSCALL (4294967295 means unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auid: Option<u32>,
    /// `ses=` of SYSCALL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ses: Option<u32>,
    /// `tty=` of SYSCALL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<String>,
    /// `subj=`: the task's AppArmor label as seen by audit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subj: Option<String>,
    /// `syscall=` (number, or name in `ausearch -i` output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// `success=`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<String>,
    /// `exit=`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// `key=` of SYSCALL, when it is not `(null)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// PROCTITLE decoded into argv.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<Vec<String>>,
    /// `cwd=` of CWD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// PATH records in item order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathItem>,
}

/// Where an event came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// A file read by path, with the 1-based line number of the AppArmor record.
    File {
        /// The path as given.
        path: std::sync::Arc<str>,
        /// 1-based line number.
        line: u64,
    },
    /// Standard input, with the 1-based line number.
    Stdin {
        /// 1-based line number.
        line: u64,
    },
    /// A record handed over directly (command line argument, test).
    Text,
    /// A journald entry.
    Journald {
        /// The entry's cursor.
        cursor: String,
        /// `_TRANSPORT` of the entry (`kernel` or `audit`).
        transport: String,
    },
    /// A /dev/kmsg record.
    Kmsg {
        /// The kmsg sequence number.
        seq: u64,
    },
    /// The audit netlink multicast socket.
    Netlink,
}

/// One AppArmor event (schema 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// From `apparmor=`.
    pub kind: Kind,
    /// The audit stamp, or None when the record had none or the zero stamp.
    pub audit: Option<AuditStamp>,
    /// Every `key=value` of the AppArmor record itself, decoded, in record order.
    pub fields: Fields,
    /// For USER_AVC: the fields of the outer record (bus daemon pid, uid, auid, ses, subj).
    pub outer: Option<Fields>,
    /// auditd ENRICHED interpretations (after the 0x1d separator), e.g. `FSUID="otis"`.
    pub interpreted: Option<Fields>,
    /// From the assembled SYSCALL/PROCTITLE/CWD/PATH records.
    pub process: Option<Process>,
    /// The host named by a syslog prefix or `node=`.
    pub host: Option<String>,
    /// Where the record came from.
    pub source: Source,
    /// The original line(s), AppArmor record first.
    pub raw: Vec<String>,
}

impl Event {
    /// A field of the AppArmor record.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key)
    }

    /// `operation=`.
    pub fn operation(&self) -> Option<&str> {
        self.field("operation")
    }

    /// The subject's profile or label (`profile=`, else `label=`).
    pub fn profile(&self) -> Option<&str> {
        self.field("profile").or_else(|| self.field("label"))
    }

    /// The object: `name=` (path, dbus name, new profile for change_*), else dbus `path=`, else
    /// the unix `addr=`/`peer_addr=`.
    pub fn name(&self) -> Option<&str> {
        self.field("name")
    }

    /// The requested permissions (`requested_mask=`, `requested=`, or dbus `mask=`).
    pub fn requested(&self) -> Option<&str> {
        self.field("requested_mask")
            .or_else(|| self.field("requested"))
            .or_else(|| self.field("mask"))
    }

    /// The denied permissions (`denied_mask=`, `denied=`, or dbus `mask=` for a denial).
    pub fn denied(&self) -> Option<&str> {
        self.field("denied_mask")
            .or_else(|| self.field("denied"))
            .or_else(|| match self.kind {
                Kind::Denied | Kind::Allowed | Kind::Killed => self.field("mask"),
                _ => None,
            })
    }

    /// The task's pid (inner pid for USER_AVC).
    pub fn pid(&self) -> Option<u32> {
        self.field("pid").and_then(|p| p.parse().ok())
    }

    /// The task's command name.
    pub fn comm(&self) -> Option<&str> {
        self.field("comm")
    }

    /// The mediation class: `class=` when present, else inferred from the operation and fields.
    pub fn class(&self) -> Option<&str> {
        if let Some(class) = self.field("class") {
            return Some(class);
        }
        infer_class(self)
    }

    /// RFC 3339 UTC time with milliseconds from the audit stamp; None for a zero/absent stamp.
    pub fn time(&self) -> Option<String> {
        let stamp = self.audit.as_ref()?;
        if stamp.epoch == 0 {
            return None;
        }
        Some(format_rfc3339_millis(stamp.epoch, stamp.millis))
    }
}

/// Infer the class for records of kernels that do not write `class=`.
fn infer_class(event: &Event) -> Option<&'static str> {
    let op = event.operation()?;
    let class = match op {
        "capable" => "cap",
        "ptrace" => "ptrace",
        "signal" => "signal",
        "mount" | "umount" | "pivotroot" | "remount" => "mount",
        "userns_create" => "namespace",
        "uring_sqpoll" | "uring_override" => "io_uring",
        "sysv_mqueue" => "sysv_mqueue",
        "change_profile" | "change_hat" | "change_onexec" => "domain",
        "profile_load" | "profile_replace" | "profile_remove" => "policy",
        op if op.starts_with("dbus_") => "dbus",
        _ if event.field("family").is_some() || event.field("sock_type").is_some() => "net",
        "create" | "socket_create" | "bind" | "connect" | "listen" | "accept" | "sendmsg"
        | "recvmsg" | "getsockname" | "getpeername" | "getsockopt" | "setsockopt"
        | "socket_shutdown" | "shutdown" => "net",
        _ if event.field("requested_mask").is_some() || event.field("name").is_some() => "file",
        _ => return None,
    };
    Some(class)
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Event", 20)?;
        s.serialize_field("schema", &EVENT_SCHEMA)?;
        s.serialize_field("kind", &self.kind)?;
        s.serialize_field("time", &self.time())?;
        s.serialize_field("audit", &self.audit)?;
        s.serialize_field("operation", &self.operation())?;
        s.serialize_field("class", &self.class())?;
        s.serialize_field("profile", &self.profile())?;
        s.serialize_field("name", &self.name())?;
        s.serialize_field("requested", &self.requested())?;
        s.serialize_field("denied", &self.denied())?;
        s.serialize_field("pid", &self.pid())?;
        s.serialize_field("comm", &self.comm())?;
        s.serialize_field("host", &self.host)?;
        s.serialize_field("fields", &self.fields)?;
        if let Some(outer) = &self.outer {
            s.serialize_field("outer", outer)?;
        }
        if let Some(interpreted) = &self.interpreted {
            s.serialize_field("interpreted", interpreted)?;
        }
        s.serialize_field("process", &self.process)?;
        s.serialize_field("source", &self.source)?;
        s.serialize_field("raw", &self.raw)?;
        s.end()
    }
}

/// Format seconds + milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_rfc3339_millis(epoch: u64, millis: u32) -> String {
    let days = (epoch / 86_400) as i64;
    let secs_of_day = epoch % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs_of_day / 3600,
        (secs_of_day / 60) % 60,
        secs_of_day % 60,
        millis.min(999)
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{DefaultHasher, Hash, Hasher};

    /// A hostile line's many pairs (past the scan's limit) serialize as a few do: the first of
    /// each key, in order. The scan of the earlier keys made that quadratic: a 1 MiB line of
    /// 100 000 pairs took minutes, holding the pipeline.
    #[test]
    fn many_fields_keep_the_first_of_each_key() {
        let mut f = Fields::default();
        for i in 0..1000 {
            f.push(&format!("k{}", i % 400), &i.to_string());
        }
        let want: Vec<String> = (0..400).map(|i| format!(r#""k{i}":"{i}""#)).collect();
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            format!("{{{}}}", want.join(","))
        );
    }

    #[test]
    fn fields_keep_order_duplicates_and_the_old_hash() {
        let pairs = [
            ("apparmor", "DENIED"),
            ("name", "/a b"),
            ("name", ""),
            ("", "x"),
        ];
        let mut f: Fields = pairs.iter().copied().collect();
        assert_eq!(f.len(), 4);
        assert_eq!(f.get("name"), Some("/a b"), "the first of two");
        assert_eq!(f.get(""), Some("x"));
        assert_eq!(f.iter().collect::<Vec<_>>(), pairs);
        // The duplicate filter's saved keys were hashes of Vec<(String, String)>.
        let hash = |h: &dyn Fn(&mut DefaultHasher)| {
            let mut s = DefaultHasher::new();
            h(&mut s);
            s.finish()
        };
        let old: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(hash(&|s| f.hash(s)), hash(&|s| old.hash(s)));
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"apparmor":"DENIED","name":"/a b","":"x"}"#
        );
        f.set("name", "/c");
        f.set("new", "1");
        assert_eq!(
            f.iter().collect::<Vec<_>>(),
            [
                ("apparmor", "DENIED"),
                ("name", "/c"),
                ("name", ""),
                ("", "x"),
                ("new", "1")
            ]
        );
        assert_ne!(f, pairs.iter().copied().collect());
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(format_rfc3339_millis(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_millis(1_661_734_785, 992),
            "2022-08-29T00:59:45.992Z"
        );
        assert_eq!(
            format_rfc3339_millis(951_782_400, 5),
            "2000-02-29T00:00:00.005Z"
        );
    }

    #[test]
    fn civil_round_trip() {
        for days in [-1000_i64, 0, 59, 60, 365, 11_016, 19_000, 40_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }
}

//! The incident key: what makes two events the same problem.
//!
//! All normalisation rules live in [`NORMALISE`] and all operation families in
//! [`OPERATION_FAMILIES`], so that what is grouped together can be read (and changed) in one
//! place. Rules are applied in order to the object; each one replaces what varies between
//! repeats of the same problem (pids, home directories, UUIDs, temporary-file suffixes, terminal
//! numbers, numbered instances) with an AppArmor variable-like placeholder.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use regex::{Regex, RegexSet};

use crate::alert::IncidentKey;
use crate::event::{Event, Kind};

/// `(name, regex, replacement)`, applied in order. `$1`… refer to groups of the regex.
pub const NORMALISE: &[(&str, &str, &str)] = &[
    // /proc/1234/… and /proc/1234/task/5678/…
    ("proc-pid", r"/proc/[0-9]+(/|$)", "/proc/@{pid}$1"),
    ("proc-tid", r"/task/[0-9]+(/|$)", "/task/@{tid}$1"),
    // home directories, AppArmor's @{HOME} (= /home/*/ and /root/)
    ("home", r"^/home/[^/]+(/|$)", "@{HOME}$1"),
    ("root-home", r"^/root(/|$)", "@{HOME}$1"),
    // per-user runtime directories and uids in cgroup paths
    ("run-user", r"/run/user/[0-9]+(/|$)", "/run/user/@{uid}$1"),
    ("user-slice", r"user-[0-9]+\.slice", "user-@{uid}.slice"),
    (
        "user-service",
        r"user@[0-9]+\.service",
        "user@@{uid}.service",
    ),
    // UUIDs anywhere
    (
        "uuid",
        r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        "@{uuid}",
    ),
    // systemd PrivateTmp directories
    (
        "systemd-private",
        r"systemd-private-[0-9a-f]{32}-([^/]+)-[A-Za-z0-9]{6}(/|$)",
        "systemd-private-@{hex}-$1-@{rand}$2",
    ),
    // mktemp(1) names: tmp.XXXXXXXXXX
    ("mktemp", r"(^|/)tmp\.[A-Za-z0-9]{6,}", "${1}tmp.@{rand}"),
    // mkstemp-style suffixes on lock and temp files: name.XXXXXX at the end (only under temp dirs)
    (
        "tempfile-suffix",
        r"^(/tmp/|/var/tmp/|/dev/shm/|@\{HOME\}/\.cache/)(.*)\.[A-Za-z0-9_]{6}$",
        "$1$2.@{rand}",
    ),
    // editor and rsync temporaries
    ("rsync-temp", r"/\.([^/]+)\.[A-Za-z0-9]{6}$", "/.$1.@{rand}"),
    // long hex runs (cache keys, hashes, build ids)
    ("hex", r"[0-9a-fA-F]{16,}", "@{hex}"),
    // random hex suffixes of runtime files and sockets: pulse-0a1b2c3d, dconf.5e6f7a8b
    ("hex-suffix", r"([-_.])[0-9a-f]{8,15}$", "${1}@{hex}"),
    // terminals
    ("pts", r"^/dev/pts/[0-9]+$", "/dev/pts/@{n}"),
    ("tty", r"^/dev/tty[0-9]+$", "/dev/tty@{n}"),
    // numbered instances: cpuN, card/renderD numbers, instance_N_M in D-Bus names
    ("cpu", r"/cpu[0-9]+(/|$)", "/cpu@{n}$1"),
    ("dri", r"^/dev/dri/(card|renderD)[0-9]+$", "/dev/dri/$1@{n}"),
    (
        "dbus-instance",
        r"\.instance_?[0-9]+(?:_[0-9]+)*",
        ".instance@{n}",
    ),
    // a path segment that is only a number (fd numbers, snap revisions, sockets named by pid)
    ("number-segment", r"/[0-9]+(/|$)", "/@{n}$1"),
];

/// `(family, operations)`: operations that are the same problem for the key.
pub const OPERATION_FAMILIES: &[(&str, &[&str])] = &[
    (
        "open",
        &[
            "open",
            "file_perm",
            "file_receive",
            "file_inherit",
            "inode_permission",
        ],
    ),
    (
        "create",
        &[
            "mknod",
            "mkdir",
            "inode_create",
            "inode_mkdir",
            "inode_mknod",
        ],
    ),
    (
        "delete",
        &["unlink", "rmdir", "inode_unlink", "inode_rmdir"],
    ),
    ("rename", &["rename_src", "rename_dest", "inode_rename"]),
    ("link", &["link", "symlink", "inode_link", "inode_symlink"]),
    ("setattr", &["chmod", "chown", "setattr", "inode_setattr"]),
    ("getattr", &["getattr", "inode_getattr"]),
    ("mmap", &["file_mmap", "file_mprotect"]),
    ("change_profile", &["change_profile", "change_onexec"]),
    ("socket_create", &["create", "socket_create"]),
    ("sendrecv", &["sendmsg", "recvmsg"]),
    (
        "sockopt",
        &["getsockname", "getpeername", "getsockopt", "setsockopt"],
    ),
    ("shutdown", &["shutdown", "socket_shutdown"]),
    ("mount", &["mount", "remount"]),
];

/// The compiled normalisation rules.
#[derive(Debug)]
pub struct Normaliser {
    rules: Vec<(&'static str, Regex, &'static str)>,
    /// All rules at once: one pass over the object finds the few rules that can apply.
    set: RegexSet,
    /// Recent objects and their normal form: the same few paths recur in most denials.
    cache: RefCell<HashMap<Box<str>, Box<str>, foldhash::fast::RandomState>>,
}

/// Objects [`Normaliser::normalise_cached`] remembers; the cache starts over when full.
const NORMALISED_CACHED: usize = 4096;

impl Normaliser {
    /// Compile [`NORMALISE`].
    pub fn new() -> Normaliser {
        let rules: Vec<_> = NORMALISE
            .iter()
            .filter_map(|(name, re, rep)| Regex::new(re).ok().map(|r| (*name, r, *rep)))
            .collect();
        let set = RegexSet::new(rules.iter().map(|(_, r, _)| r.as_str()))
            .unwrap_or_else(|_| RegexSet::empty());
        Normaliser {
            rules,
            set,
            cache: RefCell::default(),
        }
    }

    /// [`Normaliser::normalise`], remembered for recent objects.
    pub fn normalise_cached(&self, object: &str) -> String {
        let mut cache = self.cache.borrow_mut();
        if let Some(n) = cache.get(object) {
            return n.to_string();
        }
        let n = self.normalise(object).into_owned();
        if cache.len() >= NORMALISED_CACHED {
            cache.clear();
        }
        cache.insert(object.into(), n.as_str().into());
        n
    }

    /// Normalise one object.
    pub fn normalise<'a>(&self, object: &'a str) -> Cow<'a, str> {
        let mut cur: Cow<'a, str> = Cow::Borrowed(object);
        let mut candidates = self.set.matches(object);
        if !candidates.matched_any() {
            return cur;
        }
        for (i, (_, re, rep)) in self.rules.iter().enumerate() {
            if !candidates.matched(i) {
                continue;
            }
            // `replace_all` borrows when nothing matches, so unmatched rules cost no allocation.
            // Matches that share a `/` (`/001/002`) are found one pass apart: the rule is applied
            // again until nothing changes (a few passes; no replacement matches its own rule).
            let mut changed = false;
            for _ in 0..8 {
                let Cow::Owned(s) = re.replace_all(&cur, *rep) else {
                    break;
                };
                cur = Cow::Owned(s);
                changed = true;
            }
            if changed {
                // A replacement can enable a later rule (`@{HOME}/.cache/…` temp suffixes).
                candidates = self.set.matches(&cur);
            }
        }
        cur
    }

    /// Number of compiled rules (all of [`NORMALISE`] unless one failed to compile).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when no rule compiled.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Default for Normaliser {
    fn default() -> Self {
        Normaliser::new()
    }
}

/// The family of an operation (itself when it has none).
pub fn operation_family(op: &str) -> &str {
    for (family, ops) in OPERATION_FAMILIES {
        if ops.contains(&op) {
            return family;
        }
    }
    op
}

/// Build the key of an event. `class` is the event's class (given or inferred).
pub fn incident_key(norm: &Normaliser, event: &Event, class: &str) -> IncidentKey {
    let op = event.operation().unwrap_or("");
    let permission = event
        .denied()
        .or_else(|| event.requested())
        .unwrap_or("")
        .to_owned();
    let object = raw_object(event, class);
    IncidentKey {
        profile: event.profile().unwrap_or("").to_owned(),
        kind: event.kind.as_str().to_owned(),
        class: class.to_owned(),
        operation: operation_family(op).to_owned(),
        object: norm.normalise_cached(&object),
        permission: if event.kind == Kind::Status {
            String::new()
        } else {
            permission
        },
    }
}

/// The object of an event before normalisation, by class.
pub fn raw_object(event: &Event, class: &str) -> String {
    let f = |k: &str| event.field(k).unwrap_or("");
    let join = |pairs: &[(&str, &str)]| -> String {
        pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match class {
        "cap" => event
            .field("capname")
            .or_else(|| event.name())
            .or_else(|| event.field("capability"))
            .unwrap_or("")
            .to_owned(),
        "net" => {
            if f("family") == "unix" {
                join(&[
                    ("family", "unix"),
                    ("sock_type", f("sock_type")),
                    ("addr", f("addr")),
                    ("peer_addr", f("peer_addr")),
                    ("peer", f("peer")),
                ])
            } else {
                join(&[
                    ("family", f("family")),
                    ("sock_type", f("sock_type")),
                    ("protocol", f("protocol")),
                    ("peer", f("peer")),
                ])
            }
        }
        "signal" => join(&[("signal", f("signal")), ("peer", f("peer"))]),
        "ptrace" => join(&[("peer", f("peer"))]),
        "dbus" => {
            if event.operation() == Some("dbus_bind") {
                join(&[("bus", f("bus")), ("name", f("name"))])
            } else {
                let member = event
                    .field("member")
                    .or_else(|| event.field("method"))
                    .unwrap_or("");
                join(&[
                    ("bus", f("bus")),
                    ("path", f("path")),
                    ("interface", f("interface")),
                    ("member", member),
                    ("peer_label", f("peer_label")),
                ])
            }
        }
        "mount" => join(&[
            ("fstype", f("fstype")),
            ("srcname", f("srcname")),
            ("name", f("name")),
            ("flags", f("flags")),
        ]),
        "namespace" => join(&[
            ("target", f("target")),
            ("execpath", f("execpath")),
            ("info", f("info")),
        ]),
        "io_uring" => join(&[("tcontext", f("tcontext"))]),
        _ => {
            if let Some(name) = event.name() {
                name.to_owned()
            } else if let Some(peer) = event.field("peer") {
                format!("peer={peer}")
            } else {
                f("info").to_owned()
            }
        }
    }
}

/// A stable 64-bit FNV-1a hash of the key (and host), with lengths so fields cannot run together.
pub fn key_hash(host: Option<&str>, key: &IncidentKey) -> u64 {
    stable_hash(&[
        host.unwrap_or(""),
        &key.profile,
        &key.kind,
        &key.class,
        &key.operation,
        &key.object,
        &key.permission,
    ])
}

/// FNV-1a over the parts, each preceded by its length so that parts cannot run together; the
/// same on every run and every build (ids made from it survive restarts).
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in (part.len() as u64)
            .to_le_bytes()
            .iter()
            .chain(part.as_bytes())
        {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        Normaliser::new().normalise(s).into_owned()
    }

    #[test]
    fn all_rules_compile() {
        assert_eq!(Normaliser::new().len(), NORMALISE.len());
    }

    #[test]
    fn proc_pids() {
        assert_eq!(n("/proc/1234/status"), "/proc/@{pid}/status");
        assert_eq!(
            n("/proc/1234/task/99/stat"),
            "/proc/@{pid}/task/@{tid}/stat"
        );
        assert_eq!(n("/proc/77"), "/proc/@{pid}");
        assert_eq!(n("/proc/self/mountinfo"), "/proc/self/mountinfo");
        assert_eq!(n("/proc/1/fd/12"), "/proc/@{pid}/fd/@{n}");
    }

    #[test]
    fn homes() {
        assert_eq!(n("/home/alice/.config/x"), "@{HOME}/.config/x");
        assert_eq!(n("/home/bob/.config/x"), "@{HOME}/.config/x");
        assert_eq!(n("/root/.bashrc"), "@{HOME}/.bashrc");
        assert_eq!(n("/home/alice/"), "@{HOME}/");
        assert_eq!(n("/srv/home/alice/x"), "/srv/home/alice/x");
    }

    #[test]
    fn uuids_hex_temp() {
        assert_eq!(
            n("/run/netns/3f2504e0-4f89-11d3-9a0c-0305e82c3301/x"),
            "/run/netns/@{uuid}/x"
        );
        assert_eq!(n("/tmp/tmp.AbC123xyZ9"), "/tmp/tmp.@{rand}");
        assert_eq!(
            n("/home/alice/.cache/mozilla/firefox/00ff00ff00ff00ff"),
            "@{HOME}/.cache/mozilla/firefox/@{hex}"
        );
        assert_eq!(n("/tmp/cups-pdf.lock"), "/tmp/cups-pdf.lock");
        assert_eq!(n("/tmp/sess.a1B2c3"), "/tmp/sess.@{rand}");
        assert_eq!(
            n("/tmp/systemd-private-0123456789abcdef0123456789abcdef-chronyd.service-AbCdEf/tmp/x"),
            "/tmp/systemd-private-@{hex}-chronyd.service-@{rand}/tmp/x"
        );
        assert_eq!(n("/etc/.passwd.Xy12ab"), "/etc/.passwd.@{rand}");
        assert_eq!(
            n("/run/user/1000/pulse-0a1b2c3d"),
            "/run/user/@{uid}/pulse-@{hex}"
        );
        assert_eq!(
            n("/run/user/120/snap.firefox-deadbeef"),
            "/run/user/@{uid}/snap.firefox-@{hex}"
        );
        assert_eq!(n("/usr/lib/libfoo-1.2.so"), "/usr/lib/libfoo-1.2.so");
    }

    #[test]
    fn terminals_and_instances() {
        assert_eq!(n("/dev/pts/12"), "/dev/pts/@{n}");
        assert_eq!(n("/dev/tty3"), "/dev/tty@{n}");
        assert_eq!(n("/dev/tty"), "/dev/tty");
        assert_eq!(
            n("/sys/devices/system/cpu/cpu7/online"),
            "/sys/devices/system/cpu/cpu@{n}/online"
        );
        assert_eq!(n("/run/user/1000/bus"), "/run/user/@{uid}/bus");
        assert_eq!(
            n("/snap/firefox/3358/usr/lib/x"),
            "/snap/firefox/@{n}/usr/lib/x"
        );
        assert_eq!(
            n("bus=session name=org.mpris.MediaPlayer2.firefox.instance_1_8"),
            "bus=session name=org.mpris.MediaPlayer2.firefox.instance@{n}"
        );
        assert_eq!(
            n("/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/cpu.max"),
            "/sys/fs/cgroup/user.slice/user-@{uid}.slice/user@@{uid}.service/cpu.max"
        );
        // Regression: numeric segments next to each other share a `/`; each is normalised.
        assert_eq!(n("/dev/bus/usb/001/002"), "/dev/bus/usb/@{n}/@{n}");
        assert_eq!(n("/var/lib/x/1/20/3/f"), "/var/lib/x/@{n}/@{n}/@{n}/f");
        // things that are the problem itself stay
        assert_eq!(n("/etc/ssl/openssl.cnf"), "/etc/ssl/openssl.cnf");
        assert_eq!(
            n("/usr/lib/x86_64-linux-gnu/libgtk-3.so.0.2406.32"),
            "/usr/lib/x86_64-linux-gnu/libgtk-3.so.0.2406.32"
        );
    }

    fn sequential(s: &str) -> String {
        let mut cur = s.to_owned();
        for (_, re, rep) in NORMALISE {
            let re = Regex::new(re).unwrap();
            // Each rule to its fixed point.
            loop {
                let next = re.replace_all(&cur, *rep).into_owned();
                if next == cur {
                    break;
                }
                cur = next;
            }
        }
        cur
    }

    proptest::proptest! {
        /// The one-pass prefilter gives exactly what applying every rule in order gives.
        #[test]
        fn prefilter_is_exact(s in "(/(proc|home|root|tmp|run|user|dev|pts|task|cpu[0-9]|[0-9]{1,4}|tmp\\.[A-Za-z0-9]{6,10}|[0-9a-f]{8,20}|x-[0-9a-f]{8}|\\.[a-z]{1,3}\\.[A-Za-z0-9]{6}|alice|\\.cache|[a-z]{1,5}\\.[A-Za-z0-9]{6}))+/?") {
            let norm = Normaliser::new();
            proptest::prop_assert_eq!(norm.normalise(&s).into_owned(), sequential(&s));
            // Once computed, once remembered.
            proptest::prop_assert_eq!(norm.normalise_cached(&s), sequential(&s));
            proptest::prop_assert_eq!(norm.normalise_cached(&s), sequential(&s));
        }
    }

    #[test]
    fn families() {
        assert_eq!(operation_family("mknod"), "create");
        assert_eq!(operation_family("mkdir"), "create");
        assert_eq!(operation_family("file_perm"), "open");
        assert_eq!(operation_family("exec"), "exec");
        assert_eq!(operation_family("capable"), "capable");
    }

    #[test]
    fn hash_separates_fields() {
        let mut a = IncidentKey {
            profile: "ab".into(),
            kind: "denied".into(),
            class: "file".into(),
            operation: "open".into(),
            object: "c".into(),
            permission: "r".into(),
        };
        let h1 = key_hash(None, &a);
        a.profile = "a".into();
        a.object = "bc".into();
        assert_ne!(h1, key_hash(None, &a));
        assert_ne!(key_hash(None, &a), key_hash(Some("h"), &a));
    }
}

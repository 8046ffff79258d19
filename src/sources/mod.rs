//! Sources: where AppArmor records are read from, one file per source, plus automatic selection.
//!
//! Each source reads on its own (an OS thread for sd-journal and files, a tokio task for
//! /dev/kmsg and netlink), sends batches of lines with their positions to its parser task, and
//! returns when the stop signal is set (follow) or at the current end (replay).

pub mod audit_log;
pub mod journald;
pub mod kernel_log;
pub mod netlink;
pub mod tail;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::checkpoint::Position;
use crate::config::SourceConfig;
use crate::pipeline::{BatchSender, Mode, StopSignal};

/// The kinds of source whose read errors are counted apart (the `source` label of
/// `armorwatch_source_read_errors_total`, as in `armorwatch_source_lag_seconds`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReadErrorSource {
    File = 0,
    Journald = 1,
    Kmsg = 2,
    Netlink = 3,
}

const READ_ERROR_SOURCES: [&str; 4] = ["file", "journald", "kmsg", "netlink"];

/// Read errors the sources met since the process started, by [`ReadErrorSource`] (each counted,
/// logged rate-limited).
static READ_ERRORS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// When read errors were last logged, and how many were not logged since.
static READ_ERROR_LOG: std::sync::Mutex<ErrorLog> = std::sync::Mutex::new(ErrorLog {
    last: None,
    held: 0,
});

/// At most one read error is logged per interval: a followed file on a failing disk meets the
/// error at every append.
const READ_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// A rate limit for log lines: the first at once, then one per [`READ_ERROR_LOG_EVERY`], each
/// with the count of those held back since the last.
#[derive(Debug)]
struct ErrorLog {
    last: Option<Instant>,
    held: u64,
}

impl ErrorLog {
    /// Log this one now? Some(number held back before it), or None (held back).
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < READ_ERROR_LOG_EVERY)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

/// Log a source's read error (`reading PATH: error`, `journald: error` …) and count it: a
/// replay that met one did not read all of its input, and says so with its exit code.
pub(crate) fn read_error(source: ReadErrorSource, message: std::fmt::Arguments<'_>) {
    READ_ERRORS[source as usize].fetch_add(1, Ordering::Relaxed);
    let admitted = READ_ERROR_LOG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .admit(Instant::now());
    match admitted {
        Some(0) => crate::log_warn!("{message}"),
        Some(held) => crate::log_warn!(
            "{message} ({held} more read error{} not logged since the last)",
            if held == 1 { "" } else { "s" }
        ),
        None => {}
    }
}

/// How many read errors the sources met so far.
pub fn read_errors() -> u64 {
    read_errors_by_source().iter().map(|(_, n)| n).sum()
}

/// The read errors met so far by each kind of source: `file`, `journald`, `kmsg`, `netlink`.
pub fn read_errors_by_source() -> [(&'static str, u64); 4] {
    std::array::from_fn(|i| {
        (
            READ_ERROR_SOURCES[i],
            READ_ERRORS[i].load(Ordering::Relaxed),
        )
    })
}

/// A source that could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file or device could not be opened.
    #[error("{source_name}: cannot open {path}: {error}")]
    Open {
        /// `audit_log`, …
        source_name: String,
        /// The path.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// The journal could not be opened.
    #[error("journald: cannot open the journal{}: {error}", directory.as_ref().map(|d| format!(" in {}", d.display())).unwrap_or_default())]
    Journal {
        /// The directory, if one was configured.
        directory: Option<PathBuf>,
        /// The error.
        error: std::io::Error,
    },
    /// Joining the audit multicast group failed.
    #[error("netlink: {0}")]
    Netlink(String),
    /// inotify could not be set up.
    #[error("{source_name}: cannot watch {path}: {error}")]
    Watch {
        /// `audit_log`, …
        source_name: String,
        /// The directory.
        path: PathBuf,
        /// The error.
        error: String,
    },
}

impl SourceError {
    /// The configuration key it is about (`sources.audit_log.path`, …).
    pub fn key(&self) -> String {
        match self {
            SourceError::Open { source_name, .. } | SourceError::Watch { source_name, .. } => {
                format!("sources.{source_name}.path")
            }
            SourceError::Journal {
                directory: Some(_), ..
            } => "sources.journald.directory".to_string(),
            SourceError::Journal { .. } => "sources.journald".to_string(),
            SourceError::Netlink(_) => "sources.netlink".to_string(),
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub enum Spec {
    /// A configured (or automatically selected) source and its saved position.
    Configured {
        /// The source.
        config: SourceConfig,
        /// Where it stopped last time.
        position: Option<Position>,
    },
    /// A file named on the `replay` command line: read whole, no checkpoint.
    WholeFile {
        /// The file.
        path: PathBuf,
    },
}

/// A running source.
#[derive(Debug)]
pub enum SourceHandle {
    /// Reading on an OS thread.
    Thread(std::thread::JoinHandle<()>),
    /// Reading in a tokio task.
    Task(tokio::task::JoinHandle<()>),
}

impl SourceHandle {
    /// Wait until the source has returned.
    pub async fn join(self) {
        match self {
            SourceHandle::Thread(h) => {
                let _ = tokio::task::spawn_blocking(move || h.join()).await;
            }
            SourceHandle::Task(h) => {
                let _ = h.await;
            }
        }
    }
}

/// Start a source. Errors that make the source unusable (permissions, missing capability) are
/// returned here, before anything runs.
pub fn start(
    spec: Spec,
    mode: Mode,
    tx: BatchSender,
    stop: StopSignal,
) -> Result<SourceHandle, SourceError> {
    match spec {
        Spec::WholeFile { path } => tail::start(tail::TailSpec::whole(path), mode, tx, stop),
        Spec::Configured { config, position } => match config {
            SourceConfig::AuditLog { path } => audit_log::start(path, position, mode, tx, stop),
            SourceConfig::KernelLog { path } => kernel_log::start(path, position, mode, tx, stop),
            SourceConfig::Journald { directory } => {
                journald::start(directory, position, mode, tx, stop)
            }
            SourceConfig::Netlink => netlink::start(position, tx, stop),
        },
    }
}

/// The automatically chosen sources and why.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// The sources.
    pub sources: Vec<SourceConfig>,
    /// One line per decision, for `run` and `doctor`.
    pub reasons: Vec<String>,
}

/// What the machine looks like, as far as source selection cares.
#[derive(Debug, Clone)]
pub struct Probe {
    /// auditd's pid, when it runs.
    pub auditd_pid: Option<u32>,
    /// auditd's log file (from auditd.conf, else the default).
    pub audit_log: PathBuf,
    /// Whether armorwatch can read it.
    pub audit_log_readable: Result<(), String>,
    /// Whether joining the audit multicast group works (CAP_AUDIT_READ).
    pub netlink: Result<(), String>,
    /// Whether the system journal opens.
    pub journal: Result<(), String>,
    /// Whether journald listens on the audit multicast group (its audit socket is on), so the
    /// journal holds audit records while auditd runs.
    pub journald_audit: bool,
    /// Whether /dev/kmsg is readable.
    pub kmsg: Result<(), String>,
}

/// Look at the machine.
pub fn probe() -> Probe {
    let auditd_pid = find_process("auditd");
    let audit_log = auditd_log_file(Path::new("/etc/audit/auditd.conf"))
        .unwrap_or_else(|| PathBuf::from(crate::config::validate::DEFAULT_AUDIT_LOG));
    let audit_log_readable = std::fs::File::open(&audit_log)
        .map(drop)
        .map_err(|e| e.to_string());
    Probe {
        auditd_pid,
        audit_log_readable,
        audit_log,
        netlink: netlink::probe(),
        journal: journald::probe(),
        journald_audit: std::fs::read_to_string("/proc/net/netlink").is_ok_and(|t| {
            netlink::audit_multicast_listeners(&t)
                .iter()
                .any(|(_, comm)| comm.as_deref() == Some("systemd-journal"))
        }),
        kmsg: std::fs::File::open("/dev/kmsg")
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

/// Choose sources: auditd running → its log (+ netlink when permitted); else the journal; else
/// /dev/kmsg. Duplicates among them are removed by the pipeline.
pub fn select(p: &Probe) -> Selection {
    let mut s = Selection::default();
    if let Some(pid) = p.auditd_pid {
        match &p.audit_log_readable {
            Ok(()) => {
                s.sources.push(SourceConfig::AuditLog {
                    path: p.audit_log.clone(),
                });
                s.reasons.push(format!(
                    "auditd runs (pid {pid}), so AppArmor records go to {} and not to the kernel log: reading it",
                    p.audit_log.display()
                ));
                match &p.netlink {
                    Ok(()) => {
                        s.sources.push(SourceConfig::Netlink);
                        s.reasons.push("audit netlink multicast is permitted: reading it too (duplicates are removed)".into());
                    }
                    Err(e) => s.reasons.push(format!("audit netlink not used: {e}")),
                }
                return s;
            }
            Err(e) => {
                s.reasons.push(format!(
                    "auditd runs (pid {pid}) but {} is not readable: {e}",
                    p.audit_log.display()
                ));
                if p.netlink.is_ok() {
                    s.sources.push(SourceConfig::Netlink);
                    s.reasons
                        .push("reading the audit netlink multicast group instead".into());
                    return s;
                }
                // While auditd is connected the kernel log gets no audit records; the journal
                // has them only when journald's audit socket is on.
                if p.journal.is_ok() && p.journald_audit {
                    s.sources.push(SourceConfig::Journald { directory: None });
                    s.reasons.push(
                        "journald listens on the audit multicast group: reading the journal's audit transport instead".into(),
                    );
                } else {
                    s.reasons.push(
                        "no source receives AppArmor records: the kernel log gets none while auditd runs, journald's audit socket is off or the journal unreadable, and audit netlink is not permitted; make the log readable (log_group in auditd.conf) or grant CAP_AUDIT_READ".into(),
                    );
                }
                return s;
            }
        }
    } else {
        s.reasons
            .push("auditd does not run, so AppArmor records go to the kernel log".into());
    }
    let mut chosen = false;
    match &p.journal {
        Ok(()) => {
            s.sources.push(SourceConfig::Journald { directory: None });
            s.reasons.push(
                "the system journal is readable: reading its kernel and audit transports".into(),
            );
            chosen = true;
        }
        Err(e) => s.reasons.push(format!("journal not used: {e}")),
    }
    if !chosen {
        match &p.kmsg {
            Ok(()) => {
                s.sources.push(SourceConfig::KernelLog {
                    path: PathBuf::from("/dev/kmsg"),
                });
                s.reasons.push("reading /dev/kmsg".into());
                chosen = true;
            }
            Err(e) => s.reasons.push(format!("/dev/kmsg not readable: {e}")),
        }
    }
    match &p.netlink {
        Ok(()) => {
            s.sources.push(SourceConfig::Netlink);
            s.reasons.push(
                "the kernel log is rate-limited (printk) and the audit multicast group is not: \
                 reading it too (duplicates are removed)"
                    .into(),
            );
        }
        Err(e) if chosen => s.reasons.push(format!("audit netlink not used: {e}")),
        Err(e) => s
            .reasons
            .push(format!("audit netlink not used: {e}; no source available")),
    }
    s
}

/// The pid of a process whose `comm` is `name`.
pub fn find_process(name: &str) -> Option<u32> {
    let dir = std::fs::read_dir("/proc").ok()?;
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) {
            if comm.trim_end() == name {
                return Some(pid);
            }
        }
    }
    None
}

/// `log_file =` from auditd.conf.
pub fn auditd_log_file(conf: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(conf).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "log_file").then(|| PathBuf::from(v.trim()))
    })
}

/// Call `wake` once `stop` turns true (or its sender is gone), from a task on the current
/// runtime: how a reader blocked in a system call without a timeout (the file readers' wait
/// for inotify, the journald thread's poll) learns it is to stop. False, and `wake` not kept,
/// when there is no runtime to run the task on.
fn wake_on_stop(stop: &StopSignal, wake: impl FnOnce() + Send + 'static) -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    let mut stop = stop.clone();
    runtime.spawn(async move {
        let _ = stop.wait_for(|&s| s).await;
        wake();
    });
    true
}

/// The current boot id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read errors: the first logged at once, then one per interval with the count held back.
    #[test]
    fn read_errors_are_logged_once_per_interval_with_the_count_held_back() {
        let t0 = Instant::now();
        let mut log = ErrorLog {
            last: None,
            held: 0,
        };
        assert_eq!(log.admit(t0), Some(0));
        for ms in [1, 500, 9_999] {
            assert_eq!(log.admit(t0 + Duration::from_millis(ms)), None, "{ms} ms");
        }
        assert_eq!(log.admit(t0 + READ_ERROR_LOG_EVERY), Some(3));
        assert_eq!(log.admit(t0 + READ_ERROR_LOG_EVERY * 3), Some(0));
    }

    fn probe_with(auditd: bool, journal: bool) -> Probe {
        Probe {
            auditd_pid: auditd.then_some(42),
            audit_log: PathBuf::from("/var/log/audit/audit.log"),
            audit_log_readable: Ok(()),
            netlink: Err("needs CAP_AUDIT_READ".into()),
            journal: if journal {
                Ok(())
            } else {
                Err("no journal".into())
            },
            kmsg: Ok(()),
            journald_audit: false,
        }
    }

    #[test]
    fn selection_follows_where_records_go() {
        let s = select(&probe_with(true, true));
        assert_eq!(
            s.sources,
            [SourceConfig::AuditLog {
                path: "/var/log/audit/audit.log".into()
            }]
        );
        assert!(s.reasons[0].contains("auditd runs"));
        assert!(s.reasons[1].contains("CAP_AUDIT_READ"));
        let s = select(&probe_with(false, true));
        assert_eq!(s.sources, [SourceConfig::Journald { directory: None }]);
        let s = select(&probe_with(false, false));
        assert_eq!(
            s.sources,
            [SourceConfig::KernelLog {
                path: "/dev/kmsg".into()
            }]
        );
        // As root without auditd: the kernel log plus the (not rate-limited) multicast group.
        let mut p = probe_with(false, false);
        p.netlink = Ok(());
        let s = select(&p);
        assert_eq!(
            s.sources,
            [
                SourceConfig::KernelLog {
                    path: "/dev/kmsg".into()
                },
                SourceConfig::Netlink
            ]
        );
        assert!(s.reasons.last().unwrap().contains("rate-limited"));
    }

    /// Regression: with auditd running, its log unreadable and netlink not permitted, the
    /// choice fell to the journal or /dev/kmsg, which get no audit records while auditd runs:
    /// a daemon that reported ready and delivered nothing. The journal is taken only when
    /// journald listens on the audit multicast group; otherwise there is no source.
    #[test]
    fn auditd_with_an_unreadable_log_does_not_fall_back_to_the_kernel_log() {
        let mut p = probe_with(true, true);
        p.audit_log_readable = Err("Permission denied".into());
        let s = select(&p);
        assert!(s.sources.is_empty(), "{:?}", s.sources);
        assert!(
            s.reasons.last().unwrap().contains("no source"),
            "{:?}",
            s.reasons
        );
        p.journald_audit = true;
        let s = select(&p);
        assert_eq!(s.sources, [SourceConfig::Journald { directory: None }]);
        // Without auditd the kernel log is right.
        p.auditd_pid = None;
        p.journal = Err("no journal".into());
        assert_eq!(
            select(&p).sources,
            [SourceConfig::KernelLog {
                path: "/dev/kmsg".into()
            }]
        );
    }

    #[test]
    fn auditd_conf_log_file() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("auditd.conf");
        std::fs::write(&conf, "#\nlocal_events = yes\nlog_file = /srv/audit.log\n").unwrap();
        assert_eq!(
            auditd_log_file(&conf),
            Some(PathBuf::from("/srv/audit.log"))
        );
    }
}

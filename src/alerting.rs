//! The alerting stage: events → correlator → profile explanation → sinks.
//!
//! It is the pipeline's output ([`EventOutput`]): the pipeline hands it every de-duplicated event
//! and loss notice in order, on one thread. Here the pure parts meet the clock and the disk: the
//! wall clock drives the correlator, open incidents are persisted to the state directory (and
//! restored at start, so a restart inside the window does not re-open them), explanations come
//! from the profile tree, and alerts go to the [`SinkSet`] (one task and queue per sink).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::alert::{Alert, AlertType};
use crate::correlate::{self, Correlator};
use crate::event::{Event, Kind};
use crate::pipeline::{EventOutput, Item, Mode};
use crate::profiles::check::Checker;
use crate::profiles::{self, Explainer, Index, history::PolicyChanges, loader, system};
use crate::sinks::SinkSet;

/// The file (in the state directory) holding the daemon's open incidents.
pub const INCIDENTS_FILE: &str = "incidents.json";

/// The same for `armorwatch replay`, so a replay of history never touches the daemon's incidents.
pub const REPLAY_INCIDENTS_FILE: &str = "replay-incidents.json";

/// The incident alerts made since the last save of `incidents.json` (see [`SentLog`]).
pub const SENT_FILE: &str = "incidents-sent.log";

/// The same for `armorwatch replay`.
pub const REPLAY_SENT_FILE: &str = "replay-incidents-sent.log";

/// The open incidents as saved: the correlator's snapshot and the generation of the source
/// checkpoints it belongs to. The previous save is kept as `FILE.prev`: a crash between saving
/// the incidents and saving the checkpoints leaves the incidents one generation ahead, and the
/// previous file is the one matching the positions the sources resume from.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct SavedIncidents {
    #[serde(default)]
    checkpoint_generation: u64,
    #[serde(flatten)]
    snapshot: correlate::Snapshot,
}

/// Profile knowledge used to explain alerts.
#[derive(Debug)]
pub struct ProfileKnowledge {
    root: PathBuf,
    explainer: Explainer,
    facts: system::Facts,
    changes: PolicyChanges,
    /// Compile checks of suggestions (`None`: suggestions go unchecked).
    checker: Option<Checker>,
    /// A profile was loaded, replaced or removed since the tree was read: read it again before
    /// the next explanation (not at each status record: `apparmor.service` reloads replace
    /// every profile at once, and one re-read covers them all).
    stale: bool,
    /// Replay explains history against today's tree; status records of the past do not
    /// re-read it.
    follow: bool,
}

impl ProfileKnowledge {
    /// Index the profile tree at `root`. Syntax errors in single files are reported and skipped.
    /// `check_wait`: compile-check suggestions, each alert waiting at most this long for its
    /// check (see [`Checker`]); `None`: no checks.
    pub fn load(
        root: &Path,
        check_wait: Option<Duration>,
        mode: Mode,
    ) -> Result<ProfileKnowledge, String> {
        let (tree, report) = loader::load_tree(root).map_err(|e| e.to_string())?;
        let _ = report;
        Ok(ProfileKnowledge {
            root: root.to_path_buf(),
            explainer: Explainer::new(Index::build(&tree), 512),
            facts: system::Facts::new(true),
            changes: PolicyChanges::default(),
            checker: check_wait.map(|wait| Checker::start(root.to_path_buf(), wait)),
            stale: false,
            follow: mode == Mode::Follow,
        })
    }

    /// Watch STATUS events: a profile replaced or loaded means the tree may have changed.
    fn observe(&mut self, event: &Event) {
        self.changes.observe(event);
        if self.follow
            && event.kind == Kind::Status
            && matches!(
                event.operation(),
                Some("profile_load" | "profile_replace" | "profile_remove")
            )
        {
            self.stale = true;
        }
    }

    /// Re-read the tree if a profile changed since (see `stale`).
    fn refresh(&mut self) {
        if !self.stale {
            return;
        }
        if let Ok((tree, _)) = loader::load_tree(&self.root) {
            self.explainer.replace_index(Index::build(&tree));
        }
        if let Some(c) = &self.checker {
            c.invalidate();
        }
        self.facts.refresh_modes();
        self.stale = false;
    }

    /// Attach `profile` and `explanation` to an incident alert.
    fn annotate(&mut self, alert: &mut Alert) {
        let Some(event) = alert.event.as_ref() else {
            return;
        };
        if !matches!(event.kind, Kind::Denied | Kind::Allowed | Kind::Killed) {
            return;
        }
        // armorwatch's own denials are reported but not explained: explaining runs
        // apparmor_parser, which a broken local profile for armorwatch would deny again.
        let own = event
            .profile()
            .is_some_and(|p| p == "armorwatch" || p.starts_with("armorwatch//"));
        if own {
            return;
        }
        self.refresh();
        let mut ctx = self.facts.context(self.explainer.index(), event);
        ctx.after_profile_replace = self.changes.after_replace(event, 300);
        // The compile check of the suggestion, per alert (cached explanations included).
        let check = self
            .checker
            .as_ref()
            .map(|c| move |s: &mut profiles::Suggestion| c.check(s));
        let check = check
            .as_ref()
            .map(|f| f as &dyn Fn(&mut profiles::Suggestion));
        let (profile, explanation) = self.explainer.alert_values(event, &ctx, check);
        alert.profile = Some(profile);
        alert.explanation = Some(explanation);
    }
}

/// The alerting output.
#[derive(Debug)]
pub struct Alerting {
    mode: Mode,
    correlator: Correlator,
    profiles: Option<ProfileKnowledge>,
    sinks: Option<SinkSet>,
    runtime: tokio::runtime::Handle,
    state_dir: Option<PathBuf>,
    /// Events, losses or ticks changed the correlator since the last save.
    changed: bool,
    /// The checkpoint generation the incidents on disk belong to.
    saved_generation: Option<u64>,
    alerts: Vec<Alert>,
    delivered: u64,
    /// Replay's time: the events' own (see [`correlate::LogTimeline`]).
    log_clock: correlate::LogTimeline,
    /// Follow mode's time (see [`FollowClock`]).
    clock: FollowClock,
    /// The daemon's counters (alerts, open incidents, sink stats); see [`Alerting::with_metrics`].
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// The incident alerts made since the last save (none without a state directory).
    sent_log: Option<SentLog>,
    /// Without a state directory: the private directory of the outboxes, removed at the end
    /// (see [`Alerting::with_temporary_outboxes`]).
    temporary_outboxes: Option<tempfile::TempDir>,
}

/// The incident alerts handed to the sinks since the last save of the incidents (see
/// [`correlate::sent`]): a line `ID SEQ DIGEST` each, written before any sink gets them, one
/// `write` for the alerts of one event or tick. No fsync: it is there for a process that is
/// killed or crashes (the kernel keeps what it wrote), not for a power loss. Each save of the incidents moves it to
/// `FILE.prev` and starts a new one, so it holds what came after the newer saved incidents, and
/// `.prev` what came between those and the previous ones (kept as `incidents.json.prev`).
#[derive(Debug)]
struct SentLog {
    path: PathBuf,
    file: Option<std::fs::File>,
    buf: String,
    /// A write failed (warned once until one succeeds again).
    failing: bool,
}

impl SentLog {
    fn new(path: PathBuf) -> SentLog {
        SentLog {
            path,
            file: None,
            buf: String::new(),
            failing: false,
        }
    }

    /// Record the incident alerts among `alerts`.
    fn record(&mut self, alerts: &[Alert]) {
        use std::fmt::Write as _;
        use std::io::Write as _;
        self.buf.clear();
        for a in alerts {
            if matches!(
                a.alert_type,
                AlertType::IncidentOpened | AlertType::IncidentUpdate | AlertType::IncidentClosed
            ) {
                let _ = writeln!(self.buf, "{} {} {:x}", a.id, a.seq, a.content_digest());
            }
        }
        if self.buf.is_empty() {
            return;
        }
        let result = match &mut self.file {
            Some(f) => f.write_all(self.buf.as_bytes()),
            None => Self::open(&self.path).and_then(|mut f| {
                f.write_all(self.buf.as_bytes())?;
                self.file = Some(f);
                Ok(())
            }),
        };
        match result {
            Ok(()) => self.failing = false,
            Err(e) => {
                // The alerts still go out; only a crash before the next save could then reuse
                // a `seq` of theirs.
                if !self.failing {
                    crate::log_warn!(
                        "{}: {e}; after a crash before the next save, an incident's next alert \
                         may reuse the seq of one sent now",
                        self.path.display()
                    );
                }
                self.failing = true;
                self.file = None;
            }
        }
    }

    /// Open the log for appending. A last line torn by a kill is ended first, so the next
    /// entry does not join it.
    fn open(path: &Path) -> io::Result<std::fs::File> {
        use std::io::Write as _;
        use std::os::unix::fs::FileExt as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let len = f.metadata()?.len();
        let mut last = [0u8];
        if len > 0 && f.read_at(&mut last, len - 1)? == 1 && last[0] != b'\n' {
            f.write_all(b"\n")?;
        }
        Ok(f)
    }

    /// The incidents were saved: what was recorded is in them; start a new log. `keep_prev`:
    /// the save replaced one the checkpoints never caught up with, so `.prev` still belongs to
    /// the save they are at, and what was recorded since is added to it.
    fn rotate(&mut self, keep_prev: bool) {
        use std::io::Write as _;
        self.file = None;
        let prev = prev_path(&self.path);
        let result = if keep_prev {
            match std::fs::read(&self.path) {
                Ok(bytes) => Self::open(&prev)
                    .and_then(|mut f| f.write_all(&bytes))
                    .and_then(|()| std::fs::remove_file(&self.path)),
                Err(e) => Err(e),
            }
        } else {
            std::fs::rename(&self.path, &prev)
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => crate::log_warn!("{}: cannot move it aside: {e}", self.path.display()),
        }
    }

    /// The entries of the log at `path` (a line torn by a kill, or damaged, is skipped).
    fn read(path: &Path) -> Vec<correlate::sent::SentSeq> {
        let text = match std::fs::read(path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    crate::log_warn!("{}: {e}; not used", path.display());
                }
                return Vec::new();
            }
        };
        text.split_terminator('\n')
            .filter_map(|line| {
                let mut parts = line.split(' ');
                let id = parts.next()?;
                let seq = parts.next()?.parse().ok()?;
                let digest = u64::from_str_radix(parts.next()?, 16).ok()?;
                (parts.next().is_none() && !id.is_empty()).then(|| correlate::sent::SentSeq {
                    id: id.to_string(),
                    seq,
                    digest,
                })
            })
            .collect()
    }
}

/// The daemon's time for the correlator: wall-clock milliseconds at start (or the restored
/// state's time, when that is later), advanced by the monotonic clock. The correlator never lets
/// time go backwards, so a wall clock stepped back (NTP, a VM restored) or a state saved while
/// the clock ran ahead would hold every window (no update, no quiet close, no end of the flood
/// minute) until the wall clock caught up; this clock only moves forward at the real rate.
#[derive(Debug, Clone, Copy)]
struct FollowClock {
    base_ms: u64,
    start: std::time::Instant,
}

impl FollowClock {
    fn new(wall_ms: u64, restored_ms: u64) -> FollowClock {
        FollowClock {
            base_ms: wall_ms.max(restored_ms),
            start: std::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

impl Alerting {
    /// Build the stage. In follow mode the correlator is restored from the state directory.
    pub fn new(
        mode: Mode,
        config: correlate::Config,
        profiles: Option<ProfileKnowledge>,
        sinks: SinkSet,
        runtime: tokio::runtime::Handle,
        state_dir: Option<PathBuf>,
    ) -> Alerting {
        let (correlator, sent_log) = match &state_dir {
            Some(dir) => {
                let (mut correlator, restored) =
                    restore(&dir.join(incidents_file(mode)), dir, config);
                let log = dir.join(sent_file(mode));
                // The alerts made after the restored save: those recorded since the newer save
                // and, unless that one was restored, those before it as well.
                if restored == Restored::Other {
                    correlator.sent_after_save(SentLog::read(&prev_path(&log)));
                }
                correlator.sent_after_save(SentLog::read(&log));
                (correlator, Some(SentLog::new(log)))
            }
            None => (Correlator::new(config), None),
        };
        // Replay's clock is the events' time; carry on from where the saved state stopped.
        let log_clock = match mode {
            Mode::Replay => correlate::LogTimeline::starting_at(correlator.latest_time_ms()),
            Mode::Follow => correlate::LogTimeline::default(),
        };
        let clock = FollowClock::new(crate::sinks::now_ms(), correlator.latest_time_ms());
        Alerting {
            mode,
            clock,
            correlator,
            profiles,
            sinks: Some(sinks),
            runtime,
            state_dir,
            changed: false,
            saved_generation: None,
            alerts: Vec::new(),
            delivered: 0,
            log_clock,
            metrics: None,
            sent_log,
            temporary_outboxes: None,
        }
    }

    /// The correlator's time: the events' in a replay (never going backwards), the follow
    /// clock otherwise.
    fn now_ms(&self) -> u64 {
        match self.mode {
            Mode::Replay => crate::sinks::now_ms(),
            Mode::Follow => self.clock.now_ms(),
        }
    }

    /// Report alerts, open incidents and sink counters to `metrics` (the daemon's endpoint,
    /// `STATUS=` line, journal and `armorwatch status`).
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Alerting {
        self.metrics = Some(metrics);
        self
    }

    /// The sinks' outboxes are in `dir`, a private temporary directory (there is no state
    /// directory), removed with this stage; what they hold at the stop is lost.
    pub fn with_temporary_outboxes(mut self, dir: tempfile::TempDir) -> Alerting {
        self.temporary_outboxes = Some(dir);
        self
    }

    fn report_state(&self) {
        if let (Some(m), Some(sinks)) = (&self.metrics, &self.sinks) {
            m.observe_alerting(self.correlator.open_incidents(), sinks.stats());
        }
    }

    /// Alerts handed to the sinks so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    fn emit(&mut self) {
        let mut alerts = std::mem::take(&mut self.alerts);
        let emitted = alerts.len();
        if let Some(log) = &mut self.sent_log {
            log.record(&alerts);
        }
        for mut alert in alerts.drain(..) {
            if matches!(
                alert.alert_type,
                AlertType::IncidentOpened | AlertType::IncidentUpdate | AlertType::IncidentClosed
            ) {
                if let Some(p) = self.profiles.as_mut() {
                    p.annotate(&mut alert);
                }
            }
            if let Some(sinks) = &self.sinks {
                sinks.deliver_alert_wait(&alert);
            }
            if let Some(m) = &self.metrics {
                m.observe_alert(&alert);
            }
            self.delivered += 1;
        }
        if emitted > 0 {
            self.report_state();
        }
        self.alerts = alerts;
    }

    /// Let the wall clock close or update incidents, and send what that produced; a change is
    /// remembered for the next save.
    fn tick_correlator(&mut self) {
        let before = (self.alerts.len(), self.correlator.open_incidents());
        let now = self.now_ms();
        self.correlator.tick(now, &mut self.alerts);
        self.changed |= (self.alerts.len(), self.correlator.open_incidents()) != before;
        self.emit();
    }

    /// Save the open incidents for checkpoint generation `generation` (the previous save is
    /// kept as `FILE.prev`).
    fn save_snapshot(&mut self, generation: u64) -> io::Result<()> {
        let Some(dir) = &self.state_dir else {
            return Ok(());
        };
        let saved = SavedIncidents {
            checkpoint_generation: generation,
            snapshot: self.correlator.snapshot(),
        };
        let bytes = serde_json::to_vec(&saved).map_err(io::Error::other)?;
        let path = dir.join(incidents_file(self.mode));
        // The previous save's checkpoints were not saved (a failed save, retried): that save
        // is replaced, and `.prev` (the one the checkpoints on disk belong to) stays, with
        // the alerts recorded since it.
        let uncommitted = self
            .saved_generation
            .is_some_and(|g| crate::checkpoint::saved_generation(dir) < g);
        if !uncommitted {
            keep_as_prev(&path)?;
        }
        crate::checkpoint::write_atomic(&path, &bytes)?;
        if let Some(log) = &mut self.sent_log {
            log.rotate(uncommitted);
        }
        self.changed = false;
        self.saved_generation = Some(generation);
        Ok(())
    }
}

fn incidents_file(mode: Mode) -> &'static str {
    match mode {
        Mode::Follow => INCIDENTS_FILE,
        Mode::Replay => REPLAY_INCIDENTS_FILE,
    }
}

fn sent_file(mode: Mode) -> &'static str {
    match mode {
        Mode::Follow => SENT_FILE,
        Mode::Replay => REPLAY_SENT_FILE,
    }
}

/// Which save [`restore`] used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restored {
    /// `FILE`, saved for the checkpoints' generation.
    Current,
    /// `FILE.prev` (the crash came between saving the incidents and the checkpoints), a save
    /// of another generation, or none (a first start, or no save could be used).
    Other,
}

fn prev_path(path: &Path) -> PathBuf {
    crate::checkpoint::with_suffix(path, ".prev")
}

/// The saved incidents at `path` become `path.prev` too, while `path` stays until the new save
/// replaces it: a hard link under a temporary name, renamed over `.prev`. (Renaming `path`
/// itself left no `path` while a save failed, a full disk: `status` said no incidents were
/// saved, though they were.)
fn keep_as_prev(path: &Path) -> io::Result<()> {
    let prev = prev_path(path);
    let link = crate::checkpoint::with_suffix(&prev, ".tmp");
    match std::fs::remove_file(&link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::hard_link(path, &link) {
        Ok(()) => std::fs::rename(&link, &prev),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // No hard links here (a filesystem without them; a confining profile without `l`):
        // the file itself becomes `.prev`, as before.
        Err(_) => match std::fs::rename(path, &prev) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
    }
}

/// The saved incidents that belong to the checkpoints in `dir`: `path` or, after a crash between
/// the two saves, `path.prev`; failing both, the newer of them (with a warning); none: empty.
fn restore(path: &Path, dir: &Path, config: correlate::Config) -> (Correlator, Restored) {
    let generation = crate::checkpoint::saved_generation(dir);
    let read = |p: &Path| -> Option<SavedIncidents> {
        let bytes = std::fs::read(p).ok()?;
        match serde_json::from_slice::<SavedIncidents>(&bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                crate::log_warn!("{}: {e}; not used", p.display());
                None
            }
        }
    };
    let current = read(path);
    let previous = read(&prev_path(path));
    let chosen = match (current, previous) {
        (Some(c), _) if c.checkpoint_generation == generation => {
            return (restore_snapshot(c, path, config), Restored::Current);
        }
        (_, Some(p)) if p.checkpoint_generation == generation => Some(p),
        (Some(c), _) => {
            crate::log_warn!(
                "{}: saved for checkpoint generation {}, the checkpoints are at {generation}; \
                 counts since may be off",
                path.display(),
                c.checkpoint_generation
            );
            Some(c)
        }
        (None, p) => p,
    };
    let correlator = match chosen {
        Some(saved) => restore_snapshot(saved, path, config),
        None => Correlator::new(config),
    };
    (correlator, Restored::Other)
}

fn restore_snapshot(saved: SavedIncidents, path: &Path, config: correlate::Config) -> Correlator {
    match Correlator::restore(saved.snapshot, config.clone()) {
        Ok(c) => c,
        Err(e) => {
            crate::log_warn!("{}: {e}; starting with no open incidents", path.display());
            Correlator::new(config)
        }
    }
}

impl EventOutput for Alerting {
    fn deliver(&mut self, item: &Item) -> io::Result<()> {
        let now = self.now_ms();
        self.changed = true;
        match item {
            Item::Event(event) => {
                if let Some(sinks) = &self.sinks {
                    sinks.deliver_event(event);
                }
                if let Some(p) = self.profiles.as_mut() {
                    p.observe(event);
                }
                // Replay has no wall clock of its own: the events' stamps drive the windows.
                let (c, alerts) = (&mut self.correlator, &mut self.alerts);
                match self.mode {
                    Mode::Replay => self.log_clock.push(c, event.clone(), now, alerts),
                    Mode::Follow => c.push(event.clone(), now, alerts),
                }
            }
            Item::Loss(loss) => {
                let origin = match &loss.source {
                    crate::event::Source::File { path, .. } => format!("file:{path}"),
                    crate::event::Source::Journald { .. } => "journald".to_string(),
                    crate::event::Source::Kmsg { .. } => "kmsg".to_string(),
                    crate::event::Source::Netlink => "netlink".to_string(),
                    crate::event::Source::Stdin { .. } => "stdin".to_string(),
                    crate::event::Source::Text => "text".to_string(),
                };
                let reason = serde_json::to_value(loss.reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let what = match &loss.detail {
                    Some(d) => format!("{reason}: {d}"),
                    None => reason,
                };
                let info = crate::alert::LossInfo {
                    origin,
                    what,
                    count: loss.count,
                };
                // In a replay the loss is placed at the log time reached so far: the wall
                // clock here would hold every later (older) event at today's time, and no
                // window would pass again.
                let at = match self.mode {
                    Mode::Replay => self.log_clock.latest(),
                    Mode::Follow => now,
                };
                self.correlator.push_loss(info, at, &mut self.alerts);
            }
        }
        self.emit();
        Ok(())
    }

    fn persist(&mut self, generation: u64) -> io::Result<()> {
        // Every alert comes from a change (an event, a loss, a tick that closed something):
        // without one there is nothing queued to write and nothing new to save (the pipeline
        // calls this each second while idle) — unless the positions moved on (lines that were
        // no AppArmor event): the incidents are saved again for the new generation, or a crash
        // after the next change's save would find no incidents of the checkpoints' generation
        // and restore the newer ones, counting the records read again twice.
        if !self.changed && self.saved_generation == Some(generation) {
            return Ok(());
        }
        // Records a replay holds until a time is reached are not in the snapshot: the positions
        // about to be saved are past them, so a crash after this save would lose them. They
        // count at the time reached so far instead.
        if self.mode == Mode::Replay && self.log_clock.holds_any() {
            self.log_clock
                .push_held(&mut self.correlator, &mut self.alerts);
            self.emit();
        }
        if let Some(sinks) = &self.sinks {
            self.runtime.block_on(sinks.flush_local());
        }
        self.save_snapshot(generation)
    }

    fn tick(&mut self) -> io::Result<()> {
        if self.mode == Mode::Follow {
            self.tick_correlator();
            self.report_state();
        }
        self.end_batch()
    }

    fn end_batch(&mut self) -> io::Result<()> {
        if let Some(sinks) = &self.sinks {
            sinks.end_batch();
        }
        Ok(())
    }

    fn close(&mut self) -> io::Result<()> {
        match self.mode {
            // Replay's output is complete: every incident ends with incident.closed.
            Mode::Replay => {
                self.log_clock
                    .push_held(&mut self.correlator, &mut self.alerts);
                self.correlator
                    .flush_all(self.log_clock.latest(), &mut self.alerts);
                self.changed = true;
                self.emit();
            }
            // A restart inside the window continues the open incidents (saved by the
            // pipeline's last `persist`, together with the checkpoints).
            Mode::Follow => self.tick_correlator(),
        }
        if let Some(sinks) = self.sinks.take() {
            // Counters as of the stop (what the last grace period delivers is not counted).
            if let Some(m) = &self.metrics {
                m.observe_alerting(self.correlator.open_incidents(), sinks.stats());
            }
            let report = self
                .runtime
                .block_on(sinks.shutdown(Duration::from_secs(5)));
            if let Some(m) = &self.metrics {
                m.retire_sinks();
            }
            log_shutdown(&report, self.temporary_outboxes.is_some());
        }
        Ok(())
    }
}

/// Say what the sinks left undelivered at the stop: the admin stopping armorwatch during an
/// outage learns that those alerts are kept, not lost.
fn log_shutdown(report: &crate::sinks::ShutdownReport, temporary: bool) {
    let kept = if temporary {
        "lost: there is no state directory to keep the outbox in"
    } else {
        "kept in its outbox for the next start"
    };
    for name in &report.aborted {
        crate::log_warn!(
            "sink {name}: a delivery was still under way at the stop and was cut off; its alerts are {kept}"
        );
    }
    for (name, n) in report.pending.iter().filter(|(_, n)| **n > 0) {
        crate::log_warn!(
            "sink {name}: {n} alert{} not delivered yet, {kept}",
            if *n == 1 { "" } else { "s" }
        );
    }
}

/// Why outputs could not be built (exit 78: the configuration is wrong).
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A `[sinks.NAME]` table is wrong.
    #[error(transparent)]
    Sink(#[from] crate::sinks::config::SinkConfigError),
    /// A sink could not be set up.
    #[error(transparent)]
    Setup(#[from] crate::sinks::SinkError),
    /// An events file cannot be opened.
    #[error("sinks.{sink}: cannot open {path}: {source}")]
    Open {
        /// NAME.
        sink: String,
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// severity.db or a noise drop-in is wrong.
    #[error("{0}")]
    Correlate(String),
    /// Without a state directory, the outboxes' temporary directory could not be made.
    #[error("cannot make a temporary directory for the outboxes: {0}")]
    TemporaryOutbox(io::Error),
}

impl OutputError {
    /// An I/O error that may pass (a full disk, EIO, too many open files), not a mistake in the
    /// configuration. `run` exits 1 for it, which systemd restarts; exit 78 would leave the
    /// service down until someone starts it (`RestartPreventExitStatus=78`). A path that does
    /// not exist, cannot be written by this user or is a directory stays a configuration error.
    pub fn is_transient(&self) -> bool {
        use crate::sinks::SinkError;
        use crate::sinks::outbox::OutboxError;
        let source = match self {
            OutputError::Open { source, .. }
            | OutputError::TemporaryOutbox(source)
            | OutputError::Setup(SinkError::File { source, .. })
            | OutputError::Setup(SinkError::Outbox {
                source: OutboxError::Io { source, .. },
                ..
            }) => source,
            _ => return false,
        };
        !matches!(
            source.kind(),
            io::ErrorKind::NotFound
                | io::ErrorKind::PermissionDenied
                | io::ErrorKind::IsADirectory
                | io::ErrorKind::NotADirectory
                | io::ErrorKind::InvalidInput
                | io::ErrorKind::InvalidFilename
                | io::ErrorKind::AlreadyExists
        )
    }
}

/// This machine's host name (for alerts whose records name none).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Validate every `[sinks.NAME]` table (the check `check-config` runs).
pub fn sink_specs(
    config: &crate::config::Config,
) -> Result<Vec<crate::sinks::config::SinkSpec>, OutputError> {
    let ctx = crate::sinks::config::SecretContext::from_env();
    let mut specs = Vec::new();
    for sink in &config.sinks {
        specs.push(crate::sinks::config::SinkSpec::from_table(
            &sink.name,
            &sink.table,
            &ctx,
        )?);
    }
    Ok(specs)
}

/// The correlator's settings from the configuration: severity.db from disk when present (else
/// the bundled copy), noise rules bundled plus the drop-ins.
pub fn correlator_config(
    config: &crate::config::Config,
    host: &str,
) -> Result<correlate::Config, OutputError> {
    use crate::correlate::noise::{self, NoiseRules};
    use crate::correlate::severity::SeverityDb;
    let mut c = correlate::Config {
        window_ms: config.correlate.window.as_millis() as u64,
        max_alerts_per_minute: config.correlate.max_alerts_per_minute,
        max_open_incidents: config.correlate.max_open_incidents,
        host: host.to_string(),
        ..correlate::Config::default()
    };
    // Absent is fine (the defaults are optional files); there but unreadable is an error: the
    // admin's severities and mute rules would be dropped without a word (a review helper's
    // root-only 0700 noise.d: check-config said OK and no rule applied).
    let unreadable = |key: &str, path: &Path, e: io::Error| {
        OutputError::Correlate(format!(
            "`correlate.{key}`: cannot read {}: {e}",
            path.display()
        ))
    };
    match std::fs::read_to_string(&config.correlate.severity_db) {
        Ok(text) => {
            let db = SeverityDb::parse(&text).map_err(|e| {
                OutputError::Correlate(format!("{}: {e}", config.correlate.severity_db.display()))
            })?;
            c.severity_db = std::sync::Arc::new(db);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(unreadable("severity_db", &config.correlate.severity_db, e)),
    }
    let mut drop_ins: Vec<(String, String)> = Vec::new();
    drop_ins.push((
        "data/noise.toml".to_string(),
        noise::BUNDLED_NOISE.to_string(),
    ));
    let dir = match std::fs::read_dir(&config.correlate.noise_dir) {
        Ok(dir) => Some(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(unreadable("noise_dir", &config.correlate.noise_dir, e)),
    };
    if let Some(dir) = dir {
        let mut paths: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| OutputError::Correlate(format!("{}: {e}", p.display())))?;
            drop_ins.push((p.display().to_string(), text));
        }
    }
    let texts: Vec<(&str, &str)> = drop_ins
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let noise =
        NoiseRules::from_texts(&texts).map_err(|e| OutputError::Correlate(e.to_string()))?;
    c.noise = std::sync::Arc::new(noise);
    Ok(c)
}

/// Build the pipeline's outputs: `content = "events"` file/stdout sinks get events directly
/// (synchronously, so checkpoints only advance past what they wrote); everything else goes
/// through the correlator, the explainer and the [`SinkSet`]. Without any sink: alerts as JSON
/// lines on standard output. Must be called inside the runtime.
pub fn build_outputs(
    config: &crate::config::Config,
    mode: Mode,
    state_dir: Option<&Path>,
) -> Result<Vec<Box<dyn EventOutput>>, OutputError> {
    build_outputs_with(config, mode, state_dir, None)
}

/// [`build_outputs`], reporting to the daemon's [`crate::metrics::Metrics`] when given.
pub fn build_outputs_with(
    config: &crate::config::Config,
    mode: Mode,
    state_dir: Option<&Path>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
) -> Result<Vec<Box<dyn EventOutput>>, OutputError> {
    use crate::pipeline::JsonLines;
    use crate::sinks::config::{Content, SinkKind};
    let host = config.host.clone().unwrap_or_else(host_name);
    let mut specs = sink_specs(config)?;
    if specs.is_empty() {
        let mut table = toml::Table::new();
        table.insert("type".into(), toml::Value::String("stdout".into()));
        let ctx = crate::sinks::config::SecretContext::from_env();
        specs.push(crate::sinks::config::SinkSpec::from_table(
            "stdout", &table, &ctx,
        )?);
    }
    let mut outputs: Vec<Box<dyn EventOutput>> = Vec::new();
    let mut alert_specs = Vec::new();
    for spec in specs {
        match &spec.kind {
            SinkKind::File(f) if f.content == Content::Events => {
                let out = JsonLines::file(&f.path).map_err(|source| OutputError::Open {
                    sink: spec.name.clone(),
                    path: f.path.clone(),
                    source,
                })?;
                outputs.push(Box::new(out));
            }
            SinkKind::Stdout(s) if s.content == Content::Events => {
                outputs.push(Box::new(JsonLines::stdout()));
            }
            _ => alert_specs.push(spec),
        }
    }
    if !alert_specs.is_empty() {
        // Without a state directory the outboxes go to a private directory of their own
        // (0700, a random name), not to a fixed name in /tmp that another user could make
        // first and fill with links or forged alerts.
        let (outbox_dir, temporary) = match state_dir {
            Some(dir) => (dir.to_path_buf(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("armorwatch-outbox-")
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                    .tempdir()
                    .map_err(OutputError::TemporaryOutbox)?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let sinks = SinkSet::start(
            &alert_specs,
            crate::sinks::SinkSetOptions::new(outbox_dir, host.clone()),
        )?;
        let profiles = if config.profiles.enabled {
            // Replay can open thousands of incidents in seconds; a compile check costs ~0.2 s each,
            // so replay leaves suggestions unchecked (`armorwatch explain` checks them).
            let check = (config.profiles.check_suggestions && mode == Mode::Follow)
                .then_some(config.profiles.check_wait);
            match ProfileKnowledge::load(&config.profiles.dir, check, mode) {
                Ok(p) => Some(p),
                Err(e) => {
                    crate::log_warn!(
                        "{}: {e}; alerts will carry no explanation",
                        config.profiles.dir.display()
                    );
                    None
                }
            }
        } else {
            None
        };
        let alerting = Alerting::new(
            mode,
            correlator_config(config, &host)?,
            profiles,
            sinks,
            tokio::runtime::Handle::current(),
            state_dir.map(Path::to_path_buf),
        );
        let alerting = match metrics {
            Some(m) => alerting.with_metrics(m),
            None => alerting,
        };
        let alerting = match temporary {
            Some(t) => alerting.with_temporary_outboxes(t),
            None => alerting,
        };
        outputs.push(Box::new(alerting));
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::{Alerting, FollowClock, Mode};
    use crate::pipeline::{EventOutput, Item};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A replay's alerting stage with no sinks, its state in `dir`.
    fn replay_alerting(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> Alerting {
        let _guard = rt.enter();
        let opts = crate::sinks::SinkSetOptions::new(dir, "testhost");
        let sinks = crate::sinks::SinkSet::start(&[], opts).unwrap();
        Alerting::new(
            Mode::Replay,
            crate::correlate::Config::default(),
            None,
            sinks,
            rt.handle().clone(),
            Some(dir.to_path_buf()),
        )
    }

    /// Without a state directory the remote sinks' outboxes go to a private directory (0700, a
    /// random name) removed at the end; they went to `$TMPDIR/armorwatch-outbox`, a fixed name
    /// another user could make first (links, forged alerts to deliver), and stayed there.
    #[test]
    fn without_a_state_directory_outboxes_are_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let config = crate::config::parse(
            "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n[profiles]\nenabled = false\n",
            std::path::Path::new("test.toml"),
        )
        .unwrap();
        let ours = || -> Vec<std::path::PathBuf> {
            std::fs::read_dir(std::env::temp_dir())
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("armorwatch-outbox-"))
                        && p.join("outbox/hook").is_dir()
                })
                .collect()
        };
        let before = ours();
        // As the daemon's: the sinks' tasks run on its workers.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut outputs = {
            let _guard = rt.enter();
            super::build_outputs_with(&config, Mode::Replay, None, None).unwrap()
        };
        let made: Vec<_> = ours().into_iter().filter(|p| !before.contains(p)).collect();
        assert_eq!(made.len(), 1, "{made:?}");
        let mode = std::fs::metadata(&made[0]).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        for o in &mut outputs {
            o.close().unwrap();
        }
        drop(outputs);
        assert!(!made[0].exists());
    }

    /// A file denial of `/usr/bin/x` stamped `stamp` (`SECONDS.MILLIS`).
    fn denial(stamp: &str, serial: u32) -> Item {
        let line = format!(
            "type=AVC msg=audit({stamp}:{serial}): apparmor=\"DENIED\" operation=\"open\" \
             profile=\"/usr/bin/x\" name=\"/etc/x\" pid=42 comm=\"x\" requested_mask=\"r\" \
             denied_mask=\"r\" fsuid=0 ouid=0"
        );
        match crate::parse::parse_text(&line, &crate::event::Source::Text).remove(0) {
            crate::parse::Output::Event(e) => Item::Event(std::sync::Arc::new(*e)),
            other => panic!("{other:?}"),
        }
    }

    /// A kmsg position, for the tests that need the checkpoints to move.
    fn kmsg_pos(seq: u64) -> crate::checkpoint::Position {
        crate::checkpoint::Position::Kmsg {
            boot_id: "b".into(),
            seq,
        }
    }

    /// A replay whose first record is stamped far in the future holds it until a time is
    /// reached. A save in between (the positions move past it) must not leave it out of the
    /// saved incidents: a crash then lost it.
    #[test]
    fn a_save_keeps_the_records_held_for_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let mut alerting = replay_alerting(&rt, dir.path());
        alerting.deliver(&denial("4102444800.000", 1)).unwrap();
        alerting.persist(0).unwrap();
        let (restored, _) = super::restore(
            &dir.path().join(super::REPLAY_INCIDENTS_FILE),
            dir.path(),
            crate::correlate::Config::default(),
        );
        assert_eq!(restored.open_incidents(), 1);
    }

    /// A save that fails (here the temporary file cannot be made; a full disk in life) leaves
    /// the last saved incidents where `status` reads them, and in `.prev` for the restore. The
    /// file was renamed to `.prev` first, and was then missing until a save succeeded.
    #[test]
    fn a_failed_save_leaves_the_last_saved_incidents_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let mut a = replay_alerting(&rt, dir.path());
        let path = dir.path().join(super::REPLAY_INCIDENTS_FILE);
        let mut cp = crate::checkpoint::Checkpoints::open(dir.path()).unwrap();
        a.deliver(&denial("1700000000.001", 1)).unwrap();
        cp.set("s", kmsg_pos(1));
        a.persist(cp.next_generation()).unwrap();
        cp.save().unwrap();
        let first = std::fs::read(&path).unwrap();
        a.deliver(&denial("1700000000.002", 2)).unwrap();
        std::fs::create_dir(crate::checkpoint::with_suffix(&path, ".tmp")).unwrap();
        assert!(a.persist(cp.next_generation()).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), first);
        assert_eq!(std::fs::read(super::prev_path(&path)).unwrap(), first);
        // Once it can be written again, the new state replaces it, and `.prev` is the old one.
        std::fs::remove_dir(crate::checkpoint::with_suffix(&path, ".tmp")).unwrap();
        cp.set("s", kmsg_pos(2));
        a.persist(cp.next_generation()).unwrap();
        cp.save().unwrap();
        assert_ne!(std::fs::read(&path).unwrap(), first);
        assert_eq!(std::fs::read(super::prev_path(&path)).unwrap(), first);
        let (restored, _) = super::restore(&path, dir.path(), crate::correlate::Config::default());
        assert_eq!(restored.snapshot().incidents[0].total, 2);
    }

    /// A checkpoint save with the correlator unchanged (only lines that were no AppArmor event
    /// since) left the incidents tagged with the generation before; the next change's save and
    /// a kill -9 before its checkpoints then found no incidents of the checkpoints' generation,
    /// restored the newer ones and counted the event read again twice. Found by a review helper.
    #[test]
    fn an_unchanged_save_keeps_the_generations_matching() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let mut a = replay_alerting(&rt, dir.path());
        let mut cp = crate::checkpoint::Checkpoints::open(dir.path()).unwrap();
        a.deliver(&denial("1700000000.001", 1)).unwrap();
        cp.set("s", kmsg_pos(1));
        a.persist(cp.next_generation()).unwrap();
        cp.save().unwrap();
        // Lines that are no event: the positions move, the correlator does not.
        cp.set("s", kmsg_pos(2));
        a.persist(cp.next_generation()).unwrap();
        cp.save().unwrap();
        // The next event is saved in the incidents; kill -9 before the checkpoints follow.
        a.deliver(&denial("1700000000.003", 3)).unwrap();
        a.persist(cp.next_generation()).unwrap();
        drop(cp);
        let (restored, _) = super::restore(
            &dir.path().join(super::REPLAY_INCIDENTS_FILE),
            dir.path(),
            crate::correlate::Config::default(),
        );
        let snap = restored.snapshot();
        assert_eq!(snap.incidents.len(), 1);
        assert_eq!(
            snap.incidents[0].total, 1,
            "the event read again is counted once"
        );
    }

    /// The follow clock starts at the later of the wall clock and the restored state's time
    /// (a state saved while the clock ran ahead does not hold the windows until the wall
    /// clock catches up) and moves only forward.
    /// The incident alerts made after a save are recorded before the sinks get them and come
    /// back after a kill -9: re-made with the same content, an alert keeps its `seq`; with
    /// other content, it takes the next one. A save starts a new log.
    #[test]
    fn alerts_made_after_the_last_save_come_back_after_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let log = dir.path().join(super::REPLAY_SENT_FILE);
        let mut a = replay_alerting(&rt, dir.path());
        a.deliver(&denial("1700000000.000", 1)).unwrap();
        a.persist(0).unwrap();
        a.deliver(&denial("1700000200.000", 2)).unwrap();
        a.deliver(&denial("1700000310.000", 3)).unwrap(); // incident.update, seq 2, count 2
        let id = a.correlator.snapshot().incidents[0].id.clone();
        let text = std::fs::read_to_string(&log).unwrap();
        let digest = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{id} 2 ")))
            .unwrap_or_else(|| panic!("no seq 2 of {id} in {text:?}"));
        assert_eq!(
            text.lines().count(),
            1,
            "only what came after the save: {text:?}"
        );
        let digest = u64::from_str_radix(digest, 16).unwrap();
        drop(a); // kill -9

        let restarted = |rt| replay_alerting(rt, dir.path());
        let mut a = restarted(&rt);
        let sent = a.correlator.snapshot().sent;
        assert_eq!(
            sent,
            [crate::correlate::sent::SentSeq {
                id: id.clone(),
                seq: 2,
                digest
            }]
        );
        // The same records again: the same update, under the same key.
        a.deliver(&denial("1700000200.000", 2)).unwrap();
        a.deliver(&denial("1700000310.000", 3)).unwrap();
        let snap = a.correlator.snapshot();
        assert_eq!((snap.incidents[0].seq, snap.sent.len()), (2, 0));
        drop(a);

        // A kill while a batch was written tore the last line.
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str(&format!("{id} 3"));
        std::fs::write(&log, text).unwrap();
        // Other records after the restart: the incident closes quiet, which says something
        // else than the update recorded as seq 2: it takes seq 3, recorded after the torn line.
        let mut a = restarted(&rt);
        a.deliver(&denial("1700000620.000", 4)).unwrap();
        drop(a);
        // And again: an update that differs from both takes seq 4.
        let mut a = restarted(&rt);
        a.deliver(&denial("1700000200.000", 2)).unwrap();
        a.deliver(&denial("1700000305.000", 5)).unwrap();
        assert_eq!(a.correlator.snapshot().incidents[0].seq, 4);
        a.persist(0).unwrap();
        assert!(!log.exists());
        assert!(super::prev_path(&log).exists());
    }

    #[test]
    fn the_follow_clock_starts_at_the_later_time_and_only_moves_forward() {
        let ahead = FollowClock::new(1_000, 5_000_000);
        let first = ahead.now_ms();
        assert!((5_000_000..5_060_000).contains(&first), "{first}");
        assert!(ahead.now_ms() >= first);
        let behind = FollowClock::new(9_000_000, 5_000_000);
        assert!((9_000_000..9_060_000).contains(&behind.now_ms()));
    }

    // Regressions found by a review helper (each failed before its fix).

    /// A follow-mode alerting stage (state in `dir`, no sinks) whose clock reads `at_ms`.
    fn follow_alerting(
        rt: &tokio::runtime::Runtime,
        dir: &std::path::Path,
        at_ms: u64,
    ) -> Alerting {
        follow_alerting_with(rt, dir, at_ms, crate::correlate::Config::default())
    }

    fn follow_alerting_with(
        rt: &tokio::runtime::Runtime,
        dir: &std::path::Path,
        at_ms: u64,
        config: crate::correlate::Config,
    ) -> Alerting {
        let _guard = rt.enter();
        let opts = crate::sinks::SinkSetOptions::new(dir, "testhost");
        let sinks = crate::sinks::SinkSet::start(&[], opts).unwrap();
        let mut a = Alerting::new(
            Mode::Follow,
            config,
            None,
            sinks,
            rt.handle().clone(),
            Some(dir.to_path_buf()),
        );
        a.clock = FollowClock {
            base_ms: at_ms,
            start: std::time::Instant::now(),
        };
        a
    }

    fn set_clock(a: &mut Alerting, at_ms: u64) {
        a.clock = FollowClock {
            base_ms: at_ms,
            start: std::time::Instant::now(),
        };
    }

    /// A denial of `/etc/NAME` by `/usr/bin/x`.
    fn denial_of(stamp: &str, serial: u32, name: &str) -> Item {
        let line = format!(
            "type=AVC msg=audit({stamp}:{serial}): apparmor=\"DENIED\" operation=\"open\" \
             profile=\"/usr/bin/x\" name=\"/etc/{name}\" pid=42 comm=\"x\" requested_mask=\"r\" \
             denied_mask=\"r\" fsuid=0 ouid=0"
        );
        match crate::parse::parse_text(&line, &crate::event::Source::Text).remove(0) {
            crate::parse::Output::Event(e) => Item::Event(std::sync::Arc::new(*e)),
            other => panic!("{other:?}"),
        }
    }

    /// Every `ID SEQ DIGEST` handed to the sinks, from the sent log and its `.prev`, in the
    /// order given.
    fn keys_by_content(
        lines: &[String],
    ) -> std::collections::BTreeMap<(String, String), std::collections::BTreeSet<u64>> {
        let mut m: std::collections::BTreeMap<(String, String), std::collections::BTreeSet<u64>> =
            Default::default();
        for l in lines {
            let p: Vec<&str> = l.split(' ').collect();
            m.entry((p[0].to_string(), p[2].to_string()))
                .or_default()
                .insert(p[1].parse().unwrap());
        }
        m
    }

    /// Two kill -9s before the next save (a crash loop). The second restart makes, from the
    /// same restored state and the same records, the same alert the first restart made, but
    /// under another seq: a receiver dropping duplicates by `id:seq` gets it twice.
    #[test]
    fn a_second_kill_keeps_the_seq_a_restart_gave_an_alert() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let log = dir.path().join(super::SENT_FILE);
        let t0 = 1_700_000_000_000u64;
        // Process 1: opens the incident, saves, then an update (seq 2), kill -9.
        let mut a = follow_alerting(&rt, dir.path(), t0);
        a.deliver(&denial("1700000000.000", 1)).unwrap();
        a.persist(0).unwrap();
        set_clock(&mut a, t0 + 100_000);
        a.deliver(&denial("1700000100.000", 2)).unwrap();
        set_clock(&mut a, t0 + 310_000);
        a.deliver(&denial("1700000310.000", 3)).unwrap();
        drop(a);
        let mut delivered: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        // Process 2, restarted later: reads the records since the save again; the incident
        // closes quiet (other content than the update: it moves to seq 3). kill -9.
        let mut a = follow_alerting(&rt, dir.path(), t0 + 1_000_000);
        a.deliver(&denial("1700000100.000", 2)).unwrap();
        a.deliver(&denial("1700000310.000", 3)).unwrap();
        drop(a);
        let n = delivered.len();
        let all: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        delivered.extend(all[n..].iter().cloned());
        // Process 3, restarted the same way: the same restored state, the same records.
        let mut a = follow_alerting(&rt, dir.path(), t0 + 2_000_000);
        a.deliver(&denial("1700000100.000", 2)).unwrap();
        a.deliver(&denial("1700000310.000", 3)).unwrap();
        drop(a);
        let n2 = all.len();
        let all: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        delivered.extend(all[n2..].iter().cloned());
        for ((id, digest), seqs) in keys_by_content(&delivered) {
            assert_eq!(
                seqs.len(),
                1,
                "{id}: one alert (digest {digest}) delivered under seqs {seqs:?}; log: {delivered:#?}"
            );
        }
    }

    /// More than `MAX_SENT_INCIDENTS` incidents alerted between two saves (flood cap off, a
    /// storm of distinct denials within one checkpoint interval), then kill -9: the restored
    /// incident whose alert came first loses its entry, and its next alert, with other
    /// content, takes the seq of the update it sent before the kill.
    #[test]
    fn many_incidents_alerted_after_a_save_do_not_push_out_an_open_one() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let log = dir.path().join(super::SENT_FILE);
        let cfg = || crate::correlate::Config {
            max_alerts_per_minute: 0,
            ..crate::correlate::Config::default()
        };
        let t0 = 1_700_000_000_000u64;
        let mut a = follow_alerting_with(&rt, dir.path(), t0, cfg());
        a.deliver(&denial("1700000000.000", 1)).unwrap();
        a.persist(0).unwrap();
        set_clock(&mut a, t0 + 100_000);
        a.deliver(&denial("1700000100.000", 2)).unwrap();
        set_clock(&mut a, t0 + 310_000);
        a.deliver(&denial("1700000310.000", 3)).unwrap(); // incident.update, seq 2
        for i in 0..crate::correlate::sent::MAX_SENT_INCIDENTS as u32 {
            let name: String = [i / 676, (i / 26) % 26, i % 26]
                .iter()
                .map(|d| char::from(b'a' + *d as u8))
                .collect();
            a.deliver(&denial_of("1700000310.500", 10 + i, &name))
                .unwrap();
        }
        drop(a); // kill -9
        let mut delivered: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        // Restart later: the records since the save are read again; the restored incident is
        // quiet by now and closes (other content than the update it sent as seq 2).
        let n = delivered.len();
        let mut a = follow_alerting_with(&rt, dir.path(), t0 + 1_000_000, cfg());
        a.deliver(&denial("1700000100.000", 2)).unwrap();
        drop(a);
        let all: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        delivered.extend(all[n..].iter().cloned());
        let mut by_key: std::collections::BTreeMap<
            (String, u64),
            std::collections::BTreeSet<String>,
        > = Default::default();
        for l in &delivered {
            let p: Vec<&str> = l.split(' ').collect();
            by_key
                .entry((p[0].to_string(), p[1].parse().unwrap()))
                .or_default()
                .insert(p[2].to_string());
        }
        for ((id, seq), digests) in by_key {
            assert_eq!(
                digests.len(),
                1,
                "{id}:{seq} given to {} different alerts: {digests:?}",
                digests.len()
            );
        }
    }

    fn lines_of(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The checkpoint save after a `persist` fails (the pipeline warns and tries again after
    /// its back-off, calling `persist` for the same generation again): the second save moves
    /// the sent log over `.prev` a second time, so the alerts made after the save matching the
    /// checkpoints on disk are gone. kill -9: the records since those checkpoints are read
    /// again, an incident that had opened and closed in between opens again under its id,
    /// and its next alert takes the seq of one sent before the kill with other content.
    #[test]
    fn a_retried_save_after_a_failed_checkpoint_save_keeps_the_sent_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let log = dir.path().join(super::SENT_FILE);
        let t0 = 1_700_000_000_000u64;
        let mut delivered = Vec::new();
        let mut cp = crate::checkpoint::Checkpoints::open(dir.path()).unwrap();
        let mut a = follow_alerting(&rt, dir.path(), t0);
        a.deliver(&denial_of("1700000000.000", 1, "b")).unwrap();
        cp.set("s", kmsg_pos(1));
        a.persist(cp.next_generation()).unwrap();
        cp.save().unwrap(); // generation 1 on disk: the records after position 1 come again
        // After the save: incident J opens (seq 1) and closes quiet (seq 2, total 1); other
        // incidents open.
        set_clock(&mut a, t0 + 10_000);
        a.deliver(&denial("1700000010.000", 2)).unwrap();
        set_clock(&mut a, t0 + 320_000);
        a.deliver(&denial("1700000320.000", 3)).unwrap();
        set_clock(&mut a, t0 + 700_000);
        a.deliver(&denial_of("1700000700.000", 4, "d")).unwrap();
        cp.set("s", kmsg_pos(4));
        delivered.extend(lines_of(&log));
        a.persist(cp.next_generation()).unwrap();
        // ... cp.save() fails here (ENOSPC, EIO): the checkpoints stay at generation 1.
        set_clock(&mut a, t0 + 710_000);
        a.deliver(&denial_of("1700000710.000", 5, "c")).unwrap();
        cp.set("s", kmsg_pos(5));
        delivered.extend(lines_of(&log));
        a.persist(cp.next_generation()).unwrap(); // the retry after the back-off
        drop(a); // kill -9 before cp.save()
        drop(cp);
        // Restart: positions of generation 1; the records since are read again.
        let mut a = follow_alerting(&rt, dir.path(), t0 + 2_000_000);
        a.deliver(&denial("1700000010.000", 2)).unwrap();
        a.deliver(&denial("1700000320.000", 3)).unwrap();
        set_clock(&mut a, t0 + 3_000_000);
        a.tick().unwrap();
        drop(a);
        delivered.extend(lines_of(&log));
        let mut by_key: std::collections::BTreeMap<
            (String, u64),
            std::collections::BTreeSet<String>,
        > = Default::default();
        for l in &delivered {
            let p: Vec<&str> = l.split(' ').collect();
            by_key
                .entry((p[0].to_string(), p[1].parse().unwrap()))
                .or_default()
                .insert(p[2].to_string());
        }
        for ((id, seq), digests) in by_key {
            assert_eq!(
                digests.len(),
                1,
                "{id}:{seq} given to {} different alerts: {digests:?}; delivered {delivered:#?}",
                digests.len()
            );
        }
    }
}

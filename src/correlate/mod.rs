//! The correlator: a pure state machine, handed the time, that turns events into incidents and
//! incidents into alerts (`incident.opened`, `incident.update`, `incident.closed`, `suppressed`,
//! `status`, `loss`).
//!
//! Rules it keeps (documented for receivers in `docs/alert-schema.md`):
//! - An incident is the set of events with the same [`IncidentKey`] (and host); see [`key`].
//! - `incident.opened` goes out with the first event, `incident.update` at most once per window
//!   while events keep coming, `incident.closed` once the incident has been quiet for the window.
//! - Counts are exact: every event of an incident is counted exactly once, in the `count` of one
//!   of its alerts or of its entry in a `suppressed` alert; `total` counts all its events.
//! - Flood control caps incident alerts per minute. What it holds back is listed, with counts, in
//!   a `suppressed` alert when the minute ends (or earlier, if the list gets long), never dropped.
//! - At most `max_open_incidents` are open; the least recently seen is closed (`evicted`) to make
//!   room, so memory stays flat whatever the input.
//! - [`Correlator::snapshot`] / [`Correlator::restore`] carry open incidents across restarts.
//!
//! Time is the caller's: every call takes `now` in milliseconds since the epoch (the daemon passes
//! the wall clock, `replay` the events' own times, see [`event_time_ms`]). Time never goes
//! backwards here: an earlier `now` is treated as the latest one seen.
//!
//! Use from the pipeline:
//! - start: [`Settings`] from `[correlate]`, [`SeverityDb::parse`] of `/etc/apparmor/severity.db`
//!   (or [`SeverityDb::bundled`]), [`NoiseRules::from_texts`] of `data/noise.toml` plus drop-ins,
//!   [`Settings::into_config`]; then [`Correlator::restore`] from the state file, or
//!   [`Correlator::new`];
//! - per event [`Correlator::push`], per parser/source loss [`Correlator::push_loss`] (see
//!   [`loss_info`]), about once a second [`Correlator::tick`]; each appends alerts to `out`;
//! - on shutdown (and periodically) write [`Correlator::snapshot`] as JSON, atomically; at the end
//!   of a replay [`Correlator::flush_all`] instead;
//! - what each sink receives is the sink's policy (`crate::sinks::SinkPolicy`), not decided here.

pub mod glob;
pub mod key;
pub mod noise;
pub mod sent;
pub mod severity;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::alert::{ALERT_SCHEMA, Alert, AlertType, HeldBack, IncidentKey, LossInfo, Sample};
use crate::event::{Event, Kind, Source, format_rfc3339_millis};
use key::Normaliser;
use noise::NoiseRules;
use severity::SeverityDb;

/// Milliseconds in the flood-control period.
pub const FLOOD_PERIOD_MS: u64 = 60_000;

/// The version of [`Snapshot`].
pub const SNAPSHOT_VERSION: u32 = 1;

/// Severity of `loss` alerts: lost records may be lost denials.
pub const LOSS_SEVERITY: u8 = 6;

/// Correlator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The window: at most one `incident.update` per window, and `incident.closed` after this
    /// long without an event.
    pub window_ms: u64,
    /// Cap on incident alerts (opened/update/closed) per minute; 0 = no cap.
    pub max_alerts_per_minute: u32,
    /// Cap on open incidents; the least recently seen is evicted (closed) beyond it.
    pub max_open_incidents: usize,
    /// Raw samples kept per incident (distinct object and command).
    pub max_samples: usize,
    /// Held-back entries collected before a `suppressed` alert is sent early.
    pub max_held_listed: usize,
    /// Host name for alerts whose event names none.
    pub host: String,
    /// severity.db.
    pub severity_db: Arc<SeverityDb>,
    /// Noise rules.
    pub noise: Arc<NoiseRules>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // Five minutes: at most one update per incident per five minutes is what a person can
            // follow, and a shorter quiet period closes and re-opens incidents that recur every
            // few minutes (measured on loadgen's 1M-record log: 60 s gives 99k alerts for 200k
            // events, 300 s 72k, 3600 s 31k).
            window_ms: 300_000,
            max_alerts_per_minute: 120,
            max_open_incidents: 10_000,
            max_samples: 3,
            max_held_listed: 10_000,
            host: String::new(),
            severity_db: Arc::new(SeverityDb::bundled()),
            noise: Arc::new(NoiseRules::bundled().unwrap_or_default()),
        }
    }
}

/// The `[correlate]` table of the configuration file. Unknown keys are rejected; [`Settings::validate`]
/// names the key that is out of range.
///
/// ```toml
/// [correlate]
/// window_secs = 300
/// max_alerts_per_minute = 120
/// max_open_incidents = 10000
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// At most one `incident.update` per window; `incident.closed` after a quiet window.
    pub window_secs: u64,
    /// Flood cap on incident alerts per minute; 0 = no cap.
    pub max_alerts_per_minute: u32,
    /// Cap on open incidents (memory bound); the least recently seen is evicted.
    pub max_open_incidents: usize,
    /// Raw samples kept per incident.
    pub max_samples: usize,
    /// Closed-while-held incidents collected before a `suppressed` alert is sent early.
    pub max_held_listed: usize,
}

impl Default for Settings {
    fn default() -> Self {
        let c = Config::default();
        Settings {
            window_secs: c.window_ms / 1000,
            max_alerts_per_minute: c.max_alerts_per_minute,
            max_open_incidents: c.max_open_incidents,
            max_samples: c.max_samples,
            max_held_listed: c.max_held_listed,
        }
    }
}

/// A [`Settings`] value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingsError {
    /// The key below `[correlate]`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Settings {
    /// Check ranges.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let err = |key, message: &str| {
            Err(SettingsError {
                key,
                message: message.to_owned(),
            })
        };
        if !(1..=86_400).contains(&self.window_secs) {
            return err("window_secs", "must be between 1 and 86400");
        }
        if self.max_open_incidents == 0 {
            return err("max_open_incidents", "must be at least 1");
        }
        if self.max_held_listed == 0 {
            return err("max_held_listed", "must be at least 1");
        }
        if self.max_samples > 100 {
            return err("max_samples", "must be at most 100");
        }
        Ok(())
    }

    /// The correlator configuration, with the host name, severity.db and noise rules the
    /// caller loaded.
    pub fn into_config(
        self,
        host: String,
        severity_db: Arc<SeverityDb>,
        noise: Arc<NoiseRules>,
    ) -> Config {
        Config {
            window_ms: self.window_secs.saturating_mul(1000),
            max_alerts_per_minute: self.max_alerts_per_minute,
            max_open_incidents: self.max_open_incidents,
            max_samples: self.max_samples,
            max_held_listed: self.max_held_listed,
            host,
            severity_db,
            noise,
        }
    }
}

/// Running counts, for metrics and `replay`'s summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Events pushed (status events included).
    pub events: u64,
    /// Incidents opened.
    pub incidents_opened: u64,
    /// Incidents closed (quiet, evicted or end of input).
    pub incidents_closed: u64,
    /// Of those, evicted by the open-incident cap.
    pub incidents_evicted: u64,
    /// Alerts produced, all types.
    pub alerts: u64,
    /// Incident alerts held back by flood control (each later listed in a `suppressed` alert).
    pub alerts_held: u64,
    /// `suppressed` alerts produced.
    pub suppressed_alerts: u64,
    /// `status` alerts produced.
    pub status_alerts: u64,
    /// `loss` alerts produced.
    pub loss_alerts: u64,
    /// Events matched per noise rule.
    pub noise: BTreeMap<String, u64>,
}

/// A snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Written by an incompatible version.
    #[error("correlator snapshot version {found} is not supported (expected {SNAPSHOT_VERSION})")]
    Version {
        /// The version in the snapshot.
        found: u32,
    },
}

/// The persistent state: open incidents with their counts, and what flood control holds.
///
/// Serialize it (JSON) into the state directory on shutdown or periodically, and give it back
/// to [`Correlator::restore`] at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SNAPSHOT_VERSION`].
    pub version: u32,
    /// The latest `now` the correlator had seen.
    pub taken_at_ms: u64,
    /// Serial for the next incident id.
    pub next_serial: u64,
    /// Start of the current flood-control minute.
    pub bucket_start_ms: u64,
    /// Incident alerts sent in it.
    pub bucket_count: u32,
    /// Closed incidents held back by flood control, not yet listed in a `suppressed` alert.
    pub ledger: Vec<HeldBack>,
    /// Highest severity among the ledger's incidents.
    #[serde(default)]
    pub ledger_severity: u8,
    /// Open incidents, least recently seen first.
    pub incidents: Vec<IncidentSnapshot>,
    /// Incident alerts made after the save a restart restored, not yet passed (see
    /// [`sent`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent: Vec<sent::SentSeq>,
}

/// One open incident in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentSnapshot {
    /// Incident id.
    pub id: String,
    /// Host of its events (None: the local host).
    pub host: Option<String>,
    /// Key.
    pub key: IncidentKey,
    /// Alerts sent so far.
    pub seq: u64,
    /// Events not yet counted in any alert.
    pub pending: u64,
    /// All events.
    pub total: u64,
    /// `now` of the first event.
    pub opened_ms: u64,
    /// `now` of the latest event.
    pub last_seen_ms: u64,
    /// `now` of the latest alert (or suppressed entry).
    pub last_alert_ms: u64,
    /// Time of the first event (its audit time, else `now` when it came), ms since the epoch.
    pub first_seen_ms: u64,
    /// Time of the latest event, the same way.
    pub last_seen_event_ms: u64,
    /// Severity.
    pub severity: u8,
    /// Noise rule.
    pub noise: Option<String>,
    /// `incident.opened` (or a later alert) was sent.
    pub announced: bool,
    /// An alert is being held back by flood control.
    pub held: bool,
    /// Samples.
    pub samples: Vec<Sample>,
    /// Raw lines of the latest event; parsed again on restore.
    pub last_event_raw: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InternalKey {
    host: Option<String>,
    key: IncidentKey,
}

#[derive(Debug)]
struct Incident {
    id: String,
    seq: u64,
    pending: u64,
    total: u64,
    opened_ms: u64,
    last_seen_ms: u64,
    last_alert_ms: u64,
    /// Event time (audit stamp, else `now`) of the first and latest events; formatted only when
    /// an alert is made.
    first_seen_ms: u64,
    last_seen_event_ms: u64,
    severity: u8,
    noise: Option<String>,
    announced: bool,
    held: bool,
    samples: Vec<Sample>,
    event: Arc<Event>,
}

/// Flood control: incident alerts per minute.
#[derive(Debug)]
struct FloodGate {
    cap: u32,
    bucket_start_ms: u64,
    bucket_count: u32,
}

impl FloodGate {
    fn take(&mut self) -> bool {
        if self.cap == 0 || self.bucket_count < self.cap {
            self.bucket_count += 1;
            true
        } else {
            false
        }
    }
}

/// The correlator. See the module documentation.
#[derive(Debug)]
pub struct Correlator {
    config: Config,
    norm: Normaliser,
    incidents: LruCache<InternalKey, Incident, foldhash::fast::RandomState>,
    ledger: Vec<HeldBack>,
    ledger_severity: u8,
    gate: FloodGate,
    next_serial: u64,
    last_now: u64,
    stats: Stats,
    sent: sent::Sent,
}

/// The event's own time in milliseconds since the epoch (for `replay`, which runs on log time).
pub fn event_time_ms(event: &Event) -> Option<u64> {
    let a = event.audit.as_ref()?;
    // A hostile or corrupt stamp (`audit(18446744073709551615.000:1)`) has no time rather
    // than a wrapped one.
    a.epoch
        .checked_mul(1000)?
        .checked_add(u64::from(a.millis.min(999)))
        .filter(|_| a.epoch != 0)
}

/// How far past the wall clock a log time may be and still be believed (the clocks of the
/// machines that wrote a log drift; a day covers time zones mistaken for UTC as well).
const FUTURE_TOLERANCE_MS: u64 = 24 * 3600 * 1000;

/// Log time for `replay` and `correlate`: the events' own times, never going backwards. A stamp
/// more than [`FUTURE_TOLERANCE_MS`] past the wall clock is not believed (a corrupt or forged
/// record: every later window would wait for that date) unless the record before it was as far
/// ahead as well (within the tolerance): a log whose writer's clock ran ahead, or a wall clock
/// here that is behind, is believed from its second record on. A record not believed counts at
/// the time reached so far. A wall clock before 2020 (a machine without a real-time clock) is no
/// reference and checks nothing. Before any time is reached (the first records of a fresh
/// replay), a record not believed has no time yet: [`LogTimeline`] holds it for the next time
/// reached.
#[derive(Debug, Clone, Copy, Default)]
struct LogClock {
    latest: u64,
    /// The stamp of the record before, when it was not believed.
    suspect: Option<u64>,
}

impl LogClock {
    /// A clock that carries on from `latest` (a restored state's time).
    fn starting_at(latest: u64) -> LogClock {
        LogClock {
            latest,
            suspect: None,
        }
    }

    /// The time reached so far.
    fn latest(&self) -> u64 {
        self.latest
    }

    /// The time `event` counts at, given the wall clock `wall_ms`; `None` when it is not
    /// believed and no time has been reached yet.
    fn advance(&mut self, event: &Event, wall_ms: u64) -> Option<u64> {
        const Y2020_MS: u64 = 1_577_836_800_000;
        if let Some(t) = event_time_ms(event) {
            let plausible = wall_ms < Y2020_MS || t <= wall_ms.saturating_add(FUTURE_TOLERANCE_MS);
            let confirmed = self
                .suspect
                .is_some_and(|s| s.abs_diff(t) <= FUTURE_TOLERANCE_MS);
            self.suspect = (!plausible).then_some(t);
            if plausible || confirmed {
                self.latest = self.latest.max(t);
            } else if self.latest == 0 {
                return None;
            }
        }
        Some(self.latest)
    }
}

/// Records a [`LogTimeline`] holds at most until a time is reached; past that, they count at 0.
const MAX_UNTIMED: usize = 1024;

/// A [`LogClock`] with the records it holds until a time is reached: what `replay` and
/// `correlate` push their events to the correlator through.
#[derive(Debug, Default)]
pub struct LogTimeline {
    clock: LogClock,
    untimed: Vec<Arc<Event>>,
}

impl LogTimeline {
    /// A timeline that carries on from `latest` (a restored state's time).
    pub fn starting_at(latest: u64) -> LogTimeline {
        LogTimeline {
            clock: LogClock::starting_at(latest),
            untimed: Vec::new(),
        }
    }

    /// The time reached so far.
    pub fn latest(&self) -> u64 {
        self.clock.latest()
    }

    /// Push `event` to `c` at its log time (wall clock `wall_ms`), after the events held for
    /// that time; or hold it while no time is reached.
    pub fn push(
        &mut self,
        c: &mut Correlator,
        event: impl Into<Arc<Event>>,
        wall_ms: u64,
        out: &mut Vec<Alert>,
    ) {
        let event = event.into();
        match self.clock.advance(&event, wall_ms) {
            Some(at) => {
                for held in self.untimed.drain(..) {
                    c.push(held, at, out);
                }
                c.push(event, at, out);
            }
            None if self.untimed.len() < MAX_UNTIMED => self.untimed.push(event),
            None => c.push(event, 0, out),
        }
    }

    /// Events are held until a time is reached.
    pub fn holds_any(&self) -> bool {
        !self.untimed.is_empty()
    }

    /// The end of input (or a save: held events are not in a snapshot): push the events still
    /// held, at the time reached.
    pub fn push_held(&mut self, c: &mut Correlator, out: &mut Vec<Alert>) {
        let at = self.latest();
        for held in self.untimed.drain(..) {
            c.push(held, at, out);
        }
    }
}

/// Map a parser loss report to the details of a `loss` alert.
pub fn loss_info(loss: &crate::parse::Loss) -> LossInfo {
    use crate::parse::line::LossReport;
    let origin = match &loss.source {
        Source::Kmsg { .. } => "kmsg",
        Source::Netlink => "netlink",
        Source::Journald { .. } => "journald",
        _ => "kernel",
    };
    let (what, count) = match loss.report {
        LossReport::PrintkSuppressed(n) => (
            "kernel printk rate limit suppressed audit records (kauditd_printk_skb)".to_owned(),
            Some(n),
        ),
        LossReport::AuditLost(n) => (
            "kernel audit records lost (audit_lost counter)".to_owned(),
            Some(n),
        ),
        LossReport::BacklogExceeded => ("kernel audit backlog limit exceeded".to_owned(), None),
    };
    LossInfo {
        origin: origin.to_owned(),
        what,
        count,
    }
}

fn fmt_ms(ms: u64) -> String {
    format_rfc3339_millis(ms / 1000, (ms % 1000) as u32)
}

impl Correlator {
    /// A correlator with no open incidents.
    pub fn new(config: Config) -> Correlator {
        Correlator {
            gate: FloodGate {
                cap: config.max_alerts_per_minute,
                bucket_start_ms: 0,
                bucket_count: 0,
            },
            config,
            norm: Normaliser::new(),
            incidents: LruCache::unbounded_with_hasher(foldhash::fast::RandomState::default()),
            ledger: Vec::new(),
            ledger_severity: 0,
            next_serial: 0,
            last_now: 0,
            stats: Stats::default(),
            sent: sent::Sent::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Running counts.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Number of open incidents.
    pub fn open_incidents(&self) -> usize {
        self.incidents.len()
    }

    /// Feed one event. Alerts are appended to `out` in order.
    pub fn push(&mut self, event: impl Into<Arc<Event>>, now_ms: u64, out: &mut Vec<Alert>) {
        let event: Arc<Event> = event.into();
        let now = self.advance(now_ms, out);
        self.stats.events += 1;
        let class = event.class().unwrap_or("").to_owned();
        let key = key::incident_key(&self.norm, &event, &class);
        let noise = self
            .config
            .noise
            .find(&key, &event)
            .map(|r| (r.name.clone(), r.max_severity));
        if let Some((name, _)) = &noise {
            *self.stats.noise.entry(name.clone()).or_default() += 1;
        }
        if event.kind == Kind::Status {
            self.status_alert(event, key, &class, noise, now, out);
            return;
        }
        let time = event_time_ms(&event).unwrap_or(now);
        // The host the alert names: a record's own (syslog forms, `node=`) or this machine's,
        // so a copy naming this host and one naming none are one incident.
        let host = event.host.clone().filter(|h| *h != self.config.host);
        let ikey = InternalKey { host, key };
        let max_samples = self.config.max_samples;
        let window = self.config.window_ms;
        if let Some(inc) = self.incidents.get_mut(&ikey) {
            inc.pending += 1;
            inc.total += 1;
            inc.last_seen_ms = now;
            // Records of several files can come out of order (`correlate audit.log*` lists
            // the newest first): the span covers them all.
            inc.last_seen_event_ms = inc.last_seen_event_ms.max(time);
            inc.first_seen_ms = inc.first_seen_ms.min(time);
            add_sample(&mut inc.samples, max_samples, &event, &class);
            // A noise rule can look past the key (the raw operation, record fields): an event no
            // rule matches makes its incident no longer noise, at least as severe as it is.
            if inc.noise.is_some() && noise.is_none() {
                inc.noise = None;
                let severity = severity::event_severity(&self.config.severity_db, &event, &class);
                inc.severity = inc.severity.max(severity);
            }
            inc.event = event;
            let due = if !inc.announced {
                // Its opening was listed in a `suppressed` alert; announce it properly now.
                (!inc.held).then_some(AlertType::IncidentOpened)
            } else {
                (!inc.held && now.saturating_sub(inc.last_alert_ms) >= window)
                    .then_some(AlertType::IncidentUpdate)
            };
            if let Some(t) = due {
                if self.gate.take() {
                    out.push(make_alert(
                        &ikey,
                        inc,
                        t,
                        None,
                        &self.config.host,
                        now,
                        &mut self.sent,
                    ));
                    self.stats.alerts += 1;
                } else {
                    inc.held = true;
                    self.stats.alerts_held += 1;
                }
            }
            return;
        }
        self.evict_to(self.config.max_open_incidents.max(1) - 1, now, out);
        let severity = severity::event_severity(&self.config.severity_db, &event, &class);
        let severity = match noise {
            Some((_, Some(max))) => severity.min(max),
            _ => severity,
        };
        let mut samples = Vec::with_capacity(1);
        add_sample(&mut samples, max_samples, &event, &class);
        // The id names the record that opened the incident (its audit time and serial), so that
        // the same records handed over again after a crash (from the last checkpoint, with the
        // incidents saved for it) open the incident under the same id: a re-sent alert keeps its
        // idempotency key. Records without a stamp are named by where they were read
        // (`record_identity`).
        let (opened_at, serial) = self.record_identity(&event, now);
        let mut inc = Incident {
            id: format!(
                "{:016x}-{:x}-{:x}",
                key::key_hash(ikey.host.as_deref(), &ikey.key),
                opened_at,
                serial
            ),
            seq: 0,
            pending: 1,
            total: 1,
            opened_ms: now,
            last_seen_ms: now,
            last_alert_ms: now,
            first_seen_ms: time,
            last_seen_event_ms: time,
            severity,
            noise: noise.map(|(n, _)| n),
            announced: false,
            held: false,
            samples,
            event,
        };
        self.stats.incidents_opened += 1;
        if self.gate.take() {
            out.push(make_alert(
                &ikey,
                &mut inc,
                AlertType::IncidentOpened,
                None,
                &self.config.host,
                now,
                &mut self.sent,
            ));
            self.stats.alerts += 1;
        } else {
            inc.held = true;
            self.stats.alerts_held += 1;
        }
        self.incidents.put(ikey, inc);
    }

    /// The latest `now` handed in (or restored from a snapshot).
    pub fn latest_time_ms(&self) -> u64 {
        self.last_now
    }

    /// Report lost records (from a source or the parser) as a `loss` alert.
    pub fn push_loss(&mut self, info: LossInfo, now_ms: u64, out: &mut Vec<Alert>) {
        let now = self.advance(now_ms, out);
        let id = self.alert_id("loss", now);
        let count = info.count.unwrap_or(0);
        // Before the first event of a replay there is no time yet.
        let time = (now > 0).then(|| fmt_ms(now));
        out.push(Alert {
            schema: ALERT_SCHEMA,
            alert_type: AlertType::Loss,
            id,
            seq: 1,
            key: None,
            severity: LOSS_SEVERITY,
            count,
            total: count,
            first_seen: time.clone(),
            last_seen: time,
            host: self.config.host.clone(),
            event: None,
            samples: Vec::new(),
            incidents: Vec::new(),
            loss: Some(info),
            noise: None,
            reason: None,
            profile: None,
            explanation: None,
        });
        self.stats.alerts += 1;
        self.stats.loss_alerts += 1;
    }

    /// Let time pass: ends the flood-control minute (sending `suppressed`) and closes quiet
    /// incidents. Call it about once a second; `push` does the same work on its own.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Alert>) {
        let now = self.advance(now_ms, out);
        // A state restored under a lowered `max_open_incidents` holds more than the cap.
        self.evict_to(self.config.max_open_incidents.max(1), now, out);
    }

    /// Close the least recently seen incidents (`evicted`) until at most `keep` are open.
    fn evict_to(&mut self, keep: usize, now: u64, out: &mut Vec<Alert>) {
        while self.incidents.len() > keep {
            let Some((k, inc)) = self.incidents.pop_lru() else {
                break;
            };
            self.stats.incidents_evicted += 1;
            self.close(k, inc, "evicted", now, false, out);
        }
    }

    /// End of input: list what flood control holds and close every open incident
    /// (`incident.closed`, reason `end_of_input`), regardless of the flood cap.
    pub fn flush_all(&mut self, now_ms: u64, out: &mut Vec<Alert>) {
        let now = self.clamp(now_ms);
        // Held incidents are listed (with their counts) before they close: an incident whose
        // opening was held would otherwise get an `incident.closed` and nothing before it.
        self.emit_suppressed(now, true, out);
        while let Some((k, inc)) = self.incidents.pop_lru() {
            self.close(k, inc, "end_of_input", now, true, out);
        }
    }

    /// The state to persist.
    pub fn snapshot(&self) -> Snapshot {
        let incidents = self
            .incidents
            .iter()
            .rev()
            .map(|(k, inc)| IncidentSnapshot {
                id: inc.id.clone(),
                host: k.host.clone(),
                key: k.key.clone(),
                seq: inc.seq,
                pending: inc.pending,
                total: inc.total,
                opened_ms: inc.opened_ms,
                last_seen_ms: inc.last_seen_ms,
                last_alert_ms: inc.last_alert_ms,
                first_seen_ms: inc.first_seen_ms,
                last_seen_event_ms: inc.last_seen_event_ms,
                severity: inc.severity,
                noise: inc.noise.clone(),
                announced: inc.announced,
                held: inc.held,
                samples: inc.samples.clone(),
                last_event_raw: inc.event.raw.clone(),
            })
            .collect();
        Snapshot {
            version: SNAPSHOT_VERSION,
            taken_at_ms: self.last_now,
            next_serial: self.next_serial,
            bucket_start_ms: self.gate.bucket_start_ms,
            bucket_count: self.gate.bucket_count,
            ledger: self.ledger.clone(),
            ledger_severity: self.ledger_severity,
            incidents,
            sent: self.sent.entries(),
        }
    }

    /// A correlator that continues from a snapshot: its incidents stay open (no new
    /// `incident.opened`), their counts continue.
    pub fn restore(snapshot: Snapshot, config: Config) -> Result<Correlator, SnapshotError> {
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version {
                found: snapshot.version,
            });
        }
        let mut c = Correlator::new(config);
        c.last_now = snapshot.taken_at_ms;
        c.next_serial = snapshot.next_serial;
        c.gate.bucket_start_ms = snapshot.bucket_start_ms;
        c.gate.bucket_count = snapshot.bucket_count;
        c.ledger = snapshot.ledger;
        c.ledger_severity = snapshot.ledger_severity.min(10);
        let sent = snapshot.sent;
        // A save under another host name (the machine renamed) can hold this host's incident
        // twice with one key: of records naming the new name, and of records naming none. The
        // first keeps its name, so that neither replaces the other (and its counts).
        let local: std::collections::HashSet<IncidentKey> = snapshot
            .incidents
            .iter()
            .filter(|s| s.host.is_none())
            .map(|s| s.key.clone())
            .collect();
        for s in snapshot.incidents {
            let event = reparse(&s.last_event_raw, &s.key, s.host.clone());
            let ikey = InternalKey {
                host: s
                    .host
                    .filter(|h| *h != c.config.host || local.contains(&s.key)),
                key: s.key,
            };
            c.incidents.put(
                ikey,
                Incident {
                    id: s.id,
                    seq: s.seq,
                    pending: s.pending,
                    total: s.total,
                    opened_ms: s.opened_ms,
                    last_seen_ms: s.last_seen_ms,
                    last_alert_ms: s.last_alert_ms,
                    first_seen_ms: s.first_seen_ms,
                    last_seen_event_ms: s.last_seen_event_ms,
                    severity: s.severity.min(10),
                    noise: s.noise,
                    announced: s.announced,
                    held: s.held,
                    samples: s.samples,
                    event: event.into(),
                },
            );
        }
        c.sent_after_save(sent);
        Ok(c)
    }

    /// Incident alerts made after the save this correlator was restored from (by a process
    /// that died before the next one): an incident that makes an alert again under one of their
    /// `seq`s keeps it only when the alert says the same (see [`sent`]).
    pub fn sent_after_save(&mut self, entries: impl IntoIterator<Item = sent::SentSeq>) {
        let mut open: Option<HashMap<&str, u64>> = None;
        for entry in entries {
            let open = open.get_or_insert_with(|| {
                self.incidents
                    .iter()
                    .map(|(_, inc)| (inc.id.as_str(), inc.seq))
                    .collect()
            });
            let passed = open.get(entry.id.as_str()).copied();
            self.sent.add(entry, passed);
        }
    }

    fn clamp(&mut self, now_ms: u64) -> u64 {
        self.last_now = self.last_now.max(now_ms);
        self.last_now
    }

    /// Clamp time, end the flood minute if it is over, close quiet incidents.
    fn advance(&mut self, now_ms: u64, out: &mut Vec<Alert>) -> u64 {
        let now = self.clamp(now_ms);
        if now >= self.gate.bucket_start_ms.saturating_add(FLOOD_PERIOD_MS) {
            self.emit_suppressed(now, true, out);
            self.gate.bucket_start_ms = now;
            self.gate.bucket_count = 0;
        }
        let window = self.config.window_ms;
        while let Some((_, inc)) = self.incidents.peek_lru() {
            if now.saturating_sub(inc.last_seen_ms) < window {
                break;
            }
            if let Some((k, inc)) = self.incidents.pop_lru() {
                self.close(k, inc, "quiet", now, false, out);
            }
        }
        now
    }

    /// Close an incident: `incident.closed`, or (flood cap reached, unless `force`) a closed
    /// entry for the next `suppressed` alert.
    fn close(
        &mut self,
        k: InternalKey,
        mut inc: Incident,
        reason: &str,
        now: u64,
        force: bool,
        out: &mut Vec<Alert>,
    ) {
        self.stats.incidents_closed += 1;
        if force || self.gate.take() {
            out.push(make_alert(
                &k,
                &mut inc,
                AlertType::IncidentClosed,
                Some(reason),
                &self.config.host,
                now,
                &mut self.sent,
            ));
            self.sent.forget(&inc.id);
            self.stats.alerts += 1;
            return;
        }
        self.sent.forget(&inc.id);
        self.stats.alerts_held += 1;
        self.ledger_severity = self.ledger_severity.max(inc.severity);
        self.ledger.push(HeldBack {
            id: inc.id,
            key: Some(k.key),
            count: inc.pending,
            total: inc.total,
            closed: true,
        });
        if self.ledger.len() >= self.config.max_held_listed.max(1) {
            // Only the ledger: held open incidents are still in memory and are listed when the
            // minute ends.
            self.emit_suppressed(now, false, out);
        }
    }

    /// Send a `suppressed` alert for the ledger and (when `include_open`) the open incidents
    /// whose alert is held back; their counts restart.
    fn emit_suppressed(&mut self, now: u64, include_open: bool, out: &mut Vec<Alert>) {
        let mut entries = std::mem::take(&mut self.ledger);
        let mut severity = std::mem::take(&mut self.ledger_severity);
        if include_open {
            for (k, inc) in self.incidents.iter_mut() {
                if !inc.held {
                    continue;
                }
                entries.push(HeldBack {
                    id: inc.id.clone(),
                    key: Some(k.key.clone()),
                    count: inc.pending,
                    total: inc.total,
                    closed: false,
                });
                severity = severity.max(inc.severity);
                inc.pending = 0;
                inc.held = false;
                inc.last_alert_ms = now;
            }
        }
        if entries.is_empty() {
            return;
        }
        let id = self.alert_id("suppressed", now);
        let time = fmt_ms(now);
        out.push(Alert {
            schema: ALERT_SCHEMA,
            alert_type: AlertType::Suppressed,
            id,
            seq: 1,
            key: None,
            severity,
            count: entries.iter().map(|e| e.count).sum(),
            total: entries.iter().map(|e| e.total).sum(),
            first_seen: Some(time.clone()),
            last_seen: Some(time),
            host: self.config.host.clone(),
            event: None,
            samples: Vec::new(),
            incidents: entries,
            loss: None,
            noise: None,
            reason: None,
            profile: None,
            explanation: None,
        });
        self.stats.alerts += 1;
        self.stats.suppressed_alerts += 1;
    }

    fn status_alert(
        &mut self,
        event: Arc<Event>,
        key: IncidentKey,
        class: &str,
        noise: Option<(String, Option<u8>)>,
        now: u64,
        out: &mut Vec<Alert>,
    ) {
        let severity = severity::event_severity(&self.config.severity_db, &event, class);
        let severity = match &noise {
            Some((_, Some(max))) => severity.min(*max),
            _ => severity,
        };
        let (at, serial) = self.record_identity(&event, now);
        let id = format!("status-{at:x}-{serial:x}");
        let time = event.time().unwrap_or_else(|| fmt_ms(now));
        let mut samples = Vec::new();
        add_sample(&mut samples, 1, &event, class);
        out.push(Alert {
            schema: ALERT_SCHEMA,
            alert_type: AlertType::Status,
            id,
            seq: 1,
            key: Some(key),
            severity,
            count: 1,
            total: 1,
            first_seen: Some(time.clone()),
            last_seen: Some(time),
            host: event
                .host
                .clone()
                .unwrap_or_else(|| self.config.host.clone()),
            event: Some(event),
            samples,
            incidents: Vec::new(),
            loss: None,
            noise: noise.map(|(n, _)| n),
            reason: None,
            profile: None,
            explanation: None,
        });
        self.stats.alerts += 1;
        self.stats.status_alerts += 1;
    }

    /// What names the record in ids: (audit time in ms, audit serial) of a stamped record. A
    /// record without a stamp read from a place it will be read from again after a crash (a
    /// file line, a journal entry, a kmsg record) is named by that place: (0, a hash of it and
    /// the record's text). Anything else (stdin, netlink, text): (`now`, the next counter).
    fn record_identity(&mut self, event: &Event, now: u64) -> (u64, u64) {
        if let (Some(stamp), Some(ms)) = (&event.audit, event_time_ms(event)) {
            return (ms, stamp.serial);
        }
        let raw = event.raw.first().map_or("", String::as_str);
        let place = match &event.source {
            Source::File { path, line } => {
                Some(key::stable_hash(&["file", path, &line.to_string(), raw]))
            }
            Source::Journald { cursor, .. } => Some(key::stable_hash(&["journald", cursor, raw])),
            Source::Kmsg { seq } => Some(key::stable_hash(&["kmsg", &seq.to_string(), raw])),
            Source::Stdin { .. } | Source::Text | Source::Netlink => None,
        };
        if let Some(h) = place {
            return (0, h);
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        (now, serial)
    }

    fn alert_id(&mut self, prefix: &str, now: u64) -> String {
        let serial = self.next_serial;
        self.next_serial += 1;
        format!("{prefix}-{now:x}-{serial:x}")
    }
}

/// Build an incident alert and restart the incident's count.
fn make_alert(
    k: &InternalKey,
    inc: &mut Incident,
    alert_type: AlertType,
    reason: Option<&str>,
    default_host: &str,
    now: u64,
    sent: &mut sent::Sent,
) -> Alert {
    inc.seq += 1;
    let count = std::mem::take(&mut inc.pending);
    inc.last_alert_ms = now;
    inc.announced = true;
    inc.held = false;
    let mut alert = Alert {
        schema: ALERT_SCHEMA,
        alert_type,
        id: inc.id.clone(),
        seq: inc.seq,
        key: Some(k.key.clone()),
        severity: inc.severity,
        count,
        total: inc.total,
        first_seen: Some(fmt_ms(inc.first_seen_ms)),
        last_seen: Some(fmt_ms(inc.last_seen_event_ms)),
        host: k.host.clone().unwrap_or_else(|| default_host.to_owned()),
        event: Some(inc.event.clone()),
        samples: inc.samples.clone(),
        incidents: Vec::new(),
        loss: None,
        noise: inc.noise.clone(),
        reason: reason.map(str::to_owned),
        profile: None,
        explanation: None,
    };
    if !sent.is_empty() {
        inc.seq = sent.settle(&mut alert);
    }
    alert
}

/// Keep a sample when there is room and its object or command is new to the incident.
fn add_sample(samples: &mut Vec<Sample>, max: usize, event: &Event, class: &str) {
    if samples.len() >= max {
        return;
    }
    let object = key::raw_object(event, class);
    let comm = event.comm();
    if samples
        .iter()
        .any(|s| s.object.as_deref() == Some(object.as_str()) && s.comm.as_deref() == comm)
    {
        return;
    }
    samples.push(Sample {
        time: event.time(),
        object: Some(object),
        pid: event.pid(),
        comm: comm.map(str::to_owned),
        raw: event.raw.first().cloned().unwrap_or_default(),
    });
}

/// Rebuild the latest event of a restored incident from its raw lines (the parser is pure).
fn reparse(raw: &[String], key: &IncidentKey, host: Option<String>) -> Box<Event> {
    let text = raw.join("\n");
    let mut outputs = crate::parse::parse_text(&text, &Source::Text);
    while let Some(out) = outputs.pop() {
        if let crate::parse::Output::Event(e) = out {
            return e;
        }
    }
    Box::new(Event {
        kind: Kind::from_apparmor_value(&key.kind).unwrap_or(Kind::Denied),
        audit: None,
        fields: crate::event::Fields::default(),
        outer: None,
        interpreted: None,
        process: None,
        host,
        source: Source::Text,
        raw: raw.to_vec(),
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn settings_defaults_match_config_and_keys_are_checked() {
        let s: Settings = toml::from_str("").unwrap();
        assert_eq!(s, Settings::default());
        let c = s.clone().into_config(
            "h".into(),
            Arc::new(SeverityDb::bundled()),
            Arc::new(NoiseRules::none()),
        );
        assert_eq!(c.window_ms, Config::default().window_ms);
        let e = toml::from_str::<Settings>("window_sec = 3").unwrap_err();
        assert!(e.to_string().contains("window_sec"), "{e}");
        let s: Settings = toml::from_str("window_secs = 0").unwrap();
        assert_eq!(s.validate().unwrap_err().key, "window_secs");
        let s: Settings = toml::from_str("max_open_incidents = 0").unwrap();
        assert_eq!(s.validate().unwrap_err().key, "max_open_incidents");
        assert!(Settings::default().validate().is_ok());
    }
}

//! Sinks: where alerts (and, for `content = "events"`, events) go — JSON-lines files, stdout,
//! Slack, webhooks, Discord, Teams, ntfy, email and Alertmanager.
//!
//! [`SinkSpec`]s come from `[sinks.NAME]` tables ([`SinkSpec::from_table`]). A [`SinkSet`] runs
//! them: every sink has its own worker and bounded queue, so a dead or slow receiver never stalls
//! the others. Local sinks (file, stdout) each own an OS thread. Remote sinks spool every alert to
//! their outbox in the state directory *before* anything is sent ([`SinkSet::deliver_alert`]
//! returns once it is durable), and a task per sink delivers from there with retries, keeping the
//! order per incident; undelivered alerts survive restarts and expire after `max_age_secs` with a
//! `loss` alert to the other sinks. Delivery is at-least-once: each request carries the alert's
//! idempotency key (`id:seq`) so receivers can drop duplicates.

pub mod alertmanager;
pub mod config;
pub mod discord;
pub mod email;
pub mod escape;
pub mod file;
pub mod http;
pub mod ntfy;
pub mod outbox;
pub mod policy;
mod remote;
pub mod sample;
pub mod slack;
pub mod stdout;
pub mod teams;
pub mod view;
pub mod webhook;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::alert::{ALERT_SCHEMA, Alert, AlertType, LossInfo};
use crate::event::Event;

pub use config::{
    Content, DeliverySettings, SecretContext, SinkConfigError, SinkKind, SinkSpec, parse_sinks,
};
pub use http::SendError;
pub use outbox::OutboxError;
pub use policy::{Mode, SinkPolicy};
use view::AlertView;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 UTC (`2026-11-25T17:24:29.123Z`) of a Unix time in milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Start-up failures of a [`SinkSet`].
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A sink could not be set up (file not writable, TLS settings, …).
    #[error("`{key}`: {message}")]
    Setup {
        /// The configuration key it is about (`sinks.NAME.path`, `sinks.NAME`).
        key: String,
        /// Why.
        message: String,
    },
    /// A file sink's file could not be opened.
    #[error("`{key}`: {}: {source}", path.display())]
    File {
        /// `sinks.NAME.path`.
        key: String,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The outbox could not be opened.
    #[error("sink {name}: {source}")]
    Outbox {
        /// The sink.
        name: String,
        /// Why.
        source: OutboxError,
    },
}

/// Counts and the last error of one sink.
#[derive(Debug, Default)]
pub struct Counters {
    /// Alerts (or events) accepted by the receiver / written.
    pub delivered: AtomicU64,
    /// Failed delivery attempts.
    pub failed_attempts: AtomicU64,
    /// Alerts that expired in the outbox.
    pub expired: AtomicU64,
    /// Alerts or events dropped (queue full, outbox full, write error, refused for good by the
    /// receiver).
    pub dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn set_error(&self, e: String) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e);
        }
    }
}

/// A snapshot of one sink's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkStats {
    /// Sink name.
    pub name: String,
    /// Sink type.
    pub sink_type: &'static str,
    /// Delivered or written.
    pub delivered: u64,
    /// Failed attempts.
    pub failed_attempts: u64,
    /// Expired in the outbox.
    pub expired: u64,
    /// Dropped.
    pub dropped: u64,
    /// Waiting in the outbox (remote sinks).
    pub pending: usize,
    /// The last error.
    pub last_error: Option<String>,
}

/// A loss to announce on the other sinks.
#[derive(Debug, Clone)]
pub(crate) struct LossNotice {
    sink: String,
    count: u64,
    what: String,
}

/// Options of a [`SinkSet`].
#[derive(Debug, Clone)]
pub struct SinkSetOptions {
    /// The state directory; outboxes live in `<state_dir>/outbox/<sink>/`.
    pub state_dir: PathBuf,
    /// This host's name (for `loss` alerts).
    pub host: String,
    /// Capacity of each local sink's queue (default 256: a burst of alerts waits there while the
    /// file is written; more only holds more memory).
    pub queue_capacity: usize,
    /// fsync every spooled alert (default true; false only for benchmarks of the rest).
    pub outbox_fsync: bool,
}

impl SinkSetOptions {
    /// Defaults for `state_dir` and `host`.
    pub fn new(state_dir: impl Into<PathBuf>, host: impl Into<String>) -> SinkSetOptions {
        SinkSetOptions {
            state_dir: state_dir.into(),
            host: host.into(),
            queue_capacity: 256,
            outbox_fsync: true,
        }
    }
}

/// Alerts (JSON text and view) held for a local sink.
type Held = Vec<(Arc<str>, Arc<AlertView>)>;

#[derive(Debug)]
enum LocalMsg {
    Line(Arc<str>),
    Alert(Arc<str>, Arc<AlertView>),
    /// A `loss` alert from the loss router: when it cannot be written, that is counted, not
    /// announced (the announcement would go to the sink whose loss it reports, which may fail
    /// to take it in turn, and so on without end).
    Loss(Arc<str>, Arc<AlertView>),
    /// Alerts the pipeline's output thread held back until the end of its batch; `counted`:
    /// taken from the sink's [`Budget`], to be given back once written.
    Alerts {
        alerts: Held,
        counted: bool,
    },
    Wake,
    Flush(oneshot::Sender<()>),
}

#[derive(Debug)]
enum Worker {
    Local {
        tx: mpsc::Sender<LocalMsg>,
        reopen: Arc<AtomicBool>,
        is_file: bool,
        /// Alerts from [`SinkSet::deliver_alert_wait`] not yet sent: sent as one message at
        /// [`SinkSet::end_batch`] or when [`LOCAL_BATCH`] are held, so the sink thread is woken
        /// once per batch of alerts, not once per alert.
        held: Mutex<Held>,
        /// Bounds the held alerts sent but not yet written (the queue counts messages).
        budget: Arc<Budget>,
    },
    Remote {
        outbox: Arc<Mutex<Outbox>>,
        notify: Arc<Notify>,
    },
}

use outbox::Outbox;

#[derive(Debug)]
struct SinkEntry {
    name: String,
    sink_type: &'static str,
    /// Whether this sink reads the alert's view (policy filters, text rendering, the outbox);
    /// a JSON-lines file with the default policy writes the text as it is.
    reads_view: bool,
    policy: SinkPolicy,
    content: Option<Content>,
    counters: Arc<Counters>,
    worker: Worker,
}

#[derive(Debug)]
struct Inner {
    sinks: Vec<SinkEntry>,
    /// Some sink reads the view: decode it (else a placeholder is passed).
    needs_view: bool,
    host: String,
    loss_tx: mpsc::UnboundedSender<LossNotice>,
}

/// The running sinks.
#[derive(Debug)]
pub struct SinkSet {
    inner: Arc<Inner>,
    stop_remote: watch::Sender<bool>,
    stop_router: watch::Sender<bool>,
    remote_tasks: Vec<(String, JoinHandle<()>)>,
    router: JoinHandle<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What [`SinkSet::shutdown`] left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Alerts still in each remote sink's outbox (delivered after the next start).
    pub pending: BTreeMap<String, usize>,
    /// Sinks whose task had to be stopped at the grace deadline.
    pub aborted: Vec<String>,
}

use crate::lock;

enum LocalOut {
    File(file::FileWriter),
    Stdout(config::LineFormat),
}

fn run_local(
    mut out: LocalOut,
    mut rx: mpsc::Receiver<LocalMsg>,
    reopen: Arc<AtomicBool>,
    counters: Arc<Counters>,
    loss_tx: mpsc::UnboundedSender<LossNotice>,
    name: String,
    budget: Arc<Budget>,
) {
    let stdout = std::io::stdout();
    while let Some(msg) = rx.blocking_recv() {
        if reopen.swap(false, Ordering::AcqRel) {
            if let LocalOut::File(w) = &mut out {
                if let Err(e) = w.reopen() {
                    counters.set_error(format!("reopening {}: {e}", w.path().display()));
                }
            }
        }
        let mut returned = 0;
        let announce = !matches!(msg, LocalMsg::Loss(..));
        let lines: Vec<(Arc<str>, Option<Arc<AlertView>>)> = match msg {
            LocalMsg::Line(l) => vec![(l, None)],
            LocalMsg::Alert(l, v) | LocalMsg::Loss(l, v) => vec![(l, Some(v))],
            LocalMsg::Alerts { alerts, counted } => {
                if counted {
                    returned = alerts.len();
                }
                alerts.into_iter().map(|(l, v)| (l, Some(v))).collect()
            }
            LocalMsg::Wake => continue,
            LocalMsg::Flush(ack) => {
                let _ = ack.send(());
                continue;
            }
        };
        let result = match &mut out {
            // One write for the whole batch of complete lines (a kill inside it can tear the
            // last one; the next open ends it, see `file::end_torn_line`).
            LocalOut::File(w) => w
                .write_lines(lines.iter().map(|(l, _)| &**l))
                .map_err(|(written, e)| (written, format!("writing {}: {e}", w.path().display()))),
            LocalOut::Stdout(format) => {
                let text = stdout_text(*format, &lines);
                let mut lock = stdout.lock();
                lock.write_all(text.as_bytes())
                    .and_then(|_| lock.flush())
                    .map_err(|e| (0, format!("writing to standard output: {e}")))
            }
        };
        budget.give(returned);
        let (written, failure) = match result {
            Ok(()) => (lines.len(), None),
            Err((written, e)) => (written, Some(e)),
        };
        counters
            .delivered
            .fetch_add(written as u64, Ordering::Relaxed);
        if let Some(e) = failure {
            let lost = &lines[written.min(lines.len())..];
            counters
                .dropped
                .fetch_add(lost.len() as u64, Ordering::Relaxed);
            counters.set_error(e.clone());
            let alerts = lost.iter().filter(|(_, v)| v.is_some()).count() as u64;
            if alerts > 0 && !announce {
                crate::log_warn!("LOSS {alerts} loss alerts not written by sink {name}: {e}");
            } else if alerts > 0 {
                let _ = loss_tx.send(LossNotice {
                    sink: name.clone(),
                    count: alerts,
                    what: format!("alerts not written by sink {name}: {e}"),
                });
            }
        }
    }
}

/// What the `stdout` sink writes for a batch: one line per alert or event. JSON lines get
/// the characters a terminal acts on as `\uXXXX` ([`escape::json_for_terminal`]).
fn stdout_text(format: config::LineFormat, lines: &[(Arc<str>, Option<Arc<AlertView>>)]) -> String {
    let mut text = String::new();
    for (line, view) in lines {
        match (format, view) {
            (config::LineFormat::Text, Some(v)) => text.push_str(&stdout::text_line(v)),
            _ => text.push_str(&escape::json_for_terminal(line)),
        }
        text.push('\n');
    }
    text
}

impl Inner {
    fn deliver(&self, json: &Arc<str>, view: &Arc<AlertView>) {
        self.deliver_with(json, view, None, false);
    }

    /// A `loss` alert about sink `except` to the other sinks. A sink that cannot take it (its
    /// outbox or queue full, its disk full) counts it as dropped and keeps the error, but does
    /// not announce it: that announcement would go to `except` among others, whose failure to
    /// take it would be announced to this sink again, without end.
    fn deliver_loss(&self, json: &Arc<str>, view: &Arc<AlertView>, except: &str) {
        self.deliver_with(json, view, Some(except), false);
    }

    /// `wait`: hold the alert for a local sink until [`SinkSet::end_batch`] and block for room
    /// in its full queue instead of dropping the alert. Only for callers outside the async
    /// runtime (the pipeline's output thread). `except`: a `loss` alert about that sink
    /// ([`Inner::deliver_loss`]).
    fn deliver_with(
        &self,
        json: &Arc<str>,
        view: &Arc<AlertView>,
        except: Option<&str>,
        wait: bool,
    ) {
        let loss = except.is_some();
        let now = now_ms();
        for s in &self.sinks {
            let resolves = s.sink_type == "alertmanager";
            if Some(s.name.as_str()) == except || !s.policy.accepts_with(view, resolves) {
                continue;
            }
            match &s.worker {
                Worker::Local {
                    tx, held, budget, ..
                } => {
                    if s.content != Some(Content::Alerts) {
                        continue;
                    }
                    if wait {
                        let full = {
                            let mut held = lock(held);
                            held.push((json.clone(), view.clone()));
                            (held.len() >= LOCAL_BATCH.min(budget.capacity))
                                .then(|| std::mem::take(&mut *held))
                        };
                        if let Some(batch) = full {
                            self.send_held(s, tx, budget, batch);
                        }
                        continue;
                    }
                    let msg = if loss {
                        LocalMsg::Loss(json.clone(), view.clone())
                    } else {
                        LocalMsg::Alert(json.clone(), view.clone())
                    };
                    if tx.try_send(msg).is_err() {
                        if loss {
                            loss_alert_not_taken(s, "its queue is full");
                        } else {
                            self.queue_full(s, 1);
                        }
                    }
                }
                Worker::Remote { outbox, notify } => {
                    let pushed = lock(outbox).push_view(json, view.clone(), now);
                    match pushed {
                        Ok(_) => notify.notify_one(),
                        Err(e) if loss => loss_alert_not_taken(s, &e.to_string()),
                        Err(e) => {
                            s.counters.dropped.fetch_add(1, Ordering::Relaxed);
                            s.counters.set_error(e.to_string());
                            let _ = self.loss_tx.send(LossNotice {
                                sink: s.name.clone(),
                                count: 1,
                                what: format!("alerts not spooled for sink {}: {e}", s.name),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Send held alerts, waiting for room (the output thread only).
    fn send_held(&self, s: &SinkEntry, tx: &mpsc::Sender<LocalMsg>, budget: &Budget, batch: Held) {
        let n = batch.len();
        budget.take(n, || tx.is_closed());
        let msg = LocalMsg::Alerts {
            alerts: batch,
            counted: true,
        };
        if tx.blocking_send(msg).is_err() {
            budget.give(n);
            self.queue_full(s, n as u64);
        }
    }

    /// `count` alerts could not be queued for local sink `s`: counted and announced.
    fn queue_full(&self, s: &SinkEntry, count: u64) {
        s.counters.dropped.fetch_add(count, Ordering::Relaxed);
        let _ = self.loss_tx.send(LossNotice {
            sink: s.name.clone(),
            count,
            what: format!("alerts dropped: the queue of sink {} is full", s.name),
        });
    }

    /// Take every local sink's held alerts.
    fn take_held(&self) -> Vec<HeldFor<'_>> {
        let mut out = Vec::new();
        for s in &self.sinks {
            if let Worker::Local {
                tx, held, budget, ..
            } = &s.worker
            {
                let alerts = std::mem::take(&mut *lock(held));
                if !alerts.is_empty() {
                    out.push(HeldFor {
                        sink: s,
                        tx,
                        budget,
                        alerts,
                    });
                }
            }
        }
        out
    }
}

/// Sink `s` could not take a `loss` alert (about another sink): counted as dropped, kept as its
/// last error and logged, not announced ([`Inner::deliver_loss`]).
fn loss_alert_not_taken(s: &SinkEntry, why: &str) {
    s.counters.dropped.fetch_add(1, Ordering::Relaxed);
    let e = format!("a loss alert not taken by sink {}: {why}", s.name);
    crate::log_warn!("LOSS 1 {e}");
    s.counters.set_error(e);
}

/// A local sink's held alerts, taken to be sent.
struct HeldFor<'a> {
    sink: &'a SinkEntry,
    tx: &'a mpsc::Sender<LocalMsg>,
    budget: &'a Budget,
    alerts: Held,
}

/// Alerts held for a local sink before they are sent as one message.
const LOCAL_BATCH: usize = 64;

/// How many held alerts may be queued for a local sink and not yet written: the sender waits
/// for the sink thread to write some before it queues more (backpressure, bounded memory).
#[derive(Debug)]
struct Budget {
    used: Mutex<usize>,
    freed: std::sync::Condvar,
    capacity: usize,
}

impl Budget {
    fn new(capacity: usize) -> Budget {
        Budget {
            used: Mutex::new(0),
            freed: std::sync::Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Take `n`, waiting while that would pass the capacity (a batch larger than the whole
    /// capacity waits for an empty queue) and the sink thread still runs (`gone` says when it
    /// has stopped: then nothing would ever be given back).
    fn take(&self, n: usize, gone: impl Fn() -> bool) {
        let mut used = lock(&self.used);
        while *used > 0 && *used + n > self.capacity && !gone() {
            used = match self.freed.wait_timeout(used, Duration::from_secs(1)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        *used += n;
    }

    /// Give back `n` (written, or never queued).
    fn give(&self, n: usize) {
        let mut used = lock(&self.used);
        *used = used.saturating_sub(n);
        self.freed.notify_all();
    }
}

/// A `loss` alert about a sink. Each gets an id of its own (the outboxes and the receivers take
/// a repeated `id:seq` for the same alert sent again): two reasons of one sink reported in the
/// same batch, or the same reason in two batches of the same millisecond, are two losses.
fn loss_alert(host: &str, origin_sink: &str, count: u64, what: &str) -> Alert {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let now = now_ms();
    let ts = rfc3339(now);
    Alert {
        schema: ALERT_SCHEMA,
        alert_type: AlertType::Loss,
        id: format!("loss-sink-{origin_sink}-{now}-{n}"),
        seq: 1,
        key: None,
        severity: 6,
        count,
        total: count,
        first_seen: Some(ts.clone()),
        last_seen: Some(ts),
        host: host.to_string(),
        event: None,
        samples: Vec::new(),
        incidents: Vec::new(),
        loss: Some(LossInfo {
            origin: format!("sink:{origin_sink}"),
            what: what.to_string(),
            count: Some(count),
        }),
        noise: None,
        reason: None,
        profile: None,
        explanation: None,
    }
}

async fn route_losses(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<LossNotice>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let mut dropped = false;
        let first = tokio::select! {
            n = rx.recv() => n,
            changed = stop.changed() => {
                // The SinkSet was dropped without shutdown: stop rather than spin.
                dropped = changed.is_err();
                None
            }
        };
        let mut batch: Vec<LossNotice> = first.into_iter().collect();
        while let Ok(n) = rx.try_recv() {
            batch.push(n);
        }
        // One loss alert per origin and reason, with the summed count.
        let mut merged: BTreeMap<(String, String), u64> = BTreeMap::new();
        for n in batch {
            *merged.entry((n.sink, n.what)).or_default() += n.count;
        }
        for ((sink, what), count) in merged {
            let alert = loss_alert(&inner.host, &sink, count, &what);
            if let Some((json, view)) = encode(&alert, inner.needs_view) {
                inner.deliver_loss(&json, &view, &sink);
            }
        }
        if dropped || *stop.borrow() {
            return;
        }
    }
}

fn encode(alert: &Alert, needs_view: bool) -> Option<(Arc<str>, Arc<AlertView>)> {
    let json = serde_json::to_string(alert).ok()?;
    // Read back from the text (what the outbox replays after a restart), without building a
    // tree of the whole alert first; not at all when every sink writes the text as it is (a
    // default policy accepts any alert, whatever its view says).
    let view: AlertView = if needs_view {
        serde_json::from_str(&json).ok()?
    } else {
        AlertView::default()
    };
    Some((Arc::from(json), Arc::new(view)))
}

impl SinkSet {
    /// Start every sink. Must be called inside a tokio runtime. Remote sinks resume delivering
    /// whatever their outbox holds from a previous run.
    pub fn start(specs: &[SinkSpec], opts: SinkSetOptions) -> Result<SinkSet, SinkError> {
        let (loss_tx, loss_rx) = mpsc::unbounded_channel();
        let (stop_remote, stop_remote_rx) = watch::channel(false);
        let (stop_router, stop_router_rx) = watch::channel(false);
        let mut sinks = Vec::new();
        let mut remotes = Vec::new();
        let mut threads = Vec::new();
        for spec in specs {
            let counters = Arc::new(Counters::default());
            let setup = |key: &str, message: String| SinkError::Setup {
                key: format!("sinks.{}{key}", spec.name),
                message,
            };
            let worker = match &spec.kind {
                SinkKind::File(f) => {
                    let w = file::FileWriter::open(f).map_err(|source| SinkError::File {
                        key: format!("sinks.{}.path", spec.name),
                        path: f.path.clone(),
                        source,
                    })?;
                    spawn_local(
                        spec,
                        LocalOut::File(w),
                        &opts,
                        &counters,
                        &loss_tx,
                        &mut threads,
                    )?
                }
                SinkKind::Stdout(s) => spawn_local(
                    spec,
                    LocalOut::Stdout(s.format),
                    &opts,
                    &counters,
                    &loss_tx,
                    &mut threads,
                )?,
                _ => {
                    let dir = opts.state_dir.join("outbox").join(&spec.name);
                    let (ob, corrupt) =
                        Outbox::open(&dir, opts.outbox_fsync, spec.delivery.outbox_max_entries)
                            .map_err(|source| SinkError::Outbox {
                                name: spec.name.clone(),
                                source,
                            })?;
                    if corrupt > 0 {
                        let _ = loss_tx.send(LossNotice {
                            sink: spec.name.clone(),
                            count: corrupt,
                            what: format!(
                                "unreadable lines of the outbox journal of sink {} moved aside \
                                 to {}",
                                spec.name,
                                ob.corrupt_path().display()
                            ),
                        });
                    }
                    let transport = http::Transport::new(spec)
                        .map_err(|e| setup("", e.to_string()))?
                        .ok_or_else(|| setup("", "no transport".into()))?;
                    let am_open = transport.alertmanager_spec().map(|_| {
                        alertmanager::OpenSet::load(
                            &opts
                                .state_dir
                                .join("outbox")
                                .join(format!("{}.am-open.json", spec.name)),
                        )
                    });
                    let outbox = Arc::new(Mutex::new(ob));
                    let notify = Arc::new(Notify::new());
                    remotes.push(remote::RemoteSink {
                        name: spec.name.clone(),
                        transport,
                        outbox: outbox.clone(),
                        delivery: spec.delivery.clone(),
                        mode: spec.policy.mode,
                        digest_interval_secs: spec.policy.digest_interval_secs,
                        notify: notify.clone(),
                        stop: stop_remote_rx.clone(),
                        loss_tx: loss_tx.clone(),
                        counters: counters.clone(),
                        am_open,
                    });
                    Worker::Remote { outbox, notify }
                }
            };
            let plain_lines = match &spec.kind {
                SinkKind::File(_) => true,
                SinkKind::Stdout(s) => s.format == config::LineFormat::Json,
                _ => false,
            };
            sinks.push(SinkEntry {
                name: spec.name.clone(),
                sink_type: spec.kind.type_name(),
                reads_view: !(plain_lines && spec.policy == SinkPolicy::default()),
                policy: spec.policy.clone(),
                content: spec.kind.content(),
                counters,
                worker,
            });
        }
        let inner = Arc::new(Inner {
            needs_view: sinks.iter().any(|s| s.reads_view),
            sinks,
            host: opts.host.clone(),
            loss_tx,
        });
        let remote_tasks = remotes
            .into_iter()
            .map(|r| (r.name.clone(), tokio::spawn(r.run())))
            .collect();
        let router = tokio::spawn(route_losses(inner.clone(), loss_rx, stop_router_rx));
        Ok(SinkSet {
            inner,
            stop_remote,
            stop_router,
            remote_tasks,
            router,
            threads,
        })
    }

    /// Hand an alert to every sink whose policy accepts it. Remote sinks spool it durably before
    /// this returns; local sinks queue it (a full queue drops it, counted and announced). Never
    /// waits for a receiver.
    pub fn deliver_alert(&self, alert: &Alert) {
        if let Some((json, view)) = encode(alert, self.inner.needs_view) {
            self.inner.deliver(&json, &view);
        }
    }

    /// Like [`SinkSet::deliver_alert`], but waits for room in a full file/stdout queue instead of
    /// dropping the alert (with a `loss` alert): backpressure for the pipeline's output thread,
    /// so a fast replay cannot outrun a file sink. Must not be called from async code. File and
    /// stdout sinks get the alert at the next [`SinkSet::end_batch`] (or [`SinkSet::flush_local`],
    /// [`SinkSet::shutdown`]), or once [`LOCAL_BATCH`] alerts are held.
    pub fn deliver_alert_wait(&self, alert: &Alert) {
        if let Some((json, view)) = encode(alert, self.inner.needs_view) {
            self.inner.deliver_with(&json, &view, None, true);
        }
    }

    /// Hand an event to the file and stdout sinks with `content = "events"`. A full queue drops
    /// the event (counted in the sink's `dropped`).
    pub fn deliver_event(&self, event: &Event) {
        let mut json: Option<Arc<str>> = None;
        for s in &self.inner.sinks {
            if s.content != Some(Content::Events) {
                continue;
            }
            if let Worker::Local { tx, .. } = &s.worker {
                let line = match &json {
                    Some(j) => j.clone(),
                    None => match serde_json::to_string(event) {
                        Ok(j) => {
                            let j: Arc<str> = Arc::from(j);
                            json = Some(j.clone());
                            j
                        }
                        Err(_) => return,
                    },
                };
                if tx.try_send(LocalMsg::Line(line)).is_err() {
                    s.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Reopen every file sink's file before its next line (call on SIGHUP, after logrotate).
    pub fn reopen_files(&self) {
        for s in &self.inner.sinks {
            if let Worker::Local {
                tx,
                reopen,
                is_file: true,
                ..
            } = &s.worker
            {
                reopen.store(true, Ordering::Release);
                let _ = tx.try_send(LocalMsg::Wake);
            }
        }
    }

    /// Send the alerts [`SinkSet::deliver_alert_wait`] held back. Must not be called from async
    /// code (it waits for room in a full queue).
    pub fn end_batch(&self) {
        for h in self.inner.take_held() {
            self.inner.send_held(h.sink, h.tx, h.budget, h.alerts);
        }
    }

    async fn send_held_async(&self) {
        for h in self.inner.take_held() {
            // Not counted against the budget: waiting for it would block the runtime, and this
            // is the last batch before a flush or shutdown.
            let n = h.alerts.len();
            let msg = LocalMsg::Alerts {
                alerts: h.alerts,
                counted: false,
            };
            if h.tx.send(msg).await.is_err() {
                self.inner.queue_full(h.sink, n as u64);
            }
        }
    }

    /// Wait until every local sink has written what was queued (or held) before this call.
    pub async fn flush_local(&self) {
        self.send_held_async().await;
        for s in &self.inner.sinks {
            if let Worker::Local { tx, .. } = &s.worker {
                let (ack, done) = oneshot::channel();
                if tx.send(LocalMsg::Flush(ack)).await.is_ok() {
                    let _ = done.await;
                }
            }
        }
    }

    /// Alerts waiting in a remote sink's outbox (`None` for an unknown or local sink).
    pub fn pending(&self, name: &str) -> Option<usize> {
        self.inner
            .sinks
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| match &s.worker {
                Worker::Remote { outbox, .. } => Some(lock(outbox).len()),
                Worker::Local { .. } => None,
            })
    }

    /// Counters of every sink.
    pub fn stats(&self) -> Vec<SinkStats> {
        self.inner
            .sinks
            .iter()
            .map(|s| SinkStats {
                name: s.name.clone(),
                sink_type: s.sink_type,
                delivered: s.counters.delivered.load(Ordering::Relaxed),
                failed_attempts: s.counters.failed_attempts.load(Ordering::Relaxed),
                expired: s.counters.expired.load(Ordering::Relaxed),
                dropped: s.counters.dropped.load(Ordering::Relaxed),
                pending: match &s.worker {
                    Worker::Remote { outbox, .. } => lock(outbox).len(),
                    Worker::Local { .. } => 0,
                },
                last_error: s.counters.last_error.lock().ok().and_then(|g| g.clone()),
            })
            .collect()
    }

    /// Stop: remote sinks make one last attempt for what is due (within `grace`), undelivered
    /// alerts stay in the outbox; pending loss alerts are routed; local sinks write everything
    /// queued and close.
    pub async fn shutdown(self, grace: Duration) -> ShutdownReport {
        self.send_held_async().await;
        let SinkSet {
            inner,
            stop_remote,
            stop_router,
            remote_tasks,
            router,
            threads,
        } = self;
        let _ = stop_remote.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        let mut report = ShutdownReport::default();
        for (name, mut task) in remote_tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
                report.aborted.push(name);
            }
        }
        let _ = stop_router.send(true);
        let _ = router.await;
        for s in &inner.sinks {
            if let Worker::Remote { outbox, .. } = &s.worker {
                report.pending.insert(s.name.clone(), lock(outbox).len());
            }
        }
        drop(inner);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        report
    }
}

/// A [`SinkSet`] with its own tokio runtime, for callers that are plain threads (the pipeline's
/// output thread): every method blocks at most on the local outbox write.
#[derive(Debug)]
pub struct BlockingSinkSet {
    runtime: tokio::runtime::Runtime,
    set: SinkSet,
}

impl BlockingSinkSet {
    /// Start a runtime (two worker threads named `sinks`) and the sinks on it.
    pub fn start(specs: &[SinkSpec], opts: SinkSetOptions) -> Result<BlockingSinkSet, SinkError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sinks")
            .enable_all()
            .build()
            .map_err(|e| SinkError::Setup {
                key: "sinks".into(),
                message: format!("starting the async runtime: {e}"),
            })?;
        let set = {
            let _guard = runtime.enter();
            SinkSet::start(specs, opts)?
        };
        Ok(BlockingSinkSet { runtime, set })
    }

    /// See [`SinkSet::deliver_alert`].
    pub fn deliver_alert(&self, alert: &Alert) {
        self.set.deliver_alert(alert);
    }

    /// See [`SinkSet::deliver_event`].
    pub fn deliver_event(&self, event: &Event) {
        self.set.deliver_event(event);
    }

    /// See [`SinkSet::reopen_files`].
    pub fn reopen_files(&self) {
        self.set.reopen_files();
    }

    /// See [`SinkSet::stats`].
    pub fn stats(&self) -> Vec<SinkStats> {
        self.set.stats()
    }

    /// See [`SinkSet::shutdown`]; stops the runtime afterwards.
    pub fn shutdown(self, grace: Duration) -> ShutdownReport {
        let BlockingSinkSet { runtime, set } = self;
        let report = runtime.block_on(set.shutdown(grace));
        runtime.shutdown_timeout(Duration::from_secs(1));
        report
    }
}

fn spawn_local(
    spec: &SinkSpec,
    out: LocalOut,
    opts: &SinkSetOptions,
    counters: &Arc<Counters>,
    loss_tx: &mpsc::UnboundedSender<LossNotice>,
    threads: &mut Vec<std::thread::JoinHandle<()>>,
) -> Result<Worker, SinkError> {
    let (tx, rx) = mpsc::channel(opts.queue_capacity.max(1));
    let reopen = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(Budget::new(opts.queue_capacity));
    let (r2, c2, l2, n2, b2) = (
        reopen.clone(),
        counters.clone(),
        loss_tx.clone(),
        spec.name.clone(),
        budget.clone(),
    );
    let t = std::thread::Builder::new()
        .name(format!("sink-{}", spec.name))
        .spawn(move || run_local(out, rx, r2, c2, l2, n2, b2))
        .map_err(|e| SinkError::Setup {
            key: format!("sinks.{}", spec.name),
            message: format!("starting its thread: {e}"),
        })?;
    threads.push(t);
    Ok(Worker::Local {
        tx,
        reopen,
        is_file: matches!(spec.kind, SinkKind::File(_)),
        held: Mutex::default(),
        budget,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two loss alerts of one sink (an expiry and a refusal reported in the same batch) are two
    /// alerts in an outbox: with one id they shared an idempotency key, and the outbox kept only
    /// the first.
    #[test]
    fn loss_alerts_of_one_batch_have_their_own_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ob, _) = Outbox::open(&dir.path().join("ob"), false, 100).unwrap();
        for what in [
            "alerts expired undelivered",
            "alerts refused for good: HTTP 400",
        ] {
            let (json, view) = encode(&loss_alert("h", "slack", 1, what), true).unwrap();
            ob.push_view(&json, view, 1).unwrap();
        }
        assert_eq!(ob.len(), 2);
    }

    #[test]
    fn budget_bounds_and_never_hangs_on_a_stopped_sink() {
        let b = Budget::new(4);
        b.take(3, || false);
        b.take(1, || false);
        // Full, and the sink thread is gone: take returns instead of waiting forever.
        b.take(2, || true);
        assert_eq!(*lock(&b.used), 6);
        b.give(6);
        // A batch larger than the capacity goes when the queue is empty.
        b.take(10, || false);
        assert_eq!(*lock(&b.used), 10);
        let b = Arc::new(b);
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || b.take(1, || false))
        };
        b.give(10);
        waiter.join().unwrap();
        assert_eq!(*lock(&b.used), 1);
    }

    #[test]
    fn stdout_json_has_no_character_a_terminal_acts_on() {
        let hostile = "\u{9B}2J\u{1b}[31m\u{7F}\u{202E}gnp.exe\u{2066}\u{85}";
        let v = serde_json::json!({"type": "incident.opened", "key": {"object": hostile}});
        let line: Arc<str> = Arc::from(serde_json::to_string(&v).unwrap());
        let text = stdout_text(config::LineFormat::Json, &[(line, None)]);
        let out = text.strip_suffix('\n').unwrap();
        assert!(
            !out.chars().any(|c| c.is_control()
                || ('\u{202A}'..='\u{202E}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c)),
            "{out:?}"
        );
        let back: serde_json::Value = serde_json::from_str(out).unwrap();
        assert_eq!(back, v, "the same JSON value");
    }

    #[test]
    fn rfc3339_known() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_091_469_123), "2025-11-25T17:24:29.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}

//! What the daemon counts, and where it shows it: the Prometheus `/metrics` and `/healthz`
//! endpoint (a small HTTP/1.1 responder), the sd_notify `STATUS=` line, the journal (every alert
//! is logged with [`ALERT_MESSAGE_ID`]) and the recent-alerts file `armorwatch status` reads.
//!
//! [`Metrics`] lives as long as the process (counters survive reloads, as Prometheus expects).
//! The pipeline's output thread feeds it: [`MetricsOutput`] counts events and losses and ticks the
//! watchdog; `crate::alerting::Alerting` reports alerts, open incidents and sink counters.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::alert::{Alert, AlertType};
use crate::event::{Event, Source};
use crate::pipeline::{EventOutput, Item, LossReason};
use crate::sinks::{SinkStats, now_ms};

/// The journal `MESSAGE_ID` of every alert armorwatch logs:
/// `journalctl MESSAGE_ID=7210ea427e304e46938bdf04a386fbf3` lists them.
pub const ALERT_MESSAGE_ID: &str = "7210ea427e304e46938bdf04a386fbf3";

/// The file in the state directory holding the latest incident alerts (for `armorwatch status`).
pub const RECENT_FILE: &str = "recent-alerts.json";

/// Distinct (kind, profile, operation) series kept; later combinations are counted under
/// `profile="_other", operation="_other"` so hostile or churning profile names cannot blow up
/// the scrape.
pub const MAX_EVENT_SERIES: usize = 256;

/// Incident alerts kept in [`RECENT_FILE`].
pub const RECENT_KEPT: usize = 200;

/// Label values longer than this are cut.
const MAX_LABEL: usize = 128;

/// How often the pipeline ticks its outputs (`EventOutput::tick`, about once a second).
const OUTPUT_TICK: Duration = Duration::from_secs(1);

/// `/healthz` fails when the output thread has not ticked for this long.
const STALL: Duration = Duration::from_secs(10);

/// One incident alert as `armorwatch status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentAlert {
    /// `incident.opened`, `incident.update`, `incident.closed`.
    #[serde(rename = "type")]
    pub alert_type: String,
    /// The incident id.
    pub id: String,
    /// The alert's sequence number within the incident.
    pub seq: u64,
    /// 0–10.
    pub severity: u8,
    /// The profile.
    pub profile: String,
    /// The operation.
    pub operation: String,
    /// The object (path, capability …).
    pub object: String,
    /// Events since the previous alert of the incident.
    pub count: u64,
    /// Events in the incident so far.
    pub total: u64,
    /// First event (RFC 3339).
    pub first_seen: Option<String>,
    /// Latest event (RFC 3339).
    pub last_seen: Option<String>,
    /// The explanation's one-sentence summary.
    pub headline: Option<String>,
    /// The suggested rule.
    pub suggestion: Option<String>,
    /// The host.
    pub host: String,
}

/// The contents of [`RECENT_FILE`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecentFile {
    /// Format version (1).
    pub version: u32,
    /// Oldest first.
    pub alerts: Vec<RecentAlert>,
}

impl RecentAlert {
    /// The summary of an incident alert; None for other alert types.
    pub fn from_alert(alert: &Alert) -> Option<RecentAlert> {
        if !matches!(
            alert.alert_type,
            AlertType::IncidentOpened | AlertType::IncidentUpdate | AlertType::IncidentClosed
        ) {
            return None;
        }
        let key = alert.key.as_ref();
        let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
        let exp = alert.explanation.as_ref();
        Some(RecentAlert {
            alert_type: alert.alert_type.as_str().to_string(),
            id: alert.id.clone(),
            seq: alert.seq,
            severity: alert.severity,
            profile: key.map(|k| k.profile.clone()).unwrap_or_default(),
            operation: key.map(|k| k.operation.clone()).unwrap_or_default(),
            object: key.map(|k| k.object.clone()).unwrap_or_default(),
            count: alert.count,
            total: alert.total,
            first_seen: alert.first_seen.clone(),
            last_seen: alert.last_seen.clone(),
            headline: text(exp.and_then(|e| e.get("summary"))),
            suggestion: text(
                exp.and_then(|e| e.get("suggestion"))
                    .and_then(|s| s.get("rule")),
            ),
            host: alert.host.clone(),
        })
    }
}

/// Read [`RECENT_FILE`] from a state directory (empty when absent).
pub fn read_recent(state_dir: &Path) -> io::Result<RecentFile> {
    match std::fs::read(state_dir.join(RECENT_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RecentFile::default()),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Default)]
struct State {
    events: BTreeMap<(String, String, String), u64>,
    events_total: u64,
    loss_records: BTreeMap<String, u64>,
    loss_notices: BTreeMap<String, u64>,
    open_incidents: u64,
    alerts: BTreeMap<String, u64>,
    last_alert: Option<String>,
    sinks: Vec<SinkStats>,
    retired: BTreeMap<(String, String), [u64; 4]>,
    lag_ms: BTreeMap<String, u64>,
    heartbeat: Option<Instant>,
    reloads: [u64; 2],
    recent: VecDeque<RecentAlert>,
    recent_dirty: bool,
    recent_dir: Option<PathBuf>,
}

/// The daemon's counters, shared by the pipeline, the alerting stage and the HTTP endpoint.
#[derive(Debug, Default)]
pub struct Metrics {
    state: Mutex<State>,
}

fn label(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_LABEL) + 2);
    for (n, c) in s.chars().enumerate() {
        if n >= MAX_LABEL {
            out.push('…');
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

fn source_label(source: &Source) -> &'static str {
    match source {
        Source::File { .. } => "file",
        Source::Stdin { .. } => "stdin",
        Source::Text => "text",
        Source::Journald { .. } => "journald",
        Source::Kmsg { .. } => "kmsg",
        Source::Netlink => "netlink",
    }
}

/// Log an alert with [`ALERT_MESSAGE_ID`] (to the journal when run by systemd).
fn log_alert(alert: &Alert, recent: Option<&RecentAlert>) {
    let headline = match recent {
        Some(r) => format!(
            "{} {}: profile {} {} {}{}",
            r.alert_type,
            r.id,
            r.profile,
            r.operation,
            r.object,
            r.headline
                .as_deref()
                .map(|h| format!(" — {h}"))
                .unwrap_or_default()
        ),
        None => match (&alert.loss, &alert.reason) {
            (Some(l), _) => format!("{}: {} ({})", alert.alert_type.as_str(), l.what, l.origin),
            (None, Some(r)) => format!("{}: {r}", alert.alert_type.as_str()),
            _ => alert.alert_type.as_str().to_string(),
        },
    };
    tracing::warn!(
        message_id = ALERT_MESSAGE_ID,
        armorwatch_alert = alert.alert_type.as_str(),
        armorwatch_incident = alert.id.as_str(),
        armorwatch_severity = alert.severity,
        "{}",
        crate::sinks::escape::plain(&headline, 1000)
    );
}

impl Metrics {
    /// Empty counters.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Where [`RECENT_FILE`] is written (None: nowhere). Loads what a previous run kept.
    pub fn set_state_dir(&self, dir: Option<&Path>) {
        let mut s = self.lock();
        if s.recent_dir.as_deref() == dir {
            return;
        }
        s.recent_dir = dir.map(Path::to_path_buf);
        s.recent.clear();
        if let Some(d) = dir {
            if let Ok(file) = read_recent(d) {
                s.recent.extend(file.alerts);
            }
        }
    }

    /// Count one delivered item (`lag` only in follow mode: the delay of a live event).
    pub fn observe_item(&self, item: &Item, lag: bool) {
        let mut s = self.lock();
        match item {
            Item::Event(e) => {
                s.events_total += 1;
                // Kept as rendered: values that look alike once cut and escaped are one series
                // (two series with the same labels are a malformed scrape).
                let key = (
                    label(e.kind.as_str()),
                    label(e.profile().unwrap_or("")),
                    label(e.operation().unwrap_or("")),
                );
                if let Some(n) = s.events.get_mut(&key) {
                    *n += 1;
                } else if s.events.len() < MAX_EVENT_SERIES {
                    s.events.insert(key, 1);
                } else {
                    *s.events
                        .entry((key.0, "_other".into(), "_other".into()))
                        .or_default() += 1;
                }
                if lag {
                    if let Some(at) = event_ms(e) {
                        let delay = now_ms().saturating_sub(at);
                        s.lag_ms.insert(source_label(&e.source).to_string(), delay);
                    }
                }
            }
            Item::Loss(l) => {
                let reason = loss_reason(l.reason);
                *s.loss_notices.entry(reason.clone()).or_default() += 1;
                // The count comes from the log (`audit_lost=N`).
                let n = s.loss_records.entry(reason).or_default();
                *n = n.saturating_add(l.count.unwrap_or(1));
            }
        }
    }

    /// An alert left the correlator (after the explanation was attached): count it, log it with
    /// [`ALERT_MESSAGE_ID`], remember incident alerts for `armorwatch status`.
    pub fn observe_alert(&self, alert: &Alert) {
        let recent = RecentAlert::from_alert(alert);
        // Only when the log takes it (replay logs no alerts): the headline is a few
        // allocations per alert.
        if tracing::enabled!(tracing::Level::WARN) {
            log_alert(alert, recent.as_ref());
        }
        let mut s = self.lock();
        *s.alerts
            .entry(alert.alert_type.as_str().to_string())
            .or_default() += 1;
        let when = alert
            .last_seen
            .clone()
            .unwrap_or_else(|| crate::sinks::rfc3339(now_ms()));
        s.last_alert = Some(match &recent {
            Some(r) => format!("{when} {} {} {}", r.profile, r.operation, r.object),
            None => format!("{when} {}", alert.alert_type.as_str()),
        });
        if let Some(r) = recent {
            s.recent.push_back(r);
            while s.recent.len() > RECENT_KEPT {
                s.recent.pop_front();
            }
            s.recent_dirty = true;
        }
    }

    /// The alerting stage's current state: open incidents and its sinks' counters.
    pub fn observe_alerting(&self, open_incidents: usize, sinks: Vec<SinkStats>) {
        let mut s = self.lock();
        s.open_incidents = open_incidents as u64;
        s.sinks = sinks;
    }

    /// The alerting stage stopped (reload or exit): keep its sinks' final counts so the counters
    /// never go backwards when a new set of sinks starts.
    pub fn retire_sinks(&self) {
        let mut s = self.lock();
        let sinks = std::mem::take(&mut s.sinks);
        for st in sinks {
            let e = s
                .retired
                .entry((st.name.clone(), st.sink_type.to_string()))
                .or_default();
            e[0] += st.delivered;
            e[1] += st.failed_attempts;
            e[2] += st.expired;
            e[3] += st.dropped;
        }
    }

    /// A reload was applied (`ok`) or rejected.
    pub fn reloaded(&self, ok: bool) {
        self.lock().reloads[usize::from(!ok)] += 1;
    }

    /// The output thread is alive.
    pub fn heartbeat(&self) {
        self.lock().heartbeat = Some(Instant::now());
    }

    /// True while the output thread ticks.
    pub fn healthy(&self) -> bool {
        self.lock().heartbeat.is_some_and(|t| t.elapsed() < STALL)
    }

    /// The sd_notify `STATUS=` line.
    pub fn status_line(&self) -> String {
        let s = self.lock();
        format!(
            "{} events, {} open incidents, last alert: {}",
            s.events_total,
            s.open_incidents,
            s.last_alert.as_deref().unwrap_or("none")
        )
    }

    /// Write [`RECENT_FILE`] if alerts arrived since the last write.
    pub fn save_recent(&self) -> io::Result<()> {
        let (dir, bytes) = {
            let mut s = self.lock();
            let Some(dir) = s.recent_dir.clone() else {
                return Ok(());
            };
            if !s.recent_dirty {
                return Ok(());
            }
            s.recent_dirty = false;
            let file = RecentFile {
                version: 1,
                alerts: s.recent.iter().cloned().collect(),
            };
            (dir, serde_json::to_vec(&file).map_err(io::Error::other)?)
        };
        let written = crate::checkpoint::write_atomic(&dir.join(RECENT_FILE), &bytes);
        if written.is_err() {
            // Not on disk: the next tick tries again.
            self.lock().recent_dirty = true;
        }
        written
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let s = self.lock();
        let mut o = String::new();
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut o,
            "armorwatch_events_total",
            "counter",
            "AppArmor events delivered, by kind, profile and operation (at most 256 series; the rest under profile=\"_other\").",
        );
        for ((k, p, op), n) in &s.events {
            let _ = writeln!(
                o,
                "armorwatch_events_total{{kind=\"{k}\",profile=\"{p}\",operation=\"{op}\"}} {n}"
            );
        }
        head(
            &mut o,
            "armorwatch_loss_notices_total",
            "counter",
            "Loss notices (records the kernel or armorwatch lost), by reason.",
        );
        for (r, n) in &s.loss_notices {
            let _ = writeln!(
                o,
                "armorwatch_loss_notices_total{{reason=\"{}\"}} {n}",
                label(r)
            );
        }
        head(
            &mut o,
            "armorwatch_lost_records_total",
            "counter",
            "Records lost, by reason (the kernel's counts where it gives them, else 1 per notice).",
        );
        for (r, n) in &s.loss_records {
            let _ = writeln!(
                o,
                "armorwatch_lost_records_total{{reason=\"{}\"}} {n}",
                label(r)
            );
        }
        head(
            &mut o,
            "armorwatch_open_incidents",
            "gauge",
            "Incidents the correlator holds open.",
        );
        let _ = writeln!(o, "armorwatch_open_incidents {}", s.open_incidents);
        head(
            &mut o,
            "armorwatch_alerts_total",
            "counter",
            "Alerts produced by the correlator, by type.",
        );
        for (t, n) in &s.alerts {
            let _ = writeln!(o, "armorwatch_alerts_total{{type=\"{}\"}} {n}", label(t));
        }
        // Sink counters: the running set plus what retired sets delivered before a reload.
        let mut sinks: BTreeMap<(String, String), [u64; 4]> = s.retired.clone();
        for st in &s.sinks {
            let e = sinks
                .entry((st.name.clone(), st.sink_type.to_string()))
                .or_default();
            e[0] += st.delivered;
            e[1] += st.failed_attempts;
            e[2] += st.expired;
            e[3] += st.dropped;
        }
        head(
            &mut o,
            "armorwatch_sink_alerts_total",
            "counter",
            "Alerts (and events) per sink and result: delivered, failed (attempts), expired (in the outbox), dropped.",
        );
        for ((name, ty), c) in &sinks {
            for (result, n) in ["delivered", "failed", "expired", "dropped"].iter().zip(c) {
                let _ = writeln!(
                    o,
                    "armorwatch_sink_alerts_total{{sink=\"{}\",type=\"{}\",result=\"{result}\"}} {n}",
                    label(name),
                    label(ty)
                );
            }
        }
        head(
            &mut o,
            "armorwatch_sink_outbox_depth",
            "gauge",
            "Alerts waiting in a remote sink's outbox.",
        );
        for st in &s.sinks {
            if st.sink_type != "file" && st.sink_type != "stdout" {
                let _ = writeln!(
                    o,
                    "armorwatch_sink_outbox_depth{{sink=\"{}\"}} {}",
                    label(&st.name),
                    st.pending
                );
            }
        }
        head(
            &mut o,
            "armorwatch_source_lag_seconds",
            "gauge",
            "Delay between the kernel's audit stamp and delivery, for the latest event of each source kind.",
        );
        for (src, ms) in &s.lag_ms {
            let _ = writeln!(
                o,
                "armorwatch_source_lag_seconds{{source=\"{}\"}} {:.3}",
                label(src),
                *ms as f64 / 1000.0
            );
        }
        head(
            &mut o,
            "armorwatch_source_read_errors_total",
            "counter",
            "Errors reading a source (each is logged, at most once per 10 s), by source kind.",
        );
        for (src, n) in crate::sources::read_errors_by_source() {
            let _ = writeln!(
                o,
                "armorwatch_source_read_errors_total{{source=\"{src}\"}} {n}"
            );
        }
        head(
            &mut o,
            "armorwatch_reloads_total",
            "counter",
            "Configuration reloads (SIGHUP), applied or rejected.",
        );
        let _ = writeln!(
            o,
            "armorwatch_reloads_total{{result=\"applied\"}} {}",
            s.reloads[0]
        );
        let _ = writeln!(
            o,
            "armorwatch_reloads_total{{result=\"rejected\"}} {}",
            s.reloads[1]
        );
        o
    }
}

fn event_ms(e: &Event) -> Option<u64> {
    let stamp = e.audit.as_ref()?;
    if stamp.epoch == 0 {
        return None;
    }
    // The stamp comes from the log: one past any real time does not fit in milliseconds.
    stamp
        .epoch
        .checked_mul(1000)?
        .checked_add(u64::from(stamp.millis))
}

fn loss_reason(r: LossReason) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// The pipeline output that feeds [`Metrics`], pings the watchdog and updates the `STATUS=`
/// line. Put it last among the outputs: it never fails, its tick then follows theirs, and its
/// close saves the alerts their close produced.
#[derive(Debug)]
pub struct MetricsOutput {
    metrics: Arc<Metrics>,
    watchdog: crate::notify::Watchdog,
    last_status: String,
    follow: bool,
    recent_failing: bool,
}

impl MetricsOutput {
    /// `follow`: live mode (lag is measured, the watchdog and status are sent).
    pub fn new(metrics: Arc<Metrics>, follow: bool) -> MetricsOutput {
        metrics.heartbeat();
        MetricsOutput {
            metrics,
            watchdog: crate::notify::Watchdog::from_env(),
            last_status: String::new(),
            follow,
            recent_failing: false,
        }
    }
}

impl EventOutput for MetricsOutput {
    fn deliver(&mut self, item: &Item) -> io::Result<()> {
        self.metrics.observe_item(item, self.follow);
        Ok(())
    }

    fn tick(&mut self) -> io::Result<()> {
        self.metrics.heartbeat();
        // Tried again every tick until it works; said once.
        match self.metrics.save_recent() {
            Err(e) if !self.recent_failing => {
                tracing::warn!("saving {RECENT_FILE}: {e}; trying again every second");
                self.recent_failing = true;
            }
            Err(_) => {}
            Ok(()) => self.recent_failing = false,
        }
        if self.follow {
            self.watchdog.tick(Instant::now(), OUTPUT_TICK);
            let status = self.metrics.status_line();
            if status != self.last_status {
                crate::notify::status(&status);
                self.last_status = status;
            }
        }
        Ok(())
    }

    fn close(&mut self) -> io::Result<()> {
        self.metrics.save_recent()
    }
}

/// Connections served at once; more wait in the kernel's listen backlog, holding no descriptor
/// of ours (idle clients must not take the descriptors checkpoint saves and sources need).
const MAX_CONNECTIONS: usize = 8;

/// How long one connection may take to send its request and read the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve `/metrics` and `/healthz` on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
                continue;
            }
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let m = metrics.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(CONNECTION_TIMEOUT, respond(stream, &m)).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!("metrics: accept: {e}");
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// One request, one response, then close (HTTP/1.1 with `Connection: close`).
async fn respond(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 16 * 1024 {
            return write_response(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "too large\n",
                true,
            )
            .await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let with_body = method != "HEAD";
    if method != "GET" && method != "HEAD" {
        return write_response(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
            with_body,
        )
        .await;
    }
    match path {
        "/metrics" => {
            let body = metrics.render();
            write_response(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
                with_body,
            )
            .await
        }
        "/healthz" => {
            if metrics.healthy() {
                write_response(&mut stream, "200 OK", "text/plain", "ok\n", with_body).await
            } else {
                write_response(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    "the pipeline has not ticked for 10 s\n",
                    with_body,
                )
                .await
            }
        }
        _ => {
            write_response(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "try /metrics or /healthz\n",
                with_body,
            )
            .await
        }
    }
}

async fn write_response(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
    with_body: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if with_body {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Output, parse_text};

    fn event(line: &str) -> Item {
        match parse_text(line, &Source::Text).pop() {
            Some(Output::Event(e)) => Item::Event(e.into()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn labels_are_escaped_and_series_capped() {
        let m = Metrics::default();
        for i in 0..(MAX_EVENT_SERIES + 10) {
            m.observe_item(
                &event(&format!(
                    "type=1400 msg=audit(1700000000.123:{i}): apparmor=\"DENIED\" operation=\"open\" profile=\"p{i}\" name=\"/x\" pid=1 comm=\"c\""
                )),
                false,
            );
        }
        m.observe_item(
            &event("type=1400 msg=audit(1700000000.123:1): apparmor=\"DENIED\" operation=\"open\" profile=2F7573722F62696E2F612022620A name=\"/x\" pid=1 comm=\"c\""),
            false,
        );
        let text = m.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("armorwatch_events_total{"))
            .count();
        assert_eq!(series, MAX_EVENT_SERIES + 1, "{text}");
        assert!(text.contains(
            "armorwatch_events_total{kind=\"denied\",profile=\"_other\",operation=\"_other\"} 11"
        ));
        assert!(!text.contains("/usr/bin/a \"b\n"), "raw newline in a label");
        assert!(
            m.status_line()
                .starts_with(&format!("{} events", MAX_EVENT_SERIES + 11))
        );
    }

    /// Label values are cut and their control characters replaced: two profiles that differ
    /// only past the cut, or only in a control character, gave two series with the same
    /// labels, which a scrape rejects as duplicates (hostile log values choose the names).
    #[test]
    fn profiles_that_look_alike_after_escaping_are_one_series() {
        let m = Metrics::default();
        let long = "p".repeat(MAX_LABEL);
        for profile in [
            format!("{long}a"),
            format!("{long}b"),
            "x\u{1}".into(),
            "x\u{2}".into(),
        ] {
            let hex: String = profile.bytes().map(|b| format!("{b:02X}")).collect();
            m.observe_item(
                &event(&format!(
                    "type=1400 msg=audit(1700000000.123:1): apparmor=\"DENIED\" operation=\"open\" profile={hex} name=\"/x\" pid=1 comm=\"c\""
                )),
                false,
            );
        }
        let text = m.render();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("armorwatch_events_total{"))
            .collect();
        let mut labels: Vec<&str> = series.iter().map(|l| &l[..l.rfind(' ').unwrap()]).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), series.len(), "duplicate series:\n{text}");
        assert!(series.iter().all(|l| l.ends_with(" 2")), "{text}");
    }

    /// A failed save of the recent alerts is tried again at the next tick: the alerts were
    /// marked saved before the write, and after a failed one (a full disk) `status` showed
    /// none of them until another alert came.
    #[test]
    fn recent_alerts_are_saved_again_after_a_failed_save() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        let m = Metrics::default();
        m.set_state_dir(Some(&dir));
        // The write cannot go through: its temp file's name is taken by a directory.
        std::fs::create_dir(dir.join(format!("{RECENT_FILE}.tmp"))).unwrap();
        m.observe_alert(&crate::sinks::sample::sample_alert("h", 1_700_000_000_000));
        assert!(m.save_recent().is_err());
        std::fs::remove_dir(dir.join(format!("{RECENT_FILE}.tmp"))).unwrap();
        m.save_recent().unwrap();
        assert_eq!(read_recent(&dir).unwrap().alerts.len(), 1);
    }

    /// A hostile stamp far past any real time: `epoch * 1000` overflowed (a panic of the
    /// output thread in a debug build, a wrapped lag in release); the event is counted and
    /// gives no lag.
    #[test]
    fn a_stamp_too_large_for_milliseconds_gives_no_lag() {
        let m = Metrics::default();
        m.observe_item(
            &event("type=1400 msg=audit(99999999999999999.123:1): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"/x\" pid=1 comm=\"c\""),
            true,
        );
        let text = m.render();
        assert!(m.status_line().starts_with("1 events"), "{text}");
        assert!(!text.contains("armorwatch_source_lag_seconds{"), "{text}");
    }

    /// The records a loss notice counts come from the log (`audit_lost=N`, any u64): two
    /// huge ones overflowed the counter (a panic of the output thread in a debug build, a
    /// counter going backwards in release). It stops at its maximum.
    #[test]
    fn lost_records_from_hostile_notices_do_not_overflow() {
        let m = Metrics::default();
        for _ in 0..2 {
            m.observe_item(
                &Item::Loss(crate::pipeline::LossEvent::now(
                    LossReason::AuditLost,
                    Some(u64::MAX),
                    None,
                    Source::Text,
                )),
                false,
            );
        }
        let text = m.render();
        assert!(
            text.contains(&format!(
                "armorwatch_lost_records_total{{reason=\"audit_lost\"}} {}",
                u64::MAX
            )),
            "{text}"
        );
        assert!(
            text.contains("armorwatch_loss_notices_total{reason=\"audit_lost\"} 2"),
            "{text}"
        );
    }
}

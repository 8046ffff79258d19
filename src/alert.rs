//! Alerts (JSON schema 1): what the correlator hands to the sinks.
//!
//! This is the contract between `correlate` (which produces alerts), `profiles` (which adds the
//! `profile` and `explanation` objects) and `sinks` (which deliver them). It is documented field by
//! field in `docs/alert-schema.md` with a JSON Schema in `docs/alert.schema.json`.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::event::Event;

/// The version of the alert JSON (`"schema": 1`).
pub const ALERT_SCHEMA: u32 = 1;

/// What an alert announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlertType {
    /// The first event of a new incident.
    #[serde(rename = "incident.opened")]
    IncidentOpened,
    /// The incident keeps happening ("still happening: N more since the last alert").
    #[serde(rename = "incident.update")]
    IncidentUpdate,
    /// The incident has been quiet for the window (or was evicted, or input ended).
    #[serde(rename = "incident.closed")]
    IncidentClosed,
    /// Flood control held alerts back; `incidents` lists what was held, with counts.
    #[serde(rename = "suppressed")]
    Suppressed,
    /// A policy change (profile load/replace/remove).
    #[serde(rename = "status")]
    Status,
    /// Records were lost (kernel rate limit, backlog, unparsable records, expired deliveries).
    #[serde(rename = "loss")]
    Loss,
}

impl AlertType {
    /// The JSON name (`"incident.opened"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::IncidentOpened => "incident.opened",
            AlertType::IncidentUpdate => "incident.update",
            AlertType::IncidentClosed => "incident.closed",
            AlertType::Suppressed => "suppressed",
            AlertType::Status => "status",
            AlertType::Loss => "loss",
        }
    }
}

/// What makes two events the same problem.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IncidentKey {
    /// The subject's profile or label.
    pub profile: String,
    /// denied, allowed, audit, killed, …
    pub kind: String,
    /// Mediation class (file, cap, net, dbus, …).
    pub class: String,
    /// Operation family (e.g. `open`, `mknod`/`mkdir` → `create`).
    pub operation: String,
    /// The normalised object (`/proc/@{pid}/status`, `@{HOME}/.cache/…`, capability name, …).
    pub object: String,
    /// The denied (or requested) permission.
    pub permission: String,
}

/// A few details of one event kept as a sample of an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// RFC 3339 time of the event, when known.
    pub time: Option<String>,
    /// The object as it appeared (not normalised).
    pub object: Option<String>,
    /// The task's pid.
    pub pid: Option<u32>,
    /// The task's command name.
    pub comm: Option<String>,
    /// The AppArmor record line.
    pub raw: String,
}

/// One incident inside a `suppressed` alert.
///
/// The entry stands in for the alert that flood control held back: its `count` events are not
/// repeated in the incident's next alert, so for every incident the `count`s of its alerts and of
/// its `suppressed` entries add up to its `total`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBack {
    /// The incident id.
    pub id: String,
    /// The incident key (added by correlate: the incident's `incident.opened` may itself have
    /// been held back, so this can be the first a receiver hears of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<IncidentKey>,
    /// Events since that incident's previous alert.
    pub count: u64,
    /// Events since that incident opened.
    pub total: u64,
    /// True when the incident closed (quiet or evicted) while held back: this entry is its last
    /// word and no `incident.closed` follows (added by correlate).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
}

/// Details of a `loss` alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossInfo {
    /// Where the loss was seen (`kernel`, `netlink`, `kmsg`, `parser`, `sink:NAME`).
    pub origin: String,
    /// What was lost, in words.
    pub what: String,
    /// How many records or alerts, when known.
    pub count: Option<u64>,
}

/// One alert (schema 1).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Always [`ALERT_SCHEMA`].
    pub schema: u32,
    /// What the alert announces.
    #[serde(rename = "type")]
    pub alert_type: AlertType,
    /// Stable incident id (for `status`/`loss`/`suppressed`: an id of the alert itself).
    pub id: String,
    /// Sequence number of this alert within its incident (1 for `incident.opened`); with `id` it
    /// forms the idempotency key receivers use to drop duplicates.
    pub seq: u64,
    /// The incident key, for incident alerts.
    pub key: Option<IncidentKey>,
    /// 0–10.
    pub severity: u8,
    /// Events since this incident's previous alert.
    pub count: u64,
    /// Events since the incident opened.
    pub total: u64,
    /// RFC 3339 time of the incident's first event.
    pub first_seen: Option<String>,
    /// RFC 3339 time of the incident's latest event.
    pub last_seen: Option<String>,
    /// The host the events came from.
    pub host: String,
    /// The latest event.
    pub event: Option<Arc<Event>>,
    /// A few raw samples.
    pub samples: Vec<Sample>,
    /// For `suppressed`: what was held back.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incidents: Vec<HeldBack>,
    /// For `loss`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossInfo>,
    /// Events matched by a noise rule (named) are marked so sinks can mute them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise: Option<String>,
    /// For `incident.closed`: why it closed, `quiet` (no event for the window), `evicted` (the
    /// open-incident cap was reached and it was the least recently seen) or `end_of_input`
    /// (replay finished). Added by correlate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The responsible profile (name, file, line, mode, package), from `profiles`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<serde_json::Value>,
    /// The near-miss explanation and suggested rule, from `profiles`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<serde_json::Value>,
}

impl Alert {
    /// The idempotency key: incident id and alert sequence.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.id, self.seq)
    }

    /// What an incident alert says, as a stable hash: its type, counts, severity, latest event
    /// time and close reason. Two alerts with one key and one digest are the same alert made
    /// twice (see `correlate::sent`); the explanation is left out (it follows the profiles).
    pub fn content_digest(&self) -> u64 {
        crate::correlate::key::stable_hash(&[
            self.alert_type.as_str(),
            &self.count.to_string(),
            &self.total.to_string(),
            &self.severity.to_string(),
            self.last_seen.as_deref().unwrap_or(""),
            self.reason.as_deref().unwrap_or(""),
        ])
    }
}

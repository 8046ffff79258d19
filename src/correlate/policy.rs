//! Per-sink delivery policy: which alerts a sink receives, and how (`always`, `first`, `digest`,
//! `never`). Pure: the sinks call [`Policy::decide`] / [`Policy::accepts`] for every alert.
//!
//! ```toml
//! [sinks.mail.policy]
//! min_severity = 6
//! include_profiles = ["/usr/sbin/*", "snap.*"]   # AppArmor globs; empty = all
//! exclude_profiles = ["docker-default"]
//! include_operations = []                         # raw operation or family
//! exclude_operations = ["dbus_*"]
//! mode = "digest"                                 # always | first | digest | never
//! digest_interval_secs = 3600
//! noise = "mute"                                  # deliver | mute
//! ```

use serde::Deserialize;

use super::glob::{Glob, GlobError};
use crate::alert::{Alert, AlertType};

/// How a sink receives alerts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every accepted alert.
    #[default]
    Always,
    /// Only `incident.opened` (plus `suppressed`, `status` and `loss`, which have no opening).
    First,
    /// Accepted alerts are collected and sent together every `digest_interval_secs`.
    Digest,
    /// Nothing.
    Never,
}

/// What to do with alerts marked as noise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseAction {
    /// Deliver them (with their lowered severity and the `noise` mark).
    #[default]
    Deliver,
    /// Do not deliver them to this sink (they are still counted).
    Mute,
}

/// The policy as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Alerts below this severity (0–10) are not delivered. `loss` and `suppressed` alerts are
    /// always delivered (unless mode is `never`).
    #[serde(default)]
    pub min_severity: u8,
    /// Profile globs; when not empty, only incidents of matching profiles are delivered.
    #[serde(default)]
    pub include_profiles: Vec<String>,
    /// Profile globs never delivered.
    #[serde(default)]
    pub exclude_profiles: Vec<String>,
    /// Operation globs (matched against the operation family and the raw operation); when not
    /// empty, only matching incidents are delivered.
    #[serde(default)]
    pub include_operations: Vec<String>,
    /// Operation globs never delivered.
    #[serde(default)]
    pub exclude_operations: Vec<String>,
    /// always | first | digest | never.
    #[serde(default)]
    pub mode: Mode,
    /// For `digest`: seconds between digests.
    #[serde(default = "default_digest_interval_secs")]
    pub digest_interval_secs: u64,
    /// deliver | mute: alerts marked as noise.
    #[serde(default)]
    pub noise: NoiseAction,
}

fn default_digest_interval_secs() -> u64 {
    3600
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            min_severity: 0,
            include_profiles: Vec::new(),
            exclude_profiles: Vec::new(),
            include_operations: Vec::new(),
            exclude_operations: Vec::new(),
            mode: Mode::Always,
            digest_interval_secs: default_digest_interval_secs(),
            noise: NoiseAction::Deliver,
        }
    }
}

/// A policy could not be compiled; `key` is the TOML key below the policy table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PolicyError {
    /// e.g. `include_profiles[2]`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// What a sink should do with one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it now.
    Deliver,
    /// Add it to the next digest.
    Digest,
    /// Do not send it.
    Drop,
}

/// A compiled policy. Deserializes from the same TOML as [`PolicyConfig`] (unknown keys and bad
/// globs are errors naming the key).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "PolicyConfig")]
pub struct Policy {
    config: PolicyConfig,
    include_profiles: Vec<Glob>,
    exclude_profiles: Vec<Glob>,
    include_operations: Vec<Glob>,
    exclude_operations: Vec<Glob>,
}

fn globs(key: &str, pats: &[String]) -> Result<Vec<Glob>, PolicyError> {
    pats.iter()
        .enumerate()
        .map(|(i, p)| {
            Glob::new(p).map_err(|e: GlobError| PolicyError {
                key: format!("{key}[{i}]"),
                message: e.to_string(),
            })
        })
        .collect()
}

impl TryFrom<PolicyConfig> for Policy {
    type Error = PolicyError;

    fn try_from(config: PolicyConfig) -> Result<Policy, PolicyError> {
        Policy::new(config)
    }
}

impl Policy {
    /// Compile a policy.
    pub fn new(config: PolicyConfig) -> Result<Policy, PolicyError> {
        if config.min_severity > 10 {
            return Err(PolicyError {
                key: "min_severity".into(),
                message: format!("{} is above 10", config.min_severity),
            });
        }
        if config.mode == Mode::Digest && config.digest_interval_secs == 0 {
            return Err(PolicyError {
                key: "digest_interval_secs".into(),
                message: "must be at least 1 for mode = \"digest\"".into(),
            });
        }
        Ok(Policy {
            include_profiles: globs("include_profiles", &config.include_profiles)?,
            exclude_profiles: globs("exclude_profiles", &config.exclude_profiles)?,
            include_operations: globs("include_operations", &config.include_operations)?,
            exclude_operations: globs("exclude_operations", &config.exclude_operations)?,
            config,
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// For `digest`: milliseconds between digests.
    pub fn digest_interval_ms(&self) -> Option<u64> {
        (self.config.mode == Mode::Digest)
            .then(|| self.config.digest_interval_secs.saturating_mul(1000))
    }

    /// True when the sink should receive the alert (now or in a digest).
    pub fn accepts(&self, alert: &Alert) -> bool {
        self.decide(alert) != Decision::Drop
    }

    /// What the sink should do with the alert.
    pub fn decide(&self, alert: &Alert) -> Decision {
        let pass = match self.config.mode {
            Mode::Never => return Decision::Drop,
            Mode::Digest => Decision::Digest,
            Mode::Always | Mode::First => Decision::Deliver,
        };
        match alert.alert_type {
            // Never filtered: they are about the pipeline itself, and a sink that excluded an
            // incident still needs to know that records or alerts went missing.
            AlertType::Loss | AlertType::Suppressed => return pass,
            AlertType::IncidentUpdate | AlertType::IncidentClosed
                if self.config.mode == Mode::First =>
            {
                return Decision::Drop;
            }
            _ => {}
        }
        if alert.severity < self.config.min_severity {
            return Decision::Drop;
        }
        if alert.noise.is_some() && self.config.noise == NoiseAction::Mute {
            return Decision::Drop;
        }
        let profile = alert
            .key
            .as_ref()
            .map(|k| k.profile.as_str())
            .or_else(|| alert.event.as_ref().and_then(|e| e.profile()))
            .unwrap_or("");
        let family = alert.key.as_ref().map(|k| k.operation.as_str());
        let raw_op = alert.event.as_ref().and_then(|e| e.operation());
        let op_matches =
            |g: &Glob| family.is_some_and(|f| g.matches(f)) || raw_op.is_some_and(|o| g.matches(o));
        if !self.include_profiles.is_empty()
            && !self.include_profiles.iter().any(|g| g.matches(profile))
        {
            return Decision::Drop;
        }
        if self.exclude_profiles.iter().any(|g| g.matches(profile)) {
            return Decision::Drop;
        }
        if !self.include_operations.is_empty() && !self.include_operations.iter().any(op_matches) {
            return Decision::Drop;
        }
        if self.exclude_operations.iter().any(op_matches) {
            return Decision::Drop;
        }
        pass
    }
}

/// Collects the alerts of a `digest` sink between sends. Pure: the sink calls
/// [`Digest::push`] for every alert with [`Decision::Digest`] and [`Digest::take_due`] on its
/// timer.
///
/// Per incident only its latest alert is kept, with `count` summed over the alerts it replaces
/// (so a digest entry says how many events happened since the previous digest, and counts still
/// add up). Other alerts (`suppressed`, `status`, `loss`) are kept as they are.
#[derive(Debug, Clone)]
pub struct Digest {
    interval_ms: u64,
    started_ms: Option<u64>,
    alerts: Vec<Alert>,
    by_incident: std::collections::HashMap<String, usize>,
}

impl Digest {
    /// A digest sent every `interval_ms` (at least 1).
    pub fn new(interval_ms: u64) -> Digest {
        Digest {
            interval_ms: interval_ms.max(1),
            started_ms: None,
            alerts: Vec::new(),
            by_incident: std::collections::HashMap::new(),
        }
    }

    /// Add an alert.
    pub fn push(&mut self, alert: Alert, now_ms: u64) {
        self.started_ms.get_or_insert(now_ms);
        let incident = matches!(
            alert.alert_type,
            AlertType::IncidentOpened | AlertType::IncidentUpdate | AlertType::IncidentClosed
        );
        if incident && let Some(&i) = self.by_incident.get(&alert.id) {
            let count = self.alerts[i].count + alert.count;
            self.alerts[i] = alert;
            self.alerts[i].count = count;
            return;
        }
        if incident {
            self.by_incident.insert(alert.id.clone(), self.alerts.len());
        }
        self.alerts.push(alert);
    }

    /// Number of entries waiting.
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }

    /// The entries, when the interval since the first of them has passed.
    pub fn take_due(&mut self, now_ms: u64) -> Option<Vec<Alert>> {
        let started = self.started_ms?;
        (now_ms >= started.saturating_add(self.interval_ms)).then(|| self.take_all())
    }

    /// All entries now (shutdown).
    pub fn take_all(&mut self) -> Vec<Alert> {
        self.started_ms = None;
        self.by_incident.clear();
        std::mem::take(&mut self.alerts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{ALERT_SCHEMA, IncidentKey};

    fn alert(t: AlertType, profile: &str, op: &str, severity: u8) -> Alert {
        Alert {
            schema: ALERT_SCHEMA,
            alert_type: t,
            id: "x".into(),
            seq: 1,
            key: Some(IncidentKey {
                profile: profile.into(),
                kind: "denied".into(),
                class: "file".into(),
                operation: op.into(),
                object: "/etc/x".into(),
                permission: "r".into(),
            }),
            severity,
            count: 1,
            total: 1,
            first_seen: None,
            last_seen: None,
            host: "h".into(),
            event: None,
            samples: Vec::new(),
            incidents: Vec::new(),
            loss: None,
            noise: None,
            reason: None,
            profile: None,
            explanation: None,
        }
    }

    fn policy(toml_text: &str) -> Policy {
        Policy::new(toml::from_str(toml_text).unwrap()).unwrap()
    }

    #[test]
    fn default_accepts_everything() {
        let p = Policy::default();
        assert!(p.accepts(&alert(AlertType::IncidentOpened, "a", "open", 0)));
        assert!(p.accepts(&alert(AlertType::IncidentClosed, "a", "open", 0)));
    }

    #[test]
    fn severity_and_globs() {
        let p = policy(
            "min_severity = 5\ninclude_profiles = [\"/usr/sbin/*\", \"snap.*\"]\nexclude_profiles = [\"/usr/sbin/cupsd\"]\nexclude_operations = [\"dbus_*\"]\n",
        );
        assert!(p.accepts(&alert(
            AlertType::IncidentOpened,
            "/usr/sbin/nginx",
            "open",
            5
        )));
        assert!(!p.accepts(&alert(
            AlertType::IncidentOpened,
            "/usr/sbin/nginx",
            "open",
            4
        )));
        assert!(!p.accepts(&alert(
            AlertType::IncidentOpened,
            "/usr/sbin/cupsd",
            "open",
            9
        )));
        assert!(!p.accepts(&alert(
            AlertType::IncidentOpened,
            "docker-default",
            "open",
            9
        )));
        assert!(p.accepts(&alert(
            AlertType::IncidentOpened,
            "snap.firefox.firefox",
            "open",
            9
        )));
        assert!(!p.accepts(&alert(
            AlertType::IncidentOpened,
            "snap.firefox.firefox",
            "dbus_signal",
            9
        )));
        // loss and suppressed pass the filters
        assert!(p.accepts(&alert(AlertType::Loss, "", "", 0)));
        assert!(p.accepts(&alert(AlertType::Suppressed, "", "", 0)));
    }

    #[test]
    fn modes() {
        let first = policy("mode = \"first\"");
        assert!(first.accepts(&alert(AlertType::IncidentOpened, "a", "open", 1)));
        assert!(!first.accepts(&alert(AlertType::IncidentUpdate, "a", "open", 1)));
        assert!(!first.accepts(&alert(AlertType::IncidentClosed, "a", "open", 1)));
        assert!(first.accepts(&alert(AlertType::Status, "a", "profile_load", 1)));
        let never = policy("mode = \"never\"");
        assert!(!never.accepts(&alert(AlertType::Loss, "", "", 10)));
        let digest = policy("mode = \"digest\"\ndigest_interval_secs = 60");
        assert_eq!(
            digest.decide(&alert(AlertType::IncidentUpdate, "a", "open", 1)),
            Decision::Digest
        );
        assert_eq!(digest.digest_interval_ms(), Some(60_000));
    }

    #[test]
    fn digest_keeps_the_latest_alert_per_incident_with_summed_counts() {
        let mut d = Digest::new(60_000);
        assert_eq!(d.take_due(0), None);
        let mut a = alert(AlertType::IncidentOpened, "p", "open", 5);
        d.push(a.clone(), 1_000);
        a.alert_type = AlertType::IncidentUpdate;
        a.seq = 2;
        a.count = 7;
        a.total = 8;
        d.push(a.clone(), 2_000);
        d.push(alert(AlertType::Loss, "", "", 6), 3_000);
        let mut other = alert(AlertType::IncidentOpened, "q", "open", 5);
        other.id = "y".into();
        d.push(other, 4_000);
        assert_eq!(d.len(), 3);
        assert_eq!(d.take_due(60_999), None);
        let sent = d.take_due(61_000).unwrap();
        assert_eq!(sent.len(), 3);
        assert_eq!(sent[0].alert_type, AlertType::IncidentUpdate);
        assert_eq!((sent[0].count, sent[0].total, sent[0].seq), (8, 8, 2));
        assert!(d.is_empty());
        assert_eq!(d.take_due(1_000_000), None);
    }

    #[test]
    fn noise_mute() {
        let p = policy("noise = \"mute\"");
        let mut a = alert(
            AlertType::IncidentOpened,
            "unprivileged_userns",
            "capable",
            2,
        );
        assert!(p.accepts(&a));
        a.noise = Some("ubuntu-userns-capable".into());
        assert!(!p.accepts(&a));
        assert!(Policy::default().accepts(&a));
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = toml::from_str::<PolicyConfig>("min_severty = 3").unwrap_err();
        assert!(e.to_string().contains("min_severty"), "{e}");
        let e = toml::from_str::<PolicyConfig>("mode = \"sometimes\"").unwrap_err();
        assert!(e.to_string().contains("mode"), "{e}");
        let e =
            Policy::new(toml::from_str("exclude_profiles = [\"a\", \"{b\"]").unwrap()).unwrap_err();
        assert_eq!(e.key, "exclude_profiles[1]");
        let e = Policy::new(toml::from_str("min_severity = 11").unwrap()).unwrap_err();
        assert_eq!(e.key, "min_severity");
        // Policy itself deserializes, with the key in the message
        #[derive(Debug, Deserialize)]
        struct Sink {
            #[allow(dead_code)]
            policy: Policy,
        }
        let e = toml::from_str::<Sink>("[policy]\ninclude_profiles = [\"[x\"]\n").unwrap_err();
        assert!(e.to_string().contains("include_profiles[0]"), "{e}");
        let e = toml::from_str::<Sink>("[policy]\nmood = \"first\"\n").unwrap_err();
        assert!(e.to_string().contains("mood"), "{e}");
    }
}

//! Prometheus Alertmanager: `POST /api/v2/alerts` with labels (alertname, host, profile,
//! operation, severity, incident) and annotations (summary, explanation, suggestion). Open
//! incidents are re-posted while they stay open (so they keep firing) and resolved with `endsAt`
//! when they close. The set of open incidents is kept in the state directory across restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::config::AlertmanagerSpec;
use super::escape::{plain, truncate};
use super::view::AlertView;

/// Alertmanager's conventional severity names.
pub fn severity_name(severity: u8) -> &'static str {
    match severity {
        8.. => "critical",
        5..=7 => "warning",
        _ => "info",
    }
}

/// The Alertmanager alert object for one armorwatch alert. `now` is RFC 3339; closed incidents get
/// `endsAt = now`.
pub fn am_alert(spec: &AlertmanagerSpec, v: &AlertView, now: &str) -> Value {
    let s = v.summary();
    let mut labels: BTreeMap<String, String> = spec.labels.clone();
    // Label values are opaque strings to Alertmanager; truncate so a hostile path cannot bloat
    // every notification, and keep them on one line.
    let mut put = |k: &str, val: Option<String>| {
        if let Some(val) = val.filter(|x| !x.is_empty()) {
            labels.insert(k.to_string(), plain(&val, 200));
        }
    };
    put("alertname", Some(spec.alertname.clone()));
    put("host", Some(v.host.clone()));
    put("profile", v.profile_name());
    put("operation", v.operation());
    put("severity", Some(severity_name(v.severity).to_string()));
    put("incident", Some(v.id.clone()));
    put("kind", v.kind());
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "summary".to_string(),
        plain(&format!("{} on {}", s.headline, s.host), 400),
    );
    annotations.insert(
        "description".to_string(),
        s.facts
            .iter()
            .map(|(k, val)| format!("{k}: {}", plain(val, 300)))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    if let Some(x) = s.explanation_text() {
        annotations.insert("explanation".to_string(), truncate(&x, 2000));
    }
    if let Some(sug) = s.suggestion_text() {
        annotations.insert("suggestion".to_string(), truncate(&sug, 2000));
    }
    annotations.insert("severity_score".to_string(), v.severity.to_string());
    annotations.insert("idempotency_key".to_string(), v.idempotency_key());
    let mut obj = json!({
        "labels": labels,
        "annotations": annotations,
        "startsAt": v.first_seen.clone().unwrap_or_else(|| now.to_string()),
    });
    if v.alert_type == "incident.closed" {
        obj["endsAt"] = json!(now);
    }
    obj
}

/// The incidents currently firing, kept in `<state>/outbox/<sink>.am-open.json`.
#[derive(Debug, Default)]
pub struct OpenSet {
    path: PathBuf,
    /// incident id → the latest Alertmanager alert object (without `endsAt`).
    pub open: BTreeMap<String, Value>,
}

impl OpenSet {
    /// Load (or start empty).
    pub fn load(path: &Path) -> OpenSet {
        let open = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        OpenSet {
            path: path.to_path_buf(),
            open,
        }
    }

    /// Record a delivered alert: opened/updated incidents are kept, closed ones dropped.
    pub fn record(&mut self, v: &AlertView, am: &Value) {
        match v.alert_type.as_str() {
            "incident.opened" | "incident.update" => {
                self.open.insert(v.id.clone(), am.clone());
            }
            "incident.closed" => {
                self.open.remove(&v.id);
            }
            _ => {}
        }
    }

    /// Write atomically (tmp, fsync, rename).
    pub fn save(&self) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(&self.open).map_err(std::io::Error::other)?)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.path)
    }
}

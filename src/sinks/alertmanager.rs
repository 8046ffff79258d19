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
        annotations.insert("explanation".to_string(), plain_lines(&x, 2000));
    }
    if let Some(sug) = s.suggestion_text() {
        annotations.insert("suggestion".to_string(), plain_lines(&sug, 2000));
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

/// Multi-line text as plain text line by line (control and bidi characters shown visibly, as in
/// the other annotations; the line breaks kept), at most `max_chars`.
fn plain_lines(text: &str, max_chars: usize) -> String {
    let lines: Vec<String> = text.lines().map(|l| plain(l, max_chars)).collect();
    truncate(&lines.join("\n"), max_chars)
}

/// One firing incident.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct OpenAlert {
    /// The latest Alertmanager alert object (without `endsAt`).
    pub am: Value,
    /// When armorwatch last delivered an alert of this incident (ms since the epoch).
    pub updated_ms: u64,
}

/// The incidents currently firing, kept in `<state>/outbox/<sink>.am-open.json`.
#[derive(Debug, Default)]
pub struct OpenSet {
    path: PathBuf,
    /// incident id → its latest alert.
    pub open: BTreeMap<String, OpenAlert>,
}

impl OpenSet {
    /// Load (or start empty: none saved, or unreadable, which is logged).
    pub fn load(path: &Path) -> OpenSet {
        let loaded = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| e.to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e.to_string()),
        };
        let open = loaded.unwrap_or_else(|e| {
            crate::log_warn!(
                "{}: {e}; the incidents it held open are not posted again (Alertmanager resolves them when they time out)",
                path.display()
            );
            BTreeMap::new()
        });
        OpenSet {
            path: path.to_path_buf(),
            open,
        }
    }

    /// Record a delivered alert: opened/updated incidents are kept, closed ones dropped.
    pub fn record(&mut self, v: &AlertView, am: &Value, now_ms: u64) {
        match v.alert_type.as_str() {
            "incident.opened" | "incident.update" => {
                self.open.insert(
                    v.id.clone(),
                    OpenAlert {
                        am: am.clone(),
                        updated_ms: now_ms,
                    },
                );
            }
            "incident.closed" => {
                self.open.remove(&v.id);
            }
            _ => {}
        }
    }

    /// Stop re-posting incidents not updated for `max_age_ms` (their `incident.closed` was lost,
    /// e.g. armorwatch's correlator state was): Alertmanager then resolves them by timeout.
    /// Returns how many were dropped.
    pub fn prune(&mut self, max_age_ms: u64, now_ms: u64) -> usize {
        let before = self.open.len();
        self.open
            .retain(|_, a| now_ms.saturating_sub(a.updated_ms) <= max_age_ms);
        before - self.open.len()
    }

    /// Write atomically (tmp, fsync, rename, directory fsync).
    pub fn save(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&self.open).map_err(std::io::Error::other)?;
        crate::checkpoint::write_atomic(&self.path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::config::{HttpSpec, Secret};

    fn spec() -> AlertmanagerSpec {
        AlertmanagerSpec {
            http: HttpSpec {
                url: Secret::new("http://am:9093"),
                headers: BTreeMap::new(),
                ca_file: None,
            },
            alertname: "AppArmorDenial".into(),
            labels: BTreeMap::from([("team".to_string(), "ops".to_string())]),
            repost_interval_secs: 60,
        }
    }

    fn view(t: &str) -> AlertView {
        AlertView::from_json(
            &json!({"type": t, "id": "inc\n1", "seq": 2, "severity": 9, "host": "web1",
            "first_seen": "2026-01-01T00:00:00Z",
            "key": {"profile": "nginx", "operation": "open", "kind": "denied", "class": "file",
                    "object": "/x", "permission": "r"}}),
        )
        .unwrap()
    }

    #[test]
    fn labels_annotations_and_resolution() {
        let now = "2026-01-01T01:00:00.000Z";
        let a = am_alert(&spec(), &view("incident.opened"), now);
        assert_eq!(a["labels"]["alertname"], "AppArmorDenial");
        assert_eq!(a["labels"]["severity"], "critical");
        assert_eq!(a["labels"]["incident"], "inc\\n1");
        assert_eq!(a["labels"]["team"], "ops");
        assert_eq!(a["startsAt"], "2026-01-01T00:00:00Z");
        assert!(a.get("endsAt").is_none());
        assert_eq!(a["annotations"]["idempotency_key"], "inc\n1:2");
        let c = am_alert(&spec(), &view("incident.closed"), now);
        assert_eq!(c["endsAt"], now);
    }

    /// The explanation and suggestion annotations are plain text like the others: a closest
    /// rule's reason naming a path with U+202E, a `needed` holding a terminal escape (OSC 8, a
    /// hyperlink) from the record's capname, arrive visible, not raw.
    #[test]
    fn explanation_annotations_show_control_characters() {
        let v = AlertView::from_json(&json!({"type": "incident.opened", "id": "i", "seq": 1,
            "severity": 5, "host": "h",
            "key": {"profile": "p", "operation": "open", "kind": "denied", "class": "file",
                    "object": "/x", "permission": "w"},
            "explanation": {"verdict": "no_rule_matches",
                "needed": "capability \u{1b}]8;;http://evil\u{7}x",
                "closest_rules": [{"file": "f", "line": 3, "rule": "deny /tmp/** w,",
                    "reason": "deny rule matches /tmp/\u{202e}gpj.exe and forbids `w`"}],
                "suggestion": {"rule": "/tmp/\u{202e}x w,", "file": "f"}}}))
        .unwrap();
        let a = am_alert(&spec(), &v, "2026-01-01T01:00:00.000Z");
        for name in ["explanation", "suggestion"] {
            let x = a["annotations"][name].as_str().unwrap();
            assert!(
                !x.contains(['\u{1b}', '\u{7}', '\u{202e}']),
                "{name}: {x:?}"
            );
        }
        let x = a["annotations"]["explanation"].as_str().unwrap();
        assert!(x.contains("\\u{202E}") && x.contains('\n'), "{x:?}");
    }

    #[test]
    fn open_set_records_closes_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("am.json");
        let mut s = OpenSet::load(&path);
        s.record(&view("incident.opened"), &json!({"a": 1}), 1000);
        s.save().unwrap();
        let mut s = OpenSet::load(&path);
        assert_eq!(s.open.len(), 1);
        assert_eq!(s.prune(10_000, 5000), 0);
        assert_eq!(s.prune(10_000, 20_000), 1);
        s.record(&view("incident.opened"), &json!({"a": 1}), 1000);
        s.record(&view("incident.closed"), &json!({"a": 1}), 2000);
        assert!(s.open.is_empty());
    }
}

//! A realistic sample alert (nginx denied reading a TLS key), for `armorwatch test-alert`, tests
//! and benchmarks.

use serde_json::json;

use crate::alert::{ALERT_SCHEMA, Alert, AlertType, IncidentKey, Sample};
use crate::event::Source;
use crate::parse::{Output, parse_text};

/// The AppArmor record the sample is built from.
pub const SAMPLE_RECORD: &str = r#"type=AVC msg=audit(1764091469.123:4711): apparmor="DENIED" operation="open" class="file" profile="nginx" name="/etc/ssl/private/example.key" pid=1234 comm="nginx" requested_mask="r" denied_mask="r" fsuid=33 ouid=0"#;

/// The sample alert: `incident.opened`, seq 1, with a profile and an explanation; `id` names it as
/// a test so receivers can tell.
pub fn sample_alert(host: &str, now_ms: u64) -> Alert {
    let event = parse_text(SAMPLE_RECORD, &Source::Text)
        .into_iter()
        .find_map(|o| match o {
            Output::Event(e) => Some(*e),
            _ => None,
        });
    let ts = super::rfc3339(now_ms);
    Alert {
        schema: ALERT_SCHEMA,
        alert_type: AlertType::IncidentOpened,
        id: format!("test-{now_ms}"),
        seq: 1,
        key: Some(IncidentKey {
            profile: "nginx".into(),
            kind: "denied".into(),
            class: "file".into(),
            operation: "open".into(),
            object: "/etc/ssl/private/example.key".into(),
            permission: "r".into(),
        }),
        severity: 6,
        count: 1,
        total: 1,
        first_seen: Some(ts.clone()),
        last_seen: Some(ts.clone()),
        host: host.to_string(),
        event: event.map(Into::into),
        samples: vec![Sample {
            time: Some(ts),
            object: Some("/etc/ssl/private/example.key".into()),
            pid: Some(1234),
            comm: Some("nginx".into()),
            raw: SAMPLE_RECORD.into(),
        }],
        incidents: Vec::new(),
        loss: None,
        noise: None,
        reason: None,
        profile: Some(
            json!({"name": "nginx", "file": "/etc/apparmor.d/usr.sbin.nginx", "line": 12}),
        ),
        explanation: Some(json!({
            "verdict": "No rule of profile nginx allows reading /etc/ssl/private/example.key.",
            "needed": "r on /etc/ssl/private/example.key",
            "closest_rules": [{"rule": "/etc/ssl/certs/** r,", "file": "/etc/apparmor.d/usr.sbin.nginx",
                               "line": 31, "reason": "covers certs/, not private/"}],
            "suggestion": {"file": "/etc/apparmor.d/local/usr.sbin.nginx",
                           "rule": "/etc/ssl/private/example.key r,",
                           "check": "apparmor_parser -QT /etc/apparmor.d/usr.sbin.nginx",
                           "reload": "apparmor_parser -r /etc/apparmor.d/usr.sbin.nginx"}
        })),
    }
}

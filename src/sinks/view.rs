//! A read-only view of an alert's JSON (schema 1) and the neutral text summary every renderer
//! starts from.
//!
//! Sinks render from the alert's JSON rather than from [`crate::alert::Alert`] so that an alert
//! read back from the outbox after a restart renders exactly like a fresh one. The view is
//! lenient: missing fields become defaults. The [`Summary`] holds raw (unescaped) text; each
//! renderer escapes it for its own language.

use serde::Deserialize;
use serde_json::Value;

/// The fields of an alert (schema 1) that sinks use.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AlertView {
    /// Schema version.
    pub schema: u32,
    /// `incident.opened`, `incident.update`, `incident.closed`, `suppressed`, `status`, `loss`.
    #[serde(rename = "type")]
    pub alert_type: String,
    /// Incident id.
    pub id: String,
    /// Alert sequence within the incident.
    pub seq: u64,
    /// The incident key.
    pub key: Option<KeyView>,
    /// 0–10.
    pub severity: u8,
    /// Events since the previous alert.
    pub count: u64,
    /// Events since the incident opened.
    pub total: u64,
    /// RFC 3339.
    pub first_seen: Option<String>,
    /// RFC 3339.
    pub last_seen: Option<String>,
    /// Host.
    pub host: String,
    /// The latest event (schema 1), kept as JSON.
    pub event: Option<Value>,
    /// Raw samples.
    pub samples: Vec<SampleView>,
    /// For `suppressed`.
    pub incidents: Vec<HeldBackView>,
    /// For `loss`.
    pub loss: Option<LossView>,
    /// Noise rule name.
    pub noise: Option<String>,
    /// `{"name","file","line",…}`.
    pub profile: Option<Value>,
    /// `{"verdict","needed","closest_rules":[…],"suggestion":{…}|null}`.
    pub explanation: Option<Value>,
}

/// The incident key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct KeyView {
    /// Profile.
    pub profile: String,
    /// denied, allowed, …
    pub kind: String,
    /// Mediation class.
    pub class: String,
    /// Operation family.
    pub operation: String,
    /// Normalised object.
    pub object: String,
    /// Permission.
    pub permission: String,
}

/// One raw sample.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SampleView {
    /// Time.
    pub time: Option<String>,
    /// Object as seen.
    pub object: Option<String>,
    /// Pid.
    pub pid: Option<u32>,
    /// Command name.
    pub comm: Option<String>,
    /// The record line.
    pub raw: String,
}

/// One held-back incident.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HeldBackView {
    /// Incident id.
    pub id: String,
    /// Events since its previous alert.
    pub count: u64,
    /// Events since it opened.
    pub total: u64,
}

/// Loss details.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LossView {
    /// Where.
    pub origin: String,
    /// What, in words.
    pub what: String,
    /// How many.
    pub count: Option<u64>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl AlertView {
    /// Read the view from alert JSON.
    pub fn from_json(v: &Value) -> Result<AlertView, serde_json::Error> {
        AlertView::deserialize(v)
    }

    /// `id:seq`, the idempotency key.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.id, self.seq)
    }

    /// The subject profile: the incident key's, else the event's.
    pub fn profile_name(&self) -> Option<String> {
        if let Some(k) = &self.key {
            if !k.profile.is_empty() {
                return Some(k.profile.clone());
            }
        }
        self.event_field("profile")
            .or_else(|| self.event_field("label"))
    }

    /// The operation: the incident key's, else the event's.
    pub fn operation(&self) -> Option<String> {
        if let Some(k) = &self.key {
            if !k.operation.is_empty() {
                return Some(k.operation.clone());
            }
        }
        self.event_field("operation")
    }

    /// The object as seen in the latest event (`name=`), else the key's normalised object.
    pub fn object(&self) -> Option<String> {
        self.event_field("name")
            .or_else(|| self.event_field("capname"))
            .or_else(|| {
                self.key
                    .as_ref()
                    .filter(|k| !k.object.is_empty())
                    .map(|k| k.object.clone())
            })
    }

    /// The denied (or requested) permission.
    pub fn permission(&self) -> Option<String> {
        self.event_field("denied_mask")
            .or_else(|| self.event_field("requested_mask"))
            .or_else(|| self.event_field("denied"))
            .or_else(|| self.event_field("requested"))
            .or_else(|| {
                self.key
                    .as_ref()
                    .filter(|k| !k.permission.is_empty())
                    .map(|k| k.permission.clone())
            })
    }

    /// The event kind (`denied`, …).
    pub fn kind(&self) -> Option<String> {
        if let Some(k) = &self.key {
            if !k.kind.is_empty() {
                return Some(k.kind.clone());
            }
        }
        self.event
            .as_ref()
            .and_then(|e| e.get("kind"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    /// A field of the latest event's `fields` object.
    pub fn event_field(&self, key: &str) -> Option<String> {
        let e = self.event.as_ref()?;
        e.get("fields")?.get(key).and_then(scalar_text)
    }

    /// `comm (pid N, exe)` of the latest event.
    pub fn process(&self) -> Option<String> {
        let e = self.event.as_ref()?;
        let comm = self
            .event_field("comm")
            .or_else(|| str_at(e, &["process", "comm"]).map(str::to_string));
        let pid = self
            .event_field("pid")
            .or_else(|| e.get("process")?.get("pid").and_then(scalar_text));
        let exe = str_at(e, &["process", "exe"]).map(str::to_string);
        if comm.is_none() && pid.is_none() && exe.is_none() {
            return None;
        }
        let mut s = comm.unwrap_or_else(|| "?".into());
        let mut extra = Vec::new();
        if let Some(p) = pid {
            extra.push(format!("pid {p}"));
        }
        if let Some(x) = exe {
            extra.push(x);
        }
        if !extra.is_empty() {
            s.push_str(&format!(" ({})", extra.join(", ")));
        }
        Some(s)
    }

    /// Build the neutral summary.
    pub fn summary(&self) -> Summary {
        let profile = self.profile_name();
        let operation = self.operation();
        let object = self.object();
        let kind = self.kind().unwrap_or_else(|| "denied".into());
        let host = self.host.clone();
        let (headline, lead) = match self.alert_type.as_str() {
            "incident.opened" | "incident.update" | "incident.closed" => {
                let what = format!(
                    "{} {} {}",
                    kind.to_uppercase(),
                    profile.as_deref().unwrap_or("?"),
                    [operation.as_deref(), object.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                let lead = match self.alert_type.as_str() {
                    "incident.opened" => "New AppArmor incident".to_string(),
                    "incident.update" => {
                        format!("Still happening: {} more since the last alert", self.count)
                    }
                    _ => format!("Incident closed after {} events", self.total),
                };
                (what.trim_end().to_string(), lead)
            }
            "loss" => {
                let l = self.loss.clone().unwrap_or_default();
                let n = l.count.map(|c| format!("{c} ")).unwrap_or_default();
                (
                    format!("LOSS {n}{} ({})", l.what, l.origin),
                    "armorwatch lost records or alerts".to_string(),
                )
            }
            "suppressed" => (
                format!(
                    "SUPPRESSED {} incidents held back by flood control",
                    self.incidents.len()
                ),
                "Flood control".to_string(),
            ),
            "status" => (
                format!(
                    "STATUS {} {}",
                    operation.as_deref().unwrap_or("policy change"),
                    object.as_deref().or(profile.as_deref()).unwrap_or("")
                )
                .trim_end()
                .to_string(),
                "AppArmor policy change".to_string(),
            ),
            other => (format!("{other} alert"), "armorwatch alert".to_string()),
        };
        let mut facts = Vec::new();
        let mut fact = |label: &str, value: Option<String>| {
            if let Some(v) = value {
                if !v.is_empty() {
                    facts.push((label.to_string(), v));
                }
            }
        };
        fact("Host", Some(host.clone()));
        fact("Profile", profile.clone());
        fact("Operation", operation.clone());
        fact("Object", object.clone());
        fact("Permission", self.permission());
        fact("Process", self.process());
        if self.alert_type.starts_with("incident.") {
            fact(
                "Count",
                Some(format!(
                    "{} since the last alert, {} in total",
                    self.count, self.total
                )),
            );
        }
        fact("First seen", self.first_seen.clone());
        fact("Last seen", self.last_seen.clone());
        fact("Severity", Some(format!("{}/10", self.severity)));
        fact("Noise rule", self.noise.clone());
        if let Some(p) = &self.profile {
            let name = p.get("name").and_then(scalar_text);
            let at = match (
                p.get("file").and_then(scalar_text),
                p.get("line").and_then(scalar_text),
            ) {
                (Some(f), Some(l)) => Some(format!("{f}:{l}")),
                (Some(f), None) => Some(f),
                _ => None,
            };
            let v = match (name, at) {
                (Some(n), Some(a)) => Some(format!("{n} ({a})")),
                (Some(n), None) => Some(n),
                (None, a) => a,
            };
            fact("Profile source", v);
        }
        const HELD_SHOWN: usize = 20;
        for h in self.incidents.iter().take(HELD_SHOWN) {
            fact(
                "Held back",
                Some(format!("{}: {} ({} total)", h.id, h.count, h.total)),
            );
        }
        if self.incidents.len() > HELD_SHOWN {
            // The alert's JSON has them all; the facts say how many are not shown.
            fact(
                "Held back",
                Some(format!(
                    "… and {} more incidents",
                    self.incidents.len() - HELD_SHOWN
                )),
            );
        }
        fact("Incident", Some(self.idempotency_key()));

        let mut explanation = Vec::new();
        let mut suggestion = None;
        if let Some(x) = &self.explanation {
            if let Some(v) = x.get("verdict").and_then(scalar_text) {
                explanation.push(v);
            }
            if let Some(v) = x.get("needed").and_then(scalar_text) {
                explanation.push(format!("Needed: {v}"));
            }
            if let Some(rules) = x.get("closest_rules").and_then(Value::as_array) {
                for r in rules.iter().take(5) {
                    let rule = r.get("rule").and_then(scalar_text).unwrap_or_default();
                    let file = r.get("file").and_then(scalar_text).unwrap_or_default();
                    let line = r.get("line").and_then(scalar_text).unwrap_or_default();
                    let reason = r.get("reason").and_then(scalar_text).unwrap_or_default();
                    explanation.push(format!("Closest rule {file}:{line}: {rule} — {reason}"));
                }
            }
            if let Some(s) = x.get("suggestion").filter(|s| s.is_object()) {
                suggestion = Some(Suggestion {
                    file: s.get("file").and_then(scalar_text),
                    rule: s.get("rule").and_then(scalar_text).unwrap_or_default(),
                    check: s.get("check").and_then(scalar_text),
                    reload: s.get("reload").and_then(scalar_text),
                });
            }
        }
        let raw = self.samples.iter().take(3).map(|s| s.raw.clone()).collect();
        Summary {
            alert_type: self.alert_type.clone(),
            headline,
            lead,
            host,
            profile,
            operation,
            object,
            severity: self.severity,
            facts,
            explanation,
            suggestion,
            raw,
            key: self.idempotency_key(),
        }
    }
}

/// The suggested rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    /// The file to edit.
    pub file: Option<String>,
    /// The rule to add.
    pub rule: String,
    /// A command that checks the edited profile.
    pub check: Option<String>,
    /// A command that reloads it.
    pub reload: Option<String>,
}

/// Raw (unescaped) text for one alert; renderers escape every field.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The alert type.
    pub alert_type: String,
    /// `DENIED nginx open /etc/shadow`.
    pub headline: String,
    /// `New AppArmor incident` / `Still happening: …`.
    pub lead: String,
    /// Host.
    pub host: String,
    /// Profile.
    pub profile: Option<String>,
    /// Operation.
    pub operation: Option<String>,
    /// Object.
    pub object: Option<String>,
    /// Severity.
    pub severity: u8,
    /// Label → value.
    pub facts: Vec<(String, String)>,
    /// Explanation lines.
    pub explanation: Vec<String>,
    /// The suggested rule.
    pub suggestion: Option<Suggestion>,
    /// A few raw record lines.
    pub raw: Vec<String>,
    /// `id:seq`.
    pub key: String,
}

impl Summary {
    /// The explanation as one paragraph (lines joined by newlines), or a default.
    pub fn explanation_text(&self) -> Option<String> {
        (!self.explanation.is_empty()).then(|| self.explanation.join("\n"))
    }

    /// The suggestion as a code-block text (file comment, rule, check and reload commands).
    pub fn suggestion_text(&self) -> Option<String> {
        let s = self.suggestion.as_ref()?;
        let mut out = String::new();
        if let Some(f) = &s.file {
            out.push_str(&format!("# add to {f}\n"));
        }
        out.push_str(&s.rule);
        if let Some(c) = &s.check {
            out.push_str(&format!("\n# check: {c}"));
        }
        if let Some(r) = &s.reload {
            out.push_str(&format!("\n# reload: {r}"));
        }
        Some(out)
    }
}

#[cfg(test)]
impl Summary {
    /// A summary with `v` in every text field: ten facts, three explanation lines and a
    /// suggestion (for the renderers' limit tests).
    pub(crate) fn filled_with(v: &str) -> Summary {
        Summary {
            alert_type: "incident.opened".into(),
            headline: format!("DENIED {v} open {v}"),
            lead: format!("New AppArmor incident {v}"),
            host: v.into(),
            profile: Some(v.into()),
            operation: Some(v.into()),
            object: Some(v.into()),
            severity: 9,
            facts: (0..10)
                .map(|i| (format!("{v}{i}"), v.to_string()))
                .collect(),
            explanation: vec![v.into(), format!("needed {v}"), format!("closest {v}")],
            suggestion: Some(Suggestion {
                file: Some(v.into()),
                rule: format!("{v} r,"),
                check: Some(v.into()),
                reload: Some(v.into()),
            }),
            raw: vec![v.into()],
            key: format!("{v}:1"),
        }
    }

    /// Hostile and long values: each `pattern` repeated to each length.
    pub(crate) fn hostile_values() -> Vec<String> {
        let patterns = [
            "A",
            "\u{202E}",
            "&",
            "<",
            "`",
            "\u{1b}",
            "@",
            "*",
            "\\",
            "\u{1F600}",
            "\u{9B}",
            "é",
        ];
        let mut out = Vec::new();
        for p in patterns {
            for n in [1, 141, 150, 201, 300, 1100, 5000] {
                out.push(p.repeat(n));
            }
        }
        out.push("<!channel> @everyone **x** [a](http://e) &amp; `code`".repeat(40));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `suppressed` alert holding more incidents than its facts list says how many are not
    /// listed; the facts stopped at 20 without a word.
    #[test]
    fn held_back_facts_say_how_many_are_not_listed() {
        let incidents: Vec<Value> = (0..25)
            .map(|i| serde_json::json!({"id": format!("i{i}"), "count": 2, "total": 3}))
            .collect();
        let v = AlertView::from_json(&serde_json::json!({
            "schema": 1, "type": "suppressed", "id": "s", "seq": 1, "host": "h",
            "incidents": incidents,
        }))
        .unwrap();
        let summary = v.summary();
        let held: Vec<&String> = summary
            .facts
            .iter()
            .filter(|(k, _)| k == "Held back")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(held.len(), 21, "{held:?}");
        assert_eq!(held[0], "i0: 2 (3 total)");
        assert_eq!(held[20], "… and 5 more incidents");
    }
}

//! Noise rules: known-benign families of events, matched, counted and marked (never hidden).
//!
//! The rules ship in `data/noise.toml` ([`BUNDLED_NOISE`]) and can be extended by drop-in files.
//! The loader takes texts (the integrator reads the directories): later texts add rules, replace
//! a rule of the same name, or switch one off with `enabled = false`.
//!
//! ```toml
//! [[rule]]
//! name = "ubuntu-userns-capable"            # required, unique
//! description = "…"
//! profile = "unprivileged_userns"           # globs (AppArmor syntax), all optional
//! kind = "denied"                           # denied | allowed | audit | killed | status | …
//! class = "cap"
//! operation = "capable"                     # the raw operation or its family
//! object = "*"                              # the normalised object (see correlate::key)
//! permission = "*"
//! fields = { info = "Userns create*" }      # any record field (globs)
//! max_severity = 2                          # optional: cap the severity of matching events
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use super::glob::Glob;
use crate::alert::IncidentKey;
use crate::event::Event;

/// The rules shipped with the package.
pub const BUNDLED_NOISE: &str = include_str!("../../data/noise.toml");

/// A noise file could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    /// Not valid TOML or an unknown key; the message carries the key path.
    #[error("{origin}: {message}")]
    Toml {
        /// The file (or other origin) given to the loader.
        origin: String,
        /// The parser's message, with the key path and position.
        message: String,
    },
    /// A rule is invalid.
    #[error("{origin}: rule[{index}] ({name}).{key}: {message}")]
    Rule {
        /// The file.
        origin: String,
        /// 0-based position of the rule in that file.
        index: usize,
        /// The rule's name.
        name: String,
        /// The key that is wrong.
        key: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<RawRule>,
}

/// One rule as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    /// Unique name; appears in alerts as `noise`.
    name: String,
    /// Why these events are benign.
    #[serde(default)]
    description: Option<String>,
    /// false switches off a rule of the same name from an earlier file.
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    class: Option<String>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    permission: Option<String>,
    #[serde(default)]
    fields: BTreeMap<String, String>,
    /// Cap on the severity of matching events.
    #[serde(default)]
    max_severity: Option<u8>,
}

fn yes() -> bool {
    true
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct NoiseRule {
    /// The rule's name.
    pub name: String,
    /// Why these events are benign.
    pub description: Option<String>,
    /// Cap on the severity of matching events.
    pub max_severity: Option<u8>,
    profile: Option<Glob>,
    kind: Option<Glob>,
    class: Option<Glob>,
    operation: Option<Glob>,
    object: Option<Glob>,
    permission: Option<Glob>,
    fields: Vec<(String, Glob)>,
}

impl NoiseRule {
    /// True when the event (with its key) matches every condition of the rule.
    pub fn matches(&self, key: &IncidentKey, event: &Event) -> bool {
        let m = |g: &Option<Glob>, v: &str| g.as_ref().is_none_or(|g| g.matches(v));
        m(&self.profile, &key.profile)
            && m(&self.kind, &key.kind)
            && m(&self.class, &key.class)
            && (m(&self.operation, &key.operation)
                || m(&self.operation, event.operation().unwrap_or("")))
            && m(&self.object, &key.object)
            && m(&self.permission, &key.permission)
            && self
                .fields
                .iter()
                .all(|(k, g)| event.field(k).is_some_and(|v| g.matches(v)))
    }
}

/// The active noise rules, in order (the first match wins).
#[derive(Debug, Clone, Default)]
pub struct NoiseRules {
    rules: Vec<NoiseRule>,
}

impl NoiseRules {
    /// No rules.
    pub fn none() -> NoiseRules {
        NoiseRules::default()
    }

    /// The bundled rules only.
    pub fn bundled() -> Result<NoiseRules, NoiseError> {
        NoiseRules::from_texts(&[("data/noise.toml", BUNDLED_NOISE)])
    }

    /// Load texts in order, `(origin, text)`: typically the bundled file then the drop-ins sorted
    /// by file name.
    pub fn from_texts(texts: &[(&str, &str)]) -> Result<NoiseRules, NoiseError> {
        let mut rules: Vec<NoiseRule> = Vec::new();
        for (origin, text) in texts {
            let file: RawFile = toml::from_str(text).map_err(|e| NoiseError::Toml {
                origin: (*origin).to_owned(),
                message: e.to_string(),
            })?;
            for (index, raw) in file.rule.into_iter().enumerate() {
                let name = raw.name.clone();
                rules.retain(|r| r.name != name);
                if raw.enabled {
                    rules.push(compile(origin, index, raw)?);
                }
            }
        }
        Ok(NoiseRules { rules })
    }

    /// The first rule that matches.
    pub fn find(&self, key: &IncidentKey, event: &Event) -> Option<&NoiseRule> {
        self.rules.iter().find(|r| r.matches(key, event))
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[NoiseRule] {
        &self.rules
    }
}

fn compile(origin: &str, index: usize, raw: RawRule) -> Result<NoiseRule, NoiseError> {
    let err = |key: &str, message: String| NoiseError::Rule {
        origin: origin.to_owned(),
        index,
        name: raw.name.clone(),
        key: key.to_owned(),
        message,
    };
    if raw.name.trim().is_empty() {
        return Err(err("name", "must not be empty".into()));
    }
    let glob = |key: &str, v: &Option<String>| -> Result<Option<Glob>, NoiseError> {
        v.as_deref()
            .map(Glob::new)
            .transpose()
            .map_err(|e| err(key, e.to_string()))
    };
    let mut fields = Vec::new();
    for (k, v) in &raw.fields {
        fields.push((
            k.clone(),
            Glob::new(v).map_err(|e| err(&format!("fields.{k}"), e.to_string()))?,
        ));
    }
    if let Some(s) = raw.max_severity
        && s > 10
    {
        return Err(err("max_severity", format!("{s} is above 10")));
    }
    let rule = NoiseRule {
        name: raw.name.clone(),
        description: raw.description.clone(),
        max_severity: raw.max_severity,
        profile: glob("profile", &raw.profile)?,
        kind: glob("kind", &raw.kind)?,
        class: glob("class", &raw.class)?,
        operation: glob("operation", &raw.operation)?,
        object: glob("object", &raw.object)?,
        permission: glob("permission", &raw.permission)?,
        fields,
    };
    let unconditional = rule.profile.is_none()
        && rule.kind.is_none()
        && rule.class.is_none()
        && rule.operation.is_none()
        && rule.object.is_none()
        && rule.permission.is_none()
        && rule.fields.is_empty();
    if unconditional {
        return Err(err("", "a rule needs at least one condition".into()));
    }
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_rules_load() {
        let rules = NoiseRules::bundled().unwrap();
        assert!(rules.rules().len() >= 3);
        assert!(
            rules
                .rules()
                .iter()
                .any(|r| r.name == "ubuntu-userns-capable")
        );
    }

    #[test]
    fn dropin_replaces_and_disables() {
        let base =
            "[[rule]]\nname = \"a\"\nprofile = \"x\"\n[[rule]]\nname = \"b\"\nprofile = \"y\"\n";
        let dropin = "[[rule]]\nname = \"a\"\nprofile = \"z\"\nmax_severity = 1\n[[rule]]\nname = \"b\"\nenabled = false\n";
        let rules = NoiseRules::from_texts(&[("base", base), ("dropin", dropin)]).unwrap();
        assert_eq!(rules.rules().len(), 1);
        assert_eq!(rules.rules()[0].name, "a");
        assert_eq!(rules.rules()[0].max_severity, Some(1));
    }

    #[test]
    fn errors_carry_key_path() {
        let e = NoiseRules::from_texts(&[("f.toml", "[[rule]]\nname = \"a\"\nprofle = \"x\"\n")])
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("f.toml:"), "{msg}");
        assert!(msg.contains("profle"), "{msg}");
        let e = NoiseRules::from_texts(&[("f.toml", "[[rule]]\nname = \"a\"\nobject = \"{x\"\n")])
            .unwrap_err();
        assert!(e.to_string().contains("rule[0] (a).object"), "{e}");
        let e = NoiseRules::from_texts(&[(
            "f.toml",
            "[[rule]]\nname = \"a\"\nfields = { info = \"[x\" }\n",
        )])
        .unwrap_err();
        assert!(e.to_string().contains("fields.info"), "{e}");
        let e = NoiseRules::from_texts(&[("f.toml", "[[rule]]\nname = \"a\"\n")]).unwrap_err();
        assert!(e.to_string().contains("at least one condition"), "{e}");
    }
}

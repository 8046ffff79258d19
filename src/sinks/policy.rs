//! Per-sink delivery policy: minimum severity, include/exclude globs on profile and operation,
//! and the delivery mode (`always`, `first`, `digest`, `never`).
//!
//! Pure: no I/O. Globs are shell-style ([`glob_match`]): profile names hold `/` (`/usr/sbin/*`,
//! `nginx//null-*`), and `*` crossing it is what one means there.

use serde::Deserialize;

use super::view::AlertView;

/// How a sink is sent alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every alert (opened, updates, closed).
    #[default]
    Always,
    /// Only the first alert of each incident (plus loss/suppressed/status alerts).
    First,
    /// Alerts are batched and sent once per `digest_interval_secs`.
    Digest,
    /// Nothing is sent (the sink stays configured, e.g. for `test-alert`).
    Never,
}

/// What to do with alerts marked as noise (by a noise rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseAction {
    /// Deliver them (with their `noise` mark).
    #[default]
    Deliver,
    /// Do not deliver them to this sink.
    Mute,
}

/// The policy keys of a `[sinks.NAME]` table (or of its `[sinks.NAME.policy]` sub-table).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkPolicy {
    /// Alerts below this severity (0–10) are not sent.
    #[serde(default)]
    pub min_severity: u8,
    /// When non-empty, only alerts whose profile matches one of these globs.
    #[serde(default)]
    pub include_profiles: Vec<String>,
    /// Alerts whose profile matches one of these globs are not sent.
    #[serde(default)]
    pub exclude_profiles: Vec<String>,
    /// When non-empty, only alerts whose operation matches one of these globs.
    #[serde(default)]
    pub include_operations: Vec<String>,
    /// Alerts whose operation matches one of these globs are not sent.
    #[serde(default)]
    pub exclude_operations: Vec<String>,
    /// `always` (default), `first`, `digest` or `never`.
    #[serde(default)]
    pub mode: Mode,
    /// The digest interval for `mode = "digest"` (default 3600).
    #[serde(default = "default_digest_interval")]
    pub digest_interval_secs: u64,
    /// `deliver` (default) or `mute`: alerts marked as noise.
    #[serde(default)]
    pub noise: NoiseAction,
}

fn default_digest_interval() -> u64 {
    3600
}

impl Default for SinkPolicy {
    fn default() -> Self {
        SinkPolicy {
            min_severity: 0,
            include_profiles: Vec::new(),
            exclude_profiles: Vec::new(),
            include_operations: Vec::new(),
            exclude_operations: Vec::new(),
            mode: Mode::Always,
            digest_interval_secs: default_digest_interval(),
            noise: NoiseAction::Deliver,
        }
    }
}

/// The policy keys, for splitting a sink table.
pub const POLICY_KEYS: &[&str] = &[
    "min_severity",
    "include_profiles",
    "exclude_profiles",
    "include_operations",
    "exclude_operations",
    "mode",
    "digest_interval_secs",
    "noise",
];

impl SinkPolicy {
    /// Whether this sink is sent `alert`: `loss` and `suppressed` alerts always pass (unless
    /// `mode = "never"`); `first` drops `incident.update`/`incident.closed`; then `min_severity`,
    /// `noise = "mute"`, and the profile and operation globs (operations match the family or the
    /// raw operation).
    pub fn accepts(&self, alert: &AlertView) -> bool {
        self.accepts_with(alert, false)
    }

    /// Like [`SinkPolicy::accepts`]; with `resolves` (Alertmanager) `mode = "first"` still lets
    /// `incident.closed` through, so an incident that was announced is also resolved.
    pub fn accepts_with(&self, alert: &AlertView, resolves: bool) -> bool {
        if self.mode == Mode::Never {
            return false;
        }
        match alert.alert_type.as_str() {
            "loss" | "suppressed" => return true,
            "incident.update" if self.mode == Mode::First => return false,
            "incident.closed" if self.mode == Mode::First && !resolves => return false,
            _ => {}
        }
        if alert.severity < self.min_severity {
            return false;
        }
        if alert.noise.is_some() && self.noise == NoiseAction::Mute {
            return false;
        }
        let profile = alert.profile_name().unwrap_or_default();
        let family = alert.operation().unwrap_or_default();
        let raw_op = alert.event_field("operation").unwrap_or_default();
        let op_matches = |g: &String| glob_match(g, &family) || glob_match(g, &raw_op);
        passes(&self.include_profiles, &self.exclude_profiles, &profile)
            && (self.include_operations.is_empty()
                || self.include_operations.iter().any(op_matches))
            && !self.exclude_operations.iter().any(op_matches)
    }
}

fn passes(include: &[String], exclude: &[String], value: &str) -> bool {
    (include.is_empty() || include.iter().any(|g| glob_match(g, value)))
        && !exclude.iter().any(|g| glob_match(g, value))
}

/// Shell-style glob: `*` any run of characters (including `/`), `?` one character, `\x` a literal
/// `x`. Everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '\\' if pi + 1 < p.len() && p[pi + 1] == t[ti] => {
                    pi += 2;
                    ti += 1;
                    continue;
                }
                c if c != '\\' && c == t[ti] => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("nginx*", "nginx//null-x"));
        assert!(glob_match("/usr/bin/*", "/usr/bin/a/b"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*snap.*.hook", "snap.lxd.hook"));
        assert!(!glob_match("snap.*", "xsnap.a"));
        assert!(glob_match("a\\*", "a*"));
        assert!(!glob_match("a\\*", "ab"));
    }

    fn view(t: &str, profile: &str, op: &str, sev: u8) -> AlertView {
        AlertView::from_json(&serde_json::json!({
            "type": t, "id": "i", "seq": 1, "severity": sev, "host": "h",
            "key": {"profile": profile, "operation": op, "kind": "denied", "class": "file",
                    "object": "/x", "permission": "r"}
        }))
        .unwrap()
    }

    #[test]
    fn policy_filters() {
        let p = SinkPolicy {
            min_severity: 3,
            include_profiles: vec!["nginx*".into()],
            exclude_operations: vec!["exec".into()],
            mode: Mode::First,
            ..SinkPolicy::default()
        };
        assert!(p.accepts(&view("incident.opened", "nginx", "open", 5)));
        assert!(!p.accepts(&view("incident.update", "nginx", "open", 5)));
        assert!(!p.accepts(&view("incident.closed", "nginx", "open", 5)));
        assert!(p.accepts_with(&view("incident.closed", "nginx", "open", 5), true));
        assert!(!p.accepts(&view("incident.opened", "cups", "open", 5)));
        assert!(!p.accepts(&view("incident.opened", "nginx", "exec", 5)));
        assert!(!p.accepts(&view("incident.opened", "nginx", "open", 2)));
        assert!(
            p.accepts(&view("loss", "", "", 0)),
            "loss ignores min_severity"
        );
        assert!(!p.accepts(&view("status", "cups", "", 5)));
        let never = SinkPolicy {
            mode: Mode::Never,
            ..SinkPolicy::default()
        };
        assert!(!never.accepts(&view("loss", "", "", 9)));
    }
}

//! Policy changes seen in the log (`profile_load`/`profile_replace` STATUS records), so an
//! explanation can say "the denials began right after this profile was replaced" — the usual
//! sign of a package upgrade that changed the profile. Pure: times come from the records.

use std::collections::HashMap;

use crate::event::{Event, Kind};

/// How long after a replace a new denial still counts as "right after" it, by default.
pub const DEFAULT_WINDOW_SECS: u64 = 300;

/// The latest load/replace time per profile name.
#[derive(Debug, Default, Clone)]
pub struct PolicyChanges {
    last: HashMap<String, u64>,
}

impl PolicyChanges {
    /// Record a STATUS `profile_load`/`profile_replace` event (others are ignored).
    pub fn observe(&mut self, event: &Event) {
        if event.kind != Kind::Status {
            return;
        }
        if !matches!(event.operation(), Some("profile_load" | "profile_replace")) {
            return;
        }
        let (Some(name), Some(stamp)) = (event.name(), event.audit.as_ref()) else {
            return;
        };
        if stamp.epoch == 0 {
            return;
        }
        let top = top_name(name);
        let entry = self.last.entry(top.to_string()).or_insert(0);
        *entry = (*entry).max(stamp.epoch);
    }

    /// True when `label`'s profile was loaded or replaced at most `window_secs` before
    /// `at_epoch` (and not after it).
    pub fn replaced_recently(&self, label: &str, at_epoch: u64, window_secs: u64) -> bool {
        self.last
            .get(top_name(label))
            .is_some_and(|&t| t <= at_epoch && at_epoch - t <= window_secs)
    }

    /// For an event: `Some(true/false)` when it has a time, None otherwise.
    pub fn after_replace(&self, event: &Event, window_secs: u64) -> Option<bool> {
        let at = event.audit.as_ref().filter(|s| s.epoch != 0)?.epoch;
        Some(self.replaced_recently(event.profile()?, at, window_secs))
    }
}

fn top_name(label: &str) -> &str {
    label.split("//").next().unwrap_or(label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Source;
    use crate::parse::{Output, parse_text};

    fn ev(line: &str) -> Event {
        match parse_text(line, &Source::Text).into_iter().next() {
            Some(Output::Event(e)) => *e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn denial_right_after_a_replace() {
        let mut pc = PolicyChanges::default();
        pc.observe(&ev(r#"audit: type=1400 audit(1795623513.927:4): apparmor="STATUS" operation="profile_replace" profile="unconfined" name="msmtp" pid=100 comm="apparmor_parser""#));
        let soon = ev(
            r#"audit: type=1400 audit(1795623520.000:5): apparmor="DENIED" operation="mknod" profile="msmtp//helpers" name="/x" requested_mask="c" denied_mask="c""#,
        );
        let later = ev(
            r#"audit: type=1400 audit(1795633520.000:6): apparmor="DENIED" operation="mknod" profile="msmtp" name="/x" requested_mask="c" denied_mask="c""#,
        );
        let other = ev(
            r#"audit: type=1400 audit(1795623520.000:7): apparmor="DENIED" operation="mknod" profile="ping" name="/x" requested_mask="c" denied_mask="c""#,
        );
        assert_eq!(pc.after_replace(&soon, DEFAULT_WINDOW_SECS), Some(true));
        assert_eq!(pc.after_replace(&later, DEFAULT_WINDOW_SECS), Some(false));
        assert_eq!(pc.after_replace(&other, DEFAULT_WINDOW_SECS), Some(false));
    }
}

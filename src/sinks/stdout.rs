//! The `stdout` sink's one-line text form: readable, one alert per line, every value with its
//! control characters made visible so a hostile path cannot rewrite the terminal.

use super::escape::plain;
use super::view::AlertView;

/// One line (no newline) for an alert.
pub fn text_line(v: &AlertView) -> String {
    let s = v.summary();
    let mut line = format!(
        "{} {} {}",
        plain(v.last_seen.as_deref().unwrap_or("-"), 40),
        plain(&s.host, 100),
        plain(&s.headline, 400)
    );
    if let Some(p) = v.permission() {
        line.push_str(&format!(" [{}]", plain(&p, 40)));
    }
    if let Some(p) = v.process() {
        line.push_str(&format!(" by {}", plain(&p, 200)));
    }
    if s.alert_type.starts_with("incident.") {
        line.push_str(&format!(
            " ({}: {} new, {} total)",
            s.alert_type, v.count, v.total
        ));
    } else {
        line.push_str(&format!(" ({})", plain(&s.alert_type, 40)));
    }
    if let Some(sug) = &s.suggestion {
        line.push_str(&format!(" suggest: {}", plain(&sug.rule, 200)));
    }
    line.push_str(&format!(" id={}", plain(&s.key, 200)));
    line
}

//! ntfy: JSON publishing (`POST` to the server root with `topic`, `title`, `message`, `priority`),
//! which keeps hostile text out of HTTP headers. Plain text, control characters made visible.

use serde_json::{Value, json};

use super::escape::plain;
use super::view::Summary;

/// Split `https://ntfy.example/topic` into the publish URL (server root) and the topic.
pub fn split_topic(url: &str) -> Option<(String, String)> {
    let mut u = reqwest::Url::parse(url).ok()?;
    let topic = u.path_segments()?.rfind(|s| !s.is_empty())?.to_string();
    let path = u.path().trim_end_matches('/').to_string();
    let base = path.strip_suffix(&topic)?.to_string();
    u.set_path(if base.is_empty() { "/" } else { &base });
    Some((u.to_string(), topic))
}

fn priority(severity: u8) -> u8 {
    match severity {
        8.. => 5,
        6..=7 => 4,
        4..=5 => 3,
        _ => 2,
    }
}

fn message(s: &Summary) -> String {
    let mut m = plain(&s.lead, 200);
    for (k, v) in s.facts.iter().take(12) {
        m.push_str(&format!("\n{}: {}", plain(k, 40), plain(v, 300)));
    }
    if let Some(x) = s.explanation_text() {
        for l in x.split('\n') {
            m.push('\n');
            m.push_str(&plain(l, 500));
        }
    }
    if let Some(sug) = s.suggestion_text() {
        m.push_str("\nSuggested rule:");
        for l in sug.split('\n') {
            m.push_str("\n  ");
            m.push_str(&plain(l, 500));
        }
    }
    // ntfy turns messages over 4096 bytes into attachments.
    super::escape::truncate(&m, 3000)
}

/// The JSON body for one alert.
pub fn payload(topic: &str, s: &Summary) -> Value {
    json!({
        "topic": topic,
        "title": plain(&s.headline, 200),
        "message": message(s),
        "priority": priority(s.severity),
        "tags": ["shield"],
    })
}

/// One notification listing a batch (digest mode).
pub fn digest_payload(topic: &str, items: &[Summary]) -> Value {
    let lines: Vec<String> = items
        .iter()
        .take(30)
        .map(|s| format!("- {}", plain(&s.headline, 150)))
        .collect();
    let max = items.iter().map(|s| s.severity).max().unwrap_or(0);
    json!({
        "topic": topic,
        "title": format!("armorwatch digest: {} alerts", items.len()),
        "message": lines.join("\n"),
        "priority": priority(max),
        "tags": ["shield"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_split() {
        assert_eq!(
            split_topic("https://ntfy.sh/alerts").unwrap(),
            ("https://ntfy.sh/".to_string(), "alerts".to_string())
        );
        assert_eq!(
            split_topic("http://127.0.0.1:8080/ntfy/alerts/").unwrap(),
            (
                "http://127.0.0.1:8080/ntfy/".to_string(),
                "alerts".to_string()
            )
        );
        assert!(split_topic("https://ntfy.sh/").is_none());
    }
}

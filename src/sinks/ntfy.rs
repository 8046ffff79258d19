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
    fit_bytes(&m, MAX_MESSAGE_BYTES)
}

/// ntfy's `message-size-limit`: a longer message becomes an attachment (or, with attachments
/// off, is refused). Bytes of UTF-8, not characters.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `m` cut at a character boundary so that it and the truncation marker fit in `max` bytes.
fn fit_bytes(m: &str, max: usize) -> String {
    if m.len() <= max {
        return m.to_string();
    }
    let marker = |left: usize| format!("{} {left} bytes]", super::escape::TRUNCATED_MARKER);
    let mut keep = max.saturating_sub(marker(m.len()).len());
    while !m.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{}", &m[..keep], marker(m.len() - keep))
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
    // As many headlines as fit, then how many were left out.
    let lines = items
        .iter()
        .take(30)
        .map(|s| format!("- {}", plain(&s.headline, 150)));
    let message = super::escape::listing_by(
        String::new(),
        lines,
        items.len(),
        MAX_MESSAGE_BYTES,
        str::len,
    );
    let max = items.iter().map(|s| s.severity).max().unwrap_or(0);
    json!({
        "topic": topic,
        "title": format!("armorwatch digest: {} alerts", items.len()),
        "message": message.trim_start_matches('\n'),
        "priority": priority(max),
        "tags": ["shield"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the message was cut at 3000 characters, up to 12 000 bytes, and digests not
    /// at all; ntfy makes anything over 4096 bytes an attachment.
    #[test]
    fn messages_fit_ntfys_limit_in_bytes() {
        for v in Summary::hostile_values() {
            let s = Summary::filled_with(&v);
            let m = payload("t", &s)["message"].as_str().unwrap().to_string();
            assert!(m.len() <= MAX_MESSAGE_BYTES, "{} bytes: {:.40}", m.len(), v);
            let many = vec![s; 40];
            let d = digest_payload("t", &many)["message"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(d.len() <= MAX_MESSAGE_BYTES, "digest {} bytes", d.len());
            assert!(d.ends_with(" more"), "{d:.80}");
        }
        let few = vec![Summary::filled_with("x"); 3];
        let d = digest_payload("t", &few)["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(d.lines().count(), 3, "{d}");
    }

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

//! Microsoft Teams through a Workflows webhook: an Adaptive Card (headline, fact set, explanation,
//! suggested rule in monospace). Markdown and tags in values are escaped.

use serde_json::{Value, json};

use super::escape::{plain, teams};
use super::view::Summary;

fn card(body: Vec<Value>) -> Value {
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": body,
            }
        }]
    })
}

/// What a Teams webhook (Workflows or the older connectors) accepts: "the message size limit is
/// 28 KB" for the whole request. Kept under with room for the HTTP framing.
pub const MAX_PAYLOAD_BYTES: usize = 27_000;

/// `build(scale)` with the per-value caps divided by 1, 2, 4, … until the JSON fits in
/// [`MAX_PAYLOAD_BYTES`]: values full of `&`, `<` or 4-byte characters weigh several bytes per
/// character after escaping, so caps in characters alone do not bound the size.
fn fitted(build: impl Fn(usize) -> Value) -> Value {
    let mut divisor = 1;
    loop {
        let v = build(divisor);
        let size = serde_json::to_vec(&v).map_or(0, |b| b.len());
        if size <= MAX_PAYLOAD_BYTES || divisor >= 64 {
            return v;
        }
        divisor *= 2;
    }
}

/// The message for one alert.
pub fn payload(s: &Summary) -> Value {
    fitted(|d| payload_scaled(s, d))
}

fn payload_scaled(s: &Summary, d: usize) -> Value {
    let cap = |n: usize| (n / d).max(8);
    let mut body = vec![
        json!({"type": "TextBlock", "text": teams(&s.headline, cap(200)), "weight": "Bolder", "size": "Medium", "wrap": true}),
        json!({"type": "TextBlock", "text": teams(&s.lead, cap(200)), "wrap": true}),
        json!({"type": "FactSet", "facts": s.facts.iter().take(20).map(|(k, v)| json!({"title": teams(k, cap(60)), "value": teams(v, cap(400))})).collect::<Vec<_>>()}),
    ];
    if let Some(x) = s.explanation_text() {
        body.push(json!({"type": "TextBlock", "text": x.split('\n').map(|l| teams(l, cap(600))).collect::<Vec<_>>().join("\n\n"), "wrap": true}));
    }
    if let Some(sug) = s.suggestion_text() {
        // Monospace blocks render markdown too, so escape the same way.
        body.push(json!({"type": "TextBlock", "text": "Suggested rule", "weight": "Bolder"}));
        body.push(json!({"type": "TextBlock", "text": sug.split('\n').map(|l| teams(l, cap(600))).collect::<Vec<_>>().join("\n\n"), "fontType": "Monospace", "wrap": true}));
    }
    body.push(json!({"type": "TextBlock", "text": format!("incident {}", plain(&s.key, 200).replace(['<', '>'], "")), "isSubtle": true, "size": "Small"}));
    card(body)
}

/// One card listing a batch of alerts (digest mode).
pub fn digest_payload(items: &[Summary]) -> Value {
    fitted(|d| digest_scaled(items, d))
}

fn digest_scaled(items: &[Summary], d: usize) -> Value {
    let listed = 30;
    let mut body = vec![
        json!({"type": "TextBlock", "text": format!("armorwatch digest: {} alerts", items.len()), "weight": "Bolder", "wrap": true}),
    ];
    for s in items.iter().take(listed) {
        body.push(json!({"type": "TextBlock", "text": format!("- {}", teams(&s.headline, (150 / d).max(8))), "wrap": true}));
    }
    if items.len() > listed {
        body.push(
            json!({"type": "TextBlock", "text": format!("… and {} more", items.len() - listed)}),
        );
    }
    card(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: 20 facts of 400 `&` (2 000 bytes each once escaped) made a 40 KB card, which
    /// Teams refuses (and a refused alert is dropped). Every payload now fits.
    #[test]
    fn every_payload_fits_teams_size_limit() {
        for v in Summary::hostile_values() {
            let s = Summary::filled_with(&v);
            let size = |p: &Value| serde_json::to_vec(p).unwrap().len();
            let p = payload(&s);
            assert!(
                size(&p) <= MAX_PAYLOAD_BYTES,
                "{} bytes: {:.40}",
                size(&p),
                v
            );
            let many = vec![s; 40];
            let d = digest_payload(&many);
            assert!(
                size(&d) <= MAX_PAYLOAD_BYTES,
                "digest {} bytes: {:.40}",
                size(&d),
                v
            );
        }
        // Ordinary alerts keep their full caps.
        let s = Summary::filled_with("ordinary");
        assert_eq!(payload(&s), payload_scaled(&s, 1));
    }
}

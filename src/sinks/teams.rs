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

/// The message for one alert.
pub fn payload(s: &Summary) -> Value {
    let mut body = vec![
        json!({"type": "TextBlock", "text": teams(&s.headline, 200), "weight": "Bolder", "size": "Medium", "wrap": true}),
        json!({"type": "TextBlock", "text": teams(&s.lead, 200), "wrap": true}),
        json!({"type": "FactSet", "facts": s.facts.iter().take(20).map(|(k, v)| json!({"title": teams(k, 60), "value": teams(v, 400)})).collect::<Vec<_>>()}),
    ];
    if let Some(x) = s.explanation_text() {
        body.push(json!({"type": "TextBlock", "text": x.split('\n').map(|l| teams(l, 600)).collect::<Vec<_>>().join("\n\n"), "wrap": true}));
    }
    if let Some(sug) = s.suggestion_text() {
        // Monospace blocks render markdown too, so escape the same way.
        body.push(json!({"type": "TextBlock", "text": "Suggested rule", "weight": "Bolder"}));
        body.push(json!({"type": "TextBlock", "text": sug.split('\n').map(|l| teams(l, 600)).collect::<Vec<_>>().join("\n\n"), "fontType": "Monospace", "wrap": true}));
    }
    body.push(json!({"type": "TextBlock", "text": format!("incident {}", plain(&s.key, 200).replace(['<', '>'], "")), "isSubtle": true, "size": "Small"}));
    card(body)
}

/// One card listing a batch of alerts (digest mode).
pub fn digest_payload(items: &[Summary]) -> Value {
    let mut body = vec![
        json!({"type": "TextBlock", "text": format!("armorwatch digest: {} alerts", items.len()), "weight": "Bolder", "wrap": true}),
    ];
    for s in items.iter().take(30) {
        body.push(json!({"type": "TextBlock", "text": format!("- {}", teams(&s.headline, 150)), "wrap": true}));
    }
    if items.len() > 30 {
        body.push(json!({"type": "TextBlock", "text": format!("… and {} more", items.len() - 30)}));
    }
    card(body)
}

//! Discord webhook: one embed per alert; markdown escaped, mentions disabled (`allowed_mentions`).

use serde_json::{Value, json};

use super::escape::{code_block, discord};
use super::view::Summary;

fn colour(severity: u8) -> u32 {
    match severity {
        8.. => 0xC0392B,
        5..=7 => 0xE67E22,
        _ => 0x7F8C8D,
    }
}

/// The webhook body for one alert.
pub fn payload(s: &Summary) -> Value {
    let mut description = format!("**{}**", discord(&s.lead, 200));
    if let Some(x) = s.explanation_text() {
        for l in x.split('\n') {
            description.push('\n');
            description.push_str(&discord(l, 600));
        }
    }
    if let Some(sug) = s.suggestion_text() {
        description.push_str(&format!(
            "\n**Suggested rule**\n```\n{}\n```",
            // Mentions do not ping inside code blocks, but break them anyway (defence in depth).
            code_block(&sug, 1500).replace('@', "@\u{200B}")
        ));
    }
    let fields: Vec<Value> = s
        .facts
        .iter()
        .take(20)
        .map(|(k, v)| json!({"name": discord(k, 60), "value": discord(v, 400), "inline": true}))
        .collect();
    json!({
        "username": "armorwatch",
        "allowed_mentions": {"parse": []},
        "embeds": [{
            "title": discord(&s.headline, 200),
            // Discord rejects descriptions over 4096 characters.
            "description": super::escape::truncate(&description, 3900),
            "color": colour(s.severity),
            "fields": fields,
            "footer": {"text": format!("incident {}", super::escape::plain(&s.key, 200))},
        }],
    })
}

/// One message listing a batch of alerts (digest mode).
pub fn digest_payload(items: &[Summary]) -> Value {
    let mut lines: Vec<String> = items
        .iter()
        .take(30)
        .map(|s| format!("• {}", discord(&s.headline, 100)))
        .collect();
    if items.len() > 30 {
        lines.push(format!("… and {} more", items.len() - 30));
    }
    json!({
        "username": "armorwatch",
        "allowed_mentions": {"parse": []},
        "content": format!("**armorwatch digest: {} alerts**\n{}", items.len(), lines.join("\n")),
    })
}

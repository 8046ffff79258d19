//! Slack incoming webhook: a Block Kit message (headline, facts, explanation, suggested rule in a
//! code block). Every value is escaped for mrkdwn, so `<!channel>` in a path pings nobody.

use serde_json::{Value, json};

use super::escape::{self, slack_code, slack_code_block, slack_mrkdwn};
use super::view::Summary;

/// The Block Kit message for one alert.
pub fn payload(s: &Summary) -> Value {
    // plain_text is not parsed for mentions, but clients differ; angle brackets become look-alikes
    // here (the exact values follow in code spans).
    let header = escape::plain(&s.headline, 140)
        .replace('<', "‹")
        .replace('>', "›");
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": false}}),
        json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("*{}*", slack_mrkdwn(&s.lead, 200))}}),
    ];
    let fields: Vec<Value> = s
        .facts
        .iter()
        .take(10)
        .map(|(k, v)| {
            json!({"type": "mrkdwn", "text": format!("*{}*\n{}", slack_mrkdwn(k, 40), slack_code(v, 300))})
        })
        .collect();
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    if let Some(x) = s.explanation_text() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": escape::truncate(&format!("*Why*\n{}", x.split('\n').map(|l| slack_mrkdwn(l, 600)).collect::<Vec<_>>().join("\n")), 2900)}}));
    }
    if let Some(sug) = s.suggestion_text() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("*Suggested rule*\n```{}```", slack_code_block(&sug, 2000))}}));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
        "text": format!("armorwatch · incident {}", slack_code(&s.key, 200))}]}));
    json!({
        "text": slack_mrkdwn(&format!("{}: {}", s.lead, s.headline), 300),
        "blocks": blocks,
        "unfurl_links": false,
        "unfurl_media": false,
    })
}

/// One message listing a batch of alerts (digest mode).
pub fn digest_payload(items: &[Summary]) -> Value {
    let mut lines: Vec<String> = items
        .iter()
        .take(40)
        .map(|s| {
            format!(
                "• {} — {}",
                slack_mrkdwn(&s.headline, 200),
                slack_code(&s.key, 100)
            )
        })
        .collect();
    if items.len() > 40 {
        lines.push(format!("… and {} more", items.len() - 40));
    }
    let text = format!(
        "*armorwatch digest: {} alerts*\n{}",
        items.len(),
        lines.join("\n")
    );
    json!({
        "text": format!("armorwatch digest: {} alerts", items.len()),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": escape::truncate(&text, 2900)}}],
        "unfurl_links": false,
    })
}

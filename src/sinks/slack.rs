//! Slack incoming webhook: a Block Kit message (headline, facts, explanation, suggested rule in a
//! code block). Every value is escaped for mrkdwn, so `<!channel>` in a path pings nobody.
//!
//! Slack rejects the whole message (400 `invalid_blocks`) when one text is over its block's
//! limit, so every text is fitted to that limit *after* escaping, truncation marker included
//! ([`escape::fit`]): a header's plain_text 150 characters, a section's text 3000, each of at
//! most 10 fields 2000, a context element 3000.

use serde_json::{Value, json};

use super::escape::{self, fit, slack_code, slack_code_block, slack_mrkdwn, units};
use super::view::Summary;

/// Slack's limit for a header block's text.
const HEADER_MAX: usize = 150;
/// Slack's limit for a section's (or a context element's) text.
const SECTION_MAX: usize = 3000;
/// Slack's limit for each field of a section.
const FIELD_MAX: usize = 2000;

/// The Block Kit message for one alert.
pub fn payload(s: &Summary) -> Value {
    // plain_text is not parsed for mentions, but clients differ; angle brackets become look-alikes
    // here (the exact values follow in code spans).
    let header = fit(&s.headline, 140, HEADER_MAX, |h, n| {
        escape::plain(h, n).replace('<', "‹").replace('>', "›")
    });
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": false}}),
        json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("*{}*", fit(&s.lead, 200, SECTION_MAX - 2, slack_mrkdwn))}}),
    ];
    let fields: Vec<Value> = s
        .facts
        .iter()
        .take(10)
        .map(|(k, v)| {
            let name = format!("*{}*\n", fit(k, 40, 200, slack_mrkdwn));
            let value = fit(v, 300, FIELD_MAX - units(&name), slack_code);
            json!({"type": "mrkdwn", "text": name + &value})
        })
        .collect();
    if !fields.is_empty() {
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    if let Some(x) = s.explanation_text() {
        let lines: Vec<String> = x.split('\n').map(|l| slack_mrkdwn(l, 600)).collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": escape::cap(&format!("*Why*\n{}", lines.join("\n")), SECTION_MAX)}}));
    }
    if let Some(sug) = s.suggestion_text() {
        const HEAD: &str = "*Suggested rule*\n```";
        let code = fit(&sug, 2000, SECTION_MAX - units(HEAD) - 3, slack_code_block);
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": format!("{HEAD}{code}```")}}));
    }
    const FOOT: &str = "armorwatch · incident ";
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
        "text": format!("{FOOT}{}", fit(&s.key, 200, SECTION_MAX - units(FOOT), slack_code))}]}));
    json!({
        "text": slack_mrkdwn(&format!("{}: {}", s.lead, s.headline), 300),
        "blocks": blocks,
        "unfurl_links": false,
        "unfurl_media": false,
    })
}

/// One message listing a batch of alerts (digest mode): as many as fit in one section (at most
/// 40), then how many were left out.
pub fn digest_payload(items: &[Summary]) -> Value {
    let lines = items.iter().take(40).map(|s| {
        format!(
            "• {} — {}",
            fit(&s.headline, 200, 600, slack_mrkdwn),
            fit(&s.key, 100, 300, slack_code)
        )
    });
    let head = format!("*armorwatch digest: {} alerts*", items.len());
    let text = escape::listing(head, lines, items.len(), SECTION_MAX);
    json!({
        "text": format!("armorwatch digest: {} alerts", items.len()),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        "unfurl_links": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::escape::units;

    /// Slack's Block Kit limits for what these payloads use: the header's plain_text 150
    /// characters, a section's text 3000, at most 10 fields of 2000 each, a context's elements
    /// at most 10 of 3000 each, at most 50 blocks.
    fn within_slack_limits(p: &Value) -> Result<(), String> {
        let text_len = |v: &Value| units(v["text"].as_str().unwrap_or_default());
        let blocks = p["blocks"].as_array().ok_or("no blocks")?;
        if blocks.len() > 50 {
            return Err(format!("{} blocks", blocks.len()));
        }
        for b in blocks {
            let (what, n, max) = match b["type"].as_str() {
                Some("header") => ("header", text_len(&b["text"]), 150),
                Some("section") => {
                    let fields = b["fields"].as_array().cloned().unwrap_or_default();
                    if fields.len() > 10 {
                        return Err(format!("{} fields", fields.len()));
                    }
                    for f in &fields {
                        if text_len(f) > 2000 {
                            return Err(format!("field of {}", text_len(f)));
                        }
                    }
                    ("section", text_len(&b["text"]), 3000)
                }
                Some("context") => {
                    let elements = b["elements"].as_array().ok_or("no elements")?;
                    let longest = elements.iter().map(text_len).max().unwrap_or(0);
                    if elements.len() > 10 {
                        return Err(format!("{} context elements", elements.len()));
                    }
                    ("context element", longest, 3000)
                }
                other => return Err(format!("unexpected block {other:?}")),
            };
            if n > max {
                return Err(format!("{what} text of {n} > {max}"));
            }
        }
        Ok(())
    }

    #[test]
    fn every_block_is_within_slacks_limits_after_escaping() {
        for v in Summary::hostile_values() {
            let s = Summary::filled_with(&v);
            let p = payload(&s);
            within_slack_limits(&p).unwrap_or_else(|e| panic!("{e}: {:.80}", v));
            let many = vec![s; 60];
            for n in [1, 25, 60] {
                within_slack_limits(&digest_payload(&many[..n]))
                    .unwrap_or_else(|e| panic!("digest of {n}: {e}: {:.80}", v));
            }
        }
    }

    #[test]
    fn a_long_headline_keeps_the_header_and_says_so() {
        let s = Summary::filled_with(&"A".repeat(150));
        let header = payload(&s)["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(units(&header) <= 150 && units(&header) > 140, "{header}");
        assert!(header.contains(escape::TRUNCATED_MARKER));
    }

    #[test]
    fn a_digest_too_long_for_one_section_says_how_many_are_left_out() {
        let items: Vec<Summary> = (0..40)
            .map(|i| Summary::filled_with(&format!("{i}{}", "\u{202E}".repeat(150))))
            .collect();
        let p = digest_payload(&items);
        within_slack_limits(&p).unwrap();
        let text = p["blocks"][0]["text"]["text"].as_str().unwrap();
        let listed = text.lines().filter(|l| l.starts_with('•')).count();
        assert!((1..40).contains(&listed), "{listed}");
        assert!(
            text.ends_with(&format!("… and {} more", 40 - listed)),
            "{text}"
        );
    }
}

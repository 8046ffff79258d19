//! Discord webhook: one embed per alert; markdown escaped, mentions disabled (`allowed_mentions`).
//!
//! Discord rejects the whole message (400) when a part is over its limit, so each is fitted
//! after escaping ([`escape::fit`]): title 256, description 4096, at most 25 fields (name 256,
//! value 1024), footer 2048, 6000 for all of an embed together, and a message's content 2000.

use serde_json::{Value, json};

use super::escape::{self, code_block, discord, fit, units};
use super::view::Summary;

/// Discord's limit for an embed's title (and a field's name).
const TITLE_MAX: usize = 256;
/// Discord's limit for an embed's description.
const DESCRIPTION_MAX: usize = 4096;
/// Discord's limit for a field's value.
const FIELD_VALUE_MAX: usize = 1024;
/// Discord's limit for all the text of one embed.
const EMBED_MAX: usize = 6000;
/// Discord's limit for a message's content.
const CONTENT_MAX: usize = 2000;
/// What the fields may take of [`EMBED_MAX`], so that the description keeps at least 2000.
const FIELDS_MAX: usize = 3000;

fn colour(severity: u8) -> u32 {
    match severity {
        8.. => 0xC0392B,
        5..=7 => 0xE67E22,
        _ => 0x7F8C8D,
    }
}

/// The description: the lead, the explanation's lines while they fit, and the suggested rule in
/// a code block that is always closed; at most `max_units` long.
fn description(s: &Summary, max_units: usize) -> String {
    let mut out = format!("**{}**", fit(&s.lead, 200, 600, discord));
    let suggestion = s.suggestion_text().map(|sug| {
        const HEAD: &str = "\n**Suggested rule**\n```\n";
        const TAIL: &str = "\n```";
        let room = max_units
            .saturating_sub(units(&out) + units(HEAD) + units(TAIL))
            .min(2000);
        // Mentions do not ping inside code blocks, but break them anyway (defence in depth).
        let code = fit(&sug, 1500, room, |t, n| {
            code_block(t, n).replace('@', "@\u{200B}")
        });
        format!("{HEAD}{code}{TAIL}")
    });
    let mut room = max_units.saturating_sub(units(&out) + suggestion.as_deref().map_or(0, units));
    if let Some(x) = s.explanation_text() {
        for l in x.split('\n') {
            // Below this a line would be little more than the truncation marker.
            if room < 40 {
                break;
            }
            let line = fit(l, 600, room - 1, discord);
            room -= 1 + units(&line);
            out.push('\n');
            out.push_str(&line);
        }
    }
    out.push_str(suggestion.as_deref().unwrap_or_default());
    escape::cap(&out, max_units)
}

/// The webhook body for one alert.
pub fn payload(s: &Summary) -> Value {
    let title = fit(&s.headline, 200, TITLE_MAX, discord);
    let footer = format!(
        "incident {}",
        fit(&s.key, 200, TITLE_MAX - 9, escape::plain)
    );
    let mut fields_units = 0;
    let mut fields = Vec::new();
    for (k, v) in s.facts.iter().take(20) {
        let name = fit(k, 60, TITLE_MAX, discord);
        let room = FIELDS_MAX.saturating_sub(fields_units + units(&name));
        // Discord rejects an empty value; below this one would be little more than the marker.
        if room < 40 || v.is_empty() || name.is_empty() {
            continue;
        }
        let value = fit(v, 400, room.min(FIELD_VALUE_MAX), discord);
        fields_units += units(&name) + units(&value);
        fields.push(json!({"name": name, "value": value, "inline": true}));
    }
    let description_max =
        DESCRIPTION_MAX.min(EMBED_MAX - units(&title) - units(&footer) - fields_units);
    json!({
        "username": "armorwatch",
        "allowed_mentions": {"parse": []},
        "embeds": [{
            "title": title,
            "description": description(s, description_max),
            "color": colour(s.severity),
            "fields": fields,
            "footer": {"text": footer},
        }],
    })
}

/// One message listing a batch of alerts (digest mode): as many as fit in a message's content
/// (at most 30), then how many were left out.
pub fn digest_payload(items: &[Summary]) -> Value {
    let lines = items
        .iter()
        .take(30)
        .map(|s| format!("• {}", fit(&s.headline, 100, 400, discord)));
    let head = format!("**armorwatch digest: {} alerts**", items.len());
    json!({
        "username": "armorwatch",
        "allowed_mentions": {"parse": []},
        "content": escape::listing(head, lines, items.len(), CONTENT_MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::escape::units;

    /// Discord's limits: content 2000; per embed title 256, description 4096, at most 25 fields
    /// (name 256, value 1024), footer 2048, and 6000 for all of these together.
    fn within_discord_limits(p: &Value) -> Result<(), String> {
        let len = |v: &Value| units(v.as_str().unwrap_or_default());
        let check = |what: &str, n: usize, max: usize| {
            if n > max {
                Err(format!("{what} of {n} > {max}"))
            } else {
                Ok(())
            }
        };
        check("content", len(&p["content"]), 2000)?;
        for e in p["embeds"].as_array().cloned().unwrap_or_default() {
            let fields = e["fields"].as_array().cloned().unwrap_or_default();
            check("fields", fields.len(), 25)?;
            let mut total = len(&e["title"]) + len(&e["description"]) + len(&e["footer"]["text"]);
            check("title", len(&e["title"]), 256)?;
            check("description", len(&e["description"]), 4096)?;
            check("footer", len(&e["footer"]["text"]), 2048)?;
            for f in &fields {
                check("field name", len(&f["name"]), 256)?;
                check("field value", len(&f["value"]), 1024)?;
                if len(&f["value"]) == 0 || len(&f["name"]) == 0 {
                    return Err("empty field".into());
                }
                total += len(&f["name"]) + len(&f["value"]);
            }
            check("embed total", total, 6000)?;
        }
        Ok(())
    }

    #[test]
    fn every_part_is_within_discords_limits_after_escaping() {
        for v in Summary::hostile_values() {
            let s = Summary::filled_with(&v);
            within_discord_limits(&payload(&s)).unwrap_or_else(|e| panic!("{e}: {:.80}", v));
            let many = vec![s; 60];
            for n in [1, 25, 60] {
                within_discord_limits(&digest_payload(&many[..n]))
                    .unwrap_or_else(|e| panic!("digest of {n}: {e}: {:.80}", v));
            }
        }
    }

    #[test]
    fn a_digest_of_25_ordinary_alerts_fits_and_counts_the_rest() {
        let items: Vec<Summary> = (0..25)
            .map(|i| {
                Summary::filled_with(&format!(
                    "/var/lib/app-{i}/data/cache/objects/{i:04}/segment.db"
                ))
            })
            .collect();
        let p = digest_payload(&items);
        within_discord_limits(&p).unwrap();
        let content = p["content"].as_str().unwrap();
        let listed = content.lines().filter(|l| l.starts_with('•')).count();
        assert!(listed >= 1, "{content}");
        if listed < 25 {
            assert!(
                content.ends_with(&format!("… and {} more", 25 - listed)),
                "{content}"
            );
        }
    }

    #[test]
    fn the_suggested_rule_keeps_its_code_block_closed() {
        let s = Summary::filled_with(&"\u{202E}".repeat(1100));
        let p = payload(&s);
        let d = p["embeds"][0]["description"].as_str().unwrap();
        assert!(d.ends_with("\n```"), "{d}");
        assert_eq!(d.matches("```").count(), 2);
    }
}

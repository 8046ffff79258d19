//! Fuzz target: the record parser (`armorwatch::parse::Parser`). Input bytes are split into
//! lines, fed line by line as a followed file would be, then through `parse_text` and
//! `parse_journal_audit`; nothing may panic, and every event's accessors must work.
#![no_main]

use armorwatch::event::Source;
use armorwatch::parse::{self, Output, Parser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let source = Source::Text;
    let mut parser = Parser::with_grace(2);
    let mut out = Vec::new();
    for line in text.split('\n') {
        parser.push_line(line, &source, &mut out);
        if out.len() > 64 {
            check(&out);
            out.clear();
        }
    }
    parser.flush_pending(&mut out);
    parser.finish(&mut out);
    check(&out);
    check(&parse::parse_text(&text, &source));
    for line in text.lines().take(16) {
        if let Some(Ok(e)) = parse::parse_journal_audit(line, 1400, 7, 1_700_000_000_123_456, &source) {
            check(&[Output::Event(e)]);
        }
    }
});

fn check(out: &[Output]) {
    for o in out {
        if let Output::Event(e) = o {
            let _ = (e.operation(), e.profile(), e.name(), e.requested(), e.denied());
            let _ = (e.pid(), e.comm(), e.class(), e.time());
        }
    }
}

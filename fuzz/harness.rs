//! What each fuzz target does with one input, shared by the libFuzzer targets
//! (`fuzz_targets/*.rs`) and by `tests/fuzz_corpora.rs`, which runs every committed corpus file
//! through the same code in the normal test suite (debug build: overflow checks on).
//! Errors are fine; a panic or a hang is the finding.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use armorwatch::event::Source;
use armorwatch::parse::{self, Output, Parser};
use armorwatch::profiles::{Index, ProfileTree, parser};

/// The record parser: input bytes are split into lines and fed line by line as a followed file
/// would be, then through `parse_text` and `parse_journal_audit`; every event's accessors must
/// work.
pub fn record_parser(data: &[u8]) {
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
    parser.flush_idle(&mut out);
    parser.finish(&mut out);
    check(&out);
    check(&parse::parse_text(&text, &source));
    for line in text.lines().take(16) {
        if let Some(Ok(e)) =
            parse::parse_journal_audit(line, 1400, 7, 1_700_000_000_123_456, &source)
        {
            check(&[Output::Event(e)]);
        }
    }
}

fn check(out: &[Output]) {
    for o in out {
        if let Output::Event(e) = o {
            let _ = (
                e.operation(),
                e.profile(),
                e.name(),
                e.requested(),
                e.denied(),
            );
            let _ = (e.pid(), e.comm(), e.class(), e.time());
        }
    }
}

/// The profile parser and index: the input is a profile file in a small tree that also holds an
/// abstraction it may include (and itself); the parser, the index and every profile's effective
/// rule set must not panic or loop.
pub fn profile_parser(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = parser::parse_file("usr.bin.fuzz", &text);
    let mut files = BTreeMap::new();
    files.insert("usr.bin.fuzz".to_string(), Arc::<str>::from(text.as_ref()));
    files.insert(
        "abstractions/base".to_string(),
        Arc::<str>::from("  /etc/ld.so.cache r,\n  include if exists <abstractions/base.d>\n"),
    );
    files.insert(
        "tunables/global".to_string(),
        Arc::<str>::from("@{HOME}=/home/*/ /root/\n"),
    );
    let mut dirs = BTreeSet::new();
    dirs.insert("abstractions".to_string());
    dirs.insert("tunables".to_string());
    let tree = ProfileTree {
        base: "/etc/apparmor.d".to_string(),
        files,
        disabled: BTreeSet::new(),
        dirs,
    };
    let index = Index::build(&tree);
    for i in 0..index.profiles().len() {
        let _ = index.effective(i);
    }
}

/// The configuration loader: TOML parsing and validation of every table.
pub fn config_loader(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = armorwatch::config::parse(text, Path::new("/etc/armorwatch/armorwatch.toml"));
    }
}

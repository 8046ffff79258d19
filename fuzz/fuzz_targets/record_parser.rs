//! Fuzz target: the record parser (`armorwatch::parse::Parser`). Input bytes are split into
//! lines, fed line by line as a followed file would be, then through `parse_text` and
//! `parse_journal_audit`; nothing may panic, and every event's accessors must work.
#![no_main]

#[path = "../harness.rs"]
#[allow(dead_code)] // each target uses one of its functions
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::record_parser(data));

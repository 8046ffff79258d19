//! Fuzz target: the configuration loader (`armorwatch::config::parse`): TOML parsing and
//! validation of every table; errors are fine, panics are not.
#![no_main]

#[path = "../harness.rs"]
#[allow(dead_code)] // each target uses one of its functions
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::config_loader(data));

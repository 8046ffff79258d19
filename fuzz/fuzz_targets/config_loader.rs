//! Fuzz target: the configuration loader (`armorwatch::config::parse`): TOML parsing and
//! validation of every table; errors are fine, panics are not.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = armorwatch::config::parse(text, Path::new("/etc/armorwatch/armorwatch.toml"));
    }
});

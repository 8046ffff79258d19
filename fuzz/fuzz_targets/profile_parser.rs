//! Fuzz target: the profile parser and index (`armorwatch::profiles`). The input is a profile
//! file in a small tree that also holds an abstraction it may include (and itself); the parser,
//! the index and every profile's effective rule set must not panic or loop.
#![no_main]

#[path = "../harness.rs"]
#[allow(dead_code)] // each target uses one of its functions
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::profile_parser(data));

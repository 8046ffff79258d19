//! Every committed fuzz corpus file (`fuzz/corpus/<target>/`) run through the same code as its
//! libFuzzer target (`fuzz/harness.rs`), in the normal test suite: inputs that once reached new
//! code keep being exercised without cargo-fuzz, with overflow checks on, and a crash input
//! copied into a corpus stays a regression test.

#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};

#[path = "../fuzz/harness.rs"]
#[allow(dead_code)]
mod harness;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    files
}

/// Run `f` over the corpus; a panic names the input. `min` guards against a corpus that went
/// missing (a test over no inputs would pass).
fn run_corpus(target: &str, min: usize, f: fn(&[u8])) {
    let files = corpus(target);
    assert!(
        files.len() >= min,
        "{target}: {} corpus files, expected at least {min}",
        files.len()
    );
    for path in &files {
        let data = std::fs::read(path).expect("read corpus file");
        if std::panic::catch_unwind(|| f(&data)).is_err() {
            panic!("{target}: input {} panics", path.display());
        }
    }
}

#[test]
fn record_parser_corpus() {
    run_corpus("record_parser", 500, harness::record_parser);
}

#[test]
fn profile_parser_corpus() {
    run_corpus("profile_parser", 300, harness::profile_parser);
}

#[test]
fn config_loader_corpus() {
    run_corpus("config_loader", 500, harness::config_loader);
}

//! The file sink after a write that failed half-way (the disk filled in the middle of a batch):
//! the next write starts on a line of its own, so no later alert is glued to the torn fragment.
//!
//! The partial write is real: RLIMIT_FSIZE lets `write(2)` write up to the limit and fail the
//! rest with EFBIG, as a full disk does with ENOSPC. The limit is process-wide, so this test is
//! the only one in its binary (nextest also runs each test in a process of its own).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use armorwatch::sinks::config::{Content, FileSpec};
use armorwatch::sinks::file::FileWriter;

mod common;
use common::{ignore_sigxfsz, set_fsize};

#[test]
fn a_write_torn_by_a_full_disk_is_not_continued_by_the_next_line() {
    // Past the limit the kernel sends SIGXFSZ, whose default action ends the process.
    ignore_sigxfsz();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.jsonl");
    let mut w = FileWriter::open(&FileSpec {
        path: path.clone(),
        content: Content::Alerts,
        max_size_bytes: None,
        max_files: 5,
    })
    .unwrap();
    w.write_lines(["{\"n\":1}"]).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();

    // Room for 10 more bytes: the batch's first line is torn after them.
    set_fsize(before + 10);
    let long = format!("{{\"n\":2,\"pad\":\"{}\"}}", "x".repeat(100));
    let err = w.write_lines([long.as_str(), "{\"n\":3}"]).unwrap_err();
    assert_eq!(err.0, 0, "no line of the batch was written whole");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), before + 10);

    // Space again: the next batch begins on a line of its own.
    set_fsize(libc::RLIM_INFINITY);
    w.write_lines(["{\"n\":4}"]).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, ["{\"n\":1}", &long[..10], "{\"n\":4}"], "{text:?}");
    assert!(text.ends_with('\n'));
}

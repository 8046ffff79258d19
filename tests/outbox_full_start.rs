//! The outbox opened on a full disk after a crash tore its last line: the torn line is cut off in
//! place, so the sink starts (the disk filling may be why the line was torn).
//!
//! The full disk is RLIMIT_FSIZE, as in tests/outbox_full.rs: a file may not grow past the
//! limit, so a rewrite of the journal into a new file fails with EFBIG as it would with ENOSPC.
//! The limit is process-wide, so this binary holds only this test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use armorwatch::sinks::outbox::Outbox;

mod common;
use common::{outbox_of_two, set_fsize};

/// Regression: the journal was rewritten (a new file as large as what it holds) to drop the
/// torn line; on a full disk that failed, the outbox did not open and the daemon did not start.
#[test]
fn a_torn_journal_opens_on_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (ob, journal) = outbox_of_two(dir.path());
    drop(ob);
    let good = std::fs::metadata(&journal).unwrap().len();
    // A crash in the middle of the third append.
    common::append(&journal, "+ {\"v\":1,\"seq\":3,\"crea");

    // No room for another file the size of the journal's readable part.
    set_fsize(good - 1);
    let opened = Outbox::open(dir.path(), true, 100);
    set_fsize(libc::RLIM_INFINITY);
    let (ob, corrupt) = opened.unwrap();
    assert_eq!((ob.len(), corrupt), (2, 0));
    assert_eq!(
        std::fs::metadata(&journal).unwrap().len(),
        good,
        "torn line cut off"
    );
    drop(ob);
    let (ob, corrupt) = Outbox::open(dir.path(), true, 100).unwrap();
    let keys: Vec<String> = ob.snapshot().iter().map(|e| e.key.clone()).collect();
    assert_eq!(
        (keys, corrupt),
        (vec!["i1:1".to_string(), "i1:2".to_string()], 0)
    );
}

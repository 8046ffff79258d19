//! The outbox after an append that failed half-way (the disk filled in the middle of a line): the
//! torn line is cut off again, so the next alert spooled is not glued to it and lost with it at
//! the next start.
//!
//! The partial write is real: RLIMIT_FSIZE lets `write(2)` write up to the limit and fail the
//! rest with EFBIG, as a full disk does with ENOSPC. The limit is process-wide, so this binary
//! holds only this test (nextest also runs each test in a process of its own).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use armorwatch::sinks::outbox::Outbox;

mod common;
use common::{outbox_alert as alert, outbox_of_two, set_fsize};

#[test]
fn an_append_torn_by_a_full_disk_does_not_take_the_next_alert_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ob, journal) = outbox_of_two(dir.path());
    let len = || std::fs::metadata(&journal).unwrap().len();

    // Room for 10 more bytes: the push fails with its line torn after them.
    let before = len();
    set_fsize(before + 10);
    ob.push(&alert(3), 3).unwrap_err();
    assert_eq!(len(), before, "the torn line was cut off");
    // A removal torn the same way.
    set_fsize(before + 2);
    ob.remove(1).unwrap_err();
    assert_eq!(len(), before, "the torn removal was cut off");

    // Space again: what is spooled now survives a restart.
    set_fsize(libc::RLIM_INFINITY);
    ob.push(&alert(4), 4).unwrap();
    ob.push(&alert(5), 5).unwrap();
    drop(ob);
    let (ob, corrupt) = Outbox::open(dir.path(), true, 100).unwrap();
    assert_eq!(corrupt, 0, "{:?}", std::fs::read_to_string(&journal));
    let keys: Vec<String> = ob.snapshot().iter().map(|e| e.key.clone()).collect();
    // Alert 1 is back (its removal was not recorded: sent again, at least once); 3 was refused.
    assert_eq!(keys, ["i1:1", "i1:2", "i1:4", "i1:5"]);
}

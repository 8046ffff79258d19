//! Helpers shared by the integration tests (`mod common;` in each test file). Not every test
//! file uses every helper.
#![allow(dead_code)]

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde_json::Value;

/// Append `text` to `path` (created when missing), as a logger would.
pub fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The complete JSON lines of a file a sink or output writes (none while it does not exist).
/// A line still being written (no newline yet) is not counted; a line that is not JSON panics.
pub fn json_lines(path: &Path) -> Vec<Value> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad JSON line {l:?}: {e}", path.display()))
        })
        .collect()
}

/// The JSON lines of a file, and how many lines did not parse. A kill -9 in the middle of a
/// sink's `write` can leave a torn last line; the next run ends it before writing, so it stays
/// one unparseable fragment. A fragment with a whole line glued to its end means the restart
/// appended to it: that is a defect, and it panics.
pub fn json_lines_torn(path: &Path) -> (Vec<Value>, usize) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut torn = 0;
    let values = text
        .lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(v) => Some(v),
            Err(_) => {
                torn += 1;
                let glued = l
                    .match_indices("{\"schema\":")
                    .skip_while(|(i, _)| *i == 0)
                    .any(|(i, _)| serde_json::from_str::<Value>(&l[i..]).is_ok());
                assert!(
                    !glued,
                    "a whole line appended to a torn one in {path:?}: {l}"
                );
                None
            }
        })
        .collect();
    (values, torn)
}

/// `bin` copied to `dest` without its debug info (`strip -o`), or as it is when `strip` is not
/// there: the test binary is ~20 MB instead of ~140 MB in a VM's initramfs.
pub fn stripped_copy(bin: &str, dest: &Path) {
    let stripped = std::process::Command::new("strip")
        .arg("-o")
        .arg(dest)
        .arg(bin)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        fs::copy(bin, dest).unwrap_or_else(|e| panic!("{bin} to {}: {e}", dest.display()));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Run `cmd` to its end; it must succeed (else panic with the command and its stderr).
pub fn run_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Set this process's soft RLIMIT_FSIZE: past it `write(2)` writes up to the limit and fails the
/// rest with EFBIG, as a full disk does with ENOSPC (process-wide: a test binary using it holds
/// one test). Call [`ignore_sigxfsz`] first.
#[allow(unsafe_code)]
pub fn set_fsize(soft: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a valid, initialised struct of ours.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = soft.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

/// Past RLIMIT_FSIZE the kernel sends SIGXFSZ, whose default action ends the process.
#[allow(unsafe_code)]
pub fn ignore_sigxfsz() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

/// An alert line as the outbox spools it (tests/outbox_full*.rs).
pub fn outbox_alert(seq: u64) -> String {
    format!(r#"{{"schema":1,"type":"incident.update","id":"i1","seq":{seq},"host":"h"}}"#)
}

/// The set-up of the full-disk outbox tests: SIGXFSZ ignored, and an outbox in `dir` holding
/// alerts 1 and 2. Returns it with its journal's path.
pub fn outbox_of_two(dir: &Path) -> (armorwatch::sinks::outbox::Outbox, std::path::PathBuf) {
    ignore_sigxfsz();
    let (mut ob, _) = armorwatch::sinks::outbox::Outbox::open(dir, true, 100).unwrap();
    ob.push(&outbox_alert(1), 1).unwrap();
    ob.push(&outbox_alert(2), 2).unwrap();
    (ob, dir.join("journal"))
}

/// Skip the rest of a test whose tool or privilege is missing: said on stderr, or, when
/// `AW_REQUIRE_ALL` is set (tests/run-all.sh as root, which installs everything the tests use),
/// a failure, so that CI cannot pass a test it never ran. Returns so the caller can `return`.
pub fn skip(why: &str) {
    if std::env::var_os("AW_REQUIRE_ALL").is_some() {
        panic!(
            "{why} (AW_REQUIRE_ALL is set: every tool and privilege the tests use must be here)"
        );
    }
    eprintln!("SKIPPED: {why}");
}

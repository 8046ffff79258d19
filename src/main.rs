//! The `armorwatch` binary: parse the command line, dispatch, map errors to exit codes.

use std::process::ExitCode;

/// Events are many small strings allocated on one thread and freed on another; mimalloc handles
/// that pattern far better than glibc's allocator (measured in docs/benchmarks.md). Built with
/// `no_thp`: with transparent huge pages its arenas alone cost 15 MiB of RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's option index of `purge_delay` (`mi_option_e` in mimalloc 3's `mimalloc.h`; the
/// `libmimalloc-sys` binding names only some options). `allocator_is_tuned` checks it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the OS after this many ms. mimalloc 3 waits 1 000 ms; a replay or a
/// storm frees and reallocates pages far faster than that, and peak RSS carried some 10 MiB of
/// free pages (replay of 1M records with explanations: 40 → 30 MiB). 10 ms is mimalloc 2's
/// default; no measurable CPU cost (docs/benchmarks.md).
const PURGE_DELAY_MS: std::ffi::c_long = 10;

#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mi_option_set stores an integer in mimalloc's option table (an atomic store); it
    // takes no pointers and may be called at any time, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// The soft limit on open files goes up to the hard one. sd-journal keeps every file of a
/// journal open and skips, logging at debug level only, the ones it cannot open: under
/// systemd's default soft limit of 1 024 a journal directory of more files (a journal-remote
/// collector, many small archives) lost their records without a word. armorwatch uses no
/// `select(2)`, the one reason for keeping the soft limit low (systemd.exec(5), `LimitNOFILE=`);
/// journalctl raises it the same way.
fn raise_nofile_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            eprintln!("armorwatch: raising the open-file limit: {e}");
        }
    }
}

fn main() -> ExitCode {
    tune_allocator();
    raise_nofile_limit();
    armorwatch::cli::main()
}

#[cfg(test)]
mod tests {
    /// The index names the option meant: its documented default (1 000 ms in mimalloc 3) is
    /// what an untouched process reads, and the value set is what it reads afterwards.
    #[test]
    #[allow(unsafe_code)]
    fn allocator_is_tuned() {
        // SAFETY: as in tune_allocator; mi_option_get only reads the option table.
        let before = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(before, 1000, "not mimalloc 3's purge_delay");
        super::tune_allocator();
        let after = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(after, super::PURGE_DELAY_MS);
    }
}

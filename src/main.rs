//! The `armorwatch` binary: parse the command line, dispatch, map errors to exit codes.

use std::process::ExitCode;

/// Events are many small strings allocated on one thread and freed on another; mimalloc handles
/// that pattern far better than glibc's allocator (measured in docs/benchmarks.md). Built with
/// `no_thp`: with transparent huge pages its arenas alone cost 15 MiB of RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    armorwatch::cli::main()
}

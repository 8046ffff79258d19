//! The `armorwatch` binary: parse the command line, dispatch, map errors to exit codes.

use std::process::ExitCode;

fn main() -> ExitCode {
    armorwatch::cli::main()
}

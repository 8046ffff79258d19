//! The command line: one file per subcommand; this file parses arguments and dispatches.

mod correlate;
mod parse;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a bad configuration (sysexits EX_CONFIG); the unit's `RestartPreventExitStatus`.
pub const EXIT_CONFIG: u8 = 78;

/// armorwatch: watch for AppArmor denials and explain each one.
#[derive(Debug, Parser)]
#[command(name = "armorwatch", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse AppArmor records from log files (or stdin) into JSON lines, event schema 1.
    Parse(parse::ParseArgs),
    /// Correlate AppArmor events from log files into alerts (JSON lines, alert schema 1), on log
    /// time; every incident is closed at the end of input unless --state keeps them.
    Correlate(correlate::CorrelateArgs),
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Parse(args) => parse::run(&args),
        Command::Correlate(args) => correlate::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("armorwatch: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

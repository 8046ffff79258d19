//! The command line: one file per subcommand; this file parses arguments and dispatches.

mod parse;
mod test_alert;

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
    /// Send a sample alert through each configured sink and report, per sink, delivered or why not.
    TestAlert(test_alert::TestAlertArgs),
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Parse(args) => parse::run(&args),
        Command::TestAlert(args) => test_alert::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("armorwatch: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

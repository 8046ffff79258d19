//! The command line: one file per subcommand; this file parses arguments and dispatches.

mod check_config;
mod correlate;
mod doctor;
mod explain;
mod generate_assets;
mod input;
mod parse;
mod replay;
mod run;
mod status;
mod test_alert;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a bad configuration (sysexits EX_CONFIG); the unit's `RestartPreventExitStatus`.
pub const EXIT_CONFIG: u8 = 78;

/// Exit code of a replay that met a read error (sysexits EX_IOERR): what was read was
/// delivered, the rest of that input was not read.
pub const EXIT_IOERR: u8 = 74;

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
    /// Explain AppArmor records: the responsible profile, the rule that nearly matched, the fix.
    Explain(explain::ExplainArgs),
    /// Follow the configured (or automatically chosen) sources until SIGTERM/SIGINT.
    Run(run::RunArgs),
    /// Read every source from its checkpoint to its current end (and log files whole), then exit.
    Replay(replay::ReplayArgs),
    /// Show what this machine does with AppArmor records and which sources armorwatch would use.
    Doctor(doctor::DoctorArgs),
    /// Show the open and recent incidents from the state directory (`--json` for scripts).
    Status(status::StatusArgs),
    /// Send a sample alert through each configured sink and report, per sink, delivered or why not.
    TestAlert(test_alert::TestAlertArgs),
    /// Correlate AppArmor events from log files into alerts (JSON lines, alert schema 1), on log
    /// time; every incident is closed at the end of input unless --state keeps them.
    Correlate(correlate::CorrelateArgs),
    /// Check a configuration file (keys, sinks and their secret files, sources, directories,
    /// the profile tree) and print OK or each error with its key path; exit 78 on a bad one.
    CheckConfig(check_config::CheckConfigArgs),
    /// Write the man pages and shell completions (used by packaging/build-deb.sh).
    #[command(hide = true)]
    GenerateAssets(generate_assets::GenerateAssetsArgs),
}

/// Write `value` as one JSON line with the characters a terminal acts on (C1 controls, DEL,
/// bidi overrides, from logged values) as `\uXXXX`, the same JSON value, as `replay` and the
/// file sink write theirs: these lines are read in terminals too. `line` is a reusable buffer.
fn write_json_line(
    writer: &mut impl std::io::Write,
    line: &mut Vec<u8>,
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    line.clear();
    crate::sinks::escape::push_json_line(line, value)?;
    writer.write_all(line)
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Parse(args) => parse::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Replay(args) => replay::run(&args),
        Command::Doctor(args) => doctor::run(&args),
        Command::Status(args) => status::run(&args),
        Command::TestAlert(args) => test_alert::run(&args),
        Command::Correlate(args) => correlate::run(&args),
        Command::CheckConfig(args) => check_config::run(&args),
        Command::GenerateAssets(args) => generate_assets::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("armorwatch: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// The README's command table has a row for every command `--help` lists: `check-config`
    /// had none.
    #[test]
    fn the_readme_lists_every_command() {
        let readme = include_str!("../../README.md");
        for sub in super::Cli::command().get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let row = format!("| `armorwatch {}", sub.get_name());
            assert!(
                readme.contains(&row),
                "no README row for {}",
                sub.get_name()
            );
        }
    }
}

//! `armorwatch replay [--config FILE] [LOGFILE…]`: read every configured source from its
//! checkpoint (or its beginning) to its current end, deliver, save checkpoints, exit. Log files
//! named on the command line are read whole, format detected per line, without checkpoints.

use std::path::PathBuf;
use std::process::ExitCode;

use super::run::{choose_sources, execute, load_config, state_dir};
use crate::pipeline::{Mode, Plan};

/// Arguments of `armorwatch replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The configuration file.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Log files to read whole (audit.log, kern.log, syslog, kmsg dumps …). With files, the
    /// host's sources are not chosen automatically: only the files and the sources the
    /// configuration names are read.
    pub files: Vec<PathBuf>,
    /// Without a `[sinks.*]` table: write every event (schema 1) to standard output instead of
    /// alerts.
    #[arg(long)]
    pub events: bool,
}

/// Run the subcommand.
pub fn run(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let mut config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if args.events {
        super::run::events_to_stdout(&mut config);
    }
    // `replay --config C old.log` (C for its sinks) read the host's live sources too, from
    // their checkpoints on, and moved those checkpoints, when C named no source.
    let only_files = !args.files.is_empty() && config.sources.is_empty();
    let sources = if only_files {
        Vec::new()
    } else {
        choose_sources(&config)
    };
    let state = if sources.is_empty() {
        None
    } else {
        state_dir(&config, args.config.is_some())
    };
    let plan = Plan {
        mode: Mode::Replay,
        sources,
        files: args.files.clone(),
        state_dir: state,
        checkpoint_interval: config.checkpoint_interval,
    };
    execute(plan, &config)
}

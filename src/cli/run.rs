//! `armorwatch run [--config FILE]`: follow the sources live until SIGTERM/SIGINT, then drain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::EXIT_CONFIG;
use crate::config::{self, Config};
use crate::pipeline::{self, Mode, Plan};
use crate::sources;

/// Arguments of `armorwatch run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The configuration file. Without one: automatic sources, JSON lines on standard output.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Without a `[sinks.*]` table: write every event (schema 1) to standard output instead of
    /// alerts.
    #[arg(long)]
    pub events: bool,
}

/// `--events`: with no sink configured, every event goes to standard output as JSON lines.
pub fn events_to_stdout(config: &mut Config) {
    if config.sinks.is_empty() {
        let mut table = toml::Table::new();
        table.insert("type".into(), toml::Value::String("stdout".into()));
        table.insert("content".into(), toml::Value::String("events".into()));
        config.sinks.push(config::SinkConfig {
            name: "stdout".into(),
            kind: "stdout".into(),
            table,
        });
    }
}

/// Load the configuration, or the defaults when there is no file. `Err(code)` after printing.
pub fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    match path {
        None => Ok(Config::default()),
        Some(p) => config::load(p).map_err(|e| {
            eprintln!("armorwatch: configuration error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }),
    }
}

/// The configured sources, or the automatic choice (printed with its reasons).
pub fn choose_sources(config: &Config) -> Vec<config::SourceConfig> {
    if !config.sources.is_empty() {
        return config.sources.clone();
    }
    let selection = sources::select(&sources::probe());
    eprintln!("armorwatch: no source configured; choosing automatically:");
    for r in &selection.reasons {
        eprintln!("  - {r}");
    }
    selection.sources
}

/// The state directory to use; without a config file an unwritable default is skipped (with a
/// warning) rather than fatal, so `armorwatch run` works for a quick look as any user.
pub fn state_dir(config: &Config, explicit: bool) -> Option<PathBuf> {
    if explicit {
        return Some(config.state_dir.clone());
    }
    match std::fs::create_dir_all(&config.state_dir) {
        Ok(()) => Some(config.state_dir.clone()),
        Err(e) => {
            eprintln!(
                "armorwatch: {}: {e}; running without checkpoints",
                config.state_dir.display()
            );
            None
        }
    }
}

/// Build a runtime, run the pipeline, map errors to exit codes.
pub fn execute(plan: Plan, config: &Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outputs = {
        let _guard = runtime.enter();
        match crate::alerting::build_outputs(config, plan.mode, plan.state_dir.as_deref()) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("armorwatch: configuration error: {e}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        }
    };
    // Replay ends when the sources reach their end; a signal stops either mode early.
    let result = runtime.block_on(pipeline::run(plan, outputs, shutdown_signal()));
    match result {
        Ok(summary) => {
            eprintln!(
                "armorwatch: {} events delivered, {} duplicates dropped, {} loss notices",
                summary.events, summary.duplicates, summary.losses
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("armorwatch: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// Run the subcommand.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    if args.events {
        events_to_stdout(&mut config);
    }
    let sources = choose_sources(&config);
    if sources.is_empty() {
        eprintln!("armorwatch: no readable source; see `armorwatch doctor`");
        return Ok(ExitCode::FAILURE);
    }
    let plan = Plan {
        mode: Mode::Follow,
        sources,
        files: Vec::new(),
        state_dir: state_dir(&config, args.config.is_some()),
        checkpoint_interval: config.checkpoint_interval,
    };
    execute(plan, &config)
}

//! `armorwatch correlate [FILE…]`: parse logs and write one JSON alert (schema 1) per line, on log
//! time, flushing every incident at the end of input — or, with `--state`, keeping open incidents
//! in a state file across runs (what the daemon does across restarts).

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::input::feed_lines;
use crate::alert::{Alert, LossInfo};
use crate::correlate::noise::{BUNDLED_NOISE, NoiseRules};
use crate::correlate::severity::SeverityDb;
use crate::correlate::{Config, Correlator, LogTimeline, Settings, Snapshot, loss_info};
use crate::parse::{Output, Parser};

/// Arguments of `armorwatch correlate`.
#[derive(Debug, clap::Args)]
pub struct CorrelateArgs {
    /// Log files in any form `armorwatch parse` reads; `-` or nothing reads standard input.
    files: Vec<PathBuf>,
    /// Window in seconds: at most one update per window, closed after a quiet window.
    #[arg(long, default_value_t = 300)]
    window_secs: u64,
    /// Flood cap: incident alerts per minute (0: none).
    #[arg(long, default_value_t = 120)]
    max_alerts_per_minute: u32,
    /// Cap on open incidents (least recently seen evicted).
    #[arg(long, default_value_t = 10_000)]
    max_open_incidents: usize,
    /// severity.db to use instead of the bundled copy (e.g. /etc/apparmor/severity.db).
    #[arg(long)]
    severity_db: Option<PathBuf>,
    /// Extra noise-rule files, applied after the bundled data/noise.toml, in order.
    #[arg(long)]
    noise: Vec<PathBuf>,
    /// Host name for events that name none.
    #[arg(long)]
    host: Option<String>,
    /// Keep open incidents in this file: restored at start, saved at the end instead of closing
    /// them (a later run continues them).
    #[arg(long)]
    state: Option<PathBuf>,
}

/// Run the subcommand.
pub fn run(args: &CorrelateArgs) -> anyhow::Result<ExitCode> {
    let config = match build_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("armorwatch: configuration error: {e:#}");
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    let mut correlator = match &args.state {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let snap: Snapshot = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            Correlator::restore(snap, config)?
        }
        _ => Correlator::new(config),
    };
    let stdout = io::stdout();
    let mut writer = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut parser = Parser::new();
    let mut outputs = Vec::with_capacity(64);
    let mut alerts = Vec::with_capacity(64);
    // Carries on from a restored state's time, as `replay` does.
    let mut clock = LogTimeline::starting_at(correlator.latest_time_ms());
    let mut malformed = 0u64;
    let input = feed_lines(&args.files, &mut parser, &mut outputs, |outputs| {
        feed(
            &mut correlator,
            outputs,
            &mut alerts,
            &mut clock,
            &mut malformed,
        );
        write_alerts(&mut writer, &mut alerts)
    })?;
    parser.finish(&mut outputs);
    feed(
        &mut correlator,
        &mut outputs,
        &mut alerts,
        &mut clock,
        &mut malformed,
    );
    clock.push_held(&mut correlator, &mut alerts);
    if malformed > 0 {
        correlator.push_loss(
            LossInfo {
                origin: "parser".into(),
                what: "AppArmor-looking lines that could not be parsed".into(),
                count: Some(malformed),
            },
            clock.latest(),
            &mut alerts,
        );
    }
    match &args.state {
        Some(_) => correlator.tick(clock.latest(), &mut alerts),
        None => correlator.flush_all(clock.latest(), &mut alerts),
    }
    write_alerts(&mut writer, &mut alerts)?;
    writer.flush().context("writing to standard output")?;
    drop(writer);
    // Only once every alert it counts is out: a state saved first went on past alerts that a
    // failed write (a closed pipe, a full disk) or a kill had lost.
    if let Some(path) = &args.state {
        save_state(path, &correlator.snapshot())?;
    }
    let s = correlator.stats();
    eprintln!(
        "armorwatch correlate: {} events, {} incidents opened, {} closed ({} evicted), {} open, {} alerts ({} held back, {} suppressed alerts, {} status, {} loss)",
        s.events,
        s.incidents_opened,
        s.incidents_closed,
        s.incidents_evicted,
        correlator.open_incidents(),
        s.alerts,
        s.alerts_held,
        s.suppressed_alerts,
        s.status_alerts,
        s.loss_alerts
    );
    for (rule, n) in &s.noise {
        eprintln!("  noise {rule}: {n} events");
    }
    Ok(if input.files_failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn build_config(args: &CorrelateArgs) -> anyhow::Result<Config> {
    let severity_db = match &args.severity_db {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            SeverityDb::parse(&text).with_context(|| path.display().to_string())?
        }
        None => SeverityDb::bundled(),
    };
    let mut texts = vec![("data/noise.toml".to_owned(), BUNDLED_NOISE.to_owned())];
    for path in &args.noise {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        texts.push((path.display().to_string(), text));
    }
    let refs: Vec<(&str, &str)> = texts
        .iter()
        .map(|(o, t)| (o.as_str(), t.as_str()))
        .collect();
    let noise = NoiseRules::from_texts(&refs)?;
    let host = match &args.host {
        Some(h) => h.clone(),
        None => local_host_name(),
    };
    let settings = Settings {
        window_secs: args.window_secs,
        max_alerts_per_minute: args.max_alerts_per_minute,
        max_open_incidents: args.max_open_incidents,
        ..Settings::default()
    };
    settings
        .validate()
        .map_err(|e| anyhow::anyhow!("--{}", e.to_string().replace('_', "-")))?;
    Ok(settings.into_config(host, Arc::new(severity_db), Arc::new(noise)))
}

fn local_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn feed(
    c: &mut Correlator,
    outputs: &mut Vec<Output>,
    alerts: &mut Vec<Alert>,
    clock: &mut LogTimeline,
    malformed: &mut u64,
) {
    for o in outputs.drain(..) {
        match o {
            Output::Event(e) => {
                // Log time: replaying old logs gives the same incidents as watching them live.
                clock.push(c, e, crate::sinks::now_ms(), alerts);
            }
            Output::Loss(l) => c.push_loss(loss_info(&l), clock.latest(), alerts),
            Output::Malformed(_) => *malformed += 1,
        }
    }
}

fn write_alerts(writer: &mut impl Write, alerts: &mut Vec<Alert>) -> anyhow::Result<()> {
    let mut line = Vec::new();
    for a in alerts.drain(..) {
        super::write_json_line(writer, &mut line, &a).context("writing to standard output")?;
    }
    Ok(())
}

/// Write the snapshot atomically (the checkpoints' temp file, fsync, rename, directory fsync).
fn save_state(path: &Path, snap: &Snapshot) -> anyhow::Result<()> {
    let json = serde_json::to_vec(snap).context("serializing the correlator state")?;
    crate::checkpoint::write_atomic(path, &json)
        .with_context(|| format!("writing {}", path.display()))
}

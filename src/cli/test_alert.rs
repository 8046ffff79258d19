//! `armorwatch test-alert [--sink NAME] [--config FILE]`: send a realistic sample alert through
//! each configured sink (directly, no outbox, no retries) and print per sink whether it was
//! delivered or precisely why not.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::sinks::config::{LineFormat, SecretContext, SinkKind, parse_sinks};
use crate::sinks::http::Transport;
use crate::sinks::outbox::Entry;
use crate::sinks::view::AlertView;
use crate::sinks::{file::FileWriter, now_ms, sample::sample_alert, stdout::text_line};

/// Arguments of `armorwatch test-alert`.
#[derive(Debug, clap::Args)]
pub struct TestAlertArgs {
    /// Only this sink (`[sinks.NAME]`).
    #[arg(long)]
    sink: Option<String>,
    /// The configuration file.
    #[arg(long, short, default_value = super::check_config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Host name put in the sample alert (default: this host's name).
    #[arg(long)]
    host: Option<String>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// Run the subcommand.
pub fn run(args: &TestAlertArgs) -> anyhow::Result<ExitCode> {
    let text = match std::fs::read_to_string(&args.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "armorwatch: configuration error: cannot read {}: {e}",
                args.config.display()
            );
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    let table: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            // The parser quotes the line, which may hold a secret (a webhook URL's token).
            let message = crate::config::without_values(e.to_string().trim_end());
            eprintln!("armorwatch: {}: {message}", args.config.display());
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    let empty = toml::Table::new();
    let sinks_table = match table.get("sinks") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => {
            eprintln!(
                "armorwatch: {}: sinks: must be a table",
                args.config.display()
            );
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
        None => &empty,
    };
    let specs = match parse_sinks(sinks_table, &SecretContext::from_env()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("armorwatch: {}: {e}", args.config.display());
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    let specs: Vec<_> = specs
        .into_iter()
        .filter(|s| args.sink.as_deref().is_none_or(|n| n == s.name))
        .collect();
    if specs.is_empty() {
        match &args.sink {
            Some(n) => eprintln!(
                "armorwatch: no sink named {n:?} in {}",
                args.config.display()
            ),
            None => eprintln!(
                "armorwatch: no sinks configured in {}",
                args.config.display()
            ),
        }
        return Ok(ExitCode::from(super::EXIT_CONFIG));
    }
    let host = args.host.clone().unwrap_or_else(hostname);
    let alert = sample_alert(&host, now_ms());
    let json = serde_json::to_string(&alert).context("serializing the sample alert")?;
    let view = AlertView::from_json(&serde_json::to_value(&alert)?)?;
    let entry = Arc::new(Entry {
        seq: 1,
        created_ms: now_ms(),
        key: alert.idempotency_key(),
        incident: alert.id.clone(),
        json: Arc::from(json.as_str()),
        view: Arc::new(view),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut failed = 0;
    for spec in &specs {
        let result: Result<(), String> = match &spec.kind {
            SinkKind::File(f) => FileWriter::open(f)
                .and_then(|mut w| w.write_line(&json))
                .map_err(|e| format!("{}: {e}", f.path.display())),
            SinkKind::Stdout(s) => {
                match s.format {
                    LineFormat::Json => {
                        println!("{}", crate::sinks::escape::json_for_terminal(&json))
                    }
                    LineFormat::Text => println!("{}", text_line(&entry.view)),
                }
                Ok(())
            }
            _ => match Transport::new(spec) {
                Ok(Some(t)) => rt.block_on(async {
                    let timeout = Duration::from_secs(spec.delivery.timeout_secs + 5);
                    match tokio::time::timeout(
                        timeout,
                        t.send(std::slice::from_ref(&entry), now_ms()),
                    )
                    .await
                    {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err(format!("timed out after {} s", timeout.as_secs())),
                    }
                }),
                Ok(None) => Ok(()),
                Err(e) => Err(e.to_string()),
            },
        };
        match result {
            Ok(()) => eprintln!("{} ({}): delivered", spec.name, spec.kind.type_name()),
            Err(e) => {
                failed += 1;
                eprintln!("{} ({}): FAILED: {e}", spec.name, spec.kind.type_name());
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

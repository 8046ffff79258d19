//! `armorwatch parse [FILE…]`: stream one JSON object per AppArmor event, in input order.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;

use super::input::feed_lines;
use crate::event::Source;
use crate::linereader::MAX_LINE;
use crate::parse::{Output, Parser};

/// Arguments of `armorwatch parse`.
#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// Log files in any supported form (audit.log, kern.log, syslog, dmesg, kmsg, ausearch -i …);
    /// `-` or nothing reads standard input.
    files: Vec<PathBuf>,
    /// Exit with status 1 if any AppArmor-looking line was malformed.
    #[arg(long)]
    strict: bool,
    /// How many malformed lines to list in the summary.
    #[arg(long, default_value_t = 20)]
    max_malformed: usize,
}

#[derive(Debug, Default)]
struct Summary {
    malformed: Vec<String>,
    malformed_total: u64,
    losses: u64,
}

/// Outputs travel to the writer thread in batches of this many.
const BATCH: usize = 128;

/// Run the subcommand. Parsing runs on this thread and JSON serialization on a second one, so the
/// two overlap on a multi-core machine; the bounded channel keeps memory constant.
pub fn run(args: &ParseArgs) -> anyhow::Result<ExitCode> {
    let (tx, rx) = mpsc::sync_channel::<Vec<Output>>(2);
    let (recycle_tx, recycle_rx) = mpsc::channel::<Vec<Output>>();
    let max_malformed = args.max_malformed;
    let writer = thread::Builder::new().name("json-writer".into()).spawn(
        move || -> anyhow::Result<Summary> {
            let stdout = io::stdout();
            let mut writer = BufWriter::with_capacity(1 << 17, stdout.lock());
            let mut summary = Summary::default();
            let mut failed: Option<io::Error> = None;
            for mut batch in rx {
                if failed.is_none() {
                    if let Err(e) =
                        write_outputs(&mut writer, &mut batch, &mut summary, max_malformed)
                    {
                        failed = Some(e);
                    }
                }
                count_only(&mut batch, &mut summary, max_malformed);
                let _ = recycle_tx.send(batch);
            }
            if failed.is_none() {
                if let Err(e) = writer.flush() {
                    failed = Some(e);
                }
            }
            match failed {
                // `armorwatch parse … | head`: the reader went away; not an error.
                Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(summary),
                Some(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
                None => Ok(summary),
            }
        },
    )?;

    let mut parser = Parser::new();
    let mut out: Vec<Output> = Vec::with_capacity(BATCH + 64);
    let send = |out: &mut Vec<Output>, force: bool| {
        if out.len() >= BATCH || (force && !out.is_empty()) {
            let next = recycle_rx
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(BATCH + 64));
            let full = std::mem::replace(out, next);
            // A send error means the writer stopped; its result says why.
            let _ = tx.send(full);
        }
    };
    let input = feed_lines(&args.files, &mut parser, &mut out, |out| {
        send(out, false);
        Ok(())
    })?;
    parser.finish(&mut out);
    send(&mut out, true);
    drop(tx);
    let summary = match writer.join() {
        Ok(result) => result?,
        Err(_) => anyhow::bail!("the output thread panicked"),
    };

    let stats = parser.stats();
    eprintln!(
        "armorwatch parse: {} lines, {} events, {} malformed, {} legacy ignored, {} loss notices",
        stats.lines, stats.events, summary.malformed_total, stats.legacy_ignored, summary.losses
    );
    if input.long_lines > 0 {
        eprintln!(
            "  {} lines longer than {MAX_LINE} bytes were cut at that length",
            input.long_lines
        );
    }
    for m in &summary.malformed {
        eprintln!("  malformed: {m}");
    }
    if summary.malformed_total > summary.malformed.len() as u64 {
        eprintln!(
            "  … and {} more malformed lines",
            summary.malformed_total - summary.malformed.len() as u64
        );
    }
    if args.strict && summary.malformed_total > 0 {
        return Ok(ExitCode::from(1));
    }
    if input.files_failed > 0 {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

/// After a write error, keep counting malformed lines and losses for the summary.
fn count_only(batch: &mut Vec<Output>, summary: &mut Summary, max_malformed: usize) {
    for o in batch.drain(..) {
        note(o, summary, max_malformed);
    }
}

fn note(o: Output, summary: &mut Summary, max_malformed: usize) {
    match o {
        Output::Event(_) => {}
        Output::Malformed(m) => {
            summary.malformed_total += 1;
            if summary.malformed.len() < max_malformed {
                let at = match &m.source {
                    Source::File { path, line } => format!("{path}:{line}"),
                    Source::Stdin { line } => format!("<stdin>:{line}"),
                    other => format!("{other:?}"),
                };
                summary.malformed.push(format!("{at}: {}", m.reason));
            }
        }
        Output::Loss(_) => summary.losses += 1,
    }
}

fn write_outputs(
    writer: &mut impl Write,
    out: &mut Vec<Output>,
    summary: &mut Summary,
    max_malformed: usize,
) -> io::Result<()> {
    let mut line = Vec::new();
    for o in out.drain(..) {
        if let Output::Event(event) = &o {
            super::write_json_line(writer, &mut line, event)?;
        }
        note(o, summary, max_malformed);
    }
    Ok(())
}

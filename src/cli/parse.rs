//! `armorwatch parse [FILE…]`: stream one JSON object per AppArmor event, in input order.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::event::Source;
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
    files_failed: usize,
    malformed: Vec<String>,
    malformed_total: u64,
    losses: u64,
}

/// Run the subcommand.
pub fn run(args: &ParseArgs) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let mut writer = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut parser = Parser::new();
    let mut summary = Summary::default();
    let mut out = Vec::with_capacity(64);
    let inputs: Vec<Option<&PathBuf>> = if args.files.is_empty() {
        vec![None]
    } else {
        args.files
            .iter()
            .map(|p| (p.as_os_str() != "-").then_some(p))
            .collect()
    };
    for input in inputs {
        let (reader, name): (Box<dyn Read>, Option<Arc<str>>) = match input {
            None => (Box::new(io::stdin().lock()), None),
            Some(path) => match File::open(path) {
                Ok(f) => (Box::new(f), Some(Arc::from(path.display().to_string()))),
                Err(e) => {
                    eprintln!("armorwatch: cannot read {}: {e}", path.display());
                    summary.files_failed += 1;
                    continue;
                }
            },
        };
        let mut reader = BufReader::with_capacity(1 << 16, reader);
        let mut buf = Vec::with_capacity(4096);
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n = match reader.read_until(b'\n', &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    let what = name.as_deref().unwrap_or("standard input");
                    eprintln!("armorwatch: error reading {what}: {e}");
                    summary.files_failed += 1;
                    break;
                }
            };
            if n == 0 {
                break;
            }
            line_no += 1;
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            let source = match &name {
                Some(path) => Source::File {
                    path: path.clone(),
                    line: line_no,
                },
                None => Source::Stdin { line: line_no },
            };
            match std::str::from_utf8(&buf) {
                Ok(text) => parser.push_line(text, &source, &mut out),
                Err(_) => parser.push_line(&String::from_utf8_lossy(&buf), &source, &mut out),
            }
            write_outputs(&mut writer, &mut out, &mut summary, args.max_malformed)?;
        }
    }
    parser.finish(&mut out);
    write_outputs(&mut writer, &mut out, &mut summary, args.max_malformed)?;
    writer.flush().context("writing to standard output")?;
    drop(writer);

    let stats = parser.stats();
    eprintln!(
        "armorwatch parse: {} lines, {} events, {} malformed, {} legacy ignored, {} loss notices",
        stats.lines, stats.events, summary.malformed_total, stats.legacy_ignored, summary.losses
    );
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
    if summary.files_failed > 0 {
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn write_outputs(
    writer: &mut impl Write,
    out: &mut Vec<Output>,
    summary: &mut Summary,
    max_malformed: usize,
) -> anyhow::Result<()> {
    for o in out.drain(..) {
        match o {
            Output::Event(event) => {
                serde_json::to_writer(&mut *writer, &event).context("writing JSON")?;
                writer
                    .write_all(b"\n")
                    .context("writing to standard output")?;
            }
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
    Ok(())
}

//! `armorwatch explain [--profiles DIR] [--json] [RECORD…|-]`: for each AppArmor record, the
//! responsible profile, why the access was denied, the closest rules, and the line to add.

use std::collections::HashMap;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;

use crate::event::{Event, Kind, Source};
use crate::parse::{self, Output, Parser};
use crate::profiles::history::{self, PolicyChanges};
use crate::profiles::suggest::CheckStatus;
use crate::profiles::{Explainer, Index, loader, render_text, system};

/// Arguments of `armorwatch explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// AppArmor records (any form `armorwatch parse` reads), one per argument; `-` or nothing
    /// reads records from standard input.
    records: Vec<String>,
    /// The profile tree to explain against.
    #[arg(long, value_name = "DIR", default_value = "/etc/apparmor.d")]
    profiles: PathBuf,
    /// One JSON object per record instead of text.
    #[arg(long)]
    json: bool,
    /// Do not compile-check suggestions with apparmor_parser.
    #[arg(long)]
    no_check: bool,
    /// Do not ask dpkg/rpm which package owns the profile.
    #[arg(long)]
    no_packages: bool,
    /// List syntax errors found in the profile tree.
    #[arg(long)]
    show_syntax_errors: bool,
    /// Print how long loading and indexing the tree took (to standard error).
    #[arg(long)]
    stats: bool,
}

/// Run the subcommand.
pub fn run(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let (tree, report) = loader::load_tree(&args.profiles)
        .with_context(|| format!("loading profiles from {}", args.profiles.display()))?;
    for (path, why) in &report.unreadable {
        eprintln!("armorwatch explain: skipped {}: {why}", path.display());
    }
    let loaded = started.elapsed();
    let index = Index::build(&tree);
    let indexed = started.elapsed();
    if args.stats {
        let rules: usize = index
            .profiles()
            .iter()
            .enumerate()
            .map(|(i, _)| index.effective(i).rules.len())
            .sum();
        eprintln!(
            "armorwatch explain: read {} files in {:.1} ms; parsed and indexed {} declarations ({} syntax errors) in {:.1} ms; resolved includes of every declaration ({} rules) in {:.1} ms",
            index.file_count(),
            loaded.as_secs_f64() * 1e3,
            index.profiles().len(),
            index.errors().len(),
            (indexed - loaded).as_secs_f64() * 1e3,
            rules,
            (started.elapsed() - indexed).as_secs_f64() * 1e3
        );
    }
    if !index.errors().is_empty() {
        eprintln!(
            "armorwatch explain: {} syntax error(s) in {} (the rest is indexed){}",
            index.errors().len(),
            args.profiles.display(),
            if args.show_syntax_errors {
                ":"
            } else {
                "; --show-syntax-errors lists them"
            }
        );
        if args.show_syntax_errors {
            for e in index.errors() {
                eprintln!("  {}/{e}", index.base());
            }
        }
    }

    let mut events = read_events(&args.records)?;
    // Policy loads and hints are not access decisions: nothing to explain. Loads and replaces
    // still tell whether a denial began right after its profile changed.
    let mut changes = PolicyChanges::default();
    for e in &events {
        changes.observe(e);
    }
    let before = events.len();
    events.retain(|e| !matches!(e.kind, Kind::Status | Kind::Hint));
    if events.len() < before {
        eprintln!(
            "armorwatch explain: skipped {} status/hint record(s)",
            before - events.len()
        );
    }
    if events.is_empty() {
        eprintln!("armorwatch explain: no AppArmor records in the input");
        return Ok(ExitCode::from(1));
    }

    let mut facts = system::Facts::new(!args.no_packages);
    let mut checks: HashMap<(String, String, String), (CheckStatus, Option<String>)> =
        HashMap::new();
    let mut explainer = Explainer::new(index, 4096);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let explain_started = Instant::now();
    for event in &events {
        let mut ctx = facts.context(explainer.index(), event);
        ctx.after_profile_replace = changes
            .after_replace(event, history::DEFAULT_WINDOW_SECS)
            .filter(|b| *b);
        let mut exp = explainer.explain(event, &ctx);
        if !args.no_check
            && let Some(s) = exp.explanation.suggestion.as_mut()
        {
            let key = (
                s.profile_file.clone(),
                format!("{:?}", s.edit),
                s.rule.clone(),
            );
            let (status, message) = checks
                .entry(key)
                .or_insert_with(|| {
                    system::check_suggestion(&args.profiles, s);
                    (s.check, s.check_message.clone())
                })
                .clone();
            s.check = status;
            s.check_message = message;
        }
        if args.json {
            super::write_json_line(&mut out, &mut Vec::new(), &exp)
                .context("writing to standard output")?;
        } else {
            write!(out, "{}", render_text(&exp, explainer.index()))
                .context("writing to standard output")?;
            writeln!(out).context("writing to standard output")?;
        }
    }
    out.flush().context("writing to standard output")?;
    if args.stats {
        let (hits, misses) = explainer.stats();
        eprintln!(
            "armorwatch explain: explained {} records in {:.1} ms ({hits} from the cache, {misses} computed)",
            events.len(),
            explain_started.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn collect(outputs: Vec<Output>, events: &mut Vec<Event>) {
    for o in outputs {
        match o {
            Output::Event(e) => events.push(*e),
            Output::Malformed(m) => eprintln!("armorwatch explain: malformed record: {}", m.reason),
            Output::Loss(_) => {}
        }
    }
}

fn read_events(records: &[String]) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    let from_stdin = records.is_empty() || records.iter().any(|r| r == "-");
    for r in records.iter().filter(|r| *r != "-") {
        collect(parse::parse_text(r, &Source::Text), &mut events);
    }
    if from_stdin {
        let mut parser = Parser::new();
        let mut out = Vec::new();
        let stdin = io::stdin();
        for (n, line) in stdin.lock().split(b'\n').enumerate() {
            let line = line.context("reading standard input")?;
            let line_no = u64::try_from(n).unwrap_or(u64::MAX).saturating_add(1);
            let text = String::from_utf8_lossy(&line);
            parser.push_line(
                text.trim_end_matches('\r'),
                &Source::Stdin { line: line_no },
                &mut out,
            );
            collect(std::mem::take(&mut out), &mut events);
        }
        parser.finish(&mut out);
        collect(out, &mut events);
    }
    Ok(events)
}

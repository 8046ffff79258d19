//! Log files named on the command line (or standard input) fed line by line into a [`Parser`]:
//! shared by `parse` and `correlate`.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use crate::event::Source;
use crate::linereader::{MAX_LINE, read_line_capped};
use crate::parse::{Output, Parser};

/// What went wrong while reading, for the summary and the exit status.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InputSummary {
    /// Files that could not be opened or read to the end (reported on stderr as they happen).
    pub files_failed: usize,
    /// Lines longer than [`MAX_LINE`], cut at that length.
    pub long_lines: u64,
}

/// Feed every line of `files` (`-` or none: standard input) to `parser`, in order; after each
/// line, `after_line` gets the outputs produced so far. An unreadable file is reported on stderr
/// and the others are still read. The parser is not finished here.
pub fn feed_lines(
    files: &[PathBuf],
    parser: &mut Parser,
    out: &mut Vec<Output>,
    mut after_line: impl FnMut(&mut Vec<Output>) -> anyhow::Result<()>,
) -> anyhow::Result<InputSummary> {
    let mut summary = InputSummary::default();
    let inputs: Vec<Option<&PathBuf>> = if files.is_empty() {
        vec![None]
    } else {
        files
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
        let mut reader = BufReader::with_capacity(1 << 17, reader);
        let mut buf = Vec::with_capacity(4096);
        let mut line_no = 0u64;
        loop {
            let read = match read_line_capped(&mut reader, &mut buf, MAX_LINE) {
                Ok(r) => r,
                Err(e) => {
                    let what = name.as_deref().unwrap_or("standard input");
                    eprintln!("armorwatch: error reading {what}: {e}");
                    summary.files_failed += 1;
                    break;
                }
            };
            if read.consumed == 0 {
                break;
            }
            line_no += 1;
            if read.truncated {
                summary.long_lines += 1;
            }
            let source = match &name {
                Some(path) => Source::File {
                    path: path.clone(),
                    line: line_no,
                },
                None => Source::Stdin { line: line_no },
            };
            match std::str::from_utf8(&buf) {
                Ok(text) => parser.push_line(text, &source, out),
                Err(_) => parser.push_line(&String::from_utf8_lossy(&buf), &source, out),
            }
            after_line(out)?;
        }
    }
    Ok(summary)
}

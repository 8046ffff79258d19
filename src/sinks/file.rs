//! The `file` sink's writer: JSON lines appended whole, one `write` per batch of alerts,
//! reopened when the daemon asks (SIGHUP) or when the path no longer names the open file
//! (logrotate moved it away), rotated by size (`path.1` … `path.N`) when configured.
//!
//! People `tail -f` these files, so characters a terminal acts on that JSON leaves raw (DEL, C1
//! controls such as CSI U+009B, bidi overrides) are written as `\uXXXX`: the same JSON value
//! ([`json_for_terminal`]; one byte scan per line, nothing copied when there is none).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::config::FileSpec;
use super::escape::json_for_terminal;

/// If `file` (opened for reading and appending) does not end in a newline — a line torn by a
/// crash in the middle of its write —, end it, so the next line starts on a line of its own.
pub fn end_torn_line(file: &mut File) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] != b'\n' {
        file.write_all(b"\n")?;
    }
    Ok(())
}

/// An open JSON-lines file.
#[derive(Debug)]
pub struct FileWriter {
    path: PathBuf,
    file: Option<File>,
    id: (u64, u64),
    size: u64,
    max_size_bytes: Option<u64>,
    max_files: u32,
}

impl FileWriter {
    /// Open (create, mode 0640, parent directories too) for appending.
    pub fn open(spec: &FileSpec) -> io::Result<FileWriter> {
        let mut w = FileWriter {
            path: spec.path.clone(),
            file: None,
            id: (0, 0),
            size: 0,
            max_size_bytes: spec.max_size_bytes,
            max_files: spec.max_files,
        };
        w.reopen()?;
        Ok(w)
    }

    /// Close and open the path again (after logrotate, on SIGHUP).
    pub fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o640)
            .open(&self.path)?;
        end_torn_line(&mut f)?;
        let m = f.metadata()?;
        self.id = (m.dev(), m.ino());
        self.size = m.len();
        self.file = Some(f);
        Ok(())
    }

    fn moved_away(&self) -> bool {
        match fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.id,
            Err(_) => true,
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.max_files == 0 {
            let _ = fs::remove_file(&self.path);
        } else {
            let numbered = |n: u32| crate::checkpoint::with_suffix(&self.path, &format!(".{n}"));
            let _ = fs::remove_file(numbered(self.max_files));
            for n in (1..self.max_files).rev() {
                let from = numbered(n);
                if from.exists() {
                    fs::rename(&from, numbered(n + 1))?;
                }
            }
            fs::rename(&self.path, numbered(1))?;
        }
        self.reopen()
    }

    /// Append one JSON line (a newline is added).
    pub fn write_line(&mut self, line: &str) -> io::Result<()> {
        self.write_lines([line]).map_err(|(_, e)| e)
    }

    /// Append JSON lines (a newline is added to each; see [`json_for_terminal`]) with one
    /// `write` per file they go to; on failure, how many were written before it. Whether the
    /// file was moved away is checked once.
    pub fn write_lines<'a>(
        &mut self,
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), (usize, io::Error)> {
        if self.file.is_none() || self.moved_away() {
            self.reopen().map_err(|e| (0, e))?;
        }
        let mut buf = Vec::new();
        let (mut written, mut in_buf) = (0, 0);
        for line in lines {
            let line = json_for_terminal(line);
            let len = line.len() as u64 + 1;
            if let Some(max) = self.max_size_bytes {
                let size = self.size + buf.len() as u64;
                if size > 0 && size + len > max {
                    self.append(&buf).map_err(|e| (written, e))?;
                    written += in_buf;
                    (buf, in_buf) = (Vec::new(), 0);
                    self.rotate().map_err(|e| (written, e))?;
                }
            }
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            in_buf += 1;
        }
        self.append(&buf).map_err(|e| (written, e))
    }

    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("file not open"));
        };
        if let Err(e) = f.write_all(buf) {
            // Part of the batch may be in the file, its last line torn (ENOSPC mid-write): the
            // next write reopens the file, which ends that line first (`end_torn_line`).
            self.file = None;
            return Err(e);
        }
        self.size += buf.len() as u64;
        Ok(())
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_ended_before_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        fs::write(&path, "{\"n\":1}\n{\"n\":").unwrap();
        let spec = FileSpec {
            path: path.clone(),
            content: super::super::config::Content::Alerts,
            max_size_bytes: None,
            max_files: 0,
        };
        let mut w = FileWriter::open(&spec).unwrap();
        w.write_line("{\"n\":3}").unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"n\":1}\n{\"n\":\n{\"n\":3}\n"
        );
        // A whole file is left as it is.
        drop(w);
        let mut w = FileWriter::open(&spec).unwrap();
        w.write_line("{\"n\":4}").unwrap();
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .ends_with("{\"n\":3}\n{\"n\":4}\n")
        );
    }

    #[test]
    fn follows_logrotate_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let spec = FileSpec {
            path: path.clone(),
            content: super::super::config::Content::Alerts,
            max_size_bytes: Some(20),
            max_files: 2,
        };
        let mut w = FileWriter::open(&spec).unwrap();
        w.write_line("{\"n\":1}").unwrap();
        // logrotate: move away; the next line goes to a new file at the path.
        fs::rename(&path, dir.path().join("moved")).unwrap();
        w.write_line("{\"n\":2}").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("moved")).unwrap(),
            "{\"n\":1}\n"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"n\":2}\n");
        w.write_line("{\"n\":3}").unwrap();
        w.write_line("{\"n\":4}").unwrap(); // 24 bytes > 20: rotate first
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"n\":4}\n");
        let p1 = dir.path().join("a.jsonl.1");
        assert_eq!(fs::read_to_string(p1).unwrap(), "{\"n\":2}\n{\"n\":3}\n");
    }

    #[test]
    fn lines_are_safe_to_tail_and_parse_to_the_same_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let spec = FileSpec {
            path: path.clone(),
            content: super::super::config::Content::Alerts,
            max_size_bytes: None,
            max_files: 0,
        };
        let v = serde_json::json!({"object": "\u{9B}2J\u{7F}\u{202E}gnp.exe\u{2069}é"});
        let mut w = FileWriter::open(&spec).unwrap();
        w.write_line(&serde_json::to_string(&v).unwrap()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(['\u{9B}', '\u{7F}', '\u{202E}', '\u{2069}']),
            "{text:?}"
        );
        let back: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(back, v);
    }
}

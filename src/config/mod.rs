//! Configuration: TOML text → [`raw::RawConfig`] (serde, unknown keys collected with their key
//! path) → [`validate`] → [`Config`], the validated settings the rest of the program uses.

pub mod raw;
pub mod validate;

use std::path::{Path, PathBuf};

pub use validate::{Config, SinkConfig, SourceConfig};

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/armorwatch";

/// Why a configuration was rejected. Every variant names the file and, where there is one, the
/// TOML key path (`sources.audit_log.path`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or a value has the wrong type.
    #[error("{path}: {message}")]
    Syntax {
        /// The configuration file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// Keys that armorwatch does not know.
    #[error("{path}: unknown key{} {}", if keys.len() == 1 { "" } else { "s" }, keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "))]
    UnknownKeys {
        /// The configuration file.
        path: PathBuf,
        /// Full key paths, e.g. `sources.audit_log.pth`.
        keys: Vec<String>,
    },
    /// A value is not acceptable.
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// The key path.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Read, parse and validate a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parse and validate configuration text; `path` is only used in messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw = raw::parse(text, path)?;
    validate::validate(raw, path)
}

/// A parser's message without the values it quotes: configuration values may be secrets (a
/// webhook URL with its token, an `Authorization` header), and these messages reach the
/// journal. The excerpt of the file that TOML errors show (`3 | url="https://…`) is dropped —
/// the line and column stay — and serde's `string "…"` becomes `a string`.
pub fn without_values(message: &str) -> String {
    let kept: Vec<&str> = message
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            // `  |`, `3 | text`, `  |     ^`: the excerpt and its caret.
            let gutter = t.trim_start_matches(|c: char| c.is_ascii_digit());
            !(gutter.starts_with('|') || gutter.starts_with(" |"))
        })
        .collect();
    let mut out = String::new();
    for line in kept {
        let mut rest = line;
        while let Some(at) = rest.find("string \"") {
            out.push_str(&rest[..at]);
            out.push_str("a string");
            // Skip the Debug-quoted value: to the first `"` not escaped by `\`.
            let value = &rest[at + "string \"".len()..];
            let mut end = value.len();
            let mut escaped = false;
            for (i, c) in value.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = i + 1;
                        break;
                    }
                    _ => escaped = false,
                }
            }
            rest = &value[end.min(value.len())..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::without_values;

    /// Debug-quoted strings with escaped quotes end at their real end; the excerpt and its
    /// caret go, the position and the message stay.
    #[test]
    fn values_are_cut_out_of_messages() {
        assert_eq!(
            without_values(r#"invalid type: string "a \"b\" c", expected a map"#),
            "invalid type: a string, expected a map"
        );
        assert_eq!(
            without_values(
                "TOML parse error at line 3, column 5\n  |\n3 | url=\"https://x/T0\n  |     ^\ninvalid basic string"
            ),
            "TOML parse error at line 3, column 5\ninvalid basic string"
        );
    }
}

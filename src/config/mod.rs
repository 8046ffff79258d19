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

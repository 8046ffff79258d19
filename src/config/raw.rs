//! The configuration file as written: serde types mirroring the TOML, one doc comment per key.
//!
//! Unknown keys are rejected with their full key path. `#[serde(deny_unknown_fields)]` would
//! stop at the first one without saying where it was, so the types accept unknown keys and
//! [`parse`] collects every ignored key with `serde_ignored`, which tracks the path. The
//! `[sinks.NAME]` tables are kept as raw TOML tables: the sinks module validates them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    /// `[state]`.
    pub state: Option<RawState>,
    /// `[sources.*]`: a table's presence enables that source.
    pub sources: Option<RawSources>,
    /// `[sinks.NAME]`: validated by the sinks module; only `type` is read here.
    #[serde(default)]
    pub sinks: BTreeMap<String, toml::Table>,
    /// `[correlate]`.
    pub correlate: Option<RawCorrelate>,
    /// `[profiles]`.
    pub profiles: Option<RawProfiles>,
    /// The host name put into alerts (default: the machine's host name).
    pub host: Option<String>,
    /// `[metrics]`.
    pub metrics: Option<RawMetrics>,
}

/// `[metrics]`: the Prometheus and health endpoint (off unless `listen` is set).
#[derive(Debug, Default, Deserialize)]
pub struct RawMetrics {
    /// Address and port to serve `/metrics` and `/healthz` on, e.g. `127.0.0.1:9812`.
    pub listen: Option<String>,
}

/// `[correlate]`: how events become incidents and alerts.
#[derive(Debug, Default, Deserialize)]
pub struct RawCorrelate {
    /// The window in seconds: at most one `incident.update` per window while an incident keeps
    /// happening, and `incident.closed` after this long without an event (default 300).
    pub window_secs: Option<u64>,
    /// Cap on incident alerts per minute across all incidents; what it holds back is announced
    /// in a `suppressed` alert with exact counts, never dropped (default 120; 0 = no cap).
    pub max_alerts_per_minute: Option<u32>,
    /// Cap on open incidents; beyond it the least recently seen is closed with its counts
    /// (default 10000).
    pub max_open_incidents: Option<usize>,
    /// AppArmor's severity database (default `/etc/apparmor/severity.db`, else a bundled copy).
    pub severity_db: Option<PathBuf>,
    /// A directory of `*.toml` noise-rule drop-ins added to the bundled rules
    /// (default `/etc/armorwatch/noise.d`).
    pub noise_dir: Option<PathBuf>,
}

/// `[profiles]`: where the explanations come from.
#[derive(Debug, Default, Deserialize)]
pub struct RawProfiles {
    /// The profile tree (default `/etc/apparmor.d`).
    pub dir: Option<PathBuf>,
    /// Compile-check every suggested rule with `apparmor_parser` when it is installed
    /// (default true).
    pub check_suggestions: Option<bool>,
    /// How long an alert waits for its suggestion's compile check (default 1000 ms).
    pub check_wait_ms: Option<u64>,
    /// Explain alerts at all (default true).
    pub enabled: Option<bool>,
}

/// `[state]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawState {
    /// Directory for checkpoints (default `/var/lib/armorwatch`).
    pub dir: Option<PathBuf>,
    /// How often positions are saved while events flow, in milliseconds (default 1000; 0 saves
    /// after every delivered batch). Whatever was delivered after the last save is delivered
    /// again after a crash (at-least-once).
    pub checkpoint_interval_ms: Option<u64>,
}

/// `[sources]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawSources {
    /// `[sources.journald]`.
    pub journald: Option<RawJournald>,
    /// `[sources.audit_log]`.
    pub audit_log: Option<RawFile>,
    /// `[sources.kernel_log]`.
    pub kernel_log: Option<RawFile>,
    /// `[sources.netlink]`.
    pub netlink: Option<RawNetlink>,
}

/// `[sources.journald]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawJournald {
    /// A directory of journal files; default: the system journal.
    pub directory: Option<PathBuf>,
}

/// `[sources.audit_log]` and `[sources.kernel_log]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawFile {
    /// The file to follow.
    pub path: Option<PathBuf>,
}

/// `[sources.netlink]` (no keys yet).
#[derive(Debug, Default, Deserialize)]
pub struct RawNetlink {}

/// Parse TOML text; unknown keys are an error listing each key path.
pub fn parse(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    let mut unknown = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(toml::Deserializer::new(text), &mut track);
    let parsed: Result<RawConfig, _> =
        serde_ignored::deserialize(de, |p| unknown.push(key_path(&p)));
    let raw = parsed.map_err(|e| {
        let message = super::without_values(e.to_string().trim_end());
        // A wrong type has a key path; malformed TOML has none (its message shows the line).
        let key = track.path().to_string();
        if key.is_empty() || key == "." || key == "?" {
            ConfigError::Syntax {
                path: path.to_path_buf(),
                message,
            }
        } else {
            ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            }
        }
    })?;
    if !unknown.is_empty() {
        return Err(ConfigError::UnknownKeys {
            path: path.to_path_buf(),
            keys: unknown,
        });
    }
    Ok(raw)
}

/// `sources.audit_log.pth` from serde_ignored's path (whose `Display` shows `?` for options).
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => join(key_path(parent), &index.to_string()),
        Path::Map { parent, key } => join(key_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

fn join(parent: String, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

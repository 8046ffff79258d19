//! Validation: [`RawConfig`] → [`Config`], with defaults filled in and every error naming its key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawConfig;
use super::{ConfigError, DEFAULT_STATE_DIR};

/// Default path of the audit log.
pub const DEFAULT_AUDIT_LOG: &str = "/var/log/audit/audit.log";
/// Default kernel log.
pub const DEFAULT_KERNEL_LOG: &str = "/dev/kmsg";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where checkpoints live.
    pub state_dir: PathBuf,
    /// How often positions are saved while events flow.
    pub checkpoint_interval: Duration,
    /// Configured sources; empty means automatic selection.
    pub sources: Vec<SourceConfig>,
    /// `[sinks.NAME]` tables, in name order.
    pub sinks: Vec<SinkConfig>,
    /// `[correlate]`.
    pub correlate: CorrelateSettings,
    /// `[profiles]`.
    pub profiles: ProfileSettings,
    /// `host`: the host name in alerts; None = the machine's.
    pub host: Option<String>,
    /// `[metrics] listen`: where to serve `/metrics` and `/healthz`; None = off.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Validated `[correlate]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelateSettings {
    /// The window.
    pub window: Duration,
    /// Incident alerts per minute (0 = no cap).
    pub max_alerts_per_minute: u32,
    /// Open incidents kept.
    pub max_open_incidents: usize,
    /// severity.db.
    pub severity_db: PathBuf,
    /// Noise drop-ins.
    pub noise_dir: PathBuf,
}

impl Default for CorrelateSettings {
    fn default() -> Self {
        CorrelateSettings {
            window: Duration::from_secs(300),
            max_alerts_per_minute: 120,
            max_open_incidents: 10_000,
            severity_db: PathBuf::from("/etc/apparmor/severity.db"),
            noise_dir: PathBuf::from("/etc/armorwatch/noise.d"),
        }
    }
}

/// Validated `[profiles]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSettings {
    /// Explain alerts.
    pub enabled: bool,
    /// The profile tree.
    pub dir: PathBuf,
    /// Compile-check suggestions.
    pub check_suggestions: bool,
    /// How long an alert waits for its suggestion's compile check before it goes out with
    /// the check `skipped` (still running); later alerts of the incident carry the result.
    pub check_wait: Duration,
}

impl Default for ProfileSettings {
    fn default() -> Self {
        ProfileSettings {
            enabled: true,
            dir: PathBuf::from("/etc/apparmor.d"),
            check_suggestions: true,
            check_wait: Duration::from_millis(1000),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            checkpoint_interval: Duration::from_millis(1000),
            sources: Vec::new(),
            sinks: Vec::new(),
            correlate: CorrelateSettings::default(),
            profiles: ProfileSettings::default(),
            host: None,
            metrics_listen: None,
        }
    }
}

/// One configured source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// The journal: the system journal, or the files in `directory`.
    Journald {
        /// A directory of journal files.
        directory: Option<PathBuf>,
    },
    /// auditd's log.
    AuditLog {
        /// The file.
        path: PathBuf,
    },
    /// `/dev/kmsg` or a syslog file.
    KernelLog {
        /// The device or file.
        path: PathBuf,
    },
    /// The audit netlink multicast group.
    Netlink,
}

impl SourceConfig {
    /// The name used in checkpoints and messages (`audit_log`, …).
    pub fn name(&self) -> &'static str {
        match self {
            SourceConfig::Journald { .. } => "journald",
            SourceConfig::AuditLog { .. } => "audit_log",
            SourceConfig::KernelLog { .. } => "kernel_log",
            SourceConfig::Netlink => "netlink",
        }
    }
}

/// A `[sinks.NAME]` table. Only `type` is checked here; the rest belongs to the sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// NAME.
    pub name: String,
    /// `type`.
    pub kind: String,
    /// The whole table, `type` included.
    pub table: toml::Table,
}

/// Validate a parsed file.
pub fn validate(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
    let invalid = |key: &str, message: &str| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: key.to_string(),
        message: message.to_string(),
    };
    let mut config = Config::default();
    if let Some(state) = raw.state {
        if let Some(dir) = state.dir {
            if !dir.is_absolute() {
                return Err(invalid("state.dir", "must be an absolute path"));
            }
            config.state_dir = dir;
        }
        if let Some(ms) = state.checkpoint_interval_ms {
            if ms > 3_600_000 {
                return Err(invalid(
                    "state.checkpoint_interval_ms",
                    "must be at most 3600000 (one hour)",
                ));
            }
            config.checkpoint_interval = Duration::from_millis(ms);
        }
    }
    if let Some(sources) = raw.sources {
        if let Some(j) = sources.journald {
            if let Some(d) = &j.directory {
                if !d.is_absolute() {
                    return Err(invalid(
                        "sources.journald.directory",
                        "must be an absolute path",
                    ));
                }
            }
            config.sources.push(SourceConfig::Journald {
                directory: j.directory,
            });
        }
        if let Some(a) = sources.audit_log {
            let path = a.path.unwrap_or_else(|| PathBuf::from(DEFAULT_AUDIT_LOG));
            if !path.is_absolute() {
                return Err(invalid(
                    "sources.audit_log.path",
                    "must be an absolute path",
                ));
            }
            config.sources.push(SourceConfig::AuditLog { path });
        }
        if let Some(k) = sources.kernel_log {
            let path = k.path.unwrap_or_else(|| PathBuf::from(DEFAULT_KERNEL_LOG));
            if !path.is_absolute() {
                return Err(invalid(
                    "sources.kernel_log.path",
                    "must be an absolute path",
                ));
            }
            config.sources.push(SourceConfig::KernelLog { path });
        }
        if sources.netlink.is_some() {
            config.sources.push(SourceConfig::Netlink);
        }
    }
    if let Some(c) = raw.correlate {
        if let Some(w) = c.window_secs {
            if w == 0 || w > 86_400 {
                return Err(invalid(
                    "correlate.window_secs",
                    "must be between 1 and 86400",
                ));
            }
            config.correlate.window = Duration::from_secs(w);
        }
        if let Some(n) = c.max_alerts_per_minute {
            config.correlate.max_alerts_per_minute = n;
        }
        if let Some(n) = c.max_open_incidents {
            if n == 0 {
                return Err(invalid(
                    "correlate.max_open_incidents",
                    "must be at least 1",
                ));
            }
            config.correlate.max_open_incidents = n;
        }
        if let Some(p) = c.severity_db {
            if !p.is_absolute() {
                return Err(invalid("correlate.severity_db", "must be an absolute path"));
            }
            config.correlate.severity_db = p;
        }
        if let Some(p) = c.noise_dir {
            if !p.is_absolute() {
                return Err(invalid("correlate.noise_dir", "must be an absolute path"));
            }
            config.correlate.noise_dir = p;
        }
    }
    if let Some(p) = raw.profiles {
        if let Some(dir) = p.dir {
            if !dir.is_absolute() {
                return Err(invalid("profiles.dir", "must be an absolute path"));
            }
            config.profiles.dir = dir;
        }
        if let Some(b) = p.check_suggestions {
            config.profiles.check_suggestions = b;
        }
        if let Some(ms) = p.check_wait_ms {
            // The wait pings systemd's watchdog and ends when the daemon stops or reloads
            // (profiles::check), so only the alerts' delay bounds it.
            if ms > 600_000 {
                return Err(invalid(
                    "profiles.check_wait_ms",
                    "must be at most 600000 (10 min)",
                ));
            }
            config.profiles.check_wait = Duration::from_millis(ms);
        }
        if let Some(b) = p.enabled {
            config.profiles.enabled = b;
        }
    }
    if let Some(h) = raw.host {
        if h.is_empty() || h.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("host", "must be a non-empty name without spaces"));
        }
        config.host = Some(h);
    }
    if let Some(m) = raw.metrics {
        if let Some(listen) = m.listen {
            let addr = listen.parse::<std::net::SocketAddr>().map_err(|_| {
                invalid(
                    "metrics.listen",
                    "must be an IP address and port, such as \"127.0.0.1:9812\"",
                )
            })?;
            config.metrics_listen = Some(addr);
        }
    }
    for (name, table) in raw.sinks {
        let key = format!("sinks.{name}.type");
        let kind = match table.get("type") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(_) => return Err(invalid(&key, "must be a string")),
            None => return Err(invalid(&key, "is required")),
        };
        config.sinks.push(SinkConfig { name, kind, table });
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn err(text: &str) -> String {
        parse(text, Path::new("t.toml")).unwrap_err().to_string()
    }

    #[test]
    fn issue_example_parses() {
        let c = parse(
            r#"
[state]
dir = "/var/lib/armorwatch"
[sources.journald]
directory = "/var/log/journal"
[sources.audit_log]
path = "/var/log/audit/audit.log"
[sources.kernel_log]
path = "/dev/kmsg"
[sources.netlink]
[sinks.out]
type = "file"
path = "/var/log/armorwatch/events.jsonl"
content = "events"
"#,
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.sources.len(), 4);
        assert_eq!(c.sinks[0].kind, "file");
        assert_eq!(
            c.sinks[0].table.get("content").and_then(|v| v.as_str()),
            Some("events")
        );
    }

    #[test]
    fn unknown_keys_carry_their_path() {
        assert_eq!(
            err("[sources.audit_log]\npth = \"/x\"\n[state]\ndri = \"/y\"\n"),
            "t.toml: unknown keys `sources.audit_log.pth`, `state.dri`"
        );
        assert!(err("[sources.jounrald]\n").contains("`sources.jounrald`"));
        assert!(err("top = 1\n").contains("`top`"));
    }

    #[test]
    fn bad_values_name_the_key() {
        assert!(
            err("[sources.audit_log]\npath = \"rel/a.log\"\n").contains("`sources.audit_log.path`")
        );
        assert!(err("[sinks.x]\npath = \"/a\"\n").contains("`sinks.x.type`: is required"));
    }

    /// Regression: a value of the wrong type was reported with the parser's line and column
    /// only; now with its key path too, like every other bad value.
    #[test]
    fn wrong_types_name_the_key() {
        let e = err("[state]\ndir = 5\n");
        assert!(e.starts_with("t.toml: `state.dir`: "), "{e}");
        let e = err("[correlate]\nwindow_secs = \"10m\"\n");
        assert!(e.starts_with("t.toml: `correlate.window_secs`: "), "{e}");
        assert!(e.contains("line 2"), "the position is kept: {e}");
        let e = err("[profiles]\ncheck_suggestions = \"yes\"\n");
        assert!(
            e.starts_with("t.toml: `profiles.check_suggestions`: "),
            "{e}"
        );
        // Malformed TOML has no key to name: the parser's message stands.
        let e = err("[state\n");
        assert!(e.starts_with("t.toml: TOML parse error"), "{e}");
    }

    #[test]
    fn check_wait_is_bounded() {
        assert!(err("[profiles]\ncheck_wait_ms = 600001\n").contains("`profiles.check_wait_ms`"));
        assert!(parse("[profiles]\ncheck_wait_ms = 600000\n", Path::new("t.toml")).is_ok());
    }

    #[test]
    fn metrics_listen_is_an_address() {
        let c = parse(
            "[metrics]\nlisten = \"127.0.0.1:9812\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9812".parse().unwrap()));
        assert!(Config::default().metrics_listen.is_none(), "off by default");
        assert!(err("[metrics]\nlisten = \"localhost\"\n").contains("`metrics.listen`"));
        assert!(err("[metrics]\nlisten = 9812\n").contains("`metrics.listen`"));
        assert!(err("[metrics]\nport = 1\n").contains("`metrics.port`"));
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../../config.example.toml");
        parse(text, Path::new("config.example.toml")).unwrap();
    }
}

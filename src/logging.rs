//! The daemon's log: `tracing` events to the journal's native protocol when standard error is
//! connected to the journal (systemd sets `$JOURNAL_STREAM` to its device and inode), else to
//! standard error as text lines. `$ARMORWATCH_LOG` sets the level (`error`, `warn`, `info`
//! (default), `debug`, `trace`).
//!
//! Fields are sent to journald without a prefix, so `message_id` becomes `MESSAGE_ID` (see
//! [`crate::metrics::ALERT_MESSAGE_ID`]) and `armorwatch_incident` becomes `ARMORWATCH_INCIDENT`.

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

/// True when `$JOURNAL_STREAM` names the file standard error is open on.
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(fd).metadata() {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        Err(_) => false,
    }
}

fn level() -> LevelFilter {
    let value = std::env::var("ARMORWATCH_LOG").unwrap_or_default();
    level_of(&value).unwrap_or_else(|| {
        // Before the subscriber exists: standard error is where this can go.
        eprintln!(
            "armorwatch: ARMORWATCH_LOG={value:?} is not a level (error, warn, info, debug, trace, off); logging at info"
        );
        LevelFilter::INFO
    })
}

/// The level a `$ARMORWATCH_LOG` value names (empty: the default, info).
fn level_of(value: &str) -> Option<LevelFilter> {
    Some(match value.trim().to_ascii_lowercase().as_str() {
        "error" => LevelFilter::ERROR,
        "warn" | "warning" => LevelFilter::WARN,
        "" | "info" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        "off" => LevelFilter::OFF,
        _ => return None,
    })
}

/// Install the global subscriber (once; later calls do nothing). Returns "journal" or "stderr".
pub fn init() -> &'static str {
    let level = level();
    if stderr_is_journal() {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_field_prefix(None)
                .with_syslog_identifier("armorwatch".to_string());
            let _ = tracing_subscriber::registry()
                .with(layer)
                .with(level)
                .try_init();
            return "journal";
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(level)
        .try_init();
    "stderr"
}

/// True once [`init`] installed the subscriber (`armorwatch run`).
pub fn active() -> bool {
    tracing::dispatcher::has_been_set()
}

/// A warning from code shared by the daemon and the one-shot commands: through `tracing` in the
/// daemon (so it reaches the journal with its priority), as `armorwatch: …` on standard error
/// otherwise.
#[macro_export]
macro_rules! log_warn {
    ($($arg:tt)*) => {
        if $crate::logging::active() {
            ::tracing::warn!($($arg)*)
        } else {
            eprintln!("armorwatch: {}", format_args!($($arg)*))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `warning` (syslog's word) is warn; a value that is no level is reported, not taken
    /// silently as info (found by a review helper).
    #[test]
    fn log_levels_are_read_and_a_wrong_one_is_not_silent() {
        assert_eq!(level_of("warning"), Some(LevelFilter::WARN));
        assert_eq!(level_of(" Debug "), Some(LevelFilter::DEBUG));
        assert_eq!(level_of(""), Some(LevelFilter::INFO));
        assert_eq!(level_of("verbose"), None);
    }
}

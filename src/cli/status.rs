//! `armorwatch status [--state-dir DIR | --config FILE] [--json]`: the open incidents (from
//! `incidents.json`, which the daemon saves with every checkpoint and at stop) and the latest
//! incident alerts (from `recent-alerts.json`), with the explanation's headline. Text for people
//! (every value from a log is shown with its control characters made visible), `--json` for
//! scripts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::alerting::INCIDENTS_FILE;
use crate::correlate::Snapshot;
use crate::metrics::{RECENT_FILE, RecentAlert, read_recent};
use crate::sinks::escape::{json_for_terminal, plain};
use crate::sinks::rfc3339;

/// Arguments of `armorwatch status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The state directory (default: `[state] dir` of --config, or of
    /// /etc/armorwatch/config.toml when it exists, else /var/lib/armorwatch).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The configuration file naming the state directory (default:
    /// /etc/armorwatch/config.toml when it exists).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// One JSON object for scripts.
    #[arg(long)]
    pub json: bool,
    /// How many recent alerts to show.
    #[arg(long, default_value_t = 10)]
    pub recent: usize,
}

/// One open incident.
#[derive(Debug, Serialize)]
pub struct OpenIncident {
    /// Incident id.
    pub id: String,
    /// Severity 0–10.
    pub severity: u8,
    /// Profile.
    pub profile: String,
    /// Event kind (`denied`, `allowed` …).
    pub kind: String,
    /// Operation.
    pub operation: String,
    /// Object.
    pub object: String,
    /// Requested permission.
    pub permission: String,
    /// Events so far.
    pub total: u64,
    /// First event (RFC 3339).
    pub first_seen: String,
    /// Latest event (RFC 3339).
    pub last_seen: String,
    /// Host of the events, when not this one.
    pub host: Option<String>,
    /// Noise rule that matched.
    pub noise: Option<String>,
    /// The explanation's headline (from the incident's latest alert).
    pub headline: Option<String>,
    /// The suggested rule.
    pub suggestion: Option<String>,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
pub struct Status {
    /// The state directory read.
    pub state_dir: PathBuf,
    /// When the daemon last saved its incidents (RFC 3339), if it did.
    pub saved_at: Option<String>,
    /// Open incidents, most recently seen first.
    pub open: Vec<OpenIncident>,
    /// Latest incident alerts, newest first.
    pub recent: Vec<RecentAlert>,
}

/// Gather the status of a state directory.
pub fn gather(dir: &Path, recent_n: usize) -> anyhow::Result<Status> {
    let recent = read_recent(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(RECENT_FILE).display()))?
        .alerts;
    let mut latest: HashMap<&str, &RecentAlert> = HashMap::new();
    for r in &recent {
        let e = latest.entry(r.id.as_str()).or_insert(r);
        if r.headline.is_some() || e.headline.is_none() {
            *e = r;
        }
    }
    let path = dir.join(INCIDENTS_FILE);
    let snapshot: Option<Snapshot> = match std::fs::read(&path) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
    };
    let mut open: Vec<OpenIncident> = Vec::new();
    if let Some(s) = &snapshot {
        for i in s.incidents.iter().rev() {
            let r = latest.get(i.id.as_str());
            open.push(OpenIncident {
                id: i.id.clone(),
                severity: i.severity,
                profile: i.key.profile.clone(),
                kind: i.key.kind.clone(),
                operation: i.key.operation.clone(),
                object: i.key.object.clone(),
                permission: i.key.permission.clone(),
                total: i.total,
                first_seen: rfc3339(i.first_seen_ms),
                last_seen: rfc3339(i.last_seen_event_ms.max(i.first_seen_ms)),
                host: i.host.clone(),
                noise: i.noise.clone(),
                headline: r.and_then(|r| r.headline.clone()),
                suggestion: r.and_then(|r| r.suggestion.clone()),
            });
        }
    }
    Ok(Status {
        state_dir: dir.to_path_buf(),
        saved_at: snapshot.as_ref().map(|s| rfc3339(s.taken_at_ms)),
        open,
        recent: recent.iter().rev().take(recent_n).cloned().collect(),
    })
}

fn v(s: &str) -> String {
    plain(s, 200)
}

/// The text form.
pub fn render(status: &Status) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "state: {}{}",
        status.state_dir.display(),
        status
            .saved_at
            .as_deref()
            .map(|t| format!(" (incidents saved {t})"))
            .unwrap_or_else(|| " (no incidents saved yet)".into())
    );
    let _ = writeln!(o, "\nopen incidents: {}", status.open.len());
    for i in &status.open {
        let _ = writeln!(
            o,
            "  [{}] sev {} {} {}: profile {} {} {}{}",
            v(&i.id),
            i.severity,
            i.kind,
            v(&i.permission),
            v(&i.profile),
            v(&i.operation),
            v(&i.object),
            i.host
                .as_deref()
                .map(|h| format!(" on {}", v(h)))
                .unwrap_or_default()
        );
        let _ = writeln!(
            o,
            "      {} events, first {}, last {}{}",
            i.total,
            i.first_seen,
            i.last_seen,
            i.noise
                .as_deref()
                .map(|n| format!(", noise rule {}", v(n)))
                .unwrap_or_default()
        );
        if let Some(h) = &i.headline {
            let _ = writeln!(o, "      {}", v(h));
        }
        if let Some(s) = &i.suggestion {
            let _ = writeln!(o, "      fix: {}", v(s));
        }
    }
    let _ = writeln!(o, "\nrecent alerts: {}", status.recent.len());
    for r in &status.recent {
        let _ = writeln!(
            o,
            "  {} {} [{}] profile {} {} {} (total {})",
            r.last_seen.as_deref().unwrap_or("-"),
            v(&r.alert_type),
            v(&r.id),
            v(&r.profile),
            v(&r.operation),
            v(&r.object),
            r.total
        );
        if let Some(h) = &r.headline {
            let _ = writeln!(o, "      {}", v(h));
        }
    }
    o
}

/// The state directory to read: `--state-dir`, else `[state] dir` of `--config`, else of the
/// default configuration file when there is one (where the service reads its configuration
/// from), else the default directory.
fn state_dir(
    args: &StatusArgs,
    default_config: &Path,
) -> Result<PathBuf, crate::config::ConfigError> {
    match (&args.state_dir, &args.config) {
        (Some(d), _) => Ok(d.clone()),
        (None, Some(c)) => Ok(crate::config::load(c)?.state_dir),
        (None, None) if default_config.exists() => {
            Ok(crate::config::load(default_config)?.state_dir)
        }
        (None, None) => Ok(PathBuf::from(crate::config::DEFAULT_STATE_DIR)),
    }
}

/// Run the subcommand.
pub fn run(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let dir = match state_dir(args, Path::new(super::check_config::DEFAULT_CONFIG)) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("armorwatch: configuration error: {e}");
            return Ok(ExitCode::from(super::EXIT_CONFIG));
        }
    };
    if !dir.is_dir() {
        anyhow::bail!("{}: no such state directory", dir.display());
    }
    let status = gather(&dir, args.recent)?;
    if args.json {
        // Read in terminals too: what a terminal acts on (C1 controls, DEL, bidi overrides) in
        // a logged value as `\uXXXX`, the same JSON value.
        let json = serde_json::to_string_pretty(&status)?;
        println!("{}", json_for_terminal(&json));
    } else {
        print!("{}", render(&status));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(state_dir: Option<&Path>, config: Option<&Path>) -> StatusArgs {
        StatusArgs {
            state_dir: state_dir.map(Path::to_path_buf),
            config: config.map(Path::to_path_buf),
            json: false,
            recent: 10,
        }
    }

    /// Without options, status reads the state directory the service uses: the one of the
    /// default configuration file when it exists. It read /var/lib/armorwatch whatever that
    /// file said (found by a review helper).
    #[test]
    fn the_state_directory_comes_from_the_default_configuration_when_there_is_one() {
        let tmp = tempfile::tempdir().unwrap();
        let conf = tmp.path().join("config.toml");
        let missing = tmp.path().join("missing.toml");
        std::fs::write(&conf, "[state]\ndir = \"/srv/aw-state\"\n").unwrap();
        assert_eq!(
            state_dir(&args(None, None), &conf).unwrap(),
            Path::new("/srv/aw-state")
        );
        assert_eq!(
            state_dir(&args(None, None), &missing).unwrap(),
            Path::new(crate::config::DEFAULT_STATE_DIR)
        );
        // The options win over the default file.
        assert_eq!(
            state_dir(&args(Some(Path::new("/x")), None), &conf).unwrap(),
            Path::new("/x")
        );
        let other = tmp.path().join("other.toml");
        std::fs::write(&other, "[state]\ndir = \"/srv/other\"\n").unwrap();
        assert_eq!(
            state_dir(&args(None, Some(&other)), &conf).unwrap(),
            Path::new("/srv/other")
        );
        // A broken default file is a configuration error naming the key, not a silent
        // fallback to another directory.
        std::fs::write(&conf, "[state]\ndir = 5\n").unwrap();
        let e = state_dir(&args(None, None), &conf).unwrap_err().to_string();
        assert!(e.contains("state.dir"), "{e}");
    }
}

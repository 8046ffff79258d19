//! `armorwatch check-config [--config FILE]`: validate a configuration the way `run` would use it
//! — keys and types, every `[sinks.NAME]` (URLs, secret files and their permissions), the
//! correlator's files, the sources, the state and log directories and the profile tree — and
//! exit 78 (EX_CONFIG) when anything would stop `run`. Nothing is written except a temporary
//! file, removed at once, that proves a directory is writable.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::EXIT_CONFIG;
use crate::config::{self, Config, SourceConfig};
use crate::sinks::config::{SecretContext, SinkKind, SinkSpec};

/// The configuration file the packaged unit uses; `check-config` reads it by default.
pub const DEFAULT_CONFIG: &str = "/etc/armorwatch/config.toml";

/// Arguments of `armorwatch check-config`.
#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    /// The configuration file [default: /etc/armorwatch/config.toml; when it does not exist, the
    /// built-in defaults are checked].
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// One problem, with the TOML key path it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `sinks.mail.password_file`, `sources.audit_log.path`, …
    pub key: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

/// Everything `check` found.
#[derive(Debug, Default)]
pub struct Report {
    /// Problems that stop `run` (exit 78).
    pub errors: Vec<Finding>,
    /// Problems that do not stop `run` but lose something (a source that does not exist yet,
    /// no profile tree to explain with).
    pub warnings: Vec<Finding>,
    /// What would be used, one line each.
    pub notes: Vec<String>,
}

impl Report {
    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Finding {
            key: key.into(),
            message: message.into(),
        });
    }
    fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Finding {
            key: key.into(),
            message: message.into(),
        });
    }
}

fn whoami() -> String {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m).to_string())
        .unwrap_or_else(|_| "?".into());
    format!("uid {uid}")
}

/// Check a validated configuration against this machine. `explicit`: it came from a file (the
/// state directory is then required, as `run --config` requires it).
pub fn check(config: &Config, explicit: bool) -> Report {
    let mut r = Report::default();
    check_sinks(config, &mut r);
    let host = config
        .host
        .clone()
        .unwrap_or_else(crate::alerting::host_name);
    if let Err(e) = crate::alerting::correlator_config(config, &host) {
        r.error("correlate", e.to_string());
    }
    check_sources(config, &mut r);
    match writable_dir(&config.state_dir).and_then(|()| lock_readable(&config.state_dir)) {
        Ok(()) => {}
        Err(e) if explicit => r.error("state.dir", e),
        Err(e) => r.warn("state.dir", format!("{e}; `run` would keep no checkpoints")),
    }
    check_profiles(config, &mut r);
    check_metrics(config, &mut r);
    r
}

/// Can `metrics.listen` be bound? A port in use (a running armorwatch holds it) is only a
/// warning; an address not on this host or a port this user may not bind is what stops `run`.
fn check_metrics(config: &Config, r: &mut Report) {
    let Some(addr) = config.metrics_listen else {
        return;
    };
    match std::net::TcpListener::bind(addr) {
        Ok(_) => {}
        Err(e) if super::run::listen_never_works(&e) => r.error(
            "metrics.listen",
            format!("cannot listen on {addr} (as {}): {e}", whoami()),
        ),
        Err(e) => r.warn(
            "metrics.listen",
            format!("cannot listen on {addr} now: {e}"),
        ),
    }
}

fn check_sinks(config: &Config, r: &mut Report) {
    let ctx = SecretContext::from_env();
    if config.sinks.is_empty() {
        r.notes
            .push("sinks: none configured; alerts go to standard output as JSON lines".into());
    }
    for sink in &config.sinks {
        let spec = match SinkSpec::from_table(&sink.name, &sink.table, &ctx) {
            Ok(s) => s,
            Err(e) => {
                r.error(e.path, e.message);
                continue;
            }
        };
        r.notes
            .push(format!("sink {}: {}", spec.name, describe_sink(&spec.kind)));
        if let SinkKind::File(f) = &spec.kind {
            if let Err(e) = writable_file(&f.path) {
                r.error(format!("sinks.{}.path", spec.name), e);
            }
        }
    }
}

fn describe_sink(kind: &SinkKind) -> String {
    match kind {
        SinkKind::File(f) => format!(
            "file {} ({})",
            f.path.display(),
            if f.content == crate::sinks::config::Content::Events {
                "events"
            } else {
                "alerts"
            }
        ),
        other => other.type_name().to_string(),
    }
}

fn check_sources(config: &Config, r: &mut Report) {
    if config.sources.is_empty() {
        let selection = crate::sources::select(&crate::sources::probe());
        if selection.sources.is_empty() {
            r.warn(
                "sources",
                format!(
                    "none configured and none readable now (as {}); `run` would exit until one is \
                     (see `armorwatch doctor`): {}",
                    whoami(),
                    selection.reasons.join("; ")
                ),
            );
        } else {
            let names: Vec<&str> = selection.sources.iter().map(SourceConfig::name).collect();
            r.notes
                .push(format!("sources: automatic, now {}", names.join(" + ")));
        }
        return;
    }
    for source in &config.sources {
        let name = source.name();
        match source {
            SourceConfig::AuditLog { path } | SourceConfig::KernelLog { path } => {
                let key = format!("sources.{name}.path");
                match std::fs::File::open(path) {
                    // Opening a directory succeeds; reading it, what `run` does, does not.
                    Ok(f) if f.metadata().is_ok_and(|m| m.is_dir()) => r.error(
                        key,
                        format!("{} is a directory, not a log file", path.display()),
                    ),
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        match path.parent().filter(|d| d.is_dir()) {
                            Some(_) => r.warn(
                                key,
                                format!(
                                    "{} does not exist yet; `run` waits for it",
                                    path.display()
                                ),
                            ),
                            None => r.error(
                                key,
                                format!("neither {} nor its directory exists", path.display()),
                            ),
                        }
                    }
                    Err(e) => r.error(
                        key,
                        format!(
                            "cannot read {} (as {}): {e}{}",
                            path.display(),
                            whoami(),
                            permission_hint(path)
                        ),
                    ),
                }
            }
            SourceConfig::Journald {
                directory: Some(dir),
            } => {
                if let Err(e) = std::fs::read_dir(dir) {
                    r.error(
                        "sources.journald.directory",
                        format!("cannot read {} (as {}): {e}", dir.display(), whoami()),
                    );
                }
            }
            SourceConfig::Journald { directory: None } => {
                if let Err(e) = crate::sources::journald::probe() {
                    r.warn("sources.journald", e);
                }
            }
            SourceConfig::Netlink => {
                if let Err(e) = crate::sources::netlink::probe() {
                    r.error("sources.netlink", e);
                }
            }
        }
        r.notes.push(format!("source {name}: configured"));
    }
}

fn permission_hint(path: &Path) -> &'static str {
    if path.starts_with("/var/log/audit") {
        "; set log_group = adm in /etc/audit/auditd.conf (the service user is in group adm)"
    } else {
        ""
    }
}

fn check_profiles(config: &Config, r: &mut Report) {
    if !config.profiles.enabled {
        r.notes
            .push("profiles: disabled; alerts carry no explanation".into());
        return;
    }
    let dir = &config.profiles.dir;
    match crate::profiles::loader::load_tree(dir) {
        Ok((_, report)) => {
            if let Some((p, why)) = report.unreadable.first() {
                r.warn(
                    "profiles.dir",
                    format!(
                        "{} file(s) under {} cannot be read (first: {}: {why}); their rules are not used in explanations",
                        report.unreadable.len(),
                        dir.display(),
                        p.display()
                    ),
                );
            }
            r.notes.push(format!("profiles: {}", dir.display()));
        }
        Err(e) if !dir.exists() => r.warn(
            "profiles.dir",
            format!("{e}; alerts will carry no explanation (is AppArmor installed?)"),
        ),
        // `run` starts without the tree: a warning, as there.
        Err(e) => r.warn(
            "profiles.dir",
            format!("{e} (as {}); alerts will carry no explanation", whoami()),
        ),
    }
    if config.profiles.check_suggestions && find_program("apparmor_parser").is_none() {
        r.warn(
            "profiles.check_suggestions",
            "apparmor_parser is not installed: suggested rules are not compile-checked",
        );
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The nearest existing ancestor of `path` (itself included).
fn existing_ancestor(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists())
}

/// Whether a file can be created (with its directories) or appended to, without changing it.
fn writable_file(path: &Path) -> Result<(), String> {
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| format!("cannot write {} (as {}): {e}", path.display(), whoami()));
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    writable_dir(dir)
}

/// Whether `dir` exists (or can be created) and files can be created in it.
fn writable_dir(dir: &Path) -> Result<(), String> {
    let Some(at) = existing_ancestor(dir) else {
        return Err(format!("{} cannot be created", dir.display()));
    };
    if !at.is_dir() {
        return Err(format!("{} is not a directory", at.display()));
    }
    tempfile::Builder::new()
        .prefix(".armorwatch-check-")
        .tempfile_in(at)
        .map(drop)
        .map_err(|e| {
            if at == dir {
                format!("cannot write in {} (as {}): {e}", dir.display(), whoami())
            } else {
                format!(
                    "{} does not exist and cannot be created in {} (as {}): {e}",
                    dir.display(),
                    at.display(),
                    whoami()
                )
            }
        })
}

/// Can the state directory's lock file, when there is one, be opened (as `run` takes it)? One
/// left by another user that this one cannot even read stops `run`.
fn lock_readable(dir: &Path) -> Result<(), String> {
    let lock = dir.join(crate::checkpoint::LOCK_FILE);
    match std::fs::File::open(&lock) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!(
            "cannot open {} (as {}): {e}; remove it (no armorwatch runs on this directory) or give it to this user",
            lock.display(),
            whoami()
        )),
    }
}

/// Run the subcommand.
pub fn run(args: &CheckConfigArgs) -> anyhow::Result<ExitCode> {
    let (config, label, explicit) = match &args.config {
        Some(p) => (config::load(p), p.display().to_string(), true),
        None if Path::new(DEFAULT_CONFIG).exists() => (
            config::load(Path::new(DEFAULT_CONFIG)),
            DEFAULT_CONFIG.to_string(),
            true,
        ),
        None => (
            Ok(Config::default()),
            format!("the defaults ({DEFAULT_CONFIG} does not exist)"),
            false,
        ),
    };
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("armorwatch: configuration error: {e}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let report = check(&config, explicit);
    let file = args
        .config
        .as_deref()
        .map(Path::display)
        .map(|d| d.to_string())
        .unwrap_or_else(|| DEFAULT_CONFIG.to_string());
    for w in &report.warnings {
        eprintln!("armorwatch: warning: {file}: `{}`: {}", w.key, w.message);
    }
    for e in &report.errors {
        eprintln!(
            "armorwatch: configuration error: {file}: `{}`: {}",
            e.key, e.message
        );
    }
    if !report.errors.is_empty() {
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    println!("{label}: OK");
    for n in &report.notes {
        println!("  {n}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn config(text: &str) -> Config {
        config::parse(text, Path::new("t.toml")).unwrap()
    }

    /// A configuration with everything pointed into `dir`, plus `extra`.
    fn base(dir: &Path, extra: &str) -> String {
        format!(
            "[state]\ndir = \"{d}/state\"\n[profiles]\ndir = \"{d}/apparmor.d\"\ncheck_suggestions = false\n\
             [correlate]\nseverity_db = \"{d}/none.db\"\nnoise_dir = \"{d}/noise.d\"\n{extra}",
            d = dir.display()
        )
    }

    #[test]
    fn clean_configuration_passes() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("apparmor.d")).unwrap();
        std::fs::write(t.path().join("a.log"), "").unwrap();
        let c = config(&base(
            t.path(),
            &format!(
                "[sources.audit_log]\npath = \"{d}/a.log\"\n[sinks.f]\ntype = \"file\"\npath = \"{d}/out/alerts.jsonl\"\n",
                d = t.path().display()
            ),
        ));
        let r = check(&c, true);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        // Checking wrote nothing.
        assert!(!t.path().join("out").exists());
        assert!(!t.path().join("state").exists());
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 2);
    }

    #[test]
    fn secret_readable_by_others_is_an_error_with_its_key() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("apparmor.d")).unwrap();
        let secret = t.path().join("token");
        std::fs::write(&secret, "s3cret\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = config(&base(
            t.path(),
            &format!(
                "[sinks.hook]\ntype = \"webhook\"\nurl = \"https://example.invalid/x\"\nsecret_file = \"{}\"\n\
                 [sinks.bad]\ntype = \"slack\"\nurl = \"ftp://x\"\n",
                secret.display()
            ),
        ));
        let r = check(&c, true);
        let keys: Vec<&str> = r.errors.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["sinks.bad.url", "sinks.hook.secret_file"], "{r:?}");
        assert!(r.errors[1].message.contains("chmod 600"), "{r:?}");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let r = check(&c, true);
        assert_eq!(r.errors.len(), 1, "{r:?}");
    }

    #[test]
    fn missing_source_warns_but_missing_directory_fails() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("apparmor.d")).unwrap();
        let c = config(&base(
            t.path(),
            &format!(
                "[sources.audit_log]\npath = \"{d}/later.log\"\n[sources.kernel_log]\npath = \"{d}/no/kern.log\"\n",
                d = t.path().display()
            ),
        ));
        let r = check(&c, true);
        assert_eq!(r.warnings.len(), 1, "{r:?}");
        assert_eq!(r.warnings[0].key, "sources.audit_log.path");
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert_eq!(r.errors[0].key, "sources.kernel_log.path");
    }

    #[test]
    fn state_dir_and_file_sink_must_be_writable() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("apparmor.d")).unwrap();
        // A regular file where a directory is needed fails for any user, root included.
        std::fs::write(t.path().join("state"), "").unwrap();
        let c = config(&base(
            t.path(),
            &format!(
                "[sinks.f]\ntype = \"file\"\npath = \"{d}/state/x/alerts.jsonl\"\n",
                d = t.path().display()
            ),
        ));
        let r = check(&c, true);
        let keys: Vec<&str> = r.errors.iter().map(|f| f.key.as_str()).collect();
        assert!(keys.contains(&"state.dir"), "{r:?}");
        assert!(keys.contains(&"sinks.f.path"), "{r:?}");
        // Without a configuration file the state directory is optional.
        let r = check(&c, false);
        assert!(r.warnings.iter().any(|w| w.key == "state.dir"), "{r:?}");
    }

    #[test]
    fn profile_tree_missing_warns_and_bad_noise_drop_in_fails() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("noise.d")).unwrap();
        std::fs::write(t.path().join("noise.d/x.toml"), "this is = not [toml").unwrap();
        let c = config(&base(t.path(), ""));
        let r = check(&c, true);
        assert!(r.warnings.iter().any(|w| w.key == "profiles.dir"), "{r:?}");
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert_eq!(r.errors[0].key, "correlate");
        assert!(r.errors[0].message.contains("x.toml"), "{r:?}");
    }

    /// A profile tree that cannot be read does not stop `run` (it logs a warning and alerts
    /// carry no explanation), so check-config warns too: it exited 78, a configuration error,
    /// for a configuration `run` starts with.
    #[test]
    fn an_unreadable_profile_tree_warns_as_run_does() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("apparmor.d"), "").unwrap();
        let c = config(&base(t.path(), ""));
        let r = check(&c, true);
        assert!(r.errors.is_empty(), "{r:?}");
        let w: Vec<&Finding> = r
            .warnings
            .iter()
            .filter(|w| w.key == "profiles.dir")
            .collect();
        assert_eq!(w.len(), 1, "{r:?}");
        assert!(w[0].message.contains("no explanation"), "{r:?}");
    }

    /// The shipped example lists every key commented out with its default: uncommented, the
    /// keys must still be known (a renamed key would otherwise linger in the docs).
    #[test]
    fn shipped_example_commented_keys_are_real() {
        let text = include_str!("../../config.example.toml");
        let key = regex::Regex::new(r"^#(\[[a-z_.]+\]|[a-z_]+ = )").unwrap();
        let uncommented: String = text
            .lines()
            .map(|l| if key.is_match(l) { &l[1..] } else { l })
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(uncommented.contains("\n[sources.netlink]"));
        let c = config::parse(&uncommented, Path::new("all.toml")).unwrap();
        assert_eq!(c.sources.len(), 4);
        assert_eq!(c.sinks.len(), 4);
        for sink in &c.sinks {
            let mut table = sink.table.clone();
            // Secrets are checked for real elsewhere; here only the key names matter.
            for k in ["url_file", "password_file"] {
                if table.remove(k).is_some() {
                    table.insert("url".into(), "https://example.invalid/".into());
                }
            }
            if sink.kind == "email" {
                table.remove("url");
                table.remove("username");
            }
            SinkSpec::from_table(&sink.name, &table, &SecretContext::default()).unwrap();
        }
    }
}

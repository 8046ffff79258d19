//! `[sinks.NAME]` tables → validated [`SinkSpec`]s: unknown keys rejected with their key path,
//! secrets read from files (`url_file`, `password_file`, `secret_file`, `token_file`, relative to
//! `$CREDENTIALS_DIRECTORY`) that other users cannot read.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::policy::{POLICY_KEYS, SinkPolicy};

/// A configuration error, naming the key (`sinks.NAME.KEY`).
#[derive(Debug, thiserror::Error)]
#[error("`{path}`: {message}")]
pub struct SinkConfigError {
    /// `sinks.NAME` or `sinks.NAME.KEY`.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A secret value; its `Debug` form never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// What a file or stdout sink writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Content {
    /// Alerts (schema 1), one per line.
    #[default]
    Alerts,
    /// Every event (schema 1), one per line.
    Events,
}

/// The line format of the stdout sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    /// JSON lines.
    #[default]
    Json,
    /// One readable line per alert, control characters made visible.
    Text,
}

/// `file` sink settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// The file to append to.
    pub path: PathBuf,
    /// Alerts or events.
    pub content: Content,
    /// Rotate when the file reaches this size (bytes).
    pub max_size_bytes: Option<u64>,
    /// Rotated files kept (`path.1` … `path.N`).
    pub max_files: u32,
}

/// `stdout` sink settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdoutSpec {
    /// JSON or text.
    pub format: LineFormat,
    /// Alerts or events.
    pub content: Content,
}

/// Settings shared by the HTTP sinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSpec {
    /// The endpoint (from `url` or `url_file`).
    pub url: Secret,
    /// Extra headers.
    pub headers: BTreeMap<String, String>,
    /// An extra PEM CA bundle trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
}

/// `webhook` sink settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    /// Endpoint and headers.
    pub http: HttpSpec,
    /// HMAC-SHA256 key; when set, every request carries a signature header.
    pub secret: Option<Secret>,
    /// The signature header (default `X-Armorwatch-Signature`).
    pub signature_header: String,
}

/// `ntfy` sink settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NtfySpec {
    /// Server URL including the topic.
    pub http: HttpSpec,
    /// Access token (Bearer).
    pub token: Option<Secret>,
}

/// `alertmanager` sink settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertmanagerSpec {
    /// Base URL (`http://am:9093`); alerts go to `/api/v2/alerts`.
    pub http: HttpSpec,
    /// `alertname` label (default `AppArmorDenial`).
    pub alertname: String,
    /// Extra static labels.
    pub labels: BTreeMap<String, String>,
    /// Re-post open incidents this often (default 60 s) so Alertmanager keeps them firing.
    pub repost_interval_secs: u64,
}

/// How email leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain connection upgraded with STARTTLS (required).
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No TLS (only for a relay on localhost).
    None,
}

/// `email` sink settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSpec {
    /// SMTP server (unless `sendmail` is set).
    pub smtp_host: Option<String>,
    /// SMTP port.
    pub smtp_port: u16,
    /// TLS mode.
    pub tls: TlsMode,
    /// Sender.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// AUTH user.
    pub username: Option<String>,
    /// AUTH password (from `password_file`).
    pub password: Option<Secret>,
    /// A sendmail-compatible binary used instead of SMTP.
    pub sendmail: Option<PathBuf>,
    /// An extra PEM CA bundle.
    pub ca_file: Option<PathBuf>,
    /// Prefix of every subject (default `[armorwatch]`).
    pub subject_prefix: String,
    /// How long an SMTP session stays open after a message for the next one (default 10 s;
    /// 0: a session per message).
    pub keep_session_secs: u64,
}

/// What kind of sink, with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkKind {
    /// JSON lines to a file.
    File(FileSpec),
    /// JSON or text lines to standard output.
    Stdout(StdoutSpec),
    /// Slack incoming webhook (Block Kit).
    Slack(HttpSpec),
    /// Generic JSON webhook.
    Webhook(WebhookSpec),
    /// Discord webhook.
    Discord(HttpSpec),
    /// Microsoft Teams Workflows webhook (Adaptive Card).
    Teams(HttpSpec),
    /// ntfy topic.
    Ntfy(NtfySpec),
    /// Email.
    Email(EmailSpec),
    /// Prometheus Alertmanager.
    Alertmanager(AlertmanagerSpec),
}

impl SinkKind {
    /// The `type =` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::File(_) => "file",
            SinkKind::Stdout(_) => "stdout",
            SinkKind::Slack(_) => "slack",
            SinkKind::Webhook(_) => "webhook",
            SinkKind::Discord(_) => "discord",
            SinkKind::Teams(_) => "teams",
            SinkKind::Ntfy(_) => "ntfy",
            SinkKind::Email(_) => "email",
            SinkKind::Alertmanager(_) => "alertmanager",
        }
    }

    /// What a local sink writes (`None` for remote sinks, which take alerts only).
    pub fn content(&self) -> Option<Content> {
        match self {
            SinkKind::File(f) => Some(f.content),
            SinkKind::Stdout(s) => Some(s.content),
            _ => None,
        }
    }
}

/// Outbox and retry settings of a remote sink.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// An undelivered alert expires after this many seconds (default 86400) and is counted in a
    /// `loss` alert.
    #[serde(default = "default_max_age")]
    pub max_age_secs: u64,
    /// First retry delay in milliseconds (default 1000); doubles up to `retry_max_ms`, with jitter.
    #[serde(default = "default_retry_initial")]
    pub retry_initial_ms: u64,
    /// Longest retry delay in milliseconds (default 300000).
    #[serde(default = "default_retry_max")]
    pub retry_max_ms: u64,
    /// Request timeout in seconds (default 15).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Most alerts kept in this sink's outbox (default 10000); beyond, new alerts are counted lost.
    #[serde(default = "default_outbox_max")]
    pub outbox_max_entries: usize,
}

fn default_max_age() -> u64 {
    86_400
}
fn default_retry_initial() -> u64 {
    1_000
}
fn default_retry_max() -> u64 {
    300_000
}
fn default_timeout() -> u64 {
    15
}
fn default_outbox_max() -> usize {
    10_000
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            max_age_secs: default_max_age(),
            retry_initial_ms: default_retry_initial(),
            retry_max_ms: default_retry_max(),
            timeout_secs: default_timeout(),
            outbox_max_entries: default_outbox_max(),
        }
    }
}

/// The delivery keys, for splitting a sink table.
pub const DELIVERY_KEYS: &[&str] = &[
    "max_age_secs",
    "retry_initial_ms",
    "retry_max_ms",
    "timeout_secs",
    "outbox_max_entries",
];

/// One validated sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSpec {
    /// The `NAME` of `[sinks.NAME]`.
    pub name: String,
    /// Type and settings.
    pub kind: SinkKind,
    /// What it is sent.
    pub policy: SinkPolicy,
    /// Outbox and retries (remote sinks).
    pub delivery: DeliverySettings,
}

/// Where relative secret paths are found: systemd's `$CREDENTIALS_DIRECTORY`.
#[derive(Debug, Clone, Default)]
pub struct SecretContext {
    /// The credentials directory, if any.
    pub credentials_dir: Option<PathBuf>,
}

impl SecretContext {
    /// From the environment (`$CREDENTIALS_DIRECTORY`).
    pub fn from_env() -> SecretContext {
        SecretContext {
            credentials_dir: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRaw {
    path: PathBuf,
    #[serde(default)]
    content: Content,
    max_size_bytes: Option<u64>,
    #[serde(default = "default_max_files")]
    max_files: u32,
}

fn default_max_files() -> u32 {
    5
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StdoutRaw {
    #[serde(default)]
    format: LineFormat,
    #[serde(default)]
    content: Content,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpRaw {
    url: Option<String>,
    url_file: Option<PathBuf>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookRaw {
    url: Option<String>,
    url_file: Option<PathBuf>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    ca_file: Option<PathBuf>,
    secret_file: Option<PathBuf>,
    signature_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NtfyRaw {
    url: Option<String>,
    url_file: Option<PathBuf>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    ca_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertmanagerRaw {
    url: Option<String>,
    url_file: Option<PathBuf>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    ca_file: Option<PathBuf>,
    alertname: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    repost_interval_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailRaw {
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
    tls: Option<TlsMode>,
    from: String,
    to: ToRaw,
    username: Option<String>,
    password_file: Option<PathBuf>,
    sendmail: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    subject_prefix: Option<String>,
    keep_session_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "an address or a list of addresses")]
enum ToRaw {
    One(String),
    Many(Vec<String>),
}

/// Parse every `[sinks.NAME]` table of a `[sinks]` table.
pub fn parse_sinks(
    sinks: &toml::Table,
    ctx: &SecretContext,
) -> Result<Vec<SinkSpec>, SinkConfigError> {
    let mut out = Vec::new();
    for (name, value) in sinks {
        let table = value.as_table().ok_or_else(|| SinkConfigError {
            path: format!("sinks.{name}"),
            message: "must be a table ([sinks.NAME] with type = …)".into(),
        })?;
        out.push(SinkSpec::from_table(name, table, ctx)?);
    }
    Ok(out)
}

fn err(name: &str, key: &str, message: impl Into<String>) -> SinkConfigError {
    SinkConfigError {
        path: if key.is_empty() {
            format!("sinks.{name}")
        } else {
            format!("sinks.{name}.{key}")
        },
        message: message.into(),
    }
}

/// Deserialize `table` into `T`, naming the key of any error.
fn typed<T: DeserializeOwned>(name: &str, table: toml::Table) -> Result<T, SinkConfigError> {
    let value = toml::Value::Table(table);
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = crate::config::without_values(e.into_inner().to_string().trim());
        // deny_unknown_fields reports the enclosing path; name the unknown key itself.
        if let Some(rest) = inner.strip_prefix("unknown field `") {
            let key = rest.split('`').next().unwrap_or("");
            let expected = rest.split_once(", expected ").map(|(_, e)| e).unwrap_or("");
            return err(
                name,
                key,
                format!("unknown key (expected {})", expected.trim_end_matches('.')),
            );
        }
        if let Some(rest) = inner.strip_prefix("missing field `") {
            let key = rest.split('`').next().unwrap_or("");
            return err(name, key, "required key is missing");
        }
        let key = if path == "." { "" } else { path.as_str() };
        err(name, key, inner)
    })
}

/// Ten years, in seconds: the most any sink's interval or age may be.
const TEN_YEARS_SECS: u64 = 10 * 366 * 86_400;

/// `value` (in units of `1/per_sec` seconds) is at most [`TEN_YEARS_SECS`].
fn at_most_ten_years(
    name: &str,
    key: &str,
    value: u64,
    per_sec: u64,
) -> Result<(), SinkConfigError> {
    if value / per_sec > TEN_YEARS_SECS {
        return Err(err(
            name,
            key,
            format!("must be at most {} (ten years)", TEN_YEARS_SECS * per_sec),
        ));
    }
    Ok(())
}

impl SinkSpec {
    /// Validate one `[sinks.NAME]` table.
    pub fn from_table(
        name: &str,
        table: &toml::Table,
        ctx: &SecretContext,
    ) -> Result<SinkSpec, SinkConfigError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err(
                name,
                "",
                "sink names may use only letters, digits, '-' and '_'",
            ));
        }
        let mut rest = table.clone();
        let type_name = match rest.remove("type") {
            Some(toml::Value::String(s)) => s,
            Some(_) => return Err(err(name, "type", "must be a string")),
            None => {
                return Err(err(
                    name,
                    "type",
                    "required key is missing (file, stdout, slack, webhook, discord, teams, ntfy, email, alertmanager)",
                ));
            }
        };
        let mut policy_table = toml::Table::new();
        for k in POLICY_KEYS {
            if let Some(v) = rest.remove(*k) {
                policy_table.insert((*k).to_string(), v);
            }
        }
        // The correlator documents the policy as a `[sinks.NAME.policy]` sub-table; the same keys
        // directly in `[sinks.NAME]` are accepted too, but not both at once.
        let policy_given = !policy_table.is_empty() || rest.contains_key("policy");
        let policy: SinkPolicy = match rest.remove("policy") {
            Some(toml::Value::Table(t)) => {
                if let Some(k) = policy_table.keys().next() {
                    return Err(err(
                        name,
                        k,
                        "policy keys go either in [sinks.NAME.policy] or in [sinks.NAME], not both",
                    ));
                }
                typed(&format!("{name}.policy"), t)?
            }
            Some(_) => return Err(err(name, "policy", "must be a table")),
            None => typed(name, policy_table)?,
        };
        if policy.min_severity > 10 {
            return Err(err(name, "min_severity", "must be between 0 and 10"));
        }
        if policy.digest_interval_secs == 0 {
            return Err(err(name, "digest_interval_secs", "must be at least 1"));
        }
        let remote = !matches!(type_name.as_str(), "file" | "stdout");
        let mut delivery_table = toml::Table::new();
        if remote {
            for k in DELIVERY_KEYS {
                if let Some(v) = rest.remove(*k) {
                    delivery_table.insert((*k).to_string(), v);
                }
            }
        }
        let delivery: DeliverySettings = typed(name, delivery_table)?;
        if delivery.retry_initial_ms == 0 || delivery.retry_max_ms < delivery.retry_initial_ms {
            return Err(err(
                name,
                "retry_max_ms",
                "retry_initial_ms must be ≥ 1 and retry_max_ms ≥ retry_initial_ms",
            ));
        }
        if delivery.timeout_secs == 0 {
            return Err(err(name, "timeout_secs", "must be at least 1"));
        }
        // 0 would refuse every alert as "outbox full".
        if delivery.outbox_max_entries == 0 {
            return Err(err(name, "outbox_max_entries", "must be at least 1"));
        }
        // Times are added to clocks: a value beyond any use (10 years) would overflow them.
        at_most_ten_years(name, "digest_interval_secs", policy.digest_interval_secs, 1)?;
        at_most_ten_years(name, "max_age_secs", delivery.max_age_secs, 1)?;
        at_most_ten_years(name, "timeout_secs", delivery.timeout_secs, 1)?;
        at_most_ten_years(name, "retry_initial_ms", delivery.retry_initial_ms, 1000)?;
        at_most_ten_years(name, "retry_max_ms", delivery.retry_max_ms, 1000)?;
        let kind = match type_name.as_str() {
            "file" => {
                let r: FileRaw = typed(name, rest)?;
                if !r.path.is_absolute() {
                    return Err(err(
                        name,
                        "path",
                        "must be an absolute path (the daemon runs in /)",
                    ));
                }
                if r.max_size_bytes == Some(0) {
                    return Err(err(name, "max_size_bytes", "must be at least 1"));
                }
                // An events file takes every event: no policy, and rotation is logrotate's
                // (the file is followed when moved away); these keys would be ignored.
                if r.content == Content::Events {
                    let ignored = if r.max_size_bytes.is_some() {
                        Some("max_size_bytes")
                    } else if r.max_files != default_max_files() {
                        Some("max_files")
                    } else if policy_given {
                        Some("policy")
                    } else {
                        None
                    };
                    if let Some(key) = ignored {
                        return Err(err(
                            name,
                            key,
                            "applies to alert files only: an events file (content = \"events\") takes every event and is rotated by logrotate",
                        ));
                    }
                }
                SinkKind::File(FileSpec {
                    path: r.path,
                    content: r.content,
                    max_size_bytes: r.max_size_bytes,
                    max_files: r.max_files,
                })
            }
            "stdout" => {
                let r: StdoutRaw = typed(name, rest)?;
                SinkKind::Stdout(StdoutSpec {
                    format: r.format,
                    content: r.content,
                })
            }
            "slack" | "discord" | "teams" => {
                let r: HttpRaw = typed(name, rest)?;
                let http = http_spec(name, r.url, r.url_file, r.headers, r.ca_file, ctx)?;
                match type_name.as_str() {
                    "slack" => SinkKind::Slack(http),
                    "discord" => SinkKind::Discord(http),
                    _ => SinkKind::Teams(http),
                }
            }
            "webhook" => {
                let r: WebhookRaw = typed(name, rest)?;
                let http = http_spec(name, r.url, r.url_file, r.headers, r.ca_file, ctx)?;
                let secret = match &r.secret_file {
                    Some(p) => Some(Secret::new(read_secret(name, "secret_file", p, ctx)?)),
                    None => None,
                };
                let signature_header = r
                    .signature_header
                    .unwrap_or_else(|| "X-Armorwatch-Signature".into());
                if reqwest::header::HeaderName::from_bytes(signature_header.as_bytes()).is_err() {
                    return Err(err(name, "signature_header", "not a valid header name"));
                }
                SinkKind::Webhook(WebhookSpec {
                    http,
                    secret,
                    signature_header,
                })
            }
            "ntfy" => {
                let r: NtfyRaw = typed(name, rest)?;
                let http = http_spec(name, r.url, r.url_file, r.headers, r.ca_file, ctx)?;
                let token = match &r.token_file {
                    Some(p) => Some(Secret::new(read_secret(name, "token_file", p, ctx)?)),
                    None => None,
                };
                SinkKind::Ntfy(NtfySpec { http, token })
            }
            "alertmanager" => {
                let r: AlertmanagerRaw = typed(name, rest)?;
                let http = http_spec(name, r.url, r.url_file, r.headers, r.ca_file, ctx)?;
                for k in r.labels.keys() {
                    let ok = !k.is_empty()
                        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !k.starts_with(|c: char| c.is_ascii_digit());
                    if !ok {
                        return Err(err(
                            name,
                            &format!("labels.{k}"),
                            "label names must match [a-zA-Z_][a-zA-Z0-9_]*",
                        ));
                    }
                }
                let repost = r.repost_interval_secs.unwrap_or(60);
                at_most_ten_years(name, "repost_interval_secs", repost, 1)?;
                if repost == 0 {
                    return Err(err(name, "repost_interval_secs", "must be at least 1"));
                }
                SinkKind::Alertmanager(AlertmanagerSpec {
                    http,
                    alertname: r.alertname.unwrap_or_else(|| "AppArmorDenial".into()),
                    labels: r.labels,
                    repost_interval_secs: repost,
                })
            }
            "email" => SinkKind::Email(email_spec(name, rest, ctx)?),
            other => {
                return Err(err(
                    name,
                    "type",
                    format!(
                        "unknown sink type {other:?} (file, stdout, slack, webhook, discord, teams, ntfy, email, alertmanager)"
                    ),
                ));
            }
        };
        Ok(SinkSpec {
            name: name.to_string(),
            kind,
            policy,
            delivery,
        })
    }
}

fn email_spec(
    name: &str,
    rest: toml::Table,
    ctx: &SecretContext,
) -> Result<EmailSpec, SinkConfigError> {
    let r: EmailRaw = typed(name, rest)?;
    let to = match r.to {
        ToRaw::One(s) => vec![s],
        ToRaw::Many(v) => v,
    };
    if to.is_empty() {
        return Err(err(name, "to", "at least one recipient is needed"));
    }
    for (i, addr) in to.iter().enumerate() {
        if addr.parse::<lettre::message::Mailbox>().is_err() {
            return Err(err(
                name,
                &format!("to[{i}]"),
                format!("{addr:?} is not an email address"),
            ));
        }
    }
    if r.from.parse::<lettre::message::Mailbox>().is_err() {
        return Err(err(
            name,
            "from",
            format!("{:?} is not an email address", r.from),
        ));
    }
    if r.sendmail.is_none() && r.smtp_host.is_none() {
        return Err(err(
            name,
            "smtp_host",
            "required key is missing (or set sendmail = \"/usr/bin/msmtp\")",
        ));
    }
    // Here, so that `run` fails at start as check-config does (it started, and every mail
    // failed).
    if let Some(p) = r.sendmail.as_deref().filter(|p| !p.is_file()) {
        return Err(err(
            name,
            "sendmail",
            format!("{} does not exist", p.display()),
        ));
    }
    if r.sendmail.is_none() && r.tls.is_none() {
        return Err(err(
            name,
            "tls",
            "required key is missing (\"starttls\", \"tls\" or \"none\")",
        ));
    }
    let tls = r.tls.unwrap_or(TlsMode::None);
    let password = match &r.password_file {
        Some(p) => Some(Secret::new(read_secret(name, "password_file", p, ctx)?)),
        None => None,
    };
    if password.is_some() && r.username.is_none() {
        return Err(err(
            name,
            "username",
            "password_file is set but username is not",
        ));
    }
    if r.username.is_some() && password.is_none() {
        return Err(err(
            name,
            "password_file",
            "username is set but password_file is not",
        ));
    }
    if let Some(ca) = &r.ca_file {
        check_readable(name, "ca_file", ca)?;
    }
    if r.smtp_port == Some(0) {
        return Err(err(name, "smtp_port", "must be 1–65535"));
    }
    let default_port = match tls {
        TlsMode::Tls => 465,
        TlsMode::Starttls => 587,
        TlsMode::None => 25,
    };
    Ok(EmailSpec {
        smtp_host: r.smtp_host,
        smtp_port: r.smtp_port.unwrap_or(default_port),
        tls,
        from: r.from,
        to,
        username: r.username,
        password,
        sendmail: r.sendmail,
        ca_file: r.ca_file,
        subject_prefix: r.subject_prefix.unwrap_or_else(|| "[armorwatch]".into()),
        keep_session_secs: {
            let keep = r.keep_session_secs.unwrap_or(10);
            at_most_ten_years(name, "keep_session_secs", keep, 1)?;
            keep
        },
    })
}

fn http_spec(
    name: &str,
    url: Option<String>,
    url_file: Option<PathBuf>,
    headers: BTreeMap<String, String>,
    ca_file: Option<PathBuf>,
    ctx: &SecretContext,
) -> Result<HttpSpec, SinkConfigError> {
    let (url, key) = match (url, url_file) {
        (Some(_), Some(_)) => {
            return Err(err(
                name,
                "url_file",
                "set either url or url_file, not both",
            ));
        }
        (Some(u), None) => (u, "url"),
        (None, Some(p)) => (read_secret(name, "url_file", &p, ctx)?, "url_file"),
        (None, None) => {
            return Err(err(
                name,
                "url",
                "required key is missing (or url_file for a URL that holds a token)",
            ));
        }
    };
    match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => {
            return Err(err(
                name,
                key,
                "must be an http:// or https:// URL with a host",
            ));
        }
        Err(e) => return Err(err(name, key, format!("not a valid URL: {e}"))),
    }
    for (k, v) in &headers {
        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(err(
                name,
                &format!("headers.{k}"),
                "not a valid header name",
            ));
        }
        if reqwest::header::HeaderValue::from_str(v).is_err() {
            return Err(err(
                name,
                &format!("headers.{k}"),
                "not a valid header value (no control characters)",
            ));
        }
    }
    if let Some(ca) = &ca_file {
        check_readable(name, "ca_file", ca)?;
    }
    Ok(HttpSpec {
        url: Secret::new(url),
        headers,
        ca_file,
    })
}

fn check_readable(name: &str, key: &str, path: &Path) -> Result<(), SinkConfigError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| err(name, key, format!("cannot read {}: {e}", path.display())))
}

/// Read a secret file: relative paths are looked up in `$CREDENTIALS_DIRECTORY`; the file must not
/// be readable by group or others; surrounding whitespace is removed.
pub fn read_secret(
    name: &str,
    key: &str,
    path: &Path,
    ctx: &SecretContext,
) -> Result<String, SinkConfigError> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        match &ctx.credentials_dir {
            Some(dir) => dir.join(path),
            None => {
                return Err(err(
                    name,
                    key,
                    format!(
                        "{} is relative, which means a systemd credential, but $CREDENTIALS_DIRECTORY is not set \
                         (use an absolute path, or LoadCredential={}:/path/to/file in the unit)",
                        path.display(),
                        path.display()
                    ),
                ));
            }
        }
    };
    let meta = std::fs::metadata(&full)
        .map_err(|e| err(name, key, format!("cannot read {}: {e}", full.display())))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(
            name,
            key,
            format!(
                "{} is readable by other users (mode {mode:04o}); fix with `chmod 600 {}` \
                 (owned by the user armorwatch runs as) or pass it as a systemd credential \
                 (LoadCredential=)",
                full.display(),
                full.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(&full)
        .map_err(|e| err(name, key, format!("cannot read {}: {e}", full.display())))?;
    let value = text.trim().to_string();
    if value.is_empty() {
        return Err(err(name, key, format!("{} is empty", full.display())));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn parse(s: &str) -> Result<Vec<SinkSpec>, SinkConfigError> {
        let t: toml::Table = toml::from_str(s).unwrap();
        parse_sinks(t["sinks"].as_table().unwrap(), &SecretContext::default())
    }

    #[test]
    fn file_and_policy() {
        let v = parse(
            r#"[sinks.log]
type = "file"
path = "/var/log/armorwatch/alerts.json"
max_size_bytes = 1000
min_severity = 4
include_profiles = ["nginx*"]
mode = "first"
"#,
        )
        .unwrap();
        assert_eq!(v[0].name, "log");
        assert_eq!(v[0].policy.min_severity, 4);
        assert_eq!(v[0].policy.mode, super::super::policy::Mode::First);
        assert!(matches!(&v[0].kind, SinkKind::File(f) if f.max_size_bytes == Some(1000)));
    }

    /// Port 0 is no SMTP port (it was accepted, and every delivery failed); a `to` of the wrong
    /// type says what it takes, not the name of an internal type (`untagged enum ToRaw`).
    #[test]
    fn smtp_port_zero_and_a_mistyped_to_say_what_is_expected() {
        let base =
            "[sinks.m]\ntype = \"email\"\nfrom = \"a@b.c\"\nsmtp_host = \"h\"\ntls = \"none\"\n";
        let e = parse(&format!("{base}to = \"x@y.z\"\nsmtp_port = 0\n")).unwrap_err();
        assert_eq!(e.path, "sinks.m.smtp_port", "{e:?}");
        for to in ["5", "[\"a@b.c\", 5]"] {
            let e = parse(&format!("{base}to = {to}\n")).unwrap_err();
            assert_eq!(e.path, "sinks.m.to", "{e:?}");
            assert!(
                e.message.contains("an address or a list of addresses")
                    && !e.message.contains("ToRaw"),
                "{e:?}"
            );
        }
    }

    /// Intervals and ages are added to clocks: a huge one panicked the sink's task (an
    /// overflowing `Instant` addition) after `check-config` had accepted it (found by a review
    /// helper). And a relative file path was written relative to the daemon's working
    /// directory (`/` under systemd).
    #[test]
    fn huge_intervals_and_relative_paths_are_refused_with_their_key() {
        let huge = 9_223_372_036_854_775_807u64;
        for (extra, key) in [
            (
                format!(
                    "type = \"webhook\"\nurl = \"http://127.0.0.1:1/h\"\nmax_age_secs = {huge}"
                ),
                "max_age_secs",
            ),
            (
                format!(
                    "type = \"webhook\"\nurl = \"http://127.0.0.1:1/h\"\nretry_max_ms = {huge}"
                ),
                "retry_max_ms",
            ),
            (
                format!(
                    "type = \"webhook\"\nurl = \"http://127.0.0.1:1/h\"\nmode = \"digest\"\ndigest_interval_secs = {huge}"
                ),
                "digest_interval_secs",
            ),
            (
                format!(
                    "type = \"alertmanager\"\nurl = \"http://127.0.0.1:1\"\nrepost_interval_secs = {huge}"
                ),
                "repost_interval_secs",
            ),
            (
                format!(
                    "type = \"email\"\nsmtp_host = \"127.0.0.1\"\ntls = \"none\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\nkeep_session_secs = {huge}"
                ),
                "keep_session_secs",
            ),
            (
                "type = \"file\"\npath = \"alerts.jsonl\"".to_string(),
                "path",
            ),
            // Every alert would be refused as "outbox full" (a review helper).
            (
                "type = \"webhook\"\nurl = \"http://127.0.0.1:1/h\"\noutbox_max_entries = 0"
                    .to_string(),
                "outbox_max_entries",
            ),
        ] {
            let e = parse(&format!("[sinks.s]\n{extra}\n")).unwrap_err();
            assert_eq!(e.path, format!("sinks.s.{key}"), "{e}");
        }
        // Keys an events file would ignore.
        for (extra, key) in [
            ("max_size_bytes = 1000", "max_size_bytes"),
            ("max_files = 2", "max_files"),
            ("min_severity = 9", "policy"),
        ] {
            let e = parse(&format!(
                "[sinks.s]\ntype = \"file\"\npath = \"/e.jsonl\"\ncontent = \"events\"\n{extra}\n"
            ))
            .unwrap_err();
            assert_eq!(e.path, format!("sinks.s.{key}"), "{e}");
        }
        // Ten years is still fine.
        parse("[sinks.s]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/h\"\nmax_age_secs = 315360000\n")
            .unwrap();
    }

    #[test]
    fn unknown_key_names_path() {
        let e = parse("[sinks.log]\ntype = \"file\"\npath = \"/x\"\nmax_size = 3\n").unwrap_err();
        assert_eq!(e.path, "sinks.log.max_size");
        assert!(e.message.contains("unknown key"), "{e}");
        let e = parse("[sinks.s]\ntype = \"stdout\"\nmax_age_secs = 3\n").unwrap_err();
        assert_eq!(e.path, "sinks.s.max_age_secs");
    }

    #[test]
    fn policy_sub_table() {
        let v = parse(
            "[sinks.m]\ntype = \"stdout\"\n[sinks.m.policy]\nmin_severity = 6\nnoise = \"mute\"\n",
        )
        .unwrap();
        assert_eq!(v[0].policy.min_severity, 6);
        assert_eq!(v[0].policy.noise, super::super::policy::NoiseAction::Mute);
        let e = parse("[sinks.m]\ntype = \"stdout\"\n[sinks.m.policy]\nmode = \"often\"\n")
            .unwrap_err();
        assert_eq!(e.path, "sinks.m.policy.mode", "{e}");
        let e = parse("[sinks.m]\ntype = \"stdout\"\n[sinks.m.policy]\nmin_sev = 1\n").unwrap_err();
        assert_eq!(e.path, "sinks.m.policy.min_sev", "{e}");
        let e = parse(
            "[sinks.m]\ntype = \"stdout\"\nmode = \"first\"\n[sinks.m.policy]\nmin_severity = 1\n",
        )
        .unwrap_err();
        assert_eq!(e.path, "sinks.m.mode", "{e}");
    }

    #[test]
    fn type_errors_name_path() {
        let e = parse("[sinks.log]\ntype = \"file\"\npath = \"/x\"\nmin_severity = \"high\"\n")
            .unwrap_err();
        assert_eq!(e.path, "sinks.log.min_severity", "{e}");
        let e = parse("[sinks.h]\ntype = \"webhook\"\nurl = \"ftp://x\"\n").unwrap_err();
        assert_eq!(e.path, "sinks.h.url");
        let e = parse("[sinks.h]\ntype = \"webhook\"\n").unwrap_err();
        assert_eq!(e.path, "sinks.h.url");
        let e = parse("[sinks.h]\ntype = \"pager\"\n").unwrap_err();
        assert_eq!(e.path, "sinks.h.type");
        let e = parse("[sinks.m]\ntype = \"email\"\nfrom = \"a@b.c\"\nto = [\"x\"]\nsmtp_host=\"h\"\ntls=\"starttls\"\n").unwrap_err();
        assert_eq!(e.path, "sinks.m.to[0]");
        let e = parse(
            "[sinks.m]\ntype = \"email\"\nfrom = \"a@b.c\"\nto = \"x@y.z\"\nsmtp_host=\"h\"\n",
        )
        .unwrap_err();
        assert_eq!(e.path, "sinks.m.tls");
        let e = parse("[sinks.w]\ntype = \"webhook\"\nurl = \"http://x\"\nmode = \"sometimes\"\n")
            .unwrap_err();
        assert_eq!(e.path, "sinks.w.mode", "{e}");
    }

    #[test]
    fn secrets_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("url");
        std::fs::write(&f, "https://hooks.example/T/B/X\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let t: toml::Table = toml::from_str(&format!(
            "[sinks.s]\ntype = \"slack\"\nurl_file = \"{}\"\n",
            f.display()
        ))
        .unwrap();
        let sinks = t["sinks"].as_table().unwrap();
        let e = parse_sinks(sinks, &SecretContext::default()).unwrap_err();
        assert_eq!(e.path, "sinks.s.url_file");
        assert!(e.message.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let v = parse_sinks(sinks, &SecretContext::default()).unwrap();
        match &v[0].kind {
            SinkKind::Slack(h) => assert_eq!(h.url.expose(), "https://hooks.example/T/B/X"),
            other => panic!("{other:?}"),
        }
        assert!(!format!("{v:?}").contains("hooks.example"));
        // Relative: a systemd credential.
        let t: toml::Table =
            toml::from_str("[sinks.s]\ntype = \"slack\"\nurl_file = \"url\"\n").unwrap();
        let sinks = t["sinks"].as_table().unwrap();
        let e = parse_sinks(sinks, &SecretContext::default()).unwrap_err();
        assert!(e.message.contains("CREDENTIALS_DIRECTORY"), "{e}");
        let ctx = SecretContext {
            credentials_dir: Some(dir.path().to_path_buf()),
        };
        assert!(parse_sinks(sinks, &ctx).is_ok());
    }
}

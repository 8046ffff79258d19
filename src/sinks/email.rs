//! Email through SMTP (`lettre`, rustls: STARTTLS, implicit TLS or none; AUTH; several
//! recipients; a session kept open between messages close together) or a sendmail-compatible
//! binary. A readable plain-text body with an HTML alternative (values escaped); the subject has
//! no CR/LF and is RFC 2047-encoded by the builder when it is not ASCII; the Message-ID carries
//! the idempotency key.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::Mailbox;
use lettre::message::MultiPart;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSendmailTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::config::{EmailSpec, TlsMode};
use super::escape::{header, html, plain};
use super::http::SendError;
use super::view::Summary;

/// The subject of one alert.
pub fn subject(prefix: &str, s: &Summary) -> String {
    header(&format!("{prefix} {} on {}", s.headline, s.host), 150)
}

/// The plain-text body of one alert.
pub fn body(s: &Summary) -> String {
    let mut b = String::new();
    b.push_str(&format!(
        "{} on {}\n\n",
        plain(&s.lead, 200),
        plain(&s.host, 200)
    ));
    b.push_str(&format!("    {}\n\n", plain(&s.headline, 600)));
    let width = s
        .facts
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    for (k, v) in &s.facts {
        b.push_str(&format!(
            "{:<width$} {}\n",
            format!("{}:", plain(k, 40)),
            plain(v, 600)
        ));
    }
    if let Some(x) = s.explanation_text() {
        b.push_str("\nWhy\n");
        for l in x.split('\n') {
            b.push_str(&format!("    {}\n", plain(l, 800)));
        }
    }
    if let Some(sug) = s.suggestion_text() {
        b.push_str("\nSuggested rule\n");
        for l in sug.split('\n') {
            b.push_str(&format!("    {}\n", plain(l, 800)));
        }
    }
    if !s.raw.is_empty() {
        b.push_str("\nRecords\n");
        for r in &s.raw {
            b.push_str(&format!("    {}\n", plain(r, 1000)));
        }
    }
    b.push_str(&format!(
        "\n-- \narmorwatch · incident {}\n",
        plain(&s.key, 200)
    ));
    b
}

fn html_section(s: &Summary) -> String {
    let mut h = format!(
        "<p><b>{}</b> on {}</p>\n<h2 style=\"font-size:16px\">{}</h2>\n<table>\n",
        html(&s.lead, 200),
        html(&s.host, 200),
        html(&s.headline, 600)
    );
    for (k, v) in &s.facts {
        h.push_str(&format!(
            "<tr><th align=\"left\">{}</th><td><code>{}</code></td></tr>\n",
            html(k, 40),
            html(v, 600)
        ));
    }
    h.push_str("</table>\n");
    if let Some(x) = s.explanation_text() {
        let lines: Vec<String> = x.split('\n').map(|l| html(l, 800)).collect();
        h.push_str(&format!("<h3>Why</h3>\n<p>{}</p>\n", lines.join("<br>\n")));
    }
    if let Some(sug) = s.suggestion_text() {
        let lines: Vec<String> = sug.split('\n').map(|l| html(l, 800)).collect();
        h.push_str(&format!(
            "<h3>Suggested rule</h3>\n<pre>{}</pre>\n",
            lines.join("\n")
        ));
    }
    h.push_str(&format!(
        "<p style=\"color:#888\">armorwatch · incident {}</p>\n",
        html(&s.key, 200)
    ));
    h
}

fn html_page(inner: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body style=\"font-family:sans-serif\">\n{inner}</body></html>\n"
    )
}

/// The HTML alternative of one alert (every value HTML-escaped).
pub fn html_body(s: &Summary) -> String {
    html_page(&html_section(s))
}

/// The HTML alternative of a digest.
pub fn digest_html(items: &[Summary]) -> String {
    let mut inner = format!(
        "<h1 style=\"font-size:18px\">armorwatch digest: {} alerts</h1>\n",
        items.len()
    );
    for s in items {
        inner.push_str("<hr>\n");
        inner.push_str(&html_section(s));
    }
    html_page(&inner)
}

/// Subject of a digest.
pub fn digest_subject(prefix: &str, items: &[Summary]) -> String {
    let hosts: std::collections::BTreeSet<&str> = items.iter().map(|s| s.host.as_str()).collect();
    let hosts: Vec<&str> = hosts.into_iter().collect();
    header(
        &format!(
            "{prefix} digest: {} alerts on {}",
            items.len(),
            hosts.join(", ")
        ),
        150,
    )
}

/// Body of a digest: an index, then every alert in full.
pub fn digest_body(items: &[Summary]) -> String {
    let mut b = format!("armorwatch digest: {} alerts\n\n", items.len());
    for (i, s) in items.iter().enumerate() {
        b.push_str(&format!("{:>3}. {}\n", i + 1, plain(&s.headline, 200)));
    }
    for (i, s) in items.iter().enumerate() {
        b.push_str(&format!("\n==== {} of {} ====\n\n", i + 1, items.len()));
        b.push_str(&body(s));
    }
    b
}

/// A Message-ID from the idempotency key (only `[A-Za-z0-9._-]`, the rest as `=XX`).
pub fn message_id(key: &str, from: &str) -> String {
    let mut local = String::new();
    for c in key.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
            local.push(c);
        } else {
            for b in c.to_string().bytes() {
                local.push_str(&format!("={b:02X}"));
            }
        }
    }
    let domain = from
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('>'))
        .filter(|d| {
            d.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        })
        .unwrap_or("armorwatch.invalid");
    format!("<armorwatch.{local}@{domain}>")
}

/// A connected-on-demand email transport.
#[derive(Debug)]
pub enum EmailTransport {
    /// SMTP.
    Smtp(Box<Smtp>, EmailSpec),
    /// A sendmail-compatible binary.
    Sendmail(Box<Sendmail>, EmailSpec),
}

/// A sendmail-compatible binary, given `timeout` for each message: it may never finish (msmtp's
/// own timeout is off by default, and a relay can accept the connection and never answer). The
/// process is killed when the attempt is given up.
#[derive(Debug)]
pub struct Sendmail {
    transport: AsyncSendmailTransport<Tokio1Executor>,
    command: std::path::PathBuf,
    timeout: Duration,
}

/// SMTP on a socket of our own with `TCP_NODELAY`; a session stays open for the next message
/// for `keep_session_secs` (default 10 s), then is closed with QUIT. A burst of alerts (or a
/// backlog after an outage) goes through one session instead of paying connect, TLS, EHLO and
/// AUTH per message; servers keep an idle session for minutes (RFC 5321 §4.5.3.2.7 asks for 5),
/// so 10 s is well inside what they allow, and a quiet sink holds no connection.
///
/// lettre (0.11.23) leaves Nagle's algorithm on and writes a message's closing `\r\n.\r\n`
/// apart from its body, so every message waited for the server's delayed ACK (40 ms on Linux):
/// about 22 messages a second, whatever the server (lettre PR #1159, not released yet). lettre
/// still speaks the protocol — EHLO, STARTTLS, AUTH, the envelope and the dot-stuffed body —
/// over the stream we connect.
#[derive(Debug)]
pub struct Smtp {
    host: String,
    port: u16,
    timeout: Duration,
    tls: SmtpTls,
    credentials: Option<Credentials>,
    hello: ClientId,
    /// The session of the last message, while it may be reused; the lock also keeps one
    /// message at a time on it.
    idle: Arc<tokio::sync::Mutex<Option<Idle>>>,
    /// Sessions opened so far.
    sessions: AtomicU64,
    /// How long a session stays open after a message; zero: QUIT after each.
    keep_session: Duration,
}

/// An open session between messages.
struct Idle {
    conn: AsyncSmtpConnection,
    /// Which session this is: its closer leaves a newer one alone.
    session: u64,
    /// When its last message was accepted.
    last_used: Instant,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Idle(session {})", self.session)
    }
}

enum SmtpTls {
    None,
    /// STARTTLS after the greeting (required: a server without it is an error).
    Starttls(TlsParameters),
    /// TLS from the first byte (SMTPS, port 465).
    Implicit(TlsConnector, ServerName<'static>),
}

impl std::fmt::Debug for SmtpTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SmtpTls::None => "None",
            SmtpTls::Starttls(_) => "Starttls",
            SmtpTls::Implicit(..) => "Implicit",
        })
    }
}

/// The trust roots of implicit TLS: the system's (as lettre's STARTTLS uses) plus `ca_file`.
fn implicit_tls(spec: &EmailSpec, host: &str) -> Result<SmtpTls, SendError> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(ca) = &spec.ca_file {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| SendError::Tls(format!("cannot read {}: {e}", ca.display())))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| SendError::Tls(format!("{}: {e}", ca.display())))?;
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| SendError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| SendError::Tls(format!("server name {host:?}: {e}")))?;
    Ok(SmtpTls::Implicit(
        TlsConnector::from(Arc::new(config)),
        name,
    ))
}

/// An implicit-TLS stream as lettre takes it.
#[derive(Debug)]
struct Smtps(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for Smtps {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for Smtps {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Smtps {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// End a session with QUIT, waiting at most `within` for the server; the outcome changes
/// nothing (the message was accepted, or nobody is left to tell).
async fn quit(conn: &mut AsyncSmtpConnection, within: Duration) {
    let _ = tokio::time::timeout(within, conn.quit()).await;
}

fn smtp_err(e: &(dyn std::error::Error + 'static)) -> SendError {
    SendError::Smtp(super::http::error_chain(e))
}

/// A failure while sending the message itself (MAIL FROM, RCPT TO, DATA). A permanent (5xx)
/// reply refuses this message only: [`SendError::SmtpRefused`], dropped by the sender, where
/// anything else holds up the sink and is retried. 530 (authentication required, RFC 4954) is
/// about the session, not the message.
fn message_err(e: &lettre::transport::smtp::Error) -> SendError {
    if e.is_permanent() && e.status().map(u16::from) != Some(530) {
        SendError::SmtpRefused(super::http::error_chain(e))
    } else {
        smtp_err(e)
    }
}

impl Smtp {
    /// Send one message: on the open session when there is one, else (or when that fails: the
    /// server may have closed it) on a new one. `timeout` bounds each attempt.
    async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendError> {
        let mut idle = self.idle.lock().await;
        if let Some(mut open) = idle.take().filter(|i| !i.conn.has_broken()) {
            match tokio::time::timeout(self.timeout, open.conn.send(envelope, message)).await {
                Ok(Ok(_)) => {
                    open.last_used = Instant::now();
                    *idle = Some(open);
                    return Ok(());
                }
                // The server refused this message: a new session would get the same answer.
                Ok(Err(e)) if e.is_permanent() => return Err(message_err(&e)),
                // The server may have closed the idle session (421, reset, EOF): try a new one.
                Ok(Err(_)) => {}
                // The message may have been accepted: the retry policy decides, as after any
                // timeout; the session is dropped.
                Err(_) => return Err(self.timed_out("message to")),
            }
        }
        let mut conn =
            match tokio::time::timeout(self.timeout, self.session(envelope, message)).await {
                Ok(r) => r?,
                Err(_) => return Err(self.timed_out("session with")),
            };
        if self.keep_session.is_zero() {
            // The message is accepted: a failed QUIT changes nothing.
            quit(&mut conn, Duration::from_secs(5)).await;
            return Ok(());
        }
        let session = self.sessions.fetch_add(1, Ordering::Relaxed);
        *idle = Some(Idle {
            conn,
            session,
            last_used: Instant::now(),
        });
        self.close_when_idle(session);
        Ok(())
    }

    /// One task per session: it closes the session with QUIT once no message has used it for
    /// `keep_session`, and ends early when the session is replaced or dropped. (`send` holds
    /// the lock while a message is on the session, so the task never sees it in use.)
    fn close_when_idle(&self, session: u64) {
        let idle = self.idle.clone();
        let keep = self.keep_session;
        tokio::spawn(async move {
            let mut deadline = Instant::now() + keep;
            loop {
                tokio::time::sleep_until(deadline).await;
                let mut slot = idle.lock().await;
                match slot.as_ref() {
                    Some(open) if open.session == session => {
                        let due = open.last_used + keep;
                        if due > Instant::now() {
                            deadline = due;
                            continue;
                        }
                    }
                    _ => return,
                }
                let Some(mut open) = slot.take() else { return };
                drop(slot);
                quit(&mut open.conn, Duration::from_secs(5)).await;
                return;
            }
        });
    }

    fn timed_out(&self, what: &str) -> SendError {
        SendError::Timeout(format!(
            "SMTP {what} {}:{} not done after {} s",
            self.host,
            self.port,
            self.timeout.as_secs()
        ))
    }

    /// A new session that sends one message; the session is returned open.
    async fn session(
        &self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<AsyncSmtpConnection, SendError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| SendError::Connect(format!("{}:{}: {e}", self.host, self.port)))?;
        tcp.set_nodelay(true)
            .map_err(|e| SendError::Connect(format!("TCP_NODELAY: {e}")))?;
        let stream: Box<dyn AsyncTokioStream> = match &self.tls {
            SmtpTls::Implicit(connector, name) => Box::new(Smtps(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| SendError::Tls(super::http::error_chain(&e)))?,
            )),
            SmtpTls::None | SmtpTls::Starttls(_) => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(|e| smtp_err(&e))?;
        let setup = async {
            if let SmtpTls::Starttls(params) = &self.tls {
                conn.starttls(params.clone(), &self.hello).await?;
            }
            if let Some(c) = &self.credentials {
                conn.auth(DEFAULT_MECHANISMS, c).await?;
            }
            Ok::<(), lettre::transport::smtp::Error>(())
        }
        .await;
        // Up to here a failure is the session's (STARTTLS, AUTH: 535 is permanent but concerns
        // every message); from here on, it may be this message's.
        let result = match setup {
            Ok(()) => conn
                .send(envelope, message)
                .await
                .map_err(|e| message_err(&e)),
            Err(e) => Err(smtp_err(&e)),
        };
        match result {
            Ok(_) => Ok(conn),
            Err(e) => {
                conn.abort().await;
                Err(e)
            }
        }
    }
}

impl EmailTransport {
    /// QUIT the kept SMTP session, if any (at most 1 s: a stopping daemon does not wait on a
    /// slow server; the TCP close ends the session anyway).
    pub async fn close(&self) {
        if let EmailTransport::Smtp(t, _) = self {
            let open = t.idle.lock().await.take();
            if let Some(mut open) = open {
                quit(&mut open.conn, Duration::from_secs(1)).await;
            }
        }
    }

    /// Build the transport (no connection yet).
    pub fn new(spec: &EmailSpec, timeout: Duration) -> Result<EmailTransport, SendError> {
        if let Some(bin) = &spec.sendmail {
            return Ok(EmailTransport::Sendmail(
                Box::new(Sendmail {
                    transport: AsyncSendmailTransport::<Tokio1Executor>::new_with_command(
                        bin.as_os_str(),
                    ),
                    command: bin.clone(),
                    timeout,
                }),
                spec.clone(),
            ));
        }
        let host = spec.smtp_host.clone().unwrap_or_default();
        let tls = match spec.tls {
            TlsMode::None => SmtpTls::None,
            TlsMode::Tls => implicit_tls(spec, &host)?,
            TlsMode::Starttls => {
                let mut b = TlsParameters::builder(host.clone());
                if let Some(ca) = &spec.ca_file {
                    let pem = std::fs::read(ca).map_err(|e| {
                        SendError::Tls(format!("cannot read {}: {e}", ca.display()))
                    })?;
                    let cert = Certificate::from_pem(&pem)
                        .map_err(|e| SendError::Tls(format!("{}: {e}", ca.display())))?;
                    b = b.add_root_certificate(cert);
                }
                SmtpTls::Starttls(
                    b.build_rustls()
                        .map_err(|e| SendError::Tls(e.to_string()))?,
                )
            }
        };
        let credentials = match (&spec.username, &spec.password) {
            (Some(u), Some(p)) => Some(Credentials::new(u.clone(), p.expose().to_string())),
            _ => None,
        };
        Ok(EmailTransport::Smtp(
            Box::new(Smtp {
                host,
                port: spec.smtp_port,
                timeout,
                tls,
                credentials,
                hello: ClientId::default(),
                idle: Arc::default(),
                sessions: AtomicU64::new(0),
                keep_session: Duration::from_secs(spec.keep_session_secs),
            }),
            spec.clone(),
        ))
    }

    fn spec(&self) -> &EmailSpec {
        match self {
            EmailTransport::Smtp(_, s) | EmailTransport::Sendmail(_, s) => s,
        }
    }

    /// Send one message (plain text with an HTML alternative) to every recipient.
    pub async fn send(
        &self,
        subject: String,
        body: String,
        html: String,
        key: &str,
    ) -> Result<(), SendError> {
        let spec = self.spec();
        let from: Mailbox = spec
            .from
            .parse()
            .map_err(|e| SendError::Other(format!("from: {e}")))?;
        let mut b = Message::builder()
            .from(from)
            .subject(subject)
            .message_id(Some(message_id(key, &spec.from)));
        for t in &spec.to {
            let mb: Mailbox = t
                .parse()
                .map_err(|e| SendError::Other(format!("to: {e}")))?;
            b = b.to(mb);
        }
        let msg = b
            .multipart(MultiPart::alternative_plain_html(body, html))
            .map_err(|e| SendError::Other(format!("building the message: {e}")))?;
        match self {
            EmailTransport::Smtp(t, _) => t.send(msg.envelope(), &msg.formatted()).await,
            EmailTransport::Sendmail(t, _) => {
                match tokio::time::timeout(t.timeout, t.transport.send(msg)).await {
                    Ok(r) => r
                        .map(|_| ())
                        .map_err(|e| SendError::Sendmail(super::http::error_chain(&e))),
                    // Dropping the attempt kills the process (lettre sets kill_on_drop).
                    Err(_) => Err(SendError::Timeout(format!(
                        "{} not done after {} s",
                        t.command.display(),
                        t.timeout.as_secs()
                    ))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        let v = crate::sinks::view::AlertView::from_json(&serde_json::json!({
            "type": "incident.opened", "id": "<i>", "seq": 1, "host": "<script>x</script>",
            "key": {"profile": "p\"'&", "operation": "open", "object": "<img src=x onerror=y>"},
            "explanation": {"verdict": "<b>v</b>", "suggestion": {"rule": "</pre><script>", "file": "f"}}
        }))
        .unwrap();
        let h = html_body(&v.summary());
        assert!(
            !h.contains("<script")
                && !h.contains("<img")
                && !h.contains("<b>v")
                && !h.contains("</pre><")
        );
        assert!(h.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(h.contains("p&quot;&#39;&amp;"));
    }

    #[test]
    fn message_id_is_safe() {
        assert_eq!(
            message_id("inc<1>:2", "Armor <a@mail.example>"),
            "<armorwatch.inc=3C1=3E=3A2@mail.example>"
        );
    }
}

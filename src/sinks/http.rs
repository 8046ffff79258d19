//! Sending: the HTTP client (reqwest, rustls), the per-kind transports, and [`SendError`], which
//! says precisely why a delivery failed (DNS, connection, TLS certificate, HTTP status and body
//! excerpt, SMTP reply) and what that means for retrying: the whole sink, this alert later, or
//! never (the receiver refused this alert for good).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use super::config::{AlertmanagerSpec, HttpSpec, SinkKind, SinkSpec};
use super::email::{self, EmailTransport};
use super::escape::plain;
use super::outbox::Entry;
use super::view::Summary;
use super::{alertmanager, discord, ntfy, slack, teams, webhook};

/// Why one delivery attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    /// The host name did not resolve.
    #[error("DNS: {0}")]
    Dns(String),
    /// No connection (refused, unreachable, reset).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// TLS failed (certificate not trusted, wrong name, handshake).
    #[error("TLS: {0}")]
    Tls(String),
    /// No answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The receiver answered with a non-2xx status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The status code.
        status: u16,
        /// The start of the response body, control characters made visible.
        body: String,
        /// How long the receiver asked to be left alone (`Retry-After`), at most
        /// [`RETRY_AFTER_MAX`].
        retry_after: Option<Duration>,
    },
    /// The SMTP session failed (connect, greeting, STARTTLS, AUTH, a 4xx reply, the connection
    /// lost), with the server's reply: other messages would fail too.
    #[error("SMTP: {0}")]
    Smtp(String),
    /// The SMTP server refused this message for good (a 5xx reply to MAIL FROM, RCPT TO or the
    /// content), with its reply: sending it again gets the same answer, other messages may pass.
    #[error("SMTP: {0}")]
    SmtpRefused(String),
    /// The sendmail binary failed.
    #[error("sendmail: {0}")]
    Sendmail(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// The HTTP statuses that concern the receiver as a whole although they are 4xx: bad or missing
/// credentials (401, 403, 407), a URL that names nothing or no longer does (404, 410: a typo, a
/// receiver being redeployed, a revoked webhook) — every alert would get them and the admin can
/// fix them, so they are retried like an outage, not dropped —, a request timeout (408) and too
/// many requests (429).
fn sink_wide_4xx(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 407 | 408 | 410 | 429)
}

impl SendError {
    /// True when the failure concerns the receiver as a whole (so other alerts would fail too):
    /// the sender backs off the whole sink instead of trying the next incident.
    pub fn is_sink_wide(&self) -> bool {
        match self {
            // A redirect is not followed (credentials in the URL or headers must not go
            // elsewhere); it is the URL's, not the alert's: every alert would get it.
            SendError::Status { status, .. } => {
                *status >= 500 || (300..400).contains(status) || sink_wide_4xx(*status)
            }
            SendError::SmtpRefused(_) | SendError::Other(_) => false,
            _ => true,
        }
    }

    /// True when the receiver refused this alert for good (another HTTP 4xx, such as 400, 413
    /// or 422; an SMTP 5xx to the message): the same request would get the same answer,
    /// so the sender drops the alert (reporting the loss) and goes on with the next.
    pub fn is_refusal(&self) -> bool {
        match self {
            SendError::Status { status, .. } => {
                (400..500).contains(status) && !sink_wide_4xx(*status)
            }
            SendError::SmtpRefused(_) => true,
            _ => false,
        }
    }

    /// The wait the receiver asked for with `Retry-After` (on a 429 or 503), if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The longest `Retry-After` honoured: a receiver asking for more is tried again after an hour
/// (a date far ahead may come from a wrong clock; the alerts still expire after `max_age_secs`).
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(3600);

/// A `Retry-After` value (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, as the wait from
/// `now` (none for a date already past), at most [`RETRY_AFTER_MAX`]; `None` when unreadable.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a long time".
        Duration::from_secs(value.parse().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(RETRY_AFTER_MAX))
}

/// `outer: inner: innermost`, de-duplicated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn classify(e: &reqwest::Error) -> SendError {
    let chain = error_chain(e);
    let lower = chain.to_lowercase();
    if e.is_timeout() {
        SendError::Timeout(chain)
    } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
        SendError::Dns(chain)
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        SendError::Tls(chain)
    } else if e.is_connect() {
        SendError::Connect(chain)
    } else {
        SendError::Other(chain)
    }
}

fn client(spec: &HttpSpec, timeout: Duration) -> Result<reqwest::Client, SendError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("armorwatch/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &spec.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| SendError::Tls(format!("cannot read {}: {e}", ca.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| SendError::Tls(format!("{}: {e}", ca.display())))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| SendError::Other(error_chain(&e)))
}

/// What kind of HTTP receiver.
#[derive(Debug)]
enum HttpKind {
    Slack,
    Discord,
    Teams,
    Ntfy {
        topic: String,
    },
    Webhook {
        secret: Option<Vec<u8>>,
        signature_header: String,
    },
    Alertmanager(Box<AlertmanagerSpec>),
}

/// A sink's way of delivering a batch of spooled alerts.
#[derive(Debug)]
pub enum Transport {
    /// An HTTP receiver.
    Http {
        /// The client (one per sink: its own CA and timeouts).
        client: reqwest::Client,
        /// Where to POST.
        url: String,
        /// Static headers.
        headers: HeaderMap,
        /// How to render.
        kind: HttpKindBox,
    },
    /// Email.
    Email(Box<EmailTransport>),
}

/// Boxed private kind (keeps the enum's variants private).
#[derive(Debug)]
pub struct HttpKindBox(HttpKind);

fn static_headers(spec: &HttpSpec) -> Result<HeaderMap, SendError> {
    let mut h = HeaderMap::new();
    for (k, v) in &spec.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| SendError::Other(format!("header {k}: {e}")))?;
        let value =
            HeaderValue::from_str(v).map_err(|e| SendError::Other(format!("header {k}: {e}")))?;
        h.insert(name, value);
    }
    Ok(h)
}

/// A rendered request or message.
#[derive(Debug)]
enum Rendered {
    Http {
        body: Vec<u8>,
        content_type: &'static str,
    },
    Email {
        subject: String,
        body: String,
        html: String,
    },
}

impl Transport {
    /// The transport of a remote sink (`None` for file/stdout).
    pub fn new(spec: &SinkSpec) -> Result<Option<Transport>, SendError> {
        let timeout = Duration::from_secs(spec.delivery.timeout_secs);
        let (http, kind) = match &spec.kind {
            SinkKind::File(_) | SinkKind::Stdout(_) => return Ok(None),
            SinkKind::Email(e) => {
                return Ok(Some(Transport::Email(Box::new(EmailTransport::new(
                    e, timeout,
                )?))));
            }
            SinkKind::Slack(h) => (h, HttpKind::Slack),
            SinkKind::Discord(h) => (h, HttpKind::Discord),
            SinkKind::Teams(h) => (h, HttpKind::Teams),
            SinkKind::Ntfy(n) => {
                let (_, topic) = ntfy::split_topic(n.http.url.expose())
                    .ok_or_else(|| SendError::Other("the ntfy URL names no topic".into()))?;
                (&n.http, HttpKind::Ntfy { topic })
            }
            SinkKind::Webhook(w) => (
                &w.http,
                HttpKind::Webhook {
                    secret: w.secret.as_ref().map(|s| s.expose().as_bytes().to_vec()),
                    signature_header: w.signature_header.clone(),
                },
            ),
            SinkKind::Alertmanager(a) => (&a.http, HttpKind::Alertmanager(Box::new(a.clone()))),
        };
        let mut headers = static_headers(http)?;
        let url = match &kind {
            HttpKind::Ntfy { .. } => ntfy::split_topic(http.url.expose())
                .map(|(base, _)| base)
                .unwrap_or_default(),
            HttpKind::Alertmanager(_) => {
                format!("{}/api/v2/alerts", http.url.expose().trim_end_matches('/'))
            }
            _ => http.url.expose().to_string(),
        };
        if let SinkKind::Ntfy(n) = &spec.kind {
            if let Some(t) = &n.token {
                let v = HeaderValue::from_str(&format!("Bearer {}", t.expose()))
                    .map_err(|e| SendError::Other(format!("token: {e}")))?;
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
        }
        Ok(Some(Transport::Http {
            client: client(http, timeout)?,
            url,
            headers,
            kind: HttpKindBox(kind),
        }))
    }

    /// Close what the transport keeps open between sends (the email sink's SMTP session, with
    /// QUIT), when the sink stops.
    pub async fn close(&self) {
        if let Transport::Email(e) = self {
            e.close().await;
        }
    }

    /// True for Alertmanager (whose open incidents are re-posted).
    pub fn alertmanager_spec(&self) -> Option<&AlertmanagerSpec> {
        match self {
            Transport::Http {
                kind: HttpKindBox(HttpKind::Alertmanager(a)),
                ..
            } => Some(a),
            _ => None,
        }
    }

    fn render(&self, batch: &[Arc<Entry>], now: &str) -> Result<Rendered, SendError> {
        let summaries = || {
            batch
                .iter()
                .map(|e| e.view.summary())
                .collect::<Vec<Summary>>()
        };
        let json = |v: serde_json::Value| Rendered::Http {
            body: serde_json::to_vec(&v).unwrap_or_default(),
            content_type: "application/json",
        };
        let single = batch.len() == 1;
        Ok(match self {
            Transport::Email(t) => {
                let prefix = match t.as_ref() {
                    EmailTransport::Smtp(_, s) | EmailTransport::Sendmail(_, s) => {
                        s.subject_prefix.clone()
                    }
                };
                let s = summaries();
                if single {
                    Rendered::Email {
                        subject: email::subject(&prefix, &s[0]),
                        body: email::body(&s[0]),
                        html: email::html_body(&s[0]),
                    }
                } else {
                    Rendered::Email {
                        subject: email::digest_subject(&prefix, &s),
                        body: email::digest_body(&s),
                        html: email::digest_html(&s),
                    }
                }
            }
            Transport::Http { kind, .. } => match &kind.0 {
                HttpKind::Slack if single => json(slack::payload(&summaries()[0])),
                HttpKind::Slack => json(slack::digest_payload(&summaries())),
                HttpKind::Discord if single => json(discord::payload(&summaries()[0])),
                HttpKind::Discord => json(discord::digest_payload(&summaries())),
                HttpKind::Teams if single => json(teams::payload(&summaries()[0])),
                HttpKind::Teams => json(teams::digest_payload(&summaries())),
                HttpKind::Ntfy { topic } if single => json(ntfy::payload(topic, &summaries()[0])),
                HttpKind::Ntfy { topic } => json(ntfy::digest_payload(topic, &summaries())),
                HttpKind::Webhook { .. } => Rendered::Http {
                    body: if single {
                        batch[0].json.as_bytes().to_vec()
                    } else {
                        webhook::digest_body(&batch.iter().map(|e| &*e.json).collect::<Vec<_>>())
                            .into_bytes()
                    },
                    content_type: "application/json",
                },
                HttpKind::Alertmanager(spec) => json(serde_json::Value::Array(
                    batch
                        .iter()
                        .map(|e| alertmanager::am_alert(spec, &e.view, now))
                        .collect(),
                )),
            },
        })
    }

    /// The idempotency key of a batch: the alert's `id:seq`, or for a digest the first key and
    /// the count.
    pub fn batch_key(batch: &[Arc<Entry>]) -> String {
        match batch {
            [one] => one.key.clone(),
            [first, ..] => format!("digest:{}+{}", first.key, batch.len()),
            [] => String::new(),
        }
    }

    /// Deliver a batch (one alert, or a digest); `Ok` means the receiver accepted it.
    pub async fn send(&self, batch: &[Arc<Entry>], now_ms: u64) -> Result<(), SendError> {
        if batch.is_empty() {
            return Ok(());
        }
        let now = super::rfc3339(now_ms);
        let key = Self::batch_key(batch);
        match (self.render(batch, &now)?, self) {
            (
                Rendered::Email {
                    subject,
                    body,
                    html,
                },
                Transport::Email(t),
            ) => t.send(subject, body, html, &key).await,
            (
                Rendered::Http { body, content_type },
                Transport::Http {
                    client,
                    url,
                    headers,
                    kind,
                },
            ) => {
                let mut req = client
                    .post(url.as_str())
                    .headers(headers.clone())
                    .header(CONTENT_TYPE, content_type)
                    .header("Idempotency-Key", plain(&key, 300));
                if let HttpKind::Webhook {
                    secret,
                    signature_header,
                } = &kind.0
                {
                    let ts = now_ms / 1000;
                    req = req.header(webhook::TIMESTAMP_HEADER, ts.to_string());
                    if let Some(secret) = secret {
                        req = req.header(
                            signature_header.as_str(),
                            webhook::signature(secret, ts, &body),
                        );
                    }
                }
                post(req.body(body)).await
            }
            _ => Err(SendError::Other("renderer and transport disagree".into())),
        }
    }

    /// Re-post Alertmanager alerts that are still open.
    pub async fn post_json(&self, value: &serde_json::Value) -> Result<(), SendError> {
        match self {
            Transport::Http {
                client,
                url,
                headers,
                ..
            } => {
                let body =
                    serde_json::to_vec(value).map_err(|e| SendError::Other(e.to_string()))?;
                let req = client
                    .post(url.as_str())
                    .headers(headers.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body);
                post(req).await
            }
            Transport::Email(_) => Ok(()),
        }
    }
}

/// The most of a successful answer's body read (drained so the connection can be reused; a
/// longer one is left unread, and its connection closed).
const DRAIN_MAX: usize = 64 * 1024;

/// The bytes of an error's body shown in [`SendError::Status`].
const EXCERPT_MAX: usize = 300;

/// The start of `resp`'s body: until its end or at least `max` bytes, whichever comes first
/// (a receiver's body can be endless), or what came before a read failed (a timeout).
async fn body_start(resp: &mut reqwest::Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < max {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body
}

async fn post(req: reqwest::RequestBuilder) -> Result<(), SendError> {
    // The URL may hold a token (Slack, Discord, Teams webhooks): keep it out of messages.
    let mut resp = req.send().await.map_err(|e| classify(&e.without_url()))?;
    let status = resp.status();
    if status.is_success() {
        body_start(&mut resp, DRAIN_MAX).await;
        return Ok(());
    }
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let body = body_start(&mut resp, EXCERPT_MAX).await;
    let excerpt = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_MAX)]).into_owned();
    Err(SendError::Status {
        status: status.as_u16(),
        body: plain(excerpt.trim(), 300),
        retry_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> SendError {
        SendError::Status {
            status,
            body: String::new(),
            retry_after: None,
        }
    }

    #[test]
    fn statuses_are_sink_wide_or_refusals_of_the_alert() {
        for s in [400, 409, 413, 415, 422, 451] {
            assert!(status(s).is_refusal() && !status(s).is_sink_wide(), "{s}");
        }
        for s in [401, 403, 404, 407, 408, 410, 429, 500, 502, 503, 504] {
            assert!(status(s).is_sink_wide() && !status(s).is_refusal(), "{s}");
        }
        // A redirect (not followed) holds the whole sink like an outage: every alert would get
        // it (it was retried per incident, one request per open incident each round).
        for s in [301, 302, 307, 308] {
            assert!(status(s).is_sink_wide() && !status(s).is_refusal(), "{s}");
        }
        assert!(SendError::SmtpRefused("554".into()).is_refusal());
        assert!(!SendError::SmtpRefused("554".into()).is_sink_wide());
        let session = SendError::Smtp("421".into());
        assert!(session.is_sink_wide() && !session.is_refusal());
        assert!(!SendError::Other("x".into()).is_refusal());
    }

    #[test]
    fn retry_after_seconds_or_http_date_capped() {
        let now = httpdate::parse_http_date("Wed, 02 Dec 2026 12:00:00 GMT").unwrap();
        let p = |v| parse_retry_after(v, now);
        assert_eq!(p("120"), Some(Duration::from_secs(120)));
        assert_eq!(p(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            p("Wed, 02 Dec 2026 12:00:30 GMT"),
            Some(Duration::from_secs(30))
        );
        // The obsolete forms RFC 9110 asks recipients to accept.
        assert_eq!(
            p("Wednesday, 02-Dec-26 12:01:00 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(p("Wed Dec  2 12:00:05 2026"), Some(Duration::from_secs(5)));
        assert_eq!(p("Wed, 02 Dec 2026 11:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(p("86400"), Some(RETRY_AFTER_MAX));
        assert_eq!(p("99999999999999999999999"), Some(RETRY_AFTER_MAX));
        assert_eq!(p("soon"), None);
        assert_eq!(p("-5"), None);
        assert_eq!(p(""), None);
    }
}

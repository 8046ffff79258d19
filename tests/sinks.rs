//! Sink tests against real servers on 127.0.0.1, started here: an HTTP(S) receiver (a small
//! stdlib Python script that can be told to fail N times, or killed to stay down), an SMTP server
//! with STARTTLS and AUTH (Debian's python3-aiosmtpd) with a test CA made by the openssl CLI, and
//! Debian's prometheus-alertmanager. Nothing sleeps to wait: every wait polls a condition with a
//! deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use armorwatch::alert::{Alert, AlertType, IncidentKey, Sample};
use armorwatch::sinks::config::{SecretContext, SinkSpec};
use armorwatch::sinks::http::{SendError, Transport};
use armorwatch::sinks::outbox::Entry;
use armorwatch::sinks::sample::sample_alert;
use armorwatch::sinks::view::AlertView;
use armorwatch::sinks::{SinkSet, SinkSetOptions, now_ms, webhook};
use serde_json::{Value, json};

mod common;
use common::{free_port, run_ok};

const PY: &str = "/usr/bin/python3";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sinks")
}

fn have(bin: &str) -> bool {
    Path::new(bin).exists()
}

fn python_has(module: &str) -> bool {
    have(PY)
        && Command::new(PY)
            .args(["-c", &format!("import {module}")])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
}

macro_rules! require {
    ($cond:expr, $what:expr) => {
        if !$cond {
            common::skip(&format!(
                "{} is not installed (see tests/deps/sinks.apt)",
                $what
            ));
            return;
        }
    };
}

/// A child process killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_printing_port(mut cmd: Command) -> Server {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no port: {line:?}"));
    Server { child, port }
}

struct Receiver {
    server: Server,
    log: PathBuf,
}

fn receiver(log: &Path, port: u16, tls: Option<&Certs>) -> Receiver {
    let mut cmd = Command::new(PY);
    cmd.arg(fixtures().join("receiver.py"))
        .arg("--log")
        .arg(log)
        .arg("--port")
        .arg(port.to_string());
    if let Some(c) = tls {
        cmd.arg("--cert")
            .arg(&c.server_cert)
            .arg("--key")
            .arg(&c.server_key);
    }
    Receiver {
        server: spawn_printing_port(cmd),
        log: log.to_path_buf(),
    }
}

impl Receiver {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.server.port)
    }
    async fn control(&self, body: Value) {
        reqwest::Client::new()
            .post(self.url("/_control"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
    }
    async fn fail_next(&self, n: u32, status: u16) {
        self.control(json!({"fail": n, "status": status})).await;
    }
    /// Like `fail_next`, the answers carrying `headers` (e.g. `Retry-After`).
    async fn fail_next_with(&self, n: u32, status: u16, headers: Value) {
        self.control(json!({"fail": n, "status": status, "headers": headers}))
            .await;
    }
    /// From now on, answer `status` to every request whose body contains `text`.
    async fn refuse(&self, text: &str, status: u16) {
        self.control(json!({"refuse": {"contains": text, "status": status}}))
            .await;
    }
}

/// The receiver's request records written so far (a last line still being written, which a
/// 64 KiB hostile value makes likely, is left for the next read).
fn requests(log: &Path) -> Vec<Value> {
    common::json_lines(log)
}

fn accepted(log: &Path) -> Vec<Value> {
    requests(log)
        .into_iter()
        .filter(|r| r["accepted"] == true)
        .collect()
}

/// The `loss` alerts in a JSON-lines file sink.
fn losses(out: &Path) -> Vec<Value> {
    common::json_lines(out)
        .into_iter()
        .filter(|v| v["type"] == "loss")
        .collect()
}

/// The alerts lost, summed over the `loss` alerts in a JSON-lines file sink.
fn lost(out: &Path) -> u64 {
    losses(out)
        .iter()
        .map(|l| l["loss"]["count"].as_u64().unwrap())
        .sum()
}

async fn wait_for(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Certs {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

/// A test CA and a server certificate for 127.0.0.1/localhost, made with the openssl CLI.
fn make_certs(dir: &Path) -> Certs {
    let run = |args: &[&str]| {
        run_ok(Command::new("openssl").args(args).current_dir(dir));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    a.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=armorwatch-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&a);
    let mut b = vec!["req", "-new"];
    b.extend(ec);
    b.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&b);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    Certs {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    }
}

fn specs(toml_text: &str) -> Vec<SinkSpec> {
    let t: toml::Table = toml::from_str(toml_text).unwrap();
    armorwatch::sinks::parse_sinks(t["sinks"].as_table().unwrap(), &SecretContext::default())
        .unwrap()
}

fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, value).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn alert(t: AlertType, id: &str, seq: u64, host: &str, object: &str) -> Alert {
    let mut a = sample_alert(host, now_ms());
    a.alert_type = t;
    a.id = id.to_string();
    a.seq = seq;
    a.count = seq;
    a.total = seq * 3;
    if let Some(k) = a.key.as_mut() {
        k.object = object.to_string();
    }
    a.event = None;
    a.samples[0].object = Some(object.to_string());
    a
}

/// A receiver and a set with one webhook sink `hook` to it retrying within milliseconds;
/// `extra` is more TOML for that sink (`mode = "digest"` …).
fn fast_webhook(dir: &Path, extra: &str) -> (Receiver, SinkSet) {
    let rx = receiver(&dir.join("log"), 0, None);
    let s = specs(&format!(
        "[sinks.hook]\ntype = \"webhook\"\nurl = \"{}\"\nretry_initial_ms = 5\nretry_max_ms = 50\n{extra}",
        rx.url("/in")
    ));
    let set = SinkSet::start(&s, opts(&dir.join("state"), "web1")).unwrap();
    (rx, set)
}

/// A `[sinks.log]` file sink of alerts at `out`, as TOML.
fn file_sink(out: &Path) -> String {
    format!(
        "[sinks.log]\ntype = \"file\"\npath = \"{}\"\n",
        out.display()
    )
}

fn opts(dir: &Path, host: &str) -> SinkSetOptions {
    let mut o = SinkSetOptions::new(dir, host);
    o.outbox_fsync = true;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_signs_retries_and_carries_idempotency_key() {
    require!(have(PY), "python3");
    let dir = tempfile::tempdir().unwrap();
    let rx = receiver(&dir.path().join("log"), 0, None);
    rx.fail_next(3, 503).await;
    let key = secret_file(dir.path(), "hmac", "k3y\n");
    let s = specs(&format!(
        r#"[sinks.hook]
type = "webhook"
url = "{}"
secret_file = "{}"
headers = {{ "X-Tenant" = "blue" }}
retry_initial_ms = 5
retry_max_ms = 50
"#,
        rx.url("/hook"),
        key.display()
    ));
    let set = SinkSet::start(&s, opts(&dir.path().join("state"), "web1")).unwrap();
    let a = alert(AlertType::IncidentOpened, "inc-1", 1, "web1", "/etc/shadow");
    set.deliver_alert(&a);
    // Spooled before anything is sent.
    assert!(
        std::fs::read_dir(dir.path().join("state/outbox/hook"))
            .unwrap()
            .count()
            >= 1
    );
    wait_for("delivery", 20, || accepted(&rx.log).len() == 1).await;
    wait_for("outbox empty", 5, || set.pending("hook") == Some(0)).await;
    let all = requests(&rx.log);
    assert_eq!(all.len(), 4, "3 refused + 1 accepted: {all:#?}");
    let r = &all[3];
    let body = r["body"].as_str().unwrap();
    assert_eq!(body, serde_json::to_string(&a).unwrap());
    assert_eq!(r["headers"]["idempotency-key"], "inc-1:1");
    assert_eq!(r["headers"]["x-tenant"], "blue");
    let ts: u64 = r["headers"]["x-armorwatch-timestamp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        r["headers"]["x-armorwatch-signature"].as_str().unwrap(),
        webhook::signature(b"k3y", ts, body.as_bytes())
    );
    let stats = set.stats();
    assert_eq!(stats[0].failed_attempts, 3);
    assert_eq!(stats[0].delivered, 1);
    assert!(stats[0].last_error.as_deref().unwrap().contains("HTTP 503"));
    set.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_receiver_needs_the_test_ca() {
    require!(have(PY), "python3");
    require!(have("/usr/bin/openssl"), "openssl");
    let dir = tempfile::tempdir().unwrap();
    let certs = make_certs(dir.path());
    let rx = receiver(&dir.path().join("log"), 0, Some(&certs));
    let url = format!("https://127.0.0.1:{}/services/T/B/X", rx.server.port);
    let with_ca = specs(&format!(
        "[sinks.s]\ntype = \"slack\"\nurl = \"{url}\"\nca_file = \"{}\"\n",
        certs.ca.display()
    ));
    let without = specs(&format!("[sinks.s]\ntype = \"slack\"\nurl = \"{url}\"\n"));
    let a = sample_alert("web1", now_ms());
    let json = serde_json::to_string(&a).unwrap();
    let entry = Arc::new(Entry {
        seq: 1,
        created_ms: now_ms(),
        key: a.idempotency_key(),
        incident: a.id.clone(),
        json: Arc::from(json.as_str()),
        view: Arc::new(AlertView::from_json(&serde_json::to_value(&a).unwrap()).unwrap()),
    });
    let t = Transport::new(&with_ca[0]).unwrap().unwrap();
    t.send(std::slice::from_ref(&entry), now_ms())
        .await
        .unwrap();
    let t = Transport::new(&without[0]).unwrap().unwrap();
    let e = t
        .send(std::slice::from_ref(&entry), now_ms())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("TLS:") && msg.contains("UnknownIssuer"),
        "{msg}"
    );
    assert!(
        !msg.contains("/services/T/B/X"),
        "the webhook URL is a secret: {msg}"
    );
    let got = accepted(&rx.log);
    assert_eq!(got.len(), 1);
    let body: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["blocks"][0]["type"], "header");
    let text = body.to_string();
    assert!(text.contains("Suggested rule") && text.contains("/etc/ssl/private/example.key r,"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_with_restart_loses_nothing_and_keeps_order() {
    require!(have(PY), "python3");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    let cfg = format!(
        "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/in\"\nretry_initial_ms = 5\nretry_max_ms = 40\ntimeout_secs = 2\n"
    );
    let s = specs(&cfg);
    let mut sent: Vec<Alert> = Vec::new();
    // Receiver down; alerts keep coming for three incidents, interleaved.
    let set = SinkSet::start(&s, opts(&state, "web1")).unwrap();
    for seq in 1..=5 {
        for inc in ["a", "b", "c"] {
            let t = if seq == 1 {
                AlertType::IncidentOpened
            } else {
                AlertType::IncidentUpdate
            };
            let al = alert(t, inc, seq, "web1", &format!("/srv/{inc}"));
            set.deliver_alert(&al);
            sent.push(al);
        }
    }
    wait_for("failed attempts", 10, || {
        set.stats()[0].failed_attempts >= 2
    })
    .await;
    let report = set.shutdown(Duration::from_secs(2)).await;
    assert_eq!(report.pending["hook"], 15);
    // armorwatch restarted while the receiver is still down; more alerts.
    let set = SinkSet::start(&s, opts(&state, "web1")).unwrap();
    assert_eq!(set.pending("hook"), Some(15));
    for inc in ["a", "b", "c"] {
        let al = alert(
            AlertType::IncidentClosed,
            inc,
            6,
            "web1",
            &format!("/srv/{inc}"),
        );
        set.deliver_alert(&al);
        sent.push(al);
    }
    // Receiver back, but flaky at first.
    let rx = receiver(&dir.path().join("log"), port, None);
    rx.fail_next(2, 500).await;
    wait_for("everything delivered", 30, || {
        set.pending("hook") == Some(0)
    })
    .await;
    set.shutdown(Duration::from_secs(2)).await;

    let got = accepted(&rx.log);
    let mut keys_seen: HashMap<String, String> = HashMap::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    for r in &got {
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        let key = format!("{}:{}", body["id"].as_str().unwrap(), body["seq"]);
        assert_eq!(r["headers"]["idempotency-key"].as_str().unwrap(), key);
        // A duplicate must be the same alert (same body) under the same key.
        if let Some(prev) = keys_seen.insert(key.clone(), r["body"].as_str().unwrap().to_string()) {
            assert_eq!(prev, r["body"].as_str().unwrap());
            continue;
        }
        let inc = body["id"].as_str().unwrap().to_string();
        let seq = body["seq"].as_u64().unwrap();
        let prev = last_seq.insert(inc.clone(), seq).unwrap_or(0);
        assert!(
            seq > prev,
            "order broken for incident {inc}: {seq} after {prev}"
        );
    }
    for a in &sent {
        assert!(
            keys_seen.contains_key(&a.idempotency_key()),
            "lost {}",
            a.idempotency_key()
        );
    }
    assert_eq!(keys_seen.len(), sent.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_alerts_become_a_loss_alert_on_the_other_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there
    let out = dir.path().join("alerts.jsonl");
    let s = specs(&format!(
        r#"[sinks.hook]
type = "webhook"
url = "http://127.0.0.1:{port}/in"
max_age_secs = 1
retry_initial_ms = 5
retry_max_ms = 20
[sinks.log]
type = "file"
path = "{}"
"#,
        out.display()
    ));
    let set = SinkSet::start(&s, opts(&dir.path().join("state"), "web1")).unwrap();
    set.deliver_alert(&alert(AlertType::IncidentOpened, "x", 1, "web1", "/x"));
    set.deliver_alert(&alert(AlertType::IncidentUpdate, "x", 2, "web1", "/x"));
    // Alerts expire one by one (each at its own age), so the loss may come as several alerts.
    wait_for("loss alerts", 15, || lost(&out) == 2).await;
    for l in losses(&out) {
        assert_eq!(l["loss"]["origin"], "sink:hook");
        assert!(l["loss"]["what"].as_str().unwrap().contains("expired"));
        assert_eq!(l["host"], "web1");
    }
    assert_eq!(set.pending("hook"), Some(0));
    assert_eq!(set.stats()[0].expired, 2);
    set.shutdown(Duration::from_secs(2)).await;
}

/// Regression: a `loss` alert that could not be spooled for another sink (its outbox full, or
/// the disk) was itself announced as a loss, on the sink whose loss it reported, whose failure
/// was announced in turn: with two remote sinks full, one lost alert became an endless stream
/// of `loss` alerts (a busy router, a file sink growing until the disk was full). A loss alert
/// that cannot be spooled is counted as dropped, not announced again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loss_alert_that_cannot_be_spooled_is_not_announced_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there
    let out = dir.path().join("alerts.jsonl");
    let hook = |name: &str| {
        format!(
            "[sinks.{name}]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/in\"\n\
             outbox_max_entries = 1\nretry_initial_ms = 600000\nretry_max_ms = 600000\n"
        )
    };
    let s = specs(&format!("{}{}{}", hook("a"), hook("b"), file_sink(&out)));
    let set = SinkSet::start(&s, opts(&dir.path().join("state"), "web1")).unwrap();
    set.deliver_alert(&alert(AlertType::IncidentOpened, "x", 1, "web1", "/x"));
    // Both outboxes are full now: this alert is lost on both.
    set.deliver_alert(&alert(AlertType::IncidentOpened, "y", 1, "web1", "/y"));
    wait_for("loss alerts", 10, || lost(&out) >= 2).await;
    set.flush_local().await;
    let stats = set.stats();
    set.shutdown(Duration::from_secs(1)).await;
    let mut origins: Vec<String> = losses(&out)
        .iter()
        .map(|l| l["loss"]["origin"].as_str().unwrap().to_string())
        .collect();
    origins.sort();
    assert_eq!(origins, ["sink:a", "sink:b"], "one loss alert per sink");
    // Each webhook lost `y` and the loss alert about the other one.
    for s in &stats[..2] {
        assert_eq!((s.name.as_str(), s.dropped, s.pending), (&*s.name, 2, 1));
    }
}

/// The same with a file sink that cannot write (a full disk, `/dev/full`) and a remote sink
/// whose outbox is full: each one's loss alert failed on the other, and was announced again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loss_alert_that_cannot_be_written_is_not_announced_again() {
    require!(have("/dev/full"), "/dev/full");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there
    let out = dir.path().join("alerts.jsonl");
    let s = specs(&format!(
        "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/in\"\n\
         outbox_max_entries = 1\nretry_initial_ms = 600000\nretry_max_ms = 600000\n\
         [sinks.nospace]\ntype = \"file\"\npath = \"/dev/full\"\n{}",
        file_sink(&out)
    ));
    let set = SinkSet::start(&s, opts(&dir.path().join("state"), "web1")).unwrap();
    // `x` is spooled (the webhook comes first) before the loss of `x` on /dev/full can reach
    // the outbox and fill it.
    set.deliver_alert(&alert(AlertType::IncidentOpened, "x", 1, "web1", "/x"));
    set.deliver_alert(&alert(AlertType::IncidentOpened, "y", 1, "web1", "/y"));
    let lost_by = |origin: &str| -> u64 {
        losses(&out)
            .iter()
            .filter(|l| l["loss"]["origin"] == origin)
            .map(|l| l["loss"]["count"].as_u64().unwrap())
            .sum()
    };
    wait_for("loss alerts", 10, || {
        lost_by("sink:nospace") >= 2 && lost_by("sink:hook") >= 1
    })
    .await;
    set.flush_local().await;
    let nospace = set
        .stats()
        .into_iter()
        .find(|s| s.name == "nospace")
        .unwrap();
    set.shutdown(Duration::from_secs(1)).await;
    assert_eq!(
        (lost_by("sink:nospace"), lost_by("sink:hook")),
        (2, 1),
        "{:#?}",
        losses(&out)
            .iter()
            .map(|l| l["loss"].clone())
            .collect::<Vec<_>>()
    );
    // `x`, `y` and the loss alert about the webhook's outbox.
    assert_eq!(nospace.dropped, 3);
}

/// The `id:seq` of every alert the receiver accepted, alone or in a webhook digest.
fn accepted_keys(log: &Path) -> Vec<String> {
    let mut keys = Vec::new();
    for r in accepted(log) {
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        let alerts = if body["type"] == "digest" {
            body["alerts"].as_array().unwrap().clone()
        } else {
            vec![body]
        };
        for a in alerts {
            keys.push(format!("{}:{}", a["id"].as_str().unwrap(), a["seq"]));
        }
    }
    keys
}

/// Requests whose body contains `text`.
fn requests_with(log: &Path, text: &str) -> usize {
    requests(log)
        .iter()
        .filter(|r| r["body"].as_str().unwrap().contains(text))
        .count()
}

/// Regression: a permanent 4xx (400, 413, 422) was retried every ≤ 300 s until
/// `max_age_secs`, and held up the later alerts of its incident all that time. Now the alert is
/// dropped at once, reported in a `loss` alert with the status and body excerpt, and its
/// incident goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_4xx_drops_that_alert_with_a_loss_and_its_incident_goes_on() {
    require!(have(PY), "python3");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alerts.jsonl");
    let (rx, set) = fast_webhook(dir.path(), &file_sink(&out));
    let statuses = [400u16, 413, 422];
    for s in statuses {
        rx.refuse(&format!("/reject-{s}"), s).await;
    }
    for s in statuses {
        let inc = format!("i{s}");
        let first = alert(
            AlertType::IncidentOpened,
            &inc,
            1,
            "web1",
            &format!("/reject-{s}"),
        );
        set.deliver_alert(&first);
        let next = alert(
            AlertType::IncidentUpdate,
            &inc,
            2,
            "web1",
            &format!("/ok-{s}"),
        );
        set.deliver_alert(&next);
    }
    wait_for("the alerts behind the refused ones", 20, || {
        accepted(&rx.log).len() == statuses.len()
    })
    .await;
    wait_for("outbox empty", 5, || set.pending("hook") == Some(0)).await;
    wait_for("loss alerts", 10, || lost(&out) == statuses.len() as u64).await;
    let mut keys = accepted_keys(&rx.log);
    keys.sort();
    let mut want: Vec<String> = statuses.iter().map(|s| format!("i{s}:2")).collect();
    want.sort();
    assert_eq!(keys, want);
    let whats: Vec<String> = losses(&out)
        .iter()
        .map(|l| {
            assert_eq!(l["loss"]["origin"], "sink:hook");
            l["loss"]["what"].as_str().unwrap().to_string()
        })
        .collect();
    for s in statuses {
        assert_eq!(
            requests_with(&rx.log, &format!("/reject-{s}")),
            1,
            "retried"
        );
        assert!(
            whats
                .iter()
                .any(|w| w.contains(&format!("HTTP {s}: receiver refuses this alert"))),
            "{whats:?}"
        );
    }
    let stats = &set.stats()[0];
    assert_eq!(stats.dropped, statuses.len() as u64);
    assert_eq!(stats.delivered, statuses.len() as u64);
    set.shutdown(Duration::from_secs(2)).await;
}

/// 401 and 403 say the credentials are wrong, 404 and 410 that the URL names nothing (for every
/// alert, and the admin may fix them): the sink backs off and retries, nothing is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_401_403_404_410_are_retried_not_dropped() {
    require!(have(PY), "python3");
    let dir = tempfile::tempdir().unwrap();
    let (rx, set) = fast_webhook(dir.path(), "");
    for (n, status) in [(1u64, 401u16), (2, 403), (3, 404), (4, 410)] {
        rx.fail_next(2, status).await;
        set.deliver_alert(&alert(
            AlertType::IncidentOpened,
            &format!("a{n}"),
            1,
            "web1",
            "/x",
        ));
        wait_for("delivery after the refusals", 20, || {
            accepted(&rx.log).len() == n as usize
        })
        .await;
    }
    let stats = &set.stats()[0];
    assert_eq!((stats.failed_attempts, stats.dropped), (8, 0));
    assert!(stats.last_error.as_deref().unwrap().contains("HTTP 410"));
    set.shutdown(Duration::from_secs(2)).await;
}

/// Regression: a digest the receiver refused with a 4xx was sent again, the same, until its
/// alerts expired. Now it is split until the refused alert is alone; that one is dropped (with a
/// `loss` alert) and the others are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_refused_with_4xx_is_split_until_the_refused_alert_is_dropped() {
    require!(have(PY), "python3");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alerts.jsonl");
    let (rx, set) = fast_webhook(
        dir.path(),
        &format!(
            "mode = \"digest\"\ndigest_interval_secs = 1\n{}",
            file_sink(&out)
        ),
    );
    rx.refuse("/reject", 400).await;
    for i in 1..=7 {
        let object = if i == 5 {
            "/reject".to_string()
        } else {
            format!("/d/{i}")
        };
        set.deliver_alert(&alert(
            AlertType::IncidentOpened,
            &format!("d{i}"),
            1,
            "web1",
            &object,
        ));
    }
    wait_for("outbox empty", 20, || set.pending("hook") == Some(0)).await;
    wait_for("loss alert", 10, || lost(&out) == 1).await;
    let mut keys = accepted_keys(&rx.log);
    keys.sort();
    assert_eq!(keys, ["d1:1", "d2:1", "d3:1", "d4:1", "d6:1", "d7:1"]);
    let what = losses(&out)[0]["loss"]["what"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(what.contains("HTTP 400"), "{what}");
    // 7 refused, 3 accepted, 3 refused, 1 accepted, the refused alert alone, the 2 left: a few
    // requests, not a retry loop.
    assert!(requests(&rx.log).len() <= 8, "{:#?}", requests(&rx.log));
    assert_eq!(set.stats()[0].dropped, 1);
    set.shutdown(Duration::from_secs(2)).await;
}

/// Regression: `Retry-After` on 429 and 503 was ignored (the next attempt came after the
/// retry policy's delay, here milliseconds). Now the whole sink waits at least that long, given
/// in seconds or as an HTTP-date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_and_503_holds_the_whole_sink() {
    require!(have(PY), "python3");
    let dir = tempfile::tempdir().unwrap();
    let (rx, set) = fast_webhook(dir.path(), "");
    let t = |r: &Value| r["t"].as_f64().unwrap();

    rx.fail_next_with(1, 429, json!({"Retry-After": "2"})).await;
    set.deliver_alert(&alert(AlertType::IncidentOpened, "a", 1, "web1", "/a"));
    wait_for("the 429", 10, || !requests(&rx.log).is_empty()).await;
    // Another incident during the wait: held too (the whole sink waits).
    set.deliver_alert(&alert(AlertType::IncidentOpened, "b", 1, "web1", "/b"));
    wait_for("both delivered", 20, || accepted(&rx.log).len() == 2).await;
    let all = requests(&rx.log);
    assert_eq!(all.len(), 3, "{all:#?}");
    let refused_at = t(&all[0]);
    for r in &all[1..] {
        let gap = t(r) - refused_at;
        assert!(gap >= 1.95, "sent {gap:.3} s after Retry-After: 2");
    }

    // An HTTP-date (whole seconds: 3 s ahead is more than 2 s ahead): nothing before it.
    let before = std::time::SystemTime::now();
    let date = httpdate::fmt_http_date(before + Duration::from_secs(3));
    rx.fail_next_with(1, 503, json!({ "Retry-After": date }))
        .await;
    set.deliver_alert(&alert(AlertType::IncidentOpened, "c", 1, "web1", "/c"));
    wait_for("delivered after the 503", 20, || {
        accepted(&rx.log).len() == 3
    })
    .await;
    let all = requests(&rx.log);
    assert_eq!(all.len(), 5, "{all:#?}");
    let before = before
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let early = t(&all[4]) - (before + 2.0);
    assert!(
        early >= -0.05,
        "sent {early:.3} s before Retry-After: {date}"
    );
    let stats = &set.stats()[0];
    assert_eq!((stats.failed_attempts, stats.dropped), (2, 0));
    set.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_outbox_lines_are_moved_where_the_loss_alert_says() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(); // nothing listens there
    let out = dir.path().join("alerts.jsonl");
    let state = dir.path().join("state");
    let ob = state.join("outbox").join("hook");
    std::fs::create_dir_all(&ob).unwrap();
    std::fs::write(ob.join("journal"), "+ {\"v\":1,\"seq\":1}\tnot json\n").unwrap();
    let s = specs(&format!(
        r#"[sinks.hook]
type = "webhook"
url = "http://127.0.0.1:{port}/in"
[sinks.log]
type = "file"
path = "{}"
"#,
        out.display()
    ));
    let set = SinkSet::start(&s, opts(&state, "web1")).unwrap();
    let loss = || -> Option<Value> {
        common::json_lines(&out)
            .into_iter()
            .find(|v| v["type"] == "loss")
    };
    wait_for("the loss alert", 15, || loss().is_some()).await;
    let what = loss().unwrap()["loss"]["what"]
        .as_str()
        .unwrap()
        .to_string();
    let kept = ob.join("journal.corrupt");
    assert!(what.contains(&kept.display().to_string()), "{what}");
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        "+ {\"v\":1,\"seq\":1}\tnot json\n"
    );
    set.shutdown(Duration::from_secs(2)).await;
}

struct Smtp {
    server: Server,
    maildir: PathBuf,
    certs: Certs,
    /// The sink's `tls` mode that this server speaks.
    tls: &'static str,
    /// More options of smtp_server.py, kept for a restart.
    extra: Vec<String>,
}

/// The SMTP server with STARTTLS required.
fn smtp(dir: &Path) -> Smtp {
    smtp_in_mode(dir, "starttls")
}

/// The SMTP server speaking `tls` ("starttls", or "tls": TLS from the first byte).
fn smtp_in_mode(dir: &Path, tls: &'static str) -> Smtp {
    smtp_with(dir, tls, &[])
}

/// The SMTP server speaking `tls`, with more options of smtp_server.py (`--refuse TEXT`).
fn smtp_with(dir: &Path, tls: &'static str, extra: &[&str]) -> Smtp {
    let certs = make_certs(dir);
    let maildir = dir.join("mail");
    std::fs::create_dir_all(&maildir).unwrap();
    let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    let server = spawn_smtp(&maildir, &certs, tls, &extra, 0);
    Smtp {
        server,
        maildir,
        certs,
        tls,
        extra,
    }
}

fn spawn_smtp(maildir: &Path, certs: &Certs, tls: &str, extra: &[String], port: u16) -> Server {
    let mut cmd = Command::new(PY);
    cmd.arg(fixtures().join("smtp_server.py"))
        .arg("--dir")
        .arg(maildir)
        .arg("--cert")
        .arg(&certs.server_cert)
        .arg("--key")
        .arg(&certs.server_key)
        .arg("--password")
        .arg("s3cret pass")
        .arg("--port")
        .arg(port.to_string());
    if tls == "tls" {
        cmd.arg("--implicit");
    }
    cmd.args(extra);
    spawn_printing_port(cmd)
}

impl Smtp {
    /// Kill the server (its sessions die with it) and start a new one on the same port.
    fn restart(&mut self) {
        let port = self.server.port;
        self.server.stop();
        self.server = spawn_smtp(&self.maildir, &self.certs, self.tls, &self.extra, port);
    }
}

fn mails(dir: &Path) -> Vec<(String, Value)> {
    let mut v: Vec<(u32, String, Value)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let n: u32 = p
                .file_name()?
                .to_str()?
                .strip_suffix(".eml")?
                .parse()
                .ok()?;
            let raw = std::fs::read_to_string(&p).unwrap();
            let env: Value =
                serde_json::from_str(&std::fs::read_to_string(p.with_extension("json")).unwrap())
                    .unwrap();
            Some((n, raw, env))
        })
        .collect();
    v.sort_by_key(|x| x.0);
    v.into_iter().map(|(_, r, e)| (r, e)).collect()
}

/// The client address and port of each QUIT the server received (smtp_server.py's `quits`).
fn quits(maildir: &Path) -> Vec<Value> {
    common::json_lines(&maildir.join("quits"))
}

fn email_cfg(name: &str, m: &Smtp, pw: &Path, extra: &str) -> String {
    format!(
        r#"[sinks.{name}]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {}
tls = "{}"
from = "armorwatch@example.org"
to = ["ops@example.org", "Security Team <sec@example.org>"]
username = "armorwatch"
password_file = "{}"
ca_file = "{}"
retry_initial_ms = 5
retry_max_ms = 50
{extra}
"#,
        m.server.port,
        m.tls,
        pw.display(),
        m.certs.ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_starttls_auth_recipients_and_digest() {
    require!(python_has("aiosmtpd"), "python3-aiosmtpd");
    require!(have("/usr/bin/openssl"), "openssl");
    let dir = tempfile::tempdir().unwrap();
    let m = smtp(dir.path());
    let pw = secret_file(dir.path(), "pw", "s3cret pass\n");
    let s = specs(&email_cfg("mail", &m, &pw, ""));
    let set = SinkSet::start(&s, opts(&dir.path().join("state"), "web1")).unwrap();
    let a = alert(
        AlertType::IncidentOpened,
        "inc-9",
        1,
        "web1",
        "/etc/ssl/private/k.pem",
    );
    set.deliver_alert(&a);
    wait_for("mail", 20, || mails(&m.maildir).len() == 1).await;
    set.shutdown(Duration::from_secs(2)).await;
    let (raw, env) = &mails(&m.maildir)[0];
    // The session kept open for the next mail is closed with QUIT when the sink stops.
    // (The server may record it a moment after the sink stopped waiting for its reply.)
    wait_for("the QUIT sent at shutdown", 10, || {
        quits(&m.maildir).contains(&env["peer"])
    })
    .await;
    assert_eq!(env["tls"], true);
    assert_eq!(env["to"], json!(["ops@example.org", "sec@example.org"]));
    assert!(raw.contains("Subject: [armorwatch] DENIED nginx open /etc/ssl/private/k.pem on web1"));
    assert!(
        raw.contains("Message-ID: <armorwatch.inc-9=3A1@example.org>"),
        "{raw}"
    );
    assert!(raw.contains("Suggested rule"));

    // Digest: three alerts, one message.
    let s = specs(&email_cfg(
        "digest",
        &m,
        &pw,
        "mode = \"digest\"\ndigest_interval_secs = 1",
    ));
    let set = SinkSet::start(&s, opts(&dir.path().join("state2"), "web1")).unwrap();
    for i in 1..=3 {
        set.deliver_alert(&alert(
            AlertType::IncidentOpened,
            &format!("d{i}"),
            1,
            "web1",
            &format!("/d/{i}"),
        ));
    }
    wait_for("digest", 20, || mails(&m.maildir).len() == 2).await;
    wait_for("digest outbox empty", 5, || {
        set.pending("digest") == Some(0)
    })
    .await;
    set.shutdown(Duration::from_secs(2)).await;
    let (raw, _) = &mails(&m.maildir)[1];
    assert!(
        raw.contains("Subject: [armorwatch] digest: 3 alerts on web1"),
        "{raw}"
    );
    for i in 1..=3 {
        assert!(raw.contains(&format!("/d/{i}")));
    }

    // Wrong password: the SMTP reply is reported.
    let bad = secret_file(dir.path(), "bad", "nope");
    let s = specs(&email_cfg("bad", &m, &bad, ""));
    let t = Transport::new(&s[0]).unwrap().unwrap();
    let e = t
        .send(&[entry_of(&a)], now_ms())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("SMTP:") && e.contains("535"), "{e}");
}

/// Messages close together share one SMTP session (no connect, STARTTLS, EHLO, AUTH each); when
/// the server has gone away with the session open, the next message opens a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_session_reused_and_renewed_when_the_server_closed_it() {
    require!(python_has("aiosmtpd"), "python3-aiosmtpd");
    require!(have("/usr/bin/openssl"), "openssl");
    let dir = tempfile::tempdir().unwrap();
    let mut m = smtp(dir.path());
    let pw = secret_file(dir.path(), "pw", "s3cret pass\n");
    let s = specs(&email_cfg("mail", &m, &pw, ""));
    let t = Transport::new(&s[0]).unwrap().unwrap();
    let send = |i: u32| {
        let a = alert(
            AlertType::IncidentOpened,
            &format!("inc-{i}"),
            1,
            "web1",
            &format!("/srv/{i}"),
        );
        let t = &t;
        async move { t.send(&[entry_of(&a)], now_ms()).await }
    };
    for i in 1..=3 {
        send(i).await.unwrap();
    }
    let peers = |m: &Smtp| -> Vec<Value> {
        mails(&m.maildir)
            .into_iter()
            .map(|(_, env)| env["peer"].clone())
            .collect()
    };
    let p = peers(&m);
    assert_eq!(p.len(), 3);
    assert!(p[0].is_array(), "{p:?}");
    assert!(p.iter().all(|x| *x == p[0]), "three sessions: {p:?}");

    m.restart();
    send(4).await.unwrap();
    send(5).await.unwrap();
    let p = peers(&m);
    assert_eq!(p.len(), 5);
    assert_ne!(p[3], p[0], "the dead session was used again: {p:?}");
    assert_eq!(p[4], p[3], "{p:?}");
    let raw = &mails(&m.maildir)[3].0;
    assert!(raw.contains("/srv/4"), "{raw}");
}

/// A kept session is closed with QUIT once idle for `keep_session_secs`, and the next message
/// opens a new one; `keep_session_secs = 0` sends QUIT after every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_idle_session_closed_with_quit() {
    require!(python_has("aiosmtpd"), "python3-aiosmtpd");
    require!(have("/usr/bin/openssl"), "openssl");
    let dir = tempfile::tempdir().unwrap();
    let m = smtp(dir.path());
    let pw = secret_file(dir.path(), "pw", "s3cret pass\n");
    let peer = |n: usize| mails(&m.maildir)[n].1["peer"].clone();
    async fn send(t: &Transport, i: u32) -> Result<(), SendError> {
        let a = alert(
            AlertType::IncidentOpened,
            &format!("inc-{i}"),
            1,
            "web1",
            &format!("/srv/{i}"),
        );
        t.send(&[entry_of(&a)], now_ms()).await
    }

    let s = specs(&email_cfg("keep1", &m, &pw, "keep_session_secs = 1"));
    let t = Transport::new(&s[0]).unwrap().unwrap();
    send(&t, 1).await.unwrap();
    send(&t, 2).await.unwrap();
    let first = peer(0);
    assert_eq!(peer(1), first);
    wait_for("QUIT of the idle session", 20, || {
        quits(&m.maildir).contains(&first)
    })
    .await;
    send(&t, 3).await.unwrap();
    assert_ne!(peer(2), first, "a closed session was used again");

    let s = specs(&email_cfg("keep0", &m, &pw, "keep_session_secs = 0"));
    let t = Transport::new(&s[0]).unwrap().unwrap();
    send(&t, 4).await.unwrap();
    send(&t, 5).await.unwrap();
    let (a, b) = (peer(3), peer(4));
    assert_ne!(a, b, "keep_session_secs = 0 reused a session");
    wait_for("a QUIT after each mail", 10, || {
        let q = quits(&m.maildir);
        q.contains(&a) && q.contains(&b)
    })
    .await;
}

/// SMTPS (`tls = "tls"`): TLS from the first byte, then AUTH, on the sink's own socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_implicit_tls_auth() {
    require!(python_has("aiosmtpd"), "python3-aiosmtpd");
    require!(have("/usr/bin/openssl"), "openssl");
    let dir = tempfile::tempdir().unwrap();
    let m = smtp_in_mode(dir.path(), "tls");
    let pw = secret_file(dir.path(), "pw", "s3cret pass\n");
    let s = specs(&email_cfg("mail", &m, &pw, ""));
    let t = Transport::new(&s[0]).unwrap().unwrap();
    let a = alert(AlertType::IncidentOpened, "inc-s", 1, "web1", "/srv/x");
    t.send(&[entry_of(&a)], now_ms()).await.unwrap();
    let got = mails(&m.maildir);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1["tls"], true);
    assert!(
        got[0]
            .0
            .contains("Message-ID: <armorwatch.inc-s=3A1@example.org>")
    );

    // A server certificate from a CA the sink does not trust: a TLS error, nothing sent.
    let other = tempfile::tempdir().unwrap();
    let untrusted = make_certs(other.path());
    let s = specs(&email_cfg("mail", &m, &pw, "").replace(
        &m.certs.ca.display().to_string(),
        &untrusted.ca.display().to_string(),
    ));
    let t = Transport::new(&s[0]).unwrap().unwrap();
    let e = t.send(&[entry_of(&a)], now_ms()).await.unwrap_err();
    assert!(matches!(e, SendError::Tls(_)), "{e}");
    assert_eq!(mails(&m.maildir).len(), 1);
}

/// Regression: one message the SMTP server refused for good (554 after DATA) held up the whole
/// email sink: it was retried, and nothing behind it was sent, until it expired after
/// `max_age_secs`. Now that message is dropped, reported in a `loss` alert with the server's
/// reply, and the messages behind it are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_5xx_refusal_drops_that_message_with_a_loss_and_sends_the_rest() {
    require!(python_has("aiosmtpd"), "python3-aiosmtpd");
    require!(have("/usr/bin/openssl"), "openssl");
    let dir = tempfile::tempdir().unwrap();
    let m = smtp_with(dir.path(), "starttls", &["--refuse", "/refuse-me"]);
    let pw = secret_file(dir.path(), "pw", "s3cret pass\n");
    let out = dir.path().join("alerts.jsonl");
    let mut cfg = email_cfg("mail", &m, &pw, "");
    cfg.push_str(&format!(
        "[sinks.log]\ntype = \"file\"\npath = \"{}\"\n",
        out.display()
    ));
    let set = SinkSet::start(&specs(&cfg), opts(&dir.path().join("state"), "web1")).unwrap();
    set.deliver_alert(&alert(
        AlertType::IncidentOpened,
        "a",
        1,
        "web1",
        "/refuse-me",
    ));
    set.deliver_alert(&alert(AlertType::IncidentOpened, "b", 1, "web1", "/srv/b"));
    set.deliver_alert(&alert(AlertType::IncidentUpdate, "a", 2, "web1", "/srv/a"));
    wait_for("the mails behind the refused one", 20, || {
        mails(&m.maildir).len() == 2
    })
    .await;
    wait_for("outbox empty", 5, || set.pending("mail") == Some(0)).await;
    wait_for("loss alert", 10, || lost(&out) == 1).await;
    let subjects: Vec<String> = mails(&m.maildir)
        .into_iter()
        .map(|(raw, _)| {
            raw.lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        subjects[0].contains("/srv/b") && subjects[1].contains("/srv/a"),
        "{subjects:?}"
    );
    assert_eq!(
        common::json_lines(&m.maildir.join("refused")).len(),
        1,
        "the refused message was sent again"
    );
    let l = &losses(&out)[0];
    assert_eq!(l["loss"]["origin"], "sink:mail");
    let what = l["loss"]["what"].as_str().unwrap();
    assert!(what.contains("554") && what.contains("refused"), "{what}");
    let stats = set.stats().into_iter().find(|s| s.name == "mail").unwrap();
    assert_eq!((stats.delivered, stats.dropped), (2, 1));
    set.shutdown(Duration::from_secs(2)).await;
}

fn entry_of(a: &Alert) -> Arc<Entry> {
    let json = serde_json::to_string(a).unwrap();
    Arc::new(Entry {
        seq: 1,
        created_ms: now_ms(),
        key: a.idempotency_key(),
        incident: a.id.clone(),
        json: Arc::from(json.as_str()),
        view: Arc::new(AlertView::from_json(&serde_json::to_value(a).unwrap()).unwrap()),
    })
}

struct Alertmanager {
    _server: Child,
    url: String,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self._server.kill();
        let _ = self._server.wait();
    }
}

async fn alertmanager(dir: &Path) -> Alertmanager {
    let port = free_port();
    let cfg = dir.join("am.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: default\n  group_by: ['alertname']\n  group_wait: 1s\nreceivers:\n  - name: default\n",
    )
    .unwrap();
    let child = Command::new("/usr/bin/prometheus-alertmanager")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let am = Alertmanager {
        _server: child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{}/-/ready", am.url)).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "alertmanager not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    am
}

async fn get_json(url: &str) -> Value {
    serde_json::from_slice(&reqwest::get(url).await.unwrap().bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_groups_hosts_reposts_and_resolves() {
    require!(
        have("/usr/bin/prometheus-alertmanager"),
        "prometheus-alertmanager"
    );
    let dir = tempfile::tempdir().unwrap();
    let am = alertmanager(dir.path()).await;
    let cfg = format!(
        "[sinks.am]\ntype = \"alertmanager\"\nurl = \"{}\"\nrepost_interval_secs = 1\nlabels = {{ team = \"ops\" }}\n",
        am.url
    );
    let s = specs(&cfg);
    // Two armorwatch instances on two hosts.
    let h1 = SinkSet::start(&s, opts(&dir.path().join("s1"), "web1")).unwrap();
    let h2 = SinkSet::start(&s, opts(&dir.path().join("s2"), "web2")).unwrap();
    h1.deliver_alert(&alert(
        AlertType::IncidentOpened,
        "w1-i",
        1,
        "web1",
        "/etc/shadow",
    ));
    h2.deliver_alert(&alert(
        AlertType::IncidentOpened,
        "w2-i",
        1,
        "web2",
        "/etc/shadow",
    ));
    let groups_url = format!("{}/api/v2/alerts/groups", am.url);
    let mut group = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let g = get_json(&groups_url).await;
        if let Some(found) = g.as_array().unwrap().iter().find(|g| {
            g["labels"]["alertname"] == "AppArmorDenial"
                && g["alerts"].as_array().unwrap().len() == 2
        }) {
            group = found.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!group.is_null(), "no group with both hosts");
    let mut hosts: Vec<&str> = group["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["host"].as_str().unwrap())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["web1", "web2"]);
    let a0 = &group["alerts"][0];
    assert_eq!(a0["labels"]["profile"], "nginx");
    assert_eq!(a0["labels"]["operation"], "open");
    assert_eq!(a0["labels"]["severity"], "warning");
    assert_eq!(a0["labels"]["team"], "ops");
    assert!(
        a0["annotations"]["suggestion"]
            .as_str()
            .unwrap()
            .contains("r,")
    );
    assert!(a0["labels"]["incident"].as_str().unwrap().ends_with("-i"));

    // Re-posted while open: updatedAt moves.
    let alerts_url = format!("{}/api/v2/alerts", am.url);
    let updated = |v: &Value, host: &str| -> Option<String> {
        v.as_array()?
            .iter()
            .find(|a| a["labels"]["host"] == host)
            .map(|a| a["updatedAt"].as_str().unwrap_or("").to_string())
    };
    let first = updated(&get_json(&alerts_url).await, "web2").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = updated(&get_json(&alerts_url).await, "web2").unwrap();
        if now != first {
            break;
        }
        assert!(Instant::now() < deadline, "not re-posted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Close on web1: resolved there, still firing on web2.
    h1.deliver_alert(&alert(
        AlertType::IncidentClosed,
        "w1-i",
        2,
        "web1",
        "/etc/shadow",
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = get_json(&alerts_url).await;
        if updated(&v, "web1").is_none() {
            assert!(updated(&v, "web2").is_some());
            break;
        }
        assert!(Instant::now() < deadline, "web1 not resolved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h1.shutdown(Duration::from_secs(2)).await;
    h2.shutdown(Duration::from_secs(2)).await;
}

fn hostile_corpus() -> Vec<String> {
    std::fs::read_to_string(fixtures().join("hostile.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            // The fixture writes control characters as \xNN so the file itself stays clean.
            let mut out = String::new();
            let mut rest = l;
            while let Some(i) = rest.find("\\x") {
                out.push_str(&rest[..i]);
                let hex = &rest[i + 2..i + 4];
                out.push(u8::from_str_radix(hex, 16).unwrap() as char);
                rest = &rest[i + 4..];
            }
            out.push_str(rest);
            out
        })
        .chain(std::iter::once("A".repeat(20_000)))
        .collect()
}

fn hostile_alert(i: usize, v: &str) -> Alert {
    let mut a = alert(AlertType::IncidentOpened, &format!("h{i}"), 1, "web1", v);
    a.key = Some(IncidentKey {
        profile: format!("prof{v}"),
        kind: "denied".into(),
        class: "file".into(),
        operation: format!("open{v}"),
        object: v.to_string(),
        permission: "r".into(),
    });
    a.samples = vec![Sample {
        time: None,
        object: Some(v.to_string()),
        pid: Some(1),
        comm: Some(v.to_string()),
        raw: format!("name=\"{v}\""),
    }];
    a.explanation = Some(
        json!({"verdict": v, "needed": v, "closest_rules": [{"rule": v, "file": v, "line": 1, "reason": v}],
        "suggestion": {"file": v, "rule": format!("{v} r,"), "check": v, "reload": v}}),
    );
    a.profile = Some(json!({"name": v, "file": v, "line": 3}));
    a
}

fn no_controls(s: &str, what: &str) {
    for c in s.chars() {
        assert!(
            !(('\u{202A}'..='\u{202E}').contains(&c) || c.is_control() && c != '\n'),
            "{what}: control character {c:?} in {s:?}"
        );
    }
}

/// Every string inside a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_through_every_sink() {
    require!(have(PY), "python3");
    require!(python_has("aiosmtpd"), "python3-aiosmtpd");
    require!(have("/usr/bin/openssl"), "openssl");
    let dir = tempfile::tempdir().unwrap();
    let rx = receiver(&dir.path().join("log"), 0, None);
    let m = smtp(&dir.path().join("smtp").tap_mkdir());
    let pw = secret_file(dir.path(), "pw", "s3cret pass");
    let out = dir.path().join("alerts.jsonl");
    let mut cfg = String::new();
    for t in ["slack", "discord", "teams", "webhook"] {
        cfg.push_str(&format!(
            "[sinks.{t}]\ntype = \"{t}\"\nurl = \"{}\"\nretry_initial_ms = 5\n",
            rx.url(&format!("/{t}"))
        ));
    }
    cfg.push_str(&format!(
        "[sinks.ntfy]\ntype = \"ntfy\"\nurl = \"{}\"\nretry_initial_ms = 5\n",
        rx.url("/ntfy/alerts")
    ));
    cfg.push_str(&format!(
        "[sinks.log]\ntype = \"file\"\npath = \"{}\"\n",
        out.display()
    ));
    cfg.push_str(&email_cfg("mail", &m, &pw, ""));
    let s = specs(&cfg);
    let set = SinkSet::start(&s, opts(&dir.path().join("state"), "web1")).unwrap();
    let corpus = hostile_corpus();
    let alerts: Vec<Alert> = corpus
        .iter()
        .enumerate()
        .map(|(i, v)| hostile_alert(i, v))
        .collect();
    for a in &alerts {
        set.deliver_alert(a);
    }
    let n = alerts.len();
    wait_for("all HTTP deliveries", 60, || {
        accepted(&rx.log).len() == 5 * n
    })
    .await;
    wait_for("all mails", 60, || mails(&m.maildir).len() == n).await;
    set.flush_local().await;
    set.shutdown(Duration::from_secs(2)).await;

    // File: JSON lines that round-trip the hostile values exactly, with nothing in them that a
    // terminal following the file would act on (DEL, C1 controls, bidi overrides).
    let text = std::fs::read_to_string(&out).unwrap();
    for l in text.lines() {
        no_controls(l, "file");
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), n);
    for (l, v) in lines.iter().zip(&corpus) {
        assert_eq!(l["key"]["object"].as_str().unwrap(), v);
    }
    // Stdout text form.
    for a in &alerts {
        let v = AlertView::from_json(&serde_json::to_value(a).unwrap()).unwrap();
        let line = armorwatch::sinks::stdout::text_line(&v);
        no_controls(&line, "stdout text");
        assert!(!line.contains('\n'));
        assert!(line.chars().count() < 4000, "long values truncated");
    }
    let mut by_path: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in accepted(&rx.log) {
        by_path
            .entry(r["path"].as_str().unwrap().to_string())
            .or_default()
            .push(serde_json::from_str(r["body"].as_str().unwrap()).unwrap());
    }
    for (path, bodies) in &by_path {
        assert_eq!(bodies.len(), n, "{path}");
        for b in bodies {
            let mut ss = Vec::new();
            strings(b, &mut ss);
            if path == "/webhook" {
                continue; // the alert JSON itself: escaping is JSON's
            }
            for s in &ss {
                no_controls(s, path);
                assert!(s.chars().count() <= 4100, "{path}: untruncated value");
                match path.as_str() {
                    "/slack" => {
                        assert!(
                            !s.contains("<!") && !s.contains("<@") && !s.contains("<http"),
                            "slack: {s}"
                        );
                    }
                    "/discord" => {
                        assert!(
                            !s.contains("@everyone") && !s.contains("@here"),
                            "discord: {s}"
                        );
                    }
                    "/teams" => {
                        assert!(!s.contains("<at>") && !s.contains("<script"), "teams: {s}")
                    }
                    _ => {}
                }
            }
            if path == "/discord" {
                assert_eq!(b["allowed_mentions"]["parse"], json!([]));
            }
        }
    }
    // Webhook: the alert exactly.
    for (b, v) in by_path["/webhook"].iter().zip(&corpus) {
        assert_eq!(b["key"]["object"].as_str().unwrap(), v);
    }
    // Email: no injected header, every line within RFC 5322's limit, non-ASCII subjects encoded.
    let all_mail = mails(&m.maildir);
    assert!(
        all_mail
            .iter()
            .any(|(raw, _)| raw.contains("Subject: =?utf-8?")),
        "no RFC 2047 subject"
    );
    for (raw, env) in all_mail {
        assert_eq!(env["to"], json!(["ops@example.org", "sec@example.org"]));
        let (head, _) = raw
            .split_once("\r\n\r\n")
            .or_else(|| raw.split_once("\n\n"))
            .unwrap();
        for line in head.lines() {
            assert!(
                !line.to_ascii_lowercase().starts_with("bcc:"),
                "header injected: {line}"
            );
            assert!(
                !line.to_ascii_lowercase().starts_with("x-injected"),
                "header injected: {line}"
            );
        }
        for line in raw.lines() {
            assert!(line.len() <= 998, "line too long");
            no_controls(line.trim_end_matches('\r'), "email");
        }
    }
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}
impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sink_events_policy_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let events = dir.path().join("events.jsonl");
    let s = specs(&format!(
        r#"[sinks.alerts]
type = "file"
path = "{}"
min_severity = 5
exclude_profiles = ["cups*"]
[sinks.events]
type = "file"
path = "{}"
content = "events"
"#,
        alerts.display(),
        events.display()
    ));
    let set = SinkSet::start(&s, opts(&dir.path().join("state"), "web1")).unwrap();
    let mut low = alert(AlertType::IncidentOpened, "low", 1, "web1", "/x");
    low.severity = 2;
    set.deliver_alert(&low);
    let mut cups = alert(AlertType::IncidentOpened, "cups", 1, "web1", "/x");
    cups.key.as_mut().unwrap().profile = "cupsd".into();
    set.deliver_alert(&cups);
    set.deliver_alert(&alert(AlertType::IncidentOpened, "ok", 1, "web1", "/x"));
    for o in armorwatch::parse::parse_text(
        armorwatch::sinks::sample::SAMPLE_RECORD,
        &armorwatch::event::Source::Text,
    ) {
        if let armorwatch::parse::Output::Event(e) = o {
            set.deliver_event(&e);
        }
    }
    set.flush_local().await;
    // logrotate moves the file away, then SIGHUP.
    std::fs::rename(&alerts, dir.path().join("alerts.jsonl.1")).unwrap();
    set.reopen_files();
    set.deliver_alert(&alert(AlertType::IncidentUpdate, "ok", 2, "web1", "/x"));
    set.flush_local().await;
    set.shutdown(Duration::from_secs(1)).await;
    let old = std::fs::read_to_string(dir.path().join("alerts.jsonl.1")).unwrap();
    let new = std::fs::read_to_string(&alerts).unwrap();
    assert_eq!(old.lines().count(), 1);
    assert!(old.contains("\"id\":\"ok\""));
    assert_eq!(new.lines().count(), 1);
    assert!(new.contains("\"seq\":2"));
    let ev = std::fs::read_to_string(&events).unwrap();
    assert_eq!(ev.lines().count(), 1);
    let e: Value = serde_json::from_str(ev.lines().next().unwrap()).unwrap();
    assert_eq!(e["schema"], 1);
    assert_eq!(e["fields"]["profile"], "nginx");
}

#[test]
fn test_alert_command_reports_each_sink() {
    require!(have(PY), "python3");
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rx = receiver(&dir.path().join("log"), 0, None);
    rt.block_on(rx.fail_next(1, 502));
    let cfg = dir.path().join("armorwatch.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[sinks.good]
type = "discord"
url = "{}"
[sinks.bad]
type = "webhook"
url = "{}"
[sinks.down]
type = "webhook"
url = "http://127.0.0.1:{}/x"
"#,
            rx.url("/good"),
            rx.url("/bad"),
            free_port()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_armorwatch");
    // Sinks run in name order: bad (gets the 502), down, good.
    let out = Command::new(bin)
        .args(["test-alert", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad (webhook): FAILED: HTTP 502: receiver told to fail <b>&</b>\\e[31m"),
        "{err}"
    );
    assert!(
        err.contains("down (webhook): FAILED: cannot connect:"),
        "{err}"
    );
    assert!(err.contains("good (discord): delivered"), "{err}");
    let out = Command::new(bin)
        .args(["test-alert", "--sink", "good", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    // Bad configuration: exit 78 with the key path.
    std::fs::write(
        &cfg,
        "[sinks.x]\ntype = \"webhook\"\nurl = \"http://h\"\nretries = 3\n",
    )
    .unwrap();
    let out = Command::new(bin)
        .args(["test-alert", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`sinks.x.retries`: unknown key"));
}

#[test]
fn documented_example_config_parses() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/sinks.md"))
        .unwrap();
    let start = doc.find("```toml\n").unwrap() + 8;
    let text = &doc[start..start + doc[start..].find("```").unwrap()];
    let creds = tempfile::tempdir().unwrap();
    secret_file(
        creds.path(),
        "slack-webhook",
        "https://hooks.slack.com/services/T/B/X",
    );
    secret_file(creds.path(), "smtp-password", "pw");
    secret_file(creds.path(), "hook-key", "k");
    let t: toml::Table = toml::from_str(text).unwrap();
    let ctx = SecretContext {
        credentials_dir: Some(creds.path().to_path_buf()),
    };
    let s = armorwatch::sinks::parse_sinks(t["sinks"].as_table().unwrap(), &ctx).unwrap();
    assert_eq!(s.len(), 7);
}

/// A receiver whose answer's body does not end: a first chunk, 16 MiB more, then nothing while
/// it keeps the connection open; a 500, then a 200 (on a new connection each).
fn endless_body_receiver() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for status in ["500 Internal Server Error", "200 OK"] {
            let Ok((mut c, _)) = listener.accept() else {
                return;
            };
            // The request: its head, then as many bytes as its Content-Length says.
            let mut req = Vec::new();
            let mut byte = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") && c.read(&mut byte).unwrap_or(0) == 1 {
                req.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&req).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            let _ = c.read_exact(&mut body);
            let chunk =
                |data: &[u8]| [format!("{:x}\r\n", data.len()).as_bytes(), data, b"\r\n"].concat();
            let mut answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            .into_bytes();
            answer.extend(chunk(b"receiver overloaded\n"));
            let filler = chunk(&[b'x'; 64 * 1024]);
            let mut ok = c.write_all(&answer).is_ok();
            for _ in 0..256 {
                ok = ok && c.write_all(&filler).is_ok();
            }
            // Never the last chunk: wait for the client to close.
            while ok && c.read(&mut byte).unwrap_or(0) > 0 {}
        }
    });
    port
}

/// Regression: the response body was read to its end, into memory, however large; one that does
/// not end held the sink until the request timed out, and an error's then carried no excerpt
/// (`HTTP 500: `). Now at most 64 KiB of a body is read (the excerpt's 300 bytes of an error's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_response_body_is_not_read_to_its_end() {
    let port = endless_body_receiver();
    let s = specs(&format!(
        "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/in\"\ntimeout_secs = 300\n"
    ));
    let t = Transport::new(&s[0]).unwrap().unwrap();
    let a = alert(AlertType::IncidentOpened, "i1", 1, "web1", "/x");
    // Well before the request's timeout: the body is not waited for.
    let within = Duration::from_secs(30);
    let answer = tokio::time::timeout(within, t.send(&[entry_of(&a)], now_ms()))
        .await
        .expect("the 500 taken before the request timed out");
    match answer {
        Err(SendError::Status { status, body, .. }) => {
            assert_eq!(status, 500);
            assert!(body.starts_with("receiver overloaded\\nxxx"), "{body:.80}");
        }
        other => panic!("{other:?}"),
    }
    let answer = tokio::time::timeout(within, t.send(&[entry_of(&a)], now_ms()))
        .await
        .expect("the 200 taken before the request timed out");
    assert!(answer.is_ok(), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_stall_the_other_sinks() {
    require!(have(PY), "python3");
    let dir = tempfile::tempdir().unwrap();
    // Accepts connections (kernel backlog) and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let rx = receiver(&dir.path().join("log"), 0, None);
    let out = dir.path().join("alerts.jsonl");
    let s = specs(&format!(
        r#"[sinks.slow]
type = "webhook"
url = "http://127.0.0.1:{hang_port}/in"
timeout_secs = 30
[sinks.fast]
type = "webhook"
url = "{}"
[sinks.log]
type = "file"
path = "{}"
"#,
        rx.url("/in"),
        out.display()
    ));
    let set = SinkSet::start(&s, opts(&dir.path().join("state"), "web1")).unwrap();
    for i in 1..=20 {
        set.deliver_alert(&alert(
            AlertType::IncidentOpened,
            &format!("i{i}"),
            1,
            "web1",
            "/x",
        ));
    }
    wait_for("fast sink", 10, || accepted(&rx.log).len() == 20).await;
    set.flush_local().await;
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 20);
    assert_eq!(
        set.pending("slow"),
        Some(20),
        "the hanging sink has delivered nothing"
    );
    let report = set.shutdown(Duration::from_millis(300)).await;
    assert_eq!(report.aborted, ["slow"]);
    assert_eq!(report.pending["slow"], 20);
    drop(hang);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_through_msmtp_as_sendmail() {
    require!(python_has("aiosmtpd"), "python3-aiosmtpd");
    require!(have("/usr/bin/openssl"), "openssl");
    require!(have("/usr/bin/msmtp"), "msmtp");
    let dir = tempfile::tempdir().unwrap();
    let m = smtp(dir.path());
    let pw = secret_file(dir.path(), "pw", "s3cret pass");
    // msmtp takes sendmail's -i -f FROM -- TO…; the wrapper adds the server settings.
    let wrapper = sendmail_script(
        dir.path(),
        &format!(
            "exec /usr/bin/msmtp --host=127.0.0.1 --port={} --tls=on --tls-starttls=on \
             --tls-trust-file={} --auth=on --user=armorwatch --passwordeval='cat {}' \"$@\"\n",
            m.server.port,
            m.certs.ca.display(),
            pw.display()
        ),
    );
    let s = specs(&format!(
        "[sinks.mail]\ntype = \"email\"\nsendmail = \"{}\"\nfrom = \"armorwatch@example.org\"\nto = [\"ops@example.org\", \"sec@example.org\"]\n",
        wrapper.display()
    ));
    let a = alert(
        AlertType::IncidentOpened,
        "sm-1",
        1,
        "web1",
        "/etc/ssl/private/k.pem",
    );
    let t = Transport::new(&s[0]).unwrap().unwrap();
    t.send(&[entry_of(&a)], now_ms()).await.unwrap();
    let got = mails(&m.maildir);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].1["to"],
        json!(["ops@example.org", "sec@example.org"])
    );
    assert_eq!(got[0].1["tls"], true);
    assert!(
        got[0]
            .0
            .contains("Message-ID: <armorwatch.sm-1=3A1@example.org>")
    );
    // A failing sendmail reports its exit status and message.
    std::fs::write(
        &wrapper,
        "#!/bin/sh\ncat >/dev/null\necho 'relay refused' >&2\nexit 75\n",
    )
    .unwrap();
    let e = t
        .send(&[entry_of(&a)], now_ms())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("sendmail:") && e.contains("relay refused"),
        "{e}"
    );
}

/// A `sendmail` shell script in `dir` running `body`, executable.
fn sendmail_script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("sendmail");
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Regression: a sendmail binary that did not finish (msmtp's own timeout is off by default; a
/// relay that accepts the connection and never answers) held the email sink for good:
/// `timeout_secs` bounded only SMTP sessions. Now the attempt times out (sink-wide, retried)
/// and the process is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sendmail_that_never_finishes_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let wrapper = sendmail_script(
        dir.path(),
        &format!(
            "echo $$ > {}\ncat >/dev/null\nexec sleep 3600\n",
            pid_file.display()
        ),
    );
    let s = specs(&format!(
        "[sinks.mail]\ntype = \"email\"\nsendmail = \"{}\"\nfrom = \"armorwatch@example.org\"\nto = \"ops@example.org\"\ntimeout_secs = 1\n",
        wrapper.display()
    ));
    let t = Transport::new(&s[0]).unwrap().unwrap();
    let a = alert(AlertType::IncidentOpened, "sm-1", 1, "web1", "/x");
    let answer = tokio::time::timeout(Duration::from_secs(30), t.send(&[entry_of(&a)], now_ms()))
        .await
        .expect("the attempt ended within its timeout_secs");
    let e = answer.unwrap_err();
    assert!(matches!(e, SendError::Timeout(_)), "{e}");
    assert!(e.is_sink_wide());
    // The sendmail process does not outlive the attempt.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat = format!("/proc/{}/stat", pid.trim());
    wait_for("the sendmail process killed", 10, || {
        std::fs::read_to_string(&stat).map_or(true, |s| s.contains(") Z "))
    })
    .await;
}

#[test]
fn blocking_sink_set_for_plain_threads() {
    require!(have(PY), "python3");
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rx = receiver(&dir.path().join("log"), 0, None);
    let s = specs(&format!(
        "[sinks.hook]\ntype = \"webhook\"\nurl = \"{}\"\n",
        rx.url("/in")
    ));
    let set =
        armorwatch::sinks::BlockingSinkSet::start(&s, opts(&dir.path().join("state"), "web1"))
            .unwrap();
    set.deliver_alert(&alert(AlertType::IncidentOpened, "b", 1, "web1", "/x"));
    rt.block_on(wait_for("delivery", 10, || accepted(&rx.log).len() == 1));
    let report = set.shutdown(Duration::from_secs(2));
    assert_eq!(report.pending["hook"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_sink_set_without_shutdown_stops_its_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let s = specs(&format!(
        "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/in\"\n",
        free_port()
    ));
    let set = SinkSet::start(&s, opts(&dir.path().join("state"), "web1")).unwrap();
    drop(set);
    // The remote task and the loss router notice their stop channel closed and end; a task
    // spinning on the closed channel would keep the runtime's workers busy forever.
    let metrics = tokio::runtime::Handle::current().metrics();
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.num_alive_tasks() > 0 {
        assert!(
            Instant::now() < deadline,
            "tasks still alive: {}",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Regression: a digest that failed for a transient reason was retried as a new digest, the
/// alerts that arrived meanwhile added, under a new idempotency key (`digest:FIRST+COUNT`) and
/// Message-ID, so a receiver that had taken the failed attempt could not tell the retry was the
/// same. Now the retry is the same digest under the same key; the newer alerts come in the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_digest_is_retried_unchanged_under_its_key() {
    require!(have(PY), "python3");
    let dir = tempfile::tempdir().unwrap();
    let (rx, set) = fast_webhook(dir.path(), "mode = \"digest\"\ndigest_interval_secs = 1\n");
    // The first attempt fails and asks for a second's wait, time enough for more alerts.
    rx.fail_next_with(1, 503, json!({"Retry-After": "1"})).await;
    for i in 1..=3 {
        set.deliver_alert(&alert(
            AlertType::IncidentOpened,
            &format!("d{i}"),
            1,
            "web1",
            "/d",
        ));
    }
    wait_for("the failed digest", 10, || !requests(&rx.log).is_empty()).await;
    for i in 4..=5 {
        set.deliver_alert(&alert(
            AlertType::IncidentOpened,
            &format!("d{i}"),
            1,
            "web1",
            "/d",
        ));
    }
    wait_for("outbox empty", 20, || set.pending("hook") == Some(0)).await;
    let all = requests(&rx.log);
    assert_eq!(all.len(), 3, "{all:#?}");
    let key = |r: &Value| {
        r["headers"]["idempotency-key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let ids = |r: &Value| -> Vec<String> {
        let body: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
        body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(all[0]["accepted"], false);
    assert_eq!(key(&all[1]), key(&all[0]), "the retry is the same digest");
    assert_eq!(ids(&all[1]), ids(&all[0]));
    assert_eq!(ids(&all[0]).len(), 3);
    assert_eq!(ids(&all[2]), ["d4", "d5"]);
    set.shutdown(Duration::from_secs(2)).await;
}

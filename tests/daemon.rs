//! The service, tested with the real binary: SIGHUP with an invalid configuration (kept running,
//! the key path logged), SIGHUP with a valid one (the pipeline switches, a new file sink
//! receives, a rotated file is reopened, nothing delivered twice), SIGTERM (drains within the
//! bound with a receiver that never answers; incidents, checkpoints and the outbox saved),
//! sd_notify on a real unix datagram socket, the metrics endpoint scraped over HTTP, and
//! `armorwatch status` after `run` and after `replay`. Every wait polls a condition with a
//! deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{free_port, json_lines, run_ok};

const BIN: &str = env!("CARGO_BIN_EXE_armorwatch");
const MESSAGE_ID: &str = "7210ea427e304e46938bdf04a386fbf3";

fn profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/profiles/etc/apparmor.d")
}

/// Poll `f` every 20 ms until it is true or `secs` pass.
fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn denial(serial: u32, operation: &str, name: &str) -> String {
    format!(
        "type=AVC msg=audit(1795623516.{:03}:{serial}): apparmor=\"DENIED\" operation=\"{operation}\" profile=\"msmtp\" name=\"{name}\" pid=110 comm=\"msmtp\" requested_mask=\"c\" denied_mask=\"c\" fsuid=0 ouid=0\n",
        serial % 1000
    )
}

/// A test directory with an audit log, a state directory and a config file.
struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("audit.log"), "").unwrap();
        Setup { _tmp: tmp, dir }
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The common part: the audit log source, the state directory, explanations from the
    /// fixture tree, an alerts file sink; `extra` is appended.
    fn config(&self, extra: &str) -> String {
        format!(
            "host = \"testhost\"\n[state]\ndir = \"{d}/state\"\ncheckpoint_interval_ms = 0\n\
             [sources.audit_log]\npath = \"{d}/audit.log\"\n\
             [profiles]\ndir = \"{p}\"\ncheck_suggestions = false\n\
             [sinks.alerts]\ntype = \"file\"\npath = \"{d}/alerts.jsonl\"\n{extra}",
            d = self.dir.display(),
            p = profiles_dir().display()
        )
    }

    fn write_config(&self, text: &str) {
        std::fs::write(self.p("config.toml"), text).unwrap();
    }

    fn append(&self, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.p("audit.log"))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
}

/// The running daemon; killed when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(s: &Setup, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(s, env, Command::new(BIN))
    }

    /// Started by `prlimit --nofile=N` (util-linux): at most N open file descriptors.
    fn start_with_nofile(s: &Setup, nofile: u32) -> Daemon {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}")).arg("--").arg(BIN);
        Daemon::start_with(s, &[], cmd)
    }

    fn start_with(s: &Setup, env: &[(&str, &str)], mut cmd: Command) -> Daemon {
        let log = s.p("stderr.log");
        cmd.arg("run")
            .arg("--config")
            .arg(s.p("config.toml"))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let d = Daemon {
            child: cmd.spawn().unwrap(),
            log,
        };
        assert!(
            d.wait_log(20, "sources started", 1),
            "not started: {}",
            d.log()
        );
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until `needle` appears at least `n` times in the log.
    fn wait_log(&self, secs: u64, needle: &str, n: usize) -> bool {
        wait_for(secs, || self.log().matches(needle).count() >= n)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    fn wait_exit(&mut self, secs: u64) -> Option<ExitStatus> {
        let mut status = None;
        wait_for(secs, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn opened(path: &Path) -> Vec<Value> {
    json_lines(path)
        .into_iter()
        .filter(|a| a["type"] == "incident.opened")
        .collect()
}

#[test]
fn sighup_with_an_invalid_config_keeps_running_and_names_the_key() {
    let s = Setup::new();
    s.write_config(&s.config(""));
    let mut d = Daemon::start(&s, &[]);

    s.write_config(&s.config("[correlate]\nwindow_secs = 0\n"));
    d.signal("HUP");
    assert!(
        d.wait_log(10, "reload rejected", 1),
        "no rejection logged: {}",
        d.log()
    );
    assert!(d.log().contains("`correlate.window_secs`"), "{}", d.log());

    // A sink table is validated too, before anything is stopped.
    s.write_config(&s.config("[sinks.hook]\ntype = \"webhook\"\nurl = \"not a url\"\n"));
    d.signal("HUP");
    assert!(d.wait_log(10, "reload rejected", 2), "{}", d.log());
    let log = d.log();
    let second = &log[log.rfind("reload rejected").unwrap()..];
    assert!(second.contains("sinks.hook"), "{log}");

    // Another state directory: the checkpoints, open incidents and outboxes are in the
    // running one, and a new pipeline on an empty one skipped what came during the reload,
    // opened open incidents again and left undelivered alerts behind (found by a review
    // helper). A restart is needed.
    s.write_config(&s.config("").replace("/state\"", "/state2\""));
    d.signal("HUP");
    assert!(d.wait_log(10, "reload rejected", 3), "{}", d.log());
    let log = d.log();
    let third = &log[log.rfind("reload rejected").unwrap()..];
    assert!(third.contains("`state.dir`"), "{log}");

    // Still the old pipeline, untouched and working.
    assert!(d.alive());
    assert_eq!(d.log().matches("sources started").count(), 1, "{}", d.log());
    s.append(&denial(1, "mknod", "/var/log/msmtp.log"));
    assert!(
        wait_for(10, || opened(&s.p("alerts.jsonl")).len() == 1),
        "no alert after the rejected reload: {}",
        d.log()
    );
    d.signal("TERM");
    assert!(d.wait_exit(20).unwrap().success());
}

fn healthz(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = c.write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut body = String::new();
    let _ = c.read_to_string(&mut body);
    body.starts_with("HTTP/1.1 200") || body.starts_with("HTTP/1.0 200")
}

/// The metrics endpoint stays where it is when a reload cannot move it: a port another
/// process holds stopped the running endpoint and left none; a reload that goes back to the
/// previous configuration had moved it to the rejected configuration's port (both found by a
/// review helper).
#[test]
fn a_reload_moves_the_metrics_endpoint_only_when_it_can_and_the_reload_stands() {
    let s = Setup::new();
    let old = free_port();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let metrics = |port: u16| format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    s.write_config(&s.config(&metrics(old)));
    let mut d = Daemon::start(&s, &[]);
    assert!(healthz(old), "{}", d.log());

    s.write_config(&s.config(&metrics(busy_port)));
    d.signal("HUP");
    assert!(d.wait_log(15, "sources started", 2), "{}", d.log());
    assert!(
        healthz(old),
        "no endpoint after a reload to a busy port: {}",
        d.log()
    );

    let new = free_port();
    s.write_config(&format!(
        "{}[sources.journald]\ndirectory = \"{}\"\n",
        s.config(&metrics(new)),
        s.p("no-such-journal").display()
    ));
    d.signal("HUP");
    assert!(
        d.wait_log(15, "going back to the previous configuration", 1),
        "{}",
        d.log()
    );
    assert!(d.wait_log(15, "sources started", 3), "{}", d.log());
    assert!(
        healthz(old) && !healthz(new),
        "the endpoint did not go back with the configuration: {}",
        d.log()
    );
    d.signal("TERM");
    assert!(d.wait_exit(20).unwrap().success());
}

/// Regression: a reload whose configuration is valid but whose source cannot be opened (a
/// journal directory that does not exist) ended the daemon with exit 1 after "configuration
/// reloaded"; systemd's restart then met the same file. It goes back to the previous
/// configuration, which goes on working.
#[test]
fn a_reload_whose_sources_cannot_start_goes_back_to_the_previous_configuration() {
    let s = Setup::new();
    s.write_config(&s.config(""));
    let mut d = Daemon::start(&s, &[]);
    s.write_config(&format!(
        "{}[sources.journald]\ndirectory = \"{}\"\n",
        s.config(""),
        s.p("no-such-journal").display()
    ));
    d.signal("HUP");
    assert!(
        d.wait_log(15, "going back to the previous configuration", 1),
        "{}",
        d.log()
    );
    assert!(d.wait_log(15, "sources started", 2), "{}", d.log());
    assert!(d.alive(), "{}", d.log());
    s.append(&denial(1, "mknod", "/var/log/msmtp.log"));
    assert!(
        wait_for(10, || opened(&s.p("alerts.jsonl")).len() == 1),
        "no alert after the failed reload: {}",
        d.log()
    );
    d.signal("TERM");
    assert!(d.wait_exit(20).unwrap().success());
}

/// A followed source that ends by itself (here a kernel_log device, a pty, whose other end
/// closes) stops the daemon with a failure, so that systemd (`Restart=on-failure`) starts it
/// again; it ran on without that source, saying nothing (or, with no source left, ended with
/// success).
#[test]
fn a_source_ending_while_following_stops_the_daemon_with_a_failure() {
    use std::io::BufRead;
    // A pty held by a helper until its stdin closes (the project forbids `unsafe`, so no
    // openpty here): it prints the device, whose reads end when the helper exits.
    let mut holder = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import os, sys\nm, s = os.openpty()\nprint(os.ttyname(s), flush=True)\nos.close(s)\nsys.stdin.read()",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut device = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut device)
        .unwrap();
    let device = device.trim().to_string();
    assert!(device.starts_with("/dev/pts/"), "{device:?}");
    let s = Setup::new();
    s.write_config(&s.config(&format!("[sources.kernel_log]\npath = \"{device}\"\n")));
    let mut d = Daemon::start(&s, &[]);
    drop(holder.stdin.take());
    holder.wait().unwrap();
    let status = d.wait_exit(20);
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{}", d.log());
    assert!(
        d.log().contains("source kernel_log ended while following"),
        "{}",
        d.log()
    );
}

/// Regression: a checkpoint save that failed was tried again at once (with
/// `checkpoint_interval_ms = 0`, thousands of warnings in seconds and a busy core). Now the
/// next try waits 1 s, then 2 s, … up to 60 s, and says so.
#[test]
fn a_failing_checkpoint_save_backs_off() {
    let s = Setup::new();
    s.write_config(&s.config(""));
    let mut d = Daemon::start(&s, &[]);
    assert!(d.wait_log(10, "sources started", 1), "{}", d.log());
    let cp = s.p("state/checkpoints.json");
    let _ = std::fs::remove_file(&cp);
    std::fs::create_dir_all(&cp).unwrap();
    s.append(&denial(1, "mknod", "/var/log/msmtp.log"));
    assert!(
        d.wait_log(15, "saving checkpoints", 2),
        "no second failed save: {}",
        d.log()
    );
    let log = d.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("saving checkpoints"))
        .collect();
    assert!(warnings[0].contains("trying again in 1 s"), "{warnings:#?}");
    assert!(warnings[1].contains("trying again in 2 s"), "{warnings:#?}");
    std::fs::remove_dir(&cp).unwrap();
    d.signal("TERM");
    assert!(d.wait_exit(20).unwrap().success(), "{}", d.log());
}

/// Regression: an alert waiting for its compile check (up to `check_wait_ms`, here 10 min,
/// behind an apparmor_parser that hangs) held the output thread: no watchdog pings, and a
/// SIGTERM drain that ran past its bound without saving. The wait feeds the watchdog, and a
/// stop ends it: the alert goes out (check skipped) and the daemon exits in time.
#[test]
fn an_alert_waiting_for_its_compile_check_feeds_the_watchdog_and_yields_to_a_stop() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new();
    let bin = s.p("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let parser = bin.join("apparmor_parser");
    std::fs::write(&parser, "#!/bin/sh\nexec sleep 300\n").unwrap();
    std::fs::set_permissions(&parser, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.write_config(&s.config("").replace(
        "check_suggestions = false",
        "check_suggestions = true\ncheck_wait_ms = 600000",
    ));
    let sock_path = s.p("notify.sock");
    let mut n = NotifySocket::bind(&sock_path);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut d = Daemon::start(
        &s,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
            ("PATH", &path),
        ],
    );
    n.wait(10, 0, |m| m.lines().any(|l| l == "READY=1"))
        .expect("no READY=1");
    s.append(&denial(1, "mknod", "/var/log/msmtp.log"));
    // The check hangs; while the alert waits, pings go on (at least every second).
    let from = n.got.len();
    let first = n
        .wait(10, from, |m| m.lines().any(|l| l == "WATCHDOG=1"))
        .expect("no ping while waiting");
    n.wait(10, first + 1, |m| m.lines().any(|l| l == "WATCHDOG=1"))
        .expect("only one ping while waiting");
    assert!(
        opened(&s.p("alerts.jsonl")).is_empty(),
        "the alert did not wait"
    );
    let t = Instant::now();
    d.signal("TERM");
    assert!(d.wait_exit(20).unwrap().success(), "{}", d.log());
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "{:?}: {}",
        t.elapsed(),
        d.log()
    );
    let a = opened(&s.p("alerts.jsonl"));
    assert_eq!(a.len(), 1, "{}", d.log());
    assert_eq!(a[0]["explanation"]["suggestion"]["check"], "skipped");
    assert!(!d.log().contains("without finishing"), "{}", d.log());
}

#[test]
fn sighup_with_a_valid_config_switches_and_reopens_files() {
    let s = Setup::new();
    s.write_config(&s.config(""));
    let mut d = Daemon::start(&s, &[]);
    s.append(&denial(1, "mknod", "/var/log/msmtp.log"));
    assert!(wait_for(10, || opened(&s.p("alerts.jsonl")).len() == 1));

    // logrotate moves the file away, then signals.
    std::fs::rename(s.p("alerts.jsonl"), s.p("alerts.jsonl.1")).unwrap();
    s.write_config(&s.config(&format!(
        "[sinks.events]\ntype = \"file\"\npath = \"{}\"\ncontent = \"events\"\n",
        s.p("events.jsonl").display()
    )));
    d.signal("HUP");
    assert!(
        d.wait_log(15, "sources started", 2),
        "no new pipeline: {}",
        d.log()
    );
    assert!(d.log().contains("configuration reloaded"));

    s.append(&denial(2, "open", "/etc/shadow"));
    assert!(
        wait_for(10, || json_lines(&s.p("events.jsonl")).len() == 1),
        "the new events sink received nothing: {}",
        d.log()
    );
    assert_eq!(json_lines(&s.p("events.jsonl"))[0]["name"], "/etc/shadow");
    assert!(wait_for(10, || opened(&s.p("alerts.jsonl")).len() == 1));
    // The first denial was checkpointed before the switch: not delivered again.
    assert_eq!(
        opened(&s.p("alerts.jsonl"))[0]["key"]["object"],
        "/etc/shadow"
    );
    assert_eq!(opened(&s.p("alerts.jsonl.1")).len(), 1);
    d.signal("TERM");
    assert!(d.wait_exit(20).unwrap().success());
    let objects: Vec<Value> = opened(&s.p("alerts.jsonl.1"))
        .into_iter()
        .chain(opened(&s.p("alerts.jsonl")))
        .map(|a| a["key"]["object"].clone())
        .collect();
    assert_eq!(objects, ["/var/log/msmtp.log", "/etc/shadow"]);
}

/// A setup whose config has a webhook sink to a receiver that accepts connections and never
/// answers (the sink hangs on it); the thread holding the connections.
fn setup_with_a_hanging_webhook() -> (Setup, std::thread::JoinHandle<()>) {
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hang.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in hang.incoming() {
            match c {
                Ok(c) => conns.push(c),
                Err(_) => break,
            }
            if conns.len() > 50 {
                break;
            }
        }
    });
    let s = Setup::new();
    s.write_config(&s.config(&format!(
        "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\n"
    )));
    (s, held)
}

#[test]
fn sigterm_drains_within_the_bound_and_saves_state() {
    let (s, held) = setup_with_a_hanging_webhook();
    let mut d = Daemon::start(&s, &[]);
    s.append(&denial(1, "mknod", "/var/log/msmtp.log"));
    assert!(wait_for(10, || opened(&s.p("alerts.jsonl")).len() == 1));
    let outbox = s.p("state/outbox/hook");
    let spooled = || {
        std::fs::read_dir(&outbox)
            .map(|d| d.filter_map(Result::ok).count())
            .unwrap_or(0)
    };
    assert!(wait_for(10, || spooled() > 0), "nothing spooled");

    let t0 = Instant::now();
    d.signal("TERM");
    let status = d.wait_exit(20).expect("still running 20 s after SIGTERM");
    let took = t0.elapsed();
    assert!(status.success(), "{status:?}: {}", d.log());
    assert!(
        took < Duration::from_secs(15),
        "drain took {took:?} (bound 15 s, unit stop timeout 20 s)"
    );
    eprintln!("SIGTERM to exit with a hanging receiver: {took:?}");
    assert!(d.log().contains("SIGTERM: draining"));

    // The incident, the position and the undelivered alert are on disk.
    let id = opened(&s.p("alerts.jsonl"))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let incidents = std::fs::read_to_string(s.p("state/incidents.json")).unwrap();
    assert!(incidents.contains(&id), "{incidents}");
    let checkpoints = std::fs::read_to_string(s.p("state/checkpoints.json")).unwrap();
    assert!(checkpoints.contains("audit_log"), "{checkpoints}");
    assert!(spooled() > 0, "the outbox lost the undelivered alert");
    // And the log says so (the stop's report was dropped without a word).
    let log = d.log();
    assert!(
        log.contains("sink hook: a delivery was still under way at the stop and was cut off")
            && log.contains(
                "sink hook: 1 alert not delivered yet, kept in its outbox for the next start"
            ),
        "{log}"
    );
    drop(held);
}

/// Datagrams received on a NOTIFY_SOCKET.
struct NotifySocket {
    sock: UnixDatagram,
    got: Vec<String>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        NotifySocket {
            sock,
            got: Vec::new(),
        }
    }

    /// Receive what arrives within 100 ms.
    fn pump(&mut self) {
        let mut buf = [0u8; 4096];
        if let Ok(n) = self.sock.recv(&mut buf) {
            self.got
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }

    /// Receive until some message satisfies `f` (counting from message `from`).
    fn wait(&mut self, secs: u64, from: usize, f: impl Fn(&str) -> bool) -> Option<usize> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(i) = self.got.iter().skip(from).position(|m| f(m)) {
                return Some(from + i);
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.sock.recv(&mut buf) {
                self.got
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }
}

/// The daemon on the default test configuration, with a NOTIFY_SOCKET and `WATCHDOG_USEC`.
fn started_with_watchdog(s: &Setup, watchdog_usec: &str) -> (Daemon, NotifySocket) {
    s.write_config(&s.config(""));
    let sock_path = s.p("notify.sock");
    let n = NotifySocket::bind(&sock_path);
    let d = Daemon::start(
        s,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", watchdog_usec),
        ],
    );
    (d, n)
}

#[test]
fn sd_notify_ready_status_watchdog_reloading_stopping() {
    let s = Setup::new();
    let (mut d, mut n) = started_with_watchdog(&s, "1000000");
    let ready = n
        .wait(10, 0, |m| m.lines().any(|l| l == "READY=1"))
        .expect("no READY=1");
    assert!(
        n.got[ready].contains("STATUS=0 events, 0 open incidents"),
        "{:?}",
        n.got
    );
    // The output thread ticks once a second; with WatchdogSec=1 it pings on every tick.
    let w1 = n
        .wait(10, 0, |m| m.lines().any(|l| l == "WATCHDOG=1"))
        .expect("no WATCHDOG=1");
    n.wait(10, w1 + 1, |m| m.lines().any(|l| l == "WATCHDOG=1"))
        .expect("only one WATCHDOG=1");

    s.append(&denial(1, "mknod", "/var/log/msmtp.log"));
    let st = n
        .wait(10, 0, |m| {
            m.starts_with("STATUS=1 events, 1 open incidents, last alert: ")
                && m.contains("msmtp create /var/log/msmtp.log")
        })
        .unwrap_or_else(|| panic!("no STATUS= after the alert: {:?}", n.got));

    // Regression: the status names the last alert's object, from the log; a file named
    // `/tmp/x<newline>WATCHDOG=trigger` (hex in the record, as the kernel writes such names)
    // sent a WATCHDOG=trigger line of its own. It is one STATUS= line, the newline visible.
    let hostile: String = "/tmp/x\nWATCHDOG=trigger"
        .bytes()
        .map(|b| format!("{b:02X}"))
        .collect();
    s.append(&denial(2, "open", "X").replace("name=\"X\"", &format!("name={hostile}")));
    let st = n
        .wait(10, st, |m| m.contains("/tmp/x\\nWATCHDOG=trigger"))
        .unwrap_or_else(|| panic!("no STATUS= naming the hostile file: {:?}", n.got));
    assert_eq!(n.got[st].lines().count(), 1, "{:?}", n.got[st]);
    assert!(
        !n.got
            .iter()
            .any(|m| m.lines().any(|l| l == "WATCHDOG=trigger")),
        "{:?}",
        n.got
    );

    d.signal("HUP");
    let rl = n
        .wait(10, st, |m| m.lines().any(|l| l == "RELOADING=1"))
        .expect("no RELOADING=1");
    assert!(
        n.got[rl].lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 without MONOTONIC_USEC: {:?}",
        n.got[rl]
    );
    n.wait(15, rl, |m| m.lines().any(|l| l == "READY=1"))
        .expect("no READY=1 after the reload");

    d.signal("TERM");
    n.wait(10, rl, |m| m.lines().any(|l| l == "STOPPING=1"))
        .expect("no STOPPING=1");
    assert!(d.wait_exit(20).unwrap().success());
    // Every alert is also in the log with the fixed MESSAGE_ID.
    assert!(d.log().contains(MESSAGE_ID), "{}", d.log());
}

/// A reload pings the watchdog when it starts draining and again before the new pipeline
/// starts: pings come from the pipeline's tick, at most every half of WatchdogSec, so a ping up
/// to 14 s old, a drain of up to 15 s and the new start could pass WatchdogSec=30 s, and
/// systemd would kill the daemon in the middle of a reload (found by the packaging review
/// helper). With 120 s here, the tick pings once at the start only.
#[test]
fn a_reload_pings_the_watchdog_while_it_drains() {
    let s = Setup::new();
    let (mut d, mut n) = started_with_watchdog(&s, "120000000");
    let is = |line: &'static str| move |m: &str| m.lines().any(|l| l == line);
    let ready = n.wait(10, 0, is("READY=1")).expect("no READY=1");
    let first = n
        .wait(10, 0, is("WATCHDOG=1"))
        .expect("no first WATCHDOG=1");
    d.signal("HUP");
    let rl = n
        .wait(10, ready.max(first), is("RELOADING=1"))
        .expect("no RELOADING=1");
    let ping = n
        .wait(10, rl, is("WATCHDOG=1"))
        .expect("no WATCHDOG=1 during the reload");
    let ready = n
        .wait(15, rl, is("READY=1"))
        .expect("no READY=1 after the reload");
    assert!(
        ping < ready,
        "the reload's first ping came after it: {:?}",
        n.got
    );
    d.signal("TERM");
    assert!(d.wait_exit(20).unwrap().success());
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = client.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

/// Regression: every connection to the metrics endpoint got a task and a descriptor for up to
/// 10 s, so idle clients could take all the daemon's descriptors: checkpoint and incident saves
/// then failed with "Too many open files". Connections beyond a few wait in the kernel's
/// backlog instead, and the daemon goes on saving.
#[test]
fn idle_metrics_clients_cannot_take_the_daemons_descriptors() {
    let s = Setup::new();
    s.write_config(&s.config("[metrics]\nlisten = \"127.0.0.1:0\"\n"));
    let d = Daemon::start_with_nofile(&s, 64);
    let log = d.log();
    let at = log
        .find("listening on http://")
        .expect("no metrics address");
    let addr: String = log[at + "listening on http://".len()..]
        .chars()
        .take_while(|c| *c != '/')
        .collect();
    let idle: Vec<std::net::TcpStream> = (0..80)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    s.append(&denial(1, "mknod", "/var/log/msmtp.log"));
    assert!(
        wait_for(10, || opened(&s.p("alerts.jsonl")).len() == 1),
        "{}",
        d.log()
    );
    // Saved with interval 0 once delivered: the checkpoint names the audit log's offset.
    assert!(
        wait_for(10, || std::fs::read_to_string(
            s.p("state/checkpoints.json")
        )
        .is_ok_and(|c| !c.contains("\"offset\":0"))),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("Too many open files"), "{}", d.log());
    drop(idle);
}

#[test]
fn metrics_endpoint_is_scraped_over_http() {
    let s = Setup::new();
    // `/proc/self/mem` opens and fails its first read with EIO: a source read error.
    s.write_config(&s.config(
        "[metrics]\nlisten = \"127.0.0.1:0\"\n[sources.kernel_log]\npath = \"/proc/self/mem\"\n",
    ));
    let mut d = Daemon::start(&s, &[]);
    let log = d.log();
    let at = log
        .find("listening on http://")
        .expect("no metrics address logged");
    let addr: String = log[at + "listening on http://".len()..]
        .chars()
        .take_while(|c| *c != '/')
        .collect();
    s.append(&denial(1, "mknod", "/var/log/msmtp.log"));
    s.append(&denial(2, "open", "/etc/shadow"));
    s.append(&denial(3, "open", "/etc/shadow"));
    // An AppArmor record armorwatch cannot parse is a loss of its own.
    s.append(
        "type=AVC msg=audit(1795623516.004:4): apparmor=\"DENIED\" operation=\"open\" profile=\"msmtp\n",
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/metrics");
        let deadline = Instant::now() + Duration::from_secs(15);
        let body = loop {
            let (status, ct, body) = get(&client, &url).await;
            assert_eq!(status, 200);
            assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
            if body.contains("armorwatch_open_incidents 2")
                && body.contains("armorwatch_loss_notices_total{reason=\"unparsed\"} 1")
                && body.contains(
                    "armorwatch_sink_alerts_total{sink=\"alerts\",type=\"file\",result=\"delivered\"} 3",
                )
                && body
                    .lines()
                    .find_map(|l| l.strip_prefix("armorwatch_source_read_errors_total{source=\"file\"} "))
                    .is_some_and(|n| n.parse::<u64>().unwrap() >= 1)
            {
                break body;
            }
            assert!(Instant::now() < deadline, "metrics never caught up:\n{body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(body.contains(
            "armorwatch_events_total{kind=\"denied\",profile=\"msmtp\",operation=\"open\"} 2"
        ), "{body}");
        assert!(body.contains(
            "armorwatch_events_total{kind=\"denied\",profile=\"msmtp\",operation=\"mknod\"} 1"
        ));
        assert!(body.contains("armorwatch_alerts_total{type=\"incident.opened\"} 2"));
        // The unparsable record also became a loss alert (the third alert the file received).
        assert!(body.contains("armorwatch_alerts_total{type=\"loss\"} 1"));
        assert!(body.contains("# TYPE armorwatch_source_lag_seconds gauge"));
        assert!(body.contains("armorwatch_source_lag_seconds{source=\"file\"}"));
        assert!(body.contains("# TYPE armorwatch_source_read_errors_total counter"));
        assert!(body.contains("armorwatch_source_read_errors_total{source=\"journald\"} 0"));
        let (status, _, text) = get(&client, &format!("http://{addr}/healthz")).await;
        assert_eq!((status, text.as_str()), (200, "ok\n"));
        let (status, _, _) = get(&client, &format!("http://{addr}/nope")).await;
        assert_eq!(status, 404);
        let r = client.post(&url).body("x").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 405);
    });
    d.signal("TERM");
    assert!(d.wait_exit(20).unwrap().success());
}

fn status(args: &[&str]) -> String {
    let out = run_ok(Command::new(BIN).arg("status").args(args));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn status_after_run_and_after_replay() {
    let s = Setup::new();
    s.write_config(&s.config(""));
    let mut d = Daemon::start(&s, &[]);
    // One write: the stop below must find both read (the alert proves the first only).
    s.append(&format!(
        "{}{}",
        denial(1, "mknod", "/var/log/msmtp.log"),
        denial(2, "mknod", "/var/log/msmtp.log")
    ));
    assert!(wait_for(10, || opened(&s.p("alerts.jsonl")).len() == 1));
    d.signal("TERM");
    assert!(d.wait_exit(20).unwrap().success());

    let state = s.p("state");
    let state = state.to_str().unwrap();
    let text = status(&["--state-dir", state]);
    assert!(text.contains("open incidents: 1"), "{text}");
    assert!(
        text.contains("profile msmtp create /var/log/msmtp.log"),
        "{text}"
    );
    let json: Value = serde_json::from_str(&status(&["--state-dir", state, "--json"])).unwrap();
    let open = json["open"].as_array().unwrap();
    assert_eq!(open.len(), 1, "{json}");
    assert_eq!(open[0]["profile"], "msmtp");
    assert_eq!(open[0]["object"], "/var/log/msmtp.log");
    assert!(open[0]["total"].as_u64().unwrap() >= 1);
    assert_eq!(open[0]["last_seen"], "2026-11-25T16:18:36.002Z");
    let headline = open[0]["headline"].as_str().expect("no headline");
    assert!(headline.contains("msmtp"), "{headline}");
    assert!(text.contains(headline), "{text}");

    // replay: every incident is closed at the end; status shows them as recent alerts.
    let r = Setup::new();
    r.write_config(&r.config(""));
    r.append(&denial(7, "mknod", "/var/log/msmtp.log"));
    r.append(&denial(8, "open", "/etc/shadow"));
    run_ok(
        Command::new(BIN)
            .args(["replay", "--config"])
            .arg(r.p("config.toml")),
    );
    let json: Value = serde_json::from_str(&status(&[
        "--config",
        r.p("config.toml").to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let recent = json["recent"].as_array().unwrap();
    let closed: Vec<&str> = recent
        .iter()
        .filter(|a| a["type"] == "incident.closed")
        .map(|a| a["object"].as_str().unwrap())
        .collect();
    assert_eq!(closed.len(), 2, "{json}");
    assert!(closed.contains(&"/etc/shadow") && closed.contains(&"/var/log/msmtp.log"));
    assert!(json["open"].as_array().unwrap().is_empty());
}

/// `status --json` is read in terminals too: characters a terminal acts on (C1 controls such
/// as CSI, DEL, bidi overrides) in a logged path come out as `\uXXXX`, the same JSON value, as
/// in the JSON lines of files and stdout. They were printed raw (found by a review helper).
#[test]
fn status_json_is_safe_for_a_terminal() {
    use armorwatch::correlate::{Config, Correlator};
    use armorwatch::event::Source;
    use armorwatch::parse::{Output, parse_text};
    let hostile = "/tmp/\u{9B}2J\u{7F}\u{202E}gnp.exe";
    let line = format!(
        "type=AVC msg=audit(1700000000.006:1): apparmor=\"DENIED\" operation=\"open\" profile=\"p\" name=\"{hostile}\" pid=1 comm=\"c\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0"
    );
    let Some(Output::Event(event)) = parse_text(&line, &Source::Text).pop() else {
        panic!("not parsed: {line}");
    };
    let mut c = Correlator::new(Config::default());
    c.push(event, 1_700_000_000_006, &mut Vec::new());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("incidents.json"),
        serde_json::to_vec(&c.snapshot()).unwrap(),
    )
    .unwrap();
    let text = status(&["--state-dir", dir.path().to_str().unwrap(), "--json"]);
    assert!(
        !text.contains(['\u{9B}', '\u{7F}', '\u{202E}']),
        "raw terminal controls: {text:?}"
    );
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["open"][0]["object"], hostile, "{json}");
}

/// The journal: a real systemd-journald, started in a private mount namespace (a tmpfs over
/// /run, so the host's journal is untouched); armorwatch runs with `$JOURNAL_STREAM` naming its
/// standard error, as under systemd, and logs natively. `journalctl MESSAGE_ID=…` must find the
/// alert with its fields.
#[test]
fn alerts_reach_the_journal_with_the_message_id() {
    let journald = [
        "/lib/systemd/systemd-journald",
        "/usr/lib/systemd/systemd-journald",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists());
    let Some(journald) = journald else {
        common::skip("systemd-journald is not installed (package systemd)");
        return;
    };
    for bin in ["unshare", "journalctl", "stat"] {
        if Command::new(bin).arg("--version").output().is_err() {
            common::skip(&format!(
                "{bin} is not installed (packages util-linux, systemd)"
            ));
            return;
        }
    }
    let root = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        common::skip("needs root for a private mount namespace (CI runs tests/run-all.sh as root)");
        return;
    }
    let s = Setup::new();
    s.write_config(&s.config(""));
    let script = format!(
        r#"set -eu
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal /run/log/journal
{journald} &
JPID=$!
poll() {{ i=0; until eval "$1"; do i=$((i+1)); [ $i -lt 500 ] || {{ echo "timed out: $1" >&2; return 1; }}; sleep 0.02; done; }}
poll '[ -S /run/systemd/journal/socket ]'
D={dir}
touch $D/journal-stderr
export JOURNAL_STREAM=$(stat -c %d:%i $D/journal-stderr)
{bin} run --config $D/config.toml 2>>$D/journal-stderr &
APID=$!
q() {{ journalctl -D /run/log/journal -o json --no-pager "$@" 2>/dev/null; }}
poll 'q SYSLOG_IDENTIFIER=armorwatch | grep -q "sources started"'
cat >> $D/audit.log <<'X'
{line}X
poll 'q MESSAGE_ID={id} | grep -q msmtp'
kill -TERM $APID
wait $APID
q MESSAGE_ID={id}
kill $JPID
"#,
        dir = s.dir.display(),
        bin = BIN,
        line = denial(1, "mknod", "/var/log/msmtp.log"),
        id = MESSAGE_ID,
    );
    std::fs::write(s.p("journal.sh"), script).unwrap();
    let out = Command::new("timeout")
        .args(["60", "unshare", "--mount", "--propagation", "private", "sh"])
        .arg(s.p("journal.sh"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let entries: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert_eq!(e["MESSAGE_ID"], MESSAGE_ID);
    assert_eq!(e["SYSLOG_IDENTIFIER"], "armorwatch");
    assert_eq!(e["PRIORITY"], "4");
    assert_eq!(e["ARMORWATCH_ALERT"], "incident.opened");
    let id = opened(&s.p("alerts.jsonl"))[0]["id"].clone();
    assert_eq!(e["ARMORWATCH_INCIDENT"], id);
    let message = e["MESSAGE"].as_str().unwrap();
    assert!(
        message.contains("profile msmtp create /var/log/msmtp.log"),
        "{message}"
    );
    // Native logging: the daemon's own lines went to the journal, not to its stderr.
    let err = std::fs::read_to_string(s.p("journal-stderr")).unwrap();
    assert!(!err.contains("sources started"), "{err}");
}

/// A stuck output (standard output is a pipe nobody reads, so the events sink blocks): the
/// watchdog pings stop, so systemd would restart the service, and SIGTERM ends the process
/// with status 1 at the drain bound instead of hanging until systemd's SIGKILL.
#[test]
fn a_stuck_pipeline_stops_the_watchdog_and_the_drain_is_bounded() {
    let s = Setup::new();
    s.write_config(&s.config(
        "[sinks.events]\ntype = \"stdout\"\ncontent = \"events\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    ));
    let sock_path = s.p("notify.sock");
    let mut n = NotifySocket::bind(&sock_path);
    let log = s.p("stderr.log");
    let mut child = Command::new(BIN)
        .arg("run")
        .arg("--config")
        .arg(s.p("config.toml"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::piped()) // never read
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let is_ping = |m: &str| m.lines().any(|l| l == "WATCHDOG=1");
    let first = n.wait(10, 0, is_ping).expect("no WATCHDOG=1");
    let addr = {
        let mut addr = None;
        wait_for(10, || {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            addr = log.find("listening on http://").map(|at| {
                log[at + "listening on http://".len()..]
                    .chars()
                    .take_while(|c| *c != '/')
                    .collect::<String>()
            });
            addr.is_some()
        });
        addr.expect("no metrics address logged")
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let healthz = |rt: &tokio::runtime::Runtime| {
        rt.block_on(get(&client, &format!("http://{addr}/healthz")))
            .0
    };
    assert_eq!(healthz(&rt), 200);
    n.wait(10, first + 1, is_ping).expect("pings do not repeat");

    // ~300 KB of events: far more than a pipe holds.
    let long = "/srv/".to_string() + &"x".repeat(900);
    let mut text = String::new();
    for i in 1..=300 {
        text.push_str(&denial(i, "open", &format!("{long}/{i}")));
    }
    s.append(&text);

    // The output thread blocks in write(2): no more pings.
    let mut last_ping = Instant::now();
    let stalled = wait_for(30, || {
        let seen = n.got.len();
        n.pump();
        if n.got[seen..].iter().any(|m| is_ping(m)) {
            last_ping = Instant::now();
        }
        last_ping.elapsed() > Duration::from_secs(3)
    });
    assert!(stalled, "the watchdog kept pinging with a stuck output");
    assert!(child.try_wait().unwrap().is_none());

    let t0 = Instant::now();
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // The endpoint still answers while the drain hangs, and says the pipeline is stuck.
    assert!(
        wait_for(14, || healthz(&rt) == 503),
        "/healthz never reported the stuck pipeline"
    );
    let mut status = None;
    wait_for(25, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let took = t0.elapsed();
    let _ = child.kill();
    let status = status.expect("still running 25 s after SIGTERM");
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        took >= Duration::from_secs(14) && took < Duration::from_secs(19),
        "exited after {took:?}; the bound is 15 s, systemd kills at 20 s"
    );
    assert!(err.contains("draining took longer than 15 s"), "{err}");
}

/// What `check-config` calls a configuration error (exit 78, with the key) makes `run` exit 78
/// with the key as well, and the other way round: a configured source that cannot be opened
/// (or is a directory), a state directory that cannot be created, a metrics address that is
/// not this host's. `replay` too (it exited 1 without the key). It exited 1 without the key, and the unit (`Restart=on-failure`,
/// `RestartPreventExitStatus=78`) restarted it every 5 s for ever (found by a review helper).
#[test]
fn run_exits_78_with_the_key_where_check_config_does() {
    let s = Setup::new();
    std::fs::write(s.p("not-a-dir"), "").unwrap();
    let d = s.dir.display();
    let cases = [
        (
            "sources.audit_log.path",
            format!(
                "[state]\ndir = \"{d}/state\"\n[sources.audit_log]\npath = \"{d}/no/such/dir/audit.log\"\n[profiles]\nenabled = false\n"
            ),
        ),
        (
            "state.dir",
            format!(
                "[state]\ndir = \"{d}/not-a-dir\"\n[sources.audit_log]\npath = \"{d}/audit.log\"\n[profiles]\nenabled = false\n"
            ),
        ),
        (
            "sources.journald.directory",
            format!(
                "[state]\ndir = \"{d}/state\"\n[sources.journald]\ndirectory = \"{d}/no-journal\"\n[profiles]\nenabled = false\n"
            ),
        ),
        // A directory opens like a file: check-config said OK, run exited 78.
        (
            "sources.audit_log.path",
            format!(
                "[state]\ndir = \"{d}/state\"\n[sources.audit_log]\npath = \"{d}\"\n[profiles]\nenabled = false\n"
            ),
        ),
        // A file sink on a directory: run said `sink out: …` without the key.
        (
            "sinks.out.path",
            format!(
                "[state]\ndir = \"{d}/state\"\n[sources.audit_log]\npath = \"{d}/audit.log\"\n[sinks.out]\ntype = \"file\"\npath = \"{d}\"\n[profiles]\nenabled = false\n"
            ),
        ),
        // A sendmail that does not exist: check-config said so, run started and every mail
        // failed.
        (
            "sinks.mail.sendmail",
            format!(
                "[state]\ndir = \"{d}/state\"\n[sources.audit_log]\npath = \"{d}/audit.log\"\n[sinks.mail]\ntype = \"email\"\nsendmail = \"{d}/no/msmtp\"\nfrom = \"a@example.org\"\nto = \"b@example.org\"\n[profiles]\nenabled = false\n"
            ),
        ),
        // An address not on this host (TEST-NET-1) never binds: check-config said OK, run
        // exited 1 and was restarted every 5 s.
        (
            "metrics.listen",
            format!(
                "[state]\ndir = \"{d}/state\"\n[sources.audit_log]\npath = \"{d}/audit.log\"\n[metrics]\nlisten = \"192.0.2.1:9812\"\n[profiles]\nenabled = false\n"
            ),
        ),
    ];
    for (key, text) in cases {
        s.write_config(&text);
        // replay takes no metrics endpoint.
        let replay = (key != "metrics.listen").then_some("replay");
        for cmd in ["check-config", "run"].into_iter().chain(replay) {
            let mut child = Command::new(BIN)
                .args([cmd, "--config"])
                .arg(s.p("config.toml"))
                .env_remove("NOTIFY_SOCKET")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(s.p("stderr.log")).unwrap())
                .spawn()
                .unwrap();
            let mut status = None;
            let exited = wait_for(20, || {
                status = child.try_wait().unwrap();
                status.is_some()
            });
            if !exited {
                let _ = child.kill();
            }
            let log = std::fs::read_to_string(s.p("stderr.log")).unwrap();
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(78),
                "{cmd} on {key}: {log}"
            );
            assert!(log.contains(&format!("`{key}`")), "{cmd} on {key}: {log}");
        }
    }
}

/// An I/O error opening a sink at start that may pass (here EFBIG: the file sink's torn last
/// line cannot be ended, as on a full disk) is no configuration error: `run` exits 1, which
/// systemd restarts, and `replay` 74. Both exited 78, which `RestartPreventExitStatus=78` leaves
/// down until someone starts the service again. The limit is set by `prlimit` with SIGXFSZ
/// ignored (a disposition exec keeps), so the daemon gets the error instead of the signal.
#[test]
fn a_passing_io_error_at_start_is_not_a_configuration_error() {
    let s = Setup::new();
    let d = s.dir.display();
    // A file sink whose last line a crash tore: opening it ends that line with a newline.
    std::fs::write(s.p("out.jsonl"), "x".repeat(100)).unwrap();
    s.write_config(&format!(
        "[state]\ndir = \"{d}/state\"\n[sources.audit_log]\npath = \"{d}/audit.log\"\n[sinks.out]\ntype = \"file\"\npath = \"{d}/out.jsonl\"\n[profiles]\nenabled = false\n"
    ));
    for (cmd, code) in [("run", 1), ("replay", 74)] {
        let out = Command::new("bash")
            .arg("-c")
            .arg("trap '' XFSZ; exec prlimit --fsize=100 -- \"$@\"")
            .arg("bash")
            .args([BIN, cmd, "--config"])
            .arg(s.p("config.toml"))
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{cmd}: {log}");
        assert!(log.contains("`sinks.out.path`"), "{cmd}: {log}");
        assert!(!log.contains("configuration error"), "{cmd}: {log}");
    }
}

/// `replay --config C old.log`, C naming no source (kept for its sinks): only old.log is read.
/// The host's sources were chosen automatically and replayed too, from their checkpoints on,
/// which moved those checkpoints in C's state directory.
#[test]
fn replay_of_files_with_a_config_naming_no_source_reads_only_the_files() {
    let s = Setup::new();
    let d = s.dir.display();
    std::fs::write(s.p("old.log"), denial(7, "open", "/etc/old")).unwrap();
    s.write_config(&format!(
        "[state]\ndir = \"{d}/state\"\n[sinks.out]\ntype = \"file\"\npath = \"{d}/out.jsonl\"\n[profiles]\nenabled = false\n"
    ));
    let out = run_ok(
        Command::new(BIN)
            .args(["replay", "--config"])
            .arg(s.p("config.toml"))
            .arg(s.p("old.log"))
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null()),
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(!log.contains("choosing automatically"), "{log}");
    let names: Vec<Value> = opened(&s.p("out.jsonl"))
        .into_iter()
        .map(|a| a["event"]["name"].clone())
        .collect();
    assert_eq!(names, ["/etc/old"], "{log}");
    assert!(!s.p("state").exists(), "{log}");
}

/// A lock file left in the state directory by a run as root (`sudo armorwatch replay` once:
/// root-owned, 0644) does not stop the service user: flock(2) needs no write access. `run`
/// exited 78 with `lock: Permission denied` while check-config said OK (found by a review
/// helper). One this user cannot open at all is a check-config error.
#[test]
fn a_lock_file_left_by_root_does_not_stop_the_service_user() {
    use std::os::unix::fs::{PermissionsExt, chown};
    let Some(s) = setup_for_nobody() else { return };
    let d = s.dir.display();
    let state = s.p("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("lock"), "1\n").unwrap();
    std::fs::set_permissions(state.join("lock"), std::fs::Permissions::from_mode(0o644)).unwrap();
    chown(&state, Some(65534), Some(65534)).unwrap();
    std::fs::write(s.p("audit.log"), denial(1, "open", "/etc/x")).unwrap();
    std::fs::write(s.p("out.jsonl"), "").unwrap();
    chown(s.p("out.jsonl"), Some(65534), Some(65534)).unwrap();
    s.write_config(&format!(
        "[state]\ndir = \"{d}/state\"\n[sources.audit_log]\npath = \"{d}/audit.log\"\n[sinks.out]\ntype = \"file\"\npath = \"{d}/out.jsonl\"\n[profiles]\nenabled = false\n"
    ));
    let out = as_nobody("replay", &s);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(opened(&s.p("out.jsonl")).len(), 1, "{err}");

    std::fs::set_permissions(state.join("lock"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = as_nobody("check-config", &s);
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{said}");
    assert!(
        said.contains("state.dir") && said.contains("lock"),
        "{said}"
    );
}

/// A noise directory (or severity database) that is there but unreadable is a configuration
/// error naming its key: the admin's mute rules were dropped without a word (a review helper:
/// root-only 0700 noise.d, check-config OK, alerts without their `noise` mark). Absent is fine.
#[test]
fn an_unreadable_noise_directory_is_a_configuration_error() {
    use std::os::unix::fs::PermissionsExt;
    let Some(s) = setup_for_nobody() else { return };
    let d = s.dir.display();
    std::fs::create_dir(s.p("noise.d")).unwrap();
    std::fs::write(s.p("noise.d/mine.toml"), "").unwrap();
    std::fs::set_permissions(s.p("noise.d"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(s.p("audit.log"), "").unwrap();
    for (noise, code) in [("noise.d", 78), ("no-such-noise.d", 0)] {
        s.write_config(&format!(
            "[state]\ndir = \"/tmp\"\n[correlate]\nnoise_dir = \"{d}/{noise}\"\n[sources.audit_log]\npath = \"{d}/audit.log\"\n[profiles]\nenabled = false\n"
        ));
        let out = as_nobody("check-config", &s);
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{noise}: {said}");
        if code == 78 {
            assert!(said.contains("correlate.noise_dir"), "{said}");
        }
    }
}

/// A setup whose directory user 65534 (nobody) may enter, when this runs as root with setpriv
/// (else the test is skipped).
fn setup_for_nobody() -> Option<Setup> {
    use std::os::unix::fs::PermissionsExt;
    let root =
        std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if !Path::new("/usr/bin/setpriv").exists() || !root {
        common::skip("needs root and /usr/bin/setpriv (util-linux)");
        return None;
    }
    let s = Setup::new();
    std::fs::set_permissions(&s.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(s)
}

/// `armorwatch CMD --config` the setup's config.toml, as user and group 65534.
fn as_nobody(cmd: &str, s: &Setup) -> std::process::Output {
    Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(BIN)
        .args([cmd, "--config"])
        .arg(s.p("config.toml"))
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap()
}

/// A SIGHUP that comes while the daemon is still reading its configuration (logrotate, or a
/// `systemctl reload` racing a restart) is a reload once it runs. It terminated the process:
/// the handlers were installed after the configuration was read, and systemd counts a death
/// by SIGHUP as a clean exit, so `Restart=on-failure` did not bring the service back. The
/// configuration is a FIFO here, so the daemon is held inside the read for as long as the test
/// wants.
#[test]
fn a_sighup_while_the_configuration_is_read_is_a_reload_once_running() {
    use std::os::unix::fs::OpenOptionsExt;
    let s = Setup::new();
    let fifo = s.p("config.toml");
    run_ok(Command::new("mkfifo").arg(&fifo));
    let log = s.p("stderr.log");
    let mut d = Daemon {
        child: Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&fifo)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log,
    };
    // A writer opens a FIFO without blocking only once a reader has it open: the daemon is
    // then inside the configuration read.
    let mut writer = None;
    assert!(
        wait_for(20, || {
            writer = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .ok();
            writer.is_some()
        }),
        "the daemon never opened its configuration: {}",
        d.log()
    );
    d.signal("HUP");
    let config = s.config("");
    // If the signal killed it, the write fails (EPIPE); the assertion below says why.
    let _ = writer.take().unwrap().write_all(config.as_bytes());
    assert!(
        d.wait_log(20, "sources started", 1),
        "not started after a SIGHUP during the configuration read ({:?}): {}",
        d.child.try_wait().unwrap(),
        d.log()
    );
    // The pending SIGHUP is a reload: it reads the FIFO again.
    assert!(d.wait_log(20, "SIGHUP: reloading", 1), "{}", d.log());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(config.as_bytes())
        .unwrap();
    assert!(d.wait_log(20, "sources started", 2), "{}", d.log());
    s.append(&denial(1, "mknod", "/var/log/msmtp.log"));
    assert!(
        wait_for(10, || opened(&s.p("alerts.jsonl")).len() == 1),
        "no alert: {}",
        d.log()
    );
    d.signal("TERM");
    assert!(d.wait_exit(20).unwrap().success(), "{}", d.log());
}

/// A SIGTERM while a reload drains the old pipeline stops the daemon there. It waited for the
/// new pipeline to start and then drained that one too, which with a slow sink (here a
/// receiver that never answers, holding the drain for the sinks' 5 s) and slow sources could
/// outlast the unit's TimeoutStopSec.
#[test]
fn sigterm_during_a_reload_drain_stops_without_starting_the_new_pipeline() {
    let (s, held) = setup_with_a_hanging_webhook();
    let mut d = Daemon::start(&s, &[]);
    s.append(&denial(1, "mknod", "/var/log/msmtp.log"));
    assert!(wait_for(10, || opened(&s.p("alerts.jsonl")).len() == 1));
    d.signal("HUP");
    assert!(d.wait_log(10, "SIGHUP: reloading", 1), "{}", d.log());
    d.signal("TERM");
    let status = d.wait_exit(20).expect("still running 20 s after SIGTERM");
    let log = d.log();
    assert!(status.success(), "{status:?}: {log}");
    assert!(
        log.contains("SIGTERM during the reload: stopping instead of starting the new pipeline"),
        "{log}"
    );
    assert_eq!(log.matches("sources started").count(), 1, "{log}");
    // The drain saved what a stop saves.
    let checkpoints = std::fs::read_to_string(s.p("state/checkpoints.json")).unwrap();
    assert!(checkpoints.contains("audit_log"), "{checkpoints}");
    drop(held);
}

//! Integration tests of the correlator: real records through the real parser into the
//! correlator; alerts validated against docs/alert.schema.json; exact accounting under arbitrary
//! input (proptest); snapshot/restore; bounded memory under a 1M-event storm; severity.db
//! lookups compared with AppArmor's own Python implementation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use armorwatch::alert::{Alert, AlertType};
use armorwatch::correlate::severity::{Modes, SeverityDb};
use armorwatch::correlate::{Config, Correlator, Snapshot, event_time_ms, loss_info};
use armorwatch::event::{Event, Source};
use armorwatch::parse::{Output, parse_text};
use proptest::prelude::*;

mod common;
use common::run_ok;

const LOADGEN: &str = include_str!("fixtures/correlate/loadgen.log");
const SPECIAL: &str = include_str!("fixtures/correlate/special.log");
const KERNEL: &str = include_str!("fixtures/correlate/kernel-dmesg.log");
const SEVERITY_DB: &str = include_str!("fixtures/correlate/severity.db");
const SCHEMA: &str = include_str!("../docs/alert.schema.json");

enum Input {
    Event(Box<Event>),
    Loss(armorwatch::alert::LossInfo),
}

fn inputs(text: &str) -> Vec<Input> {
    parse_text(text, &Source::Text)
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(Input::Event(e)),
            Output::Loss(l) => Some(Input::Loss(loss_info(&l))),
            // The kernel command line (`apparmor=1`) of the dmesg fixture is not a record; older
            // parsers report it as malformed.
            Output::Malformed(m) if m.line.contains("ommand line:") => None,
            Output::Malformed(m) => panic!("malformed fixture line: {m:?}"),
        })
        .collect()
}

fn config() -> Config {
    Config {
        host: "testhost".into(),
        severity_db: Arc::new(SeverityDb::parse(SEVERITY_DB).unwrap()),
        ..Config::default()
    }
}

/// Run inputs through a correlator the way `replay` does: log time as `now`, a tick between
/// inputs, everything flushed at the end.
fn replay(c: &mut Correlator, inputs: Vec<Input>, out: &mut Vec<Alert>) -> u64 {
    let mut now = 0;
    for input in inputs {
        match input {
            Input::Event(e) => {
                now = event_time_ms(&e).unwrap_or(now).max(now);
                c.push(e, now, out);
            }
            Input::Loss(l) => c.push_loss(l, now, out),
        }
        c.tick(now, out);
    }
    now
}

/// Per incident id: the counts of its alerts and suppressed entries, and its last total.
#[derive(Debug, Default)]
struct Ledger {
    counted: u64,
    last_total: u64,
    closed: bool,
    seqs: Vec<u64>,
}

/// Check the accounting rules over a complete alert stream (after `flush_all`); returns the
/// number of incident events accounted for.
fn check_accounting(alerts: &[Alert]) -> u64 {
    let mut by_id: HashMap<String, Ledger> = HashMap::new();
    for a in alerts {
        match a.alert_type {
            AlertType::IncidentOpened | AlertType::IncidentUpdate | AlertType::IncidentClosed => {
                let l = by_id.entry(a.id.clone()).or_default();
                assert!(!l.closed, "alert after close: {}", a.idempotency_key());
                l.counted += a.count;
                assert!(a.total >= l.last_total, "total went down for {}", a.id);
                l.last_total = a.total;
                l.seqs.push(a.seq);
                if a.alert_type == AlertType::IncidentOpened {
                    assert_eq!(a.seq, 1);
                }
                l.closed = a.alert_type == AlertType::IncidentClosed;
            }
            AlertType::Suppressed => {
                assert!(!a.incidents.is_empty());
                for h in &a.incidents {
                    let l = by_id.entry(h.id.clone()).or_default();
                    assert!(!l.closed, "held entry after close: {}", h.id);
                    l.counted += h.count;
                    assert!(h.total >= l.last_total);
                    l.last_total = h.total;
                    l.closed = h.closed;
                }
            }
            AlertType::Status | AlertType::Loss => {}
        }
    }
    let mut events = 0;
    for (id, l) in &by_id {
        assert!(l.closed, "incident {id} never closed");
        assert_eq!(
            l.counted, l.last_total,
            "counts of {id} do not add up: {l:?}"
        );
        let expected: Vec<u64> = (1..=l.seqs.len() as u64).collect();
        assert_eq!(l.seqs, expected, "seq of {id}");
        events += l.last_total;
    }
    events
}

#[test]
fn real_records_produce_schema_valid_alerts_of_every_type() {
    let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut c = Correlator::new(Config {
        max_alerts_per_minute: 60,
        max_open_incidents: 50,
        window_ms: 5_000,
        ..config()
    });
    let mut out = Vec::new();
    let mut all = inputs(LOADGEN);
    all.extend(inputs(SPECIAL));
    all.extend(inputs(KERNEL));
    let n_events = all.iter().filter(|i| matches!(i, Input::Event(_))).count() as u64;
    let end = replay(&mut c, all, &mut out);
    c.flush_all(end + 1, &mut out);

    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &out {
        *seen.entry(a.alert_type.as_str()).or_default() += 1;
        let json = serde_json::to_value(a).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&json)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{errors:#?}\n{json:#}");
    }
    eprintln!("alert types: {seen:?}");
    for t in [
        "incident.opened",
        "incident.update",
        "incident.closed",
        "suppressed",
        "status",
        "loss",
    ] {
        assert!(seen.contains_key(t), "no {t} alert in {seen:?}");
    }
    // every event is accounted for exactly once
    let status = seen["status"] as u64;
    assert_eq!(check_accounting(&out), n_events - status);
    assert_eq!(c.stats().events, n_events);
    // noise from the special fixture is marked, hostile names survive as data
    assert!(
        out.iter()
            .any(|a| a.noise.as_deref() == Some("ubuntu-userns-capable"))
    );
    assert!(
        out.iter()
            .any(|a| a.noise.as_deref() == Some("inherited-terminal"))
    );
    let hostile = out
        .iter()
        .find(|a| {
            a.samples
                .iter()
                .any(|s| s.object.as_deref().is_some_and(|o| o.contains('\n')))
        })
        .expect("the hex-encoded name with a newline");
    assert_eq!(
        hostile.key.as_ref().unwrap().object,
        "@{HOME}/My Drive —/\nnotes.txt"
    );
    // a schema-invalid alert is caught (the validator is not vacuous)
    let mut bad = serde_json::to_value(&out[0]).unwrap();
    bad["severity"] = serde_json::json!(11);
    assert!(!validator.is_valid(&bad));
}

#[test]
fn snapshot_round_trips_through_json_and_restart_continues() {
    let all = inputs(LOADGEN);
    let n = all.len();
    // uninterrupted run
    let mut whole = Correlator::new(config());
    let mut out_whole = Vec::new();
    let end = replay(&mut whole, inputs(LOADGEN), &mut out_whole);
    whole.flush_all(end + 1, &mut out_whole);

    // the same input with a restart (snapshot → JSON → restore) in the middle
    let mut second_half = all;
    let first_half: Vec<Input> = second_half.drain(..n / 2).collect();
    let mut c = Correlator::new(config());
    let mut out = Vec::new();
    replay(&mut c, first_half, &mut out);
    let open_before = c.open_incidents();
    assert!(
        open_before > 10,
        "the restart must happen with incidents open"
    );
    let json = serde_json::to_string_pretty(&c.snapshot()).unwrap();
    drop(c);
    let snap: Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(
        serde_json::to_string_pretty(&snap).unwrap(),
        json,
        "lossless round trip"
    );
    let mut c = Correlator::restore(snap, config()).unwrap();
    assert_eq!(c.open_incidents(), open_before);
    let end = replay(&mut c, second_half, &mut out);
    c.flush_all(end + 1, &mut out);

    // same incidents, same ids, same counts: nothing re-opened by the restart
    let summary = |alerts: &[Alert]| {
        alerts
            .iter()
            .map(|a| (a.alert_type, a.id.clone(), a.seq, a.count, a.total))
            .collect::<Vec<_>>()
    };
    assert_eq!(summary(&out), summary(&out_whole));
    check_accounting(&out);
}

#[test]
fn memory_stays_flat_under_a_million_distinct_events() {
    const CAP: usize = 10_000;
    // a million events in 17 minutes: buckets roll, incidents close by eviction and by quiet
    const SPAN_MS: u64 = 1_000_000;
    let proto = match parse_text(
        // lean on purpose: the test measures the correlator, not cloning test events
        "type=AVC msg=audit(1700000000.123:1): apparmor=\"DENIED\" operation=\"open\" profile=\"s\" name=\"/srv/x\" denied_mask=\"r\"",
        &Source::Text,
    )
    .pop()
    {
        Some(Output::Event(e)) => e,
        other => panic!("{other:?}"),
    };
    let mut c = Correlator::new(Config {
        max_open_incidents: CAP,
        ..config()
    });
    let mut out = Vec::new();
    let mut alerts = 0u64;
    let mut held_entries = 0u64;
    let mut max_open = 0;
    let t0 = 1_700_000_000_000u64;
    for i in 0..1_000_000u64 {
        let mut e = proto.clone();
        // distinct objects that no normalisation rule merges
        e.fields.set("name", &format!("/srv/data/file-{i}-x"));
        c.push(e, t0 + i * SPAN_MS / 1_000_000, &mut out);
        max_open = max_open.max(c.open_incidents());
        for a in out.drain(..) {
            alerts += 1;
            held_entries += a.incidents.len() as u64;
        }
    }
    c.flush_all(t0 + SPAN_MS, &mut out);
    assert!(max_open <= CAP, "{max_open} open incidents");
    assert_eq!(max_open, CAP);
    // never silent: every incident is in an alert or a suppressed entry
    let stats = c.stats();
    assert_eq!(stats.incidents_opened, 1_000_000);
    assert_eq!(stats.incidents_closed, 1_000_000);
    assert!(stats.incidents_evicted >= 1_000_000 - CAP as u64);
    // the flood cap held nearly all of it: at most 120 incident alerts per minute of input
    let minutes = SPAN_MS / 60_000 + 1;
    assert!(
        alerts - stats.suppressed_alerts <= minutes * 120,
        "{alerts} alerts"
    );
    assert!(held_entries > 900_000, "{held_entries}");
}

#[test]
fn severity_db_lookups_match_apparmor_utils() {
    // AppArmor's own implementation (python3-apparmor) is the reference.
    let probe = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import apparmor.severity"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        common::skip("/usr/bin/python3 with python3-apparmor not available");
        return;
    }
    let db = SeverityDb::parse(SEVERITY_DB).unwrap();
    let paths = [
        "/etc/shadow",
        "/etc/shadow-",
        "/etc/passwd",
        "/etc/passwd-",
        "/home/alice/.ssh/id_rsa",
        "/home/alice/.gnupg/pubring.kbx",
        "/home/alice/notes.txt",
        "/proc/1234/status",
        "/proc/kallsyms",
        "/proc/sys/kernel/modprobe",
        "/sys/power/state",
        "/sys/firmware/efi/efivars/x",
        "/sys/class/net",
        "/dev/pts/3",
        "/dev/tty7",
        "/dev/sda",
        "/dev/sda1",
        "/dev/null",
        "/dev/mem",
        "/dev/kmem",
        "/dev/cpu/0/microcode",
        "/dev/cpu/0/msr",
        "/boot/vmlinuz",
        "/srv/www/index.php",
        "/usr/bin/passwd",
        "/usr/sbin/sshd",
        "/etc/X11/xorg.conf",
        "/etc/X11/xinit/xinitrc",
        "/opt/unknown",
        "/var/log/syslog",
        "/lost+found/x",
        "/a/b/lost+found/c",
        "/etc/sudoers",
        "/etc/ssh/sshd_config",
        "/var/lib/mysql/ibdata1",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/X11R6/bin/xterm",
        "/tmp/x",
        "/root/.bashrc",
    ];
    let modes = ["r", "w", "x", "rw", "rwx"];
    let caps = [
        "sys_admin",
        "setuid",
        "net_raw",
        "dac_read_search",
        "net_broadcast",
        "bpf",
        "perfmon",
        "chown",
    ];
    let mut script = String::from(
        "import sys\nfrom apparmor.severity import Severity\ns = Severity(sys.argv[1], default_rank=99)\n",
    );
    for p in &paths {
        for m in &modes {
            script.push_str(&format!("print(s.rank_path({p:?}, set({m:?})))\n"));
        }
    }
    for cap in &caps {
        script.push_str(&format!("print(s.rank_capability({cap:?}))\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("severity.db");
    std::fs::write(&db_path, SEVERITY_DB).unwrap();
    let out = run_ok(
        std::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(&script)
            .arg(&db_path),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut theirs = stdout.lines();
    let mut compared = 0;
    for p in &paths {
        for m in &modes {
            let expected: u8 = theirs.next().unwrap().parse().unwrap();
            let ours = db.lookup_path(p, Modes::from_file_mask(m)).unwrap_or(99);
            assert_eq!(ours, expected, "{p} {m}");
            compared += 1;
        }
    }
    for cap in &caps {
        let expected: u8 = theirs.next().unwrap().parse().unwrap();
        assert_eq!(db.rank_capability(cap), expected, "{cap}");
        compared += 1;
    }
    assert_eq!(compared, paths.len() * modes.len() + caps.len());
}

// ---------------------------------------------------------------- property test

#[allow(clippy::vec_box)] // Correlator::push takes Box<Event>; clones of these feed it.
fn prototypes() -> Vec<Box<Event>> {
    let lines = [
        "type=AVC msg=audit(1700000000.000:1): apparmor=\"DENIED\" operation=\"open\" profile=\"p1\" name=\"/etc/a\" pid=1 comm=\"x\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0",
        "type=AVC msg=audit(1700000000.000:2): apparmor=\"ALLOWED\" operation=\"open\" profile=\"p1\" name=\"/etc/a\" pid=1 comm=\"x\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0",
        "type=AVC msg=audit(1700000000.000:3): apparmor=\"DENIED\" operation=\"mknod\" profile=\"p2\" name=\"/proc/12/x\" pid=1 comm=\"x\" requested_mask=\"c\" denied_mask=\"c\" fsuid=0 ouid=0",
        "type=AVC msg=audit(1700000000.000:4): apparmor=\"DENIED\" operation=\"capable\" profile=\"p3\" pid=1 comm=\"x\" capability=12  capname=\"net_admin\"",
        "type=AVC msg=audit(1700000000.000:5): apparmor=\"STATUS\" operation=\"profile_load\" profile=\"unconfined\" name=\"p4\" pid=1 comm=\"apparmor_parser\"",
    ];
    lines
        .iter()
        .map(|l| match parse_text(l, &Source::Text).pop() {
            Some(Output::Event(e)) => e,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Step {
    /// prototype, object variant, time advance (ms)
    Push(usize, u8, u64),
    Tick(u64),
    Loss(u64),
    /// snapshot → JSON → restore
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0usize..5, 0u8..6, 0u64..30_000).prop_map(|(p, v, dt)| Step::Push(p, v, dt)),
        2 => (0u64..200_000).prop_map(Step::Tick),
        1 => (0u64..1_000).prop_map(Step::Loss),
        1 => Just(Step::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn counts_add_up_under_any_sequence(
        steps in prop::collection::vec(step(), 1..120),
        flood_cap in 0u32..4,
        open_cap in 1usize..5,
        window_s in 1u64..90,
        held_listed in 1usize..6,
    ) {
        let protos = prototypes();
        let cfg = || Config {
            max_alerts_per_minute: flood_cap,
            max_open_incidents: open_cap,
            window_ms: window_s * 1000,
            max_held_listed: held_listed,
            ..config()
        };
        let mut c = Correlator::new(cfg());
        let mut out = Vec::new();
        let mut timed: Vec<(u64, Alert)> = Vec::new();
        let mut now = 1_700_000_000_000u64;
        let mut incident_events = 0u64;
        let mut status_events = 0u64;
        for s in steps {
            match s {
                Step::Push(p, v, dt) => {
                    now += dt;
                    let mut e = protos[p].clone();
                    if let Some(name) = e.fields.get("name").map(str::to_string)
                        && p != 4
                    {
                        e.fields.set("name", &format!("{name}{}", v % 3));
                    }
                    // Every record its own audit serial, as the kernel numbers them (an
                    // incident's id names the record that opened it).
                    if let Some(a) = e.audit.as_mut() {
                        a.serial = incident_events + status_events + 1;
                    }
                    if p == 4 { status_events += 1 } else { incident_events += 1 }
                    c.push(e, now, &mut out);
                }
                Step::Tick(dt) => {
                    now += dt;
                    c.tick(now, &mut out);
                }
                Step::Loss(n) => c.push_loss(armorwatch::alert::LossInfo {
                    origin: "kernel".into(), what: "test".into(), count: Some(n) }, now, &mut out),
                Step::Restart => {
                    let json = serde_json::to_string(&c.snapshot()).unwrap();
                    c = Correlator::restore(serde_json::from_str(&json).unwrap(), cfg()).unwrap();
                }
            }
            prop_assert!(c.open_incidents() <= open_cap);
            timed.extend(out.drain(..).map(|a| (now, a)));
        }
        c.flush_all(now, &mut out);
        prop_assert_eq!(c.open_incidents(), 0);
        let flushed: Vec<Alert> = std::mem::take(&mut out);
        let mut all: Vec<Alert> = timed.iter().map(|(_, a)| a.clone()).collect();
        all.extend(flushed);
        prop_assert_eq!(check_accounting(&all), incident_events);
        let status = all.iter().filter(|a| a.alert_type == AlertType::Status).count() as u64;
        prop_assert_eq!(status, status_events);
        // flood cap: fixed one-minute buckets, so any 60 s span overlaps at most two of them
        if flood_cap > 0 {
            let times: Vec<u64> = timed
                .iter()
                .filter(|(_, a)| matches!(a.alert_type,
                    AlertType::IncidentOpened | AlertType::IncidentUpdate | AlertType::IncidentClosed))
                .map(|(t, _)| *t)
                .collect();
            for (i, t) in times.iter().enumerate() {
                let in_span = times[..=i].iter().filter(|u| **u + 60_000 > *t).count();
                prop_assert!(in_span <= 2 * flood_cap as usize, "{} alerts within 60 s, cap {}", in_span, flood_cap);
            }
        }
    }
}

// ---------------------------------------------------------------- the command

fn run_cli(args: &[&str]) -> (Vec<serde_json::Value>, String) {
    let out = run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_armorwatch"))
            .arg("correlate")
            .args(args),
    );
    let alerts = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (alerts, String::from_utf8(out.stderr).unwrap())
}

/// A state restored under a lowered `max_open_incidents` is brought under the cap at the next
/// tick (the least recently seen evicted, each with its `incident.closed`); it stayed over the
/// cap until new incidents came.
#[test]
fn a_lowered_cap_applies_to_restored_incidents_at_the_next_tick() {
    let mut c = Correlator::new(config());
    let mut out = Vec::new();
    for (i, e) in prototypes().into_iter().take(3).enumerate() {
        c.push(e, 1_700_000_000_000 + i as u64, &mut out);
    }
    assert_eq!(c.open_incidents(), 3);
    let lowered = Config {
        max_open_incidents: 1,
        ..config()
    };
    let mut c = Correlator::restore(c.snapshot(), lowered).unwrap();
    let mut out = Vec::new();
    c.tick(1_700_000_000_010, &mut out);
    assert_eq!(c.open_incidents(), 1);
    let evicted = out
        .iter()
        .filter(|a| {
            a.alert_type == AlertType::IncidentClosed && a.reason.as_deref() == Some("evicted")
        })
        .count();
    assert_eq!(evicted, 2, "{out:#?}");
}

/// The state is saved only once the alerts it counts are written: with standard output full,
/// the run fails and leaves no state that goes on past alerts nobody got (it saved first and
/// wrote after; found by a review helper).
#[test]
fn command_saves_no_state_when_its_alerts_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    // One denial: its alert fits the output buffer, written only at the end.
    let log = dir.path().join("audit.log");
    std::fs::write(
        &log,
        "type=AVC msg=audit(1700000000.000:1): apparmor=\"DENIED\" operation=\"open\" profile=\"/usr/bin/x\" name=\"/etc/x\" pid=42 comm=\"x\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0\n",
    )
    .unwrap();
    let state = dir.path().join("state.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_armorwatch"))
        .arg("correlate")
        .arg("--state")
        .arg(&state)
        .arg(&log)
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        !state.exists(),
        "state saved for alerts that were not written"
    );
}

#[test]
fn command_keeps_incidents_across_runs_with_a_state_file() {
    let dir = tempfile::tempdir().unwrap();
    // split the log between two runs at an AppArmor record near the middle
    let lines: Vec<&str> = LOADGEN.lines().collect();
    let cut = (lines.len() / 2..lines.len())
        .find(|i| lines[*i].starts_with("type=AVC"))
        .unwrap();
    let first = dir.path().join("first.log");
    let second = dir.path().join("second.log");
    std::fs::write(&first, lines[..cut].join("\n") + "\n").unwrap();
    std::fs::write(&second, lines[cut..].join("\n") + "\n").unwrap();
    let state = dir.path().join("state.json");
    let state_arg = state.to_str().unwrap();
    let common = [
        "--host",
        "h",
        "--window-secs",
        "30",
        "--max-alerts-per-minute",
        "0",
    ];

    let mut args = common.to_vec();
    args.extend(["--state", state_arg, first.to_str().unwrap()]);
    let (a, _) = run_cli(&args);
    assert!(state.exists());
    assert!(
        !dir.path().join("state.tmp").exists(),
        "temporary file left behind"
    );
    let opened_first: std::collections::HashSet<String> = a
        .iter()
        .filter(|v| v["type"] == "incident.opened")
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(!opened_first.is_empty());

    let mut args = common.to_vec();
    args.extend(["--state", state_arg, second.to_str().unwrap()]);
    let (b, stderr) = run_cli(&args);
    assert!(stderr.contains("armorwatch correlate:"), "{stderr}");
    // incidents still open at the restart continue: updated or closed, never opened again
    let continued: Vec<&serde_json::Value> = b
        .iter()
        .filter(|v| opened_first.contains(v["id"].as_str().unwrap_or("")))
        .collect();
    assert!(
        !continued.is_empty(),
        "no incident continued across the restart"
    );
    for v in continued {
        assert_ne!(v["type"], "incident.opened", "{v}");
        assert!(
            v["total"].as_u64().unwrap() > v["count"].as_u64().unwrap()
                || v["seq"].as_u64().unwrap() > 1
        );
    }
    // without --state, end of input closes everything
    let (c, _) = run_cli(&["--host", "h", first.to_str().unwrap()]);
    let opened = c.iter().filter(|v| v["type"] == "incident.opened").count();
    let closed = c.iter().filter(|v| v["type"] == "incident.closed").count();
    assert_eq!(opened, closed);
    assert!(
        c.iter()
            .filter(|v| v["type"] == "incident.closed")
            .all(|v| v["reason"] == "end_of_input" || v["reason"] == "quiet")
    );
}

#[test]
fn command_rejects_bad_noise_files_with_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[rule]]\nname = \"x\"\nprofiel = \"y\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_armorwatch"))
        .args(["correlate", "--noise", bad.to_str().unwrap(), "/dev/null"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("profiel"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------- hostile values

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[/a-z0-9@{}*?\\[\\]\\\\. \n\r\t\u{1b}<>&\"'-]{0,80}",
        Just("/proc/1/task/2/fd/3".to_owned()),
        Just("/home/\u{202e}evil/\n/.ssh/id".to_owned()),
        Just("{".repeat(300)),
        Just("/".repeat(500) + &"9".repeat(500)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever the log says, the correlator neither panics nor emits an alert outside the
    /// schema, and the hostile value survives as data.
    #[test]
    fn hostile_field_values_stay_data(
        values in prop::collection::vec(hostile_string(), 6),
        proto in 0usize..5,
    ) {
        static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
        let validator = VALIDATOR.get_or_init(|| {
            jsonschema::validator_for(&serde_json::from_str(SCHEMA).unwrap()).unwrap()
        });
        let mut e = prototypes()[proto].clone();
        for (i, key) in ["profile", "name", "denied_mask", "comm", "capname", "info"].iter().enumerate() {
            e.fields.set(key, &values[i]);
        }
        let mut c = Correlator::new(config());
        let mut out = Vec::new();
        c.push(e.clone(), 1_700_000_000_000, &mut out);
        c.push(e, 1_700_000_000_001, &mut out);
        c.flush_all(1_700_000_000_002, &mut out);
        prop_assert!(!out.is_empty());
        // What ships: the alerts through the file sink, read back line by line.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let mut w = armorwatch::sinks::file::FileWriter::open(&armorwatch::sinks::config::FileSpec {
            path: path.clone(),
            content: armorwatch::sinks::config::Content::Alerts,
            max_size_bytes: None,
            max_files: 1,
        })
        .unwrap();
        let texts: Vec<String> = out.iter().map(|a| serde_json::to_string(a).unwrap()).collect();
        w.write_lines(texts.iter().map(String::as_str)).unwrap();
        let written = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        prop_assert_eq!(lines.len(), out.len(), "one alert per line: {:?}", written);
        for (a, line) in out.iter().zip(&lines) {
            let json = serde_json::to_value(a).unwrap();
            prop_assert!(validator.is_valid(&json), "{json:#}");
            let back: serde_json::Value = serde_json::from_str(line).unwrap();
            prop_assert_eq!(back, json);
        }
        prop_assert_eq!(out[0].key.as_ref().unwrap().profile.as_str(), values[0].as_str());
    }
}

/// A record stamped in 2100 (corrupt or forged) does not move log time: without the check, the
/// next record's incident was closed as 77 years quiet and opened again. `correlate` and
/// `replay` (the daemon's pipeline) alike.
#[test]
fn a_far_future_stamp_does_not_move_log_time() {
    let dir = tempfile::tempdir().unwrap();
    let avc = |stamp: &str, serial: u32, profile: &str| {
        format!(
            "type=AVC msg=audit({stamp}:{serial}): apparmor=\"DENIED\" operation=\"open\" profile=\"{profile}\" name=\"/etc/x\" pid=42 comm=\"x\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0\n"
        )
    };
    let log = dir.path().join("audit.log");
    let text = avc("1700000000.000", 1, "/usr/bin/x")
        + &avc("4102444800.000", 2, "/usr/bin/y")
        + &avc("1700000010.000", 3, "/usr/bin/x");
    std::fs::write(&log, text).unwrap();
    let check = |alerts: &[serde_json::Value], what: &str| {
        let of_x = |t: &str| {
            alerts
                .iter()
                .filter(|a| a["type"] == t && a["event"]["profile"] == "/usr/bin/x")
                .collect::<Vec<_>>()
        };
        assert_eq!(of_x("incident.opened").len(), 1, "{what}: {alerts:#?}");
        let closed = of_x("incident.closed");
        assert_eq!(closed.len(), 1, "{what}");
        assert_eq!(closed[0]["total"], 2, "{what}");
    };

    let (alerts, _) = run_cli(&[log.to_str().unwrap()]);
    check(&alerts, "correlate");

    let sink = dir.path().join("alerts.jsonl");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[state]\ndir = {:?}\n[sources.audit_log]\npath = {:?}\n[profiles]\nenabled = false\n\
             [sinks.alerts]\ntype = \"file\"\npath = {:?}\n",
            dir.path().join("state"),
            log,
            sink
        ),
    )
    .unwrap();
    run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_armorwatch"))
            .args(["replay", "--config"])
            .arg(&config),
    );
    let alerts: Vec<serde_json::Value> = std::fs::read_to_string(&sink)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    check(&alerts, "replay");

    // The first record the far-future one: held until a time is reached, not counted at 0 (its
    // incident was closed as 56 years quiet by the next record).
    let first = dir.path().join("first.log");
    let text = avc("4102444800.000", 1, "/usr/bin/x")
        + &avc("1700000000.000", 2, "/usr/bin/x")
        + &avc("1700000010.000", 3, "/usr/bin/x");
    std::fs::write(&first, text).unwrap();
    let count = |alerts: &[serde_json::Value], key: &str, value: &str| {
        alerts.iter().filter(|a| a[key] == value).count()
    };
    let (alerts, _) = run_cli(&[first.to_str().unwrap()]);
    assert_eq!(count(&alerts, "type", "incident.opened"), 1, "{alerts:#?}");

    // A log whose writer's clock ran two days ahead of this machine's is believed from its
    // second record on: a 27-hour gap in it closes the incident (seen one record late).
    let ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2 * 86_400;
    let stamps = [ahead, ahead + 10, ahead + 27 * 3600, ahead + 27 * 3600 + 1];
    let text: String = stamps
        .iter()
        .zip(1..)
        .map(|(t, serial)| avc(&format!("{t}.000"), serial, "/usr/bin/x"))
        .collect();
    let ahead_log = dir.path().join("ahead.log");
    std::fs::write(&ahead_log, text).unwrap();
    let (alerts, _) = run_cli(&[ahead_log.to_str().unwrap()]);
    let opened = count(&alerts, "type", "incident.opened");
    let quiet = count(&alerts, "reason", "quiet");
    assert_eq!((opened, quiet), (2, 1), "{alerts:#?}");
}

/// Pushes and ticks, for the crash property below.
fn crash_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0usize..5, 0u8..6, 0u64..30_000).prop_map(|(p, v, dt)| Step::Push(p, v, dt)),
        2 => (0u64..200_000).prop_map(Step::Tick),
    ]
}

/// Run `steps` from index `from` on: each at `time(i, its own time)`. Step `i`'s record has
/// audit serial `i + 1`, so records read again are the same records.
fn run_steps(
    c: &mut Correlator,
    steps: &[(Step, u64)],
    range: std::ops::Range<usize>,
    time: impl Fn(usize, u64) -> u64,
    out: &mut Vec<Alert>,
) {
    let protos = prototypes();
    for i in range {
        let (step, at) = &steps[i];
        let now = time(i, *at);
        match step {
            Step::Push(p, v, _) => {
                let mut e = protos[*p].clone();
                if let Some(name) = e.fields.get("name").map(str::to_string)
                    && *p != 4
                {
                    e.fields.set("name", &format!("{name}{}", v % 3));
                }
                if let Some(a) = e.audit.as_mut() {
                    a.serial = i as u64 + 1;
                }
                c.push(e, now, out);
            }
            _ => c.tick(now, out),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A kill -9 between two saves: the state of the last save is restored, the records since
    /// are read again, and the alerts made after the save come back as sent
    /// (`sent_after_save`). Read again later (the daemon's clock moved on), an alert under an
    /// `id:seq` that was already sent says the same as that one (a receiver dropping
    /// duplicates by key loses nothing); read again at the same times, the alerts are the
    /// same ones under the same keys. Before `sent_after_save`, an incident's next alert took
    /// the `seq` of an update sent after the save, with other counts.
    #[test]
    fn a_crash_after_a_save_never_reuses_an_id_seq_for_other_content(
        raw in prop::collection::vec(crash_step(), 2..80),
        save_at in 0usize..80,
        crash_at in 0usize..80,
        delay in prop_oneof![Just(0u64), 1u64..900_000],
        window_s in 1u64..400,
        flood_cap in 0u32..4,
        open_cap in 1usize..6,
    ) {
        let cfg = || Config {
            max_alerts_per_minute: flood_cap,
            max_open_incidents: open_cap,
            window_ms: window_s * 1000,
            ..config()
        };
        let mut now = 1_800_000_000_000u64;
        let steps: Vec<(Step, u64)> = raw
            .into_iter()
            .map(|s| {
                now += match s { Step::Push(_, _, dt) | Step::Tick(dt) => dt, _ => 0 };
                (s, now)
            })
            .collect();
        let n = steps.len();
        let save_at = save_at % n;
        let crash_at = save_at + crash_at % (n - save_at + 1);

        let mut before = Vec::new();
        let mut c = Correlator::new(cfg());
        run_steps(&mut c, &steps, 0..save_at, |_, t| t, &mut before);
        let saved = serde_json::to_string(&c.snapshot()).unwrap();
        let mut after_save = Vec::new();
        run_steps(&mut c, &steps, save_at..crash_at, |_, t| t, &mut after_save);
        let sent: Vec<_> = after_save
            .iter()
            .map(|a| armorwatch::correlate::sent::SentSeq {
                id: a.id.clone(),
                seq: a.seq,
                digest: a.content_digest(),
            })
            .collect();

        let mut c = Correlator::restore(serde_json::from_str(&saved).unwrap(), cfg()).unwrap();
        c.sent_after_save(sent);
        let mut again = Vec::new();
        let crash_time = if crash_at > 0 { steps[crash_at - 1].1 } else { steps[0].1 };
        if delay == 0 {
            // Read again at the times of the first reading: the same alerts, the same keys.
            run_steps(&mut c, &steps, save_at..crash_at, |_, t| t, &mut again);
            let key = |a: &Alert| (a.idempotency_key(), a.content_digest());
            let first: Vec<_> = after_save.iter().map(key).collect();
            let second: Vec<_> = again.iter().map(key).collect();
            prop_assert_eq!(first, second);
        } else {
            // The records since the save come in at once after the restart, the rest at their
            // pace after it.
            let restart = crash_time + delay;
            run_steps(&mut c, &steps, save_at..crash_at, |_, _| restart, &mut again);
            run_steps(&mut c, &steps, crash_at..n, |_, t| restart + (t - crash_time), &mut again);
            c.flush_all(restart + (steps[n - 1].1 - crash_time), &mut again);
        }
        let mut said: HashMap<String, (u64, String)> = HashMap::new();
        for a in before.iter().chain(&after_save).chain(&again) {
            let content = (a.content_digest(), format!("{} count {} total {}", a.alert_type.as_str(), a.count, a.total));
            if let Some(first) = said.get(&a.idempotency_key()) {
                prop_assert_eq!(
                    first.0, content.0,
                    "{} was {} and then {}", a.idempotency_key(), first.1, content.1
                );
            } else {
                said.insert(a.idempotency_key(), content);
            }
        }
    }
}

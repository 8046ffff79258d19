//! Parser tests: AppArmor's own libapparmor corpus field by field, negatives, real kernel lines,
//! golden JSON, and robustness on arbitrary bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};

use armorwatch::event::{Event, Kind, Source};
use armorwatch::parse::{Output, Parser, parse_text};

use proptest::prelude::*;
use serde_json::Value;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn outputs(input: &str) -> Vec<Output> {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    for (i, line) in input.lines().enumerate() {
        parser.push_line(line, &Source::Stdin { line: i as u64 + 1 }, &mut out);
    }
    parser.finish(&mut out);
    out
}

fn events(input: &str) -> Vec<Event> {
    outputs(input)
        .into_iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(*e),
            _ => None,
        })
        .collect()
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Denied => "AA_RECORD_DENIED",
        Kind::Allowed => "AA_RECORD_ALLOWED",
        Kind::Audit => "AA_RECORD_AUDIT",
        Kind::Status => "AA_RECORD_STATUS",
        Kind::Hint => "AA_RECORD_HINT",
        Kind::Error => "AA_RECORD_ERROR",
        Kind::Killed => "AA_RECORD_KILLED",
        Kind::Auto => "AA_RECORD_AUTO",
    }
}

/// Our value for one of libapparmor's field names. libapparmor renames many fields (and negates
/// `error`); this is the mapping.
fn ours(e: &Event, key: &str) -> Option<String> {
    let f = |k: &str| e.field(k).map(str::to_string);
    let stamp = e.audit.as_ref();
    match key {
        "event" => Some(kind_name(e.kind).to_string()),
        "audit_id" => stamp.map(|s| format!("{}.{:03}:{}", s.epoch, s.millis, s.serial)),
        "epoch" => stamp.map(|s| s.epoch.to_string()),
        "audit_sub_id" => stamp.map(|s| s.serial.to_string()),
        "requested_mask" => e.requested().map(str::to_string),
        "denied_mask" => e.denied().map(str::to_string),
        "peer_profile" => f("peer_profile")
            .or_else(|| f("peer_label"))
            .or_else(|| f("tcontext")),
        "net_family" => f("family"),
        "net_sock_type" => f("sock_type"),
        // libapparmor prints protocol numbers as names (getprotobynumber); records hold numbers.
        "net_protocol" => f("protocol").map(|p| match p.as_str() {
            "0" => "ip".to_string(),
            "6" => "tcp".to_string(),
            "17" => "udp".to_string(),
            other if other.bytes().all(|b| b.is_ascii_digit()) => format!("unknown({other})"),
            other => other.to_string(),
        }),
        // libapparmor calls the transition target `name2`, and the capability name `name`.
        "name2" => f("name2").or_else(|| f("target")),
        "name" => f("name").or_else(|| f("capname")),
        "profile" => e.profile().map(str::to_string),
        "net_local_port" => f("lport").or_else(|| f("src")),
        "net_local_addr" => f("laddr").or_else(|| f("saddr")),
        "net_foreign_port" => f("fport").or_else(|| f("dest")),
        "net_foreign_addr" => f("faddr").or_else(|| f("daddr")),
        "net_addr" => f("addr"),
        "dbus_bus" => f("bus"),
        "dbus_path" => f("path"),
        "dbus_interface" => f("interface"),
        "dbus_member" => f("member").or_else(|| f("method")),
        "error_code" => f("error").map(|v| v.trim_start_matches('-').to_string()),
        "fs_type" => f("fstype"),
        "src_name" => f("srcname"),
        other => f(other),
    }
}

fn json_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Cases where armorwatch deliberately differs from libapparmor, with the reason.
fn deliberate_difference(name: &str, key: &str) -> Option<&'static str> {
    match (name, key) {
        // libapparmor reports `comm` for dbus records from the `exe=` of the dbus-daemon's
        // continuation; armorwatch keeps `exe` as `exe` and has no `comm` (the record has none).
        (n, "comm") if n.starts_with("testcase_dbus_") => Some("dbus exe is not comm"),
        // libapparmor keeps the requested mask of dbus records as `mask`; so do we, via requested().
        _ => None,
    }
}

/// Cases libapparmor rejects (AA_RECORD_INVALID) that armorwatch parses on purpose.
fn accepted_on_purpose(name: &str) -> Option<&'static str> {
    match name {
        // `target=` is garbage hex from a kernel bug (LP: #1689667); the rest of the record is a
        // valid ptrace denial, and dropping it would hide a real denial.
        "ptrace_garbage_lp1689667_2" => Some("kernel garbage in target= only"),
        // `grep -r` output (`audit.log:type=AVC …`): a file-name prefix before a valid record.
        "status-filesystem-enabled" => Some("grep file prefix"),
        _ => None,
    }
}

#[test]
fn libapparmor_corpus_field_by_field() {
    let text = std::fs::read_to_string(fixture("libapparmor/test_multi.jsonl")).unwrap();
    let mut failures = Vec::new();
    let mut cases = 0;
    let mut compared = 0;
    for line in text.lines() {
        let case: Value = serde_json::from_str(line).unwrap();
        cases += 1;
        let name = case["name"].as_str().unwrap();
        let input = case["input"].as_str().unwrap();
        let expected = case["expected_fields"].as_object().unwrap();
        let ev = events(input);
        let invalid = expected["event"] == "AA_RECORD_INVALID";
        if invalid && accepted_on_purpose(name).is_none() {
            if !ev.is_empty() {
                failures.push(format!(
                    "{name}: libapparmor rejects it, we produced {ev:?}"
                ));
            }
            continue;
        }
        if ev.len() != 1 {
            failures.push(format!("{name}: expected one event, got {}", ev.len()));
            continue;
        }
        let e = &ev[0];
        for (key, want) in expected {
            if invalid && key == "event" {
                continue;
            }
            if deliberate_difference(name, key).is_some() {
                continue;
            }
            compared += 1;
            let got = ours(e, key);
            // libapparmor stores numbers as integers (`task=09876543` → 9876543).
            let numeric_equal = want.as_i64().is_some()
                && got.as_deref().and_then(|g| g.parse::<i64>().ok()) == want.as_i64();
            let want = json_text(want);
            if !numeric_equal && got.as_deref() != Some(want.as_str()) {
                failures.push(format!("{name}: {key}: want {want:?}, got {got:?}"));
            }
        }
    }
    assert_eq!(cases, 179, "the corpus has 179 cases");
    assert!(compared > 1500, "compared only {compared} fields");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn negatives_produce_no_event() {
    let text = std::fs::read_to_string(fixture("negatives.txt")).unwrap();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        n += 1;
        let ev = events(line);
        assert!(ev.is_empty(), "negative produced an event: {line}");
    }
    assert!(n >= 5);
}

fn parse_file(rel: &str) -> (Vec<Output>, String) {
    let text = std::fs::read_to_string(fixture(rel)).unwrap();
    let mut parser = Parser::new();
    let mut out = Vec::new();
    let path: std::sync::Arc<str> = std::sync::Arc::from(format!("tests/fixtures/{rel}"));
    for (i, line) in text.lines().enumerate() {
        let source = Source::File {
            path: path.clone(),
            line: i as u64 + 1,
        };
        parser.push_line(line, &source, &mut out);
    }
    parser.finish(&mut out);
    (out, text)
}

/// Compare with `tests/golden/NAME`; `UPDATE_GOLDEN=1` rewrites it.
fn check_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    if expected != actual {
        for (i, (a, b)) in expected.lines().zip(actual.lines()).enumerate() {
            assert_eq!(a, b, "{name}: first difference at line {}", i + 1);
        }
        assert_eq!(
            expected.lines().count(),
            actual.lines().count(),
            "{name}: line count"
        );
    }
}

#[test]
fn every_form_golden_json() {
    let (out, _) = parse_file("forms/all-forms.log");
    let mut json = String::new();
    let mut malformed = Vec::new();
    let mut losses = 0;
    for o in &out {
        match o {
            Output::Event(e) => {
                json.push_str(&serde_json::to_string(e).unwrap());
                json.push('\n');
            }
            Output::Malformed(m) => malformed.push(m.clone()),
            Output::Loss(_) => losses += 1,
        }
    }
    check_golden("all-forms.jsonl", &json);
    assert_eq!(losses, 1);
    assert_eq!(malformed.len(), 1, "{malformed:?}");
    assert!(matches!(malformed[0].source, Source::File { line: 44, .. }));
}

#[test]
fn every_form_fields() {
    let (out, _) = parse_file("forms/all-forms.log");
    let ev: Vec<&Event> = out
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(&**e),
            _ => None,
        })
        .collect();
    assert_eq!(ev.len(), 32);
    let by_serial = |serial: u64| {
        ev.iter()
            .find(|e| e.audit.as_ref().is_some_and(|a| a.serial == serial))
            .unwrap_or_else(|| panic!("no event with serial {serial}"))
    };

    // auditd with node= and ENRICHED, assembled with SYSCALL/CWD/PATH/PROCTITLE up to EOE.
    let e = ev[0];
    assert_eq!(e.audit.as_ref().unwrap().node.as_deref(), Some("web1"));
    assert_eq!(e.host.as_deref(), Some("web1"));
    assert_eq!(e.interpreted.as_ref().unwrap().get("FSUID"), Some("root"));
    assert_eq!(
        e.field("ouid"),
        Some("0"),
        "ENRICHED text must not leak into fields"
    );
    let p = e.process.as_ref().unwrap();
    assert_eq!(p.cwd.as_deref(), Some("/root dir"));
    assert_eq!(p.subj.as_deref(), Some("/usr/bin/containerd (enforce)"));
    assert_eq!(p.key.as_deref(), Some("aa"));
    assert_eq!(
        p.cmdline.as_ref().unwrap(),
        &[
            "/usr/bin/containerd",
            "--config",
            "/etc/containerd/config.toml"
        ]
    );
    assert_eq!(p.paths.len(), 1);
    assert_eq!(e.raw.len(), 1, "companions go to `process`, not `raw`");
    // Same serial on another node: a separate event without companions.
    assert_eq!(ev[1].audit.as_ref().unwrap().node.as_deref(), Some("web2"));
    assert!(ev[1].process.is_none());
    assert_eq!(ev[1].field("capname"), Some("net_admin"));

    // Kernel log forms.
    assert_eq!(by_serial(5).name(), Some("/var/log/msmtp.log"));
    assert_eq!(by_serial(6).operation(), Some("mknod"));
    assert_eq!(by_serial(10).field("capname"), Some("chown"));
    assert_eq!(by_serial(11).host.as_deref(), Some("deb12-host"));
    assert_eq!(by_serial(11).class(), Some("net"));
    assert_eq!(by_serial(13).field("signal"), Some("term"));
    assert_eq!(by_serial(14).class(), Some("ptrace"));
    assert_eq!(
        by_serial(15).field("flags"),
        Some("rw, nosuid, nodev, remount, bind")
    );
    assert_eq!(by_serial(17).kind, Kind::Allowed);

    // ausearch -i: interpreted values, local-time stamp, companions assembled.
    let e = by_serial(19);
    assert_eq!(e.time().as_deref(), Some("2026-11-25T16:18:36.907Z"));
    assert_eq!(
        e.field("info"),
        Some("Failed name lookup - disconnected path")
    );
    assert_eq!(e.field("fsuid"), Some("root"));
    let p = e.process.as_ref().unwrap();
    assert_eq!(p.exit.as_deref(), Some("EACCES(Permission denied)"));
    assert_eq!(p.exe.as_deref(), Some("/usr/local/bin/busybox-aa"));

    // dbus USER_AVC: inner fields, outer fields, continuation joined.
    let e = by_serial(181);
    assert_eq!(e.pid(), Some(2_341_027));
    assert_eq!(e.outer.as_ref().unwrap().get("pid"), Some("1300"));
    assert_eq!(e.outer.as_ref().unwrap().get("subj"), Some("unconfined"));
    assert_eq!(e.field("exe"), Some("/usr/bin/dbus-daemon"));
    assert_eq!(e.profile(), Some("snap.chromium.chromium"));
    assert_eq!(e.denied(), Some("receive"));
    assert_eq!(e.class(), Some("dbus"));
    let e = by_serial(866);
    assert_eq!(e.audit.as_ref().unwrap().record_type, 1107);
    assert_eq!(e.field("sauid"), Some("101"));
    assert_eq!(e.host.as_deref(), Some("deb12-host"));
    let dbus_syslog: Vec<_> = ev
        .iter()
        .filter(|e| e.audit.is_none() && e.field("bus").is_some())
        .collect();
    assert_eq!(dbus_syslog.len(), 2);
    assert_eq!(dbus_syslog[0].host.as_deref(), Some("dbusdev-saucy-amd64"));
    assert_eq!(dbus_syslog[1].profile(), Some("/usr/bin/evil"));

    // Bare text with a missing space; zero stamp with hex values.
    let bare = ev.iter().find(|e| e.profile() == Some("bare")).unwrap();
    assert_eq!(bare.name(), Some("/tmp/"));
    assert!(bare.audit.is_none() && bare.time().is_none());
    let zero = ev
        .iter()
        .find(|e| e.profile() == Some("test space"))
        .unwrap();
    assert!(zero.time().is_none());
    assert_eq!(zero.name(), Some("/tmp/does not exist"));
    assert_eq!(zero.comm(), Some("my prog.sh"));

    // Newer classes.
    assert_eq!(by_serial(78).class(), Some("namespace"));
    assert_eq!(by_serial(78).field("target"), Some("unprivileged_userns"));
    assert_eq!(by_serial(79).requested(), Some("sqpoll"));
    assert_eq!(by_serial(262).requested(), Some("read create"));
    assert_eq!(by_serial(263).class(), Some("sysv_mqueue"));
    assert_eq!(
        by_serial(477).field("peer_addr"),
        Some("@/tmp/.X11-unix/X0")
    );
    assert_eq!(by_serial(477).field("addr"), Some("none"));
    assert_eq!(by_serial(478).field("daddr"), Some("93.184.216.34"));

    // Transitions and the other kinds.
    assert_eq!(by_serial(88586).field("target"), Some("php-fpm//webapp"));
    assert_eq!(by_serial(88586).operation(), Some("change_profile"));
    assert_eq!(by_serial(218).kind, Kind::Allowed);
    assert_eq!(
        by_serial(3686).field("target"),
        Some("/home/cb/bin/hello.sh//null-/usr/bin/rm")
    );
    assert_eq!(by_serial(4).kind, Kind::Status);
    assert_eq!(by_serial(4).class(), Some("policy"));
    assert_eq!(by_serial(27382).kind, Kind::Hint);
    assert_eq!(by_serial(27382).audit.as_ref().unwrap().record_type, 1504);
    assert_eq!(by_serial(272335).kind, Kind::Error);
    assert_eq!(by_serial(8).kind, Kind::Audit);
    assert_eq!(by_serial(8).denied(), None);
    assert_eq!(by_serial(9).kind, Kind::Killed);
}

#[test]
fn single_record_text_parses() {
    let out = parse_text(
        r#"audit: type=1400 audit(1795623516.423:6): apparmor="DENIED" operation="mknod" profile="msmtp" name="/var/log/msmtp.log" pid=110 comm="msmtp" requested_mask="c" denied_mask="c" fsuid=0 ouid=0"#,
        &Source::Text,
    );
    assert_eq!(out.len(), 1);
    assert!(matches!(&out[0], Output::Event(e) if e.profile() == Some("msmtp")));
}

#[test]
fn parse_command_streams_json_and_summarises() {
    let bin = env!("CARGO_BIN_EXE_armorwatch");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.log");
    let out = std::process::Command::new(bin)
        .arg("parse")
        .arg(fixture("forms/all-forms.log"))
        .arg(&missing)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stdout.lines().count(), 32);
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["schema"], 1);
    }
    assert!(stderr.contains("missing.log"), "{stderr}");
    assert!(stderr.contains("1 malformed"), "{stderr}");
    assert!(stderr.contains("all-forms.log:44"), "{stderr}");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unreadable file is reported in the status"
    );

    let strict = std::process::Command::new(bin)
        .args(["parse", "--strict"])
        .arg(fixture("forms/all-forms.log"))
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1));

    let clean = std::process::Command::new(bin)
        .args(["parse", "--strict"])
        .arg(fixture("negatives.txt"))
        .output()
        .unwrap();
    assert_eq!(clean.status.code(), Some(0));
    assert!(clean.stdout.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes never panic the parser, and it never produces more events than lines.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&data);
        let out = outputs(&text);
        prop_assert!(out.len() <= text.lines().count() + 1);
    }

    /// Record-shaped noise: fragments of real records in random order.
    #[test]
    fn record_shaped_noise_never_panics(parts in proptest::collection::vec(
        prop_oneof![
            Just("type=AVC msg=audit(".to_string()),
            Just("audit(1.2:3): ".to_string()),
            Just("apparmor=\"DENIED\" ".to_string()),
            Just("apparmor=".to_string()),
            Just("msg='".to_string()),
            Just("'".to_string()),
            Just("\"".to_string()),
            Just(" exe=\"/x\"".to_string()),
            Just("\n".to_string()),
            Just("\u{1d}".to_string()),
            Just("type=SYSCALL msg=audit(1.2:3): ".to_string()),
            Just("type=EOE msg=audit(1.2:3): ".to_string()),
            Just("5,1,2,-;".to_string()),
            Just("name=2F78 ".to_string()),
            "[a-z_]{1,8}=[ -~]{0,12}".prop_map(|s| s),
            "[0-9A-F]{0,9}".prop_map(|s| s),
        ],
        0..40,
    )) {
        let text: String = parts.concat();
        let out = outputs(&text);
        prop_assert!(out.len() <= text.lines().count() + 1);
    }
}

#[test]
fn memory_is_bounded_by_the_assembly_window() {
    // A stream of AVCs whose companions never arrive: pending events are bounded by the window.
    let mut parser = Parser::with_grace(8);
    let mut out = Vec::new();
    for serial in 1..=10_000u64 {
        let line = format!(
            r#"type=AVC msg=audit(1700000000.000:{serial}): apparmor="DENIED" operation="open" profile="p" name="/x" pid=1 comm="c" requested_mask="r" denied_mask="r" fsuid=0 ouid=0"#
        );
        parser.push_line(&line, &Source::Text, &mut out);
        assert!(
            serial - (out.len() as u64) <= 10,
            "pending grew at serial {serial}"
        );
    }
    parser.finish(&mut out);
    assert_eq!(out.len(), 10_000);
}

/// `tests/fixtures/kernel/expected.tsv`: serial, apparmor, operation, profile, name, denied, as
/// written in the kernel's lines (hex stays hex).
fn expected_kernel_rows() -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(fixture("kernel/expected.tsv")).unwrap();
    text.lines()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// The kernel hex-encodes these values (see tests/fixtures/kernel/README.md).
fn unhex(v: &str) -> String {
    let is_hex = v.len() % 2 == 0
        && v.len() >= 8
        && v.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
    if !is_hex {
        return v.to_string();
    }
    let bytes: Vec<u8> = (0..v.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&v[i..i + 2], 16).unwrap())
        .collect();
    String::from_utf8(bytes).unwrap()
}

fn row_of(e: &Event) -> Vec<String> {
    let d = |v: Option<&str>| v.unwrap_or("-").to_string();
    vec![
        e.audit.as_ref().unwrap().serial.to_string(),
        e.field("apparmor").unwrap().to_string(),
        d(e.operation()),
        d(e.profile()),
        d(e.name()),
        d(e.field("denied_mask").or_else(|| e.field("denied"))),
    ]
}

fn expected_decoded() -> Vec<Vec<String>> {
    expected_kernel_rows()
        .into_iter()
        .map(|r| r.iter().map(|v| unhex(v)).collect())
        .collect()
}

#[test]
fn real_kernel_dmesg_and_kmsg() {
    let want = expected_decoded();
    assert_eq!(want.len(), 38);
    for file in ["kernel/dmesg.log", "kernel/kmsg.raw"] {
        let (out, _) = parse_file(file);
        let mut got = Vec::new();
        for o in &out {
            match o {
                Output::Event(e) => got.push(row_of(e)),
                Output::Malformed(m) => panic!("{file}: malformed {m:?}"),
                Output::Loss(_) => {}
            }
        }
        assert_eq!(got, want, "{file}");
    }
}

#[test]
fn real_kernel_netlink_records_match_dmesg() {
    let want = expected_decoded();
    let (out, _) = parse_file("kernel/netlink.txt");
    let got: Vec<Vec<String>> = out
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(row_of(e)),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 30);
    for row in &got {
        assert!(want.contains(row), "netlink record not in dmesg: {row:?}");
    }
}

#[test]
fn real_kernel_audit1_companions_are_assembled() {
    let (out, _) = parse_file("kernel/audit1-dmesg.log");
    let events: Vec<&Event> = out
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(&**e),
            _ => None,
        })
        .collect();
    let denials: Vec<&&Event> = events.iter().filter(|e| e.kind == Kind::Denied).collect();
    assert!(!denials.is_empty());
    for e in denials {
        let p = e
            .process
            .as_ref()
            .unwrap_or_else(|| panic!("no process: {e:?}"));
        assert_eq!(p.pid, e.pid(), "SYSCALL pid matches the AVC pid");
        assert!(p.exe.is_some() && p.syscall.is_some(), "{p:?}");
        assert!(p.cmdline.as_ref().is_some_and(|c| !c.is_empty()), "{p:?}");
    }
}

#[test]
fn real_journal_both_transports_agree() {
    let text = std::fs::read_to_string(fixture("kernel/journal.json")).unwrap();
    let mut kernel = Vec::new();
    let mut audit = Vec::new();
    for line in text.lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        let field = |k: &str| entry[k].as_str().unwrap_or_default().to_string();
        let source = Source::Journald {
            cursor: field("__CURSOR"),
            transport: field("_TRANSPORT"),
        };
        match field("_TRANSPORT").as_str() {
            "kernel" => {
                for o in parse_text(&field("MESSAGE"), &source) {
                    if let Output::Event(e) = o {
                        kernel.push(*e);
                    }
                }
            }
            "audit" => {
                let usec = field("_SOURCE_REALTIME_TIMESTAMP").parse().unwrap();
                let parsed = armorwatch::parse::parse_journal_audit(
                    &field("MESSAGE"),
                    field("_AUDIT_TYPE").parse().unwrap(),
                    field("_AUDIT_ID").parse().unwrap(),
                    usec,
                    &source,
                );
                if let Some(r) = parsed {
                    audit.push(*r.unwrap());
                }
            }
            other => panic!("unexpected transport {other}"),
        }
    }
    let want = expected_decoded();
    assert_eq!(kernel.iter().map(row_of).collect::<Vec<_>>(), want);
    assert_eq!(audit.iter().map(row_of).collect::<Vec<_>>(), want);
    // The same record through both transports has the same stamp: the cross-transport dedup key.
    for (k, a) in kernel.iter().zip(&audit) {
        let (ks, asm) = (k.audit.as_ref().unwrap(), a.audit.as_ref().unwrap());
        assert_eq!(
            (ks.epoch, ks.millis, ks.serial),
            (asm.epoch, asm.millis, asm.serial)
        );
        assert_eq!(k.fields, a.fields);
    }
}

/// The input of one case of libapparmor's corpus.
fn corpus_input(name: &str) -> String {
    let text = std::fs::read_to_string(fixture("libapparmor/test_multi.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|case| case["name"] == name)
        .and_then(|case| case["input"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// Regression: libapparmor's testcase_dbus_10 is a dbus USER_AVC first line without its
/// continuation. A live source never calls `finish`; its idle flush must release the line.
#[test]
fn regression_user_avc_without_continuation_is_released_by_the_idle_flush() {
    let input = corpus_input("testcase_dbus_10");
    let mut parser = Parser::new();
    let mut out = Vec::new();
    for line in input.lines() {
        parser.push_line(line, &Source::Text, &mut out);
    }
    assert!(out.is_empty());
    parser.flush_idle(&mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(!parser.has_pending());
}

/// Regression: two AVCs of one syscall share the serial; both get the SYSCALL, CWD and
/// PROCTITLE records, not only the newer one.
#[test]
fn regression_two_avcs_of_one_syscall_both_get_the_process() {
    let input = r#"type=AVC msg=audit(1700000001.100:500): apparmor="DENIED" operation="open" class="file" profile="p" name="/a" pid=10 comm="x" requested_mask="r" denied_mask="r" fsuid=0 ouid=0
type=AVC msg=audit(1700000001.100:500): apparmor="DENIED" operation="open" class="file" profile="p" name="/b" pid=10 comm="x" requested_mask="r" denied_mask="r" fsuid=0 ouid=0
type=SYSCALL msg=audit(1700000001.100:500): arch=c000003e syscall=257 success=no exit=-13 ppid=1 pid=10 auid=0 uid=0 ses=1 tty=pts0 comm="x" exe="/usr/bin/x" subj=p (enforce) key=(null)
type=CWD msg=audit(1700000001.100:500): cwd="/root"
type=PROCTITLE msg=audit(1700000001.100:500): proctitle=78002D61
type=EOE msg=audit(1700000001.100:500): 
"#;
    let ev = events(input);
    let names: Vec<_> = ev.iter().map(|e| e.name().map(str::to_string)).collect();
    assert_eq!(names, [Some("/a".to_string()), Some("/b".to_string())]);
    for e in &ev {
        let p = e
            .process
            .as_ref()
            .unwrap_or_else(|| panic!("{:?}", e.name()));
        assert_eq!(p.exe.as_deref(), Some("/usr/bin/x"));
        assert_eq!(p.cwd.as_deref(), Some("/root"));
        assert_eq!(
            p.cmdline.as_deref(),
            Some(&["x".to_string(), "-a".to_string()][..])
        );
    }
}

/// Regression: a dbus USER_AVC saved from /dev/kmsg has its newline before ` exe=` as `\x0a`
/// (the kernel escapes control bytes, bytes >= 0x7f and `\` there); it parses like the syslog
/// form of the same record.
#[test]
fn regression_kmsg_escapes_are_decoded() {
    let kmsg = r#"6,1234,5678,-;audit: type=1107 audit(1561053426.749:186): pid=640 uid=103 auid=4294967295 ses=4294967295 msg='apparmor="ALLOWED" operation="dbus_method_call"  bus="system" path="/org/freedesktop/systemd1" interface="org.freedesktop.systemd1.Manager" member="LookupDynamicUserByName" mask="send" name="org.freedesktop.systemd1" pid=20596 label="/tmp/apparmor-2.8.0/tests/regression/apparmor/dbus_service" peer_pid=1 peer_label="unconfined"\x0a                  exe="/usr/bin/dbus-daemon" sauid=103 hostname=? addr=? terminal=?'"#;
    let out = outputs(kmsg);
    assert_eq!(out.len(), 1, "{out:?}");
    let Output::Event(e) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(e.field("exe"), Some("/usr/bin/dbus-daemon"));
    let syslog = events(&corpus_input("testcase_dbus_09"));
    assert_eq!(syslog.len(), 1);
    assert_eq!(e.fields, syslog[0].fields);
    assert_eq!(e.outer, syslog[0].outer);
}

/// Regression: auditd's ENRICHED format appends `\x1d` and the interpreted fields to the
/// continuation line of a dbus USER_AVC; the continuation is still joined.
#[test]
fn regression_enriched_user_avc_keeps_its_continuation() {
    let input = "type=USER_AVC msg=audit(1375323372.644:157): pid=363 uid=102 auid=4294967295 ses=4294967295 subj=unconfined msg='apparmor=\"DENIED\" operation=\"dbus_method_call\"  bus=\"system\" path=\"/org/freedesktop/DBus\" interface=\"org.freedesktop.DBus\" member=\"Hello\" mask=\"send\" name=\"org.freedesktop.DBus\" pid=2833 label=\"/usr/bin/x\" peer_label=\"unconfined\"\n exe=\"/usr/bin/dbus-daemon\" sauid=102 hostname=? addr=? terminal=?'\x1dUID=\"messagebus\" AUID=\"unset\" SAUID=\"messagebus\"\n";
    let ev = events(input);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].field("exe"), Some("/usr/bin/dbus-daemon"));
    assert_eq!(ev[0].field("sauid"), Some("102"));
    let interpreted = ev[0].interpreted.as_ref().expect("interpreted fields");
    assert_eq!(interpreted.get("UID"), Some("messagebus"));
}

/// The JSON lines of `parse`, `correlate` and `explain --json` are read in terminals too: a
/// logged file name's C1 CSI (U+009B) and bidi override (U+202E) come out as `\uXXXX`, the
/// same JSON value, as `replay`, the file sink and `status --json` write them. They were
/// written raw.
#[test]
fn json_lines_of_the_one_shot_commands_are_safe_for_a_terminal() {
    let bin = env!("CARGO_BIN_EXE_armorwatch");
    let dir = tempfile::tempdir().unwrap();
    let name: String = "/tmp/\u{9b}31mRED\u{202e}"
        .bytes()
        .map(|b| format!("{b:02X}"))
        .collect();
    let log = dir.path().join("audit.log");
    std::fs::write(
        &log,
        format!(
            "type=AVC msg=audit(1700000000.123:5): apparmor=\"DENIED\" operation=\"open\" profile=\"/usr/bin/foo\" name={name} pid=1 comm=\"c\" requested_mask=\"r\" denied_mask=\"r\" fsuid=0 ouid=0\n"
        ),
    )
    .unwrap();
    let log = log.to_str().unwrap();
    let profiles = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/profiles/etc/apparmor.d"
    );
    for args in [
        vec!["parse", log],
        vec!["correlate", log],
        vec!["explain", "--json", "--profiles", profiles, "-"],
    ] {
        let out = std::process::Command::new(bin)
            .args(&args)
            .stdin(std::fs::File::open(log).unwrap())
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            stdout.contains("\\u009b31mRED\\u202e"),
            "{args:?}: {stdout}"
        );
        assert!(
            !stdout.contains('\u{9b}') && !stdout.contains('\u{202e}'),
            "{args:?}: {stdout}"
        );
        for line in stdout.lines() {
            serde_json::from_str::<Value>(line).unwrap();
        }
    }
}

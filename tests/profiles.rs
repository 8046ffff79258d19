//! Profile knowledge on real Debian profiles: the msmtp case end to end, near misses of every
//! verdict on other real profiles, the glob matcher cross-checked against apparmor_parser's
//! compiled DFA, the parser fed arbitrary bytes, and indexing speed.
//!
//! Fixtures: `tests/fixtures/profiles/etc/apparmor.d` (real Debian 12 files, see ATTRIBUTION.md).
//! apparmor_parser (Debian package `apparmor`) is needed for the compile checks and the DFA
//! cross-check; those tests print a message and skip when it is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use armorwatch::event::{Event, Source};
use armorwatch::parse::{Output, parse_text};
use armorwatch::profiles::explain::{Context, Explanation, Verdict};
use armorwatch::profiles::glob::{Glob, Vars, expand};
use armorwatch::profiles::suggest::CheckStatus;
use armorwatch::profiles::{
    Explainer, Index, Suggestion, alert_values, explain, loader, parser, render_text, system,
};

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/profiles/etc/apparmor.d")
}

fn fixture_index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let (tree, report) = loader::load_tree(&fixture_root()).expect("fixture tree");
        assert!(report.unreadable.is_empty(), "{:?}", report.unreadable);
        Index::build(&tree)
    })
}

fn event(record: &str) -> Event {
    let out = parse_text(record, &Source::Text);
    match out.into_iter().next() {
        Some(Output::Event(e)) => *e,
        other => panic!("not an event: {other:?}"),
    }
}

fn explain_fixture(record: &str) -> Explanation {
    explain(fixture_index(), &event(record), &Context::default())
}
/// The index of the profile tree under `root`.
fn index_of(root: &Path) -> Index {
    let (tree, _) = loader::load_tree(root).expect("tree");
    Index::build(&tree)
}

/// A copy of `root`'s file `name` in a new directory, with the suggestion's edit applied:
/// the directory and the edited text.
fn edited_copy(root: &Path, name: &str, s: &Suggestion) -> (tempfile::TempDir, String) {
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(root.join(name), copy.path().join(name)).unwrap();
    system::apply_edit(copy.path(), &s.edit, &s.rule).unwrap();
    let text = std::fs::read_to_string(copy.path().join(name)).unwrap();
    (copy, text)
}

/// The suggestion compiles with apparmor_parser in the tree under `root` (where it is here).
fn check_passes(root: &Path, s: &mut Suggestion, what: &str) {
    if parser_bin().is_some() {
        system::check_suggestion(root, s);
        assert_eq!(
            s.check,
            CheckStatus::Passed,
            "{what}: {:?}",
            s.check_message
        );
    }
}

fn parser_bin() -> Option<PathBuf> {
    let p = system::find_program("apparmor_parser");
    if p.is_none() {
        common::skip("apparmor_parser not installed (Debian package `apparmor`)");
    }
    p
}

const MSMTP_MKNOD: &str = r#"audit: type=1400 audit(1795623414.456:3): apparmor="DENIED" operation="mknod" profile="msmtp" name="/var/log/msmtp.log" pid=103 comm="msmtp" requested_mask="c" denied_mask="c" fsuid=0 ouid=0"#;
const MSMTP_OPEN: &str = r#"type=AVC msg=audit(1795623516.359:5): apparmor="DENIED" operation="open" profile="msmtp" name="/var/log/msmtp.log" pid=109 comm="msmtp" requested_mask="ac" denied_mask="ac" fsuid=0 ouid=0"#;

/// What the explainer's alert cache gives is what a fresh explanation gives; the suggestion's
/// compile check is applied per alert, cached entry or not; an entry in use survives the cache
/// turning over (two generations of two here).
#[test]
fn cached_alert_values_equal_a_fresh_explanation_and_take_each_check() {
    let (tree, _) = loader::load_tree(&fixture_root()).expect("fixture tree");
    let mut ex = Explainer::new(Index::build(&tree), 2);
    let ctx = Context::default();
    let msmtp = event(MSMTP_OPEN);
    let fresh = alert_values(&explain(fixture_index(), &msmtp, &ctx));
    assert_eq!(fresh.1["suggestion"]["check"], "skipped");
    assert_eq!(ex.alert_values(&msmtp, &ctx, None), fresh);
    assert_eq!(ex.alert_values(&msmtp, &ctx, None), fresh);
    assert_eq!(ex.stats(), (1, 1), "(hits, misses)");

    let passed = |s: &mut Suggestion| s.check = CheckStatus::Passed;
    let (profile, explanation) = ex.alert_values(&msmtp, &ctx, Some(&passed));
    assert_eq!(profile, fresh.0);
    assert_eq!(explanation["suggestion"]["check"], "passed");
    assert_eq!(explanation["suggestion"]["rule"], "/var/log/msmtp.log wk,");
    let mut without_check = explanation.clone();
    without_check["suggestion"]["check"] = "skipped".into();
    assert_eq!(without_check, fresh.1);
    // The check belongs to the alert, not to the cache.
    assert_eq!(ex.alert_values(&msmtp, &ctx, None), fresh);

    for n in 0..6 {
        let other = event(&MSMTP_OPEN.replace("/var/log/msmtp.log", &format!("/srv/{n}")));
        let (_, e) = ex.alert_values(&other, &ctx, None);
        assert_eq!(e["object"], format!("/srv/{n}"));
        assert_eq!(ex.alert_values(&msmtp, &ctx, None), fresh);
    }
    let (hits, misses) = ex.stats();
    assert_eq!(misses, 1 + 6, "the msmtp explanation was computed again");
    assert_eq!(hits, 3 + 6);
}

#[test]
fn msmtp_log_near_miss() {
    let root = fixture_root();
    for record in [MSMTP_MKNOD, MSMTP_OPEN] {
        let exp = explain_fixture(record);
        assert_eq!(exp.profile.name, "msmtp");
        let file = exp.profile.file.as_deref().expect("file");
        assert!(file.ends_with("/usr.bin.msmtp"), "{file}");
        assert_eq!(exp.profile.line, Some(5));
        assert!(exp.profile.notes.is_empty(), "{:?}", exp.profile.notes);
        let d = &exp.explanation;
        assert_eq!(d.verdict, Verdict::NoRuleMatches);
        assert_eq!(d.needed, "w");
        let top = &d.closest_rules[0];
        assert_eq!(top.rule, "/var/log/msmtp wk,");
        assert!(top.file.ends_with("/usr.bin.msmtp"));
        assert_eq!((top.line, top.column), (24, 3));
        assert!(top.reason.contains("`.log`"), "{}", top.reason);
        let s = d.suggestion.as_ref().expect("suggestion");
        assert_eq!(s.file, format!("{}/local/usr.bin.msmtp", root.display()));
        assert_eq!(s.rule, "/var/log/msmtp.log wk,");
        assert_eq!(
            s.reload,
            format!("apparmor_parser -r {}/usr.bin.msmtp", root.display())
        );
        // The text form: the rule's line and a caret right after `msmtp` (where `.log` starts).
        let text = render_text(&exp, fixture_index());
        assert!(
            text.contains("24 |   /var/log/msmtp            wk,"),
            "{text}"
        );
        let caret_line = text
            .lines()
            .find(|l| l.contains("^ the rule's pattern ends"))
            .expect("caret line");
        assert_eq!(
            caret_line.find('^'),
            Some("24 |   /var/log/msmtp".len()),
            "{text}"
        );
    }
}

/// The text output for a few cases, compared with `tests/fixtures/profiles/golden/*.txt`
/// (`UPDATE_GOLDEN=1` rewrites them). The fixture root is shown as `<root>`.
#[test]
fn golden_text_output() {
    let cases = [
        ("msmtp-log", MSMTP_MKNOD),
        (
            "msmtp-owner",
            r#"apparmor="DENIED" operation="open" profile="msmtp" name="/home/otis/.msmtprc" pid=1 comm="msmtp" requested_mask="r" denied_mask="r" fsuid=1000 ouid=0"#,
        ),
        (
            "httpd-hat",
            r#"apparmor="DENIED" operation="open" profile="/usr/sbin/httpd2-prefork//HANDLING_UNTRUSTED_INPUT" name="/var/log/apache2/ssl/access.log" pid=1 comm="httpd2-prefork" requested_mask="ac" denied_mask="ac" fsuid=33 ouid=33"#,
        ),
        (
            "man-deny-capability",
            r#"apparmor="DENIED" operation="capable" profile="/usr/bin/man" pid=114 comm="man" capability=1  capname="dac_override""#,
        ),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/profiles/golden");
    let root = fixture_root().display().to_string();
    for (name, record) in cases {
        let text = render_text(&explain_fixture(record), fixture_index()).replace(&root, "<root>");
        let file = dir.join(format!("{name}.txt"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&file, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", file.display()));
        assert_eq!(text, want, "{name}: output differs from {}", file.display());
    }
}

#[test]
fn msmtp_suggestion_compiles_with_apparmor_parser() {
    let Some(_) = parser_bin() else { return };
    let mut exp = explain_fixture(MSMTP_MKNOD);
    let s = exp.explanation.suggestion.as_mut().expect("suggestion");
    system::check_suggestion(&fixture_root(), s);
    assert_eq!(s.check, CheckStatus::Passed, "{:?}", s.check_message);
    // A broken rule must fail the same check (the check can fail).
    let mut bad = s.clone();
    bad.rule = "/var/log/msmtp.log wa,".into();
    system::check_suggestion(&fixture_root(), &mut bad);
    assert_eq!(bad.check, CheckStatus::Failed);
    assert!(
        bad.check_message
            .as_deref()
            .unwrap_or("")
            .contains("mutually exclusive"),
        "{:?}",
        bad.check_message
    );
}

#[test]
fn explain_cli_json_shape() {
    let out = Command::new(env!("CARGO_BIN_EXE_armorwatch"))
        .args(["explain", "--json", "--no-packages", "--profiles"])
        .arg(fixture_root())
        .arg(MSMTP_MKNOD)
        .output()
        .expect("run armorwatch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).expect("utf8");
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON object");
    assert_eq!(v["event"]["schema"], 1);
    assert_eq!(v["event"]["profile"], "msmtp");
    assert_eq!(v["profile"]["name"], "msmtp");
    assert_eq!(v["profile"]["line"], 5);
    assert!(
        v["profile"]["file"]
            .as_str()
            .unwrap()
            .ends_with("usr.bin.msmtp")
    );
    let e = &v["explanation"];
    assert_eq!(e["verdict"], "no_rule_matches");
    assert_eq!(e["needed"], "w");
    assert_eq!(e["closest_rules"][0]["rule"], "/var/log/msmtp wk,");
    assert_eq!(e["closest_rules"][0]["line"], 24);
    assert!(
        e["closest_rules"][0]["reason"]
            .as_str()
            .unwrap()
            .contains(".log")
    );
    assert_eq!(e["suggestion"]["rule"], "/var/log/msmtp.log wk,");
    let check = e["suggestion"]["check"].as_str().unwrap();
    if system::find_program("apparmor_parser").is_some() {
        assert_eq!(check, "passed");
    } else {
        assert_eq!(check, "skipped");
    }
    // The alert carries the same two objects.
    let exp = explain_fixture(MSMTP_MKNOD);
    let (profile, explanation) = alert_values(&exp);
    assert_eq!(profile["name"], "msmtp");
    assert_eq!(explanation["closest_rules"][0]["line"], 24);
}

#[test]
fn explain_cli_reads_stdin_text() {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_armorwatch"))
        .args(["explain", "--no-check", "--no-packages", "--profiles"])
        .arg(fixture_root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run armorwatch");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("noise line\n{MSMTP_OPEN}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("usr.bin.msmtp:24:3"), "{text}");
    assert!(text.contains("local/usr.bin.msmtp"), "{text}");
}

#[test]
fn owner_rule_does_not_apply() {
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="open" profile="msmtp" name="/home/otis/.msmtprc" pid=1 comm="msmtp" requested_mask="r" denied_mask="r" fsuid=1000 ouid=0"#,
    );
    let d = &exp.explanation;
    assert_eq!(d.verdict, Verdict::OwnerRuleDoesNotApply);
    assert_eq!(d.closest_rules[0].line, 19);
    assert!(d.closest_rules[0].rule.starts_with("owner @{HOME}/.msmtp*"));
    let s = d.suggestion.as_ref().unwrap();
    assert_eq!(s.rule, "/home/otis/.msmtprc r,");
    // The same access by the owner is allowed by the profile on disk.
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="open" profile="msmtp" name="/home/otis/.msmtprc" pid=1 comm="msmtp" requested_mask="r" denied_mask="r" fsuid=1000 ouid=1000"#,
    );
    assert_eq!(exp.explanation.verdict, Verdict::AllowedOnDisk);
}

#[test]
fn rule_matches_but_lacks_permission() {
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="open" profile="msmtp" name="/etc/aliases" pid=1 comm="msmtp" requested_mask="w" denied_mask="w" fsuid=0 ouid=0"#,
    );
    let d = &exp.explanation;
    assert_eq!(d.verdict, Verdict::MissingPermission);
    assert_eq!(d.closest_rules[0].line, 15);
    assert!(d.closest_rules[0].reason.contains("grants `r`, not `w`"));
    assert_eq!(d.suggestion.as_ref().unwrap().rule, "/etc/aliases w,");
    // A pid in the path becomes @{pid}, and the rule still compiles.
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="open" profile="msmtp" name="/proc/4242/loginuid" pid=4242 comm="msmtp" requested_mask="w" denied_mask="w" fsuid=0 ouid=0"#,
    );
    assert_eq!(exp.explanation.verdict, Verdict::MissingPermission);
    assert_eq!(exp.explanation.closest_rules[0].line, 31);
    let mut s = exp.explanation.suggestion.unwrap();
    assert_eq!(s.rule, "@{PROC}/@{pid}/loginuid w,");
    if parser_bin().is_some() {
        system::check_suggestion(&fixture_root(), &mut s);
        assert_eq!(s.check, CheckStatus::Passed, "{:?}", s.check_message);
    }
}

#[test]
fn deny_rules_win() {
    // File: pidgin denies the wine applications directory.
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="open" profile="/usr/bin/pidgin" name="/home/u/.local/share/applications/wine/" pid=1 comm="pidgin" requested_mask="r" denied_mask="r" fsuid=1000 ouid=1000"#,
    );
    assert_eq!(exp.explanation.verdict, Verdict::DenyRuleWins);
    assert_eq!(exp.explanation.closest_rules[0].line, 39);
    assert!(exp.explanation.suggestion.is_none());
    // Capability: man denies dac_override.
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="capable" profile="/usr/bin/man" pid=114 comm="man" capability=1  capname="dac_override""#,
    );
    assert_eq!(exp.explanation.verdict, Verdict::DenyRuleWins);
    assert_eq!(exp.explanation.closest_rules[0].line, 45);
    // Exec: lsb_release denies apt-cache.
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="exec" profile="lsb_release" name="/usr/bin/apt-cache" pid=117 comm="lsb_release" requested_mask="x" denied_mask="x" fsuid=0 ouid=0"#,
    );
    assert_eq!(exp.explanation.verdict, Verdict::DenyRuleWins);
    assert_eq!(
        exp.explanation.closest_rules[0].rule,
        "deny /usr/bin/apt-cache x,"
    );
}

#[test]
fn hat_near_miss_goes_into_the_hat_block() {
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="open" profile="/usr/sbin/httpd2-prefork//HANDLING_UNTRUSTED_INPUT" name="/var/log/apache2/ssl/access.log" pid=1 comm="httpd2-prefork" requested_mask="ac" denied_mask="ac" fsuid=33 ouid=33"#,
    );
    assert_eq!(exp.profile.kind, Some("hat"));
    assert_eq!(exp.profile.line, Some(134));
    let d = &exp.explanation;
    assert_eq!(d.verdict, Verdict::NoRuleMatches);
    assert_eq!(d.closest_rules[0].rule, "/var/log/apache2/* w,");
    assert!(d.closest_rules[0].reason.contains("`*` does not match `/`"));
    let s = d.suggestion.as_ref().unwrap();
    assert!(s.file.ends_with("/usr.sbin.httpd2-prefork"));
    assert!(
        s.placement
            .as_deref()
            .unwrap()
            .contains("^HANDLING_UNTRUSTED_INPUT")
    );
    if parser_bin().is_some() {
        let mut s = s.clone();
        system::check_suggestion(&fixture_root(), &mut s);
        assert_eq!(s.check, CheckStatus::Passed, "{:?}", s.check_message);
    }
}

#[test]
fn exec_without_x_rule_and_child_profiles() {
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="exec" profile="msmtp" name="/usr/bin/zsh" pid=117 comm="msmtp" requested_mask="x" denied_mask="x" fsuid=0 ouid=0"#,
    );
    let d = &exp.explanation;
    assert_eq!(d.verdict, Verdict::ExecWithoutXRule);
    assert!(d.closest_rules[0].rule.contains("bin/bash Cx -> helpers"));
    assert_eq!(d.suggestion.as_ref().unwrap().rule, "/usr/bin/zsh ix,");
    // The child profile `helpers` of msmtp: `/usr/bin/pass PUx` nearly matches passwd.
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="exec" profile="msmtp//helpers" name="/usr/bin/passwd" pid=118 comm="bash" requested_mask="x" denied_mask="x" fsuid=0 ouid=0"#,
    );
    assert_eq!(exp.profile.kind, Some("child profile"));
    assert_eq!(exp.profile.line, Some(69));
    assert_eq!(exp.explanation.closest_rules[0].rule, "/usr/bin/pass PUx,");
    assert!(exp.explanation.closest_rules[0].reason.contains("`wd`"));
    // Complain-mode null profile: the parent is explained for the exec.
    let exp = explain_fixture(
        r#"apparmor="ALLOWED" operation="open" profile="msmtp//null-/usr/bin/zsh" name="/etc/zshrc" pid=119 comm="zsh" requested_mask="r" denied_mask="r" fsuid=0 ouid=0"#,
    );
    assert_eq!(exp.explanation.verdict, Verdict::ExecWithoutXRule);
    assert_eq!(exp.explanation.object.as_deref(), Some("/usr/bin/zsh"));
}

#[test]
fn exec_transitions_and_audit_records() {
    // The x rule is there; the child profile it names is declared but was not loaded.
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="exec" info="profile not found" error=-13 profile="msmtp" name="/usr/bin/bash" pid=1 comm="msmtp" requested_mask="x" denied_mask="x" fsuid=0 ouid=0 target="msmtp//helpers""#,
    );
    let d = &exp.explanation;
    assert_eq!(d.verdict, Verdict::ExecTargetProfileMissing);
    assert_eq!(d.closest_rules[0].line, 67);
    assert!(
        d.advice.as_deref().unwrap().contains("usr.bin.msmtp:69"),
        "{:?}",
        d.advice
    );
    // no_new_privs.
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="exec" info="no new privs" error=-1 profile="/usr/bin/man" name="/usr/bin/tbl" pid=1 comm="man" requested_mask="x" denied_mask="x" fsuid=0 ouid=0 target="man_groff""#,
    );
    assert_eq!(exp.explanation.verdict, Verdict::ExecTransitionFailed);
    assert!(
        exp.explanation.closest_rules[0]
            .rule
            .contains("rmCx -> &man_groff")
    );
    // An AUDIT record is not a denial: the audit rule is named.
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        "t".to_string(),
        std::sync::Arc::from("profile t {\n  /tmp/x r,\n  audit /tmp/audited rw,\n}\n"),
    );
    let idx = Index::build(&armorwatch::profiles::ProfileTree {
        base: "/etc/apparmor.d".into(),
        files,
        disabled: Default::default(),
        dirs: Default::default(),
    });
    let exp = explain(
        &idx,
        &event(
            r#"apparmor="AUDIT" operation="open" profile="t" name="/tmp/audited" pid=113 comm="busybox-aa" requested_mask="wc" fsuid=0 ouid=0"#,
        ),
        &Context::default(),
    );
    assert_eq!(exp.explanation.verdict, Verdict::Audited);
    assert_eq!(exp.explanation.closest_rules[0].line, 3);
    assert!(exp.explanation.suggestion.is_none());
}

#[test]
fn capability_and_network_near_misses() {
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="capable" profile="ping" pid=114 comm="ping" capability=12  capname="net_admin""#,
    );
    let d = &exp.explanation;
    assert_eq!(d.verdict, Verdict::NoRuleMatches);
    assert_eq!(d.needed, "capability net_admin");
    assert_eq!(d.closest_rules[0].rule, "capability net_raw,");
    let s = d.suggestion.as_ref().unwrap();
    assert_eq!(s.rule, "capability net_admin,");
    assert!(s.file.ends_with("/local/bin.ping"));

    let exp = explain_fixture(
        r#"apparmor="ALLOWED" operation="create" profile="ping" pid=116 comm="ping" family="packet" sock_type="raw" protocol=0 requested_mask="create" denied_mask="create""#,
    );
    let d = &exp.explanation;
    assert_eq!(d.verdict, Verdict::NoRuleMatches);
    assert_eq!(d.closest_rules[0].rule, "network inet raw,");
    assert!(
        d.closest_rules[0]
            .reason
            .contains("family `inet`, not `packet`")
    );
    assert_eq!(d.suggestion.as_ref().unwrap().rule, "network packet raw,");
    // inet dgram is allowed through abstractions/nameservice: the explainer must see it.
    let exp = explain_fixture(
        r#"apparmor="ALLOWED" operation="create" profile="ping" pid=116 comm="ping" family="inet" sock_type="dgram" protocol=0 requested_mask="create" denied_mask="create""#,
    );
    assert_eq!(exp.explanation.verdict, Verdict::AllowedOnDisk);
    assert!(
        exp.explanation.closest_rules[0]
            .file
            .ends_with("abstractions/nameservice")
    );
    if parser_bin().is_some() {
        let exp = explain_fixture(
            r#"apparmor="DENIED" operation="capable" profile="ping" pid=114 comm="ping" capability=12  capname="net_admin""#,
        );
        let mut s = exp.explanation.suggestion.unwrap();
        system::check_suggestion(&fixture_root(), &mut s);
        assert_eq!(s.check, CheckStatus::Passed, "{:?}", s.check_message);
    }
}

#[test]
fn signal_and_ptrace_rules_are_compared() {
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="signal" profile="/usr/bin/man" pid=119 comm="man" requested_mask="send" denied_mask="send" signal=term peer="unconfined""#,
    );
    let d = &exp.explanation;
    assert_eq!(d.verdict, Verdict::NoRuleMatches);
    assert!(
        d.closest_rules[0]
            .reason
            .contains("does not match `unconfined`")
    );
    let mut s = d.suggestion.clone().unwrap();
    assert_eq!(s.rule, "signal (send) set=(term) peer=unconfined,");
    if parser_bin().is_some() {
        system::check_suggestion(&fixture_root(), &mut s);
        assert_eq!(s.check, CheckStatus::Passed, "{:?}", s.check_message);
    }
    // To itself: allowed through @{profile_name} in abstractions/base.
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="signal" profile="/usr/bin/man" pid=119 comm="man" requested_mask="send" denied_mask="send" signal=term peer="/usr/bin/man""#,
    );
    assert_eq!(exp.explanation.verdict, Verdict::AllowedOnDisk);
    // pidgin: `deny ptrace,`.
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="ptrace" profile="/usr/bin/pidgin" pid=120 comm="pidgin" requested_mask="read" denied_mask="read" peer="unconfined""#,
    );
    assert_eq!(exp.explanation.verdict, Verdict::DenyRuleWins);
    assert_eq!(exp.explanation.closest_rules[0].line, 37);
}

#[test]
fn dbus_rules_are_compared() {
    let record = |path: &str, interface: &str, member: &str| {
        format!(
            r#"type=USER_AVC msg=audit(1795623516.100:40): pid=1 uid=103 auid=4294967295 ses=4294967295 subj=unconfined msg='apparmor="DENIED" operation="dbus_method_call"  bus="session" path="{path}" interface="{interface}" member="{member}" mask="send" name="org.freedesktop.secrets" pid=5 label="msmtp" peer_pid=6 peer_label="unconfined" exe="/usr/bin/dbus-daemon" sauid=103 hostname=? addr=? terminal=?'"#
        )
    };
    let exp = explain_fixture(&record(
        "/org/freedesktop/secrets",
        "org.freedesktop.Secret.Service",
        "OpenSession",
    ));
    assert_eq!(exp.explanation.verdict, Verdict::AllowedOnDisk);
    assert_eq!(exp.explanation.closest_rules[0].line, 44);
    let exp = explain_fixture(&record(
        "/org/freedesktop/secrets/collection/login",
        "org.freedesktop.Secret.Collection",
        "SearchItems",
    ));
    let d = &exp.explanation;
    assert_eq!(d.verdict, Verdict::NoRuleMatches);
    assert!(
        d.closest_rules[0]
            .reason
            .contains("interface=org.freedesktop.Secret.Service does not match")
    );
    let mut s = d.suggestion.clone().unwrap();
    assert_eq!(
        s.rule,
        "dbus send bus=session path=/org/freedesktop/secrets/collection/login interface=org.freedesktop.Secret.Collection member=SearchItems peer=(label=unconfined),"
    );
    if parser_bin().is_some() {
        system::check_suggestion(&fixture_root(), &mut s);
        assert_eq!(s.check, CheckStatus::Passed, "{:?}", s.check_message);
    }
}

#[test]
fn link_and_userns_rules() {
    use armorwatch::profiles::ProfileTree;
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        "t".to_string(),
        std::sync::Arc::from(
            "profile t {\n  link /srv/a/* -> /srv/b/*,\n  userns,\n}\nprofile u {\n  /srv/** r,\n}\n",
        ),
    );
    let idx = Index::build(&ProfileTree {
        base: "/etc/apparmor.d".into(),
        files,
        disabled: Default::default(),
        dirs: Default::default(),
    });
    let link = |profile: &str, target: &str| {
        explain(
            &idx,
            &event(&format!(
                r#"apparmor="DENIED" operation="link" profile="{profile}" name="/srv/a/x" pid=1 comm="ln" requested_mask="l" denied_mask="l" fsuid=0 ouid=0 target="{target}""#
            )),
            &Context::default(),
        )
        .explanation
        .verdict
    };
    assert_eq!(link("t", "/srv/b/y"), Verdict::AllowedOnDisk);
    assert_eq!(link("t", "/etc/shadow"), Verdict::NoRuleMatches);
    assert_eq!(link("u", "/srv/b/y"), Verdict::MissingPermission);
    let userns = |profile: &str| {
        explain(
            &idx,
            &event(&format!(
                r#"apparmor="DENIED" operation="userns_create" class="namespace" profile="{profile}" pid=1 comm="unshare" requested="userns_create" denied="userns_create""#
            )),
            &Context::default(),
        )
        .explanation
    };
    assert_eq!(userns("t").verdict, Verdict::AllowedOnDisk);
    let u = userns("u");
    assert_eq!(u.verdict, Verdict::NoRuleMatches);
    assert_eq!(u.suggestion.unwrap().rule, "userns,");
}

/// A denial by a profile whose file the admin disabled (`aa-disable`: a link in disable/) says
/// so: the profile is loaded all the same, and the file is not loaded at boot.
#[test]
fn a_disabled_profile_file_is_noted() {
    use armorwatch::profiles::ProfileTree;
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        "usr.bin.t".to_string(),
        std::sync::Arc::from("profile t /usr/bin/t {\n  /srv/** r,\n}\n"),
    );
    let tree = |disabled: &[&str]| ProfileTree {
        base: "/etc/apparmor.d".into(),
        files: files.clone(),
        disabled: disabled.iter().map(|s| s.to_string()).collect(),
        dirs: Default::default(),
    };
    let denial = event(
        r#"apparmor="DENIED" operation="open" profile="t" name="/etc/x" pid=1 comm="t" requested_mask="r" denied_mask="r" fsuid=0 ouid=0"#,
    );
    let notes = |t: &ProfileTree| {
        explain(&Index::build(t), &denial, &Context::default())
            .profile
            .notes
    };
    let disabled = notes(&tree(&["usr.bin.t"]));
    assert_eq!(disabled.len(), 1, "{disabled:?}");
    assert!(
        disabled[0]
            .contains("/etc/apparmor.d/usr.bin.t is disabled (/etc/apparmor.d/disable/usr.bin.t)"),
        "{disabled:?}"
    );
    assert!(notes(&tree(&["usr.bin.other"])).is_empty());
}

#[test]
fn mount_and_unix_socket_rules() {
    let mut files = std::collections::BTreeMap::new();
    files.insert(
        "t".to_string(),
        std::sync::Arc::from(concat!(
            "profile t {\n",
            "  mount fstype=tmpfs none -> /mnt/x/,\n",
            "  umount /mnt/**,\n",
            "  unix (connect send receive) type=stream peer=(addr=\"@/tmp/.X11-unix/X[0-9]*\"),\n",
            "  network unix dgram,\n",
            "}\n",
        )),
    );
    let idx = Index::build(&armorwatch::profiles::ProfileTree {
        base: "/etc/apparmor.d".into(),
        files,
        disabled: Default::default(),
        dirs: Default::default(),
    });
    let run = |record: &str| explain(&idx, &event(record), &Context::default()).explanation;
    // The aa-vm mount record: mount point differs.
    let d = run(
        r#"apparmor="DENIED" operation="mount" info="failed mntpnt match" error=-13 profile="t" name="/mnt/t/" pid=122 comm="busybox-mnt" fstype="tmpfs" srcname="none" flags="rw, silent""#,
    );
    assert_eq!(d.verdict, Verdict::NoRuleMatches);
    assert!(
        d.closest_rules[0]
            .reason
            .contains("mount point /mnt/x/ does not match `/mnt/t/`")
    );
    assert_eq!(
        d.suggestion.unwrap().rule,
        "mount fstype=tmpfs none -> /mnt/t/,"
    );
    let d = run(
        r#"apparmor="DENIED" operation="mount" info="failed flags match" error=-13 profile="t" name="/mnt/x/" pid=122 comm="mount" fstype="tmpfs" srcname="none" flags="ro""#,
    );
    assert_eq!(d.verdict, Verdict::NotEvaluated);
    let d = run(
        r#"apparmor="DENIED" operation="umount" profile="t" name="/mnt/y/" pid=1 comm="umount""#,
    );
    assert_eq!(d.verdict, Verdict::NotEvaluated);
    // Unix sockets.
    let x11 = r#"apparmor="DENIED" operation="connect" profile="t" pid=1 comm="xterm" family="unix" sock_type="stream" protocol=0 requested_mask="send receive connect" denied_mask="send connect" addr=none peer_addr="@/tmp/.X11-unix/X0" peer="unconfined""#;
    assert_eq!(run(x11).verdict, Verdict::AllowedOnDisk);
    let d = run(&x11.replace("X11-unix/X0", "ICE-unix/42"));
    assert_eq!(d.verdict, Verdict::NoRuleMatches);
    assert!(d.closest_rules[0].reason.contains("peer.addr="));
    assert_eq!(
        d.suggestion.unwrap().rule,
        "unix (send connect) type=stream peer=(addr=@/tmp/.ICE-unix/42, label=unconfined),"
    );
    let d = run(&x11.replace("stream", "dgram"));
    assert_eq!(d.verdict, Verdict::AllowedOnDisk);
}

#[test]
fn disconnected_path_suggests_the_flag() {
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="open" info="Failed name lookup - disconnected path" error=-13 profile="ping" name="dev/pts/0" pid=1 comm="ping" requested_mask="r" denied_mask="r" fsuid=0 ouid=0"#,
    );
    let d = &exp.explanation;
    assert_eq!(d.verdict, Verdict::DisconnectedPath);
    let s = d.suggestion.as_ref().expect("header change");
    assert_eq!(
        s.rule,
        "profile ping /{usr/,}bin/{,iputils-}ping flags=(complain,attach_disconnected) {"
    );
    if parser_bin().is_some() {
        let mut s = s.clone();
        system::check_suggestion(&fixture_root(), &mut s);
        assert_eq!(s.check, CheckStatus::Passed, "{:?}", s.check_message);
    }
    // msmtp already has the flag: advice only.
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="open" info="Failed name lookup - disconnected path" error=-13 profile="msmtp" name="dev/pts/0" pid=1 comm="msmtp" requested_mask="r" denied_mask="r" fsuid=0 ouid=0"#,
    );
    assert!(exp.explanation.advice.unwrap().contains("already has"));
}

#[test]
fn generated_profiles_get_advice_not_rules() {
    for (label, needle) in [
        ("snap.lxd.daemon", "snap connect lxd:"),
        ("docker-default", "--security-opt"),
        (
            "libvirt-0f7a4f5e-2b7c-4f6e-9a43-8d8d4b1f2c3a",
            "virt-aa-helper",
        ),
        ("unprivileged_userns", "userns,"),
        ("lxc-container-default-cgns", "raw.apparmor"),
    ] {
        let exp = explain_fixture(&format!(
            r#"apparmor="DENIED" operation="open" profile="{label}" name="/etc/shadow" pid=1 comm="x" requested_mask="r" denied_mask="r" fsuid=0 ouid=0"#
        ));
        assert_eq!(
            exp.explanation.verdict,
            Verdict::GeneratedProfile,
            "{label}"
        );
        assert!(exp.explanation.suggestion.is_none());
        assert!(
            exp.explanation.advice.as_deref().unwrap().contains(needle),
            "{label}"
        );
    }
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="open" profile="nonexistent" name="/etc/shadow" pid=1 comm="x" requested_mask="r" denied_mask="r""#,
    );
    assert_eq!(exp.explanation.verdict, Verdict::ProfileNotFound);
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="open" profile="man" name="/etc/shadow" pid=1 comm="x" requested_mask="r" denied_mask="r""#,
    );
    assert_eq!(exp.explanation.verdict, Verdict::ProfileNotFound);
    assert!(exp.explanation.advice.unwrap().contains("`/usr/bin/man`"));
}

#[test]
fn hostile_paths_never_become_rules() {
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="open" profile="msmtp" name=2F746D702F610A20206361706162696C6974792073797361646D696E pid=1 comm="msmtp" requested_mask="w" denied_mask="w" fsuid=0 ouid=0"#,
    );
    assert!(exp.event.name().unwrap().contains('\n'));
    assert!(exp.explanation.suggestion.is_none());
    let text = render_text(&exp, fixture_index());
    assert!(!text.contains("\n  capability sysadmin"), "{text}");
}

/// Every real profile in the fixture tree parses without errors, and the real /etc/apparmor.d
/// too when present (with the Debian msmtp profile resolved when msmtp is installed).
#[test]
fn real_trees_index_cleanly() {
    let idx = fixture_index();
    assert!(idx.errors().is_empty(), "{:?}", idx.errors());
    assert!(idx.file_count() > 140);
    for name in [
        "msmtp",
        "msmtp//helpers",
        "/usr/bin/man",
        "man_groff",
        "ping",
        "lsb_release",
    ] {
        assert_eq!(idx.by_name(name).len(), 1, "{name}");
    }
    let etc = Path::new("/etc/apparmor.d");
    if !etc.is_dir() {
        common::skip("/etc/apparmor.d not present (package apparmor)");
        return;
    }
    let start = Instant::now();
    let (tree, _) = loader::load_tree(etc).expect("load /etc/apparmor.d");
    let real = Index::build(&tree);
    let took = start.elapsed();
    eprintln!(
        "indexed /etc/apparmor.d: {} files, {} declarations, {} syntax errors in {took:?} (debug build)",
        real.file_count(),
        real.profiles().len(),
        real.errors().len()
    );
    assert!(real.errors().is_empty(), "{:?}", real.errors());
    // Generous bound for a debug build on a loaded CI machine; the release figure is in
    // docs/benchmarks.md.
    assert!(took.as_secs_f64() < 5.0, "{took:?}");
    if !real.by_name("msmtp").is_empty() {
        let exp = explain(&real, &event(MSMTP_MKNOD), &Context::default());
        assert_eq!(
            exp.profile.file.as_deref(),
            Some("/etc/apparmor.d/usr.bin.msmtp")
        );
        assert_eq!(exp.explanation.closest_rules[0].line, 24);
    }
}

// ---------------------------------------------------------------------------------------------
// Glob cross-check against apparmor_parser's compiled DFA (`-D dfa-states`).

/// A DFA as apparmor_parser 3.x dumps it: per state, explicit transitions (char → state), the
/// characters that go to the dead state, and the default ("otherwise") transition.
#[derive(Debug, Default)]
struct Dfa {
    start: usize,
    accept: std::collections::HashMap<usize, bool>,
    explicit: std::collections::HashMap<(usize, u8), usize>,
    excluded: std::collections::HashMap<usize, Vec<u8>>,
    otherwise: std::collections::HashMap<usize, usize>,
}

fn state_id(s: &str) -> Option<usize> {
    let s = s.trim();
    s.strip_prefix('{')?.split('}').next()?.parse().ok()
}

fn decode_class(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if b[i + 1] == b'x' {
                // `\x0` for NUL (the only non-printable our paths meet), else two hex digits.
                let digits = if b.get(i + 2) == Some(&b'0') { 1 } else { 2 };
                let hex = std::str::from_utf8(&b[i + 2..(i + 2 + digits).min(b.len())]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 2 + digits;
            } else {
                out.push(b[i + 1]);
                i += 2;
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn parse_dfa(dump: &str) -> Dfa {
    let mut dfa = Dfa::default();
    let mut cur = None;
    for line in dump.lines() {
        if line.starts_with('{') {
            let id = state_id(line).unwrap();
            if line.contains("<==") {
                dfa.start = id;
            }
            // The summary at the top lists accepting states (`{6} (0x 10004/0/0/0)`), including
            // those without outgoing transitions, which get no `perms:` section.
            let accepting = line
                .split("(0x")
                .nth(1)
                .and_then(|p| p.trim().split('/').next())
                .is_some_and(|allow| u64::from_str_radix(allow.trim(), 16).unwrap_or(0) != 0);
            if accepting {
                dfa.accept.insert(id, true);
            }
            if line.contains(" perms:") {
                cur = Some(id);
            }
            continue;
        }
        let (Some(state), Some(arrow)) = (cur, line.find(" -> {")) else {
            continue;
        };
        let target = state_id(&line[arrow + 4..]).unwrap();
        let lhs = line[..arrow].trim_start();
        if lhs.starts_with('[') && !lhs.contains(" 0x") {
            let inner = &lhs[1..lhs.len() - 1];
            let excluded = inner
                .strip_prefix('^')
                .map(decode_class)
                .unwrap_or_default();
            dfa.excluded.insert(state, excluded);
            dfa.otherwise.insert(state, target);
        } else {
            let hex = lhs
                .rsplit(" 0x")
                .next()
                .unwrap_or(lhs)
                .trim_start_matches("0x");
            let c = u8::from_str_radix(hex.trim(), 16).unwrap();
            dfa.explicit.insert((state, c), target);
        }
    }
    dfa
}

impl Dfa {
    fn matches(&self, path: &str) -> bool {
        let mut s = self.start;
        for &c in path.as_bytes() {
            if let Some(&t) = self.explicit.get(&(s, c)) {
                s = t;
            } else if self.excluded.get(&s).is_some_and(|e| e.contains(&c)) {
                return false;
            } else if let Some(&t) = self.otherwise.get(&s) {
                s = t;
            } else {
                return false;
            }
        }
        self.accept.get(&s).copied().unwrap_or(false)
    }
}

fn compiled_dfa(parser: &Path, preamble: &str, glob: &str) -> Dfa {
    try_compiled_dfa(parser, preamble, glob).unwrap_or_else(|e| panic!("{glob}: {e}"))
}

/// The DFA apparmor_parser builds for a one-rule profile, or its error message.
fn try_compiled_dfa(parser: &Path, preamble: &str, glob: &str) -> Result<Dfa, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("xcheck");
    std::fs::write(
        &file,
        format!("{preamble}profile xcheck {{\n  {glob} r,\n}}\n"),
    )
    .unwrap();
    let out = Command::new(parser)
        .args(["-Q", "-K", "-D", "dfa-states", "--base"])
        .arg(fixture_root())
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok(parse_dfa(&stderr))
    } else {
        Err(stderr)
    }
}

#[test]
fn glob_matcher_agrees_with_apparmor_parser() {
    let Some(parser) = parser_bin() else { return };
    let paths = [
        "/",
        "/a",
        "/a/",
        "/a/b",
        "/a/b/",
        "/a/b/c",
        "/a//b",
        "/a/.log",
        "/a/b.log",
        "/a/b/c.log",
        "/a/bc",
        "/a/xb",
        "/a/b/x",
        "/a/bde",
        "/a/be",
        "/a/cat",
        "/a/dog",
        "/a/{a}",
        "/a/12",
        "/a/1x",
        "/a/x1",
        "/srv/a",
        "/srv/a/y",
        "/srv/b/",
        "/srv/b/y",
        "/srv/c/y",
        "/srv//a/y",
        "/srv/run/",
        "/srv/var/run/",
        "/home/u/.x",
        "/root/.x",
        "/home/.x",
        "/run/foo",
        "/var/run/foo",
        "/proc/1/status",
        "/proc/12345/status",
        "/proc/0/status",
        "/proc/self/status",
        "/tmp/.krb5cc_0",
        "/tmp/krb5cc_0",
        "/tmp/x",
        "/a/b/c/x",
        "/a/x",
        "/ab",
        "/a/a",
        "/var/log/msmtp",
        "/var/log/msmtp.log",
        "/a//",
        "/a/b c",
        "/a/-",
        "/a/^",
    ];
    let globs = [
        "/a/*",
        "/a/**",
        "/a/*/",
        "/a/**/",
        "/a/**/x",
        "/a/**.log",
        "/a/*.log",
        "/a/*b",
        "/a/**b",
        "/a/?",
        "/a/??",
        "/a{,/b}",
        "/a/{b,c}{,/}",
        "/a/{b{c,d},x}e",
        "/a/[a-c]*",
        "/a/[^a]",
        "/a/[^a-c]*",
        "/a/[0-9]*",
        "/a/\\{a\\}",
        "/a/*x*",
        "/a/*/*",
        "/a/**/*",
        "/{a,tmp}/*",
        "/tmp/{,.}krb5cc_*",
        "/var/log/msmtp",
        "/var/log/msmtp*",
        "/a/***",
        "/a/*?",
        "/**",
        "/*",
        "/a/{,b/}*",
    ];
    let mut checked = 0;
    for glob in globs {
        let dfa = compiled_dfa(&parser, "", glob);
        let ours = Glob::compile(glob).unwrap();
        for path in paths {
            assert_eq!(
                ours.is_match(path),
                dfa.matches(path),
                "glob {glob} vs path {path}: ours={} apparmor_parser={}",
                ours.is_match(path),
                dfa.matches(path)
            );
            checked += 1;
        }
    }
    // Variables: expanded by us, and by apparmor_parser from the same definitions.
    let preamble = "@{HOMEDIRS}=/home/\n@{HOME}=@{HOMEDIRS}/*/ /root/\n@{run}=/run/ /var/run/\n@{pid}={[1-9],[1-9][0-9],[1-9][0-9][0-9],[1-9][0-9][0-9][0-9],[1-9][0-9][0-9][0-9][0-9],[1-9][0-9][0-9][0-9][0-9][0-9],[1-4][0-9][0-9][0-9][0-9][0-9][0-9]}\n@{PROC}=/proc/\n@{sub}=/a /b/ //c\n@{CHROOT_BASE}=\"\"\n";
    let mut vars = Vars::new();
    for line in preamble.lines() {
        let f = parser::parse_file("v", line);
        if let Some(parser::Item::Var(v)) = f.items.first() {
            vars.insert(v.name.clone(), v.values.clone());
        }
    }
    for glob in [
        "@{HOME}/.x",
        "@{HOME}/**",
        "@{run}/foo",
        "@{PROC}/@{pid}/status",
        "@{HOME}/*",
        "/srv/@{sub}/y",
        "/srv/@{sub}",
        "/srv/@{run}",
        "@{CHROOT_BASE}/@{run}/foo",
    ] {
        let dfa = compiled_dfa(&parser, preamble, glob);
        let ours = Glob::compile(&expand(glob, &vars).unwrap().text).unwrap();
        for path in paths {
            assert_eq!(
                ours.is_match(path),
                dfa.matches(path),
                "glob {glob} vs path {path}"
            );
            checked += 1;
        }
    }
    // The checker itself must be able to tell things apart.
    let dfa = compiled_dfa(&parser, "", "/var/log/msmtp");
    assert!(dfa.matches("/var/log/msmtp") && !dfa.matches("/var/log/msmtp.log"));
    eprintln!("glob cross-check: {checked} (glob, path) pairs agree with apparmor_parser");
}

/// A small deterministic generator (no extra dependency, same cases on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> usize {
        usize::try_from(self.next() % n).unwrap()
    }
}

fn random_glob_seq(rng: &mut Lcg, depth: usize, out: &mut String) {
    for _ in 0..1 + rng.below(4) {
        match rng.below(if depth < 2 { 11 } else { 9 }) {
            0 | 1 => out.push('/'),
            2 => out.push(['a', 'b', '.'][rng.below(3)]),
            3 => out.push_str(["ab", "a.", "b"][rng.below(3)]),
            4 => out.push('*'),
            5 => out.push_str("**"),
            6 => out.push('?'),
            7 => out.push_str(["[ab]", "[^a]", "[a-b]", "[^/]", "[.]"][rng.below(5)]),
            // (`\{` is left out: apparmor_parser's rule lexer, not its globbing, trips on an
            // escaped brace inside an alternation.)
            8 => out.push_str(["\\*", "\\?", "/*/"][rng.below(3)]),
            _ => {
                out.push('{');
                for i in 0..1 + rng.below(3) {
                    if i > 0 {
                        out.push(',');
                    }
                    if rng.below(4) > 0 {
                        random_glob_seq(rng, depth + 1, out);
                    }
                }
                out.push('}');
            }
        }
    }
}

/// Random globs (alternations, classes, stars, escapes) and random paths: apparmor_parser and
/// our matcher must accept the same patterns and agree on every path. `XCHECK_GLOBS=N` and
/// `XCHECK_SEED=S` run a longer or different series.
#[test]
fn glob_matcher_agrees_with_apparmor_parser_on_random_globs() {
    let Some(parser) = parser_bin() else { return };
    let mut pairs = 0;
    let mut globs = 0;
    let mut rejected = 0;
    let target: usize = std::env::var("XCHECK_GLOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let seed: u64 = std::env::var("XCHECK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_a9a2_0000_0005);
    let mut rng = Lcg(seed);
    while globs < target {
        let mut glob = String::from("/");
        random_glob_seq(&mut rng, 0, &mut glob);
        // As the explainer does: expansion (which also collapses `//`), then compilation.
        let ours = expand(&glob, &Vars::new())
            .map_err(|e| e.to_string())
            .and_then(|e| Glob::compile(&e.text).map_err(|e| e.to_string()));
        let theirs = try_compiled_dfa(&parser, "", &glob);
        // Both must accept or both reject the pattern.
        let (ours, dfa) = match (ours, theirs) {
            (Ok(o), Ok(d)) => (o, d),
            (Err(_), Err(_)) => {
                rejected += 1;
                continue;
            }
            (o, t) => panic!(
                "glob {glob:?}: ours {:?}, apparmor_parser {:?}",
                o.err(),
                t.err()
            ),
        };
        globs += 1;
        for _ in 0..60 {
            let len = rng.below(9);
            let path: String = std::iter::once('/')
                .chain((0..len).map(|_| ['a', 'b', '.', '/', '*', '{'][rng.below(6)]))
                .collect();
            assert_eq!(
                ours.is_match(&path),
                dfa.matches(&path),
                "glob {glob:?} vs path {path:?}: ours={}",
                ours.is_match(&path)
            );
            pairs += 1;
        }
    }
    eprintln!(
        "random glob cross-check: {pairs} pairs over {globs} globs agree with apparmor_parser; {rejected} globs rejected by both"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile input.

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn policy_like() -> impl Strategy<Value = String> {
        let atoms = prop::sample::select(vec![
            "profile",
            "x",
            "/a/**",
            "{",
            "}",
            ",",
            "\n",
            " ",
            "#",
            "include",
            "<",
            ">",
            "\"",
            "@{HOME}",
            "=",
            "+=",
            "^hat",
            "owner",
            "deny",
            "rw",
            "Px",
            "->",
            "(",
            ")",
            "[",
            "]",
            "\\",
            "capability",
            "network",
            "flags=(complain)",
            "if",
            "é",
            "\0",
        ]);
        prop::collection::vec(atoms, 0..60).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

        #[test]
        fn parser_never_panics_on_bytes(s in "\\PC*") {
            let _ = parser::parse_file("f", &s);
        }

        #[test]
        fn parser_and_index_never_panic_on_policy_like_text(s in policy_like()) {
            let f = parser::parse_file("f", &s);
            for e in &f.errors {
                prop_assert!(e.span.line >= 1 && e.span.col >= 1);
            }
            let mut files = std::collections::BTreeMap::new();
            files.insert("p".to_string(), std::sync::Arc::from(s.as_str()));
            files.insert("abstractions/a".to_string(), std::sync::Arc::from(s.as_str()));
            let idx = Index::build(&armorwatch::profiles::ProfileTree {
                base: "/etc/apparmor.d".into(),
                files,
                disabled: Default::default(),
            dirs: Default::default(),
            });
            for i in 0..idx.profiles().len() {
                let _ = idx.effective(i);
            }
        }

        #[test]
        fn glob_never_panics(g in "[/a*?\\[\\]{},^\\\\-]{0,24}", p in "[/a.b]{0,24}") {
            if let Ok(glob) = Glob::compile(&g) {
                let probe = glob.probe(&p);
                prop_assert!(probe.consumed <= p.len());
            }
        }

        #[test]
        fn explain_never_panics(name in "\\PC{0,40}", mask in "[rwacdxlkm:]{0,5}", fsuid in 0u32..3, ouid in 0u32..3) {
            let record = format!(
                "apparmor=\"DENIED\" operation=\"open\" profile=\"msmtp\" name=\"{}\" pid=1 comm=\"x\" requested_mask=\"{mask}\" denied_mask=\"{mask}\" fsuid={fsuid} ouid={ouid}",
                name.replace('"', "")
            );
            for o in parse_text(&record, &Source::Text) {
                if let Output::Event(e) = o {
                    let exp = explain(fixture_index(), &e, &Context::default());
                    let _ = render_text(&exp, fixture_index());
                    if let Some(s) = &exp.explanation.suggestion {
                        prop_assert!(!s.rule.contains('\n'));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Real kernel (tests/vm/aa-vm): the msmtp denial, explained, fixed with the suggested rule.

/// Boot the guest once with the fixture's msmtp profile and our `local/usr.bin.msmtp`, run the
/// real msmtp so it tries to write its log, and return (guest output, kernel log).
fn boot_msmtp(aa_vm: &Path, guest: &Path, out: &Path) -> (String, String) {
    let status = Command::new(aa_vm)
        .arg("--add")
        .arg("/usr/bin/msmtp")
        .arg("-o")
        .arg(out)
        .arg(guest)
        .arg("msmtp --logfile=/var/log/msmtp.log --host=127.0.0.1 --port=1 --from=a@b.c x@y.z </dev/null; echo rc=$?; cat /var/log/msmtp.log")
        .status()
        .expect("run aa-vm");
    // The exit status is the guest command's (`cat` fails on the first boot); 124 and 125 are
    // the harness's own (timeout, error).
    assert!(
        status.code().is_some_and(|c| c < 124),
        "aa-vm failed: {status}"
    );
    (
        std::fs::read_to_string(out.join("output.log")).expect("output.log"),
        std::fs::read_to_string(out.join("dmesg.log")).expect("dmesg.log"),
    )
}

#[test]
fn real_kernel_msmtp_denial_fixed_by_the_suggestion() {
    let aa_vm = std::env::var_os("ARMORWATCH_AA_VM")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/aa-vm"));
    for (what, path) in [
        ("tests/vm/aa-vm", aa_vm.clone()),
        (
            "msmtp (Debian package msmtp)",
            PathBuf::from("/usr/bin/msmtp"),
        ),
    ] {
        if !path.exists() {
            common::skip(&format!("{what} not present"));
            return;
        }
    }
    if system::find_program("qemu-system-x86_64").is_none() {
        common::skip("qemu-system-x86_64 not installed (see tests/deps/vm.apt)");
        return;
    }
    let Some(_) = parser_bin() else { return };
    let guest = tempfile::tempdir().unwrap();
    let g = guest.path();
    std::fs::create_dir_all(g.join("etc/apparmor.d/local")).unwrap();
    std::fs::create_dir_all(g.join("var/log")).unwrap();
    std::fs::write(g.join("var/log/.keep"), "").unwrap();
    std::fs::copy(
        fixture_root().join("usr.bin.msmtp"),
        g.join("etc/apparmor.d/usr.bin.msmtp"),
    )
    .unwrap();
    let local = g.join("etc/apparmor.d/local/usr.bin.msmtp");
    std::fs::write(&local, "").unwrap();

    // 1. The denial, from the real kernel.
    let out1 = tempfile::tempdir().unwrap();
    let (output, dmesg) = boot_msmtp(&aa_vm, g, out1.path());
    assert!(
        output.contains("cannot log to /var/log/msmtp.log"),
        "{output}"
    );
    let mut parser = armorwatch::parse::Parser::new();
    let mut outs = Vec::new();
    for line in dmesg.lines() {
        parser.push_line(line, &Source::Text, &mut outs);
    }
    parser.finish(&mut outs);
    let denial = outs
        .into_iter()
        .find_map(|o| match o {
            Output::Event(e) if e.operation() == Some("mknod") => Some(*e),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no msmtp denial in the kernel log:\n{dmesg}"));

    // 2. Explained against the same profile tree.
    let exp = explain(fixture_index(), &denial, &Context::default());
    assert_eq!(exp.explanation.closest_rules[0].line, 24);
    let mut s = exp.explanation.suggestion.expect("suggestion");
    system::check_suggestion(&fixture_root(), &mut s);
    assert_eq!(s.check, CheckStatus::Passed, "{:?}", s.check_message);
    assert!(s.file.ends_with("local/usr.bin.msmtp"));

    // 3. The rule added where the suggestion says, the profile reloaded (at boot), denial gone.
    std::fs::write(&local, format!("{}\n", s.rule)).unwrap();
    let out2 = tempfile::tempdir().unwrap();
    let (output, dmesg) = boot_msmtp(&aa_vm, g, out2.path());
    assert!(!dmesg.contains("apparmor=\"DENIED\""), "{dmesg}");
    assert!(
        output.contains("exitcode=EX_TEMPFAIL"),
        "the log was not written:\n{output}"
    );
}

/// Regression: the explainer's caches were keyed on a fixed list of fields that left out some
/// the explanation reads (a link's `target`, the `fsuid` and `ouid` values an owner verdict
/// names), so a record differing only there got the explanation of the one before it. Every
/// variant here explains differently from the base record; each must get its own explanation
/// from a cache that already holds the base's. The same denial from another process is still
/// one explanation.
#[test]
fn cached_explanations_are_never_those_of_a_record_differing_in_a_field_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("usr.bin.t"),
        "profile t /usr/bin/t {\n  owner /srv/own/** rw,\n  link /srv/l/a -> /srv/t/ok,\n}\n",
    )
    .unwrap();
    let index = index_of(dir.path());
    let ctx = Context::default();
    let record = |pid: u32, rest: &str| {
        event(&format!(
            r#"type=AVC msg=audit(1795623516.359:5): apparmor="DENIED" profile="t" pid={pid} comm="t{pid}" {rest}"#
        ))
    };
    let json = |e: &Explanation| serde_json::to_value(&e.explanation).unwrap();
    let owner =
        r#"operation="open" name="/srv/own/x" requested_mask="r" denied_mask="r" fsuid=1000"#;
    let link =
        r#"operation="link" name="/srv/l/a" requested_mask="l" denied_mask="l" fsuid=0 ouid=0"#;
    let cases = [
        (format!("{owner} ouid=0"), format!("{owner} ouid=2000")),
        (
            format!(r#"{link} target="/srv/t/other""#),
            format!(r#"{link} target="/srv/t/ok""#),
        ),
    ];
    for (base, variant) in &cases {
        let (base, variant) = (record(1, base), record(1, variant));
        let fresh = explain(&index, &variant, &ctx);
        assert_ne!(
            json(&fresh),
            json(&explain(&index, &base, &ctx)),
            "the variant must explain differently for this test to mean anything"
        );
        let mut ex = Explainer::new(index.clone(), 16);
        ex.explain(&base, &ctx);
        assert_eq!(json(&ex.explain(&variant, &ctx)), json(&fresh));
        ex.alert_values(&base, &ctx, None);
        assert_eq!(ex.alert_values(&variant, &ctx, None), alert_values(&fresh));
    }
    let mut ex = Explainer::new(index, 16);
    let one = &cases[0].0;
    let first = json(&ex.explain(&record(1, one), &ctx));
    assert_eq!(json(&ex.explain(&record(4242, one), &ctx)), first);
    assert_eq!(ex.stats(), (1, 1), "(hits, misses)");
}

/// Regression: an absolute include outside /etc/apparmor.d (which apparmor_parser reads fine)
/// was reported as "not in the tree: apparmor_parser will refuse this profile". A missing
/// relative include still is.
#[test]
fn an_absolute_include_outside_the_tree_is_not_reported_as_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("usr.bin.t"),
        "profile t /usr/bin/t {\n  include \"/usr/share/t/extra\"\n  include <abstractions/gone>\n  /srv/a r,\n}\n",
    )
    .unwrap();
    let index = index_of(dir.path());
    let e = event(
        r#"type=AVC msg=audit(1795623516.359:5): apparmor="DENIED" operation="open" profile="t" name="/srv/b" pid=1 comm="t" requested_mask="r" denied_mask="r" fsuid=0 ouid=0"#,
    );
    let notes = explain(&index, &e, &Context::default()).profile.notes;
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].starts_with("include \"/usr/share/t/extra\" at ")
            && notes[0].contains("its rules were not read")
            && !notes[0].contains("refuse"),
        "{notes:?}"
    );
    assert!(
        notes[1].starts_with("include <abstractions/gone> at ") && notes[1].contains("will refuse"),
        "{notes:?}"
    );
}

/// Every printable character a path from a log can hold, written by `quote_path`, makes a rule
/// apparmor_parser compiles and whose DFA matches exactly that path. (`!` unquoted was a lexer
/// error: "Lexer found unexpected character: '!'".)
#[test]
fn quoted_paths_compile_and_match_only_themselves() {
    let Some(parser) = parser_bin() else {
        return;
    };
    let mut chars: Vec<char> = (0x20u8..0x7f)
        .map(char::from)
        .filter(|&c| c != '"')
        .collect();
    chars.extend(['é', '€']);
    let mut bad = Vec::new();
    for c in chars {
        let path = format!("/srv/a{c}b");
        let rule = armorwatch::profiles::suggest::quote_path(&path).unwrap();
        match try_compiled_dfa(&parser, "", &rule) {
            Ok(dfa) => {
                if !dfa.matches(&path) || (c != 'x' && dfa.matches("/srv/axb")) {
                    bad.push(format!("{rule}: does not match exactly {path}"));
                }
            }
            Err(e) => bad.push(format!("{rule}: {}", e.trim())),
        }
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// Regression: without a local/ include, the rule was inserted after the header's line, which
/// is outside the block when `{` is on the next line and after the `}` of a one-line block: the
/// suggestion did not compile. Now it goes before the block's `}`: it compiles, and reading the
/// edited file back puts the rule in that profile.
#[test]
fn suggestions_without_local_include_go_inside_blocks_of_any_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("t"),
        "profile one /usr/bin/one { /srv/x r, }\nprofile next /usr/bin/next\n{\n  /srv/x r,\n}\nprofile empty /usr/bin/empty {}\nprofile hat /usr/bin/hat {\n  ^h { /srv/x r, }\n}\n",
    )
    .unwrap();
    let index = index_of(root);
    for label in ["one", "next", "empty", "hat//h"] {
        let e = event(&format!(
            r#"type=AVC msg=audit(1795623516.359:5): apparmor="DENIED" operation="open" profile="{label}" name="/srv/new" pid=1 comm="t" requested_mask="r" denied_mask="r" fsuid=0 ouid=0"#
        ));
        let exp = explain(&index, &e, &Context::default());
        let mut s = exp.explanation.suggestion.expect("suggestion");
        assert_eq!(s.rule, "/srv/new r,", "{label}");
        let (copy, text) = edited_copy(root, "t", &s);
        let parsed = parser::parse_file("t", &text);
        assert!(
            parsed.errors.is_empty(),
            "{label}: {:?}\n{text}",
            parsed.errors
        );
        let again = explain(&index_of(copy.path()), &e, &Context::default());
        assert_eq!(
            again.explanation.verdict,
            Verdict::AllowedOnDisk,
            "{label}: {}\n{text}",
            again.explanation.summary
        );
        check_passes(root, &mut s, label);
    }
}

/// Regression: for `Px` without `-> name` the target profile was looked up by the exec'd path
/// as a name, so a profile that attaches to the file (`profile foo /usr/bin/foo`) was "not in
/// the tree: write one". It is found by its attachment, and the advice is to load it.
#[test]
fn px_finds_the_target_profile_by_its_attachment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("usr.bin.a"),
        "profile a /usr/bin/a {\n  /usr/bin/foo Px,\n  /usr/bin/bar Px,\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("usr.bin.foo"),
        "profile foo /usr/bin/{foo,foo2} {\n  /srv/** r,\n}\n",
    )
    .unwrap();
    let index = index_of(dir.path());
    let exec = |path: &str| {
        let e = event(&format!(
            r#"type=AVC msg=audit(1795623516.359:5): apparmor="DENIED" operation="exec" info="profile not found" error=-13 profile="a" name="{path}" pid=1 comm="a" requested_mask="x" denied_mask="x" fsuid=0 ouid=0 target="{path}""#
        ));
        explain(&index, &e, &Context::default()).explanation
    };
    let d = exec("/usr/bin/foo");
    assert_eq!(d.verdict, Verdict::ExecTargetProfileMissing);
    let advice = d.advice.unwrap();
    assert!(
        advice.starts_with("`foo` is declared at") && advice.contains("usr.bin.foo:1"),
        "{advice}"
    );
    // Nothing attaches to bar: write one.
    let advice = exec("/usr/bin/bar").advice.unwrap();
    assert!(advice.starts_with("no profile named"), "{advice}");
}

/// Each `rule` (a file rule's path, as written in a profile) is parsed and compiled by us and by
/// apparmor_parser, and every path of `paths` must match both or neither; `no_exec_target`: the
/// rule must not be read as having an exec target. Returns the number of comparisons.
fn same_as_the_dfa(parser: &Path, rules: &[&str], paths: &[&str], no_exec_target: bool) -> usize {
    let mut checked = 0;
    for rule in rules {
        let f = parser::parse_file("t", &format!("profile t {{\n  {rule} r,\n}}\n"));
        assert!(f.errors.is_empty(), "{rule}: {:?}", f.errors);
        let Some(parser::Item::Profile(p)) = f.items.first() else {
            panic!("{rule}: no profile");
        };
        let Some(parser::Item::Rule(r)) = p.body.first() else {
            panic!("{rule}: no rule");
        };
        let parser::RuleBody::File {
            path: Some(path),
            exec_target,
            ..
        } = &r.body
        else {
            panic!("{rule}: not a file rule: {:?}", r.body);
        };
        if no_exec_target {
            assert_eq!(*exec_target, None, "{rule}");
        }
        let ours = Glob::compile(path).unwrap_or_else(|e| panic!("{rule}: {e:?}"));
        let dfa = compiled_dfa(parser, "", rule);
        for p in paths {
            assert_eq!(
                ours.is_match(p),
                dfa.matches(p),
                "rule {rule} (read as {path}) vs {p}"
            );
            checked += 1;
        }
    }
    checked
}

/// Escapes and quotes in rule paths read as apparmor_parser reads them: a quoted `\*` is a
/// literal `*` (the quotes removed the backslash before), `\ ` is a space quoted or not (an
/// unquoted one split the word), and a `->` inside quotes is part of the path (it was taken for
/// an exec target). Our parser and matcher against the compiled DFA of the same rule text.
#[test]
fn escapes_and_quotes_in_rule_paths_read_like_apparmor_parser() {
    let Some(parser) = parser_bin() else {
        return;
    };
    let paths = [
        "/srv/a*b",
        "/srv/aXb",
        "/srv/a b",
        "/srv/a->b",
        "/srv/a\\b",
        "/srv/a\\ b",
        "/srv/a\"b",
        "/srv/ab",
    ];
    let rules = [
        r#""/srv/a\*b""#,
        r"/srv/a\*b",
        r#""/srv/a\ b""#,
        r"/srv/a\ b",
        r#""/srv/a b""#,
        r#""/srv/a->b""#,
        r#""/srv/a\\b""#,
        r"/srv/a\\b",
        r#""/srv/a*b""#,
    ];
    assert_eq!(
        same_as_the_dfa(&parser, &rules, &paths, true),
        9 * paths.len()
    );
}

/// Regression: a `deny link` rule made the link "not allowed" but the verdict was "no rule
/// matches", with a suggestion to add a link rule the deny would still beat. Now it is "a deny
/// rule wins", naming that rule; a link the deny does not cover is allowed.
#[test]
fn a_deny_link_rule_wins_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("usr.bin.t"),
        "profile t /usr/bin/t {\n  link /srv/l/** -> /srv/t/**,\n  deny link /srv/l/x -> /srv/t/secret,\n}\n",
    )
    .unwrap();
    let index = index_of(dir.path());
    let link = |target: &str| {
        let e = event(&format!(
            r#"type=AVC msg=audit(1795623516.359:5): apparmor="DENIED" operation="link" profile="t" name="/srv/l/x" pid=1 comm="ln" requested_mask="l" denied_mask="l" fsuid=0 ouid=0 target="{target}""#
        ));
        explain(&index, &e, &Context::default()).explanation
    };
    let d = link("/srv/t/secret");
    assert_eq!(d.verdict, Verdict::DenyRuleWins, "{}", d.summary);
    assert_eq!(
        d.closest_rules[0].rule,
        "deny link /srv/l/x -> /srv/t/secret,"
    );
    assert_eq!(d.closest_rules[0].line, 3);
    assert!(d.suggestion.is_none());
    assert_eq!(link("/srv/t/ok").verdict, Verdict::AllowedOnDisk);
}

/// Regression: an exec allowed only by an `owner` rule, of a file the task does not own, was
/// "no rule lets it execute", hiding the rule that nearly applies. It is the owner verdict.
#[test]
fn an_exec_only_an_owner_rule_allows_is_the_owner_verdict() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("usr.bin.t"),
        "profile t /usr/bin/t {\n  owner /srv/bin/* ix,\n}\n",
    )
    .unwrap();
    let index = index_of(dir.path());
    let exec = |ouid: u32| {
        let e = event(&format!(
            r#"type=AVC msg=audit(1795623516.359:5): apparmor="DENIED" operation="exec" profile="t" name="/srv/bin/tool" pid=1 comm="t" requested_mask="x" denied_mask="x" fsuid=1000 ouid={ouid}"#
        ));
        explain(&index, &e, &Context::default()).explanation
    };
    let d = exec(0);
    assert_eq!(d.verdict, Verdict::OwnerRuleDoesNotApply, "{}", d.summary);
    assert_eq!(d.closest_rules[0].rule, "owner /srv/bin/* ix,");
    assert!(
        d.summary.contains("uid 0") && d.summary.contains("fsuid is 1000"),
        "{}",
        d.summary
    );
    let rule = &d.suggestion.as_ref().expect("suggestion").rule;
    assert!(
        rule.starts_with("/srv/bin/tool ") && rule.contains('x'),
        "{rule}"
    );
}

/// Regression: an append denied on a near miss of a `rw` rule was suggested as `rwa` (the
/// near miss's `rw` merged with the missing `a`), which apparmor_parser rejects ("Conflict 'a'
/// and 'w' perms are mutually exclusive"). `w` covers `a`: the suggestion is `rw`, and compiles.
#[test]
fn an_append_near_a_write_rule_is_suggested_without_a() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("local")).unwrap();
    std::fs::write(root.join("local/foo"), "").unwrap();
    std::fs::write(
        root.join("foo"),
        "profile foo /usr/bin/foo {\n  /var/log/foo rw,\n  #include <local/foo>\n}\n",
    )
    .unwrap();
    let index = index_of(root);
    for (mask, rule) in [
        ("a", "/var/log/foo.log rw,"),
        ("wa", "/var/log/foo.log rw,"),
    ] {
        let e = event(&format!(
            r#"type=AVC msg=audit(1795623516.359:5): apparmor="DENIED" operation="open" profile="foo" name="/var/log/foo.log" pid=104 comm="foo" requested_mask="{mask}" denied_mask="{mask}" fsuid=0 ouid=0"#
        ));
        let exp = explain(&index, &e, &Context::default());
        assert_eq!(exp.explanation.verdict, Verdict::NoRuleMatches, "{mask}");
        let mut s = exp.explanation.suggestion.expect("suggestion");
        assert_eq!(s.rule, rule, "{mask}");
        check_passes(root, &mut s, mask);
    }
}

/// Regression: a hex-encoded name that is not UTF-8 (`/srv/f\xFFo`) is decoded with U+FFFD in
/// place of the byte, and the suggestion was `/srv/f\u{FFFD}o w,`: it compiles, and allows a
/// different file (the kernel matches bytes). No rule is suggested; the advice says why.
#[test]
fn a_name_that_is_not_utf8_gets_no_rule() {
    let exp = explain_fixture(
        r#"apparmor="DENIED" operation="open" profile="msmtp" name=2F7372762F66FF6F pid=1 comm="msmtp" requested_mask="w" denied_mask="w" fsuid=0 ouid=0"#,
    );
    assert_eq!(exp.event.name(), Some("/srv/f\u{FFFD}o"));
    assert_eq!(exp.explanation.verdict, Verdict::NoRuleMatches);
    assert!(
        exp.explanation.suggestion.is_none(),
        "{:?}",
        exp.explanation.suggestion
    );
    let advice = exp.explanation.advice.expect("advice");
    assert!(advice.contains("not valid UTF-8"), "{advice}");
}

/// Regression: escape sequences in rule paths were read as a `\` before one literal character,
/// so `/srv/a\040b` matched `/srv/a040b` and not `/srv/a b`, and `/srv/a\x2ab` matched
/// `/srv/ax2ab`. apparmor_parser decodes `\NNN` (octal), `\xHH`, `\dNNN` to the byte, a literal
/// even when it is a glob character. Our parser and matcher against the compiled DFA.
#[test]
fn numeric_escapes_in_rule_paths_read_like_apparmor_parser() {
    let Some(parser) = parser_bin() else {
        return;
    };
    let paths = [
        "/srv/a b",
        "/srv/a040b",
        "/srv/a*b",
        "/srv/aXb",
        "/srv/ax2ab",
        "/srv/a*",
        "/srv/aXY",
        "/srv/A4",
        "/srv/ 0",
        "/srv/{a,b}",
        "/srv/a",
        "/srv/B",
        "/srv/D",
        "/srv/",
        "/srv/xg",
    ];
    let rules = [
        r"/srv/a\040b",
        r#""/srv/a\040b""#,
        r"/srv/a\x2ab",
        r#""/srv/a\x2ab""#,
        r"/srv/a\d042b",
        r"/srv/a\052b",
        r#""/srv/a\052b""#,
        r"/srv/a\x2a*",
        r"/srv/\x414",
        r"/srv/\400",
        r#""/srv/\x7ba,b\x7d""#,
        r"/srv/{\x61,b}",
        r"/srv/[\x41-\x43]",
        r"/srv\x2f*",
        r"/srv/\xg",
    ];
    assert_eq!(
        same_as_the_dfa(&parser, &rules, &paths, false),
        15 * paths.len()
    );
    // The two cases of the report, against the DFA too.
    let dfa = compiled_dfa(&parser, "", r"/srv/a\040b");
    assert!(dfa.matches("/srv/a b") && !dfa.matches("/srv/a040b"));
    let dfa = compiled_dfa(&parser, "", r"/srv/a\x2ab");
    assert!(dfa.matches("/srv/a*b") && !dfa.matches("/srv/aXb"));
}

/// Regression: the header change for a disconnected path put `flags=(…)` before the line's last
/// `{`: inside the comment of `profile foo /usr/bin/foo { # see {upstream}` (it compiled, and
/// the profile still lacked the flag), and inside the attachment's `{bin,sbin}` when the block's
/// `{` is on the next line (a syntax error). Now the flag follows the attachment: the edited
/// file compiles, and read back the profile has the flag.
#[test]
fn the_disconnected_flag_goes_after_the_attachment() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("two"),
        "profile foo /usr/bin/foo { # see {upstream}\n  /srv/** r,\n}\nprofile bar /usr/{bin,sbin}/bar\n{\n  /srv/** r,\n}\n\
         profile baz /usr/bin/baz\n    flags=(complain) {\n  /srv/** r,\n}\n",
    )
    .unwrap();
    let index = index_of(root);
    for (label, header) in [
        // Flags on a line after the header's first: the flag joins them there (a second
        // group on the first line does not compile).
        ("baz", "flags=(complain,attach_disconnected) {"),
        (
            "foo",
            "profile foo /usr/bin/foo flags=(attach_disconnected) { # see {upstream}",
        ),
        (
            "bar",
            "profile bar /usr/{bin,sbin}/bar flags=(attach_disconnected)",
        ),
    ] {
        let e = event(&format!(
            r#"apparmor="DENIED" operation="open" info="Failed name lookup - disconnected path" error=-13 profile="{label}" name="srv/x" pid=1 comm="{label}" requested_mask="r" denied_mask="r" fsuid=0 ouid=0"#
        ));
        let d = explain(&index, &e, &Context::default()).explanation;
        assert_eq!(d.verdict, Verdict::DisconnectedPath, "{label}");
        let mut s = d.suggestion.expect("header change");
        assert_eq!(s.rule, header, "{label}");
        let (copy, _) = edited_copy(root, "two", &s);
        let again = explain(&index_of(copy.path()), &e, &Context::default()).explanation;
        let advice = again.advice.unwrap_or_default();
        assert!(advice.contains("already has"), "{label}: {advice}");
        check_passes(root, &mut s, label);
    }
}

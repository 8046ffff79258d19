//! Packaging: `check-config` and `run` exit 78 on a bad configuration, the shipped AppArmor
//! profile compiles with the real apparmor_parser, the generated man pages and completions cover
//! every command. The .deb itself is built, installed and purged by `packaging/ci-deb.sh`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_armorwatch");

fn armorwatch(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A configuration whose every path is inside `dir`, with an audit log source that exists (so
/// `run` gets past source selection) and `extra` appended.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("apparmor.d")).unwrap();
    std::fs::write(dir.join("audit.log"), "").unwrap();
    let text = format!(
        "[state]\ndir = \"{d}/state\"\n[profiles]\ndir = \"{d}/apparmor.d\"\ncheck_suggestions = false\n\
         [correlate]\nnoise_dir = \"{d}/noise.d\"\n[sources.audit_log]\npath = \"{d}/audit.log\"\n\
         [sinks.alerts]\ntype = \"file\"\npath = \"{d}/log/alerts.jsonl\"\n{extra}",
        d = dir.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_accepts_a_good_configuration() {
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(t.path(), "");
    let o = armorwatch(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with(&format!("{}: OK", cfg.display())), "{out}");
}

#[test]
fn unknown_key_exits_78_with_its_key_path_in_check_config_and_run() {
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(t.path(), "[sinks.alerts.policy]\nmin_sevrity = 3\n");
    for cmd in ["check-config", "run"] {
        let o = armorwatch(&[cmd, "--config", cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(78), "{cmd}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("sinks.alerts.policy.min_sevrity"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
    let cfg = write_config(t.path(), "[state]\nlost = 1\n");
    for cmd in ["check-config", "run"] {
        let o = armorwatch(&[cmd, "--config", cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(78), "{cmd}: {}", stderr(&o));
    }
}

#[test]
fn secret_readable_by_others_exits_78_in_check_config_and_run() {
    let t = tempfile::tempdir().unwrap();
    let secret = t.path().join("hook-key");
    std::fs::write(&secret, "k\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let cfg = write_config(
        t.path(),
        &format!(
            "[sinks.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"{}\"\n",
            secret.display()
        ),
    );
    for cmd in ["check-config", "run"] {
        let o = armorwatch(&[cmd, "--config", cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(78), "{cmd}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("sinks.hook.secret_file"),
            "{cmd}: {}",
            stderr(&o)
        );
    }
    // Fixed permissions: the check passes.
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = armorwatch(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_url_and_missing_file_exit_78() {
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(
        t.path(),
        "[sinks.slack]\ntype = \"slack\"\nurl = \"hooks.slack.com/services/x\"\n",
    );
    let o = armorwatch(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("`sinks.slack.url`"), "{}", stderr(&o));
    // The URL (often holding a token) is not echoed.
    assert!(!stderr(&o).contains("services/x"), "{}", stderr(&o));
    let missing = t.path().join("nope.toml");
    let o = armorwatch(&["check-config", "--config", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
}

/// A configuration file that cannot be read is a configuration error for every command that
/// reads one: `test-alert` exited 1 where `run`, `check-config` and `status` exit 78.
#[test]
fn a_missing_configuration_file_exits_78_everywhere() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("nope.toml");
    for cmd in ["check-config", "run", "replay", "status", "test-alert"] {
        let o = armorwatch(&[cmd, "--config", missing.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(78), "{cmd}: {}", stderr(&o));
        assert!(stderr(&o).contains("nope.toml"), "{cmd}: {}", stderr(&o));
    }
}

/// Malformed TOML: the parser's message quotes the offending line, here a webhook URL with
/// its token. Every command that reads the configuration exits 78 without printing it;
/// `test-alert` printed the parser's message as it was, excerpt and token included.
#[test]
fn a_malformed_configuration_never_prints_the_secret_on_its_line() {
    let t = tempfile::tempdir().unwrap();
    let cfg = write_config(
        t.path(),
        "[sinks.slack]\ntype = \"slack\"\nurl = \"https://hooks.slack.com/services/T0/B0/S3CRET\n",
    );
    for cmd in ["check-config", "run", "test-alert"] {
        let o = armorwatch(&[cmd, "--config", cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(78), "{cmd}: {}", stderr(&o));
        assert!(stderr(&o).contains("line 15"), "{cmd}: {}", stderr(&o));
        assert!(!stderr(&o).contains("S3CRET"), "{cmd}: {}", stderr(&o));
    }
}

/// A log file named on the `replay` command line that cannot be opened is no configuration
/// error: replay exited 78 with ``configuration error: `sources.file.path` `` (a key that does
/// not exist) with no configuration at all. It exits 2, as `parse` and `correlate` do.
#[test]
fn replay_of_a_missing_log_file_is_not_a_configuration_error() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("missing.log");
    let o = armorwatch(&["replay", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing.log"), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("configuration error"),
        "{}",
        stderr(&o)
    );
}

fn apparmor_parser() -> Option<PathBuf> {
    ["/usr/sbin/apparmor_parser", "/sbin/apparmor_parser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// The shipped profile compiles (against this machine's abstractions), and a broken copy does
/// not — so the check can fail.
#[test]
fn shipped_apparmor_profile_compiles() {
    let Some(parser) = apparmor_parser() else {
        common::skip("apparmor_parser not installed (Debian package apparmor)");
        return;
    };
    let profile =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/apparmor/usr.bin.armorwatch");
    let o = Command::new(&parser)
        .args(["-Q", "-K"])
        .arg(&profile)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let t = tempfile::tempdir().unwrap();
    let broken = t.path().join("usr.bin.armorwatch");
    let text = std::fs::read_to_string(&profile).unwrap();
    std::fs::write(&broken, text.replace("/dev/kmsg r,", "/dev/kmsg rq,")).unwrap();
    let o = Command::new(&parser)
        .args(["-Q", "-K"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!o.status.success(), "a broken profile compiled");
}

#[test]
fn generated_man_pages_and_completions_cover_every_command() {
    let t = tempfile::tempdir().unwrap();
    let o = armorwatch(&["generate-assets", t.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let main = std::fs::read_to_string(t.path().join("man/armorwatch.8")).unwrap();
    assert!(
        main.starts_with(".ie") || main.contains(".TH armorwatch 8"),
        "{main}"
    );
    let bash = std::fs::read_to_string(t.path().join("completions/armorwatch.bash")).unwrap();
    let zsh = std::fs::read_to_string(t.path().join("completions/_armorwatch")).unwrap();
    let fish = std::fs::read_to_string(t.path().join("completions/armorwatch.fish")).unwrap();
    for cmd in [
        "run",
        "check-config",
        "doctor",
        "test-alert",
        "replay",
        "explain",
    ] {
        // roff writes a hyphen as `\-`.
        assert!(
            main.contains(&cmd.replace('-', "\\-")),
            "armorwatch.8 lacks {cmd}"
        );
        let page = t.path().join(format!("man/armorwatch-{cmd}.8"));
        assert!(page.is_file(), "{} missing", page.display());
        for (shell, text) in [("bash", &bash), ("zsh", &zsh), ("fish", &fish)] {
            assert!(text.contains(cmd), "{shell} completion lacks {cmd}");
        }
    }
    // The hidden command is not advertised.
    assert!(!main.contains("generate\\-assets"));
    assert!(!bash.contains("generate-assets"));
}

/// Every configuration key the loader knows (a field of the raw config structs) is described
/// in armorwatch.toml(5). Regression: `[metrics] listen` and `[profiles] check_wait_ms` were
/// missing.
#[test]
fn the_man_page_describes_every_config_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read_to_string(root.join("src/config/raw.rs")).unwrap();
    let man = std::fs::read_to_string(root.join("packaging/man/armorwatch.toml.5")).unwrap();
    let keys: Vec<&str> = raw
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(": Option<").map(|(k, _)| k))
        .collect();
    assert!(keys.len() > 15, "{keys:?}");
    let words: std::collections::HashSet<&str> = man
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let missing: Vec<&&str> = keys.iter().filter(|k| !words.contains(**k)).collect();
    assert!(missing.is_empty(), "not in armorwatch.toml(5): {missing:?}");
}

/// The shipped AppArmor profile, loaded as the postinst loads it (the text, compiled against
/// the running kernel's features), lets `doctor` and `run` with the shipped configuration
/// (automatic sources) do their work: in one boot of Debian's kernel (`tests/vm/aa-vm`), not
/// one DENIED record of profile `armorwatch`, and doctor reads what it reports. Regression:
/// the profile allowed `network netlink raw` (the audit socket is a datagram socket: the
/// netlink source was refused) and `@{PROC}/net/netlink` (the kernel checks
/// `/proc/PID/net/netlink`: journald's audit socket was reported `unknown`).
#[test]
fn shipped_profile_confines_doctor_and_automatic_sources_without_a_denial() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let aa_vm = root.join("tests/vm/aa-vm");
    let have = |p: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p} || test -x /usr/sbin/{p}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !["qemu-system-x86_64", "apparmor_parser"]
        .iter()
        .all(|p| have(p))
        || !Path::new("/bin/busybox").exists()
    {
        common::skip(
            "needs qemu-system-x86_64, apparmor_parser and /bin/busybox (tests/deps/vm.apt)",
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    let out_dir = t.path().join("out");
    let share = tree.join("usr/share/armorwatch/apparmor");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
    std::fs::create_dir_all(tree.join("etc/armorwatch")).unwrap();
    std::fs::copy(
        root.join("packaging/apparmor/usr.bin.armorwatch"),
        share.join("usr.bin.armorwatch"),
    )
    .unwrap();
    std::fs::copy(
        root.join("config.example.toml"),
        tree.join("etc/armorwatch/config.toml"),
    )
    .unwrap();
    let aw = tree.join("usr/bin/armorwatch");
    common::stripped_copy(BIN, &aw);
    let out = Command::new(&aa_vm)
        .args(["-t", "300", "--journald", "-o"])
        .arg(&out_dir)
        .arg("-s")
        .arg(root.join("tests/vm/scenarios/confined-auto.sh"))
        .arg(&tree)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = stderr(&out);
    if out.status.code() == Some(125) && stderr.contains("apt-get update") {
        common::skip(&format!("aa-vm cannot download Debian's kernel: {stderr}"));
        return;
    }
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let files = out_dir.join("files");
    let read = |f: &str| std::fs::read_to_string(files.join(f)).unwrap_or_default();
    let (doctor, run_err) = (read("doctor.txt"), read("run.err"));
    assert_eq!(read("label").trim(), "armorwatch (enforce)", "{stdout}");
    assert_eq!(read("rc").trim(), "0", "{run_err}");
    assert!(run_err.contains("sources started; running"), "{run_err}");
    assert_eq!(
        read("denials.txt"),
        "",
        "the profile denied its own program"
    );
    assert!(
        doctor.contains("audit netlink multicast (CAP_AUDIT_READ): yes"),
        "{doctor}"
    );
    assert!(doctor.contains("journald audit socket: on"), "{doctor}");
    assert!(!doctor.contains("denied"), "{doctor}");
    assert!(
        run_err.contains("reading it too"),
        "netlink not chosen: {run_err}"
    );
}

//! `armorwatch doctor`: what this machine does with AppArmor records, what armorwatch can read,
//! and which sources it would choose and why.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use crate::sources;

/// Arguments of `armorwatch doctor` (none).
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {}

fn read_trim(path: &str) -> Result<String, String> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| e.to_string())
}

fn status(r: &Result<(), String>) -> String {
    match r {
        Ok(()) => "yes".into(),
        Err(e) => format!("no ({e})"),
    }
}

/// Run the subcommand.
pub fn run(_args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    println!("AppArmor");
    let enabled = read_trim("/sys/module/apparmor/parameters/enabled");
    println!(
        "  enabled in the kernel: {}",
        match &enabled {
            Ok(v) if v == "Y" => "yes".to_string(),
            Ok(v) => format!("no ({v})"),
            Err(e) => format!("no (/sys/module/apparmor: {e})"),
        }
    );
    let securityfs = Path::new("/sys/kernel/security/apparmor");
    println!(
        "  securityfs: {}",
        if securityfs.is_dir() {
            "mounted"
        } else {
            "not mounted (/sys/kernel/security/apparmor missing)"
        }
    );
    match fs::read_to_string(securityfs.join("profiles")) {
        Ok(text) => {
            let mut modes: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for line in text.lines() {
                let (name, mode) = match line.rsplit_once(" (") {
                    Some((n, m)) => (n.to_string(), m.trim_end_matches(')').to_string()),
                    None => (line.to_string(), "?".to_string()),
                };
                modes.entry(mode).or_default().push(name);
            }
            println!("  profiles loaded: {}", text.lines().count());
            for (mode, names) in &modes {
                let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
                let more = if names.len() > 8 {
                    format!(", … {} more", names.len() - 8)
                } else {
                    String::new()
                };
                println!("    {mode}: {} ({}{more})", names.len(), shown.join(", "));
            }
        }
        Err(e) => println!("  profiles loaded: unknown ({e}; reading it needs root)"),
    }
    println!(
        "  audit mode (/sys/module/apparmor/parameters/audit): {}",
        read_trim("/sys/module/apparmor/parameters/audit")
            .unwrap_or_else(|e| format!("unknown ({e})"))
    );

    println!("Where the kernel sends AppArmor records");
    let probe = sources::probe();
    match probe.auditd_pid {
        Some(pid) => println!(
            "  auditd: running (pid {pid}), logging to {}",
            probe.audit_log.display()
        ),
        None => {
            println!("  auditd: not running (records go to the kernel log, rate-limited by printk)")
        }
    }
    match fs::read_to_string("/proc/net/netlink") {
        Ok(text) => {
            let listeners = sources::netlink::audit_multicast_listeners(&text);
            if listeners.is_empty() {
                println!(
                    "  journald audit socket: off (no process listens on the audit multicast group)"
                );
            } else {
                let who: Vec<String> = listeners
                    .iter()
                    .map(|(p, c)| format!("{} (port {p})", c.as_deref().unwrap_or("?")))
                    .collect();
                let journald = listeners
                    .iter()
                    .any(|(_, c)| c.as_deref() == Some("systemd-journal"));
                println!(
                    "  journald audit socket: {} — audit multicast listeners: {}",
                    if journald {
                        "on (records also appear as _TRANSPORT=audit; duplicates are removed)"
                    } else {
                        "off"
                    },
                    who.join(", ")
                );
            }
        }
        Err(e) => println!("  journald audit socket: unknown (/proc/net/netlink: {e})"),
    }
    println!(
        "  printk rate limit: {} s interval, burst {}{}",
        read_trim("/proc/sys/kernel/printk_ratelimit").unwrap_or_else(|e| format!("unknown ({e})")),
        read_trim("/proc/sys/kernel/printk_ratelimit_burst")
            .unwrap_or_else(|e| format!("unknown ({e})")),
        if probe.auditd_pid.is_none() {
            " (applies: kernel-log records can be suppressed)"
        } else {
            ""
        }
    );

    println!("What armorwatch can read (uid {})", current_uid());
    println!(
        "  {}: {}",
        probe.audit_log.display(),
        status(&probe.audit_log_readable)
    );
    println!("  system journal: {}", status(&probe.journal));
    println!("  /dev/kmsg: {}", status(&probe.kmsg));
    println!(
        "  audit netlink multicast (CAP_AUDIT_READ): {}",
        status(&probe.netlink)
    );

    let selection = sources::select(&probe);
    println!("Sources armorwatch would choose when none is configured");
    if selection.sources.is_empty() {
        println!("  none");
    }
    for s in &selection.sources {
        println!("  {}", s.name());
    }
    println!("  because:");
    for r in &selection.reasons {
        println!("  - {r}");
    }
    Ok(ExitCode::SUCCESS)
}

fn current_uid() -> String {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .and_then(|u| u.split_whitespace().nth(1).map(str::to_string))
            })
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_listeners() {
        let text = "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n\
                    0000000000000000 9   4242       00000001 0        0        0     2        0        123\n\
                    0000000000000000 9   0          00000000 0        0        0     2        0        124\n\
                    0000000000000000 0   1          00000001 0        0        0     2        0        125\n";
        let l = sources::netlink::audit_multicast_listeners(text);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].0, 4242);
    }
}

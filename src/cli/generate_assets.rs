//! `armorwatch generate-assets DIR` (hidden): the packaged man pages (armorwatch(8) and one
//! armorwatch-COMMAND(8) per subcommand) and the bash, zsh and fish completions, all generated
//! from the clap definitions so they cannot drift from the program.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

/// Arguments of `armorwatch generate-assets`.
#[derive(Debug, clap::Args)]
pub struct GenerateAssetsArgs {
    /// Output directory: man/*.8 and completions/{armorwatch.bash,_armorwatch,armorwatch.fish}.
    pub dir: PathBuf,
}

/// Appended to armorwatch(8): what clap does not know.
const EXTRA: &str = r#".SH "EXIT STATUS"
.TP
0
Success.
.TP
1
A runtime failure (no readable source, an I/O error; \fBrun\fR: an output that could not be
opened at start for a reason that may pass, such as a full disk; \fBparse \-\-strict\fR: a
malformed line; \fBtest\-alert\fR: a sink that did not take the alert).
.TP
2
A usage error (unknown option or command); \fBparse\fR, \fBcorrelate\fR and \fBreplay\fR: a log
file named on the command line could not be read.
.TP
74
\fBreplay\fR met a read error (EX_IOERR): what was read was delivered, the rest of that input was
not; or it could not open an output for a reason that may pass (a full disk).
.TP
78
The configuration is wrong (EX_CONFIG): \fBcheck\-config\fR and \fBrun\fR print the error with its
TOML key path. The systemd unit does not restart the service after this status.
.SH FILES
.TP
/etc/armorwatch/config.toml
The configuration read by the packaged service; see \fBarmorwatch.toml\fR(5).
.TP
/etc/armorwatch/noise.d/*.toml
Noise-rule drop-ins.
.TP
/var/lib/armorwatch
State: source checkpoints, open incidents, the outbox of remote sinks.
.TP
/var/log/armorwatch/alerts.jsonl
Alerts written by the shipped configuration, one JSON object per line.
.TP
/etc/apparmor.d
The profile tree used to explain denials (read only).
.SH "SEE ALSO"
\fBarmorwatch.toml\fR(5), \fBapparmor\fR(7), \fBapparmor_parser\fR(8), \fBaa\-logprof\fR(8),
\fBsystemd.exec\fR(5); one page per command: \fBarmorwatch\-run\fR(8), \fBarmorwatch\-check\-config\fR(8), …
"#;

fn write_page(cmd: clap::Command, path: &Path, extra: &str) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .section("8")
        .manual("armorwatch")
        .render(&mut buf)
        .context("rendering a man page")?;
    buf.extend_from_slice(extra.as_bytes());
    std::fs::write(path, buf).with_context(|| format!("writing {}", path.display()))
}

/// Run the subcommand.
pub fn run(args: &GenerateAssetsArgs) -> anyhow::Result<ExitCode> {
    // Shell completion generators list hidden subcommands too: rebuild the command without them.
    let full = super::Cli::command();
    let mut cmd = clap::Command::new("armorwatch")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true);
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    for sub in full
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        cmd = cmd.subcommand(sub.clone());
    }
    cmd.build();
    let man = args.dir.join("man");
    let completions = args.dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    write_page(cmd.clone(), &man.join("armorwatch.8"), EXTRA)?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("armorwatch-{}", sub.get_name());
        let page = sub
            .clone()
            .display_name(&name)
            .bin_name(format!("armorwatch {}", sub.get_name()));
        write_page(
            page,
            &man.join(format!("{name}.8")),
            ".SH \"SEE ALSO\"\n\\fBarmorwatch\\fR(8), \\fBarmorwatch.toml\\fR(5)\n",
        )?;
    }
    for (shell, file) in [
        (Shell::Bash, "armorwatch.bash"),
        (Shell::Zsh, "_armorwatch"),
        (Shell::Fish, "armorwatch.fish"),
    ] {
        let path = completions.join(file);
        let mut out =
            std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
        clap_complete::generate(shell, &mut cmd, "armorwatch", &mut out);
    }
    println!("wrote {} and {}", man.display(), completions.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    /// armorwatch(8)'s EXIT STATUS lists every status the commands exit with: 74 (a replay
    /// that met a read error, in the README) and 2 (a usage error; `parse` and `correlate`
    /// when an input file cannot be read) were missing.
    #[test]
    fn the_man_page_lists_every_exit_status() {
        for code in [0, 1, 2, super::super::EXIT_IOERR, super::super::EXIT_CONFIG] {
            assert!(
                super::EXTRA.contains(&format!(".TP\n{code}\n")),
                "exit status {code} is not in armorwatch(8)"
            );
        }
    }
}

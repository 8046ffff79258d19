//! Human output for an [`Explanation`], in the style of compiler diagnostics: the verdict, each
//! closest rule with `file:line:col`, its source line and a caret under the difference, then the
//! line to add and the reload command.

use std::fmt::Write as _;

use super::explain::{Explanation, sanitize};
use super::index::Index;
use super::suggest::CheckStatus;

/// Render one explanation as text (ends with a newline).
pub fn render_text(exp: &Explanation, index: &Index) -> String {
    let mut out = String::new();
    let ev = &exp.event;
    let d = &exp.explanation;
    let op = ev.operation().unwrap_or("?");
    let object = if ev.class() == Some("file") {
        d.object
            .as_deref()
            .or(ev.name())
            .map(sanitize)
            .unwrap_or_default()
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{}: {} {} `{}`{}{}",
        ev.kind.as_str(),
        sanitize(&exp.profile.name),
        sanitize(op),
        sanitize(&d.needed),
        if object.is_empty() { "" } else { " on " },
        object
    );
    match (&exp.profile.file, exp.profile.line) {
        (Some(file), Some(line)) => {
            let mut extra = Vec::new();
            if let Some(k) = exp.profile.kind {
                extra.push(k.to_string());
            }
            if let Some(m) = &exp.profile.mode {
                match exp.profile.mode_source {
                    Some("declared") => extra.push(format!("{m} (declared)")),
                    _ => extra.push(m.clone()),
                }
            }
            if let Some(p) = &exp.profile.package {
                extra.push(format!("package {p}"));
            }
            if exp.profile.modified_locally == Some(true) {
                extra.push("modified locally".into());
            }
            if let Some(b) = &exp.profile.binary {
                match &exp.profile.binary_package {
                    Some(p) => extra.push(format!("binary {} from {p}", sanitize(b))),
                    None => extra.push(format!("binary {}", sanitize(b))),
                }
            }
            let _ = writeln!(out, "  --> {file}:{line} ({})", extra.join(", "));
        }
        _ => {
            let _ = writeln!(out, "  --> profile not found under {}", index.base());
        }
    }
    for note in &exp.profile.notes {
        let _ = writeln!(out, "  note: {}", sanitize(note));
    }
    let _ = writeln!(out, "verdict: {}", d.verdict.phrase());
    let _ = writeln!(out, "  {}", d.summary);
    for (i, rule) in d.closest_rules.iter().enumerate() {
        let title = if i == 0 { "closest rule" } else { "also close" };
        let _ = writeln!(out, "{title}: {}:{}:{}", rule.file, rule.line, rule.column);
        let line_no = rule.line.to_string();
        let pad = " ".repeat(line_no.len());
        let _ = writeln!(out, "{pad} |");
        match index.line(&rule.rel_file, rule.line) {
            Some(src) => {
                let _ = writeln!(out, "{line_no} | {}", src.replace('\t', " "));
                match rule.caret {
                    Some((col, width)) => {
                        let _ = writeln!(
                            out,
                            "{pad} | {}{} {}",
                            " ".repeat(col),
                            "^".repeat(width),
                            rule.reason
                        );
                    }
                    None => {
                        let _ = writeln!(out, "{pad} = {}", rule.reason);
                    }
                }
            }
            None => {
                let _ = writeln!(out, "{line_no} | {}", rule.rule);
                let _ = writeln!(out, "{pad} = {}", rule.reason);
            }
        }
    }
    if let Some(s) = &d.suggestion {
        let _ = writeln!(out, "help: add to {}:", s.file);
        if let Some(p) = &s.placement {
            let _ = writeln!(out, "      ({p})");
        }
        let _ = writeln!(out, "        {}", s.rule);
        let _ = writeln!(out, "      then reload: {}", s.reload);
        let check = match s.check {
            CheckStatus::Passed => "passed".to_string(),
            CheckStatus::Failed => format!(
                "FAILED: {}",
                s.check_message
                    .as_deref()
                    .unwrap_or("apparmor_parser rejected it")
            ),
            CheckStatus::Skipped => match &s.check_message {
                Some(m) => format!("skipped ({m})"),
                None => "skipped".into(),
            },
        };
        let _ = writeln!(out, "      compile check with apparmor_parser: {check}");
    }
    if let Some(a) = &d.advice {
        let _ = writeln!(out, "advice: {}", sanitize(a));
    }
    out
}

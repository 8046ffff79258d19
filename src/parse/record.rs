//! Turning one recognised record into an [`Event`] (AppArmor records) or into process details
//! (SYSCALL, PROCTITLE, CWD, PATH companions).

use super::fields::{self, FieldError, RawField, Style};
use super::line::{Envelope, RecordType};
use crate::event::{AuditStamp, Event, Fields, Kind, PathItem, Process, Source};

/// Why an AppArmor-looking record was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The fields could not be split.
    #[error(transparent)]
    Fields(#[from] FieldError),
    /// `apparmor=` has a value AppArmor never writes.
    #[error("unknown apparmor= value {0:?}")]
    UnknownKind(String),
    /// A field that must be a number is not.
    #[error("field `{key}` is not a number: {value:?}")]
    NotANumber {
        /// The key.
        key: &'static str,
        /// The value (shortened).
        value: String,
    },
}

/// The outcome for an AppArmor-candidate record.
#[derive(Debug)]
pub enum Built {
    /// An AppArmor event.
    Event(Box<Event>),
    /// Not AppArmor after all (a SELinux AVC, a legacy free-text record).
    NotAppArmor,
    /// A legacy free-text record (`REJECTING r access to …`), accepted and ignored.
    LegacyText,
}

fn collect(raw: &[RawField<'_>], interpreted: bool) -> Fields {
    let bytes = raw.iter().map(|f| f.key.len() + f.value.len()).sum();
    let mut f = Fields::with_capacity(raw.len(), bytes);
    for field in raw {
        let value = if interpreted {
            std::borrow::Cow::Borrowed(field.value)
        } else {
            fields::decode_value(field)
        };
        f.push(field.key, &value);
    }
    f
}

fn split_enriched(body: &str) -> (&str, Option<&str>) {
    match memchr::memchr(0x1d, body.as_bytes()) {
        Some(p) => (&body[..p], Some(&body[p + 1..])),
        None => (body, None),
    }
}

/// Build an event from an AppArmor-candidate record (AVC, USER_AVC, legacy types, stamp-less).
pub fn build(env: &Envelope<'_>, raw_line: &str, source: &Source) -> Result<Built, RecordError> {
    let record_type = env.record_type.unwrap_or(RecordType::Avc);
    if record_type == RecordType::LegacyText {
        return Ok(Built::LegacyText);
    }
    let (body, enriched) = split_enriched(env.body);
    let style = if env.interpreted {
        Style::Interpreted
    } else {
        Style::Raw
    };
    // A USER_AVC whose `msg='…` was cut by a newline and never continued: close it. Only a
    // `msg='` before the `apparmor=` key opens one; a value after it may hold `msg='` (a kernel
    // record's `name=` is not hex-encoded for a `'`).
    let closed;
    let opened = super::line::find_apparmor_key(body).and_then(|at| body[..at].rfind("msg='"));
    let body = match opened {
        Some(p) if !body[p + 5..].contains('\'') => {
            closed = format!("{body}'");
            closed.as_str()
        }
        _ => body,
    };
    let raw_fields = fields::split(body, style)?;
    // USER_AVC: the AppArmor record is inside msg='…'; the outer fields belong to the daemon.
    let inner_msg = raw_fields
        .iter()
        .position(|f| f.key == "msg" && f.value.contains("apparmor="));
    let (fields, outer) = match inner_msg {
        Some(idx) => {
            let inner_raw = fields::split(raw_fields[idx].value, style)?;
            let outer: Vec<RawField<'_>> = raw_fields
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != idx)
                .map(|(_, f)| f.clone())
                .collect();
            (
                collect(&inner_raw, env.interpreted),
                Some(collect(&outer, env.interpreted)),
            )
        }
        None => (collect(&raw_fields, env.interpreted), None),
    };
    let kind = match fields.get("apparmor") {
        Some(v) => match Kind::from_apparmor_value(v) {
            Some(k) => k,
            None => return Err(RecordError::UnknownKind(shorten(v))),
        },
        None => match record_type {
            RecordType::Legacy(n) => match Kind::from_legacy_type(n) {
                Some(k) => k,
                None => return Ok(Built::NotAppArmor),
            },
            _ => return Ok(Built::NotAppArmor),
        },
    };
    for key in ["pid", "fsuid", "ouid"] {
        if let Some(v) = fields.get(key) {
            if !env.interpreted && v.parse::<u64>().is_err() {
                return Err(RecordError::NotANumber {
                    key,
                    value: shorten(v),
                });
            }
        }
    }
    let interpreted = match enriched {
        Some(text) => {
            let raw = fields::split(text, Style::Raw).unwrap_or_default();
            Some(collect(&raw, true))
        }
        None => None,
    };
    let audit = env.stamp.map(|s| AuditStamp {
        epoch: s.epoch,
        millis: s.millis,
        serial: s.serial,
        record_type: record_type.number(),
        node: env.node.map(str::to_string),
    });
    Ok(Built::Event(Box::new(Event {
        kind,
        audit,
        fields,
        outer,
        interpreted,
        process: None,
        host: env.host.or(env.node).map(str::to_string),
        source: source.clone(),
        raw: vec![raw_line.to_string()],
    })))
}

fn shorten(v: &str) -> String {
    let mut end = v.len().min(64);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v[..end].to_string()
}

/// PATH items kept per event. A syscall names a handful of paths (rename: four); more come
/// only from forged records.
pub const MAX_PATHS: usize = 32;

/// Merge a companion record (SYSCALL, PROCTITLE, CWD, PATH) into `process`. Malformed companions
/// are ignored: they only enrich an event.
pub fn merge_companion(process: &mut Process, env: &Envelope<'_>) {
    let (body, _) = split_enriched(env.body);
    let style = if env.interpreted {
        Style::Interpreted
    } else {
        Style::Raw
    };
    let Ok(raw) = fields::split(body, style) else {
        return;
    };
    let get = |key: &str| raw.iter().find(|f| f.key == key);
    let text = |key: &str| {
        get(key).map(|f| {
            if env.interpreted {
                f.value.to_string()
            } else {
                fields::decode_value(f).into_owned()
            }
        })
    };
    let num = |key: &str| get(key).and_then(|f| f.value.parse::<u32>().ok());
    match env.record_type {
        Some(RecordType::Syscall) => {
            // One pass over the ~30 fields of a SYSCALL record.
            for f in &raw {
                let value = || {
                    if env.interpreted {
                        f.value.to_string()
                    } else {
                        fields::decode_value(f).into_owned()
                    }
                };
                let number = || f.value.parse::<u32>().ok();
                match f.key {
                    "exe" => process.exe = Some(value()),
                    "comm" => process.comm = Some(value()),
                    "pid" => process.pid = number(),
                    "ppid" => process.ppid = number(),
                    "uid" => process.uid = number(),
                    "auid" => process.auid = number(),
                    "ses" => process.ses = number(),
                    "tty" => process.tty = Some(value()),
                    "subj" => process.subj = Some(value()),
                    "syscall" => process.syscall = Some(value()),
                    "success" => process.success = Some(value()),
                    "exit" => process.exit = Some(value()),
                    "key" => process.key = Some(value()).filter(|k| k != "(null)"),
                    _ => {}
                }
            }
        }
        Some(RecordType::Proctitle) => {
            if let Some(f) = get("proctitle") {
                process.cmdline = Some(if env.interpreted {
                    f.value.split(' ').map(str::to_string).collect()
                } else {
                    fields::decode_proctitle(f.value, f.quote.is_some())
                });
            }
        }
        Some(RecordType::Cwd) => process.cwd = text("cwd"),
        Some(RecordType::Path) => {
            let item = PathItem {
                item: num("item"),
                name: text("name"),
                inode: get("inode").and_then(|f| f.value.parse().ok()),
                mode: text("mode"),
                ouid: num("ouid"),
                nametype: text("nametype"),
            };
            // The same PATH record twice (journald's kernel and audit transports) is one path.
            if let Some(same) = process
                .paths
                .iter_mut()
                .find(|p| item.item.is_some() && p.item == item.item)
            {
                *same = item;
                return;
            }
            if process.paths.len() >= MAX_PATHS {
                return;
            }
            let at = process
                .paths
                .iter()
                .position(|p| p.item > item.item)
                .unwrap_or(process.paths.len());
            process.paths.insert(at, item);
        }
        _ => {}
    }
}

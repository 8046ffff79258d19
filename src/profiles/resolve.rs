//! Label → declaration: which profile in the tree a record's `profile=`/`label=` names.
//!
//! Labels come in several shapes: a plain name (`msmtp`), a path-named profile
//! (`/usr/sbin/httpd2-prefork`), hats and children (`a//b`), the null profile of a failed exec
//! transition (`a//null-/usr/bin/x`), namespaced labels (`:ns:name`, `:ns://name`) and stacks
//! (`a//&b`, `a//&:ns:b`). Resolution goes through the parsed declarations only, never through
//! file names.

use super::index::Index;

/// One component of a (possibly stacked) label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelPart {
    /// The namespace (`lxd-c1_<var-snap-lxd-common-lxd>`), when the label had `:ns:`.
    pub namespace: Option<String>,
    /// The profile path: `["msmtp", "helpers"]` for `msmtp//helpers`.
    pub path: Vec<String>,
}

impl LabelPart {
    /// The full name as declared in the tree (`a//b`).
    pub fn name(&self) -> String {
        self.path.join("//")
    }
}

/// Split a label into its stacked parts and their hierarchy. A trailing ` (enforce)` /
/// ` (complain)` mode is dropped.
pub fn parse_label(label: &str) -> Vec<LabelPart> {
    let label = label.trim();
    let label = match label.rfind(" (") {
        Some(p) if label.ends_with(')') => &label[..p],
        _ => label,
    };
    let mut parts = Vec::new();
    for stacked in label.split("//&") {
        let mut s = stacked;
        let mut namespace = None;
        if let Some(rest) = s.strip_prefix(':')
            && let Some(end) = rest.find(':')
        {
            namespace = Some(rest[..end].to_string());
            s = rest[end + 1..].trim_start_matches("//");
        }
        let path = split_hierarchy(s);
        if !path.is_empty() {
            parts.push(LabelPart { namespace, path });
        }
    }
    parts
}

/// Split `a//b//c` into components; a `null-…` component keeps the rest of the label, since the
/// name after `null-` is a path that itself contains slashes.
fn split_hierarchy(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        if rest.starts_with("null-") {
            out.push(rest.to_string());
            break;
        }
        match rest.find("//") {
            Some(p) => {
                out.push(rest[..p].to_string());
                rest = &rest[p + 2..];
            }
            None => {
                if !rest.is_empty() {
                    out.push(rest.to_string());
                }
                break;
            }
        }
    }
    out
}

/// Result of resolving a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The declaration found, as an index into [`Index::profiles`].
    pub profile: Option<usize>,
    /// The label component that was resolved (the first of a stack that is in the tree).
    pub part: Option<LabelPart>,
    /// For `…//null-X`: the binary whose exec had no matching rule, with the parent resolved.
    pub null_exec: Option<String>,
    /// Facts worth telling (stacking, namespaces, null profiles).
    pub notes: Vec<String>,
}

/// Resolve a label against the index.
pub fn resolve(index: &Index, label: &str) -> Resolution {
    let parts = parse_label(label);
    let mut res = Resolution {
        profile: None,
        part: None,
        null_exec: None,
        notes: Vec::new(),
    };
    if parts.len() > 1 {
        res.notes.push(format!(
            "stacked label: {} profiles confine the task and each must allow the access",
            parts.len()
        ));
    }
    for part in &parts {
        let mut path = part.path.clone();
        let mut null_exec = None;
        if let Some(last) = path.last()
            && let Some(target) = last.strip_prefix("null-")
        {
            null_exec = Some(target.to_string());
            path.pop();
        }
        // Try the full name with and without the namespace prefix as written in the tree.
        let mut names = vec![path.join("//")];
        if let Some(ns) = &part.namespace {
            names.insert(0, format!(":{ns}:{}", path.join("//")));
            names.insert(1, format!(":{ns}://{}", path.join("//")));
        }
        // Fall back to the nearest declared ancestor (a hat created by change_hat at run time).
        let mut found = None;
        let mut depth = path.len();
        while depth > 0 && found.is_none() {
            for n in &names {
                let candidate: String = if depth == path.len() {
                    n.clone()
                } else {
                    let prefix = path[..depth].join("//");
                    match &part.namespace {
                        Some(ns) if n.starts_with(':') => format!(":{ns}:{prefix}"),
                        _ => prefix,
                    }
                };
                if let Some(&i) = index.by_name(&candidate).first() {
                    found = Some(i);
                    break;
                }
            }
            if found.is_none() {
                depth -= 1;
            }
        }
        if let Some(i) = found {
            if depth < path.len() {
                res.notes.push(format!(
                    "`{}` is not declared in the tree; using its parent `{}`",
                    path.join("//"),
                    path[..depth].join("//")
                ));
            }
            if let Some(ns) = &part.namespace {
                res.notes.push(format!("label is in namespace `{ns}`"));
            }
            if let Some(t) = &null_exec {
                res.notes.push(format!(
                    "`null-{t}`: the task exec'd {t} with no x rule matching it, so it runs under a null profile"
                ));
            }
            res.profile = Some(i);
            res.part = Some(part.clone());
            res.null_exec = null_exec;
            return res;
        }
    }
    res.part = parts.into_iter().next();
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiles::index::{Index, ProfileTree};
    use std::sync::Arc;

    #[test]
    fn label_shapes() {
        let p = parse_label("msmtp//helpers");
        assert_eq!(p[0].path, vec!["msmtp", "helpers"]);
        let p = parse_label("/usr/bin/foo//null-/usr/bin/bar");
        assert_eq!(p[0].path, vec!["/usr/bin/foo", "null-/usr/bin/bar"]);
        let p = parse_label(":lxd-c1_<var-snap-lxd-common-lxd>://unconfined");
        assert_eq!(
            p[0].namespace.as_deref(),
            Some("lxd-c1_<var-snap-lxd-common-lxd>")
        );
        assert_eq!(p[0].path, vec!["unconfined"]);
        let p = parse_label("docker-default//&:ns:inner (enforce)");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].namespace.as_deref(), Some("ns"));
        assert_eq!(p[1].path, vec!["inner"]);
    }

    #[test]
    fn resolves_through_declarations() {
        let mut files = std::collections::BTreeMap::new();
        files.insert(
            "weird-file-name".to_string(),
            Arc::from("profile msmtp /usr/bin/msmtp {\n  profile helpers {\n  }\n}\n/usr/sbin/x {\n ^h {\n }\n}\n"),
        );
        let idx = Index::build(&ProfileTree {
            base: "/etc/apparmor.d".into(),
            files,
            disabled: Default::default(),
            dirs: Default::default(),
        });
        let r = resolve(&idx, "msmtp//helpers");
        assert_eq!(
            idx.profiles()[r.profile.expect("found")].name,
            "msmtp//helpers"
        );
        let r = resolve(&idx, "/usr/sbin/x//h");
        assert_eq!(idx.profiles()[r.profile.expect("found")].decl.span.line, 6);
        let r = resolve(&idx, "msmtp//null-/usr/bin/zsh");
        assert_eq!(idx.profiles()[r.profile.expect("found")].name, "msmtp");
        assert_eq!(r.null_exec.as_deref(), Some("/usr/bin/zsh"));
        let r = resolve(&idx, "msmtp//runtime_hat");
        assert_eq!(idx.profiles()[r.profile.expect("found")].name, "msmtp");
        let r = resolve(&idx, "other//&msmtp");
        assert_eq!(idx.profiles()[r.profile.expect("found")].name, "msmtp");
        assert!(resolve(&idx, "usr.bin.msmtp").profile.is_none());
    }
}

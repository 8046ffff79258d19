//! Fuzz target: the profile parser and index (`armorwatch::profiles`). The input is a profile
//! file in a small tree that also holds an abstraction it may include (and itself); the parser,
//! the index and every profile's effective rule set must not panic or loop.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use armorwatch::profiles::{Index, ProfileTree, parser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parser::parse_file("usr.bin.fuzz", &text);
    let mut files = BTreeMap::new();
    files.insert("usr.bin.fuzz".to_string(), Arc::<str>::from(text.as_ref()));
    files.insert(
        "abstractions/base".to_string(),
        Arc::<str>::from("  /etc/ld.so.cache r,\n  include if exists <abstractions/base.d>\n"),
    );
    files.insert("tunables/global".to_string(), Arc::<str>::from("@{HOME}=/home/*/ /root/\n"));
    let mut dirs = BTreeSet::new();
    dirs.insert("abstractions".to_string());
    dirs.insert("tunables".to_string());
    let tree = ProfileTree {
        base: "/etc/apparmor.d".to_string(),
        files,
        disabled: BTreeSet::new(),
        dirs,
    };
    let index = Index::build(&tree);
    for i in 0..index.profiles().len() {
        let _ = index.effective(i);
    }
});

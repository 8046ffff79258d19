//! auditd's log (`/var/log/audit/audit.log`): followed with [`super::tail`], rotation-safe and
//! resumable; the parser assembles each AppArmor record with its SYSCALL/PROCTITLE/CWD/PATH.

use std::path::PathBuf;

use super::tail::{self, TailSpec};
use super::{SourceError, SourceHandle};
use crate::checkpoint::Position;
use crate::pipeline::{BatchSender, Mode, StopSignal};

/// Start following the audit log.
pub fn start(
    path: PathBuf,
    position: Option<Position>,
    mode: Mode,
    tx: BatchSender,
    stop: StopSignal,
) -> Result<SourceHandle, SourceError> {
    let spec = TailSpec {
        name: "audit_log",
        path,
        position,
        checkpointed: true,
        whole: false,
    };
    tail::start(spec, mode, tx, stop)
}

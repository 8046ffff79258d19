"""Shared set-up of the bench scripts (imported from their own directory)."""
import json, os


def followed_audit_log(d):
    """An empty d/audit.log and a d/state/checkpoints.json that starts `armorwatch run` at its
    beginning (without it, run starts at the end of an existing file). Returns the log's path."""
    log = os.path.join(d, "audit.log")
    open(log, "w").close()
    st = os.stat(log)
    os.makedirs(os.path.join(d, "state"), exist_ok=True)
    with open(os.path.join(d, "state", "checkpoints.json"), "w") as f:
        json.dump({"version": 1, "sources": {"audit_log": {"kind": "file", "path": log, "dev": st.st_dev,
                                                            "ino": st.st_ino, "offset": 0, "line": 0}}}, f)
    return log

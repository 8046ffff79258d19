#!/usr/bin/python3
"""A burst of new suggestions through `armorwatch run`: how long until the last alert is out,
and how many alerts carry their compile check's result.

N msmtp denials, each of its own path (so each its own incident and suggested rule for
local/usr.bin.msmtp), are appended at once to a followed audit.log; profiles from
tests/fixtures/profiles; flood cap off. Measured from the append to the N-th
`incident.opened` in the file sink. The floor it is compared with: N times one
`apparmor_parser -Q -K` of the profile, the least an inline check of each would cost.

usage: check_burst.py ARMORWATCH_BINARY [N]
"""
import collections, json, os, shutil, signal, subprocess, sys, tempfile, time

from benchlib import followed_audit_log

binary = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 30
here = os.path.dirname(os.path.abspath(__file__))
profiles = os.path.join(here, "..", "tests", "fixtures", "profiles", "etc", "apparmor.d")
d = tempfile.mkdtemp(prefix="aw-check-")
log = followed_audit_log(d)
out = os.path.join(d, "alerts.jsonl")
with open(os.path.join(d, "c.toml"), "w") as f:
    f.write(f'''[state]
dir = "{d}/state"
[sources.audit_log]
path = "{log}"
[correlate]
max_alerts_per_minute = 0
[profiles]
dir = "{profiles}"
[sinks.alerts]
type = "file"
path = "{out}"
''')


def avc(i, profile, name):
    return (f'type=AVC msg=audit(1700000000.{i % 1000:03d}:{i + 1}): apparmor="DENIED" '
            f'operation="mknod" profile="{profile}" name="{name}" pid={i + 100} comm="msmtp" '
            f'requested_mask="c" denied_mask="c" fsuid=0 ouid=0\n')


def opened():
    try:
        with open(out) as f:
            return [json.loads(l) for l in f if '"incident.opened"' in l]
    except FileNotFoundError:
        return []


def wait_opened(want, limit_s):
    deadline = time.monotonic() + limit_s
    while len(opened()) < want:
        if time.monotonic() > deadline:
            raise SystemExit(f"check_burst: {len(opened())} of {want} alerts after {limit_s} s")
        time.sleep(0.005)


aw = subprocess.Popen([binary, "run", "--config", os.path.join(d, "c.toml")],
                      stderr=open(os.path.join(d, "run.err"), "w"))
# Ready: a denial of a profile the tree lacks (no suggestion, so no check) is out as an alert.
with open(log, "a") as f:
    f.write(avc(0, "/usr/bin/not-in-tree", "/x"))
wait_opened(1, 30)
t0 = time.monotonic()
with open(log, "a") as f:
    f.write("".join(avc(i, "msmtp", f"/var/log/msmtp-{i}.log") for i in range(1, n + 1)))
wait_opened(n + 1, 600)
took = time.monotonic() - t0
aw.send_signal(signal.SIGTERM)
aw.wait()
checks = collections.Counter(a["explanation"]["suggestion"]["check"] for a in opened()[1:])
t1 = time.monotonic()
subprocess.run(["apparmor_parser", "-Q", "-K", "--base", profiles,
                os.path.join(profiles, "usr.bin.msmtp")], check=True, stderr=subprocess.DEVNULL)
one = time.monotonic() - t1
shutil.rmtree(d)
print(f"check burst: {n} new suggestions, last alert after {took:.2f} s; checks in the opened "
      f"alerts: {dict(sorted(checks.items()))}; inline floor {n} x {one * 1000:.0f} ms = "
      f"{n * one:.2f} s")

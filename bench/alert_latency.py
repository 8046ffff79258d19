#!/usr/bin/env python3
"""Append-to-alert latency of `armorwatch run`, through the whole pipeline (parser, correlator,
explainer, file sink of alerts).

Each appended AppArmor denial has its own profile, so it opens a new incident and produces one
`incident.opened` alert; the time from the append to that alert's line in the file sink is
measured. The flood cap is off (`max_alerts_per_minute = 0`) so that no alert is held back.

  audit    append AVC + SYSCALL + PROCTITLE (no EOE, as auditd writes a kernel AVC) to a
           followed audit.log
  journald write a kernel-transport journal entry (export format) into a running
           `systemd-journal-remote` that appends to a journal file armorwatch follows

usage: alert_latency.py ARMORWATCH_BINARY audit|journald [N] [PROFILES_DIR]
Prints p50/p90/p99/max in milliseconds.
"""
import os, shutil, signal, subprocess, sys, tempfile, time

from benchlib import followed_audit_log

binary, mode = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 500
profiles = sys.argv[4] if len(sys.argv) > 4 else None
d = tempfile.mkdtemp(prefix="aw-alat-")
out = os.path.join(d, "alerts.jsonl")
os.makedirs(os.path.join(d, "state"))
conf = f'[state]\ndir = "{d}/state"\ncheckpoint_interval_ms = 1000\n'
conf += "[correlate]\nmax_alerts_per_minute = 0\n"
if profiles:
    conf += f'[profiles]\ndir = "{profiles}"\n'
writer = None
if mode == "audit":
    log = followed_audit_log(d)
    conf += f'[sources.audit_log]\npath = "{log}"\n'
elif mode == "journald":
    jdir = os.path.join(d, "journal")
    os.makedirs(jdir)
    remote = "/lib/systemd/systemd-journal-remote"
    writer = subprocess.Popen([remote, "-o", os.path.join(jdir, "remote.journal"), "-"],
                              stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    conf += f'[sources.journald]\ndirectory = "{jdir}"\n'
else:
    raise SystemExit("mode: audit or journald")
conf += f'[sinks.alerts]\ntype = "file"\npath = "{out}"\n'
with open(os.path.join(d, "c.toml"), "w") as f:
    f.write(conf)

BOOT = "3b1f1d6f0a9e4c0f8d2b7c1e5a4f9d21"


def avc(s):
    return (f'apparmor="DENIED" operation="open" profile="/usr/bin/lat{s}" name="/data/{s}" pid=42 '
            f'comm="b" requested_mask="r" denied_mask="r" fsuid=0 ouid=0')


def append(s):
    t = "%d.%03d:%d" % (1700000000 + s // 1000, s % 1000, s + 1)
    if mode == "audit":
        data = (f"type=AVC msg=audit({t}): {avc(s)}\n"
                f"type=SYSCALL msg=audit({t}): arch=c000003e syscall=257 success=no exit=-13 ppid=1 "
                f'pid=42 auid=0 uid=0 ses=1 comm="b" exe="/usr/bin/b" subj=/usr/bin/lat{s} key=(null)\n'
                f'type=PROCTITLE msg=audit({t}): proctitle="/usr/bin/b"\n')
        t0 = time.perf_counter()
        with open(log, "a") as f:
            f.write(data)
        return t0
    usec = (1700000000 + s) * 1_000_000
    entry = (f"__REALTIME_TIMESTAMP={usec}\n__MONOTONIC_TIMESTAMP={(1000 + s) * 1_000_000}\n"
             f"_BOOT_ID={BOOT}\n_MACHINE_ID=b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5\n_HOSTNAME=bench\n"
             f"_TRANSPORT=kernel\nPRIORITY=5\nSYSLOG_FACILITY=0\nSYSLOG_IDENTIFIER=kernel\n"
             f"MESSAGE=audit: type=1400 audit({t}): {avc(s)}\n\n")
    t0 = time.perf_counter()
    writer.stdin.write(entry.encode())
    writer.stdin.flush()
    return t0


def opened(k):
    """Count of incident.opened alerts in the sink."""
    try:
        with open(out, "rb") as f:
            return f.read().count(b'"incident.opened"')
    except FileNotFoundError:
        return 0


def wait_alerts(k, deadline=10.0):
    start = time.perf_counter()
    while opened(k) < k:
        if time.perf_counter() - start > deadline:
            raise SystemExit(f"timed out waiting for alert {k}")
        time.sleep(0.0001)
    return time.perf_counter()


p = subprocess.Popen([binary, "run", "--config", os.path.join(d, "c.toml")], stderr=subprocess.DEVNULL)
lat = []
try:
    # Warm-up: the journald source starts at the end of the journal, so keep appending until
    # the first alert shows the source is running (audit.log starts at the checkpointed 0).
    s = 0
    start = time.perf_counter()
    while opened(1) == 0:
        append(s)
        s += 1
        probe = time.perf_counter()
        while opened(1) == 0 and time.perf_counter() - probe < 0.2:
            time.sleep(0.001)
        if time.perf_counter() - start > 30:
            raise SystemExit("no alert within 30 s")
    # Every warm-up alert is in once a sentinel appended after them is: the pipeline keeps order.
    sentinel = s
    append(sentinel)
    s += 1
    start = time.perf_counter()
    while True:
        try:
            with open(out, "rb") as f:
                if f'"/usr/bin/lat{sentinel}"'.encode() in f.read():
                    break
        except FileNotFoundError:
            pass
        if time.perf_counter() - start > 10:
            raise SystemExit("the sentinel's alert did not come within 10 s")
        time.sleep(0.001)  # poll interval
    base = s
    have = opened(0)
    for i in range(n):
        t0 = append(base + i)
        t1 = wait_alerts(have + i + 1)
        lat.append((t1 - t0) * 1000)
        time.sleep(0.003)  # pacing the load, not waiting for a result
finally:
    p.send_signal(signal.SIGTERM)
    p.wait()
    if writer:
        writer.stdin.close()
        writer.wait()
    shutil.rmtree(d, ignore_errors=True)
lat.sort()
q = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))]
print(f"{mode} append-to-alert latency over {len(lat)} alerts: "
      f"p50 {q(0.50):.2f} ms  p90 {q(0.90):.2f} ms  p99 {q(0.99):.2f} ms  max {lat[-1]:.2f} ms")

#!/usr/bin/env python3
"""audit.log append-to-event latency of `armorwatch run`.

Appends one auditd event at a time (AVC + SYSCALL + PROCTITLE, no EOE — as auditd writes a
kernel AVC) to a followed audit.log and measures the time until the event's JSON line is in the
output file. Prints p50/p90/p99/max in milliseconds.

usage: append_latency.py ARMORWATCH_BINARY [N]
"""
import os, signal, subprocess, sys, tempfile, time

from benchlib import followed_audit_log

binary = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 500
d = tempfile.mkdtemp(prefix="aw-lat-")
log, out = followed_audit_log(d), os.path.join(d, "out.jsonl")
with open(os.path.join(d, "c.toml"), "w") as f:
    f.write(f'[state]\ndir = "{d}/state"\n[sources.audit_log]\npath = "{log}"\n'
            f'[sinks.out]\ntype = "file"\npath = "{out}"\ncontent = "events"\n')
p = subprocess.Popen([binary, "run", "--config", os.path.join(d, "c.toml")], stderr=subprocess.DEVNULL)


def record(s):
    t = "1700000000.%03d:%d" % (s % 1000, s)
    return (f'type=AVC msg=audit({t}): apparmor="DENIED" operation="open" profile="/usr/bin/b" '
            f'name="/data/{s}" pid=42 comm="b" requested_mask="r" denied_mask="r" fsuid=0 ouid=0\n'
            f'type=SYSCALL msg=audit({t}): arch=c000003e syscall=257 success=no exit=-13 ppid=1 pid=42 '
            f'auid=0 uid=0 ses=1 comm="b" exe="/usr/bin/b" subj=/usr/bin/b key=(null)\n'
            f'type=PROCTITLE msg=audit({t}): proctitle="/usr/bin/b"\n')


def wait_lines(k, deadline=10.0):
    start = time.perf_counter()
    while True:
        try:
            with open(out, "rb") as f:
                if f.read().count(b"\n") >= k:
                    return time.perf_counter()
        except FileNotFoundError:
            pass
        if time.perf_counter() - start > deadline:
            raise SystemExit(f"timed out waiting for event {k}")
        time.sleep(0.0001)


lat = []
try:
    # Warm-up event: also proves the source is running.
    with open(log, "a") as f:
        f.write(record(0))
    wait_lines(1, 30)
    for i in range(1, n + 1):
        with open(log, "a") as f:
            t0 = time.perf_counter()
            f.write(record(i))
        t1 = wait_lines(i + 1)
        lat.append((t1 - t0) * 1000)
        time.sleep(0.003)  # space events apart (pacing the load, not waiting for a result)
finally:
    p.send_signal(signal.SIGTERM)
    p.wait()
lat.sort()
q = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))]
print(f"audit.log append-to-event latency over {len(lat)} events: "
      f"p50 {q(0.50):.2f} ms  p90 {q(0.90):.2f} ms  p99 {q(0.99):.2f} ms  max {lat[-1]:.2f} ms")

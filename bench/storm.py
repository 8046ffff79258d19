#!/usr/bin/env python3
"""A denial storm as an audit.log: RATE denials per second (log time) for SECONDS seconds, spread
over DISTINCT incidents (profile x path), every record with a unique audit serial.

usage: storm.py OUT [RATE=100000] [SECONDS=10] [DISTINCT=1000]
"""
import sys

out = sys.argv[1]
rate = int(sys.argv[2]) if len(sys.argv) > 2 else 100000
secs = int(sys.argv[3]) if len(sys.argv) > 3 else 10
distinct = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
profiles = max(1, distinct // 20)
with open(out, "w") as f:
    buf = []
    for i in range(rate * secs):
        us = i * 1_000_000 // rate
        k = i % distinct
        buf.append(f'type=AVC msg=audit({1700000000 + us // 1_000_000}.{(us // 1000) % 1000:03d}:{i + 1}): '
                   f'apparmor="DENIED" operation="open" profile="/usr/bin/storm{k % profiles}" '
                   f'name="/srv/storm/f{k // profiles}" pid={1000 + k} comm="storm" requested_mask="r" '
                   f'denied_mask="r" fsuid=0 ouid=0\n')
        if len(buf) >= 10000:
            f.write("".join(buf))
            buf.clear()
    f.write("".join(buf))

#!/usr/bin/python3
# Read audit records from the kernel's audit netlink multicast group
# (AUDIT_NLGRP_READLOG = 1; needs CAP_AUDIT_READ).  This works without auditd.
# Adapted from aa-vm's examples/denials/root/nlaudit.py.  Output: one line per
# netlink message, "type=<nlmsg_type> <payload>", the payload as the kernel
# sent it (e.g. `audit(1795623516.359:5): apparmor="DENIED" ...`).  Status
# lines go to stderr.  Usage: nlaudit.py TIMEOUT_SECS OUTFILE
import socket, struct, sys

NETLINK_AUDIT, AUDIT_NLGRP_READLOG = 9, 1
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
s.bind((0, 1 << (AUDIT_NLGRP_READLOG - 1)))      # (portid, groups bitmask)
s.settimeout(float(sys.argv[1]) if len(sys.argv) > 1 else 5.0)
out = open(sys.argv[2], "w") if len(sys.argv) > 2 else sys.stdout
print("nlaudit: listening", file=sys.stderr, flush=True)
n = 0
try:
    while True:
        data = s.recv(65536)
        off = 0
        while off + 16 <= len(data):
            ln, typ, flags, seq, pid = struct.unpack_from("=IHHII", data, off)
            payload = data[off + 16: off + ln].rstrip(b"\0").decode(errors="backslashreplace")
            print(f"type={typ} {payload}", file=out, flush=True)
            n += 1
            off += (ln + 3) & ~3
except socket.timeout:
    pass
print(f"nlaudit: {n} messages", file=sys.stderr, flush=True)

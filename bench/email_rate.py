#!/usr/bin/python3
"""Email delivery rate of `armorwatch run` to a local SMTP server (tests/fixtures/sinks/
smtp_server.py --plain, Debian's python3-aiosmtpd), against the floor of Python's smtplib sending
the same number of messages to the same server in the same run.

N denials, each with its own profile, are appended to a followed audit.log at once; each opens an
incident and so one `incident.opened` mail (flood cap off, explanations off). Measured: from the
append to the N-th mail in the server's maildir. The floors: smtplib on one session (what
armorwatch does with messages close together) and with a connection per message.

usage: email_rate.py ARMORWATCH_BINARY [N]
Needs /usr/bin/python3 with python3-aiosmtpd (this script imports nothing from it itself).
"""
import os, shutil, signal, smtplib, subprocess, sys, tempfile, time

from benchlib import followed_audit_log

binary = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 500
here = os.path.dirname(os.path.abspath(__file__))
server_py = os.path.join(here, "..", "tests", "fixtures", "sinks", "smtp_server.py")
d = tempfile.mkdtemp(prefix="aw-email-")


def server(maildir):
    os.makedirs(maildir)
    p = subprocess.Popen(["/usr/bin/python3", server_py, "--plain", "--dir", maildir],
                         stdout=subprocess.PIPE, text=True)
    return p, int(p.stdout.readline())


def mails(maildir):
    return sum(1 for f in os.listdir(maildir) if f.endswith(".eml"))


def wait_mails(maildir, want, limit_s):
    deadline = time.monotonic() + limit_s
    while mails(maildir) < want:
        if time.monotonic() > deadline:
            raise SystemExit(f"email_rate: {mails(maildir)} of {want} mails after {limit_s} s")
        time.sleep(0.005)


# The floors: smtplib sending the same messages on one session, as armorwatch does with messages
# close together, and with a connection per message.
def smtplib_run(sub, one_session):
    fdir = os.path.join(d, sub)
    fp, fport = server(fdir)
    def send(s, i):
        s.sendmail("a@example.org", ["ops@example.org"], f"Subject: {i}\r\n\r\nbody {i}\r\n")

    t0 = time.monotonic()
    if one_session:
        with smtplib.SMTP("127.0.0.1", fport) as s:
            for i in range(n):
                send(s, i)
    else:
        for i in range(n):
            with smtplib.SMTP("127.0.0.1", fport) as s:
                send(s, i)
    wait_mails(fdir, n, 60)
    took = time.monotonic() - t0
    fp.terminate()
    return took


floor = smtplib_run("floor", True)
floor_each = smtplib_run("floor-each", False)

maildir = os.path.join(d, "mail")
sp, port = server(maildir)
log = followed_audit_log(d)
with open(os.path.join(d, "c.toml"), "w") as f:
    f.write(f'''[state]
dir = "{d}/state"
[sources.audit_log]
path = "{log}"
[correlate]
max_alerts_per_minute = 0
[profiles]
enabled = false
[sinks.mail]
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
tls = "none"
from = "armorwatch@example.org"
to = ["ops@example.org"]
''')
aw = subprocess.Popen([binary, "run", "--config", os.path.join(d, "c.toml")],
                      stderr=open(os.path.join(d, "run.err"), "w"))
def avc(i):
    return (f'type=AVC msg=audit(1700000000.{i % 1000:03d}:{i + 1}): apparmor="DENIED" '
            f'operation="open" profile="/usr/bin/mail{i}" name="/data/{i}" pid=42 comm="b" '
            f'requested_mask="r" denied_mask="r" fsuid=0 ouid=0\n')
# Ready: the first denial's mail has arrived (the daemon follows the file, the sink is up).
with open(log, "a") as f:
    f.write(avc(0))
wait_mails(maildir, 1, 30)
t0 = time.monotonic()
with open(log, "a") as f:
    f.write("".join(avc(i) for i in range(1, n + 1)))
wait_mails(maildir, n + 1, 600)
took = time.monotonic() - t0
aw.send_signal(signal.SIGTERM)
aw.wait()
sp.terminate()
shutil.rmtree(d)
print(f"email: {n} mails in {took:.2f} s = {n / took:.0f}/s (smtplib floor, one session: "
      f"{n / floor:.0f}/s, {floor:.2f} s, ratio {took / floor:.2f}; a connection per message: "
      f"{n / floor_each:.0f}/s)")

# Guest script for tests/vm/capture-fixtures.sh, boot 2 (kernel cmdline
# audit=1, still no auditd): every AppArmor record now comes with its
# SYSCALL (1300) and PROCTITLE (1327) companions under the same serial.
set -x
echo secret > /etc/secret-audited
touch /var/log/msmtp.log
: scenario file-open-append
busybox-aa sh -c 'echo x >> /var/log/msmtp.log'
: scenario file-audit-deny
busybox-aa cat /etc/secret-audited
: scenario capability-chown
busybox-aa sh -c 'touch /tmp/f; chown 65534 /tmp/f'
: scenario network-inet-stream
busybox-aa nc -w 1 127.0.0.1 9
: scenario file-name-space: hex-encoded name= and proctitle=
busybox-aa sh -c 'echo x > "/var/log/with space.log"'
: scenario exec-px-missing
busybox-trans sh -c '/usr/bin/busybox true'
true

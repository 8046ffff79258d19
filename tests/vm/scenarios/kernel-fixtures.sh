# Guest script for tests/vm/capture-fixtures.sh, boot 1 (run by aa-vm as
# `sh /aa-vm/cmd` in the guest; aa-vm has already started journald and loaded
# every profile in /etc/apparmor.d).  One block per scenario; the records land
# in the kernel log.  Waits poll for a condition with a deadline.
set -x
waitfor() {  # waitfor TENTHS CMD...: poll CMD every 0.1 s for at most TENTHS tries
    local n=$1; shift
    while ! "$@" 2>/dev/null; do n=$((n-1)); [ $n -gt 0 ] || return 1; sleep 0.1; done
}
mkdir -p /aa-vm/out
uname -r > /aa-vm/out/uname.txt
cat /sys/kernel/security/apparmor/profiles

# audit netlink multicast reader (needs --python); start it first and wait for
# it to be subscribed
if command -v python3 >/dev/null; then
    python3 /root/nlaudit.py 60 /aa-vm/out/netlink.txt 2> /tmp/nl.err &
    NL=$!
    waitfor 200 grep -q listening /tmp/nl.err || echo "nlaudit did not start" >&2
fi

echo secret > /etc/secret-quiet; echo secret > /etc/secret-audited
touch /var/log/msmtp.log

: scenario file-open-append: open existing file for append, requested ac
busybox-aa sh -c 'echo x >> /var/log/msmtp.log'
: scenario file-mknod: create a new file, requested c
busybox-aa sh -c 'echo x > /var/log/new.log'
: scenario file-deny-quiet: plain deny rule, no record expected
busybox-aa cat /etc/secret-quiet
: scenario file-audit-deny: audit deny read
busybox-aa cat /etc/secret-audited
: scenario file-audit-allow: audit allow rule, apparmor=AUDIT
busybox-aa sh -c 'echo x > /tmp/audited'
: scenario file-name-space: file name with a space, name= hex-encoded
busybox-aa sh -c 'echo x > "/var/log/with space.log"'
: scenario capability-chown
busybox-aa sh -c 'touch /tmp/f; chown 65534 /tmp/f'
: scenario network-inet-stream: socket AF_INET SOCK_STREAM
busybox-aa nc -w 1 127.0.0.1 9
: scenario exec: exec of a binary without an x rule
busybox-aa sh -c '/usr/bin/busybox true'
: scenario signal: SIGTERM to an unconfined process
sleep 30 & SP=$!
busybox-aa kill -TERM $SP
kill $SP
: scenario ptrace: read /proc/1/environ of an unconfined process
busybox-aa cat /proc/1/environ
: scenario userns: unshare a user namespace, kernel 6.1 does not mediate this
busybox-aa unshare -U true
: scenario mount: two records, busybox retries read-only
mkdir -p /mnt/t; busybox-mnt mount -t tmpfs none /mnt/t
: scenario complain: flags=complain, apparmor=ALLOWED
busybox-complain sh -c 'echo x > /var/log/complain.log; chown 65534 /var/log/complain.log'
: scenario unix-socket: socket AF_UNIX without unix create rule
busybox-unix logger fixture-unix
: scenario profile-name-space: profile "aa space" and binary "busybox space", profile= and comm= hex-encoded
"busybox space" sh -c 'echo x > /tmp/space-profile'
: scenario exec-px-missing: px to a program without a profile
busybox-trans sh -c '/usr/bin/busybox true'
: scenario change-profile: no change_profile rule
busybox-trans sh -c 'echo -n "changeprofile aatarget" > /proc/self/attr/current'
: scenario change-onexec: no change_profile rule, exec variant
busybox-trans sh -c 'echo -n "exec aatarget" > /proc/self/attr/exec'
: scenario change-hat-missing: change_hat to a hat that does not exist.  The
: kernel logs this only when several hats are probed, so ask for two
busybox-trans sh -c 'printf "changehat 0000000000000001^nohat\\0nohat2\\0" > /proc/self/attr/current'
: scenario hat-denial: change_hat to ^sub, then a write the hat does not allow
busybox-trans sh -c 'echo -n "changehat 0000000000000001^sub" > /proc/self/attr/current && echo x > /tmp/in-hat'
: scenario status: profile_load, profile_replace of identical text skipped, real profile_replace, profile_remove
apparmor_parser -a /root/aalife
apparmor_parser -r /root/aalife
sed 's/^}$/  \/tmp\/** r,\n}/' /root/aalife > /tmp/aalife.v2
apparmor_parser -r /tmp/aalife.v2
apparmor_parser -R /tmp/aalife.v2

if [ -n "${NL:-}" ]; then
    # the last record of the run is aalife's profile_remove: stop the reader once it has it
    waitfor 100 grep -q '"profile_remove"' /aa-vm/out/netlink.txt || echo "nlaudit missed profile_remove" >&2
    kill $NL; wait $NL; cat /tmp/nl.err
fi
cat /sys/kernel/security/apparmor/profiles
true

# Example guest script for an end-to-end test (see tests/vm/README.md): the
# host-built, dynamically linked armorwatch binary reads the guest's real
# kernel log.  Run from the repo root:
#   d=$(mktemp -d); cp -a tests/vm/scenarios/msmtp-like/. "$d"
#   mkdir -p "$d/usr/local/bin"
#   cp /bin/busybox "$d/usr/local/bin/busybox-logger"
#   cp target/release/armorwatch "$d/usr/local/bin/"    # aa-vm adds its libraries
#   tests/vm/aa-vm -o OUT -s tests/vm/scenarios/e2e-parse.sh "$d"
# OUT/files/events.jsonl then holds armorwatch's JSON events.
command -v armorwatch >/dev/null || { echo "no armorwatch in the guest" >&2; exit 2; }
touch /var/log/msmtp.log
busybox-logger sh -c 'echo x >> /var/log/msmtp.log'           # DENIED open ac
# wait (deadline 5 s) until kauditd has printed the record: no fixed sleep
i=0
until dmesg | grep -q 'apparmor="DENIED"'; do
    i=$((i+1)); [ $i -lt 50 ] || { echo "no DENIED record" >&2; exit 3; }; sleep 0.1
done
dmesg | armorwatch parse > /aa-vm/out/events.jsonl || exit 4
grep -c 'msmtp.log' /aa-vm/out/events.jsonl

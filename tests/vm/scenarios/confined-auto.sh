# Guest script of tests/packaging.rs (shipped_profile_confines_doctor_and_automatic_sources):
# armorwatch's shipped AppArmor profile loaded as the package's postinst loads it (the text,
# `apparmor_parser -r -T -W`), then `armorwatch doctor` and `armorwatch run` with the shipped
# configuration (automatic sources: the journal and audit netlink here, no auditd), both
# confined. Writes doctor.txt, run.err, rc and denials.txt (the kernel's DENIED records for
# profile armorwatch and its children) to /aa-vm/out/; the host checks them.
# Run with --journald. No fixed sleeps: the wait for the daemon polls with a deadline.
set -u
O=/aa-vm/out
cp /usr/share/armorwatch/apparmor/usr.bin.armorwatch /etc/apparmor.d/usr.bin.armorwatch
apparmor_parser -r -T -W /etc/apparmor.d/usr.bin.armorwatch || { echo "profile did not load"; exit 1; }
grep -q '^armorwatch (enforce)' /sys/kernel/security/apparmor/profiles || { echo "not loaded"; exit 1; }
mkdir -p /var/lib/armorwatch /var/log/armorwatch
armorwatch doctor > "$O/doctor.txt" 2>&1
armorwatch run --config /etc/armorwatch/config.toml > "$O/run.out" 2> "$O/run.err" &
AW=$!
i=0
while ! grep -q 'sources started; running' "$O/run.err"; do
    kill -0 $AW 2>/dev/null || break
    i=$((i + 1)); [ $i -lt 1200 ] || break
    sleep 0.05
done
cat /proc/$AW/attr/current > "$O/label" 2>/dev/null
kill -TERM $AW 2>/dev/null
wait $AW
echo $? > "$O/rc"
dmesg | grep 'apparmor="DENIED"' | grep 'profile="armorwatch' > "$O/denials.txt"
exit 0

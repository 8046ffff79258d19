#!/usr/bin/env bash
# CI check of the Debian package: build it, install it with dpkg, check the installed program
# and its default configuration, verify the unit, purge it and check that nothing is left.
#
#   sudo packaging/ci-deb.sh            # as root, on a Debian/Ubuntu machine or container
#   sudo PROFILE=dev packaging/ci-deb.sh  # the same with the debug build (CI, after cargo test)
#
# Needs cargo-deb (`cargo install cargo-deb --locked`) and the packages in tests/deps/pkg.apt.
# Works without systemd as PID 1 (containers): the maintainer scripts then only enable the unit.
# Refuses to run when armorwatch is already installed (it would purge it).
set -euo pipefail
cd "$(dirname "$0")/.."

# Every path under the trees a package touches (dpkg's own database and logs excepted).
snapshot() {
    { echo /.; echo /lib; find /etc /usr /lib/ /var/lib /var/log -xdev 2>/dev/null \
        | grep -v '^/var/lib/dpkg\|^/var/log/dpkg\|^/var/log/apt\|^/var/cache' | sed 's|^/lib/$|/lib|'; } \
        | sort -u >"$1"
}
fail() { echo "ci-deb: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "run as root (dpkg -i / --purge)"
if [[ "$(dpkg-query -W -f='${Status}' armorwatch 2>/dev/null || true)" == *" installed" ]]; then
    fail "armorwatch is already installed here; not touching it"
fi
getent passwd armorwatch >/dev/null && fail "a user armorwatch already exists"

start=$(date +%s)
deb=$(packaging/build-deb.sh | tail -n1)
[ -f "$deb" ] || fail "build-deb.sh did not produce a .deb ($deb)"
echo "ci-deb: built $deb ($(du -h "$deb" | cut -f1))"

# What the package holds.
depends=$(dpkg-deb -f "$deb" Depends)
grep -qw systemd <<<"$depends" || fail "no Depends on systemd: $depends"
contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/armorwatch ./etc/armorwatch/config.toml ./etc/apparmor.d/usr.bin.armorwatch \
    ./usr/lib/systemd/system/armorwatch.service ./usr/lib/sysusers.d/armorwatch.conf \
    ./usr/lib/tmpfiles.d/armorwatch.conf ./usr/share/man/man8/armorwatch.8.gz \
    ./usr/share/man/man5/armorwatch.toml.5.gz ./usr/share/bash-completion/completions/armorwatch \
    ./usr/share/zsh/vendor-completions/_armorwatch \
    ./usr/share/fish/vendor_completions.d/armorwatch.fish ./etc/logrotate.d/armorwatch; do
    grep -q " $f\$" <<<"$contents" \
        || grep -q " ${f/#.\/lib/.\/usr\/lib}\$" <<<"$contents" \
        || fail "$f is not in the package"
done
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
grep -qx /etc/armorwatch/config.toml <<<"$conffiles" || fail "config.toml is not a conffile"
grep -qx /etc/logrotate.d/armorwatch <<<"$conffiles" || fail "the logrotate file is not a conffile"

# Install.
before=$(mktemp)
trap 'rm -f "$before"' EXIT
snapshot "$before"
dpkg -i "$deb" || fail "dpkg -i failed"

installed=$(dpkg -L armorwatch)
version=$(armorwatch --version) || fail "armorwatch --version failed"
[ "$version" = "armorwatch $(dpkg-query -W -f='${Version}' armorwatch | sed 's/-[0-9]*$//')" ] \
    || fail "version mismatch: $version"
echo "ci-deb: $version installed"
getent passwd armorwatch >/dev/null || fail "user armorwatch not created"
[[ " $(id -nG armorwatch) " == *" systemd-journal "* ]] || fail "armorwatch not in systemd-journal"
[ "$(stat -c %U:%a /var/lib/armorwatch)" = "armorwatch:750" ] || fail "/var/lib/armorwatch: $(stat -c %U:%a /var/lib/armorwatch)"
[ "$(stat -c %U:%a /var/log/armorwatch)" = "armorwatch:750" ] || fail "/var/log/armorwatch: $(stat -c %U:%a /var/log/armorwatch)"
[ -L /etc/systemd/system/multi-user.target.wants/armorwatch.service ] || fail "unit not enabled"
# The logrotate file parses, with the service user now there (-d: a dry run, nothing rotated).
lr=$(logrotate -d /etc/logrotate.d/armorwatch 2>&1) || fail "logrotate -d failed: $lr"
grep -q '^error' <<<"$lr" && fail "logrotate: $lr"

# The installed default configuration, as root and as the service user.
armorwatch check-config || fail "check-config (root) on the installed default failed"
setpriv --reuid=armorwatch --regid=armorwatch --init-groups armorwatch check-config \
    || fail "check-config as user armorwatch failed"
# A broken configuration is refused with 78.
cp /etc/armorwatch/config.toml /tmp/ci-deb-bad.toml
printf '[sinks.alerts.policy]\nmin_sevrity = 1\n' >>/tmp/ci-deb-bad.toml
rc=0; armorwatch check-config --config /tmp/ci-deb-bad.toml 2>/dev/null || rc=$?
rm -f /tmp/ci-deb-bad.toml
[ "$rc" -eq 78 ] || fail "check-config of a bad file exited $rc, not 78"

# The unit as installed (binary and man pages present now).
if out=$(systemd-analyze verify /usr/lib/systemd/system/armorwatch.service 2>&1) && [ -z "$out" ]; then
    echo "ci-deb: systemd-analyze verify: clean"
else
    fail "systemd-analyze verify: $out"
fi
score=$(systemd-analyze security --offline=true /usr/lib/systemd/system/armorwatch.service 2>/dev/null \
    | sed -n 's/.*Overall exposure level for armorwatch.service: \([0-9.]*\).*/\1/p')
echo "ci-deb: systemd-analyze security exposure $score"
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }' || fail "exposure $score > 2.0"
man -w armorwatch >/dev/null && man -w 5 armorwatch.toml >/dev/null || fail "man pages not found"

# Purge: every file dpkg listed, the user, the directories it made at run time.
dpkg --purge armorwatch || fail "dpkg --purge failed"
while read -r f; do
    # Directories that existed before (/usr/bin, /etc/apparmor.d, …) stay; nothing else may.
    grep -qxF "$f" "$before" && continue
    if [ -e "$f" ] || [ -L "$f" ]; then fail "left behind: $f"; fi
done <<<"$installed"
getent passwd armorwatch >/dev/null && fail "user armorwatch left behind"
getent group armorwatch >/dev/null && fail "group armorwatch left behind"
grep -q 'armorwatch' /etc/group && fail "armorwatch still a member in /etc/group"
for d in /etc/armorwatch /var/lib/armorwatch /var/log/armorwatch; do
    [ -e "$d" ] && fail "$d left behind"
done
after=$(mktemp)
snapshot "$after"
new=$(comm -13 "$before" "$after")
rm -f "$after"
[ -z "$new" ] || fail "new files after purge: $new"
echo "ci-deb: OK ($(( $(date +%s) - start )) s)"

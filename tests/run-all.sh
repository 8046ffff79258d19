#!/usr/bin/env bash
# Install everything the test suite needs on a Debian/Ubuntu machine, then run every test.
#
#   sudo tests/run-all.sh
#
# Packages: the build dependencies below plus every tests/deps/*.apt list (one package per line).
# Tests start the servers they use themselves (SMTP, HTTP receivers, Alertmanager, journald files,
# the qemu AppArmor guest), on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
pkgs=(build-essential pkg-config time python3)
for list in tests/deps/*.apt; do
  [ -e "$list" ] || continue
  while read -r p _; do
    case "$p" in ""|\#*) ;; *) pkgs+=("$p") ;; esac
  done < "$list"
done
echo "tests: installing ${pkgs[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${pkgs[@]}"

if ! command -v cargo >/dev/null; then
  echo "tests: cargo not found; install Rust >= 1.85 with rustup (https://rustup.rs) and re-run" >&2
  exit 1
fi

# As root (CI), a test that would skip for a missing tool or privilege fails instead: everything
# it needs was installed above (tests/common/mod.rs, `skip`).
if [ "$(id -u)" -eq 0 ]; then
  export AW_REQUIRE_ALL=1
else
  echo "tests: not root: the tests that need root (mount namespaces, tmpfs) will skip" >&2
fi

cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings

# The Debian package: build it (debug profile, shared with the tests), install it with dpkg, check
# --version and check-config on the installed defaults, purge it, verify nothing is left behind.
cargo deb --version >/dev/null 2>&1 || cargo install cargo-deb --locked
$SUDO env PROFILE=dev packaging/ci-deb.sh

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi


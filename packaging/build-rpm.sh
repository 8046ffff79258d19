#!/usr/bin/env bash
# Build the RPM package: release binary, man pages and completions, then cargo-generate-rpm.
#
#   packaging/build-rpm.sh            # → $CARGO_TARGET_DIR/generate-rpm/armorwatch-VERSION-1.ARCH.rpm
#
# Needs cargo-generate-rpm (`cargo install cargo-generate-rpm --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked
"$target/release/armorwatch" generate-assets packaging/generated >/dev/null
# The stripped binary the package ships (cargo-generate-rpm does not strip).
strip -o packaging/generated/armorwatch "$target/release/armorwatch"
cargo generate-rpm --target-dir "$target"
ls -1t "$target"/generate-rpm/*.rpm | head -n1

#!/usr/bin/env bash
# Build the Debian package: release binary, man pages and completions, then cargo-deb.
#
#   packaging/build-deb.sh            # → $CARGO_TARGET_DIR/debian/armorwatch_VERSION_ARCH.deb
#
# Needs cargo-deb (`cargo install cargo-deb --locked`). Prints the path of the .deb last.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked
"$target/release/armorwatch" generate-assets packaging/generated >/dev/null
cargo deb --no-build --locked --strip 2>&1 | tail -n1

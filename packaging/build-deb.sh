#!/usr/bin/env bash
# Build the Debian package: release binary, man pages and completions, then cargo-deb.
#
#   packaging/build-deb.sh            # → $CARGO_TARGET_DIR/debian/armorwatch_VERSION-1_ARCH.deb
#   PROFILE=dev packaging/build-deb.sh  # CI only: package the debug build `cargo test` already
#                                       # made (same files, unoptimised binary; saves the
#                                       # release build's minutes)
#
# Needs cargo-deb (`cargo install cargo-deb --locked`). Prints the path of the .deb last.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
profile="${PROFILE:-release}"
case "$profile" in
    release) cargo build --release --locked; dir=release ;;
    dev) cargo build --locked; dir=debug ;;
    *) echo "build-deb: PROFILE must be release or dev" >&2; exit 2 ;;
esac
"$target/$dir/armorwatch" generate-assets packaging/generated >/dev/null
cargo deb --no-build --locked --strip --profile "$profile" 2>&1 | grep -v '^warning: dev profile\|^ *To enable debug symbols' | tail -n1

#!/usr/bin/env bash
# The long form of the robustness suite (issue 8): tests/robustness.rs with 50 kill -9 points
# per case (200 000 records) and a 1M-record stream through audit.log rotation every 1 000 lines. Run as root
# (the disk-full case mounts a small tmpfs; without root it is skipped with a message).
#
#   bench/robustness.sh [KILLS=50] [RECORDS=200000] [STREAM=1000000]
#
# CI runs the same file in its short form (10 kills, 20 000 records) via `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export AW_ROBUST_KILLS=${1:-50}
export AW_ROBUST_RECORDS=${2:-200000}
export AW_ROBUST_STREAM=${3:-1000000}
# Release build: the 1M-record cases are I/O and parse bound.
cargo test --release --test robustness -- --nocapture --test-threads 1

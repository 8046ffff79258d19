#!/bin/sh
# Sinks benchmark: alerts/s through the file sink and a webhook sink (local receiver), and the
# outbox's cost per alert. Usage: bench/sinks.sh [ALERTS]   (default 20000)
set -eu
cd "$(dirname "$0")/.."
exec cargo run --quiet --release --example sinks_bench -- "${1:-20000}"

#!/usr/bin/env bash
# Benchmarks of the sources area (issue 3).
#
#   bench/sources.sh [JOURNAL_ENTRIES]     # default 1000000
#
# 1. journald read throughput: `armorwatch replay` over a journal directory (the same reader loop
#    `run` follows with: sd-journal, _TRANSPORT=kernel|audit, parse, dedup, JSON out) against
#    `journalctl -D DIR -o json _TRANSPORT=kernel _TRANSPORT=audit` (the same match: two values
#    of one field are OR-ed), on the same journal built by
#    systemd-journal-remote from tools/loadgen/gen.py output (20% AppArmor); once with the
#    AppArmor records on the kernel transport only, once with both transports.
# 2. audit.log append-to-event latency of `armorwatch run` (bench/append_latency.py).
#
# Needs: python3, systemd-journal-remote, journalctl; builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
cargo build --release -q
BIN=${CARGO_TARGET_DIR:-target}/release/armorwatch
W=$(mktemp -d /tmp/aw-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT

t() { /usr/bin/time -f "%e %U %S" "$@" 2>&1 >/dev/null | tail -1; }
journal_case() { # $1 = label, $2… = extra gen.py options
  local label=$1; shift
  echo "== journald, $label: $N entries"
  rm -rf "$W/journal" "$W/state"; mkdir -p "$W/journal"
  python3 tools/loadgen/gen.py -n "$N" -f journal -o "$W/export" "$@" 2>&1 | sed 's/^/  /'
  /lib/systemd/systemd-journal-remote -o "$W/journal/remote.journal" "$W/export" 2>/dev/null
  rm -f "$W/export"
  cat > "$W/c.toml" <<TOML
[state]
dir = "$W/state"
[sources.journald]
directory = "$W/journal"
[sinks.out]
type = "stdout"
content = "events"              # every event: the reader, not the explainer
TOML
  # Warm the page cache (journal-remote rotates into ~50 MB files) so both readers start equal.
  cat "$W"/journal/* > /dev/null
  local jn an
  jn=$(journalctl -D "$W/journal" -o json _TRANSPORT=kernel _TRANSPORT=audit | wc -l)
  read -r jw ju js < <(t journalctl -D "$W/journal" -o json _TRANSPORT=kernel _TRANSPORT=audit)
  rm -rf "$W/state"
  an=$("$BIN" replay --config "$W/c.toml" 2>/dev/null | wc -l)
  rm -rf "$W/state"
  read -r aw au as < <(t "$BIN" replay --config "$W/c.toml")
  printf '  journalctl -o json _TRANSPORT=kernel _TRANSPORT=audit: %6.2f s wall, %6.2f s CPU, %7d lines out, %8.0f journal entries/s\n' "$jw" "$(echo "$ju + $js" | bc)" "$jn" "$(echo "$N / $jw" | bc -l)"
  printf '  armorwatch replay (kernel+audit):                      %6.2f s wall, %6.2f s CPU, %7d events out, %7.0f journal entries/s\n' "$aw" "$(echo "$au + $as" | bc)" "$an" "$(echo "$N / $aw" | bc -l)"
  printf '  armorwatch rate / journalctl rate: %.2fx\n' "$(echo "$jw / $aw" | bc -l)"
}
# No auditd, journald's audit socket off: AppArmor records only on the kernel transport, so
# both read the same entries.
journal_case "kernel transport only" --journal-transport kernel
# Audit socket on too: both also read every audit-transport entry (AVC, SYSCALL, PROCTITLE …).
# (Runs before 2026-12-02 09:00 gave journalctl only _TRANSPORT=kernel here, about 40 % of the
# entries armorwatch read: 1.84x then.)
journal_case "mixed transports"

echo "== audit.log append-to-event latency"
python3 bench/append_latency.py "$BIN" 500 | sed 's/^/  /'

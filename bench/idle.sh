#!/usr/bin/env bash
# Idle (issue 8, "CPU time over 60 s with no input, target ≈ 0: no polling loops"): `armorwatch
# run` following an empty audit.log, then an empty journal directory (one entry, written by
# systemd-journal-remote), each with an alert file sink and nothing coming. From its "sources
# started" line on, for IDLE_SECS: utime+stime from /proc/PID/stat and each thread's context
# switches (voluntary + involuntary, /proc/PID/task/*/status) — every time a thread woke.
# The log directory holds only the followed file (inotify reports any file of it).
#
#   bench/idle.sh BIN PROFILES_DIR [IDLE_SECS]      prints Markdown
set -euo pipefail
BIN=$1 PROFILES=$2 IDLE_SECS=${3:-60}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/log" "$W/journal"
: > "$W/log/audit.log"
printf '__REALTIME_TIMESTAMP=1700000000000001\n__MONOTONIC_TIMESTAMP=1000000\n_BOOT_ID=3b1f1d6f0a9e4c0f8d2b7c1e5a4f9d21\n_MACHINE_ID=b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5\n_HOSTNAME=h\n_TRANSPORT=kernel\nSYSLOG_FACILITY=0\nMESSAGE=kernel: idle\n\n' > "$W/e.export"
/lib/systemd/systemd-journal-remote -o "$W/journal/idle.journal" "$W/e.export" 2>/dev/null

switches() { # PID → "thread-name count" per thread
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' _ < "$t/comm")" \
      "$(awk '/ctxt_switches/ {s += $2} END {print s}' "$t/status")"
  done | sort
}

measure() { # NAME SOURCE-TOML
  local name=$1
  cat > "$W/$name.toml" <<TOML
[state]
dir = "$W/state-$name"
$2
[profiles]
dir = "$PROFILES"
[sinks.alerts]
type = "file"
path = "$W/$name-alerts.jsonl"
TOML
  "$BIN" run --config "$W/$name.toml" 2> "$W/$name.err" &
  local pid=$!
  for _ in $(seq 300); do grep -q 'sources started' "$W/$name.err" && break; sleep 0.1; done
  grep -q "sources started" "$W/$name.err" || { echo "idle: $name daemon did not start: $(cat "$W/$name.err")" >&2; exit 1; }
  local t0 t1 hz
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat"); switches "$pid" > "$W/$name.s0"
  sleep "$IDLE_SECS"
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat"); switches "$pid" > "$W/$name.s1"
  kill -TERM "$pid"; wait "$pid" || true
  hz=$(getconf CLK_TCK)
  local woke
  woke=$(paste -d' ' "$W/$name.s0" "$W/$name.s1" \
    | awk '{n[$1] += $4 - $2} END {for (k in n) if (n[k] > 0) printf "%s%s %d", (c++ ? ", " : ""), k, n[k]}')
  echo "| $name | $((t1 - t0)) ticks = $(awk "BEGIN{printf \"%.2f\", ($t1-$t0)/$hz}") s ($(awk "BEGIN{printf \"%.3f\", 100*($t1-$t0)/$hz/$IDLE_SECS}") % of a core) | ${woke:-none} |"
}

echo "| source | CPU over $IDLE_SECS s | threads that woke (times) |"
echo "|---|---|---|"
measure audit_log "[sources.audit_log]
path = \"$W/log/audit.log\""
measure journald "[sources.journald]
directory = \"$W/journal\""

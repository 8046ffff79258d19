#!/usr/bin/env bash
# Benchmark `armorwatch parse` against `grep -c apparmor=` (the floor) on loadgen audit logs of
# 100k and 1M records, in the same run. Prints a Markdown table (medians, min–max, peak RSS).
#
#   bench/parse.sh [RUNS]        # default 5 runs per command
#
# Needs: python3 (Debian's /usr/bin/python3 is fine), GNU time (/usr/bin/time, package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
DATA=${BENCH_DATA:-${TMPDIR:-/tmp}/armorwatch-bench}
mkdir -p "$DATA"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
[ -x /usr/bin/time ] || { echo "bench: needs GNU time: apt-get install time" >&2; exit 2; }
cargo build --release --quiet
BIN=target/release/armorwatch
for n in 100000 1000000; do
  f="$DATA/audit-$n.log"
  [ -s "$f" ] || "$PY" tools/loadgen/gen.py -n "$n" -f audit --seed 42 -o "$f" 2>/dev/null
done

# measure LABEL CMD...: prints "median min max peak_rss_kib" over $RUNS runs (output to a file).
measure() {
  local times=() rss=0 t m
  for _ in $(seq "$RUNS"); do
    # Not /dev/null: GNU grep stops at the first match when its output is /dev/null.
    /usr/bin/time -f "%e %M" -o "$DATA/time.txt" "$@" >"$DATA/out.txt" 2>"$DATA/stderr.txt"
    read -r t m < "$DATA/time.txt"
    times+=("$t"); [ "$m" -gt "$rss" ] && rss=$m
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v rss="$rss" '{a[NR]=$1} END {printf "%s %s %s %s\n", a[int((NR+1)/2)], a[1], a[NR], rss}'
}

echo "| input | command | median s | min–max s | peak RSS MiB | ratio to grep |"
echo "|---|---|---|---|---|---|"
for n in 100000 1000000; do
  f="$DATA/audit-$n.log"
  read -r gm gmin gmax grss < <(measure grep -c apparmor= "$f")
  read -r am amin amax arss < <(measure "$BIN" parse "$f")
  read -r wm wmin wmax wrss < <(measure grep apparmor= "$f")
  size=$(du -m "$f" | cut -f1)
  ev=$("$BIN" parse "$f" 2>&1 >/dev/null | sed -n 's/.* \([0-9]*\) events.*/\1/p')
  echo "| $n records ($size MB, $ev events) | \`grep -c apparmor=\` | $gm | $gmin–$gmax | $(awk "BEGIN{printf \"%.1f\", $grss/1024}") | 1.0 |"
  echo "| | \`grep apparmor=\` (prints the lines) | $wm | $wmin–$wmax | $(awk "BEGIN{printf \"%.1f\", $wrss/1024}") | $(awk "BEGIN{printf \"%.2f\", $wm/$gm}") |"
  echo "| | \`armorwatch parse\` (JSON lines to a file) | $am | $amin–$amax | $(awk "BEGIN{printf \"%.1f\", $arss/1024}") | $(awk "BEGIN{printf \"%.2f\", $am/$gm}") |"
done

#!/usr/bin/env bash
# The benchmark suite (issue 8): one command, results written into docs/benchmarks.md between
# the `bench:run-all` markers (the parser section above them is bench/parse.sh's).
#
#   bench/run-all.sh                 # full run: 5 runs per command, 1M-entry journal, 60 s idle
#   RUNS=3 JOURNAL_N=200000 IDLE_SECS=60 bench/run-all.sh     # shorter
#   NO_DOC=1 bench/run-all.sh        # print the Markdown only
#   SKIP_REPLAY=1 bench/run-all.sh   # without the replay table
#   FULL_MAX=100000 RUNS_FULL=1 …    # the explained variant on 100k only
#
# 1. `armorwatch replay` — the full pipeline: parser, correlator, explainer (profiles from
#    tests/fixtures/profiles, apparmor_parser compile check on), file sink of alerts — on 100k and
#    1M-record audit.log and kern.log from tools/loadgen/gen.py --seed 42, against
#    `grep -c apparmor=` and `aa-notify -f FILE -s 5000` (Debian apparmor-notify), with peak RSS.
# 2. journald: bench/sources.sh (armorwatch replay of a journal vs journalctl -o json).
# 3. append-to-alert latency p50/p99 in the file sink: audit.log and journald
#    (bench/alert_latency.py); email delivery rate vs smtplib (bench/email_rate.py); a burst
#    of new suggestions with compile checks (bench/check_burst.py).
# 4. a storm: 100k denials/s for 10 s (bench/storm.py) replayed: exact counts, peak RSS,
#    alerts per incident (bench/storm_check.py).
# 5. idle: CPU time and thread wake-ups of `armorwatch run` over IDLE_SECS with no input,
#    audit.log and journald (bench/idle.sh).
#
# Needs: python3, GNU time, apparmor-notify, systemd-journal-remote, journalctl, apparmor
# (apparmor_parser). Builds the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-5}
JOURNAL_N=${JOURNAL_N:-1000000}
IDLE_SECS=${IDLE_SECS:-60}
# Explainer variants: full = the default configuration (explanations; `replay` never runs the
# apparmor_parser compile check of suggestions, `run` and `explain` do), noexplain =
# [profiles] enabled = false. FULL_MAX: the largest input (records) the full variant runs on;
# RUNS_FULL: its runs.
FULL_MAX=${FULL_MAX:-1000000}
RUNS_FULL=${RUNS_FULL:-$RUNS}
DATA=${BENCH_DATA:-${TMPDIR:-/tmp}/armorwatch-bench}
mkdir -p "$DATA"
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
for tool in /usr/bin/time aa-notify; do
  command -v "$tool" >/dev/null || { echo "bench: $tool missing (apt-get install time apparmor-notify)" >&2; exit 2; }
done
cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/armorwatch
PROFILES=$ROOT/tests/fixtures/profiles/etc/apparmor.d
W=$(mktemp -d /tmp/aw-runall.XXXXXX)
trap 'rm -rf "$W"' EXIT
REPORT=$W/report.md

for f in audit kern; do
  for n in 100000 1000000; do
    [ -s "$DATA/$f-$n.log" ] || "$PY" tools/loadgen/gen.py -n "$n" -f "$f" --seed 42 -o "$DATA/$f-$n.log" 2>/dev/null
  done
done

# measure CMD...: "median min max peak_rss_kib" over $RUNS runs; $PRE (if set) runs before each.
measure() {
  local times=() rss=0 t m
  for _ in $(seq "$RUNS"); do
    [ -z "${PRE:-}" ] || eval "$PRE"
    # Output to a file, not /dev/null: GNU grep stops at the first match when writing to /dev/null.
    /usr/bin/time -f "%e %M" -o "$W/time.txt" "$@" >"$W/out.txt" 2>"$W/stderr.txt" || {
      echo "bench: $* failed:" >&2; cat "$W/stderr.txt" >&2; return 1; }
    read -r t m < "$W/time.txt"
    times+=("$t"); [ "$m" -gt "$rss" ] && rss=$m
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v rss="$rss" '{a[NR]=$1} END {printf "%s %s %s %s\n", a[int((NR+1)/2)], a[1], a[NR], rss}'
}
mib() { awk "BEGIN{printf \"%.1f\", $1/1024}"; }
ratio() { awk "BEGIN{ if ($2 > 0) printf \"%.2f\", $1/$2; else print \"—\" }"; }

{
  echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC'). Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r); $(rustc --version | cut -d' ' -f1-2); shared with other builds — the min column is the least disturbed figure."
  echo
  echo "Command: \`RUNS=$RUNS RUNS_FULL=$RUNS_FULL FULL_MAX=$FULL_MAX JOURNAL_N=$JOURNAL_N IDLE_SECS=$IDLE_SECS bench/run-all.sh\`. Data: \`tools/loadgen/gen.py -n N -f audit|kern --seed 42\` (20 % AppArmor records)."
  echo
  echo "### Replay: full pipeline into a file sink of alerts, vs grep and aa-notify"
  echo
  echo "\`armorwatch replay --config C\` with \`[sources.audit_log]\` (or \`[sources.kernel_log]\`) \`path = FILE\`, a fresh state directory each run, profiles from \`tests/fixtures/profiles\`, one \`type = \"file\"\` alert sink; explainer variants: *full* (the default configuration: explanations with closest rules and a suggestion; replay does not compile-check suggestions), *noexplain* (\`[profiles] enabled = false\`: parser, correlator, sink). \`aa-notify -f FILE -s 5000\` parses the whole file and prints the count of denials (headless: no \`-p\`, so no display is needed)."
  echo
  echo "| input | command | median s | min–max s | peak RSS MiB | time / grep | aa-notify / armorwatch | output |"
  echo "|---|---|---|---|---|---|---|---|"
} > "$REPORT"

for f in audit kern; do
  for n in 100000 1000000; do
    [ -z "${SKIP_REPLAY:-}" ] || continue
    in="$DATA/$f-$n.log"
    src=audit_log; [ "$f" = kern ] && src=kernel_log
    cat "$in" > /dev/null   # page cache warm for every command alike
    read -r gm gmin gmax grss < <(measure grep -c apparmor= "$in")
    gout=$(cat "$W/out.txt")
    read -r nm nmin nmax nrss < <(measure aa-notify -f "$in" -s 5000)
    nout=$(tr '\n' ' ' < "$W/out.txt" | sed 's/ *$//')
    size=$(du -m "$in" | cut -f1)
    {
      echo "| $f $n records ($size MB) | \`grep -c apparmor=\` | $gm | $gmin–$gmax | $(mib "$grss") | 1.00 | | $gout lines |"
      echo "| | \`aa-notify -f FILE -s 5000\` | $nm | $nmin–$nmax | $(mib "$nrss") | $(ratio "$nm" "$gm") | | $nout |"
    } >> "$REPORT"
    for variant in full noexplain; do
      runs=$RUNS
      case $variant in
        full) [ "$n" -le "$FULL_MAX" ] || continue; runs=$RUNS_FULL; prof="" ;;
        noexplain) prof="enabled = false" ;;
      esac
      cat > "$W/replay.toml" <<TOML
[state]
dir = "$W/state"
[sources.$src]
path = "$in"
[profiles]
dir = "$PROFILES"
$prof
[sinks.alerts]
type = "file"
path = "$W/alerts.jsonl"
TOML
      read -r am amin amax arss < <(RUNS=$runs PRE='rm -rf "$W/state" "$W/alerts.jsonl"' measure "$BIN" replay --config "$W/replay.toml")
      aout="$(wc -l < "$W/alerts.jsonl") alerts: $("$PY" -c 'import collections,json,sys; print(", ".join(f"{k} {v}" for k,v in sorted(collections.Counter(json.loads(l)["type"] for l in open(sys.argv[1])).items())))' "$W/alerts.jsonl")"
      echo "| | \`armorwatch replay\` ($variant, $runs runs) | $am | $amin–$amax | $(mib "$arss") | $(ratio "$am" "$gm") | $(ratio "$nm" "$am") | $aout |" >> "$REPORT"
    done
  done
done

{
  echo
  echo "### journald: armorwatch replay of a journal vs journalctl -o json"
  echo
  echo "\`bench/sources.sh $JOURNAL_N\` (journal built by systemd-journal-remote from gen.py output; armorwatch writes events as JSON, the same reader loop \`run\` follows with):"
  echo
  echo '```'
  bench/sources.sh "$JOURNAL_N" 2>&1 | grep -v '^  gen.py'
  echo '```'
  echo
  echo "### Append-to-alert latency (file sink of alerts, whole pipeline)"
  echo
  echo "\`bench/alert_latency.py BIN audit|journald 500 PROFILES\`: one new incident per appended denial, flood cap off; time from the append (audit.log write / entry written into a running systemd-journal-remote) to the \`incident.opened\` line in the alert file."
  echo
  echo '```'
  "$PY" bench/alert_latency.py "$BIN" audit 500 "$PROFILES"
  "$PY" bench/alert_latency.py "$BIN" journald 500 "$PROFILES"
  echo '```'
  echo
  echo "### Email delivery rate"
  echo
  echo "\`bench/email_rate.py BIN 500\`: 500 new incidents appended at once to a followed audit.log, one mail each, to a local aiosmtpd (plain SMTP); floors: Python's smtplib sending 500 messages to the same kind of server in the same run, on one session (as armorwatch keeps its session open between messages close together) and with a connection each."
  echo
  echo '```'
  "$PY" bench/email_rate.py "$BIN" 500
  echo '```'
  echo
  echo "### A burst of new suggestions (compile checks off the alert path)"
  echo
  echo "\`bench/check_burst.py BIN 30\` and \`… 300\`: that many msmtp denials of distinct paths (each a new incident with its own suggested rule) appended at once to a followed audit.log, fixture profiles, \`check_wait_ms\` default (1000); time to the last \`incident.opened\`; floor: N × one \`apparmor_parser -Q -K\` of the profile (what checking each inline costs at least)."
  echo
  echo '```'
  "$PY" bench/check_burst.py "$BIN" 30
  "$PY" bench/check_burst.py "$BIN" 300
  echo '```'
} >> "$REPORT"

# Storm: 100k denials/s for 10 s of log time, 1000 incidents, replayed through the pipeline.
"$PY" bench/storm.py "$W/storm.log" 100000 10 1000
cat > "$W/storm.toml" <<TOML
[state]
dir = "$W/sstate"
[sources.audit_log]
path = "$W/storm.log"
[profiles]
dir = "$PROFILES"
check_suggestions = false
[sinks.alerts]
type = "file"
path = "$W/storm-alerts.jsonl"
TOML
/usr/bin/time -f "%e %M" -o "$W/time.txt" "$BIN" replay --config "$W/storm.toml" 2>"$W/storm.err"
read -r st sm < "$W/time.txt"
# The flood cap holds all but 120 incident alerts a minute and the 10 s storm is inside one
# default window, so that run cannot show an incident alerting more than once a window: the
# same storm again with a 2 s window (5 in the storm) and the cap off.
sed -e 's|/sstate"|/wstate"|' -e 's|storm-alerts|storm-w-alerts|' \
  -e 's|^\[profiles\]|[correlate]\nwindow_secs = 2\nmax_alerts_per_minute = 0\n[profiles]|' \
  "$W/storm.toml" > "$W/storm-w.toml"
"$BIN" replay --config "$W/storm-w.toml" 2>"$W/storm-w.err"
{
  echo
  echo "### Storm: 100 000 denials/s for 10 s (1 000 000 records, 1 000 incidents)"
  echo
  echo "\`bench/storm.py storm.log 100000 10 1000\` then \`armorwatch replay\` (default window 300 s, flood cap 120 alerts/min, explanations on, compile check off) into a file sink; \`bench/storm_check.py\`: the counts of every incident's alerts and \`suppressed\` entries add up to its total and to the number of denials; at most opened + one update per window + closed per incident, each update a window or more after the incident's previous alert; no \`id:seq\` twice. Then the same storm with \`window_secs = 2\` and the flood cap off (\`max_alerts_per_minute = 0\`), where every incident alert goes out: the per-window limit checked over 5 windows."
  echo
  echo '```'
  echo "replay: $st s wall ($(awk "BEGIN{printf \"%.0f\", 1000000/$st}") records/s), peak RSS $(mib "$sm") MiB"
  "$PY" bench/storm_check.py "$W/storm-alerts.jsonl" 1000000 10 300 || echo storm >> "$W/failed"
  echo "window 2 s, flood cap off:"
  "$PY" bench/storm_check.py "$W/storm-w-alerts.jsonl" 1000000 10 2 || echo "storm, window 2 s" >> "$W/failed"
  echo '```'
} >> "$REPORT"

# Idle: an empty audit.log and an empty journal, no input for IDLE_SECS (bench/idle.sh).
{
  echo
  echo "### Idle"
  echo
  echo "\`bench/idle.sh BIN PROFILES $IDLE_SECS\`: \`armorwatch run\` with an alert file sink and no input, from its \"sources started\" line on: utime+stime (/proc/PID/stat) and every thread's context switches (/proc/PID/task/*/status). The sources wait for inotify (file, journal) without a timer; what wakes is the pipeline's 1 s tick (incident windows closed by time, the systemd watchdog) — tokio's timer wheel wakes a worker a few times per tick."
  echo
  bench/idle.sh "$BIN" "$PROFILES" "$IDLE_SECS"
} >> "$REPORT"

if [ -n "${NO_DOC:-}" ]; then
  cat "$REPORT"
  [ ! -s "$W/failed" ] || { echo "bench: FAILED: $(tr '\n' ';' < "$W/failed")" >&2; exit 1; }
  exit 0
fi
doc=docs/benchmarks.md
begin='<!-- bench:run-all:begin -->'
end='<!-- bench:run-all:end -->'
grep -qF "$begin" "$doc" || printf '\n## Benchmark suite (bench/run-all.sh)\n\n%s\n%s\n' "$begin" "$end" >> "$doc"
"$PY" - "$doc" "$REPORT" "$begin" "$end" <<'EOF'
import sys
doc, report, begin, end = sys.argv[1:]
text = open(doc).read()
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc, "w").write(head + begin + "\n" + open(report).read() + end + tail)
EOF
cat "$REPORT"
echo "bench: written to $doc"
# A failed check is in the report, and in the exit code.
if [ -s "$W/failed" ]; then
  echo "bench: FAILED: $(tr '\n' ';' < "$W/failed")" >&2
  exit 1
fi

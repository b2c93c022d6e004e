#!/bin/bash
# connections.sh - many simultaneous SMTP connections to one moatd.
#
# A fresh moatd (example.com routed to an smtp-sink, ext.test a permitted
# sender, a private unbound) gets, from bench/smtp_load.py idle:
#   1. one normal transaction (warm-up), then IDLE connections held open, each
#      having read its 220 greeting: RSS growth of moatd per connection from
#      /proc/PID/status VmRSS before and after (target <= 32 KiB);
#   2. more connections up to CONCURRENT in total, all open at once; then one
#      new, normal transaction (connect, EHLO, MAIL, RCPT, DATA, 250) from
#      127.0.0.1: its time (target <= 1 s), and moatd still running.
# Connections come from 127.0.1.x source addresses, PER_IP each (smtp_load.py
# --per-ip, default 50: under the default smtp_max_connections_per_ip); moatd
# gets -o smtp_max_connections=CONCURRENT+100 and ulimit -n is raised to the
# hard limit (each side needs one descriptor per connection).
# Postfix beside it (when root): a private instance (bench/postfix-instance.sh)
# runs one smtpd process per connection, at most default_process_limit (100)
# of them; PF_IDLE connections (default 90) are held under that limit, memory
# is the sum of Pss of every process of the instance before and after (Pss
# splits shared pages between the processes that share them), and the probe
# runs while they are open.  5,000 would need 5,000 smtpd processes.
#
# usage: bench/connections.sh [--idle IDLE] [--concurrent CONCURRENT] [--pf-idle N] [--moat-only]
#   --idle N         idle connections for the RSS figure (default 5000)
#   --concurrent N   connections open at once for the probe (default 10000)
#   --pf-idle N      idle connections to Postfix (default 90)
#   --moat-only      skip Postfix (also when not root)
# Environment: MOAT_BUILD_DIR (default build), KEEP=1 keeps the work dir.
# Exits 1 if a connection was refused, the probe failed or moatd died.
set -euo pipefail
BENCH=connections.sh
IDLE=5000
CONCURRENT=10000
PF_IDLE=90
MOAT_ONLY=0

usage() { sed -n '2,/^set -e/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d' >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    --idle) IDLE=$2; shift 2 ;;
    --concurrent) CONCURRENT=$2; shift 2 ;;
    --pf-idle) PF_IDLE=$2; shift 2 ;;
    --moat-only) MOAT_ONLY=1; shift ;;
    -h|--help) usage ;;
    *) echo "$BENCH: unknown option $1" >&2; usage ;;
    esac
done
for v in "$IDLE" "$CONCURRENT" "$PF_IDLE"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH: not a positive number: $v" >&2; exit 2; }
done
[ "$CONCURRENT" -ge "$IDLE" ] || { echo "$BENCH: --concurrent must be >= --idle" >&2; exit 2; }

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${MOAT_BUILD_DIR:-build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
MOATD=$BUILD/moatd
MOAT=$BUILD/moat
LOAD=$ROOT/bench/smtp_load.py
PFI=$ROOT/bench/postfix-instance.sh
for b in "$MOATD" "$MOAT"; do
    [ -x "$b" ] || { echo "$BENCH: $b not built (meson setup build && ninja -C build)" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((CONCURRENT + 200)) ]; then
    echo "$BENCH: ulimit -n is $(ulimit -n); $((CONCURRENT + 200)) descriptors are needed" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ] && [ "$MOAT_ONLY" -eq 0 ]; then
    echo "$BENCH: the Postfix instance needs root; running Moat only" >&2
    MOAT_ONLY=1
fi
# shellcheck source=bench/bench-lib.sh
. "$ROOT/bench/bench-lib.sh"

start_unbound
start_sink conn
PORT=$(free_port)
HTTP=$(free_port)
start_moatd "$WORK/state" "$PORT" "$HTTP" -o smtp_max_connections=$((CONCURRENT + 100))
"$MOAT" domain add example.com --trust-unverified >/dev/null
"$MOAT" route set example.com "127.0.0.1:$SINK_PORT" >/dev/null
"$MOAT" permitted add ext.test --comment "connections benchmark sender" >/dev/null

echo "connections benchmark: $IDLE idle, then $CONCURRENT at once, moatd PID $MOATD_PID, $(nproc) CPUs, ulimit -n $(ulimit -n)" >&2
RC=0
# summary LABEL JSONFILE: the figures of one smtp_load.py idle run
summary() {
    /usr/bin/python3 - "$1" "$2" <<'EOF'
import json, sys
label, j = sys.argv[1], json.load(open(sys.argv[2]))
per, mem = j["rss_per_conn_kib"], j["memory"]
print(f"\n{label}")
print(f"  idle connections held        {j['idle']} (opened in {j['idle_open_s']} s)")
print(f"  {mem + ' before / idle':<28} {j['rss_before_kib']} KiB / {j['rss_idle_kib']} KiB")
print(f"  growth per connection        {per} KiB   target <= 32 KiB: {'met' if per <= 32 else 'NOT met'}")
print(f"  concurrent connections       {j['concurrent']} (opened in {j['concurrent_open_s']} s), "
      f"{mem} {j['rss_concurrent_kib']} KiB")
if "probe_s" in j:
    p = j["probe_s"]
    print(f"  new transaction while open   {p * 1000:.1f} ms (connect to 250)   target <= 1 s: "
          f"{'met' if p <= 1 else 'NOT met'}")
else:
    print(f"  new transaction while open   FAILED: {j['probe_error']}")
print(f"  server alive afterwards      {j['server_alive']}")
EOF
}

# idle_run LABEL PORT PID ARGS...: smtp_load.py idle; the JSON in WORK/LABEL.json
idle_run() {
    local label=$1 port=$2 pid=$3 js
    shift 3
    js=$(/usr/bin/python3 "$LOAD" idle "127.0.0.1:$port" --pid "$pid" "$@" \
        2>"$WORK/$label.err") || RC=1
    [ -s "$WORK/$label.err" ] && { echo "$BENCH: smtp_load.py against $label:" >&2; tail -5 "$WORK/$label.err" >&2; }
    kill -0 "$pid" 2>/dev/null || { echo "$BENCH: $label DIED" >&2; RC=1; }
    [ -n "$js" ] || exit 1
    echo "$js" >"$WORK/$label.json"
}

idle_run moat "$PORT" "$MOATD_PID" --idle "$IDLE" --concurrent "$CONCURRENT"
got=$(wait_sink 2)
[ "$got" -ge 2 ] || { echo "$BENCH: the sink got $got of 2 messages from Moat" >&2; RC=1; }
kill -TERM "$MOATD_PID"; wait "$MOATD_PID" 2>/dev/null || true

if [ "$MOAT_ONLY" -eq 0 ]; then
    kill -TERM "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true
    start_sink pf
    PF_DIR=$WORK/postfix
    PF_PORT=$(free_port)
    bash "$PFI" create "$PF_DIR" --port "$PF_PORT" --role relay --domain example.com \
        --relay-to "127.0.0.1:$SINK_PORT" >/dev/null
    PF_DIRS+=("$PF_DIR")
    bash "$PFI" start "$PF_DIR" &
    PF_MASTER=$!
    PIDS+=("$PF_MASTER")
    wait_220 "$PF_PORT" "$PF_MASTER"
    idle_run postfix "$PF_PORT" "$PF_MASTER" --session --idle "$PF_IDLE" --concurrent "$PF_IDLE"
    got=$(wait_sink 2)
    [ "$got" -ge 2 ] || { echo "$BENCH: the sink got $got of 2 messages from Postfix" >&2; RC=1; }
fi

summary "Moat (moatd VmRSS)" "$WORK/moat.json"
[ "$MOAT_ONLY" -eq 1 ] || summary "Postfix (Pss of every process of the instance; at most default_process_limit = 100 smtpd)" "$WORK/postfix.json"
exit $RC

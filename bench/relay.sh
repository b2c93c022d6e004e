#!/bin/bash
# relay.sh - relay benchmark, Moat side by side with Postfix.
#
# Postfix's smtp-source sends N messages of SIZE octets with CONCURRENCY
# parallel sessions (one message per connection) for rcpt@example.com, first
# to moatd (fresh state dir; domain example.com routed to an smtp-sink),
# then to a private Postfix instance configured the same way (relay for
# example.com to an smtp-sink, default fsync behaviour).  Moat runs with its
# default checks (greylisting, SPF/DKIM/DMARC, anti-spoofing, archive,
# tracking); the sender's domain ext.test is made a permitted sender the way
# an administrator would (moat permitted add ext.test), since greylisting
# would otherwise answer 451 to smtp-source's first and only attempt; the
# private unbound serves ext.test with an SPF record that passes for 127.0.0.1.
# For each relay it reports
#   accepted msg/s   N / smtp-source wall time
#   delivered msg/s  N / time from the first connection until the sink has N
#   CPU us/msg       user+system CPU of moatd, resp. of every Postfix process
#                    (live ones plus those the master reaped), during the run
#   p50/p99 ms       with --latency: bench/smtp_load.py sends N more messages
#                    with C sessions and times end-of-data "." -> "250"
# and checks that nothing was lost (sink count == N).  It never fails on speed;
# it exits 1 only if messages were lost or a component failed.
#
# usage: bench/relay.sh [-n N] [-s SIZE] [-c CONCURRENCY] [--latency] [--sweep] [--moat-only]
#   -n N          messages per run (default 2000)
#   -s SIZE       payload octets, k suffix allowed (default 4k)
#   -c C          parallel sessions (default 10)
#   --latency     also measure end-of-data latency (smtp_load.py) after each run
#   --sweep       the issue's table in one command: 4 KiB at C = 1, 10, 50,
#                 100 KiB at C = 10 (N/4 messages), latency at C = 50, and the
#                 ceiling (smtp-source and smtp_load.py straight into a sink)
#   --moat-only   skip Postfix (e.g. when not root)
#   --postfix-only  skip Moat
# Environment: MOAT_BUILD_DIR (default build), KEEP=1 keeps the work dir.
set -euo pipefail
BENCH=relay.sh

N=2000
SIZE=4096
CONC=10
SWEEP=0
LATENCY=0
MOAT_ONLY=0
POSTFIX_ONLY=0

usage() { sed -n '2,/^set -e/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d' >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
    -n) N=$2; shift 2 ;;
    -s) SIZE=$2; shift 2 ;;
    -c) CONC=$2; shift 2 ;;
    --sweep) SWEEP=1; shift ;;
    --latency) LATENCY=1; shift ;;
    --moat-only) MOAT_ONLY=1; shift ;;
    --postfix-only) POSTFIX_ONLY=1; shift ;;
    -h|--help) usage ;;
    *) echo "relay.sh: unknown option $1" >&2; usage ;;
    esac
done
case "$SIZE" in
*k|*K) SIZE=$(( ${SIZE%[kK]} * 1024 )) ;;
esac
for v in "$N" "$SIZE" "$CONC"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "relay.sh: not a positive number: $v" >&2; exit 2; }
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${MOAT_BUILD_DIR:-build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
MOATD=$BUILD/moatd
MOAT=$BUILD/moat
PFI=$ROOT/bench/postfix-instance.sh
LOAD=$ROOT/bench/smtp_load.py
CLK_TCK=$(getconf CLK_TCK)

[ "$POSTFIX_ONLY" -eq 1 ] || for b in "$MOATD" "$MOAT"; do
    [ -x "$b" ] || { echo "relay.sh: $b not built (meson setup build && ninja -C build)" >&2; exit 1; }
done
command -v smtp-source >/dev/null && command -v smtp-sink >/dev/null \
    || { echo "relay.sh: needs Postfix's smtp-source and smtp-sink (apt-get install postfix)" >&2; exit 1; }
if [ "$(id -u)" -ne 0 ] && [ "$MOAT_ONLY" -eq 0 ]; then
    echo "relay.sh: the Postfix instance needs root; running Moat only" >&2
    MOAT_ONLY=1
fi

# shellcheck source=bench/bench-lib.sh
. "$ROOT/bench/bench-lib.sh"

# measure_latency LABEL PORT: smtp_load.py sends N more messages with CONC
# sessions and times "." -> "250"; sets L_P50 L_P99 L_OK L_RATE, and waits
# until the sink has them all (2N), L_GOT
measure_latency() {
    local label=$1 port=$2 js
    L_P50=- L_P99=- L_OK=0 L_RATE=- L_GOT=0
    [ "$LATENCY" -eq 1 ] || return 0
    js=$(/usr/bin/python3 "$LOAD" latency "127.0.0.1:$port" -n "$N" -c "$CONC" -s "$SIZE" \
        2>"$WORK/$label.load.err") || echo "relay.sh: smtp_load.py against $label: $js $(head -3 "$WORK/$label.load.err")" >&2
    echo "$js" >"$WORK/$label.load.json"
    read -r L_P50 L_P99 L_OK L_RATE < <(echo "$js" | /usr/bin/python3 -c \
        'import json,sys; j=json.load(sys.stdin); print(j["p50_ms"], j["p99_ms"], j["ok"], j["msg_per_s"])') || true
    L_GOT=$(( $(wait_sink $((2 * N))) - N ))
}

# measure LABEL LEADER_PID "PIDS_CMD" PORT
#   runs smtp-source against PORT, waits for N at the sink, sets R_* results
measure() {
    local label=$1 port=$2 pidcmd=$3
    local c0 c1 t0 t1 t2 got rc=0
    # shellcheck disable=SC2046  # a list of PIDs, split on purpose
    c0=$(cpu_ticks $($pidcmd))
    t0=$(now)
    smtp-source -s "$CONC" -m "$N" -l "$SIZE" -f from@ext.test -t rcpt@example.com \
        "127.0.0.1:$port" >"$WORK/$label.source.out" 2>&1 || rc=$?
    t1=$(now)
    if [ $rc -ne 0 ] || [ -s "$WORK/$label.source.out" ]; then
        echo "relay.sh: smtp-source against $label: exit $rc" >&2
        head -5 "$WORK/$label.source.out" >&2
    fi
    got=$(wait_sink "$N")
    t2=$(now)
    # CPU after the last delivery; the processes are idle now
    # shellcheck disable=SC2046
    c1=$(cpu_ticks $($pidcmd))
    R_GOT=$got
    R_ACC=$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
    R_DEL=$(awk -v n="$got" -v a="$t0" -v b="$t2" 'BEGIN { printf "%.0f", n / (b - a) }')
    R_CPU=$(awk -v d="$((c1 - c0))" -v hz="$CLK_TCK" -v n="$N" 'BEGIN { printf "%.0f", d * 1000000 / hz / n }')
    R_SRC_RC=$rc
}

run_moat() {
    local state=$WORK/moat-state port http
    rm -rf "$state" "$state.admin-token"
    start_sink moat
    port=$(free_port)
    http=$(free_port)
    # a fresh moatd, the domain, its route and the permitted sender through the API
    start_moatd "$state" "$port" "$http" -o smtp_max_connections_per_ip=1000
    "$MOAT" domain add example.com --trust-unverified >/dev/null
    "$MOAT" route set example.com "127.0.0.1:$SINK_PORT" >/dev/null
    "$MOAT" permitted add ext.test --comment "relay benchmark sender" >/dev/null
    measure moat "$port" "echo $MOATD_PID"
    M_ACC=$R_ACC M_DEL=$R_DEL M_CPU=$R_CPU M_GOT=$R_GOT M_RC=$R_SRC_RC
    measure_latency moat "$port"
    M_P50=$L_P50 M_P99=$L_P99 M_LOK=$L_OK M_LGOT=$L_GOT M_LRATE=$L_RATE
    kill -TERM "$MOATD_PID"
    wait "$MOATD_PID" || echo "relay.sh: moatd exited $? after SIGTERM (log: $WORK/moatd.log)" >&2
    kill -TERM "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true
}

run_postfix() {
    local dir=$WORK/postfix-$CONC port master
    rm -rf "$dir"
    start_sink postfix
    port=$(free_port)
    bash "$PFI" create "$dir" --port "$port" --role relay --domain example.com \
        --relay-to "127.0.0.1:$SINK_PORT" >/dev/null
    PF_DIRS+=("$dir")
    bash "$PFI" start "$dir" &
    master=$!
    PIDS+=("$master")
    wait_220 "$port" "$master"
    measure postfix "$port" "session_pids $master"
    P_ACC=$R_ACC P_DEL=$R_DEL P_CPU=$R_CPU P_GOT=$R_GOT P_RC=$R_SRC_RC
    measure_latency postfix "$port"
    P_P50=$L_P50 P_P99=$L_P99 P_LOK=$L_OK P_LGOT=$L_GOT P_LRATE=$L_RATE
    bash "$PFI" stop "$dir" >/dev/null
    wait "$master" 2>/dev/null || true
    kill -TERM "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true
}

ratio() {
    if [ "$1" = - ] || [ "$2" = - ]; then echo -; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'
}

LOST=0
ROWS=()

# target SIZE CONC: the issue's goal for delivered msg/s, Moat / Postfix
target() {
    if [ "$1" -gt 65536 ]; then echo 3; elif [ "$2" -eq 1 ]; then echo 2; else echo 4; fi
}

# row CONC SIZE METRIC MOAT POSTFIX [RATIO [TARGET]]
row() {
    ROWS+=("$(printf '%5s %6s  %-16s %10s %10s %8s %7s' "$1" "$2" "$3" "$4" "$5" "${6-}" "${7-}")")
}

one_run() {
    M_ACC=- M_DEL=- M_CPU=- M_GOT=0 M_RC=0 P_ACC=- P_DEL=- P_CPU=- P_GOT=- P_RC=0
    M_P50=- M_P99=- M_LOK=- M_LGOT=0 M_LRATE=- P_P50=- P_P99=- P_LOK=- P_LGOT=0 P_LRATE=-
    [ "$POSTFIX_ONLY" -eq 1 ] || run_moat
    [ "$MOAT_ONLY" -eq 1 ] || run_postfix
    if [ "$POSTFIX_ONLY" -eq 0 ] && [ "$M_RC" -ne 0 ]; then
        echo "relay.sh: smtp-source failed against Moat (c=$CONC)" >&2
        LOST=1
    fi
    if [ "$MOAT_ONLY" -eq 0 ] && [ "$P_RC" -ne 0 ]; then
        echo "relay.sh: smtp-source failed against Postfix (c=$CONC)" >&2
        LOST=1
    fi
    if [ "$POSTFIX_ONLY" -eq 0 ] && [ "$M_GOT" -ne "$N" ]; then
        echo "relay.sh: Moat LOST $((N - M_GOT)) of $N messages (c=$CONC)" >&2
        LOST=1
    fi
    if [ "$MOAT_ONLY" -eq 0 ] && [ "$P_GOT" -ne "$N" ]; then
        echo "relay.sh: Postfix lost $((N - P_GOT)) of $N messages (c=$CONC)" >&2
        LOST=1
    fi
    local sz=$((SIZE / 1024))k r t met=
    r=$(ratio "$M_DEL" "$P_DEL")
    t=$(target "$SIZE" "$CONC")
    [ "$r" = - ] || met=$(awk -v r="$r" -v t="$t" 'BEGIN { print (r >= t) ? "met" : "NOT met" }')
    row "$CONC" "$sz" "accepted msg/s" "$M_ACC" "$P_ACC" "$(ratio "$M_ACC" "$P_ACC")"
    row "" "" "delivered msg/s" "$M_DEL" "$P_DEL" "$r" ">=${t}x $met"
    row "" "" "CPU us/msg" "$M_CPU" "$P_CPU" "$(ratio "$M_CPU" "$P_CPU")"
    row "" "" "delivered/sent" "$M_GOT/$N" "$P_GOT/$N"
    if [ "$LATENCY" -eq 1 ]; then
        row "" "" "p50 ms (. -> 250)" "$M_P50" "$P_P50" "$(ratio "$M_P50" "$P_P50")"
        row "" "" "p99 ms (. -> 250)" "$M_P99" "$P_P99" "$(ratio "$M_P99" "$P_P99")"
        row "" "" "latency 250s/sent" "$M_LOK/$N" "$P_LOK/$N"
        row "" "" "latency run msg/s" "$M_LRATE" "$P_LRATE" "$(ratio "$M_LRATE" "$P_LRATE")"
        if [ "$POSTFIX_ONLY" -eq 0 ] && { [ "$M_LOK" -ne "$N" ] || [ "$M_LGOT" -ne "$N" ]; }; then
            echo "relay.sh: Moat latency run: $M_LOK of $N got 250, $M_LGOT delivered (c=$CONC)" >&2
            LOST=1
        fi
        if [ "$MOAT_ONLY" -eq 0 ] && { [ "$P_LOK" -ne "$N" ] || [ "$P_LGOT" -ne "$N" ]; }; then
            echo "relay.sh: Postfix latency run: $P_LOK of $N got 250, $P_LGOT delivered (c=$CONC)" >&2
            LOST=1
        fi
    fi
}

# ceiling: smtp-source, then smtp_load.py, straight into a sink (no relay):
# what the client and sink reach on this machine; the relays cannot beat it,
# and smtp_load.py's figure shows it is not the bottleneck of the latency runs
ceiling() {
    local t0 t1 js
    start_sink ceiling
    t0=$(now)
    smtp-source -s "$CONC" -m "$N" -l "$SIZE" -f from@ext.test -t rcpt@example.com \
        "127.0.0.1:$SINK_PORT" >/dev/null 2>&1 || true
    t1=$(now)
    CEIL_SRC=$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
    js=$(/usr/bin/python3 "$LOAD" latency "127.0.0.1:$SINK_PORT" -n "$N" -c "$CONC" -s "$SIZE" 2>&1) || true
    CEIL_LOAD=$(echo "$js" | /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["msg_per_s"], "msg/s, p50", j["p50_ms"], "ms, p99", j["p99_ms"], "ms, client CPU", round(j["client_cpu_s"] * 1e6 / j["sent"]), "us/msg")' 2>/dev/null || echo "failed: $js")
    kill -TERM "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true
}

start_unbound
echo "relay benchmark: $N messages of $SIZE octets, smtp-source -> relay -> smtp-sink, $(nproc) CPUs" >&2
if [ "$SWEEP" -eq 1 ]; then
    N4=$N
    for CONC in 1 10 50; do
        echo "... 4 KiB, concurrency $CONC" >&2
        LATENCY=$([ "$CONC" -eq 50 ] && echo 1 || echo 0)
        one_run
    done
    echo "... ceiling: no relay, concurrency 50" >&2
    LATENCY=0
    ceiling
    echo "... 100 KiB, concurrency 10" >&2
    CONC=10 SIZE=102400 N=$(( N4 / 4 ))
    one_run
else
    one_run
fi

printf '\nMoat: default checks on, archive and tracking on; sender domain ext.test added with\n'
printf '"moat permitted add ext.test" (skips greylisting, DNSBL, spam scoring; SPF/DKIM/DMARC still run).\n'
printf 'Postfix: relay for example.com, default settings.\n\n'
printf '%5s %6s  %-16s %10s %10s %8s %7s\n' "conc" "size" "metric" "Moat" "Postfix" "ratio" "target"
printf '%s\n' "${ROWS[@]}"
printf '(ratio = Moat / Postfix; higher is better for msg/s, lower for CPU and latency)\n'
[ -z "${CEIL_SRC:-}" ] || printf 'ceiling, no relay (4 KiB, concurrency 50): smtp-source -> sink %s msg/s; smtp_load.py -> sink %s\n' "$CEIL_SRC" "$CEIL_LOAD"
exit "$LOST"

#!/bin/bash
# backlog.sh - a large queue: fill with the route down, start-up, drain;
# Moat, then a private Postfix instance the same way (when root).
#
# One moatd (fresh state dir, default checks, ext.test a permitted sender,
# a private unbound), then in order:
#   1. normal rate: example.com routed to an smtp-sink; smtp-source sends
#      NORMAL messages (4 KiB, 50 sessions); delivered msg/s;
#   2. route down: the route moves to a port where nothing listens; smtp-source
#      sends N messages (4 KiB, 50 sessions); accepted msg/s, the time it took;
#   3. moat queue list (first page of 100, then the page after it) timed, with
#      N queued (target < 1 s);
#   4. start-up: kill -9 moatd, start it again on the same state dir, time until
#      a connect gets "220" (target < 2 s); moat queue list timed again;
#   5. route up: an smtp-sink starts on the dead port, moat queue retry --all
#      (what an administrator does once the server is back); drain msg/s until
#      the sink has all N, next to the normal rate (target >= 80 %).
# Postfix (bench/postfix-instance.sh, relay to a fixed port where the sink
# runs for step 1 only): the same steps with postqueue -p (it has no paging:
# the whole queue) for the list, kill -9 of every process of the instance
# and a new master for the start-up, postqueue -f for the retry.
#
# usage: bench/backlog.sh [-n N] [--normal NORMAL] [--moat-only]
#   -n N             messages queued while the route is down (default 200000)
#   --normal NORMAL  messages for the normal delivered rate (default 10000)
#   --moat-only      skip Postfix (also when not root)
# Environment: MOAT_BUILD_DIR (default build), KEEP=1 keeps the work dir.
# Exits 1 if a message was lost or a step failed; never because of speed.
set -euo pipefail
BENCH=backlog.sh
N=200000
NORMAL=10000
CONC=50
MOAT_ONLY=0

usage() { sed -n '2,/^set -e/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d' >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    -n) N=$2; shift 2 ;;
    --normal) NORMAL=$2; shift 2 ;;
    --moat-only) MOAT_ONLY=1; shift ;;
    -h|--help) usage ;;
    *) echo "$BENCH: unknown option $1" >&2; usage ;;
    esac
done
for v in "$N" "$NORMAL"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH: not a positive number: $v" >&2; exit 2; }
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${MOAT_BUILD_DIR:-build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
MOATD=$BUILD/moatd
MOAT=$BUILD/moat
PFI=$ROOT/bench/postfix-instance.sh
for b in "$MOATD" "$MOAT"; do
    [ -x "$b" ] || { echo "$BENCH: $b not built (meson setup build && ninja -C build)" >&2; exit 1; }
done
command -v smtp-source >/dev/null || { echo "$BENCH: needs smtp-source (apt-get install postfix)" >&2; exit 1; }
if [ "$(id -u)" -ne 0 ] && [ "$MOAT_ONLY" -eq 0 ]; then
    echo "$BENCH: the Postfix instance needs root; running Moat only" >&2
    MOAT_ONLY=1
fi
# shellcheck source=bench/bench-lib.sh
. "$ROOT/bench/bench-lib.sh"

rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# send COUNT PORT: smtp-source, 4 KiB, CONC sessions, one message per connection
send() {
    smtp-source -s "$CONC" -m "$1" -l 4096 -f from@ext.test -t rcpt@example.com \
        "127.0.0.1:$2" >"$WORK/source.out" 2>&1 \
        || { echo "$BENCH: smtp-source failed:" >&2; head -5 "$WORK/source.out" >&2; exit 1; }
}

# time_list CMD ARGS...: seconds for one queue listing (its output kept)
time_list() {
    local t0 t1
    t0=$(now)
    "$@" >"$WORK/list.out" 2>&1 || { echo "$BENCH: $* failed:" >&2; tail -3 "$WORK/list.out" >&2; exit 1; }
    t1=$(now)
    secs "$t0" "$t1"
}

list_both() {
    local first cursor second
    first=$(time_list "$MOAT" queue list --limit 100)
    grep -q '^100 messages shown' "$WORK/list.out" || { echo "$BENCH: the first page does not hold 100 messages:" >&2; tail -3 "$WORK/list.out" >&2; exit 1; }
    cursor=$(sed -n 's/.*--cursor \([^ ]*\)$/\1/p' "$WORK/list.out" | tail -1)
    second=-
    [ -z "$cursor" ] || second=$(time_list "$MOAT" queue list --limit 100 --cursor "$cursor")
    echo "$first $second"
}

met() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN { ok = (op == "<") ? v < t : v >= t; print ok ? "met" : "NOT met" }'; }

# sink_up NAME PORT; sink_down: the route's server
sink_up() { start_sink "$1" "$2"; }
sink_down() { kill -TERM "$SINK_PID"; wait "$SINK_PID" 2>/dev/null || true; }

# steps 1, 2 and 5 for either relay; step 3 and 4 by the callers (LIST_CMD, restart_*)
# normal_and_fill PORT DOWN_PORT -> NORMAL_RATE FEED_RATE FEED_S
normal_and_fill() {
    local port=$1 down=$2 t0 t1 got
    echo "... 1. normal delivered rate" >&2
    sink_up normal "$down"
    t0=$(now)
    send "$NORMAL" "$port"
    got=$(wait_sink "$NORMAL")
    t1=$(now)
    [ "$got" -eq "$NORMAL" ] || { echo "$BENCH: normal run: the sink got $got of $NORMAL" >&2; exit 1; }
    NORMAL_RATE=$(rate "$NORMAL" "$t0" "$t1")
    sink_down
    echo "... 2. route down, $N messages into the queue" >&2
    t0=$(now)
    send "$N" "$port"
    t1=$(now)
    FEED_RATE=$(rate "$N" "$t0" "$t1")
    FEED_S=$(secs "$t0" "$t1")
}

# drain DOWN_PORT RETRY_CMD...: the route's server back, the retry command;
# -> DRAIN_RATE DRAIN_S DRAIN_GOT
drain() {
    local down=$1 t0 t1
    shift
    echo "... 5. route up, drain" >&2
    t0=$(now)          # the relay may reach the sink as soon as it listens
    sink_up drain "$down"
    "$@" >/dev/null 2>&1 || { echo "$BENCH: $* failed" >&2; exit 1; }
    DRAIN_GOT=$(wait_sink "$N")
    t1=$(now)
    DRAIN_RATE=$(rate "$DRAIN_GOT" "$t0" "$t1")
    DRAIN_S=$(secs "$t0" "$t1")
}

run_moat() {
    local port http down t0 t1 state=$WORK/state
    port=$(free_port)
    http=$(free_port)
    down=$(free_port)
    local opts=(-o smtp_max_connections_per_ip=1000)
    start_moatd "$state" "$port" "$http" "${opts[@]}"
    "$MOAT" domain add example.com --trust-unverified >/dev/null
    "$MOAT" permitted add ext.test --comment "backlog benchmark sender" >/dev/null
    "$MOAT" route set example.com "127.0.0.1:$down" >/dev/null
    echo "Moat:" >&2
    normal_and_fill "$port" "$down"
    echo "... 3. moat queue list with $N queued" >&2
    read -r M_LIST1 M_LIST2 < <(list_both)
    echo "... 4. kill -9, restart" >&2
    kill -KILL "$MOATD_PID"
    wait "$MOATD_PID" 2>/dev/null || true
    t0=$(now)
    start_moatd "$state" "$port" "$http" "${opts[@]}"
    t1=$(now)
    M_START=$(secs "$t0" "$t1")
    read -r M_LIST3 M_LIST4 < <(list_both)
    drain "$down" "$MOAT" queue retry --all
    M_NORMAL=$NORMAL_RATE M_FEED=$FEED_RATE M_FEED_S=$FEED_S
    M_DRAIN=$DRAIN_RATE M_DRAIN_S=$DRAIN_S M_GOT=$DRAIN_GOT
    kill -TERM "$MOATD_PID"; wait "$MOATD_PID" 2>/dev/null || true
    sink_down
}

run_postfix() {
    local dir=$WORK/postfix port down master t0 t1 p
    port=$(free_port)
    down=$(free_port)
    bash "$PFI" create "$dir" --port "$port" --role relay --domain example.com \
        --relay-to "127.0.0.1:$down" >/dev/null
    PF_DIRS+=("$dir")
    bash "$PFI" start "$dir" &
    master=$!
    PIDS+=("$master")
    wait_220 "$port" "$master"
    echo "Postfix:" >&2
    normal_and_fill "$port" "$down"
    echo "... 3. postqueue -p with $N queued" >&2
    P_LIST1=$(time_list postqueue -c "$dir/etc" -p)
    echo "... 4. kill -9, restart" >&2
    for p in $(session_pids "$master"); do kill -KILL "$p" 2>/dev/null || true; done
    wait "$master" 2>/dev/null || true
    while [ -n "$(session_pids "$master")" ]; do sleep 0.05; done
    t0=$(now)
    bash "$PFI" start "$dir" &
    master=$!
    PIDS+=("$master")
    wait_220 "$port" "$master"
    t1=$(now)
    P_START=$(secs "$t0" "$t1")
    P_LIST3=$(time_list postqueue -c "$dir/etc" -p)
    drain "$down" postqueue -c "$dir/etc" -f
    P_NORMAL=$NORMAL_RATE P_FEED=$FEED_RATE P_FEED_S=$FEED_S
    P_DRAIN=$DRAIN_RATE P_DRAIN_S=$DRAIN_S P_GOT=$DRAIN_GOT
    bash "$PFI" stop "$dir" >/dev/null
    wait "$master" 2>/dev/null || true
    sink_down
}

ratio() {
    if [ "$1" = - ] || [ "$2" = - ]; then echo -; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'
}
pct() { [ "$1" = - ] && { echo -; return; }; awk -v d="$1" -v n="$2" 'BEGIN { printf "%.0f", 100 * d / n }'; }

M_NORMAL=- M_FEED=- M_FEED_S=- M_LIST1=- M_LIST2=- M_START=- M_LIST3=- M_LIST4=- M_DRAIN=- M_DRAIN_S=- M_GOT=0
P_NORMAL=- P_FEED=- P_FEED_S=- P_LIST1=- P_START=- P_LIST3=- P_DRAIN=- P_DRAIN_S=- P_GOT=-
start_unbound
echo "backlog benchmark: $N messages, normal rate from $NORMAL, $(nproc) CPUs" >&2
run_moat
[ "$MOAT_ONLY" -eq 1 ] || run_postfix
RC=0
[ "$M_GOT" -eq "$N" ] || { echo "$BENCH: Moat LOST: the sink got $M_GOT of $N queued messages" >&2; RC=1; }
if [ "$MOAT_ONLY" -eq 0 ] && [ "$P_GOT" -ne "$N" ]; then
    echo "$BENCH: Postfix lost: the sink got $P_GOT of $N queued messages" >&2; RC=1
fi
M_PCT=$(pct "$M_DRAIN" "$M_NORMAL")
P_PCT=-
[ "$P_DRAIN" = - ] || P_PCT=$(pct "$P_DRAIN" "$P_NORMAL")

printf '\nMoat: default checks on, archive and tracking on; "moat permitted add ext.test" for the sender.\n'
printf 'Postfix: relay for example.com, default settings. 4 KiB messages, %s sessions.\n\n' "$CONC"
row() { printf '%-34s %14s %14s %7s  %s\n' "$@"; }
sec() { [ "$1" = - ] && echo - || echo "${1}s"; }
row "metric" "Moat" "Postfix" "ratio" "target"
row "normal delivered msg/s ($NORMAL)" "$M_NORMAL" "$P_NORMAL" "$(ratio "$M_NORMAL" "$P_NORMAL")" ""
row "fill, route down: accepted msg/s" "$M_FEED" "$P_FEED" "$(ratio "$M_FEED" "$P_FEED")" ""
row "  time to queue $N" "$(sec "$M_FEED_S")" "$(sec "$P_FEED_S")" "" ""
row "list, page of 100 (s)" "$M_LIST1 $M_LIST2" "$P_LIST1" "" "< 1 s: Moat $(met "$M_LIST1" 1 '<') (postqueue -p: whole queue)"
row "start-up after kill -9 to 220 (s)" "$M_START" "$P_START" "" "< 2 s: Moat $(met "$M_START" 2 '<')"
row "list after restart (s)" "$M_LIST3 $M_LIST4" "$P_LIST3" "" ""
row "drain, route up: msg/s" "$M_DRAIN" "$P_DRAIN" "$(ratio "$M_DRAIN" "$P_DRAIN")" ""
row "  time to drain $N" "$(sec "$M_DRAIN_S")" "$(sec "$P_DRAIN_S")" "" ""
row "  drained / queued" "$M_GOT/$N" "$([ "$P_GOT" = - ] && echo - || echo "$P_GOT/$N")" "" ""
row "drain / normal rate (%)" "$M_PCT" "$P_PCT" "" ">= 80 %: Moat $(met "$M_PCT" 80 '>=')"
exit $RC

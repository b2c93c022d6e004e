#!/bin/bash
# soak.sh - a long run at a steady rate, with moatd's memory sampled every
# minute: after the warm-up, its resident memory must not keep growing.
#
# One moatd (fresh state dir, default checks, archive and tracking on,
# ext.test a permitted sender, a private unbound) relays to an smtp-sink.
# Every second smtp-source sends RATE messages of 4 KiB over 10 sessions
# (then waits out the second), for MINUTES minutes.  Each minute the script
# prints moatd's VmRSS, the messages sent and delivered so far, the queue
# and the archive backlog (from /metrics).  At the end: RSS at the end of
# the warm-up (WARMUP minutes) and at the end, the growth per minute after
# the warm-up (least squares over the samples), and every message
# accounted for.  Pick RATE at about half of what `bench/relay.sh -c 10`
# measures on the machine.
#
# usage: bench/soak.sh [-r RATE] [-m MINUTES] [-w WARMUP]
#   -r RATE      messages per second (default 700)
#   -m MINUTES   length of the run (default 30)
#   -w WARMUP    minutes before growth counts (default 5)
# Environment: MOAT_BUILD_DIR (default build), KEEP=1 keeps the work dir.
# Exits 1 if a message was lost or a component failed; never because of
# speed or memory (the figures are for the reader).
set -euo pipefail
BENCH=soak.sh
RATE=700
MINUTES=30
WARMUP=5
CONC=10

usage() { sed -n '2,/^set -e/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d' >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    -r) RATE=$2; shift 2 ;;
    -m) MINUTES=$2; shift 2 ;;
    -w) WARMUP=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "$BENCH: unknown option $1" >&2; usage ;;
    esac
done
for v in "$RATE" "$MINUTES" "$WARMUP"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH: not a positive number: $v" >&2; exit 2; }
done
[ "$WARMUP" -lt "$MINUTES" ] || { echo "$BENCH: the warm-up must be shorter than the run" >&2; exit 2; }

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${MOAT_BUILD_DIR:-build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
MOATD=$BUILD/moatd
MOAT=$BUILD/moat
for b in "$MOATD" "$MOAT"; do
    [ -x "$b" ] || { echo "$BENCH: $b not built (meson setup build && ninja -C build)" >&2; exit 1; }
done
if ! command -v smtp-source >/dev/null || ! command -v smtp-sink >/dev/null; then
    echo "$BENCH: needs smtp-source and smtp-sink (apt-get install postfix)" >&2
    exit 1
fi
# shellcheck source=bench/bench-lib.sh
. "$ROOT/bench/bench-lib.sh"

# metric NAME: one unlabelled series of /metrics (0 when absent)
metric() {
    curl -s "$MOAT_URL/metrics" | awk -v n="$1" '$1 == n { v = $2 } END { printf "%d", v + 0 }'
}

start_unbound
start_sink route
SMTP_PORT=$(free_port)
start_moatd "$WORK/state" "$SMTP_PORT" "$(free_port)"
"$MOAT" domain add example.com --trust-unverified >/dev/null
"$MOAT" permitted add ext.test --comment "soak benchmark sender" >/dev/null
"$MOAT" route set example.com "127.0.0.1:$SINK_PORT" >/dev/null

echo "soak: $RATE msg/s of 4 KiB for $MINUTES min ($CONC sessions), warm-up $WARMUP min, $(nproc) CPUs" >&2
echo "Moat: default checks on, archive and tracking on; \"moat permitted add ext.test\" for the sender." >&2
printf '%6s %10s %10s %10s %8s %8s\n' minute "rss KiB" sent delivered queue archive
SAMPLES=$WORK/samples
: >"$SAMPLES"
sent=0
start=$(now)
for minute in $(seq 1 "$MINUTES"); do
    for _ in $(seq 1 60); do
        t0=$(now)
        smtp-source -s "$CONC" -m "$RATE" -l 4096 -f from@ext.test -t rcpt@example.com \
            "127.0.0.1:$SMTP_PORT" >"$WORK/source.out" 2>&1 \
            || { echo "$BENCH: smtp-source failed:" >&2; head -5 "$WORK/source.out" >&2; exit 1; }
        sent=$((sent + RATE))
        left=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { d = 1 - (b - a); if (d > 0) printf "%.3f", d; else print 0 }')
        sleep "$left"
    done
    rss=$(vmrss_kib "$MOATD_PID")
    echo "$minute $rss" >>"$SAMPLES"
    printf '%6d %10d %10d %10d %8d %8d\n' "$minute" "$rss" "$sent" "$(sink_count "$SINK_OUT")" \
        "$(metric moat_queue_messages)" "$(metric moat_archive_pending)"
done
elapsed=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')
got=$(wait_sink "$sent")
awk -v w="$WARMUP" '
    $1 == w { warm = $2 }
    { last = $2 }
    $1 >= w { n++; sx += $1; sy += $2; sxx += $1 * $1; sxy += $1 * $2 }
    END {
        slope = (n > 1) ? (n * sxy - sx * sy) / (n * sxx - sx * sx) : 0
        printf "\nRSS after the warm-up (minute %d): %d KiB; at the end: %d KiB\n", w, warm, last
        printf "growth after the warm-up: %.1f KiB/min (least squares over %d samples)\n", slope, n
    }' "$SAMPLES"
echo "sent $sent in ${elapsed} s ($(awk -v n="$sent" -v s="$elapsed" 'BEGIN { printf "%.0f", n / s }') msg/s), delivered $got"
if [ "$got" -lt "$sent" ]; then
    echo "$BENCH: LOST $((sent - got)) messages" >&2
    exit 1
fi

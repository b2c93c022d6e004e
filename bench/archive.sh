#!/bin/bash
# archive.sh - archive benchmark: ingest and search at scale.
#
# Default mode (in-process): build/bench/archive_bench generates N realistic
# messages (RFC 5322 headers, a few hundred words from a Zipf vocabulary,
# multipart/alternative HTML, base64 attachments, 1% duplicates, four years
# of dates), ingests them through archive_prepare (extraction, zstd, hash)
# and store_archive_ingest in batches of ARCHIVE_BATCH_MAX (one transaction
# each, synchronous=FULL), then runs a fixed set of searches many times.
# It reports ingest msg/s and MB/s, median and p99 latency per query type,
# the query plans, and the size of the database.
#
# --smtp mode (end to end): smtp-source sends N messages into a real moatd
# (archive on, example.com routed to an smtp-sink) and the script times until
# the archive database holds N arrivals: the rate at which mail is accepted,
# relayed and archived together.
#
# usage: bench/archive.sh [-n N] [-q REPS] [--seed S] [--dir DIR]
#        bench/archive.sh --smtp [-n N] [-s SIZE] [-c CONCURRENCY]
#   -n N        messages (default 1000000 in-process, 20000 with --smtp)
#   -q REPS     runs of each query type (default 50)
#   --seed S    corpus seed (default 1)
#   --dir DIR   keep the database in DIR (default: a temporary directory,
#               removed at exit unless KEEP=1); an existing DIR/archive.db
#               with -n 0 runs the queries only
#   --smtp      the end-to-end mode; -s SIZE payload octets (default 4k),
#               -c CONCURRENCY smtp-source sessions (default 10)
# Environment: MOAT_BUILD_DIR (default build), KEEP=1 keeps the work dir.
# Needs a build with -Dbench=true (meson configure build -Dbench=true).
set -euo pipefail

N=
REPS=50
SEED=1
DIR=
SMTP=0
SIZE=4096
CONC=10

usage() { sed -n '2,/^set -e/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d' >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
    -n) N=$2; shift 2 ;;
    -q) REPS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --dir) DIR=$2; shift 2 ;;
    --smtp) SMTP=1; shift ;;
    -s) SIZE=$2; shift 2 ;;
    -c) CONC=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "archive.sh: unknown option $1" >&2; usage ;;
    esac
done
[ -n "$N" ] || { [ "$SMTP" -eq 1 ] && N=20000 || N=1000000; }
case "$SIZE" in
*k|*K) SIZE=$(( ${SIZE%[kK]} * 1024 )) ;;
esac
for v in "$REPS" "$SEED" "$SIZE" "$CONC"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "archive.sh: not a positive number: $v" >&2; exit 2; }
done
[[ "$N" =~ ^[0-9]+$ ]] || { echo "archive.sh: not a number: $N" >&2; exit 2; }

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${MOAT_BUILD_DIR:-build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
PY=/usr/bin/python3

BENCH=archive.sh
# shellcheck source=bench/bench-lib.sh
. "$ROOT/bench/bench-lib.sh"   # WORK, PIDS and their cleanup, free_port, wait_220, now

echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM" >&2

# --- in-process ---

in_process() {
    local bench=$BUILD/bench/archive_bench db out
    [ -x "$bench" ] || { echo "archive.sh: $bench not built (meson configure $BUILD -Dbench=true && ninja -C $BUILD)" >&2; exit 1; }
    if [ -n "$DIR" ]; then
        mkdir -p "$DIR"
        db=$DIR/archive.db
    else
        db=$WORK/archive.db
    fi
    out=$WORK/bench.out
    echo "archive benchmark: $N messages (seed $SEED), $REPS runs per query type" >&2
    "$bench" "$db" "$N" "$REPS" "$SEED" >"$out"
    awk -F'|' '
    /^ingest msg\/s/ { rate = $0; sub(/^ingest msg\/s /, "", rate) }
    /^ingest MB\/s/ { mb = $0; sub(/^ingest MB\/s /, "", mb) }
    /^ingest seconds/ { secs = $0; sub(/^ingest seconds /, "", secs) }
    /^ingest duplicates/ { dups = $0; sub(/^ingest duplicates /, "", dups) }
    /^store msg\/s/ { store = $0; sub(/^store msg\/s /, "", store) }
    /^stats / { stats = $0; sub(/^stats /, "", stats) }
    /^db bytes/ { db = $0; sub(/^db bytes /, "", db) }
    /^query / { name = $1; sub(/^query /, "", name); q[++nq] = sprintf("%-24s %10s %10s %10s  %s", name, $2, $3, $4, $5) }
    /^plan / { p[++np] = $0 }
    END {
        if (rate != "") {
            printf "\ningest: %s msg/s, %s MB/s, %s duplicates\n", rate, mb, dups
            printf "        seconds: %s\n", secs
            printf "        store_archive_ingest alone: %s msg/s\n", store
        }
        printf "archive: %s\n", stats
        printf "database: %.1f MB\n\n", db / 1e6
        printf "%-24s %10s %10s %10s  %s\n", "query", "median ms", "p99 ms", "avg hits", "example"
        for (i = 1; i <= nq; i++) print q[i]
        printf "(avg hits: matches counted up to 10000; pages of 50, snippets for text queries)\n"
        if (ENVIRON["PLANS"] == "1") { print ""; for (i = 1; i <= np; i++) print p[i] }
    }' "$out"
}

# --- end to end through moatd ---


# archived DB: arrivals in the archive database (0 while it does not exist)
archived() {
    "$PY" - "$1" <<'EOF'
import sqlite3, sys
try:
    c = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=5)
    print(c.execute("SELECT count(*) FROM arrivals").fetchone()[0])
except sqlite3.Error:
    print(0)
EOF
}

sink_count() {
    local c
    c=$(tail -c 200 "$1" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -1)
    c=${c#mesg=}
    echo "${c:-0}"
}

smtp_mode() {
    local moatd=$BUILD/moatd moat=$BUILD/moat state=$WORK/state port http ub sink
    for b in "$moatd" "$moat"; do
        [ -x "$b" ] || { echo "archive.sh: $b not built" >&2; exit 1; }
    done
    if ! command -v smtp-source >/dev/null || ! command -v smtp-sink >/dev/null; then
        echo "archive.sh: needs Postfix's smtp-source and smtp-sink" >&2
        exit 1
    fi
    mkdir -p "$state" "$WORK/unbound"
    # a resolver that answers nothing from outside loopback
    ub=$(free_port)
    cat >"$WORK/unbound/unbound.conf" <<EOF
server: interface: 127.0.0.1 port: $ub do-ip6: no do-daemonize: no chroot: "" username: ""
  directory: "$WORK/unbound" pidfile: "$WORK/unbound/unbound.pid" use-syslog: no logfile: ""
  do-not-query-localhost: no
forward-zone: name: "." forward-addr: 127.0.0.1@9
EOF
    unbound -c "$WORK/unbound/unbound.conf" >"$WORK/unbound/log" 2>&1 &
    PIDS+=("$!")
    sink=$(free_port)
    local u=()
    [ "$(id -u)" -eq 0 ] && u=(-u nobody)
    smtp-sink "${u[@]}" -c "127.0.0.1:$sink" 1000 >"$WORK/sink.out" 2>&1 &
    PIDS+=("$!")
    wait_220 "$sink" "$!"
    port=$(free_port)
    http=$(free_port)
    "$moatd" --state-dir "$state" -o run_user=root --init-admin admin \
        --token-file "$WORK/admin.token" >/dev/null 2>&1
    "$moatd" --foreground --state-dir "$state" --smtp-listen "127.0.0.1:$port" \
        --http-listen "127.0.0.1:$http" --resolver "127.0.0.1:$ub" \
        -o log_level=warn -o hostname=moat.bench.test -o greylisting=no \
        -o smtp_max_connections_per_ip=1000 >"$WORK/moatd.log" 2>&1 &
    local mpid=$!
    PIDS+=("$mpid")
    wait_220 "$port" "$mpid"
    MOAT_URL="http://127.0.0.1:$http" MOAT_TOKEN=$(cat "$WORK/admin.token") \
        "$moat" domain add example.com --trust-unverified >/dev/null
    MOAT_URL="http://127.0.0.1:$http" MOAT_TOKEN=$(cat "$WORK/admin.token") \
        "$moat" route set example.com "127.0.0.1:$sink" >/dev/null
    echo "end to end: $N messages of $SIZE octets, $CONC sessions, smtp-source -> moatd (archive on) -> smtp-sink" >&2
    local t0 t1 t2 t3 got=0 last=-1 stall=0 rc=0 sunk
    t0=$(now)
    smtp-source -s "$CONC" -m "$N" -l "$SIZE" -f from@ext.test -t rcpt@example.com \
        "127.0.0.1:$port" >"$WORK/source.out" 2>&1 || rc=$?
    t1=$(now)
    [ $rc -eq 0 ] || { echo "archive.sh: smtp-source exit $rc" >&2; head -5 "$WORK/source.out" >&2; }
    t2=
    while :; do
        got=$(archived "$state/archive.db")
        [ -z "$t2" ] && [ "$(sink_count "$WORK/sink.out")" -ge "$N" ] && t2=$(now)
        [ "$got" -ge "$N" ] && break
        if [ "$got" -eq "$last" ]; then
            stall=$((stall + 1))
            [ $stall -ge 300 ] && break      # 60 s without progress
        else
            stall=0
            last=$got
        fi
        sleep 0.2
    done
    t3=$(now)
    sunk=$(sink_count "$WORK/sink.out")
    [ -n "$t2" ] || t2=$t3
    printf '\n%-28s %10s\n' "metric" "value"
    awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%-28s %10.0f\n", "accepted msg/s", n / (b - a) }'
    awk -v n="$sunk" -v a="$t0" -v b="$t2" 'BEGIN { printf "%-28s %10.0f\n", "relayed msg/s", n / (b - a) }'
    awk -v n="$got" -v a="$t0" -v b="$t3" 'BEGIN { printf "%-28s %10.0f\n", "archived msg/s", n / (b - a) }'
    printf '%-28s %10s\n' "archived/sent" "$got/$N" "relayed/sent" "$sunk/$N"
    printf '%-28s %10.1f\n' "archive.db MB" "$(stat -c %s "$state/archive.db" 2>/dev/null | awk '{ print $1 / 1e6 }')"
    kill -TERM "$mpid"
    wait "$mpid" || echo "archive.sh: moatd exited $? after SIGTERM (log: $WORK/moatd.log)" >&2
    if [ "$got" -ne "$N" ] || [ "$sunk" -ne "$N" ]; then
        echo "archive.sh: archived $got, relayed $sunk of $N" >&2
        return 1
    fi
}

if [ "$SMTP" -eq 1 ]; then
    smtp_mode
else
    in_process
fi

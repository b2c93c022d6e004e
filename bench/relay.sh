#!/bin/bash
# relay.sh - relay benchmark, Moat side by side with Postfix.
#
# Postfix's smtp-source sends N messages of SIZE octets with CONCURRENCY
# parallel sessions (one message per connection) for rcpt@example.com, first
# to moatd (fresh state dir; domain example.com routed to an smtp-sink),
# then to a private Postfix instance configured the same way (relay for
# example.com to an smtp-sink, default fsync behaviour).  For each it reports
#   accepted msg/s   N / smtp-source wall time
#   delivered msg/s  N / time from the first connection until the sink has N
#   CPU ms/msg       user+system CPU of moatd, resp. of every Postfix process
#                    (live ones plus those the master reaped), during the run
# and checks that nothing was lost (sink count == N).  It never fails on speed;
# it exits 1 only if messages were lost or a component failed.
#
# usage: bench/relay.sh [-n N] [-s SIZE] [-c CONCURRENCY] [--sweep] [--moat-only]
#   -n N          messages per run (default 2000)
#   -s SIZE       payload octets, k suffix allowed (default 4k)
#   -c C          parallel sessions (default 10)
#   --sweep       run C = 1, 10 and 50 and print one table
#   --moat-only   skip Postfix (e.g. when not root)
#   --postfix-only  skip Moat
# Environment: MOAT_BUILD_DIR (default build), KEEP=1 keeps the work dir.
set -euo pipefail

N=2000
SIZE=4096
CONC=10
SWEEP=0
MOAT_ONLY=0
POSTFIX_ONLY=0

usage() { sed -n '2,/^set -e/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d' >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
    -n) N=$2; shift 2 ;;
    -s) SIZE=$2; shift 2 ;;
    -c) CONC=$2; shift 2 ;;
    --sweep) SWEEP=1; shift ;;
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

WORK=$(mktemp -d /tmp/moat-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()           # everything we started, stopped by PID on exit
PF_DIRS=()

cleanup() {
    local p
    for d in "${PF_DIRS[@]}"; do
        bash "$PFI" stop "$d" >/dev/null 2>&1 || true
    done
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then
        echo "work dir kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port: a TCP port nobody listens on right now
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_220 PORT PID: until a connect gets the greeting (or PID dies)
wait_220() {
    local port=$1 pid=$2 line
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || { echo "relay.sh: process $pid died before port $port was ready" >&2; return 1; }
        if line=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && head -n1 <&3 && printf 'QUIT\r\n' >&3" 2>/dev/null) \
                && [[ "$line" == 220* ]]; then
            return 0
        fi
        sleep 0.1
    done
    echo "relay.sh: nothing answers 220 on port $port" >&2
    return 1
}

now() { date +%s.%N; }

# cpu_ticks PID...: utime+stime (+ reaped children) of the given processes
cpu_ticks() {
    local total=0 p f
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        # fields after the ")" of comm: 14 utime 15 stime 16 cutime 17 cstime
        f=$(sed -e 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        set -- $f
        total=$(( total + ${12} + ${13} + ${14} + ${15} ))
    done
    echo "$total"
}

# session_pids LEADER: every process of a session (Postfix master + children)
session_pids() { ps -o pid= -s "$1" 2>/dev/null | tr -s ' \n' ' '; }

# sink_count OUTFILE: the message counter of smtp-sink -c
sink_count() {
    local c
    c=$(tail -c 200 "$1" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -1)
    echo "${c#mesg=}" | sed 's/^$/0/'
}

# start_sink NAME -> sets SINK_PORT SINK_OUT, appends to PIDS
start_sink() {
    SINK_PORT=$(free_port)
    SINK_OUT=$WORK/$1.sink.out
    local u=()
    [ "$(id -u)" -eq 0 ] && u=(-u nobody)
    smtp-sink "${u[@]}" -c "127.0.0.1:$SINK_PORT" 1000 >"$SINK_OUT" 2>&1 &
    SINK_PID=$!
    PIDS+=("$SINK_PID")
    wait_220 "$SINK_PORT" "$SINK_PID"
}

# start_unbound: a resolver for moatd that answers locally (no lookup leaves loopback)
start_unbound() {
    UB_PORT=$(free_port)
    local d=$WORK/unbound
    mkdir -p "$d"
    cat >"$d/unbound.conf" <<EOF
server: interface: 127.0.0.1 port: $UB_PORT do-ip6: no do-daemonize: no chroot: "" username: ""
  directory: "$d" pidfile: "$d/unbound.pid" use-syslog: no logfile: "" do-not-query-localhost: no
  infra-cache-max-rtt: 300
forward-zone: name: "." forward-addr: 127.0.0.1@9
remote-control: control-enable: yes control-interface: "$d/control.sock"
EOF
    unbound -c "$d/unbound.conf" >"$d/log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1 100); do
        unbound-control -c "$d/unbound.conf" status >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "relay.sh: unbound did not start" >&2
    return 1
}

# measure LABEL LEADER_PID "PIDS_CMD" PORT
#   runs smtp-source against PORT, waits for N at the sink, sets R_* results
measure() {
    local label=$1 port=$2 pidcmd=$3
    local c0 c1 t0 t1 t2 got last=-1 stall=0 rc=0
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
    # delivered: poll the sink counter; give up after 60 s without progress
    while :; do
        got=$(sink_count "$SINK_OUT")
        [ "$got" -ge "$N" ] && break
        if [ "$got" -eq "$last" ]; then
            stall=$((stall + 1))
            [ $stall -ge 600 ] && break
        else
            stall=0
            last=$got
        fi
        sleep 0.1
    done
    t2=$(now)
    # CPU after the last delivery; the processes are idle now
    # shellcheck disable=SC2046
    c1=$(cpu_ticks $($pidcmd))
    R_GOT=$got
    R_ACC=$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')
    R_DEL=$(awk -v n="$got" -v a="$t0" -v b="$t2" 'BEGIN { printf "%.0f", n / (b - a) }')
    R_CPU=$(awk -v d="$((c1 - c0))" -v hz="$CLK_TCK" -v n="$N" 'BEGIN { printf "%.3f", d * 1000 / hz / n }')
    R_SRC_RC=$rc
}

run_moat() {
    local state=$WORK/moat-state port http
    rm -rf "$state"
    mkdir -p "$state"
    start_sink moat
    port=$(free_port)
    http=$(free_port)
    # an administrator token for the CLI, then the domain and its route through the API
    rm -f "$WORK/admin.token"      # --init-admin never overwrites a token file
    "$MOATD" --state-dir "$state" -o run_user=root --init-admin admin \
        --token-file "$WORK/admin.token" >/dev/null 2>&1
    "$MOATD" --foreground --state-dir "$state" --smtp-listen "127.0.0.1:$port" \
        --http-listen "127.0.0.1:$http" --resolver "127.0.0.1:$UB_PORT" \
        -o log_level=info -o hostname=moat.bench.test \
        -o smtp_max_connections_per_ip=1000 >"$WORK/moatd.log" 2>&1 &
    MOATD_PID=$!
    PIDS+=("$MOATD_PID")
    wait_220 "$port" "$MOATD_PID"
    MOAT_URL="http://127.0.0.1:$http" MOAT_TOKEN=$(cat "$WORK/admin.token") \
        "$MOAT" domain add example.com --trust-unverified >/dev/null
    MOAT_URL="http://127.0.0.1:$http" MOAT_TOKEN=$(cat "$WORK/admin.token") \
        "$MOAT" route set example.com "127.0.0.1:$SINK_PORT" >/dev/null
    measure moat "$port" "echo $MOATD_PID"
    M_ACC=$R_ACC M_DEL=$R_DEL M_CPU=$R_CPU M_GOT=$R_GOT M_RC=$R_SRC_RC
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

one_run() {
    M_ACC=- M_DEL=- M_CPU=- M_GOT=0 M_RC=0 P_ACC=- P_DEL=- P_CPU=- P_GOT=- P_RC=0
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
    ROWS+=("$(printf '%5s  %-16s %10s %10s %8s' "$CONC" "accepted msg/s" "$M_ACC" "$P_ACC" "$(ratio "$M_ACC" "$P_ACC")")")
    ROWS+=("$(printf '%5s  %-16s %10s %10s %8s' "" "delivered msg/s" "$M_DEL" "$P_DEL" "$(ratio "$M_DEL" "$P_DEL")")")
    ROWS+=("$(printf '%5s  %-16s %10s %10s %8s' "" "CPU ms/msg" "$M_CPU" "$P_CPU" "$(ratio "$M_CPU" "$P_CPU")")")
    ROWS+=("$(printf '%5s  %-16s %10s %10s' "" "delivered/sent" "$M_GOT/$N" "$P_GOT/$N")")
}

start_unbound
echo "relay benchmark: $N messages of $SIZE octets, smtp-source -> relay -> smtp-sink, $(nproc) CPUs" >&2
if [ "$SWEEP" -eq 1 ]; then
    for CONC in 1 10 50; do
        echo "... concurrency $CONC" >&2
        one_run
    done
else
    one_run
fi

printf '\n%5s  %-16s %10s %10s %8s\n' "conc" "metric" "Moat" "Postfix" "ratio"
printf '%s\n' "${ROWS[@]}"
printf '(ratio = Moat / Postfix; higher is better for msg/s, lower for CPU)\n'
exit "$LOST"

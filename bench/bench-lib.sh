# shellcheck shell=bash
# bench-lib.sh - helpers shared by the benchmark scripts (sourced, not run):
# a work directory and PID list cleaned up on exit, free ports, readiness of
# SMTP peers, CPU accounting, smtp-sink, a private unbound and a fresh moatd.
# The sourcing script sets BENCH (its name for messages) first.

WORK=$(mktemp -d /tmp/moat-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()           # everything we started, stopped by PID on exit
PF_DIRS=()        # Postfix instances (bench/postfix-instance.sh stop)

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
        kill -0 "$pid" 2>/dev/null || { echo "$BENCH: process $pid died before port $port was ready" >&2; return 1; }
        if line=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && head -n1 <&3 && printf 'QUIT\r\n' >&3" 2>/dev/null) \
                && [[ "$line" == 220* ]]; then
            return 0
        fi
        sleep 0.1
    done
    echo "$BENCH: nothing answers 220 on port $port" >&2
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
        # shellcheck disable=SC2086  # the fields, split on purpose
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

# start_sink NAME [PORT] -> sets SINK_PORT (a free one unless given) SINK_OUT
# SINK_PID, appends to PIDS
start_sink() {
    SINK_PORT=${2:-$(free_port)}
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
  local-zone: "ext.test." static
  local-data: "ext.test. 300 IN TXT \"v=spf1 ip4:127.0.0.0/8 -all\""
forward-zone: name: "." forward-addr: 127.0.0.1@9
remote-control: control-enable: yes control-interface: "$d/control.sock"
EOF
    unbound -c "$d/unbound.conf" >"$d/log" 2>&1 &
    PIDS+=("$!")
    for _ in $(seq 1 100); do
        unbound-control -c "$d/unbound.conf" status >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "$BENCH: unbound did not start" >&2
    return 1
}

# wait_sink WANT: poll the sink counter until it reaches WANT; give up after
# 60 s without progress; prints the count
wait_sink() {
    local want=$1 got last=-1 stall=0
    while :; do
        got=$(sink_count "$SINK_OUT")
        [ "$got" -ge "$want" ] && break
        if [ "$got" -eq "$last" ]; then
            stall=$((stall + 1))
            [ $stall -ge 600 ] && break
        else
            stall=0
            last=$got
        fi
        sleep 0.1
    done
    echo "$got"
}

# start_moatd STATE PORT HTTP [moatd options...]: moatd on 127.0.0.1 with the
# private unbound (start_unbound first); a new STATE gets an administrator
# token (STATE.admin-token), an existing one (a restart) keeps its own;
# sets MOATD_PID, MOAT_URL, MOAT_TOKEN (exported for the moat CLI)
start_moatd() {
    local state=$1 port=$2 http=$3
    shift 3
    mkdir -p "$state"
    if [ ! -s "$state.admin-token" ]; then
        "$MOATD" --state-dir "$state" -o run_user=root --init-admin admin \
            --token-file "$state.admin-token" >/dev/null 2>&1
    fi
    "$MOATD" --foreground --state-dir "$state" --smtp-listen "127.0.0.1:$port" \
        --http-listen "127.0.0.1:$http" --resolver "127.0.0.1:$UB_PORT" \
        -o log_level=info -o hostname=moat.bench.test "$@" >>"$WORK/moatd.log" 2>&1 &
    MOATD_PID=$!
    PIDS+=("$MOATD_PID")
    export MOAT_URL="http://127.0.0.1:$http"
    MOAT_TOKEN=$(cat "$state.admin-token")
    export MOAT_TOKEN
    wait_220 "$port" "$MOATD_PID"
}

# vmrss_kib PID: resident set size in KiB
vmrss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

#!/bin/bash
# rcpt-lookup.sh - recipient validation benchmark, Moat side by side with Postfix.
#
# USERS users (userI@example.com), each with one alias (aliasI@example.com),
# are loaded into a fresh moatd through the real code paths: a CSV file
# imported with `moat user import`, then `moat rv set example.com --mode
# known`.  Then, in one run:
#   (a) in-process: bench/rcpt_lookup (built with -Dbench=true) loads the
#       address index from moatd's database (directory_index_load) and times
#       LOOKUPS calls of directory_index_lookup, half known (primaries and
#       aliases), half unknown, in random order;
#   (b) SMTP: bench/rcpt_client.py opens CONNECTIONS parallel connections and
#       pipelines RCPTS recipients (MAIL, 100 RCPT, RSET per write; half
#       known, half unknown; a new connection every 1000 RCPTs) to moatd,
#       then to a private Postfix instance (bench/postfix-instance.sh, role
#       mailbox) holding the same addresses: primaries in virtual_mailbox_maps,
#       aliases in virtual_alias_maps (hash:, postmap'd), default_transport =
#       error:..., loopback only.
# For each server: RCPT replies/s, CPU (µs of server CPU per RCPT, moatd's
# /proc/PID/stat, resp. every process of the Postfix master's session plus
# the children it reaped), and the counts of 250 and 550 replies, which must
# equal the known and unknown recipients sent.  It never fails on speed; it
# exits 1 when a count is wrong or a component fails.
#
# usage: bench/rcpt-lookup.sh [-n USERS] [-c CONNECTIONS] [-r RCPTS] [-l LOOKUPS] [--moat-only]
#   -n USERS        users, each with one alias (default 100000)
#   -c CONNECTIONS  parallel SMTP connections (default 4)
#   -r RCPTS        RCPT commands sent to each server (default 200000)
#   -l LOOKUPS      in-process index lookups (default 2000000)
#   --moat-only     skip Postfix (e.g. when not root)
# Environment: MOAT_BUILD_DIR (default build; needs moatd, moat and
# bench/rcpt_lookup: meson configure build -Dbench=true && ninja -C build),
# KEEP=1 keeps the work dir.
set -euo pipefail

USERS=100000
CONNS=4
RCPTS=200000
LOOKUPS=2000000
MOAT_ONLY=0

usage() { sed -n '2,/^set -e/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d' >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    -n) USERS=$2; shift 2 ;;
    -c) CONNS=$2; shift 2 ;;
    -r) RCPTS=$2; shift 2 ;;
    -l) LOOKUPS=$2; shift 2 ;;
    --moat-only) MOAT_ONLY=1; shift ;;
    -h|--help) usage ;;
    *) echo "rcpt-lookup.sh: unknown option $1" >&2; usage ;;
    esac
done
for v in "$USERS" "$CONNS" "$RCPTS" "$LOOKUPS"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "rcpt-lookup.sh: not a positive number: $v" >&2; exit 2; }
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${MOAT_BUILD_DIR:-build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
MOATD=$BUILD/moatd
MOAT=$BUILD/moat
LOOKUP=$BUILD/bench/rcpt_lookup
CLIENT=$ROOT/bench/rcpt_client.py
PFI=$ROOT/bench/postfix-instance.sh
CLK_TCK=$(getconf CLK_TCK)

for b in "$MOATD" "$MOAT"; do
    [ -x "$b" ] || { echo "rcpt-lookup.sh: $b not built (meson setup build && ninja -C build)" >&2; exit 1; }
done
[ -x "$LOOKUP" ] || { echo "rcpt-lookup.sh: $LOOKUP not built (meson configure $BUILD -Dbench=true && ninja -C $BUILD)" >&2; exit 1; }
if [ "$(id -u)" -ne 0 ] && [ "$MOAT_ONLY" -eq 0 ]; then
    echo "rcpt-lookup.sh: the Postfix instance needs root; running Moat only" >&2
    MOAT_ONLY=1
fi
[ "$MOAT_ONLY" -eq 1 ] || command -v postmap >/dev/null \
    || { echo "rcpt-lookup.sh: needs Postfix (apt-get install postfix)" >&2; exit 1; }

BENCH=rcpt-lookup.sh
# shellcheck source=bench/bench-lib.sh
. "$ROOT/bench/bench-lib.sh"   # WORK, PIDS, PF_DIRS and their cleanup, free_port, wait_220

# rcpt_code PORT ADDR: the reply code to one RCPT (for readiness checks)
rcpt_code() {
    /usr/bin/python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
f = s.makefile("rb")
def reply():
    while True:
        l = f.readline()
        if not l or l[3:4] != b"-":
            return l[:3].decode()
reply()
for c in ("EHLO probe.bench.test", "MAIL FROM:<probe@ext.test>", "RCPT TO:<%s>" % sys.argv[2]):
    s.sendall(c.encode() + b"\r\n")
    code = reply()
print(code)
s.sendall(b"QUIT\r\n")
PY
}


# json_get FILE KEY
json_get() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

# measure LABEL PORT "PIDS_CMD": the SMTP client against PORT; sets R_* and FAILED
FAILED=0
measure() {
    local label=$1 port=$2 pidcmd=$3 c0 c1 out
    out=$WORK/$label.client.json
    # shellcheck disable=SC2046  # a list of PIDs, split on purpose
    c0=$(cpu_ticks $($pidcmd))
    /usr/bin/python3 "$CLIENT" 127.0.0.1 "$port" "$USERS" "$CONNS" "$RCPTS" >"$out"
    # shellcheck disable=SC2046
    c1=$(cpu_ticks $($pidcmd))
    R_RATE=$(json_get "$out" rcpt_per_s)
    R_SECS=$(json_get "$out" seconds)
    R_250=$(json_get "$out" c250)
    R_550=$(json_get "$out" c550)
    R_OTHER=$(json_get "$out" other)
    R_WANT_K=$(json_get "$out" want_known)
    R_WANT_U=$(json_get "$out" want_unknown)
    R_SESS=$(json_get "$out" sessions)
    R_CPU=$(awk -v d="$((c1 - c0))" -v hz="$CLK_TCK" -v n="$RCPTS" 'BEGIN { printf "%.1f", d * 1e6 / hz / n }')
    local errs mism
    errs=$(json_get "$out" errors)
    mism=$(json_get "$out" mismatch)
    if [ "$errs" != "[]" ]; then
        echo "rcpt-lookup.sh: $label: client errors: $errs" >&2
        FAILED=1
    fi
    if [ "$R_250" != "$R_WANT_K" ] || [ "$R_550" != "$R_WANT_U" ] || [ "$R_OTHER" != 0 ] || [ "$mism" != 0 ]; then
        echo "rcpt-lookup.sh: $label: WRONG verdicts: 250=$R_250 (want $R_WANT_K) 550=$R_550 (want $R_WANT_U) other=$R_OTHER mismatched=$mism e.g. $(json_get "$out" examples)" >&2
        FAILED=1
    fi
}

echo "rcpt lookup benchmark: $USERS users + $USERS aliases, $RCPTS RCPTs over $CONNS connections, $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# the users, as the CSV import takes them (no passwords: nothing to hash)
awk -v n="$USERS" 'BEGIN { print "email,name,aliases";
    for (i = 0; i < n; i++) printf "user%d@example.com,User %d,alias%d@example.com\n", i, i, i }' \
    >"$WORK/users.csv"

# --- Moat ---
STATE=$WORK/moat-state
mkdir -p "$STATE"
M_PORT=$(free_port)
M_HTTP=$(free_port)
"$MOATD" --state-dir "$STATE" -o run_user=root --init-admin admin \
    --token-file "$WORK/admin.token" >/dev/null 2>&1
# 500 unknown RCPTs per connection: the error limit above that; RSET is a junk command
"$MOATD" --foreground --state-dir "$STATE" --smtp-listen "127.0.0.1:$M_PORT" \
    --http-listen "127.0.0.1:$M_HTTP" --resolver 127.0.0.1:9 -o hostname=moat.bench.test \
    -o smtp_max_errors=1000 -o smtp_max_junk_commands=100000 \
    -o smtp_max_connections_per_ip=1000 >"$WORK/moatd.log" 2>&1 &
MOATD_PID=$!
PIDS+=("$MOATD_PID")
wait_220 "$M_PORT" "$MOATD_PID"
export MOAT_URL="http://127.0.0.1:$M_HTTP" MOAT_TOKEN
MOAT_TOKEN=$(cat "$WORK/admin.token")
"$MOAT" domain add example.com --trust-unverified >/dev/null
t0=$(date +%s.%N)
"$MOAT" user import "$WORK/users.csv" >"$WORK/import.out" 2>&1 \
    || { echo "rcpt-lookup.sh: moat user import failed:" >&2; tail -5 "$WORK/import.out" >&2; exit 1; }
t1=$(date +%s.%N)
"$MOAT" rv set example.com --mode known >/dev/null
IMPORT_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
echo "... imported $USERS users in $IMPORT_S s; waiting for moatd's index" >&2
# moatd reloads its index when the store changed: wait until it answers
ready=0
for _ in $(seq 1 600); do
    if [ "$(rcpt_code "$M_PORT" "user$((USERS - 1))@example.com" 2>/dev/null)" = 250 ] &&
       [ "$(rcpt_code "$M_PORT" "nobody0@example.com" 2>/dev/null)" = 550 ]; then
        ready=1
        break
    fi
    sleep 0.1
done
[ "$ready" = 1 ] || { echo "rcpt-lookup.sh: moatd does not validate recipients (log: $WORK/moatd.log)" >&2; exit 1; }

# (a) in-process lookups on the same database
echo "... in-process lookups" >&2
"$LOOKUP" "$STATE/moat.db" "$USERS" "$LOOKUPS" >"$WORK/lookup.out" \
    || { echo "rcpt-lookup.sh: rcpt_lookup reported wrong answers:" >&2; cat "$WORK/lookup.out" >&2; FAILED=1; }
lk() { tr ' ' '\n' <"$WORK/lookup.out" | sed -n "s/^$1=//p"; }

# (b) SMTP against moatd
echo "... SMTP against moatd" >&2
measure moat "$M_PORT" "echo $MOATD_PID"
M_RATE=$R_RATE M_SECS=$R_SECS M_CPU=$R_CPU M_250=$R_250 M_550=$R_550 M_WK=$R_WANT_K M_WU=$R_WANT_U M_SESS=$R_SESS
kill -TERM "$MOATD_PID"
wait "$MOATD_PID" || echo "rcpt-lookup.sh: moatd exited $? after SIGTERM (log: $WORK/moatd.log)" >&2

# --- Postfix ---
P_RATE=- P_SECS=- P_CPU=- P_250=- P_550=- P_WK=- P_WU=- P_SESS=- P_BUILD=-
if [ "$MOAT_ONLY" -eq 0 ]; then
    PF=$WORK/postfix
    P_PORT=$(free_port)
    bash "$PFI" create "$PF" --port "$P_PORT" --role mailbox --domain example.com \
        --rcpt user0@example.com >/dev/null
    PF_DIRS+=("$PF")
    t0=$(date +%s.%N)
    awk -v n="$USERS" 'BEGIN { for (i = 0; i < n; i++) printf "user%d@example.com example.com/user%d/\n", i, i }' \
        >"$PF/etc/vmailbox"
    awk -v n="$USERS" 'BEGIN { for (i = 0; i < n; i++) printf "alias%d@example.com user%d@example.com\n", i, i }' \
        >"$PF/etc/valias"
    postmap -c "$PF/etc" "hash:$PF/etc/vmailbox"
    postmap -c "$PF/etc" "hash:$PF/etc/valias"
    t1=$(date +%s.%N)
    P_BUILD=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    # the same limits as moatd's above; no tarpit sleep after errors
    postconf -c "$PF/etc" -e \
        "virtual_mailbox_maps = hash:$PF/etc/vmailbox" \
        "virtual_alias_maps = hash:$PF/etc/valias" \
        "smtpd_soft_error_limit = 1000" "smtpd_hard_error_limit = 1000" \
        "smtpd_error_sleep_time = 0" "smtpd_junk_command_limit = 100000" \
        "smtpd_client_connection_count_limit = 1000"
    bash "$PFI" start "$PF" &
    PF_MASTER=$!
    PIDS+=("$PF_MASTER")
    wait_220 "$P_PORT" "$PF_MASTER"
    [ "$(rcpt_code "$P_PORT" "alias$((USERS - 1))@example.com")" = 250 ] &&
        [ "$(rcpt_code "$P_PORT" "nobody0@example.com")" = 550 ] \
        || { echo "rcpt-lookup.sh: Postfix does not validate recipients (log: $PF/maillog)" >&2; exit 1; }
    echo "... SMTP against Postfix" >&2
    measure postfix "$P_PORT" "session_pids $PF_MASTER"
    P_RATE=$R_RATE P_SECS=$R_SECS P_CPU=$R_CPU P_250=$R_250 P_550=$R_550 P_WK=$R_WANT_K P_WU=$R_WANT_U P_SESS=$R_SESS
    bash "$PFI" stop "$PF" >/dev/null
    wait "$PF_MASTER" 2>/dev/null || true
fi

ratio() {
    if [ "$1" = - ] || [ "$2" = - ]; then echo -; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'
}

printf '\n(a) in-process, %s addresses in the index (%s users + 1 alias each)\n' "$((USERS * 2))" "$USERS"
printf '    directory_index_load        %10s ms\n' "$(lk index_load_ms)"
printf '    directory_index_lookup      %10s lookups/s  (%s ns each; %s lookups, found %s of %s known, %s not found)\n' \
    "$(lk lookups_per_s)" "$(lk ns_per_lookup)" "$(lk lookups)" "$(lk found)" "$(lk expected_found)" "$(lk not_found)"
printf '\n(b) SMTP, %s RCPTs (half known) over %s connections, pipelined 100 a transaction\n' "$RCPTS" "$CONNS"
printf '    %-22s %12s %12s %8s\n' "metric" "Moat" "Postfix" "ratio"
printf '    %-22s %12s %12s %8s\n' "RCPT replies/s" "$M_RATE" "$P_RATE" "$(ratio "$M_RATE" "$P_RATE")"
printf '    %-22s %12s %12s %8s\n' "server CPU us/RCPT" "$M_CPU" "$P_CPU" "$(ratio "$M_CPU" "$P_CPU")"
printf '    %-22s %12s %12s\n' "seconds" "$M_SECS" "$P_SECS"
printf '    %-22s %12s %12s\n' "250 (want)" "$M_250 ($M_WK)" "$P_250 ($P_WK)"
printf '    %-22s %12s %12s\n' "550 (want)" "$M_550 ($M_WU)" "$P_550 ($P_WU)"
printf '    %-22s %12s %12s\n' "sessions" "$M_SESS" "$P_SESS"
printf '    %-22s %12s %12s\n' "load users (s)" "$IMPORT_S" "$P_BUILD"
printf '(ratio = Moat / Postfix; higher is better for replies/s, lower for CPU.\n'
printf ' load users: Moat = moat user import of the CSV through the API; Postfix = writing and postmap-ing the two maps)\n'
exit "$FAILED"

#!/bin/bash
# crash.sh - durability under kill -9 at the issue's full size: a load of
# ROUNDS x PER_ROUND messages (default 20 x 5,000 = 100,000) through a real
# moatd relaying to smtp-sink; in each round moatd is killed with SIGKILL at a
# random moment and restarted on the same state directory.  Then it checks:
#   - every message that got "250" is delivered at least once, intact;
#   - nothing that was never sent in full, or was refused, is delivered;
#   - no delivery moatd had recorded is repeated.
# and reports the messages delivered without their 250 (the kill came between
# the fsync and the reply reaching the client: legitimate) and the duplicates
# (killed after the route's 250, before the delivery was recorded: SMTP's
# at-least-once), neither of which fails the run.
#
# It is the CI test tests/e2e/test_durability.py::test_kill9_at_random_moments_under_load
# (20 rounds x 250 there) run with MOAT_CRASH_* at the full size.
#
# usage: bench/crash.sh [-r ROUNDS] [-n PER_ROUND] [-c CONNECTIONS] [--seed S]
#   -r ROUNDS      kills (default 20)
#   -n PER_ROUND   messages per round (default 5000)
#   -c CONNECTIONS pipelining client connections (default 8)
#   --seed S       the kill points of an earlier run (printed as seed=)
# Environment: MOAT_BUILD_DIR (default build).  Run as root (smtp-sink -u).
set -euo pipefail

ROUNDS=20
PER_ROUND=5000
CONNS=8
SEED=
usage() { sed -n '2,/^set -e/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d' >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    -r) ROUNDS=$2; shift 2 ;;
    -n) PER_ROUND=$2; shift 2 ;;
    -c) CONNS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "crash.sh: unknown option $1" >&2; usage ;;
    esac
done
for v in "$ROUNDS" "$PER_ROUND" "$CONNS" ${SEED:+"$SEED"}; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "crash.sh: not a positive number: $v" >&2; exit 2; }
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${MOAT_BUILD_DIR:-build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
[ -x "$BUILD/moatd" ] || { echo "crash.sh: no $BUILD/moatd (set MOAT_BUILD_DIR)" >&2; exit 1; }

export MOAT_BUILD_DIR=$BUILD MOAT_CRASH_ROUNDS=$ROUNDS MOAT_CRASH_PER_ROUND=$PER_ROUND \
       MOAT_CRASH_CONNS=$CONNS
[ -n "$SEED" ] && export MOAT_CRASH_SEED=$SEED
echo "crash.sh: $ROUNDS rounds x $PER_ROUND messages, $CONNS connections, $(nproc) cores"
start=$(date +%s)
cd tests/e2e
rc=0
/usr/bin/python3 -m pytest -q -s -p no:cacheprovider \
    "test_durability.py::test_kill9_at_random_moments_under_load" || rc=$?
echo "crash.sh: $(( $(date +%s) - start )) s, exit $rc"
exit $rc

#!/bin/bash
# run.sh - install what Moat needs, build it, and start moatd in the
# foreground on its embedded defaults: SQLite and the spool under ./state,
# SMTP on 127.0.0.1:2525, HTTP on 127.0.0.1:8025.  Extra arguments go to
# moatd (e.g. ./scripts/run.sh -o log_level=debug).  Stop it with Ctrl-C.
set -euo pipefail

cd "$(dirname "$0")/.."
sh scripts/bootstrap.sh
if [ ! -f build/build.ninja ]; then
    meson setup build
fi
ninja -C build

STATE="$(pwd)/state"          # moatd wants an absolute state_dir
mkdir -p "$STATE"

args=()
if [ "$(id -u)" -eq 0 ]; then
    # As root moatd hands ./state to an unprivileged user and becomes it; that
    # user must be able to reach ./state (e.g. not under a 0700 /root).
    user=moat
    id "$user" >/dev/null 2>&1 || user=nobody
    if ! runuser -u "$user" -- test -x "$(pwd)" 2>/dev/null; then
        echo "run.sh: $user cannot reach $(pwd); moatd keeps running as root (run_user=root)" >&2
        args+=(-o run_user=root)
    fi
fi

echo "run.sh: starting moatd (SMTP 127.0.0.1:2525, state in $STATE)" >&2
exec build/moatd --foreground --state-dir "$STATE" "${args[@]}" "$@"

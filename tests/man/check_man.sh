#!/bin/sh
# check_man.sh - the manual pages in docs/man/ are exactly what the tables
# generate (moatd's options, the settings table, the CLI's command table),
# and every option, setting and command has its help text (the generators
# exit non-zero and name what is missing).
#
#   check_man.sh MOATD MOAT SOURCE_ROOT
# MOAT_UPDATE_DOCS=1 rewrites the pages instead of comparing (then review
# the diff): MOAT_UPDATE_DOCS=1 meson test -C BUILD man
set -u
moatd=$1 moat=$2 root=$3
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
status=0

# page FILE COMMAND... - generate FILE with COMMAND, then compare or rewrite
page() {
    file=$1
    shift
    if ! "$@" > "$tmp/page" 2> "$tmp/err"; then
        echo "FAIL: '$*' failed (something has no help text?):" >&2
        cat "$tmp/err" >&2
        status=1
        return
    fi
    if [ -s "$tmp/err" ]; then
        echo "FAIL: '$*' wrote to stderr:" >&2
        cat "$tmp/err" >&2
        status=1
        return
    fi
    if [ "${MOAT_UPDATE_DOCS:-}" = 1 ]; then
        cp "$tmp/page" "$root/docs/man/$file" && echo "wrote docs/man/$file"
        return
    fi
    if ! cmp -s "$tmp/page" "$root/docs/man/$file"; then
        echo "FAIL: docs/man/$file differs from what '$*' generates; regenerate with" >&2
        echo "      MOAT_UPDATE_DOCS=1 meson test -C BUILD man, review and commit it:" >&2
        diff -u "$root/docs/man/$file" "$tmp/page" | head -40 >&2
        status=1
        return
    fi
    echo "ok: docs/man/$file"
}

page moatd.8 "$moatd" --man 8
page moat.conf.5 "$moatd" --man 5
page moat.1 "$moat" --man
exit $status

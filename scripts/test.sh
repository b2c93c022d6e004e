#!/bin/bash
# test.sh - build Moat and run every test: unit tests (meson/cmocka), the
# end-to-end suite (pytest, real peers on loopback), both again under
# AddressSanitizer + UndefinedBehaviorSanitizer, and a short libFuzzer smoke
# run of every fuzz target.  Ends with one line "N passed, N failed" summed
# over everything; exits non-zero if anything failed.
#
# Environment:
#   MOAT_SKIP_SANITIZE=1   skip the build-asan pass
#   MOAT_SKIP_FUZZ=1       skip the fuzz smoke run
#   MOAT_FUZZ_SECONDS=N    seconds per fuzz target (default 10)
#   PYTEST_ARGS="..."      extra pytest arguments (e.g. "-k smuggling -x")
#   MOAT_E2E_WORKERS=N     pytest-xdist workers for the end-to-end suite
#                          (default 2: most of a test's time is spent waiting
#                          for peers, so two run side by side on two cores;
#                          each module stays on one worker; 0 = no xdist)
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
PY=/usr/bin/python3        # Debian's python: it has pytest and aiosmtpd
# junit XML, fuzz logs and crash artifacts (kept for inspection, outside the tree)
RESULTS=$(mktemp -d "${TMPDIR:-/tmp}/moat-test.XXXXXX")

PASSED=0
FAILED=0
SUMMARY=()

log() { printf '\n=== %s\n' "$*"; }

# count STAGE PASSED FAILED
count() {
    PASSED=$((PASSED + $2))
    FAILED=$((FAILED + $3))
    SUMMARY+=("$(printf '%-22s %4d passed, %d failed' "$1" "$2" "$3")")
}

# meson_counts LOGFILE -> "passed failed" from meson's testlog.json
meson_counts() {
    "$PY" - "$1" <<'EOF'
import json, sys
p = f = 0
try:
    for line in open(sys.argv[1]):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line).get("result")
        if r in ("OK", "EXPECTEDFAIL"):
            p += 1
        elif r != "SKIP":
            f += 1
except FileNotFoundError:
    f = 1
print(p, f)
EOF
}

# junit_counts FILE -> "passed failed" from pytest's --junitxml
junit_counts() {
    "$PY" - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (FileNotFoundError, ET.ParseError):
    print(0, 1)
    sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
p = f = 0
for s in suites:
    n, fl, er, sk = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    p += n - fl - er - sk
    f += fl + er
print(p, f)
EOF
}

# build DIR [meson setup options...]
build() {
    local dir=$1
    shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$@" || return 1
    fi
    ninja -C "$dir"
}

# unit DIR LABEL: meson test (cmocka unit tests)
unit() {
    local dir=$1 label=$2
    log "unit tests ($label)"
    meson test -C "$dir" --print-errorlogs --num-processes 2
    read -r p f < <(meson_counts "$dir/meson-logs/testlog.json")
    count "unit ($label)" "$p" "$f"
}

# e2e DIR LABEL: the pytest end-to-end suite against DIR's binaries
e2e() {
    local dir=$1 label=$2 xml="$RESULTS/e2e-$2.xml"
    log "end-to-end tests ($label)"
    local workers=${MOAT_E2E_WORKERS:-2} par=()
    [ "$workers" -gt 0 ] && par=(-n "$workers" --dist loadfile)
    # shellcheck disable=SC2086
    MOAT_BUILD_DIR="$dir" timeout --kill-after=30 1200 \
        "$PY" -m pytest -q -p no:cacheprovider "${par[@]}" --junitxml="$xml" ${PYTEST_ARGS:-} tests/e2e
    read -r p f < <(junit_counts "$xml")
    count "e2e ($label)" "$p" "$f"
}

fuzz() {
    local dir=build-fuzz secs=${MOAT_FUZZ_SECONDS:-10}
    log "fuzz smoke (${secs} s per target)"
    if [ ! -f tests/fuzz/meson.build ]; then
        echo "no tests/fuzz/meson.build: nothing to run"
        SUMMARY+=("fuzz                   (no targets)")
        return
    fi
    if ! CC=clang build "$dir" -Dfuzz=true -Dtests=false \
            -Db_sanitize=address,undefined -Db_lundef=false; then
        count "fuzz (build)" 0 1
        return
    fi
    local targets p=0 f=0 t
    targets=$(meson introspect "$dir" --targets | "$PY" -c '
import json, sys
for t in json.load(sys.stdin):
    if t["type"] == "executable" and "tests/fuzz" in t.get("defined_in", ""):
        print(t["filename"][0])')
    if [ -z "$targets" ]; then
        echo "tests/fuzz/meson.build defines no targets yet: nothing to run"
        SUMMARY+=("fuzz                   (no targets)")
        return
    fi
    mkdir -p "$RESULTS/fuzz"
    for t in $targets; do
        local name corpus seeds=()
        name=$(basename "$t")
        corpus="$RESULTS/fuzz/$name-corpus"
        mkdir -p "$corpus"
        [ -d "tests/fuzz/corpus/$name" ] && seeds=("tests/fuzz/corpus/$name")
        echo "--- $name"
        if "$t" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 \
                -artifact_prefix="$RESULTS/fuzz/$name-" "$corpus" "${seeds[@]}" \
                >"$RESULTS/fuzz/$name.log" 2>&1; then
            p=$((p + 1))
            grep -E '^(Done|stat::number_of_executed_units)' "$RESULTS/fuzz/$name.log" | head -2
        else
            f=$((f + 1))
            echo "FAILED: $name (log $RESULTS/fuzz/$name.log, artifacts $RESULTS/fuzz/$name-*)"
            tail -40 "$RESULTS/fuzz/$name.log"
        fi
    done
    count "fuzz" "$p" "$f"
}

log "bootstrap (Debian packages)"
sh scripts/bootstrap.sh || { echo "bootstrap failed"; exit 1; }

log "build (build/)"
if build build; then
    unit build plain
    e2e build plain
else
    count "build (plain)" 0 1
fi

if [ "${MOAT_SKIP_SANITIZE:-0}" != 1 ]; then
    log "build (build-asan/: AddressSanitizer + UndefinedBehaviorSanitizer)"
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    if build build-asan -Db_sanitize=address,undefined -Db_lundef=false; then
        unit build-asan asan
        e2e build-asan asan
    else
        count "build (asan)" 0 1
    fi
    unset ASAN_OPTIONS UBSAN_OPTIONS
fi

if [ "${MOAT_SKIP_FUZZ:-0}" != 1 ]; then
    fuzz
fi

log "summary (logs and artifacts: $RESULTS)"
printf '%s\n' "${SUMMARY[@]}"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]

#!/bin/bash
# ldap-sync.sh - directory sync benchmark: moatd reads N users (with aliases)
# and a few groups from a real slapd through paged results, and applies them.
#
# A private slapd (tests/e2e/ldap_fixtures.py: AD-like proxyAddresses, the
# sync account limited to 500 entries per plain search, paging unlimited) is
# loaded with N generated users and 3 groups; a fresh moatd (no resolver
# traffic: --resolver 127.0.0.1:9) gets the source over the API and syncs:
#   first sync      seconds for N+3 creations (read + apply)
#   second sync     seconds when nothing changed (read + compare)
#   moatd VmHWM     peak resident memory of moatd (/proc/PID/status) before
#                   the first sync and after the second, and VmRSS sampled
#                   every 0.1 s while the syncs run
# Next to them, the same read by OpenLDAP's own client (ldapsearch -E
# pr=500/noprompt as the sync account, to /dev/null): the floor a sync
# cannot beat.  Exits 1 only when a sync fails or counts are wrong.
#
# usage: bench/ldap-sync.sh [-n USERS] [--page N]
#   -n USERS     users in the directory (default 100000)
#   --page N     page size of the paged search (default 500)
# Environment: MOAT_BUILD_DIR (default build), KEEP=1 keeps the work dirs.
set -euo pipefail

N=100000
PAGE=500
usage() { sed -n '2,/^set -e/p' "$0" | sed -e 's/^# \{0,1\}//' -e '$d' >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    -n) N=$2; shift 2 ;;
    --page) PAGE=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "ldap-sync.sh: unknown option $1" >&2; usage ;;
    esac
done
for v in "$N" "$PAGE"; do
    [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "ldap-sync.sh: not a positive number: $v" >&2; exit 2; }
done

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${MOAT_BUILD_DIR:-build}
case "$BUILD" in /*) ;; *) BUILD="$ROOT/$BUILD" ;; esac
[ -x "$BUILD/moatd" ] || { echo "ldap-sync.sh: no $BUILD/moatd (set MOAT_BUILD_DIR)" >&2; exit 1; }

export MOAT_BUILD_DIR=$BUILD BENCH_N=$N BENCH_PAGE=$PAGE
exec /usr/bin/python3 - <<'PY'
import os, subprocess, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, "tests/e2e")
from connect_fixtures import CertAuthority
from ldap_fixtures import BASE, SYNC_DN, SYNC_PW, Slapd, directory_ldif
from api_fixtures import ApiMoatd

n, page = int(os.environ["BENCH_N"]), int(os.environ["BENCH_PAGE"])
keep = os.environ.get("KEEP") == "1"
work = Path(tempfile.mkdtemp(prefix="/tmp/moat-bench-ldap-"))
work.chmod(0o755)
ca = CertAuthority(work)
t = time.monotonic()
s = Slapd(ca, directory_ldif(n, 3), size_limit=500)
s.start()
print(f"slapd loaded with {n} users and 3 groups in {time.monotonic() - t:.1f} s")
m = ApiMoatd(work / "moatd")
failed = False
try:
    m.dir.mkdir()
    m.init_admin()
    m.start()
    a = m.admin()
    assert a.post("/api/v1/domains", {"name": "example.com", "trust_unverified": True}).status in (200, 201)
    r = a.request("PUT", "/api/v1/directory/source", body={
        "url": s.url, "bind_dn": SYNC_DN, "password": SYNC_PW, "base_dn": BASE,
        "filter": "(objectClass=moatADUser)", "group_filter": "(objectClass=groupOfNames)",
        "page_size": page, "schedule": "", "max_entries": max(n * 2, 1000)})
    assert r.status == 200, r

    def status(key):
        for line in open(f"/proc/{m.proc.pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def hwm():
        return status("VmHWM")

    rss_peak = [0]

    def run():
        t0 = time.monotonic()
        r = a.post("/api/v1/directory/sync", {})
        assert r.status == 202, r
        while True:
            st = a.get("/api/v1/directory/sync").json
            rss_peak[0] = max(rss_peak[0], status("VmRSS"))
            if not st["running"]:
                return time.monotonic() - t0, st["last"]
            time.sleep(0.1)

    hwm0, rss0 = hwm(), status("VmRSS")
    secs1, last1 = run()
    secs2, last2 = run()
    hwm1 = hwm()
    t0 = time.monotonic()
    with open(os.devnull, "w") as devnull:
        rc = subprocess.run(["ldapsearch", "-x", "-H", s.url, "-D", SYNC_DN, "-w", SYNC_PW,
                             "-b", BASE, "-E", f"pr={page}/noprompt", "(objectClass=moatADUser)",
                             "mail", "proxyAddresses", "displayName", "entryUUID"],
                            stdout=devnull, stderr=subprocess.PIPE).returncode
    secs_ls = time.monotonic() - t0
    ok = (last1["outcome"] == "ok" and last1["created"] == n + 3 and
          last2["outcome"] == "ok" and last2["unchanged"] == n + 3 and rc == 0)
    failed = not ok
    print(f"\n{'':34}{'seconds':>10}{'entries/s':>12}")
    print(f"{'moatd first sync (create)':34}{secs1:10.2f}{(n + 3) / secs1:12.0f}")
    print(f"{'moatd second sync (no change)':34}{secs2:10.2f}{(n + 3) / secs2:12.0f}")
    print(f"{'ldapsearch paged read (reference)':34}{secs_ls:10.2f}{n / secs_ls:12.0f}")
    print(f"\nmoatd VmHWM: {hwm0 / 1024:.1f} MiB before, {hwm1 / 1024:.1f} MiB after "
          f"(the start-up figure is argon2id's 64 MiB dummy hash at auth_create)")
    print(f"moatd VmRSS: {rss0 / 1024:.1f} MiB idle, peak {rss_peak[0] / 1024:.1f} MiB while "
          f"syncing (sampled every 0.1 s)")
    if not ok:
        print("FAILED:", last1, last2, "ldapsearch rc", rc)
finally:
    rc = m.stop()
    s.cleanup()
    if not keep:
        import shutil
        shutil.rmtree(work, ignore_errors=True)
    else:
        print("work dir kept:", work)
sys.exit(1 if failed or rc != 0 else 0)
PY

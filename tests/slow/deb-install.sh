#!/bin/bash
# deb-install.sh DEB - install the Debian package on a clean Debian 12 and
# check that it starts a working gateway.  Not part of CI (it downloads a
# Debian base system once, and packages on every run); run by hand as root:
#
#   scripts/bootstrap.sh --deb && scripts/deb-build.sh /tmp/moat-deb
#   tests/slow/deb-install.sh /tmp/moat-deb/src/moat_0.1.0-1_amd64.deb
#
# 1. a minimal bookworm made with debootstrap, cached in $MOAT_DEB_CACHE
#    (default /var/cache/moat-deb-test/bookworm) and copied for each run, so
#    every run starts clean;
# 2. `apt-get install ./moat_*.deb` inside it: dependencies come from the
#    Debian archive, the postinst creates the moat user and /var/lib/moat;
# 3. checks what the package installed: the user, the state directory
#    (0750, moat), the conffile, the unit, the binaries;
# 4. no systemd inside a chroot: moatd is started as the unit's ExecStart
#    says (User= honoured when the unit sets one), with its own state
#    directory, loopback ports and a loopback resolver (unbound on the host,
#    the chroot shares the host's network);
# 5. it must answer SMTP with 220, and relay one message for a domain added
#    with the installed moat CLI to an smtp-sink on loopback.
#
# Everything started is stopped and the work chroot removed on exit.
set -euo pipefail

DEB=${1:?usage: deb-install.sh path/to/moat_VERSION_ARCH.deb}
CACHE=${MOAT_DEB_CACHE:-/var/cache/moat-deb-test}
MIRROR=${MOAT_DEB_MIRROR:-http://deb.debian.org/debian}
BASE=$CACHE/bookworm
WORK=$(mktemp -d /tmp/moat-deb-install.XXXXXX)
ROOT=$WORK/root
PIDS=()

say() { printf '==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root (debootstrap, chroot)"
[ -f "$DEB" ] || fail "no such file: $DEB"

cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    for m in "$ROOT/proc" "$ROOT/dev/pts"; do
        mountpoint -q "$m" 2>/dev/null && umount -l "$m"
    done
    rm -rf "$WORK"
    if [ $rc -eq 0 ]; then say "PASS"; else say "FAILED (status $rc)"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for() {   # wait_for SECONDS WHAT COMMAND...: 0 once COMMAND succeeds, else 1
    local t=$1 what=$2
    shift 2
    for _ in $(seq $((t * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    printf 'timed out waiting for %s\n' "$what" >&2
    return 1
}

# --- 1. the clean system ---
if [ ! -d "$BASE" ]; then
    say "debootstrap bookworm into $BASE (once; later runs reuse it)"
    mkdir -p "$CACHE"
    rm -rf "$BASE.tmp"
    debootstrap --variant=minbase bookworm "$BASE.tmp" "$MIRROR"
    mv "$BASE.tmp" "$BASE"
fi
say "fresh copy of the base system in $ROOT"
cp -a "$BASE" "$ROOT"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
mount -t proc proc "$ROOT/proc"
# no service starts during package installation (there is no init here)
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }

# --- 2. install ---
say "apt-get install $(basename "$DEB")"
cp "$DEB" "$ROOT/tmp/"
in_root apt-get update -qq
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "/tmp/$(basename "$DEB")" > "$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log"; fail "apt-get install"; }
tail -n 3 "$WORK/apt.log"

# --- 3. what the package made ---
say "checks of the installed files"
in_root getent passwd moat || fail "no moat user"
OWNER=$(in_root stat -c '%U:%G %a' /var/lib/moat)
[ "$OWNER" = "moat:moat 750" ] || fail "/var/lib/moat is $OWNER, not moat:moat 750"
grep -qx '/etc/moat/moat.conf' "$ROOT/var/lib/dpkg/info/moat.conffiles" || fail "moat.conf is no conffile"
grep -q '^smtp_listen = 0.0.0.0:25' "$ROOT/etc/moat/moat.conf" || fail "moat.conf: smtp_listen"
grep -q '^http_listen = 127.0.0.1:8025' "$ROOT/etc/moat/moat.conf" || fail "moat.conf: http_listen"
UNIT=""
for u in "$ROOT"/lib/systemd/system/moatd.service "$ROOT"/usr/lib/systemd/system/moatd.service; do
    [ -f "$u" ] && UNIT=$u && break
done
[ -n "$UNIT" ] || fail "no moatd.service"
in_root moatd --version
in_root moatd --config /etc/moat/moat.conf --check-config > /dev/null || fail "moatd --check-config"
in_root moat --help > /dev/null || fail "moat --help"

# --- 4. start moatd as the unit would ---
SMTP=$(free_port); HTTP=$(free_port); DNS=$(free_port); SINK=$(free_port)
mkdir -p "$WORK/unbound" "$WORK/sink/d"
chmod 0777 "$WORK/sink/d"
chmod 0755 "$WORK" "$WORK/sink"
cat > "$WORK/unbound/unbound.conf" <<EOF
server: interface: 127.0.0.1 port: $DNS do-ip6: no do-daemonize: no chroot: "" username: ""
  directory: "$WORK/unbound" pidfile: "$WORK/unbound/unbound.pid" use-syslog: no logfile: ""
  do-not-query-localhost: no infra-cache-max-rtt: 300
  local-zone: "example.com." static
  local-data: "example.com. 0 IN MX 10 mx.example.com."
forward-zone: name: "." forward-addr: 127.0.0.1@9
remote-control: control-enable: no
EOF
unbound -c "$WORK/unbound/unbound.conf" > "$WORK/unbound/log" 2>&1 &
PIDS+=($!)
smtp-sink -u nobody -d "$WORK/sink/d/%H%M%S." "127.0.0.1:$SINK" 100 > "$WORK/sink/log" 2>&1 &
PIDS+=($!)

EXEC=$(sed -n 's/^ExecStart=-\{0,1\}//p' "$UNIT" | head -n 1)
RUNAS=$(sed -n 's/^User=//p' "$UNIT" | head -n 1)
[ -n "$EXEC" ] || fail "no ExecStart in $UNIT"
say "unit: ExecStart=$EXEC${RUNAS:+ User=$RUNAS}"
STATE=/var/lib/moat-test
in_root install -d -o moat -g moat -m 0750 "$STATE"
ARGS=(--state-dir "$STATE" --smtp-listen "127.0.0.1:$SMTP" --http-listen "127.0.0.1:$HTTP"
      --resolver "127.0.0.1:$DNS" -o hostname=moat.example.test -o greylisting=no
      -o antispoof=no -o spf_check=no -o dkim_verify=no -o dmarc_check=no)
USERSPEC=()
[ -n "$RUNAS" ] && USERSPEC=(--userspec="$RUNAS:$RUNAS")
# the first administrator's API token (what an operator does once)
chroot "${USERSPEC[@]}" "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin \
    /usr/sbin/moatd --config /etc/moat/moat.conf "${ARGS[@]}" --init-admin admin \
    --token-file "$STATE/admin.token" > "$WORK/init.log" 2>&1 || { cat "$WORK/init.log"; fail "moatd --init-admin"; }
# shellcheck disable=SC2086
chroot "${USERSPEC[@]}" "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin $EXEC "${ARGS[@]}" \
    > "$WORK/moatd.log" 2>&1 &
PIDS+=($!)
smtp_220() {
    python3 - "$SMTP" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
banner = s.recv(512).decode()
s.sendall(b"QUIT\r\n")
print(banner.strip())
sys.exit(0 if banner.startswith("220 ") else 1)
EOF
}
wait_for 30 "moatd's SMTP listener" smtp_220 || { cat "$WORK/moatd.log"; fail "no SMTP 220"; }
say "SMTP greeting: $(smtp_220)"

# --- 5. configure with the installed CLI and relay one message ---
TOKEN=$(cat "$ROOT$STATE/admin.token")
moat_cli() {
    in_root env MOAT_URL="http://127.0.0.1:$HTTP" MOAT_TOKEN="$TOKEN" moat "$@"
}
moat_cli domain add example.com --trust-unverified > /dev/null
moat_cli route set example.com "127.0.0.1:$SINK" > /dev/null
moat_cli domain list
MARKER="deb-install-$(date +%s)-$$"
python3 - "$SMTP" "$MARKER" <<'EOF'
import smtplib, sys
msg = f"From: bill@remote.example.org\r\nTo: ann@example.com\r\nSubject: {sys.argv[2]}\r\n\r\n{sys.argv[2]}\r\n"
with smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=30) as s:
    code, text = s.ehlo("client.ext.test")
    assert code == 250, (code, text)
    s.sendmail("bill@remote.example.org", ["ann@example.com"], msg)
print("message accepted with 250")
EOF
found() { grep -rqs -- "$MARKER" "$WORK/sink/d"; }
wait_for 30 "the message at smtp-sink" found || { tail -n 40 "$WORK/moatd.log"; fail "not relayed"; }
say "relayed to smtp-sink: $(grep -rl -- "$MARKER" "$WORK/sink/d" | head -n 1)"
grep -h '^X-Rcpt-Args' "$WORK"/sink/d/* | head -n 1
grep 'event=delivered' "$WORK/moatd.log" | head -n 1
# the daemon runs as the package's user, whichever way the unit starts it
grep -q 'event=privileges_dropped user=moat' "$WORK/moatd.log" || [ "$RUNAS" = moat ] \
    || fail "moatd did not run as the moat user"
MOAT_UID=$(in_root id -u moat)
[ "$(ps -o uid= -p "${PIDS[2]}" | tr -d ' ')" = "$MOAT_UID" ] || fail "moatd's uid is not moat's"
say "moatd runs as uid $MOAT_UID (moat inside the chroot)"

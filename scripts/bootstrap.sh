#!/bin/sh
# bootstrap.sh - install every Debian package Moat needs to build, run and test.
# Idempotent and non-interactive; safe to run on every invocation of the README
# commands.  Skips apt entirely when everything is already present.
set -eu

BUILD="libevent-dev libssl-dev libunbound-dev libsqlite3-dev libldap-dev \
libmicrohttpd-dev libjansson-dev libsodium-dev libspf2-dev libopendkim-dev \
libopendmarc-dev libgmime-3.0-dev libzstd-dev libcmocka-dev libcurl4-openssl-dev \
meson ninja-build pkg-config gcc"
TEST="python3-pytest python3-pytest-xdist python3-aiosmtpd postfix swaks slapd ldap-utils unbound publicsuffix \
unbound-host bind9-dnsutils clang libclang-rt-14-dev openssl sqlite3 \
knot knot-dnsutils knot-dnssecutils"
# rspamd without its recommends (they pull in redis-server, which the tests do not use)
NORECS="rspamd"
# --deb: also what building the Debian package and its install test need
# (scripts/deb-build.sh, tests/slow/deb-install.sh); not on CI's path
if [ "${1:-}" = "--deb" ]; then
    NORECS="$NORECS debhelper dpkg-dev fakeroot lintian debootstrap build-essential"
fi

missing=""
for p in $BUILD $TEST $NORECS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
# Postfix and slapd ask questions on install; answer them so nothing waits
# and no system instance is configured (tests run private instances).
printf 'postfix postfix/main_mailer_type select No configuration\nslapd slapd/no_configuration boolean true\n' \
    | $SUDO debconf-set-selections
$SUDO apt-get update -qq
# shellcheck disable=SC2086
norecs=""
rest=""
for p in $missing; do
    case " $NORECS " in *" $p "*) norecs="$norecs $p" ;; *) rest="$rest $p" ;; esac
done
# shellcheck disable=SC2086
[ -z "$rest" ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $rest >/dev/null
# shellcheck disable=SC2086
[ -z "$norecs" ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $norecs >/dev/null

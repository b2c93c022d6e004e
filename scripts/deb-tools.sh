#!/bin/sh
# deb-tools.sh - install what building the Debian package and its install
# test need (debian/, tests/slow/deb-install.sh): debhelper, lintian,
# debootstrap, fakeroot.  Not on CI's critical path; idempotent.
set -eu
PKGS="debhelper dpkg-dev fakeroot lintian debootstrap build-essential"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
        || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null

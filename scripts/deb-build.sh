#!/bin/sh
# deb-build.sh [OUTDIR] - build the Debian package from this tree and check
# it with lintian.  The tree is copied to OUTDIR/src/moat-VERSION first, so
# the build's files (obj-*, debian/moat/, ../*.deb) stay out of the checkout;
# the .deb, .buildinfo and .changes land in OUTDIR/src (default OUTDIR:
# /tmp/moat-deb).  DEB_BUILD_OPTIONS=nocheck skips the unit tests.
# Needs `scripts/bootstrap.sh --deb`.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-/tmp/moat-deb}
version=$(sed -n '1s/^moat (\([^-]*\)-.*/\1/p' "$here/debian/changelog")
src="$out/src/moat-$version"
rm -rf "$out/src"
mkdir -p "$src"
# the sources as tracked or about to be (not build directories)
(cd "$here" && tar -cf - --exclude='./build*' --exclude='./obj-*' --exclude='./.git' \
    --exclude='./debian/moat' --exclude='./debian/.debhelper' --exclude='./debian/tmp' \
    --exclude='./tests/e2e/__pycache__' .) | (cd "$src" && tar -xf -)
cd "$src"
dpkg-buildpackage -us -uc -b
cd ..
for f in moat_"$version"-*_*.deb; do echo "built $out/src/$f"; done
# errors fail the script; warnings and notes are listed
for f in moat_"$version"-*_*.changes; do lintian --fail-on error --display-info "$f"; done

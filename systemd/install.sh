#!/bin/sh
# Installs ringxferd, ringxfer and the systemd units.
#
#   cargo build --release && sudo systemd/install.sh
#   DESTDIR=/tmp/pkg PREFIX=/usr systemd/install.sh       # staging, for a package
#
# PREFIX (default /usr/local): binaries go to $PREFIX/bin, units to
# $PREFIX/lib/systemd/system, the sysusers.d snippet to $PREFIX/lib/sysusers.d
# (both paths systemd searches for PREFIX=/usr and /usr/local), the README to
# $PREFIX/share/doc/ringxfer. DESTDIR is prepended to every path written but
# not to the paths written into the units. BUILD (default target/release) is
# where the binaries are taken from.
#
# Only files are copied; creating the user and starting the socket are the
# steps printed at the end, so that staging into DESTDIR touches no system.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BUILD=${BUILD:-$top/target/release}

case $PREFIX in
/*) ;;
*) echo "install.sh: PREFIX must be an absolute path, not '$PREFIX'" >&2; exit 2 ;;
esac
for bin in ringxferd ringxfer; do
    if [ ! -x "$BUILD/$bin" ]; then
        echo "install.sh: $BUILD/$bin is missing; run 'cargo build --release' first (or set BUILD)" >&2
        exit 1
    fi
done

bindir=$PREFIX/bin
unitdir=$PREFIX/lib/systemd/system
sysusersdir=$PREFIX/lib/sysusers.d
docdir=$PREFIX/share/doc/ringxfer

install -d "$DESTDIR$bindir" "$DESTDIR$unitdir" "$DESTDIR$sysusersdir" "$DESTDIR$docdir"
install -m 0755 "$BUILD/ringxferd" "$BUILD/ringxfer" "$DESTDIR$bindir/"
# The units name /usr/local; point them at this PREFIX.
sed -e "s|^ExecStart=/usr/local/bin/|ExecStart=$bindir/|" \
    -e "s|^Documentation=file:///usr/local/share/doc/ringxfer/|Documentation=file://$docdir/|" \
    "$here/ringxferd.service" >"$DESTDIR$unitdir/ringxferd.service"
chmod 0644 "$DESTDIR$unitdir/ringxferd.service"
install -m 0644 "$here/ringxferd.socket" "$DESTDIR$unitdir/ringxferd.socket"
install -m 0644 "$here/ringxfer.sysusers" "$DESTDIR$sysusersdir/ringxfer.conf"
install -m 0644 "$top/README.md" "$top/ARCHITECTURE.md" "$DESTDIR$docdir/"

echo "installed under ${DESTDIR:-/}: $bindir/ringxferd, $bindir/ringxfer, $unitdir/ringxferd.{service,socket}, $sysusersdir/ringxfer.conf"
if [ -z "$DESTDIR" ]; then
    cat <<NEXT
next (as root):
    systemd-sysusers $sysusersdir/ringxfer.conf   # the ringxfer user and group
    systemctl daemon-reload
    systemctl enable --now ringxferd.socket
    usermod -aG ringxfer USER                       # each user who may use the daemon
NEXT
fi

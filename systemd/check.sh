#!/bin/sh
# check.sh: checks rerod.service with systemd-analyze, without installing it
# and without a running systemd (works in containers and CI).
#
#   systemd/check.sh            # uses target/release/rerod, else target/debug/rerod
#   BINARY=/path/to/rerod systemd/check.sh
#   UNIT=/root/usr/lib/systemd/system/rerod.service BINARY=... systemd/check.sh
#                               # an installed copy of the unit (tests/package.sh)
#
# `systemd-analyze verify` insists that ExecStart= names an existing
# executable, and /usr/bin/rerod exists only once installed, so both checks
# run on a temporary copy of the unit whose ExecStart= points at BINARY;
# nothing else in the copy differs. The security review runs offline (it
# reads the unit file, not a running manager's state) and fails when the
# exposure score rises above 2.0, so a hardening line cannot be lost quietly.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
if [ -z "${BINARY:-}" ]; then
    for candidate in "$repo/target/release/rerod" "$repo/target/debug/rerod" "${CARGO_TARGET_DIR:-/nonexistent}/debug/rerod"; do
        if [ -x "$candidate" ]; then BINARY=$candidate; break; fi
    done
fi
[ -n "${BINARY:-}" ] && [ -x "$BINARY" ] || {
    echo "check.sh: build rerod first (cargo build --bin rerod) or set BINARY" >&2
    exit 1
}
command -v systemd-analyze >/dev/null 2>&1 || {
    echo "check.sh: systemd-analyze is missing; on Debian: apt-get install systemd" >&2
    exit 1
}

UNIT=${UNIT:-$here/rerod.service}
[ -f "$UNIT" ] || { echo "check.sh: no unit file at $UNIT" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed "s|^ExecStart=/usr/bin/rerod |ExecStart=$BINARY |" "$UNIT" >"$work/rerod.service"

echo "== systemd-analyze verify $UNIT (ExecStart=$BINARY)"
systemd-analyze verify "$work/rerod.service"
echo "ok"
echo "== systemd-analyze security --offline=yes"
# --threshold counts in tenths of the displayed score: 20 is 2.0.
systemd-analyze security --offline=yes --threshold=20 "$work/rerod.service"

#!/bin/sh
# install.sh: installs rerod as a systemd service. Safe to run again (upgrades
# replace the binary and the unit; the config and udev rules an admin may have
# edited are only installed when absent).
#
# Usage, from the repository root or anywhere:
#   cargo build --release --bin rerod
#   sudo systemd/install.sh
#   sudo systemctl enable --now rerod
#
# Variables:
#   BINARY   the rerod binary to install (default: target/release/rerod)
#   PREFIX   where the binary and docs go (default: /usr; ExecStart follows it)
#   DESTDIR  stage everything under this root instead of the live system (for
#            packaging); nothing is activated then (no sysusers, no reloads)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
PREFIX=${PREFIX:-/usr}
DESTDIR=${DESTDIR:-}
BINARY=${BINARY:-$repo/target/release/rerod}

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }

[ -x "$BINARY" ] || die "no rerod binary at $BINARY; build it with 'cargo build --release --bin rerod' or set BINARY=/path/to/rerod"
case "$PREFIX" in /*) ;; *) die "PREFIX must be an absolute path, got '$PREFIX'" ;; esac
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root to install on this system (or set DESTDIR to stage the files elsewhere)"
fi

# Copies $1 to $2 with mode $3, replacing what is there (files rerod owns).
put() {
    install -D -m "$3" "$1" "$DESTDIR$2"
    say "installed $2"
}

# Copies $1 to $2 with mode $3 only if $2 does not exist (files admins edit).
put_once() {
    if [ -e "$DESTDIR$2" ]; then
        say "kept existing $2"
    else
        install -D -m "$3" "$1" "$DESTDIR$2"
        say "installed $2"
    fi
}

put "$BINARY" "$PREFIX/bin/rerod" 0755

# The unit names /usr/bin/rerod; follow PREFIX when it differs. Written to a
# temp file first so a failed run never leaves a half-written unit behind.
unit=$(mktemp)
trap 'rm -f "$unit"' EXIT
sed "s|^ExecStart=/usr/bin/rerod |ExecStart=$PREFIX/bin/rerod |; s|/usr/share/doc/rerod/|$PREFIX/share/doc/rerod/|g" \
    "$here/rerod.service" >"$unit"
# Units installed by hand belong in /etc/systemd/system (/usr/lib is the
# package manager's).
put "$unit" /etc/systemd/system/rerod.service 0644
put "$here/rerod.sysusers" /etc/sysusers.d/rerod.conf 0644
put "$here/rerod.tmpfile" /etc/tmpfiles.d/rerod.conf 0644
put "$here/rerod-modules.conf" /etc/modules-load.d/rerod.conf 0644
put_once "$here/99-rerod-boards.rules" /etc/udev/rules.d/99-rerod-boards.rules 0644
put "$repo/README.md" "$PREFIX/share/doc/rerod/README.md" 0644
put "$here/README.md" "$PREFIX/share/doc/rerod/systemd.md" 0644
# The config may hold secrets (e.g. a JWT secret): readable by root and, once
# the user exists, the rerod group only. The example config with the store
# and records under /var/lib/rerod (host-config.sh), as the package installs it.
config=$(mktemp)
trap 'rm -f "$unit" "$config"' EXIT
"$here/host-config.sh" >"$config"
put_once "$config" /etc/rerod/rerod.toml 0640

if [ -n "$DESTDIR" ]; then
    say "staged under $DESTDIR; on the target run: systemd-sysusers, systemd-tmpfiles --create rerod.conf, systemctl daemon-reload, udevadm control --reload"
    exit 0
fi

# Activate on the live system, each step only where its tool exists (a
# container or chroot may lack udev or a running systemd).
if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers /etc/sysusers.d/rerod.conf
    say "user rerod present (member of dialout)"
else
    say "systemd-sysusers not found: create the user yourself: useradd --system --home-dir /var/lib/rerod --shell /usr/sbin/nologin --groups dialout rerod"
fi
if getent group rerod >/dev/null 2>&1; then
    chgrp rerod /etc/rerod/rerod.toml
fi
# /var/lib/rerod, its records and /var/cache/rerod, owned by rerod, before
# the first start (the unit's StateDirectory= would make them then too).
if command -v systemd-tmpfiles >/dev/null 2>&1 && getent passwd rerod >/dev/null 2>&1; then
    systemd-tmpfiles --create /etc/tmpfiles.d/rerod.conf
    say "directories /var/lib/rerod and /var/cache/rerod present"
fi
if command -v modprobe >/dev/null 2>&1; then
    modprobe -a cdc_acm usbserial 2>/dev/null || say "could not load cdc_acm/usbserial now; they load at next boot"
fi
if command -v udevadm >/dev/null 2>&1 && [ -d /run/udev ]; then
    udevadm control --reload
    udevadm trigger --subsystem-match=tty --action=add
    say "udev rules reloaded"
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "systemd reloaded; start with: systemctl enable --now rerod"
    if systemctl is-active --quiet rerod; then
        say "rerod is running the old binary; restart it with: systemctl restart rerod"
    fi
else
    say "systemd is not running here; the unit takes effect on the next boot"
fi
say "edit /etc/rerod/rerod.toml (check it with: $PREFIX/bin/rerod check-config /etc/rerod/rerod.toml)"
say "once rerod runs, make the first admin: $PREFIX/bin/rerod user add you@lab.example --admin --config /etc/rerod/rerod.toml"

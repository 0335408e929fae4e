#!/bin/sh
# host-config.sh: prints config/rerod.toml as a lab host installs it at
# /etc/rerod/rerod.toml, with the store and the session records under
# /var/lib/rerod instead of ./data (relative to the working directory, which is
# / under systemd, where nothing is writable).
#
#   systemd/host-config.sh > rerod.toml
#
# Used by install.sh and package.sh, so both install the same file. With the
# store path in the file, commands run by hand (`rerod user add ... --config
# /etc/rerod/rerod.toml`, `rerod backup`) find the daemon's store and control
# socket without DATABASE_PATH. Fails if the example no longer has the lines
# it rewrites, so a changed example cannot quietly ship relative paths.
set -eu

example="$(cd "$(dirname "$0")/.." && pwd)/config/rerod.toml"
store='path = "data/rerod.redb"'
records='path = "data/records"'
for line in "$store" "$records"; do
    if [ "$(grep -cxF "$line" "$example")" -ne 1 ]; then
        echo "host-config.sh: $example no longer has exactly one line '$line'; update this script" >&2
        exit 1
    fi
done
sed -e 's|^path = "data/rerod.redb"$|path = "/var/lib/rerod/rerod.redb"|' \
    -e 's|^path = "data/records"$|path = "/var/lib/rerod/records"|' \
    "$example"

#!/usr/bin/env bash
# package.sh (tests): the Debian packages, built and installed the way a lab
# installs them. Builds rerod and rero (systemd/package.sh), runs lintian, then
# in throwaway Debian 12 roots made by mmdebstrap (as root, no container):
# installs rerod, checks its user, directories, conffile and unit, starts the
# daemon from the installed files as its user and asks /health, upgrades to a
# rebuilt package with a higher version (an edited config and the store
# survive), purges (the state goes); installs rero alone in a second root
# (nothing of the daemon comes with it). Called from tests/run.sh; run alone:
#
#   sudo tests/package.sh
#
# Needs root (chroot, mounts) and a Debian mirror (from this machine's apt
# sources). Installs lintian and mmdebstrap when missing. Everything it makes
# is under target/package-test/ and is replaced on the next run.
# shellcheck disable=SC2016 # single-quoted $1 and ${Version} are for the inner shell and dpkg-query
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
started=$SECONDS

say() { printf '\n== %s\n' "$*"; }
fail() { printf 'tests/package.sh: FAILED: %s\n' "$*" >&2; exit 1; }
check() { # check DESCRIPTION COMMAND...: runs the command, fails the test with DESCRIPTION if it does
    local what=$1
    shift
    if "$@"; then printf 'ok: %s\n' "$what"; else fail "$what"; fi
}

[ "$(id -u)" -eq 0 ] || fail "run as root: it makes chroots and mounts /proc and /dev in them"

missing=()
command -v lintian >/dev/null 2>&1 || missing+=(lintian)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd) # for systemd/check.sh
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

work=$repo/target/package-test
daemon_root=$work/rerod-root
cli_root=$work/rero-root
daemon_pid=

unmount_root() {
    local root=$1 dir
    for dir in dev proc; do
        if mountpoint -q "$root/$dir" 2>/dev/null; then umount "$root/$dir" || umount -l "$root/$dir"; fi
    done
}
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    unmount_root "$daemon_root"
    unmount_root "$cli_root"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP # through the EXIT trap above

# A previous run that was killed may have left mounts: never delete through them.
cleanup
rm -rf --one-file-system "$daemon_root" "$cli_root"
rm -rf "$work/upgrade" "$work/debs"
mkdir -p "$work"

say "build both packages"
systemd/package.sh
host_arch=$(dpkg --print-architecture)
rerod_deb=$(grep "/rerod_[^/]*_${host_arch}\.deb$" target/debian/built.txt)
rero_deb=$(grep "/rero_[^/]*_${host_arch}\.deb$" target/debian/built.txt)
# Kept aside: cargo-deb deletes other versions from target/debian/ when it
# builds the upgrade below, wherever that goes; they are put back after.
mkdir -p "$work/debs"
cp "$rerod_deb" "$rero_deb" "$work/debs/"
rerod_deb=$work/debs/$(basename "$rerod_deb")
rero_deb=$work/debs/$(basename "$rero_deb")
version=$(dpkg-deb -f "$rerod_deb" Version)
echo "rerod: $rerod_deb"
echo "rero:  $rero_deb"

say "lintian: no errors (the warnings kept are listed in README.md)"
lintian --fail-on error --tag-display-limit 0 "$rerod_deb" "$rero_deb" || fail "lintian reports errors"

say "package contents"
# The unit shipped is the one in systemd/, unchanged.
dpkg-deb --fsys-tarfile "$rerod_deb" | tar -xO --wildcards '*/systemd/system/rerod.service' | cmp - systemd/rerod.service ||
    fail "the packaged rerod.service differs from systemd/rerod.service"
echo "ok: the packaged unit is systemd/rerod.service"
check "rero's package holds no daemon, unit or maintainer script" \
    bash -c '! dpkg-deb -c "$1" | grep -Eq "rerod|systemd/system|sysusers" && [ -z "$(dpkg-deb --ctrl-tarfile "$1" | tar -t | grep -E "post|pre")" ]' _ "$rero_deb"

# A mirror this machine already uses (only Debian's mirrors may be reachable).
mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\/\{0,1\}\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
if [ -z "$mirror" ]; then
    mirror=$(sed -n 's/^deb[[:space:]]\{1,\}\(https\{0,1\}:[^[:space:]]*\/debian\/\{0,1\}\)[[:space:]].*/\1/p' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1)
fi
mirror=${mirror:-http://deb.debian.org/debian}

# The roots are made fresh each run from this tarball; one less than a day
# old is reused (each root runs apt-get update anyway), saving a minute.
if [ -f "$work/bookworm.tar" ] && [ -n "$(find "$work/bookworm.tar" -mmin -1440)" ]; then
    say "a Debian 12 root: reusing $work/bookworm.tar (less than a day old)"
else
    say "a Debian 12 root (mmdebstrap, minbase, from $mirror)"
    rm -f "$work/bookworm.tar.part"
    mmdebstrap --variant=minbase --mode=root --format=tar bookworm "$work/bookworm.tar.part" "deb $mirror bookworm main"
    mv "$work/bookworm.tar.part" "$work/bookworm.tar"
fi

# Makes a root from the tarball, with what apt and dpkg need of the host.
make_root() {
    local root=$1
    mkdir -p "$root"
    tar -xf "$work/bookworm.tar" -C "$root"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    mount -t proc proc "$root/proc"
    mount --bind /dev "$root/dev"
    chroot "$root" apt-get update -q
}
in_root() { chroot "$daemon_root" "$@"; }
apt_install() { # apt_install ROOT DEB: installs a .deb with its dependencies
    cp "$2" "$1/tmp/"
    chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "/tmp/$(basename "$2")"
}

make_root "$daemon_root"

say "1. install rerod"
apt_install "$daemon_root" "$rerod_deb" | tee "$work/install.log"
check "the postinst says how to make the first admin" grep -q 'rerod user add .* --admin' "$work/install.log"

say "2. user, directories, conffile, unit"
check "user rerod, home /var/lib/rerod, no login shell" \
    bash -c '[ "$(chroot "$1" getent passwd rerod | cut -d: -f6,7)" = /var/lib/rerod:/usr/sbin/nologin ]' _ "$daemon_root"
check "rerod is in dialout" bash -c 'chroot "$1" id -nG rerod | grep -qw dialout' _ "$daemon_root"
mode_is() { [ "$(in_root stat -c '%a %U %G' "$1")" = "$2" ]; } # names as the root knows them
for dir in /var/lib/rerod /var/lib/rerod/records /var/cache/rerod; do
    check "$dir is 700 rerod rerod" mode_is "$dir" "700 rerod rerod"
done
check "/etc/rerod/rerod.toml is 640 root rerod" mode_is /etc/rerod/rerod.toml "640 root rerod"
check "/etc/rerod/rerod.toml is a conffile" grep -qx /etc/rerod/rerod.toml "$daemon_root/var/lib/dpkg/info/rerod.conffiles"
check "the config keeps the store under /var/lib/rerod" grep -qx 'path = "/var/lib/rerod/rerod.redb"' "$daemon_root/etc/rerod/rerod.toml"
unit=$(in_root sh -c 'ls /usr/lib/systemd/system/rerod.service /lib/systemd/system/rerod.service 2>/dev/null | head -n1')
check "the unit is installed" test -n "$unit"
check "the unit is enabled" test -L "$daemon_root/etc/systemd/system/multi-user.target.wants/rerod.service"
check "the installed unit is systemd/rerod.service" cmp -s "$daemon_root$unit" systemd/rerod.service
check "sysusers.d, tmpfiles.d and modules-load.d entries" test -f "$daemon_root/usr/lib/sysusers.d/rerod.conf" \
    -a -f "$daemon_root/usr/lib/tmpfiles.d/rerod.conf" -a -f "$daemon_root/usr/lib/modules-load.d/rerod.conf"
check "man page and completions" test -f "$daemon_root/usr/share/man/man8/rerod.8.gz" \
    -a -f "$daemon_root/usr/share/bash-completion/completions/rerod" \
    -a -f "$daemon_root/usr/share/zsh/vendor-completions/_rerod"
check "the udev rule example is in the docs" test -f "$daemon_root/usr/share/doc/rerod/examples/99-rerod-boards.rules"
check "the config the package installed validates" in_root rerod check-config /etc/rerod/rerod.toml

say "systemd-analyze verify of the installed unit"
UNIT="$daemon_root$unit" BINARY="$daemon_root/usr/bin/rerod" systemd/check.sh

# Starts the unit's ExecStart= as its User=/Group=/SupplementaryGroups=, with
# its Environment=, from / (systemd's default working directory), on a free
# loopback port; no systemd runs in the root.
port=
start_daemon() {
    local exec env uid gid dialout
    exec=$(sed -n 's/^ExecStart=//p' "$daemon_root$unit")
    env=$(sed -n 's/^Environment=//p' "$daemon_root$unit")
    uid=$(in_root id -u rerod)
    gid=$(in_root id -g rerod)
    dialout=$(in_root getent group dialout | cut -d: -f3)
    port=$((20000 + RANDOM % 20000))
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    # shellcheck disable=SC2086 # ExecStart= and Environment= are word lists
    chroot --userspec="$uid:$gid" --groups="$gid,$dialout" "$daemon_root" \
        env -i PATH=/usr/bin:/bin HOME=/var/lib/rerod $env HOST=127.0.0.1 PORT="$port" $exec \
        >>"$work/rerod.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 1 100); do
        if curl -fsS "http://127.0.0.1:$port/health" >"$work/health.json" 2>/dev/null; then return 0; fi
        kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/rerod.log"; fail "rerod exited at start"; }
        sleep 0.2
    done
    cat "$work/rerod.log"
    fail "rerod did not answer /health within 20 s"
}
stop_daemon() {
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" || fail "rerod did not exit 0 on SIGTERM"
    daemon_pid=
}
succeeds() { # succeeds WHAT METHOD PATH JSON: the request gets a 2xx answer
    local status
    status=$(curl -s -o "$work/answer.json" -w '%{http_code}' -X "$2" -H 'Content-Type: application/json' \
        --data "$4" "http://127.0.0.1:$port$3")
    [[ $status == 2?? ]] || fail "$1: $2 $3 answered $status: $(cat "$work/answer.json")"
    echo "ok: $1"
}

say "3. start the daemon from the installed files, as rerod"
start_daemon
check "/health answers ok" grep -q '"status":"healthy"\|"status":"ok"' "$work/health.json"
check "the daemon runs as rerod" test "$(stat -c %u "/proc/$daemon_pid")" = "$(in_root id -u rerod)"
check "the store is in /var/lib/rerod, owned by rerod" mode_is /var/lib/rerod/rerod.redb "$(stat -c %a "$daemon_root/var/lib/rerod/rerod.redb") rerod rerod"
student='{"email":"student@uni.example","password":"granite-kettle-47-orbit"}'
succeeds "a student registers (the store takes a write)" POST /auth/register "$student"
check "the first admin is made as the README says" \
    bash -c 'echo "basalt-lantern-93-quiver" | chroot "$1" rerod user add first-admin@uni.example --admin --config /etc/rerod/rerod.toml' _ "$daemon_root"
stop_daemon

say "4. edit the config, upgrade to a higher version"
sed -i 's/^days_ahead = .*/days_ahead = 14  # edited by the lab/' "$daemon_root/etc/rerod/rerod.toml"
check "the edit is made" grep -q 'edited by the lab' "$daemon_root/etc/rerod/rerod.toml"
# Built into target/package-test/upgrade/, not among the packages of this version.
DEB_VERSION="$version+upgrade1" OUT="$work/upgrade" systemd/package.sh
new_deb=$(grep "/rerod_[^/]*_${host_arch}\.deb$" "$work/upgrade/built.txt")
cp "$rerod_deb" "$rero_deb" target/debian/
check "the rebuilt package has a higher version" dpkg --compare-versions "$(dpkg-deb -f "$new_deb" Version)" gt "$version"
apt_install "$daemon_root" "$new_deb"
check "the new version is installed" test "$(in_root dpkg-query -W -f '${Version}' rerod)" = "$version+upgrade1"
check "the edited config survived" grep -q 'edited by the lab' "$daemon_root/etc/rerod/rerod.toml"
check "the config is still 640 root rerod" mode_is /etc/rerod/rerod.toml "640 root rerod"
start_daemon
succeeds "the store survived: the student logs in" POST /auth/login "$student"
succeeds "the store survived: the admin logs in" POST /auth/login \
    '{"email":"first-admin@uni.example","password":"basalt-lantern-93-quiver"}'
stop_daemon

say "5. remove, then purge"
in_root env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q rerod
check "remove keeps the state and the config" test -d "$daemon_root/var/lib/rerod" -a -f "$daemon_root/etc/rerod/rerod.toml"
in_root env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q rerod | tee "$work/purge.log"
check "purge says it removed the state" grep -q 'purge removed /var/lib/rerod' "$work/purge.log"
check "purge removed /var/lib/rerod and /var/cache/rerod" test ! -e "$daemon_root/var/lib/rerod" -a ! -e "$daemon_root/var/cache/rerod"
check "purge removed the config" test ! -e "$daemon_root/etc/rerod/rerod.toml"
check "purge removed the unit's enablement" test ! -e "$daemon_root/etc/systemd/system/multi-user.target.wants/rerod.service"
unmount_root "$daemon_root"

say "rero alone, in a second root"
make_root "$cli_root"
before=$(chroot "$cli_root" dpkg-query -W -f '${Package}\n' | sort)
apt_install "$cli_root" "$rero_deb"
added=$(comm -13 <(echo "$before") <(chroot "$cli_root" dpkg-query -W -f '${Package}\n' | sort) | tr '\n' ' ')
check "installing rero added only rero (added: $added)" test "$added" = "rero "
check "rero --help works" bash -c 'chroot "$1" rero --help | grep -q "Usage: rero"' _ "$cli_root"
check "rero's man page and completions" test -f "$cli_root/usr/share/man/man1/rero.1.gz" \
    -a -f "$cli_root/usr/share/bash-completion/completions/rero"
check "nothing of the daemon: no rerod, no systemd" \
    test ! -e "$cli_root/usr/bin/rerod" -a ! -e "$cli_root/usr/bin/systemctl"
unmount_root "$cli_root"

echo
echo "tests/package.sh: all passed in $((SECONDS - started)) s"

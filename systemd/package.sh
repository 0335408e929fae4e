#!/usr/bin/env bash
# package.sh: builds the Debian packages `rerod` (the daemon, its hardened
# unit, user, directories and config) and `rero` (the command line alone) with
# cargo-deb, into target/debian/.
#
#   systemd/package.sh                      # host architecture, plus aarch64 where its std is installed
#   DEB_VERSION=0.1.0-2 systemd/package.sh  # another Debian version (the upgrade test uses this)
#   TARGETS="aarch64-unknown-linux-gnu" systemd/package.sh   # only these targets
#   OUT=/tmp/debs systemd/package.sh        # another output folder
#
# Installs what it needs when missing (cargo-deb from crates.io, dpkg-dev
# from Debian; the latter needs root). The packages' paths are printed last, one a
# line, and written to built.txt in the output folder.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
say() { printf 'package.sh: %s\n' "$*" >&2; }
die() { printf 'package.sh: error: %s\n' "$*" >&2; exit 1; }

# cargo-deb, pinned: the metadata in daemon/Cargo.toml is written for it.
# Compiling it takes a few minutes, once per machine.
CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    say "installing cargo-deb $CARGO_DEB_VERSION from crates.io (a few minutes, once)"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
# cargo-deb finds the packages' libc dependency with dpkg-shlibdeps.
missing=()
command -v dpkg-shlibdeps >/dev/null 2>&1 || missing+=(dpkg-dev)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing: sudo apt-get install ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

host=$(rustc -vV | sed -n 's/^host: //p')
if [ -n "${TARGETS:-}" ]; then
    read -r -a targets <<<"$TARGETS"
else
    targets=("$host")
    # A Raspberry Pi (64-bit OS). Built only where rustup has its standard
    # library; these cross builds also need a linker for it (README).
    if rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
        targets+=(aarch64-unknown-linux-gnu)
    else
        say "skipping aarch64-unknown-linux-gnu: its standard library is not installed (rustup target add aarch64-unknown-linux-gnu)"
    fi
fi

# The host's build goes to target/release (what `cargo build --release`
# makes anyway); naming the host with --target would build everything again
# under target/<triple>/.
target_args() { if [ "$1" = "$host" ]; then target_args=(); else target_args=(--target "$1"); fi; }

# The binaries, built here rather than by cargo-deb (--no-build below), so
# that both packages and both commands share one build.
for target in "${targets[@]}"; do
    if [ "$target" = aarch64-unknown-linux-gnu ] && [ -z "${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-}" ]; then
        command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 ||
            die "no linker for aarch64: sudo apt-get install gcc-aarch64-linux-gnu (or set CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER)"
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    fi
    # jemalloc fixes the page size it supports when it is built, and a cross
    # build cannot probe it: it would assume 4 KiB, and the daemon would abort
    # at start on a Raspberry Pi 5 kernel with 16 KiB pages. 64 KiB works on
    # 4, 16 and 64 KiB kernels alike, at the cost of some unused memory.
    page=()
    if [ "$target" = aarch64-unknown-linux-gnu ]; then
        page=(env "JEMALLOC_SYS_WITH_LG_PAGE=${JEMALLOC_SYS_WITH_LG_PAGE:-16}")
    fi
    say "building rerod and rero for $target"
    target_args "$target"
    "${page[@]}" cargo build --release --locked -p rerod -p rero "${target_args[@]}"
done

# Files the packages carry that are made, not written: man pages and
# completions from the host's binaries (they are the same on every target),
# and the host's config (systemd/host-config.sh). Made in target/release/deb/
# and copied to each other target's release/deb/, where cargo-deb looks.
gen=target/release/deb
bin=target/release
mkdir -p "$gen"
version=$("$bin/rerod" --version | awk '{print $2}')
# Both commands print their own man page and completions (clap's).
"$bin/rerod" man | gzip -9n >"$gen/rerod.8.gz"
"$bin/rerod" completions bash >"$gen/rerod.bash"
"$bin/rerod" completions zsh >"$gen/_rerod"
"$bin/rerod" completions fish >"$gen/rerod.fish"
"$bin/rero" man | gzip -9n >"$gen/rero.1.gz"
"$bin/rero" completions bash >"$gen/rero.bash"
"$bin/rero" completions zsh >"$gen/_rero"
"$bin/rero" completions fish >"$gen/rero.fish"
systemd/host-config.sh >"$gen/rerod.toml"
# Debian's changelog for this build: the version and the commit it is built
# from (the project's history is git's), dated by that commit.
deb_version=${DEB_VERSION:-$version-1}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo "a source tree")
date=$(git log -1 --format=%aD 2>/dev/null || date -R)
maintainer=$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' daemon/Cargo.toml)
cat >"$gen/changelog" <<CHANGELOG
rerod ($deb_version) unstable; urgency=medium

  * Built from $commit; see the project's history for its changes.

 -- $maintainer  $date
CHANGELOG

out=${OUT:-target/debian}
mkdir -p "$out"
out=$(cd "$out" && pwd)
built=()
for target in "${targets[@]}"; do
    if [ "$target" != "$host" ]; then
        mkdir -p "target/$target/release/deb"
        cp "$gen"/* "target/$target/release/deb/"
    fi
    for package in rerod rero; do
        # --strip: the release profile keeps line tables for backtraces;
        # Debian's binaries carry none (policy 10.1).
        target_args "$target"
        args=(-p "$package" --no-build --strip --locked --output "$out" "${target_args[@]}")
        [ -n "${DEB_VERSION:-}" ] && args+=(--deb-version "$DEB_VERSION")
        say "packaging $package for $target"
        built+=("$(cargo deb "${args[@]}")")
    done
done
printf '%s\n' "${built[@]}" | tee "$out/built.txt"

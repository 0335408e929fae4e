#!/usr/bin/env bash
# Runs every test rerod has: unit tests, the black-box suite against the real
# binary, and doc tests. Installs what a fresh Debian machine with only the
# Rust toolchain lacks first (idempotently: a second run installs nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

# The simulated Arduino (simavr + the real Optiboot bootloader), its test
# firmware, avrdude for cross-checks: Debian packages plus a build into
# target/rig/. Installs only what is missing.
tests/rig/setup.sh

# Debian's PostgreSQL server, for the tests of several hosts on one shared
# store (tests/blackbox/cluster.rs), which start their own throwaway server
# under target/ with tests/pg/server.sh. Installs only what is missing.
tests/pg/setup.sh

# The browser test's tools (tests/web/): Debian's chromium and the
# Playwright driver under target/web-tests/. Installs only what is missing.
tests/web/setup.sh

# systemd-analyze, to verify the unit in systemd/.
if ! command -v systemd-analyze >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends systemd
fi

# tmux, to drive `rero console` in a real terminal (tests/blackbox/rero.rs).
if ! command -v tmux >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends tmux
fi

# Style and lints, where the toolchain has them (rustup's default profile does).
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all --check
else
    echo "tests/run.sh: rustfmt is not installed; skipping the format check" >&2
fi
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --workspace --all-targets --locked -- -D warnings
else
    echo "tests/run.sh: clippy is not installed; skipping lints" >&2
fi
# The web app's pure modules under node's own test runner (node comes with
# tests/web/setup.sh above). Seconds, so before the long Rust suites.
node --test tests/web/unit/

cargo test --workspace --locked "$@"

# The cargo-fuzz targets (fuzz/, outside the workspace) need nightly to run;
# here they only have to build, so a change to the parsers' API cannot leave
# them broken. Running them is fuzz/run.sh's job.
if cargo +nightly --version >/dev/null 2>&1; then
    if ! cargo +nightly check --manifest-path fuzz/Cargo.toml --locked; then
        echo "tests/run.sh: fuzz/Cargo.lock is behind the workspace's dependencies; refresh it with" >&2
        echo "  cargo +nightly update --manifest-path fuzz/Cargo.toml --workspace --offline" >&2
        exit 1
    fi
else
    echo "tests/run.sh: no nightly toolchain; skipping the check of the fuzz targets" >&2
fi

# The running daemon against its own OpenAPI document: no 5xx, every
# response as documented.
tests/schemathesis.sh

# The Debian packages: built with cargo-deb, checked by lintian, installed,
# upgraded and purged in throwaway Debian 12 roots (a few minutes; README
# "Debian packages").
tests/package.sh

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

# systemd-analyze, to verify the unit in systemd/.
if ! command -v systemd-analyze >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends systemd
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"

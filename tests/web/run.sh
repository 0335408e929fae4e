#!/usr/bin/env bash
# Runs the browser tests alone: the real daemon with a simulated Uno, two
# users in headless chromium (tests/web/flow.mjs, started by the black-box
# test `web::`). Screenshots of each step land in target/web-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/../.."
tests/rig/setup.sh
tests/web/setup.sh
cargo test -p rerod --locked --test blackbox web:: "$@"

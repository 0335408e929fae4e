#!/usr/bin/env bash
# Runs each cargo-fuzz target for a number of seconds (default 60) with the
# nightly toolchain, installing cargo-fuzz first if it is missing.
#
#   fuzz/run.sh            every target, 60 s each
#   fuzz/run.sh 300        every target, 300 s each
#   fuzz/run.sh 60 config  one target
#
# Corpora grow in fuzz/corpus/<target>/ and crashes land in
# fuzz/artifacts/<target>/ (both ignored by git); a crash stops the run and
# the script fails. Reproduce one with: cargo +nightly fuzz run <target> <file>
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(ihex json_requests ws_messages config)
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: the nightly toolchain is required (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install cargo-fuzz --locked
fi

# Each target gets its own time budget; the build happens once per target
# before its clock starts. Inputs are capped at 64 KiB, the JSON body limit,
# which is also far beyond any single config edit or HEX record.
for target in "${targets[@]}"; do
    echo "fuzz/run.sh: $target for ${seconds}s" >&2
    cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -max_len=65536 -print_final_stats=1
done

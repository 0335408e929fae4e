#!/usr/bin/env bash
# Instructions a request costs the daemon, counted by callgrind: the same
# figure on every run of the same binary, however busy the machine is, so a
# change to the request path can be judged where req/s are too noisy.
#
#     tests/bench/instructions.sh [BINARY] [PATH] [ARG...]
#
# Starts BINARY (default target/release/rerod) under valgrind with its
# built-in defaults in a temporary directory, sends PATH (default /slots)
# 200 and then 2,200 times over one keep-alive connection, and prints the
# difference divided by 2,000: the user-space instructions of one request
# on every thread of the daemon (the access log's writer included), start-up
# and shutdown cancelled out. ARGs go to BINARY: the load bench's bare-hyper
# ceiling counts the same way, for the figure beside rerod's:
#
#     tests/bench/instructions.sh target/release/deps/load-HASH /slots ceiling-server
#
# Needs valgrind and curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
binary=${1:-target/release/rerod}
path=${2:-/slots}
binary=$(realpath "$binary")
shift $(($# < 2 ? $# : 2))
binary_args=("$@")

# Total instructions of one daemon life serving `path` $1 times.
count() {
    local n=$1 dir port pid
    dir=$(mktemp -d)
    port=$((20000 + RANDOM % 10000))
    (cd "$dir" && PORT=$port exec valgrind --tool=callgrind --callgrind-out-file="$dir/out" "$binary" "${binary_args[@]}" >"$dir/log" 2>&1) &
    pid=$!
    for _ in $(seq 200); do
        # A bare connect: no request is counted before the measured ones.
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.2
    done
    local args=()
    for _ in $(seq "$n"); do args+=(-o /dev/null "http://127.0.0.1:$port$path"); done
    curl -s "${args[@]}"
    kill -TERM "$pid"
    wait "$pid" || true
    callgrind_annotate "$dir/out" | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
    rm -rf "$dir"
}

few=$(count 200)
many=$(count 2200)
echo "GET $path: $(((many - few) / 2000)) instructions per request ($binary)"

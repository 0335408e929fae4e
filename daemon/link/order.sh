#!/usr/bin/env bash
# Remakes daemon/link/order.txt: the functions the release daemon runs to
# start, then those its first requests run, each once, in that order. The
# build has the linker put them at the front of the binary's code
# (daemon/build.rs); README.md beside this script says why and when to run it.
#
#     daemon/link/order.sh          # rebuild, profile, rewrite order.txt
#     daemon/link/order.sh --check  # how much of order.txt the current binary has
#
# The names carry a hash of their crate's build, and the same source gives
# other hashes when cargo builds rerod with other packages' features
# unified in: alone (`cargo run --release --bin rerod`, the README's
# command), beside rero (the Debian packages, systemd/package.sh), or with
# the benchmarks' dev-dependencies (`cargo bench`). So each of those three
# builds is profiled, and the list holds the names of all three, the
# package's first; the linker skips the names a binary does not have.
#
# Each build runs in a temporary directory under callgrind, which records
# every function that runs: started, idle for two seconds and stopped, on
# the example lab's config and on the built-in defaults (the first part);
# then the same, answering a few of every kind of request a browser and a
# script send while it runs (the second part). Needs valgrind and curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
order=daemon/link/order.txt
binary=target/release/rerod

# The binary's function symbols, mangled, one per line.
symbols() { nm --defined-only "$binary" | awk '$2 ~ /^[tTW]$/ { print $3 }' | sort -u; }

if [ "${1:-}" = --check ]; then
    [ -x "$binary" ] || { echo "order.sh: no $binary; build it with cargo build --release" >&2; exit 1; }
    listed=$(grep -c . "$order")
    found=$(sort -u "$order" | comm -12 - <(symbols) | grep -c . || true)
    echo "$binary has $found of the $listed names $order lists (each build has only its own, about 2,400 of them)"
    exit 0
fi

binary=$(realpath -m "$binary")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# One daemon life under callgrind, into $dir/$1: start (with the config
# file $3, if given), two seconds idle, then the requests function $2 sends
# (none if empty), then stop.
profile() {
    local port=$((20000 + RANDOM % 10000)) pid config=()
    if [ -n "${3:-}" ]; then config=(--config "$3"); fi
    mkdir "$dir/$1.d"
    (cd "$dir/$1.d" && PORT=$port HOST=127.0.0.1 BCRYPT_ROUNDS=4 DATABASE_PATH="$dir/$1.d/rerod.redb" \
        exec valgrind --tool=callgrind --demangle=no --callgrind-out-file="$dir/$1" "$binary" "${config[@]}" >log 2>&1) &
    pid=$!
    url=http://127.0.0.1:$port
    for _ in $(seq 300); do
        curl -s -o /dev/null "$url/health" && break
        sleep 0.2
    done
    sleep 2
    if [ -n "$2" ]; then "$2"; fi
    kill -TERM "$pid"
    wait "$pid" || true
}

get() { curl -s -o /dev/null "$@"; }
requests() {
    for _ in 1 2 3; do
        get "$url/"
        get -H 'Accept: text/html' "$url/"
        get "$url/health"
        get "$url/slots"
        get "$url/slots?device=0&date=2000-01-01"
        get "$url/devices"
        get "$url/stats"
        get "$url/metrics"
        get "$url/my-bookings"
        get "$url/no-such-route"
    done
    local account='{"email":"order@example.com","password":"plum-orbit-cactus-41"}' token
    get -H 'Content-Type: application/json' -d "$account" "$url/auth/register"
    token=$(curl -s -H 'Content-Type: application/json' -d "$account" "$url/auth/login" |
        sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
    for _ in 1 2 3; do
        get -H "Authorization: Bearer $token" "$url/my-bookings"
        get -H "Authorization: Bearer $token" "$url/slots/user"
        get -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{"slot_id": 99}' "$url/book-slot"
        get -H 'Content-Type: application/json' -d '{"slot_id":' "$url/book-slot"
    done
}

# The functions of the binary as it is now that ran in its lives, first
# part first, each once, appended to $dir/ran. callgrind names each
# function once, with a number, and by the number after; only names the
# binary has are kept (not the C libraries').
profile_build() {
    rm -rf "$dir"/lab* "$dir"/idle* "$dir"/serving*
    # The example lab (config/example-lab.toml), with its state in $dir.
    sed "s|/var/lib/rerod/|$dir/lab-state/|" config/example-lab.toml >"$dir/lab.toml"
    # The first part: start-up, idling, and stopping, on the example lab's
    # config and on the built-in defaults. The second: a life with requests.
    profile lab "" "$dir/lab.toml"
    profile idle ""
    profile serving requests
    symbols >"$dir/symbols"
    awk -v binary="$binary" '
        match($0, /^(c?ob|c?fn)=\([0-9]+\)/) {
            kind = substr($0, 1, index($0, "=") - 1)
            id = substr($0, RSTART + length(kind) + 2, RLENGTH - length(kind) - 3)
            name = substr($0, RSTART + RLENGTH + 1)
            if (kind ~ /ob$/) { if (name != "") objects[id] = name; if (kind == "ob") object = objects[id]; next }
            if (name != "") functions[id] = name
            if (kind == "fn" && object == binary && !(functions[id] in seen)) { seen[functions[id]] = 1; print functions[id] }
        }' "$dir/lab" "$dir/idle" "$dir/serving" |
        awk 'NR == FNR { known[$0] = 1; next } $0 in known' "$dir/symbols" - >"$dir/this"
    echo "order.sh: $(grep -c . "$dir/this") functions ran in this build" >&2
    cat "$dir/this" >>"$dir/ran"
}

: >"$dir/ran"
cargo build --release --locked -p rerod -p rero
profile_build
cargo build --release --locked -p rerod --bin rerod
profile_build
cargo bench --locked -p rerod --no-run
profile_build
awk '!seen[$0]++' "$dir/ran" >"$order"
echo "$order: $(grep -c . "$order") names"

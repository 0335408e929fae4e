#!/usr/bin/env bash
# End-to-end check of the rig: start a simulated Uno (blank, Optiboot only),
# flash counter.hex with avrdude, read the serial output and require a
# "count N" line, stop the rig.  Exit 0 on success.
#
#   tests/rig/avrdude-check.sh [OUTDIR]      (OUTDIR as given to setup.sh,
#                                             default <repo>/target/rig)
# RIG_RESET=open (default) starts the rig with --reset-on-open;
# RIG_RESET=signal sends SIGUSR1 right before avrdude opens the port.
set -euo pipefail

RIG_DIR="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:-$RIG_DIR/../../target/rig}"
MODE="${RIG_RESET:-open}"

fail() { echo "avrdude-check: FAIL: $*" >&2; exit 1; }

for f in rig optiboot_atmega328.hex counter.hex; do
    [ -e "$OUT/$f" ] || fail "$OUT/$f missing: run tests/rig/setup.sh $OUT first"
done
command -v avrdude >/dev/null || fail "avrdude not installed (run setup.sh)"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/rig-check.XXXXXX")"
LINK="$TMP/uno"
RIG_PID=""
cleanup() {
    exec 3>&- 2>/dev/null || true
    if [ -n "$RIG_PID" ] && kill -0 "$RIG_PID" 2>/dev/null; then
        kill -TERM "$RIG_PID" 2>/dev/null || true
        wait "$RIG_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

args=(--bootloader "$OUT/optiboot_atmega328.hex" --link "$LINK" -v)
[ "$MODE" = open ] && args+=(--reset-on-open)
"$OUT/rig" "${args[@]}" >"$TMP/rig.out" 2>"$TMP/rig.err" &
RIG_PID=$!

for _ in $(seq 100); do
    grep -q '^ready ' "$TMP/rig.out" 2>/dev/null && break
    kill -0 "$RIG_PID" 2>/dev/null || { cat "$TMP/rig.err" >&2; fail "rig exited"; }
    sleep 0.1
done
grep -q '^ready ' "$TMP/rig.out" || fail "rig not ready after 10 s"

[ "$MODE" = signal ] && kill -USR1 "$RIG_PID"
start=$(date +%s.%N)
if ! timeout 60 avrdude -p m328p -c arduino -P "$LINK" -b 115200 \
        -U "flash:w:$OUT/counter.hex:i" >"$TMP/avrdude.log" 2>&1; then
    cat "$TMP/avrdude.log" >&2
    cat "$TMP/rig.err" >&2
    fail "avrdude failed"
fi
end=$(date +%s.%N)
grep -q 'bytes of flash verified' "$TMP/avrdude.log" || { cat "$TMP/avrdude.log" >&2; fail "no verify"; }
echo "avrdude-check: flashed and verified in $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }') s"

# Read for a while.  With --reset-on-open this open resets the board again:
# Optiboot waits ~1 s for an uploader, then the app starts counting.
exec 3<>"$LINK"
stty -F "$LINK" raw -echo 115200
timeout 4 cat <&3 >"$TMP/serial.out" || true
exec 3>&-
if ! grep -aq '^count [0-9]' "$TMP/serial.out"; then
    echo "--- serial output:" >&2; head -c 500 "$TMP/serial.out" | od -c | head -20 >&2
    echo "--- rig log:" >&2; cat "$TMP/rig.err" >&2
    fail "no 'count' line from the board"
fi
echo "avrdude-check: board says: $(grep -a '^count' "$TMP/serial.out" | head -3 | tr -d '\r' | tr '\n' ' ')"
echo "avrdude-check: OK"

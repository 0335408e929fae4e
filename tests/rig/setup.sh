#!/usr/bin/env bash
# Builds the simulated-Arduino rig: Optiboot (from Debian's source), the
# simavr harness and the test firmware (for the Uno and for the Mega 2560),
# and copies Debian's Mega 2560 bootloader next to them.  Idempotent: packages are installed
# only when missing, and each output is rebuilt only when its sources are
# newer.  Needs root for apt-get on a fresh machine.
#
#   tests/rig/setup.sh [OUTDIR]      (default: <repo>/target/rig)
set -euo pipefail

RIG_DIR="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:-$RIG_DIR/../../target/rig}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
# one build at a time per output directory (parallel test runs)
exec 9>"$OUT/.setup.lock"
flock 9

PKGS=(simavr libsimavr-dev libsimavrparts1 avrdude gcc-avr avr-libc
      arduino-core-avr arduino-builder make pkg-config)

log() { echo "rig-setup: $*" >&2; }

# ---- packages -------------------------------------------------------------
missing=()
for p in "${PKGS[@]}"; do
    st="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
    [ "$st" = "install ok installed" ] || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        log "need root to install packages"; exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

# stale TARGET DEP...: true when TARGET is missing or any DEP is newer
stale() {
    local t="$1"; shift
    [ -e "$t" ] || return 0
    local d
    for d in "$@"; do
        [ "$d" -nt "$t" ] && return 0
    done
    return 1
}

# ---- (a) Optiboot, linked for a 1 KB boot section at 0x7c00 ---------------
# Debian's prebuilt optiboot_atmega328.hex is 532 bytes (avr-gcc 5 makes it
# bigger than upstream's 500), so it overflows the 512-byte section at
# 0x7e00 and wraps.  Rebuild it from the same source one section lower.
OB_SRC=/usr/share/arduino/hardware/arduino/avr/bootloaders/optiboot
OB_HEX="$OUT/optiboot_atmega328.hex"
if stale "$OB_HEX" "$OB_SRC"/optiboot.c "$OB_SRC"/Makefile "$OB_SRC"/*.h; then
    log "building Optiboot"
    b="$OUT/optiboot-build"
    rm -rf "$b"
    cp -r "$OB_SRC" "$b"
    # the copied prebuilt hex files would look up to date to make
    rm -f "$b"/*.hex "$b"/*.lst
    make -s -C "$b" atmega328 \
        LDSECTIONS="-Wl,--section-start=.text=0x7c00 -Wl,--section-start=.version=0x7ffe" \
        >"$b/build.log" 2>&1 || { cat "$b/build.log" >&2; exit 1; }
    grep -q '^:107C0000' "$b/optiboot_atmega328.hex" \
        || { log "Optiboot did not land at 0x7c00"; exit 1; }
    cp "$b/optiboot_atmega328.hex" "$OB_HEX.tmp"
    mv "$OB_HEX.tmp" "$OB_HEX"
fi

# ---- (a2) the Mega 2560's stk500v2 bootloader, as Debian ships it ---------
# Used as is: it is linked for the 8 KB boot section at 0x3e000 and fits.
# Copied so that every file a test needs is in OUTDIR.
MEGA_SRC=/usr/share/arduino/hardware/arduino/avr/bootloaders/stk500v2/stk500boot_v2_mega2560.hex
MEGA_HEX="$OUT/stk500boot_v2_mega2560.hex"
if stale "$MEGA_HEX" "$MEGA_SRC"; then
    log "copying the Mega 2560 bootloader"
    cp "$MEGA_SRC" "$MEGA_HEX.tmp"
    mv "$MEGA_HEX.tmp" "$MEGA_HEX"
fi

# ---- (b) the harness -------------------------------------------------------
# pkg-config cannot be used as is: simavr.pc requires libelf.pc (not shipped
# by any installed package) and simavrparts.pc requires gl.pc.  The shared
# libraries carry their own dependencies, so these flags are enough.
RIG_BIN="$OUT/rig"
if stale "$RIG_BIN" "$RIG_DIR/harness.c" "$0"; then
    log "building harness"
    gcc -O2 -g -Wall -Wextra -Wno-unused-parameter -std=gnu11 \
        -I/usr/include/simavr -I/usr/include/simavr/parts \
        -o "$RIG_BIN.tmp" "$RIG_DIR/harness.c" \
        -lsimavrparts -lsimavr -lutil -lpthread
    mv "$RIG_BIN.tmp" "$RIG_BIN"
fi

# ---- (c) test firmware -----------------------------------------------------
FW="$RIG_DIR/firmware"
# build_fw MCU SOURCE-NAME OUTPUT-NAME
build_fw() {
    local mcu="$1" src="$FW/$2.c" name="$3"
    if stale "$OUT/$name.hex" "$src" "$FW/uart.h" \
        || stale "$OUT/$name.bin" "$src" "$FW/uart.h"; then
        log "building $name"
        avr-gcc -mmcu="$mcu" -DF_CPU=16000000UL -Os -Wall -Wextra \
            -o "$OUT/$name.elf" "$src"
        avr-objcopy -O ihex -R .eeprom "$OUT/$name.elf" "$OUT/$name.hex.tmp"
        avr-objcopy -O binary -R .eeprom "$OUT/$name.elf" "$OUT/$name.bin.tmp"
        mv "$OUT/$name.hex.tmp" "$OUT/$name.hex"
        mv "$OUT/$name.bin.tmp" "$OUT/$name.bin"
    fi
}
UNO_FW=(counter echo big hello ready silent flood)
MEGA_FW=(counter echo)
for name in "${UNO_FW[@]}"; do
    build_fw atmega328p "$name" "$name"
done
# The same sources for the Mega 2560: its USART0 has the Uno's register
# names, and its bootloader uses the same U2X / UBRR 16 setting.
for name in "${MEGA_FW[@]}"; do
    build_fw atmega2560 "$name" "$name-mega"
done
# ---- (d) a dead board's bootloader ---------------------------------------
# Placed where Optiboot would be, it spins forever: the board never answers
# an uploader, and a power cycle does not help (health-check tests).
DEAD_HEX="$OUT/dead_bootloader.hex"
if stale "$DEAD_HEX" "$FW/dead.S"; then
    log "building the dead bootloader"
    avr-gcc -mmcu=atmega328p -nostartfiles -nostdlib \
        -Wl,--section-start=.text=0x7c00 -o "$OUT/dead_bootloader.elf" "$FW/dead.S"
    avr-objcopy -O ihex "$OUT/dead_bootloader.elf" "$DEAD_HEX.tmp"
    mv "$DEAD_HEX.tmp" "$DEAD_HEX"
fi

# the application area ends where the bootloader starts
size="$(stat -c %s "$OUT/big.bin")"
[ "$size" -le $((0x7c00)) ] || { log "big.bin is $size bytes, over 0x7c00"; exit 1; }

# Written last: tests check it exists and is newer than this script,
# harness.c and firmware/, so they use a rig this script finished building
# and never build one themselves (devices/src/testkit.rs, rig_dir).
touch "$OUT/ready"

echo "rig:        $RIG_BIN"
echo "bootloader: $OB_HEX"
echo "mega boot:  $MEGA_HEX"
echo "dead boot:  $DEAD_HEX"
for name in "${UNO_FW[@]}" "${MEGA_FW[@]/%/-mega}"; do
    echo "$name:$(printf '%*s' $((11 - ${#name})) '')$OUT/$name.hex $OUT/$name.bin"
done

#!/usr/bin/env bash
# The web app's benchmark (not a test): what a first visit transfers, and
# Lighthouse's performance, accessibility and best-practices scores for the
# sign-in page and, signed in, the boards overview and the session view
# during one's slot, against a daemon built from this tree with one
# simulated Uno (tests/rig). Numbers go to stdout; tests/bench/RESULTS.md
# keeps them. Targets: first load <= 300 KB compressed, each score >= 90.
#
#   tests/web/bench.sh            # debug build (the app's files are the same bytes)
#   PROFILE=release tests/web/bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

LIGHTHOUSE_VERSION=12.8.2  # the last release that runs on Debian 12's node 20
PROFILE=${PROFILE:-debug}
TARGET=${CARGO_TARGET_DIR:-target}

tests/web/setup.sh
tests/rig/setup.sh >&2
installed=$(node -p "require('./target/web-bench/node_modules/lighthouse/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$LIGHTHOUSE_VERSION" ]; then
    npm install --prefix target/web-bench --no-audit --no-fund --loglevel=error "lighthouse@$LIGHTHOUSE_VERSION" >&2
fi

if [ "$PROFILE" = release ]; then
    cargo build --release --locked -p rerod --bin rerod
else
    cargo build --locked -p rerod --bin rerod
fi

work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT

# One simulated Uno running hello.hex, so the session view has a board
# whose console prints.
target/rig/rig --mcu atmega328p --bootloader target/rig/optiboot_atmega328.hex --app target/rig/hello.hex \
    --link "$work/uno" > "$work/rig.out" 2> "$work/rig.log" &
pids+=($!)
rig=$!
for _ in $(seq 100); do
    grep -q '^ready ' "$work/rig.out" && break
    sleep 0.1
done
grep -q '^ready ' "$work/rig.out" || { cat "$work/rig.log" >&2; echo "the simulated Uno did not start" >&2; exit 1; }

cat > "$work/rerod.toml" <<TOML
[lab]
timezone = "Europe/Berlin"
[[devices]]
id = "uno-1"
name = "Simulated Uno"
plugin = "stk500v1"
port = "$work/uno"
reset = ["kill", "-USR1", "$rig"]
TOML
HOST=127.0.0.1 PORT=0 BCRYPT_ROUNDS=4 LOG_LEVEL=info DATABASE_PATH="$work/rerod.redb" \
    "$TARGET/$PROFILE/rerod" --config "$work/rerod.toml" 2> "$work/log" &
pids+=($!)
for _ in $(seq 100); do
    addr=$(sed -n 's/.*"message":"listening".*"address":"\([^"]*\)".*/\1/p' "$work/log" | head -n1)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { cat "$work/log" >&2; echo "rerod did not start" >&2; exit 1; }
url="http://$addr/"

echo "== first load ($url)"
APP_URL="$url" node tests/web/first-load.mjs

# Prints one JSON line of scores from Lighthouse's report $1, labelled $2;
# fails unless the page requested the API path $3 (if given), which only a
# signed-in page does.
scores() {
    node -e '
        const [file, label, needs] = process.argv.slice(1);
        const r = require(file);
        const s = Object.fromEntries(Object.entries(r.categories).map(([k, c]) => [k, Math.round(c.score * 100)]));
        const failed = Object.values(r.audits).filter((a) => a.score !== null && a.score < 1 && a.scoreDisplayMode === "binary").map((a) => a.id);
        const paths = r.audits["network-requests"].details.items.map((i) => new URL(i.url).pathname);
        console.log(JSON.stringify({ page: label, ...s, requests: paths.length, transfer_bytes: r.audits["total-byte-weight"].numericValue, failed_audits: failed }));
        if (needs && !paths.includes(needs)) {
            console.error(`${label}: the page never requested ${needs}, so it was not signed in: ${paths.join(" ")}`);
            process.exit(1);
        }
    ' "$@"
}
lighthouse() {
    CHROME_PATH=/usr/bin/chromium node target/web-bench/node_modules/lighthouse/cli/index.js "$@" \
        --quiet --only-categories=performance,accessibility,best-practices --output=json
}

echo "== Lighthouse $LIGHTHOUSE_VERSION, sign-in page, desktop and mobile"
for preset in desktop mobile; do
    if [ "$preset" = desktop ]; then preset_flag=--preset=desktop; else preset_flag=; fi
    lighthouse "$url" $preset_flag --chrome-flags="--headless=new --no-sandbox" --output-path="$work/lh-$preset.json"
    scores "$work/lh-$preset.json" "sign-in, $preset"
done

# Signed in: one chromium with its own profile; sign-in.mjs signs a student
# in there and books the slot in progress, and Lighthouse (with --port, and
# --disable-storage-reset so the token in localStorage stays) opens the
# pages in the same browser.
echo "== Lighthouse $LIGHTHOUSE_VERSION, signed in: boards overview and session view, desktop and mobile"
/usr/bin/chromium --headless=new --no-sandbox --remote-debugging-port=0 --user-data-dir="$work/profile" \
    about:blank 2> "$work/chromium.log" &
pids+=($!)
for _ in $(seq 100); do
    [ -s "$work/profile/DevToolsActivePort" ] && break
    sleep 0.1
done
cdp=$(head -n1 "$work/profile/DevToolsActivePort" 2>/dev/null || true)
[ -n "$cdp" ] || { cat "$work/chromium.log" >&2; echo "chromium did not start" >&2; exit 1; }
APP_URL="$url" CDP_PORT="$cdp" DEVICE=uno-1 node tests/web/sign-in.mjs
# Each page with the API path only its signed-in view requests.
for page in "overview /devices $url#/" "session /slots/user ${url}#/session/uno-1"; do
    read -r name needs address <<< "$page"
    for preset in desktop mobile; do
        if [ "$preset" = desktop ]; then preset_flag=--preset=desktop; else preset_flag=; fi
        CDP_PORT="$cdp" node tests/web/sign-in.mjs clear-cache
        lighthouse "$address" $preset_flag --port="$cdp" --disable-storage-reset \
            --output-path="$work/lh-$name-$preset.json"
        scores "$work/lh-$name-$preset.json" "$name (signed in), $preset" "$needs"
    done
done

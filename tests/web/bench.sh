#!/usr/bin/env bash
# The web app's benchmark (not a test): what a first visit transfers, and
# Lighthouse's performance, accessibility and best-practices scores for the
# sign-in page, against a daemon built from this tree. Numbers go to stdout;
# tests/bench/RESULTS.md keeps them. Targets: first load <= 300 KB
# compressed, each score >= 90.
#
#   tests/web/bench.sh            # debug build (the app's files are the same bytes)
#   PROFILE=release tests/web/bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

LIGHTHOUSE_VERSION=12.8.2  # the last release that runs on Debian 12's node 20
PROFILE=${PROFILE:-debug}
TARGET=${CARGO_TARGET_DIR:-target}

tests/web/setup.sh
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
trap 'kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; rm -rf "$work"' EXIT
printf '[lab]\ntimezone = "Europe/Berlin"\n' > "$work/rerod.toml"
HOST=127.0.0.1 PORT=0 BCRYPT_ROUNDS=4 LOG_LEVEL=info DATABASE_PATH="$work/rerod.redb" \
    "$TARGET/$PROFILE/rerod" --config "$work/rerod.toml" 2> "$work/log" &
daemon=$!
for _ in $(seq 100); do
    addr=$(sed -n 's/.*"message":"listening".*"address":"\([^"]*\)".*/\1/p' "$work/log" | head -n1)
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { cat "$work/log" >&2; echo "rerod did not start" >&2; exit 1; }
url="http://$addr/"

echo "== first load ($url)"
APP_URL="$url" node tests/web/first-load.mjs

echo "== Lighthouse $LIGHTHOUSE_VERSION, sign-in page, desktop and mobile"
for preset in desktop mobile; do
    if [ "$preset" = desktop ]; then preset_flag=--preset=desktop; else preset_flag=; fi
    CHROME_PATH=/usr/bin/chromium node target/web-bench/node_modules/lighthouse/cli/index.js "$url" $preset_flag \
        --quiet --chrome-flags="--headless=new --no-sandbox" \
        --only-categories=performance,accessibility,best-practices \
        --output=json --output-path="$work/lh-$preset.json"
    node -e '
        const r = require(process.argv[1]);
        const s = Object.fromEntries(Object.entries(r.categories).map(([k, c]) => [k, Math.round(c.score * 100)]));
        const failed = Object.values(r.audits).filter((a) => a.score !== null && a.score < 1 && a.scoreDisplayMode === "binary").map((a) => a.id);
        console.log(JSON.stringify({ preset: process.argv[2], ...s, transfer_bytes: r.audits["total-byte-weight"].numericValue, failed_audits: failed }));
    ' "$work/lh-$preset.json" "$preset"
done

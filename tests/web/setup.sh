#!/usr/bin/env bash
# Installs what the browser tests need, only when it is missing: Debian's
# chromium (never a browser downloaded by a test tool) and the Playwright
# driver from npm under target/web-tests/ (kept out of the repository).
# Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

PLAYWRIGHT_VERSION=1.65.1

if ! command -v chromium >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends chromium
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends nodejs npm
fi
installed=$(node -p "require('./target/web-tests/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$PLAYWRIGHT_VERSION" ]; then
    # The driver alone: it uses /usr/bin/chromium and downloads no browser.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix target/web-tests --no-audit --no-fund --loglevel=error \
        "playwright-core@$PLAYWRIGHT_VERSION" >&2
fi

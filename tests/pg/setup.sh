#!/usr/bin/env bash
# Installs Debian's PostgreSQL server for the tests of rerod on a shared
# store (tests/blackbox/cluster.rs), if it is missing. Idempotent: a second
# run installs nothing. The tests start their own server with server.sh; the
# package's own cluster, if Debian starts one, is not used.
set -euo pipefail

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update
    apt-get install -y --no-install-recommends postgresql
fi

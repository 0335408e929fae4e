#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for the tests, as the unprivileged
# `postgres` user (the tests run as root; PostgreSQL refuses to run as root),
# with trust authentication on a unix socket only: no TCP port is opened.
#
#   tests/pg/server.sh start DIR [WATCH_PID]
#       Makes DIR (under target/, say) with a fresh cluster in DIR/data and
#       its socket in DIR, and starts it. With WATCH_PID, the server is
#       stopped once that process has ended (the test binary that wanted it).
#       Prints the socket directory: connect with host=DIR user=postgres.
#   tests/pg/server.sh stop DIR
#       Stops it at once (immediate shutdown: like a crash, the server
#       recovers its committed transactions from its WAL when started again).
#   tests/pg/server.sh resume DIR
#       Starts a stopped one again on its data.
#
# Runs tests/pg/setup.sh first, so a fresh Debian machine gets the package.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [ -z "$BIN" ]; then
    "$HERE/setup.sh" >&2
    BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi
as_postgres() { runuser -u postgres -- "$@"; }

cmd="${1:?usage: server.sh start|stop DIR [WATCH_PID]}"
DIR="${2:?usage: server.sh start|stop DIR [WATCH_PID]}"

case "$cmd" in
start)
    rm -rf "$DIR"
    mkdir -p "$DIR"
    DIR="$(cd "$DIR" && pwd)"
    chown postgres: "$DIR"
    chmod 700 "$DIR"
    as_postgres "$BIN/initdb" --auth=trust --username=postgres --encoding=UTF8 --locale=C.UTF-8 \
        -D "$DIR/data" >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; exit 1; }
    # Unix socket only (listen_addresses empty); a fixed port number names
    # the socket file. fsync stays on: the tests check durability.
    as_postgres "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
        -o "-k $DIR -c listen_addresses= -p 5432 -c max_connections=300" start >/dev/null \
        || { cat "$DIR/server.log" >&2; exit 1; }
    # Root must reach the socket: the directory stays the postgres user's.
    chmod 711 "$DIR"
    if [ -n "${3:-}" ]; then
        watched="$3"
        (
            exec </dev/null >/dev/null 2>&1
            while kill -0 "$watched" 2>/dev/null; do sleep 1; done
            runuser -u postgres -- "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop
            rm -rf "$DIR"
        ) &
        disown
    fi
    echo "$DIR"
    ;;
stop)
    as_postgres "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null
    ;;
resume)
    DIR="$(cd "$DIR" && pwd)"
    as_postgres "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
        -o "-k $DIR -c listen_addresses= -p 5432 -c max_connections=300" start >/dev/null \
        || { cat "$DIR/server.log" >&2; exit 1; }
    ;;
*)
    echo "server.sh: unknown command $cmd" >&2
    exit 2
    ;;
esac

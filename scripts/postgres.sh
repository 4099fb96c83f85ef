#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the load benchmark, on 127.0.0.1 only.
#
#   scripts/postgres.sh start [PORT]   # default port 54329; prints the URL to pass as --pg
#   scripts/postgres.sh status
#   scripts/postgres.sh stop           # stops the cluster and deletes its directory
#
# Uses Debian's `postgresql` package (installed with apt-get if missing). The cluster lives in a
# temporary directory owned by the `postgres` user, runs with fsync=off (benchmark data only),
# and accepts connections without a password from 127.0.0.1. The directory's path is kept in
# $STATE so that `stop` finds it; `start` refuses to run over a cluster that is still running.
set -euo pipefail

STATE="${TMPDIR:-/tmp}/blocking-first-postgres.dir"
PORT="${2:-54329}"

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

# The server binaries (initdb, pg_ctl) live in Debian's versioned folder, not on PATH.
bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -z "$dir" || ! -x "$dir/initdb" ]]; then
        return 1
    fi
    echo "$dir"
}

install_if_missing() {
    if bindir >/dev/null; then
        return
    fi
    echo "postgres.sh: PostgreSQL server not found, installing Debian's package" >&2
    [[ $(id -u) -eq 0 ]] || die "installing needs root: run 'apt-get install -y postgresql' first"
    apt-get install -y postgresql >&2 || {
        apt-get update >&2
        apt-get install -y postgresql >&2
    } || die "apt-get install postgresql failed"
    bindir >/dev/null || die "postgresql installed but initdb not found under /usr/lib/postgresql"
}

# The server refuses to run as root: run its commands as the `postgres` user.
as_postgres() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

running() {
    local dir="$1"
    [[ -d "$dir/data" ]] && as_postgres "$(bindir)/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

start() {
    if [[ -f "$STATE" ]]; then
        local old
        old=$(cat "$STATE")
        if running "$old"; then
            die "a cluster is already running in $old (scripts/postgres.sh stop first)"
        fi
        echo "postgres.sh: removing the stopped cluster left in $old" >&2
        rm -rf "$old" "$STATE"
    fi
    install_if_missing
    local bin
    bin=$(bindir)
    if as_postgres "$bin/pg_isready" -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; then
        die "something already answers on 127.0.0.1:$PORT: choose another port"
    fi

    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/blocking-first-pg.XXXXXX")
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres:postgres "$dir"
    fi
    chmod 700 "$dir"
    echo "$dir" >"$STATE"

    as_postgres "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 ||
        die "initdb failed, see $dir/initdb.log"
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        >/dev/null || die "the server did not start, see $dir/server.log"
    as_postgres "$bin/psql" -q -h 127.0.0.1 -p "$PORT" -U postgres -c "create database app" >/dev/null ||
        die "could not create the database"
    echo "postgres://postgres@127.0.0.1:$PORT/app"
}

stop() {
    [[ -f "$STATE" ]] || die "no cluster recorded in $STATE"
    local dir
    dir=$(cat "$STATE")
    if running "$dir"; then
        as_postgres "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    fi
    rm -rf "$dir" "$STATE"
    echo "postgres.sh: stopped and removed $dir" >&2
}

status() {
    if [[ -f "$STATE" ]] && running "$(cat "$STATE")"; then
        echo "running in $(cat "$STATE")"
    else
        echo "not running"
        return 1
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: scripts/postgres.sh start [PORT] | status | stop" ;;
esac

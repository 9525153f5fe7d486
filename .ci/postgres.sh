# shellcheck shell=bash
# A private PostgreSQL cluster for the test suite, on 127.0.0.1 only.
#
#   source .ci/lib.sh; source .ci/postgres.sh
#   fluxpay_pg_start     # exports FLUXPAY_TEST_POSTGRES_URL, stops on EXIT
#
# Idempotent: when FLUXPAY_TEST_POSTGRES_URL is already set and answers, it
# is reused and nothing is started. Otherwise the Debian package is installed
# if missing, a cluster is created in its own temp dir (initdb refuses to run
# as root, so it runs as the `postgres` user), started on a free port with
# fsync off (tests only: durability is not what they measure), and stopped
# by its PID when the calling shell exits.

FLUXPAY_PG_BIN="${FLUXPAY_PG_BIN:-}"
FLUXPAY_PG_DIR=""
FLUXPAY_PG_PID=""

fluxpay_pg_bin() {
    if [[ -n "$FLUXPAY_PG_BIN" && -x "$FLUXPAY_PG_BIN/postgres" ]]; then
        return 0
    fi
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if [[ -x "$dir/postgres" && -x "$dir/initdb" ]]; then
            FLUXPAY_PG_BIN="$dir"
        fi
    done
    [[ -n "$FLUXPAY_PG_BIN" ]]
}

fluxpay_pg_install() {
    if fluxpay_pg_bin; then
        return 0
    fi
    echo "postgres: not installed; installing the Debian package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    fluxpay_pg_bin || { echo "postgres: no server binaries after install" >&2; return 1; }
}

fluxpay_pg_stop() {
    if [[ -n "$FLUXPAY_PG_PID" ]] && kill -0 "$FLUXPAY_PG_PID" 2>/dev/null; then
        # SIGINT = fast shutdown: roll back sessions, checkpoint, exit.
        kill -INT "$FLUXPAY_PG_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 100); do
            kill -0 "$FLUXPAY_PG_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$FLUXPAY_PG_PID" 2>/dev/null; then
            kill -KILL "$FLUXPAY_PG_PID" 2>/dev/null || true
        fi
        echo "postgres: stopped (pid $FLUXPAY_PG_PID)"
    fi
    FLUXPAY_PG_PID=""
    if [[ -n "$FLUXPAY_PG_DIR" && -d "$FLUXPAY_PG_DIR" ]]; then
        rm -rf "$FLUXPAY_PG_DIR"
    fi
    FLUXPAY_PG_DIR=""
}

fluxpay_pg_start() {
    if [[ -n "${FLUXPAY_TEST_POSTGRES_URL:-}" ]]; then
        fluxpay_pg_bin || true
        if [[ -n "$FLUXPAY_PG_BIN" ]] \
            && "$FLUXPAY_PG_BIN/pg_isready" -q -d "$FLUXPAY_TEST_POSTGRES_URL"; then
            echo "postgres: reusing FLUXPAY_TEST_POSTGRES_URL"
            return 0
        fi
        echo "postgres: FLUXPAY_TEST_POSTGRES_URL is set but does not answer; starting a private cluster"
    fi
    fluxpay_pg_install

    FLUXPAY_PG_DIR="$(mktemp -d /tmp/fluxpay-pg.XXXXXX)"
    mkdir -p "$FLUXPAY_PG_DIR/data" "$FLUXPAY_PG_DIR/socket"
    chown -R postgres:postgres "$FLUXPAY_PG_DIR"
    chmod 700 "$FLUXPAY_PG_DIR"
    local as_postgres=()
    if [[ "$(id -u)" == 0 ]]; then
        as_postgres=(runuser -u postgres --)
    fi
    "${as_postgres[@]}" "$FLUXPAY_PG_BIN/initdb" -D "$FLUXPAY_PG_DIR/data" -U postgres \
        --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$FLUXPAY_PG_DIR/initdb.log" 2>&1 \
        || { cat "$FLUXPAY_PG_DIR/initdb.log" >&2; return 1; }
    fluxpay_at_exit fluxpay_pg_stop

    local port attempt
    for attempt in $(seq 1 20); do
        port=$((20000 + RANDOM % 20000))
        fluxpay_port_open "$port" && continue
        if "${as_postgres[@]}" "$FLUXPAY_PG_BIN/pg_ctl" -D "$FLUXPAY_PG_DIR/data" -w -t 30 \
            -l "$FLUXPAY_PG_DIR/server.log" \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $FLUXPAY_PG_DIR/socket -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
            start >/dev/null; then
            FLUXPAY_PG_PID="$(head -n1 "$FLUXPAY_PG_DIR/data/postmaster.pid")"
            export FLUXPAY_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
            echo "postgres: started on 127.0.0.1:$port (pid $FLUXPAY_PG_PID, data $FLUXPAY_PG_DIR)"
            return 0
        fi
        echo "postgres: port $port failed (attempt $attempt); retrying" >&2
    done
    cat "$FLUXPAY_PG_DIR/server.log" >&2 || true
    return 1
}

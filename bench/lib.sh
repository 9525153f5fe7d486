# Shell functions the benchmark scripts share (sourced, not run).
# PG_DATA: the private PostgreSQL cluster's data directory, when one runs.

# Runs a PostgreSQL tool as `postgres` when we are root (initdb refuses root).
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# CPU time (ms) used so far by a process, or by a PostgreSQL cluster's
# processes (the postmaster's children, live ones).
cpu_ms() { # <pid>
    [ -n "$1" ] || { echo 0; return; }
    awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$1/stat" 2>/dev/null || echo 0
}
pg_cpu_ms() {
    local pm total=0
    [ -n "${PG_DATA:-}" ] && [ -f "$PG_DATA/postmaster.pid" ] || { echo 0; return; }
    pm=$(head -1 "$PG_DATA/postmaster.pid")
    for child in $(cat "/proc/$pm/task/$pm/children" 2>/dev/null); do
        total=$((total + $(cpu_ms "$child")))
    done
    # The postmaster itself plus the children it has reaped (exited backends).
    total=$((total + $(awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15 + $16 + $17) * 1000 / hz) }' "/proc/$pm/stat")))
    echo "$total"
}

say() { printf '\n== %s\n' "$*"; }
facts() {
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

# Builds BUILD_PROFILE's host and load generator (unless SKIP_BUILD=1) and
# sets HOST_BIN (unless given) and LOADGEN_BIN.
build_binaries() {
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        say "building $BUILD_PROFILE (fluxpay-host + loadgen)"
        (cd "$REPO" && cargo build --profile "$BUILD_PROFILE" -p fluxpay-host --bin fluxpay-host --example loadgen)
    fi
    HOST_BIN=${HOST_BIN:-"$REPO/target/$BUILD_PROFILE/fluxpay-host"}
    LOADGEN_BIN="$REPO/target/$BUILD_PROFILE/examples/loadgen"
}

# Starts a private, durable PostgreSQL 15 cluster on 127.0.0.1:PG_PORT in
# WORK/pg (fsync and synchronous commits on, stated explicitly; room for a
# pool plus pgbench's clients; buffers that hold the working set) and sets
# PG_DIR and PG_DATA. The caller stops it (pg_ctl stop, by its data
# directory) on exit.
start_pg_cluster() {
    PG_DIR=$WORK/pg
    mkdir -p "$PG_DIR"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DIR"
    PG_DATA=$PG_DIR/data
    as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 >/dev/null
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -w -l "$PG_DIR/log" -o \
        "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=on -c synchronous_commit=on \
         -c full_page_writes=on -c max_connections=200 -c shared_buffers=256MB" start >/dev/null
}

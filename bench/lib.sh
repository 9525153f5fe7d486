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

# --- Processes and their CPU (bench/payments_confirm.sh, bench/saga.sh) ---

# Per thread of a process: "<tid> <name> <CPU ms>".
thread_cpu() { # <pid>
    local hz t
    hz=$(getconf CLK_TCK)
    for t in /proc/"$1"/task/*; do
        # The fields after the name's closing parenthesis: utime and stime
        # are the 12th and 13th of them.
        printf '%s %s %s\n' "${t##*/}" "$(tr ' ' _ < "$t/comm")" \
            "$(sed 's/.*) //' "$t/stat" | awk -v hz="$hz" '{ print int(($12 + $13) * 1000 / hz) }')"
    done 2>/dev/null
}

# Where the host's CPU went, by thread name (µs per unit: a payment unless
# another is named), and its busiest threads (% of one core: one near
# 100 % is a serial bottleneck).
thread_report() { # <before file> <after file> <count> <wall ms> [unit]
    awk -v n="$3" -v unit="${5:-payment}" 'NR == FNR { before[$1] = $3; next }
        { cpu[$2] += $3 - before[$1]; threads[$2]++ }
        END { for (name in cpu) if (cpu[name] > 0)
                  printf "    %-20s %6d µs per %s (%d threads)\n", name, cpu[name] * 1000 / n, unit, threads[name] }' \
        "$1" "$2" | sort -k2 -rn
    awk -v wall="$4" 'NR == FNR { before[$1] = $3; next }
        { printf "%d %s %d\n", ($3 - before[$1]) * 100 / wall, $2, $1 }' "$1" "$2" \
        | sort -rn | head -4 | awk '{ printf "%s %s (%s) %d %%", (NR == 1 ? "    busiest threads:" : ","), $2, $3, $1 } END { print "" }'
}

# The machine's busy and stolen CPU so far, in ms: "<busy> <steal>".
machine_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%d %d\n", ($2 + $3 + $4 + $7 + $8 + $9) * 1000 / hz, $9 * 1000 / hz }' /proc/stat
}

# Waits until <url> answers 2xx; exits with <log> when <pid> dies first or
# 30 s pass.
wait_for() { # <url> <pid> <log> <what>
    for _ in $(seq 1 300); do
        if curl -fsS "$1" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$2" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "$4 did not become ready:" >&2
    cat "$3" >&2
    exit 1
}

# The PG simulator as a process of its own (unless SIM=embedded), on
# SIM_URL, its secret key from BENCH_PG_SECRET_KEY; sets SIM_PID.
start_sim() {
    [ "${SIM:-process}" = process ] || return 0
    FLUXPAY_PG_SIM_SECRET_KEY=$BENCH_PG_SECRET_KEY "$HOST_BIN" pg-sim \
        --listen "127.0.0.1:$SIM_PORT" --secret-env FLUXPAY_PG_SIM_SECRET_KEY > "$WORK/sim.log" 2>&1 &
    SIM_PID=$!
    wait_for "$SIM_URL/sim/v1/ledger" "$SIM_PID" "$WORK/sim.log" "fluxpay-host pg-sim"
}

# Stops the process whose PID is in the named variable, and clears it.
stop() { # <pid variable>
    local pid=${!1}
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    printf -v "$1" '%s' ""
}

#!/usr/bin/env bash
# End-to-end benchmark of the order saga (issue 16, item 5): create order →
# the PG simulator's checkout → confirm → the service's `completed` callback
# → COMPLETED, with the real binary, generator and simulator on this machine.
#
#   bench/saga.sh [sqlite|postgres|all|kill-sqlite|kill-postgres]  (default: all)
#
# Builds BUILD_PROFILE, then per backend starts the PG simulator (`fluxpay-host
# pg-sim`, a process of its own) and `fluxpay-host serve` with
# bench/payments.yaml (tenant `bench`; service_timeout_s 600, so no saga
# compensates inside a run) on 127.0.0.1, seeds CUSTOMERS customers, and per
# latency and CONCURRENCY runs host/examples/loadgen/ --saga for WARMUP +
# DURATION seconds: each client makes all calls of one order in turn, and
# every answer must be the expected one (201, 200, 201, 200). Around it the
# CPU of the host (and of its threads), the simulator, PostgreSQL, the
# generator and the whole machine is read. The generator checks the
# simulator's books (approvals = confirms answered 201 = orders completed,
# nothing voided); the script then checks the database: no order with two
# approved or confirmed payments, and no saga left unfinished. At the end a
# Markdown table, also in target/bench/saga-table.txt, with the targets
# (≥ TARGET_RATE completed orders/s; every FluxPay call p95 < 200 ms and
# p99 < 500 ms) marked met or missed.
#   sqlite   — a fresh temporary SQLite file (synchronous=SQLITE_SYNC)
#   postgres — a private, durable PostgreSQL 15 cluster (fsync=on,
#              synchronous_commit=on) on 127.0.0.1:$PG_PORT
#   kill-sqlite, kill-postgres — recovery after SIGKILL under load, with
#              service_timeout_s SERVICE_TIMEOUT_S: the generator runs (the
#              first CONCURRENCY), the host is killed (-9) KILL_AFTER seconds
#              in, the generator stopped (its clients lost their host, and
#              the service will never call back for the orders in flight),
#              the host restarted at once; the script polls GET
#              /admin/v1/sagas until no saga is RUNNING, WAITING_FOR_SERVICE,
#              COMPLETING or COMPENSATING, and prints the seconds from the
#              kill (and from the restart), then compares the books: the
#              simulator's net approved amount, and its captured amount,
#              must be the COMPLETED orders', with nothing left held.
# Every process it starts is stopped on exit, by PID.
#
# Knobs (environment): LATENCIES ("0"), CONCURRENCY ("64"; e.g. "64 128
# 256"), DURATION (s, 15), WARMUP (s, 3), CUSTOMERS (1000), PORT (18080),
# SIM_PORT (18090), PG_PORT (54329), SQLITE_SYNC (full), PG_POOL (32),
# LOADGEN_THREADS (1), TARGET_RATE (1000), BUILD_PROFILE (production),
# SKIP_BUILD (1: use the binaries in target/<profile>), HOST_BIN, KEEP_WORK
# (1: keep the temporary directory and print its path); kill runs:
# KILL_AFTER (s, 8), SERVICE_TIMEOUT_S (5), RECOVERY_LIMIT (s, 120).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-all}
LATENCIES=${LATENCIES:-0}
CONCURRENCY=${CONCURRENCY:-64}
DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
CUSTOMERS=${CUSTOMERS:-1000}
PORT=${PORT:-18080}
SIM_PORT=${SIM_PORT:-18090}
PG_PORT=${PG_PORT:-54329}
SQLITE_SYNC=${SQLITE_SYNC:-full}
PG_POOL=${PG_POOL:-32}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
TARGET_RATE=${TARGET_RATE:-1000}
KILL_AFTER=${KILL_AFTER:-8}
SERVICE_TIMEOUT_S=${SERVICE_TIMEOUT_S:-5}
RECOVERY_LIMIT=${RECOVERY_LIMIT:-120}
BUILD_PROFILE=${BUILD_PROFILE:-production}
PREFIX=saga$$
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SIM=process

case "$MODE" in sqlite | postgres | all | kill-sqlite | kill-postgres) ;;
    *) echo "usage: $0 [sqlite|postgres|all|kill-sqlite|kill-postgres]" >&2; exit 2 ;;
esac

KEY=fp_bench_0123456789abcdef
export BENCH_SIGNING_SECRET=${BENCH_SIGNING_SECRET:-bench-signing-secret}
# The simulator's secret key and the admin token: made here, handed over by
# the environment.
export BENCH_PG_SECRET_KEY="test_sk_bench_$$_$RANDOM"
ADMIN_TOKEN="bench-admin-$$-$RANDOM$RANDOM"
unset RUST_BACKTRACE
export RUST_LOG=${BENCH_RUST_LOG:-warn}

WORK=$(mktemp -d /tmp/fluxpay-bench-saga.XXXXXX)
chmod 755 "$WORK"
# Configs and databases apart: the host watches its config's directory.
CFG=$WORK/cfg DATA=$WORK/data
mkdir -p "$CFG" "$DATA"
HOST_PID="" SIM_PID="" PG_DATA="" LG_PID=""
SIM_URL=http://127.0.0.1:$SIM_PORT
HOST_URL=http://127.0.0.1:$PORT

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

cleanup() {
    set +e
    for pid in $LG_PID $HOST_PID $SIM_PID; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1
    fi
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK (databases, logs)"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_binaries

# bench/payments.yaml with absolute module paths, the simulator's port, the
# service timeout, and extra database keys.
config() { # <file> <service timeout s> [extra database keys…]
    local file=$1 timeout=$2; shift 2
    sed -e "s#\.\./target/#$REPO/target/#g" -e "s#base_url: http://127.0.0.1:[0-9]*#base_url: $SIM_URL#" \
        -e "s#service_timeout_s: [0-9]*#service_timeout_s: $timeout#" \
        "$REPO/bench/payments.yaml" > "$file"
    grep -q "service_timeout_s: $timeout\$" "$file" || { echo "no service_timeout_s in $file" >&2; exit 1; }
    for line in "$@"; do
        sed -i "s#^database:\$#database:\n  $line#" "$file"
    done
}

# The host with the admin API on (for GET /admin/v1/sagas); its log is
# appended to, so a restart after a kill keeps the first run's lines.
start_host() { # <config> <database url>
    FLUXPAY_DATABASE_URL=$2 FLUXPAY_LISTEN=127.0.0.1:$PORT FLUXPAY_ADMIN_TOKEN=$ADMIN_TOKEN \
        "$HOST_BIN" serve --config "$1" >> "$WORK/host.log" 2>&1 &
    HOST_PID=$!
    wait_for "$HOST_URL/health/ready" "$HOST_PID" "$WORK/host.log" "fluxpay-host serve"
}

# The generator with the tenant's key (the secret through the environment).
LG=(env LOADGEN_SECRET="$BENCH_SIGNING_SECRET" "$LOADGEN_BIN" --url "$HOST_URL"
    --key "$KEY" --prefix "$PREFIX" --customers "$CUSTOMERS" --threads "$LOADGEN_THREADS"
    --saga --pg-sim-url "$SIM_URL")

# SQL on the benchmark's database: sqlite3 on the file, or psql.
DB_SQLITE=""
sql() { # <query>
    if [ -n "$DB_SQLITE" ]; then
        sqlite3 -separator ' ' "$DB_SQLITE" "$1"
    else
        psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d fluxpay -qAt -F ' ' -c "$1"
    fi
}

# What the database says after a run: sagas by state, and orders holding
# more than one payment that took money (a duplicate payment).
db_check() {
    echo "  sagas by state: $(sql "SELECT state, count(*) FROM sagas WHERE tenant_id = 'bench' GROUP BY state ORDER BY state" | paste -sd, -)"
    local dup
    dup=$(sql "SELECT count(*) FROM (SELECT order_id FROM payments WHERE tenant_id = 'bench' \
        AND status IN ('APPROVED', 'CONFIRMED') GROUP BY order_id HAVING count(*) > 1) d")
    echo "  orders with more than one approved/confirmed payment: $dup"
    DUPLICATES=$dup
}

# Saga states that are not terminal.
OPEN_STATES="RUNNING WAITING_FOR_SERVICE COMPLETING COMPENSATING"

# Sagas per open state, "STATE=N …" ('?' when the admin API did not
# answer; 1000 means at least 1000), and their total in OPEN.
open_sagas() {
    local state n out=""
    OPEN=0
    for state in $OPEN_STATES; do
        n=$(curl -fsS -H "Authorization: Bearer $ADMIN_TOKEN" \
            "$HOST_URL/admin/v1/sagas?tenant=bench&state=$state&limit=1000" \
            | jq '.result.sagas | length') || n='?'
        out="$out $state=$n"
        [ "$n" = '?' ] || OPEN=$((OPEN + n))
    done
    echo "${out# }"
}

# One measured run.
run_one() { # <label> <latency> <concurrency>
    local label=$1 lat=$2 c=$3 min max n host0 sim0 pg0 host1 sim1 pg1 gen t0 t1 busy0 busy1 steal0 steal1 result
    if [[ $lat == *-* ]]; then min=${lat%-*} max=${lat#*-}; else min=$lat max=$lat; fi
    curl -fsS -X PUT "$SIM_URL/sim/v1/faults" -H 'Content-Type: application/json' \
        -d "{\"latencyMs\":[$min,$max],\"outage\":false,\"slowAnswerMs\":3000}" >/dev/null
    say "$label: PG latency [$min, $max] ms, concurrency $c"
    facts
    thread_cpu "$HOST_PID" > "$WORK/threads.0"
    t0=$(date +%s%3N)
    read -r busy0 steal0 <<< "$(machine_cpu)"
    host0=$(cpu_ms "$HOST_PID"); sim0=$(cpu_ms "$SIM_PID"); pg0=$(pg_cpu_ms)
    # A failed run (an unexpected answer, books that differ) is reported,
    # not fatal.
    /usr/bin/time -f "%U %S" -o "$WORK/loadgen.time" "${LG[@]}" --skip-seed \
        --concurrency "$c" --duration "$DURATION" --warmup "$WARMUP" | tee "$WORK/loadgen.out" || true
    host1=$(cpu_ms "$HOST_PID"); sim1=$(cpu_ms "$SIM_PID"); pg1=$(pg_cpu_ms)
    read -r busy1 steal1 <<< "$(machine_cpu)"
    thread_cpu "$HOST_PID" > "$WORK/threads.1"
    t1=$(date +%s%3N)
    result=$(grep '^RESULT ' "$WORK/loadgen.out" | cut -d' ' -f2-) || result='{}'
    # Orders completed including the warm-up: CPU was read over all of it.
    n=$(jq '.books.completedAll // 0' <<< "$result")
    [ "$n" -gt 0 ] || n=1
    gen=$(tail -n 1 "$WORK/loadgen.time" | awk -v n="$n" '{ printf "%d", ($1 + $2) * 1000000 / n }')
    local host_us=$(( (host1 - host0) * 1000 / n )) sim_us=$(( (sim1 - sim0) * 1000 / n )) pg_us=$(( (pg1 - pg0) * 1000 / n ))
    echo "  CPU per completed order: host $host_us µs, simulator $sim_us µs$([ -n "$PG_DATA" ] && echo ", PostgreSQL $pg_us µs"), generator $gen µs (over $n orders incl. warm-up)"
    echo "  host CPU by thread:"
    thread_report "$WORK/threads.0" "$WORK/threads.1" "$n" "$((t1 - t0))" order
    local ours=$(( (host1 - host0) + (sim1 - sim0) + (pg1 - pg0) + gen * n / 1000 ))
    awk -v wall="$((t1 - t0))" -v busy="$((busy1 - busy0))" -v steal="$((steal1 - steal0))" -v ours="$ours" \
        -v h="$((host1 - host0))" -v s="$((sim1 - sim0))" -v p="$((pg1 - pg0))" -v g="$((gen * n / 1000))" \
        'BEGIN { printf "  machine: %.2f of %d cores busy (host %.2f, simulator %.2f, PostgreSQL %.2f, generator %.2f, anything else %.2f), %.2f stolen\n",
                 busy / wall, '"$(nproc)"', h / wall, s / wall, p / wall, g / wall, (busy - ours) / wall, steal / wall }'
    db_check
    jq -c --arg run "$label" --arg lat "$lat" --argjson host "$host_us" --argjson pg "$pg_us" \
        --argjson sim "$sim_us" --argjson gen "$gen" --argjson dup "$DUPLICATES" \
        --arg db "$([ -n "$PG_DATA" ] && echo postgres || echo sqlite)" \
        '{"label": $run, "latency": $lat, "db": $db, "hostCpuUs": $host, "pgCpuUs": $pg, "simCpuUs": $sim,
          "genCpuUs": $gen, "duplicates": $dup} + .' <<< "$result" >> "$WORK/results.jsonl"
}

runs() { # <label>
    for lat in $LATENCIES; do
        for c in $CONCURRENCY; do
            run_one "$1" "$lat" "$c"
        done
    done
}

# SIGKILL under load, then restart: seconds until every saga is terminal.
kill_run() { # <label> <config> <database url>
    local c=${CONCURRENCY%% *} t_kill t_up t_done at_restart books completed net
    curl -fsS -X PUT "$SIM_URL/sim/v1/faults" -H 'Content-Type: application/json' \
        -d '{"latencyMs":[0,0],"outage":false,"slowAnswerMs":3000}' >/dev/null
    say "$1: kill -9 under load after $KILL_AFTER s (concurrency $c, service_timeout_s $SERVICE_TIMEOUT_S)"
    "${LG[@]}" --skip-seed --concurrency "$c" --warmup 0 --duration "$((KILL_AFTER + 60))" \
        > "$WORK/loadgen.out" 2>&1 &
    LG_PID=$!
    sleep "$KILL_AFTER"
    echo "  just before the kill: $(open_sagas)"
    kill -9 "$HOST_PID"
    t_kill=$(date +%s%3N)
    wait "$HOST_PID" 2>/dev/null || true
    HOST_PID=""
    stop LG_PID
    start_host "$2" "$3"
    t_up=$(date +%s%3N)
    at_restart=$(open_sagas)
    echo "  restarted and ready $(( t_up - t_kill )) ms after the kill; open sagas then: $at_restart"
    t_done=""
    while [ $(( $(date +%s%3N) - t_kill )) -lt $((RECOVERY_LIMIT * 1000)) ]; do
        open_sagas > "$WORK/open"
        if [ "$OPEN" = 0 ] && ! grep -q '?' "$WORK/open"; then t_done=$(date +%s%3N); break; fi
        sleep 0.2
    done
    if [ -n "$t_done" ]; then
        echo "  RECOVERED: no saga open $(awk -v ms="$((t_done - t_kill))" 'BEGIN { printf "%.1f", ms / 1000 }') s after the kill ($(awk -v ms="$((t_done - t_up))" 'BEGIN { printf "%.1f", ms / 1000 }') s after the restart was ready)"
    else
        echo "  NOT RECOVERED within $RECOVERY_LIMIT s of the kill: $(cat "$WORK/open")"
    fi
    db_check
    books=$(curl -fsS "$SIM_URL/sim/v1/ledger")
    completed=$(sql "SELECT count(*) FROM sagas WHERE tenant_id = 'bench' AND state = 'COMPLETED'")
    # Net approved, and captured, must both be the COMPLETED orders' (nothing
    # left held on a card, nothing captured twice).
    net=$(jq '"\(.approvedAmount - .cancelledAmount) \(.capturedAmount) \(.heldAmount)"' -r <<< "$books")
    local want="$((completed * 1000)) $((completed * 1000)) 0"
    echo "  PG simulator: $(jq -c . <<< "$books"); net approved, captured, held: $net for $completed COMPLETED orders of 1000: $(
        [ "$net" = "$want" ] && echo equal || echo DIFFER)"
    local recovered="NOT within $RECOVERY_LIMIT s"
    [ -n "$t_done" ] && recovered=$(awk -v ms="$((t_done - t_kill))" 'BEGIN { printf "%.1f s", ms / 1000 }')
    echo "| $1 | $c | $(( t_up - t_kill )) ms | $recovered | $at_restart | $DUPLICATES | $([ "$net" = "$want" ] && echo equal || echo DIFFER) |" >> "$WORK/kills"
}

mkdir -p "$REPO/target/bench"
: > "$WORK/results.jsonl"
: > "$WORK/kills"

backend() { # sqlite|postgres <kill?>
    local cfg url timeout=600
    [ "$2" = kill ] && timeout=$SERVICE_TIMEOUT_S
    if [ "$1" = sqlite ]; then
        say "SQLite (synchronous=$SQLITE_SYNC, WAL, one writer)"
        cfg=$CFG/sqlite.yaml
        config "$cfg" "$timeout" "sqlite_synchronous: $SQLITE_SYNC" "max_connections: 16"
        DB_SQLITE=$DATA/sqlite.db
        url="sqlite://$DB_SQLITE"
    else
        say "PostgreSQL 15: private durable cluster on 127.0.0.1:$PG_PORT (pool $PG_POOL)"
        [ -n "$PG_DATA" ] || start_pg_cluster
        psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt -d postgres -c "CREATE DATABASE fluxpay"
        cfg=$CFG/pg.yaml
        config "$cfg" "$timeout" "max_connections: $PG_POOL"
        DB_SQLITE=""
        url="postgres://postgres@127.0.0.1:$PG_PORT/fluxpay"
    fi
    start_sim
    start_host "$cfg" "$url"
    "${LG[@]}" --seed-only --concurrency 32
    if [ "$2" = kill ]; then kill_run "$1" "$cfg" "$url"; else runs "$1"; fi
    stop HOST_PID
    stop SIM_PID
}

case "$MODE" in
    sqlite | postgres) backend "$MODE" measure ;;
    all) backend sqlite measure; backend postgres measure ;;
    kill-sqlite) backend sqlite kill ;;
    kill-postgres) backend postgres kill ;;
esac

if [ -s "$WORK/kills" ]; then
    say "kill -9 recovery (service_timeout_s $SERVICE_TIMEOUT_S, kill after $KILL_AFTER s)"
    {
        echo "| backend | clients | restart ready | all sagas terminal after the kill | open at restart | duplicates | sim net approved & captured vs COMPLETED |"
        echo "|---|---|---|---|---|---|---|"
        cat "$WORK/kills"
    } | tee "$REPO/target/bench/saga-kill.txt"
fi
if [ -s "$WORK/results.jsonl" ]; then
    say "table"
    {
        echo "| backend | PG latency | clients | completed orders/s | orders p95 / p99 ms | confirm p95 / p99 ms | completed p95 / p99 ms | checkout (sim) p95 / p99 ms | host CPU/order | DB CPU/order | sim approvals / completed | duplicates | unexpected answers | targets |"
        echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        jq -r --argjson rate "$TARGET_RATE" '
            def r: (. * 10 | round) / 10;
            def pp(c): "\(.callsMs[c].p95 // 0 | r) / \(.callsMs[c].p99 // 0 | r)";
            def ok: ((.completedPerSecond // 0) >= $rate)
                and ([.callsMs.orders, .callsMs.confirm, .callsMs.completed]
                     | all(. != null and .p95 < 200 and .p99 < 500))
                and ((.errors // {}) | length) == 0 and (.books.equal // false) and .duplicates == 0;
            "| \(.db) | \(.latency) ms | \(.concurrency // "-") | \((.completedPerSecond // 0) | floor) | \(pp("orders")) | \(pp("confirm")) | \(pp("completed")) | \(pp("checkout")) | \(.hostCpuUs) µs | \(if .db == "postgres" then "\(.pgCpuUs) µs" else "in host" end) | \(.books.simApprovals // "-") / \(.books.completedAll // "-") | \(.duplicates) | \(if ((.errors // {}) | length) == 0 then "none" else (.errors | to_entries | map("\(.key) × \(.value)") | join(", ")) end) | \(if ok then "met" else "MISSED" end) |"' \
            "$WORK/results.jsonl"
    } | tee "$REPO/target/bench/saga-table.txt"
fi

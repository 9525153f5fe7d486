#!/usr/bin/env bash
# End-to-end benchmark of POST /api/v1/payments/confirm (issue 15, item 9):
# the real binary against the PG simulator, at each simulated PG latency.
#
#   bench/payments_confirm.sh [sqlite|postgres|all]  (default: all)
#
# Builds BUILD_PROFILE, then for each backend starts the PG simulator
# (`fluxpay-host pg-sim`, a process of its own, so the host's CPU is the
# host's alone) and `fluxpay-host serve` with bench/payments.yaml (the
# signed tenant `bench`, orders priced by the catalog policy, its gateway
# the simulator) on 127.0.0.1, seeds CUSTOMERS customers, and per latency:
#   1. sets the simulator's latency (PUT /sim/v1/faults);
#   2. prepares ORDERS orders (POST /api/v1/orders, then the simulator's
#      checkout for each) with host/examples/loadgen/ --orders-out —
#      outside the measured window;
#   3. drives only confirms of those orders (loadgen --orders-in) at each
#      CONCURRENCY for WARMUP + DURATION seconds, reading the CPU time of
#      the host (and of each of its threads), the simulator, PostgreSQL,
#      the generator and the whole machine around it (the machine is
#      shared: what else ran is printed), and the host's warnings.
# Should the prepared orders run out, the generator makes further orders
# inside its loop (it says how many; the run is then not confirms alone):
# ORDERS is sized from the latency so that it does not happen.
# The generator checks the simulator's books: its approvals during the run
# must equal the confirms answered 201 — no payment taken twice, none taken
# without FluxPay recording it. Per run: confirms/s, latency p50/p95/p99,
# CPU µs per payment; at the end a Markdown table, also written to
# target/bench/payments_confirm-table.txt (raw lines: …-summary.txt).
#   sqlite   — a fresh temporary SQLite file (synchronous=SQLITE_SYNC)
#   postgres — a private, durable PostgreSQL 15 cluster (fsync=on,
#              synchronous_commit=on) started on 127.0.0.1:$PG_PORT
# Every process it starts is stopped on exit, by PID.
#
# Knobs (environment): LATENCIES ("0 50 200": each N is [N, N] ms, MIN-MAX a
# uniform range), CONCURRENCY ("256"), DURATION (s, 15), WARMUP (s, 3),
# CUSTOMERS (1000), ORDERS (per run; default: what the run could confirm at
# most — CONCURRENCY ÷ the minimum latency, capped at MAX_RATE (3000)
# confirms/s — over WARMUP + DURATION, plus 20 %), PORT (18080), SIM_PORT
# (18090), PG_PORT (54329), SQLITE_SYNC (full), PG_POOL (32),
# LOADGEN_THREADS (1), SIM (process; embedded: the simulator `serve` runs
# in-process, whose CPU then counts as the host's), PROFILE (1: `perf
# record` the host during the first run: target/bench/perf-payments.*), BUILD_PROFILE
# (production), SKIP_BUILD (1: use the binaries already in
# target/<profile>), HOST_BIN (the binary to run), KEEP_WORK (1: keep the
# temporary directory — databases, logs — and print its path).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-all}
LATENCIES=${LATENCIES:-0 50 200}
CONCURRENCY=${CONCURRENCY:-256}
DURATION=${DURATION:-15}
WARMUP=${WARMUP:-3}
CUSTOMERS=${CUSTOMERS:-1000}
ORDERS=${ORDERS:-}
MAX_RATE=${MAX_RATE:-3000}
PORT=${PORT:-18080}
SIM_PORT=${SIM_PORT:-18090}
PG_PORT=${PG_PORT:-54329}
SQLITE_SYNC=${SQLITE_SYNC:-full}
PG_POOL=${PG_POOL:-32}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
SIM=${SIM:-process}
PROFILE=${PROFILE:-0}
BUILD_PROFILE=${BUILD_PROFILE:-production}
PREFIX=pay$$
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

case "$MODE" in sqlite | postgres | all) ;; *) echo "usage: $0 [sqlite|postgres|all]" >&2; exit 2 ;; esac
case "$SIM" in process | embedded) ;; *) echo "SIM must be process or embedded" >&2; exit 2 ;; esac

KEY=fp_bench_0123456789abcdef
export BENCH_SIGNING_SECRET=${BENCH_SIGNING_SECRET:-bench-signing-secret}
# The simulator's secret key: made here, handed to both by the environment.
export BENCH_PG_SECRET_KEY="test_sk_bench_$$_$RANDOM"
# As bench/credits_use.sh: no backtrace per error, no request logs.
unset RUST_BACKTRACE
export RUST_LOG=${BENCH_RUST_LOG:-warn}

WORK=$(mktemp -d /tmp/fluxpay-bench-pay.XXXXXX)
chmod 755 "$WORK"
# Configs and databases apart: the host watches its config's directory.
CFG=$WORK/cfg DATA=$WORK/data
mkdir -p "$CFG" "$DATA"
HOST_PID="" SIM_PID="" PG_DATA="" PERF_PID=""
SIM_URL=http://127.0.0.1:$SIM_PORT

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

cleanup() {
    set +e
    [ -n "$PERF_PID" ] && kill -INT "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
    for pid in $HOST_PID $SIM_PID; do
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

# bench/payments.yaml with absolute module paths, the simulator's port, and
# extra database keys; with SIM=embedded, the in-process simulator instead.
config() { # <file> [extra database keys…]
    local file=$1; shift
    sed -e "s#\.\./target/#$REPO/target/#g" -e "s#base_url: http://127.0.0.1:[0-9]*#base_url: $SIM_URL#" \
        "$REPO/bench/payments.yaml" > "$file"
    for line in "$@"; do
        sed -i "s#^database:\$#database:\n  $line#" "$file"
    done
    if [ "$SIM" = embedded ]; then
        sed -i -e 's#kind: toss#kind: simulator#' -e '/base_url:/d' -e '/secret_env: BENCH_PG_SECRET_KEY/d' "$file"
        printf '\npg_simulator: { listen: "127.0.0.1:%s" }\n' "$SIM_PORT" >> "$file"
    fi
}

start_host() { # <config> <database url>
    FLUXPAY_DATABASE_URL=$2 FLUXPAY_LISTEN=127.0.0.1:$PORT \
        "$HOST_BIN" serve --config "$1" > "$WORK/host.log" 2>&1 &
    HOST_PID=$!
    wait_for "http://127.0.0.1:$PORT/health/ready" "$HOST_PID" "$WORK/host.log" "fluxpay-host serve"
    [ "$SIM" = embedded ] && wait_for "$SIM_URL/sim/v1/ledger" "$HOST_PID" "$WORK/host.log" "the embedded simulator"
    return 0
}

# The generator with the tenant's key (the secret through the environment).
LG=(env LOADGEN_SECRET="$BENCH_SIGNING_SECRET" "$LOADGEN_BIN" --url "http://127.0.0.1:$PORT"
    --key "$KEY" --prefix "$PREFIX" --customers "$CUSTOMERS" --threads "$LOADGEN_THREADS"
    --payments --pg-sim-url "$SIM_URL")

# `N` → "N N", `MIN-MAX` → "MIN MAX".
latency_range() { if [[ $1 == *-* ]]; then echo "${1%-*} ${1#*-}"; else echo "$1 $1"; fi; }

orders_for() { # <min latency ms> <concurrency>
    if [ -n "$ORDERS" ]; then echo "$ORDERS"; return; fi
    awk -v l="$1" -v c="$2" -v cap="$MAX_RATE" -v s="$((WARMUP + DURATION))" \
        'BEGIN { r = l > 0 ? c * 1000 / l : cap; if (r > cap) r = cap; printf "%d", r * s * 1.2 + 100 }'
}

# One measured run: prepare the orders, then confirm them.
run_one() { # <label> <latency> <concurrency>
    local label=$1 lat=$2 c=$3 min max n host0 sim0 pg0 host1 sim1 pg1 gen warn0 warn1 result t0 t1 busy0 busy1 steal0 steal1
    read -r min max <<< "$(latency_range "$lat")"
    curl -fsS -X PUT "$SIM_URL/sim/v1/faults" -H 'Content-Type: application/json' \
        -d "{\"latencyMs\":[$min,$max],\"outage\":false,\"slowAnswerMs\":3000}" >/dev/null
    say "$label: PG latency [$min, $max] ms, concurrency $c"
    "${LG[@]}" --skip-seed --concurrency "$c" --orders "$(orders_for "$min" "$c")" --orders-out "$WORK/orders"
    facts
    if [ "$PROFILE" = 1 ] && [ -z "$PERF_PID" ] && command -v perf >/dev/null; then
        perf record -F 499 --call-graph "${PERF_CALL_GRAPH:-fp}" -p "$HOST_PID" -o "$WORK/perf.data" >/dev/null 2>&1 &
        PERF_PID=$!
    fi
    warn0=$(wc -l < "$WORK/host.log")
    thread_cpu "$HOST_PID" > "$WORK/threads.0"
    t0=$(date +%s%3N)
    read -r busy0 steal0 <<< "$(machine_cpu)"
    host0=$(cpu_ms "$HOST_PID"); sim0=$(cpu_ms "$SIM_PID"); pg0=$(pg_cpu_ms)
    # A failed run (non-2xx, books that differ) is reported, not fatal.
    /usr/bin/time -f "%U %S" -o "$WORK/loadgen.time" "${LG[@]}" --skip-seed --orders-in "$WORK/orders" \
        --concurrency "$c" --duration "$DURATION" --warmup "$WARMUP" | tee "$WORK/loadgen.out" || true
    host1=$(cpu_ms "$HOST_PID"); sim1=$(cpu_ms "$SIM_PID"); pg1=$(pg_cpu_ms)
    read -r busy1 steal1 <<< "$(machine_cpu)"
    thread_cpu "$HOST_PID" > "$WORK/threads.1"
    t1=$(date +%s%3N)
    warn1=$(wc -l < "$WORK/host.log")
    if [ -n "$PERF_PID" ]; then
        kill -INT "$PERF_PID"; wait "$PERF_PID" || true; PERF_PID=""
        perf report -i "$WORK/perf.data" --no-children --sort dso,symbol -g none \
            --percent-limit 0.4 --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 \
            > "$REPO/target/bench/perf-payments.txt" || true
        cp "$WORK/perf.data" "$REPO/target/bench/perf-payments.data"
        echo "perf profile: target/bench/perf-payments.txt (and .data)"
        PROFILE=done
    fi
    # Confirms including the warm-up: CPU was measured over the whole run.
    n=$(grep -oP '^payments/confirm: \K[0-9]+' "$WORK/loadgen.out" || echo 0)
    n=$((n + $(grep -oP '\(\K[0-9]+(?= warm-up)' "$WORK/loadgen.out" || echo 0)))
    [ "$n" -gt 0 ] || n=1
    # The last line: a failed run's file starts with "Command exited with…".
    gen=$(tail -n 1 "$WORK/loadgen.time" | awk -v n="$n" '{ printf "%d", ($1 + $2) * 1000000 / n }')
    local cpu="CPU per payment: host $(( (host1 - host0) * 1000 / n )) µs"
    [ "$SIM" = process ] && cpu="$cpu, simulator $(( (sim1 - sim0) * 1000 / n )) µs"
    [ -n "$PG_DATA" ] && cpu="$cpu, PostgreSQL $(( (pg1 - pg0) * 1000 / n )) µs"
    cpu="$cpu, generator $gen µs (over $n confirms incl. warm-up)"
    echo "  $cpu"
    echo "  host CPU by thread:"
    thread_report "$WORK/threads.0" "$WORK/threads.1" "$n" "$((t1 - t0))"
    # What else ran: this machine is shared, and a neighbour's compile
    # takes the same cores.
    local ours=$(( (host1 - host0) + (sim1 - sim0) + (pg1 - pg0) + gen * n / 1000 ))
    awk -v wall="$((t1 - t0))" -v busy="$((busy1 - busy0))" -v steal="$((steal1 - steal0))" -v ours="$ours" \
        'BEGIN { printf "  machine: %.2f of %d cores busy (%.2f host + simulator + PostgreSQL + generator, %.2f anything else), %.2f stolen\n",
                 busy / wall, '"$(nproc)"', ours / wall, (busy - ours) / wall, steal / wall }'
    echo "  host log: $((warn1 - warn0)) lines at warn or above during the run"
    # Colours and timestamps off, so that repeats count as one line.
    sed -n "$((warn0 + 1)),\$p" "$WORK/host.log" | sed 's/\x1b\[[0-9;]*m//g' | cut -d' ' -f2- | cut -c1-300 \
        | sort | uniq -c | sort -rn | head -5 | sed 's/^/    /'
    echo "$label lat=$lat c=$c $(grep '^RESULT ' "$WORK/loadgen.out" | cut -d' ' -f2-) $cpu" >> "$WORK/summary"
    result=$(grep '^RESULT ' "$WORK/loadgen.out" | cut -d' ' -f2-)
    jq -c --arg run "$label" --arg lat "$lat" --argjson c "$c" \
        --argjson host "$(( (host1 - host0) * 1000 / n ))" --argjson confirms "$n" \
        '{"label": $run, "latency": $lat, "concurrency": $c, "hostCpuUsPerPayment": $host, "confirms": $confirms} + .' \
        <<< "${result:-{\}}" >> "$WORK/results.jsonl"
}

runs() { # <label>
    for lat in $LATENCIES; do
        for c in $CONCURRENCY; do
            run_one "$1" "$lat" "$c"
        done
    done
}

mkdir -p "$REPO/target/bench"
: > "$WORK/summary"
: > "$WORK/results.jsonl"

if [ "$MODE" = sqlite ] || [ "$MODE" = all ]; then
    say "SQLite (synchronous=$SQLITE_SYNC, WAL, one writer), simulator: $SIM"
    config "$CFG/sqlite.yaml" "sqlite_synchronous: $SQLITE_SYNC" "max_connections: 16"
    start_sim
    start_host "$CFG/sqlite.yaml" "sqlite://$DATA/sqlite.db"
    "${LG[@]}" --seed-only --concurrency 32
    runs "sqlite-$SQLITE_SYNC"
    stop HOST_PID
    stop SIM_PID
fi

if [ "$MODE" = postgres ] || [ "$MODE" = all ]; then
    say "PostgreSQL 15: private durable cluster on 127.0.0.1:$PG_PORT"
    start_pg_cluster
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt -d postgres -c "CREATE DATABASE fluxpay"
    say "fluxpay-host on PostgreSQL (pool $PG_POOL), simulator: $SIM"
    config "$CFG/pg.yaml" "max_connections: $PG_POOL"
    start_sim
    start_host "$CFG/pg.yaml" "postgres://postgres@127.0.0.1:$PG_PORT/fluxpay"
    "${LG[@]}" --seed-only --concurrency 32
    runs "postgres"
    stop HOST_PID
    stop SIM_PID
fi

say "summary"
cat "$WORK/summary" | tee "$REPO/target/bench/payments_confirm-summary.txt"
say "table"
echo "| run | PG latency | clients | confirms/s | p95 ms | p99 ms | host CPU/payment | sim approvals / 2xx confirms | non-2xx |"
echo "|---|---|---|---|---|---|---|---|---|"
jq -r '"| \(.label) | \(.latency) ms | \(.concurrency) | \((.rps // 0) | floor) | \((((.latencyMs.p95 // 0) * 10) | round) / 10) | \((((.latencyMs.p99 // 0) * 10) | round) / 10) | \(.hostCpuUsPerPayment) µs | \(.payments.simApprovals // "-") / \(.payments.confirmed // "-") | \(if (.errors // {} | length) == 0 then "none" else (.errors | to_entries | map("\(.key) × \(.value)") | join(", ")) end) |"' \
    "$WORK/results.jsonl" | tee "$REPO/target/bench/payments_confirm-table.txt"

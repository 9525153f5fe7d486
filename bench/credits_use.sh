#!/usr/bin/env bash
# End-to-end benchmark of POST /api/v1/credits/use (BENCHMARKS.md,
# "credits/use end to end").
#
#   bench/credits_use.sh [sqlite|postgres|pgbench|all|isolation|usage]  (default: all)
#
# Builds BUILD_PROFILE, then for each backend starts `fluxpay-host serve` with
# bench/tenants.yaml (one signed tenant, `bench`) on 127.0.0.1, seeds
# customers and drives signed credits/use requests with host/examples/loadgen/:
#   sqlite   — a fresh temporary SQLite file, once per SQLITE_SYNC mode
#   postgres — a private, durable PostgreSQL 15 cluster (fsync=on,
#              synchronous_commit=on) started on 127.0.0.1:$PG_PORT
#   pgbench  — bench/pgbench_credit_use.sql (the same statements) against
#              the same cluster, at PGBENCH_CLIENTS client counts
#   isolation — tenant isolation in time (BENCHMARKS.md, "Tenant isolation"):
#              on one durable SQLite host, tenant B (`bench`) runs the
#              credits/use load alone and then while tenant A (`noisy`) calls
#              usage/close and credits/use through the hostile fixture's
#              `slow` policy (SPIN iterations, most of its 50 ms deadline),
#              A_RATE calls per second on each of the two, ROUNDS times
#   usage    — usage ingest: POST /api/v1/usage with USAGE_BATCH (1000) events
#              per request, random event ids, at each CONCURRENCY, on a
#              durable SQLite file (events/s in the summary)
# Every process it starts is stopped on exit, by PID.
#
# Knobs (environment): DURATION (s, 20), WARMUP (s, 3), CONCURRENCY ("32"),
# CUSTOMERS (10000), HOT ("" or "K:P" — P % of the traffic on K customers,
# run in addition), PORT (18080), PG_PORT (54329), SQLITE_SYNC ("full normal";
# empty: no SQLite runs),
# PG_POOL (host pool size on PostgreSQL, 32), PGBENCH_CLIENTS ("8 32"),
# LOADGEN_THREADS (1), PROFILE (1: `perf record` the host during one run;
# PERF_CALL_GRAPH=dwarf for stacks through code built without frame pointers),
# ROUNDS (PostgreSQL: host and pgbench runs alternate this many times, 1),
# BUILD_PROFILE (cargo profile: production, the LTO build a deployment runs,
# or release), SKIP_BUILD (1: use the binaries already in target/<profile>),
# HOST_BINS ("A B": an A/B on SQLite — each round runs every binary in turn,
# each on a fresh database; ROUNDS rounds), HOST_BIN (the binary to run),
# KAFKA_BROKERS (host:port: the host also runs the outbox relay to that
# broker, topics `bench<pid>.{type}` created with 6 partitions — the request
# path with the relay on, issue 17).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-all}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
CONCURRENCY=${CONCURRENCY:-32}
CUSTOMERS=${CUSTOMERS:-10000}
HOT=${HOT:-}
PORT=${PORT:-18080}
PG_PORT=${PG_PORT:-54329}
SQLITE_SYNC=${SQLITE_SYNC-full normal}
PG_POOL=${PG_POOL:-32}
PGBENCH_CLIENTS=${PGBENCH_CLIENTS:-8 32}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}
PROFILE=${PROFILE:-0}
BUILD_PROFILE=${BUILD_PROFILE:-production}
ROUNDS=${ROUNDS:-1}
A_RATE=${A_RATE:-2}
SPIN=${SPIN:-25000000}
PREFIX=run$$
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

KEY=fp_bench_0123456789abcdef
export BENCH_SIGNING_SECRET=${BENCH_SIGNING_SECRET:-bench-signing-secret}
# A backtrace per error costs µs on hot paths (NOTES-services.md); request
# logs would measure the terminal. Both off, as stated in BENCHMARKS.md.
unset RUST_BACKTRACE
export RUST_LOG=${BENCH_RUST_LOG:-warn}

WORK=$(mktemp -d /tmp/fluxpay-bench.XXXXXX)
chmod 755 "$WORK"
# Configs and databases in separate directories: the host watches its
# config's directory for hot reload, and database writes there would wake it.
CFG=$WORK/cfg DATA=$WORK/data
mkdir -p "$CFG" "$DATA"
HOST_PID=""
PG_DATA=""
PERF_PID=""
NOISY_PIDS=""

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

cleanup() {
    set +e
    [ -n "$NOISY_PIDS" ] && kill $NOISY_PIDS 2>/dev/null
    [ -n "$PERF_PID" ] && kill -INT "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
    if [ -n "$HOST_PID" ]; then
        kill "$HOST_PID" 2>/dev/null
        wait "$HOST_PID" 2>/dev/null
    fi
    if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_binaries

# bench/tenants.yaml with absolute module paths, so the copy can live in $WORK.
config() { # <file> [extra database keys…]
    local file=$1; shift
    sed "s#\.\./target/#$REPO/target/#g" "$REPO/bench/tenants.yaml" > "$file"
    for line in "$@"; do
        sed -i "s#^database:\$#database:\n  $line#" "$file"
    done
    if [ -n "${KAFKA_BROKERS:-}" ]; then
        printf 'kafka:\n  brokers: "%s"\n  topic_template: "bench%s.{type}"\n  create_topics: { partitions: 6, replication: 1 }\n' \
            "$KAFKA_BROKERS" "$$" >> "$file"
    fi
}

start_host() { # <config> <database url>
    FLUXPAY_DATABASE_URL=$2 FLUXPAY_LISTEN=127.0.0.1:$PORT \
        "$HOST_BIN" serve --config "$1" > "$WORK/host.log" 2>&1 &
    HOST_PID=$!
    for _ in $(seq 1 300); do
        if curl -fsS "http://127.0.0.1:$PORT/health/ready" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$HOST_PID" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "fluxpay-host did not become ready:" >&2
    cat "$WORK/host.log" >&2
    exit 1
}

stop_host() {
    kill "$HOST_PID" 2>/dev/null || true
    wait "$HOST_PID" 2>/dev/null || true
    HOST_PID=""
}

loadgen() { # <label> <extra loadgen args…>
    local label=$1; shift
    local host0 pg0 host1 pg1 n gen
    host0=$(cpu_ms "$HOST_PID"); pg0=$(pg_cpu_ms)
    LOADGEN_SECRET=$BENCH_SIGNING_SECRET /usr/bin/time -f "loadgen CPU: %U s user, %S s system" \
        -o "$WORK/loadgen.time" "$LOADGEN_BIN" \
        --url "http://127.0.0.1:$PORT" --key "$KEY" --threads "$LOADGEN_THREADS" "$@" \
        | tee "$WORK/loadgen.out"
    host1=$(cpu_ms "$HOST_PID"); pg1=$(pg_cpu_ms)
    # Requests including the warm-up: CPU was measured over the whole run.
    n=$(grep -oP '^(credits/use|usage): \K[0-9]+' "$WORK/loadgen.out")
    n=$((n + $(grep -oP '\(\K[0-9]+(?= warm-up)' "$WORK/loadgen.out")))
    gen=$(awk -v n="$n" '{ printf "%d", ($3 + $6) * 1000000 / (n > 0 ? n : 1) }' "$WORK/loadgen.time")
    echo "  CPU per request: host $(( (host1 - host0) * 1000 / (n > 0 ? n : 1) )) µs, PostgreSQL $(( (pg1 - pg0) * 1000 / (n > 0 ? n : 1) )) µs, generator $gen µs (over $n requests incl. warm-up)" \
        | tee -a "$WORK/loadgen.out"
    echo "$label $(grep '^RESULT ' "$WORK/loadgen.out" | cut -d' ' -f2-) $(grep 'CPU per request' "$WORK/loadgen.out")" >> "$WORK/summary"
}

# Seeds the host's customers (once per host).
seed() {
    LOADGEN_SECRET=$BENCH_SIGNING_SECRET "$LOADGEN_BIN" --url "http://127.0.0.1:$PORT" \
        --key "$KEY" --customers "$CUSTOMERS" --prefix "$PREFIX" --concurrency 32 --seed-only
}

# One measured run per concurrency (and the hot variant).
runs() { # <label prefix>
    for c in $CONCURRENCY; do
        facts
        if [ "$PROFILE" = 1 ] && [ -z "$PERF_PID" ] && command -v perf >/dev/null; then
            perf record -F 499 --call-graph "${PERF_CALL_GRAPH:-fp}" -p "$HOST_PID" -o "$WORK/perf.data" >/dev/null 2>&1 &
            PERF_PID=$!
        fi
        loadgen "$1 c=$c" --customers "$CUSTOMERS" --prefix "$PREFIX" --skip-seed \
            --concurrency "$c" --duration "$DURATION" --warmup "$WARMUP"
        if [ -n "$PERF_PID" ]; then
            kill -INT "$PERF_PID"; wait "$PERF_PID" || true; PERF_PID=""
            perf report -i "$WORK/perf.data" --no-children --sort dso,symbol -g none \
                --percent-limit 0.4 --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60 > "$REPO/target/bench/perf-${1%% *}.txt" || true
            cp "$WORK/perf.data" "$REPO/target/bench/perf-${1%% *}.data"
            echo "perf profile: target/bench/perf-${1%% *}.txt (and .data, for perf report/script)"
            PROFILE=done
        fi
        facts
    done
    if [ -n "$HOT" ]; then
        loadgen "$1 c=${CONCURRENCY%% *} hot=$HOT" --customers "$CUSTOMERS" --prefix "$PREFIX" \
            --skip-seed --concurrency "${CONCURRENCY%% *}" --duration "$DURATION" \
            --warmup "$WARMUP" --hot "${HOT%%:*}" --hot-percent "${HOT##*:}"
    fi
}

mkdir -p "$REPO/target/bench"
: > "$WORK/summary"

if [ "$MODE" = sqlite ] || [ "$MODE" = all ]; then
    SQLITE_ROUNDS=1
    [ -n "${HOST_BINS:-}" ] && SQLITE_ROUNDS=$ROUNDS
    for round in $(seq 1 "$SQLITE_ROUNDS"); do
        for bin in ${HOST_BINS:-$HOST_BIN}; do
            HOST_BIN=$bin
            tag=""
            [ -n "${HOST_BINS:-}" ] && tag=" r$round $(basename "$bin")"
            for sync in $SQLITE_SYNC; do
                say "SQLite (synchronous=$sync, WAL, one writer)$tag"
                config "$CFG/sqlite-$sync.yaml" "sqlite_synchronous: $sync" "max_connections: 16"
                rm -f "$DATA/sqlite-$sync.db"*
                start_host "$CFG/sqlite-$sync.yaml" "sqlite://$DATA/sqlite-$sync.db"
                seed
                runs "sqlite-$sync$tag"
                stop_host
            done
        done
    done
fi

# Tenant A of the isolation run: dev (unsigned), priced by the slow policy.
NOISY_KEY=fp_noisy_0123456789abcdef
noisy_tenant() {
    cat <<YAML
  noisy:
    currency: USD
    dev: true
    api_keys:
      - { id: noisy-1, sha256: $(printf %s "$NOISY_KEY" | sha256sum | cut -d' ' -f1) }
    pricing:
      credit: &slow
        module: $REPO/target/policies/fluxpay-fixture-hostile.wasm
        config: { behaviour: slow, spin: $SPIN }
        limits: { fuel: 4000000000, deadline_ms: 50 }
      metered: *slow
YAML
}

noisy_call() { # <method> <path> [body]: prints the HTTP status and the time taken
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X "$1" "http://127.0.0.1:$PORT$2" \
        -H "Authorization: Bearer $NOISY_KEY" -H 'Content-Type: application/json' \
        -H "Idempotency-Key: noisy-$RANDOM-$RANDOM-$RANDOM" ${3:+-d "$3"}
}

noisy_seed() {
    for c in n-use n-close; do noisy_call PUT "/api/v1/customers/$c" '{"attributes":{}}' >/dev/null; done
    noisy_call POST /api/v1/credits/charge '{"customerId":"n-use","credits":1000000000,"reason":"bench"}' >/dev/null
}

# A's two streams, A_RATE calls per second each, until noisy_stop.
noisy_start() {
    local pause base
    pause=$(awk -v r="$A_RATE" 'BEGIN { printf "%.3f", 1 / r }')
    : > "$WORK/noisy.log"
    ( while :; do
          noisy_call POST /api/v1/credits/use '{"customerId":"n-use","feature":"render","units":1}' | sed 's/^/use /' >> "$WORK/noisy.log"
          sleep "$pause"
      done ) &
    NOISY_PIDS="$!"
    # 10 ms periods from ~11 days ago on: each close is a new period, and
    # a later run's periods start after this one's.
    base=$(( $(date +%s%3N) - 1000000000 ))
    ( k=0; while :; do
          k=$((k + 1))
          noisy_call POST /api/v1/usage/close "{\"customerId\":\"n-close\",\"periodStart\":$((base + k * 10)),\"periodEnd\":$((base + k * 10 + 10))}" | sed 's/^/close /' >> "$WORK/noisy.log"
          sleep "$pause"
      done ) &
    NOISY_PIDS="$NOISY_PIDS $!"
}

noisy_stop() {
    # shellcheck disable=SC2086 # a list of PIDs
    kill $NOISY_PIDS 2>/dev/null || true
    # shellcheck disable=SC2086
    wait $NOISY_PIDS 2>/dev/null || true
    NOISY_PIDS=""
    # Per stream: calls by status, and their mean and slowest time.
    awk '{ n[$1" "$2]++; t[$1] += $3; c[$1]++; if ($3 > m[$1]) m[$1] = $3 }
         END { for (k in n) printf "  A %s: %d\n", k, n[k];
               for (s in c) printf "  A %s: mean %.1f ms, max %.1f ms\n", s, t[s] * 1000 / c[s], m[s] * 1000 }' \
        "$WORK/noisy.log" | sort | tee -a "$WORK/summary"
}

if [ "$MODE" = usage ]; then
    config "$CFG/usage.yaml" "sqlite_synchronous: full" "max_connections: 16"
    start_host "$CFG/usage.yaml" "sqlite://$DATA/usage.db"
    seed
    for round in $(seq 1 "$ROUNDS"); do
        for c in $CONCURRENCY; do
            facts
            loadgen "usage r$round c=$c batch=${USAGE_BATCH:-1000}" --customers "$CUSTOMERS" \
                --prefix "$PREFIX" --skip-seed --concurrency "$c" --duration "$DURATION" \
                --warmup "$WARMUP" --usage-batch "${USAGE_BATCH:-1000}" --feature api-calls
        done
    done
    stop_host
fi

if [ "$MODE" = isolation ]; then
    say "building the hostile fixture (the slow policy)"
    (cd "$REPO" && "$HOST_BIN" policy build tests/fixtures/hostile)
    config "$CFG/isolation.yaml" "sqlite_synchronous: full" "max_connections: 16"
    noisy_tenant >> "$CFG/isolation.yaml"
    start_host "$CFG/isolation.yaml" "sqlite://$DATA/isolation.db"
    seed
    noisy_seed
    for round in $(seq 1 "$ROUNDS"); do
        for c in $CONCURRENCY; do
            say "round $round: B alone"
            facts
            loadgen "isolation r$round c=$c B alone" --customers "$CUSTOMERS" --prefix "$PREFIX" \
                --skip-seed --concurrency "$c" --duration "$DURATION" --warmup "$WARMUP"
            say "round $round: B with A (slow policy, $A_RATE usage/close + $A_RATE credits/use per second)"
            noisy_start
            facts
            loadgen "isolation r$round c=$c B with A" --customers "$CUSTOMERS" --prefix "$PREFIX" \
                --skip-seed --concurrency "$c" --duration "$DURATION" --warmup "$WARMUP"
            noisy_stop
        done
    done
    stop_host
fi

if [ "$MODE" = postgres ] || [ "$MODE" = pgbench ] || [ "$MODE" = all ]; then
    say "PostgreSQL 15: private durable cluster on 127.0.0.1:$PG_PORT"
    start_pg_cluster
    PSQL=(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt)
    "${PSQL[@]}" -d postgres -c "CREATE DATABASE fluxpay" -c "CREATE DATABASE pgbench"
    echo "fsync=$("${PSQL[@]}" -d postgres -c 'SHOW fsync') synchronous_commit=$("${PSQL[@]}" -d postgres -c 'SHOW synchronous_commit')"
    PG_URL="postgres://postgres@127.0.0.1:$PG_PORT"

    if [ "$MODE" != postgres ]; then
        config "$CFG/pgbench.yaml"
        FLUXPAY_DATABASE_URL=$PG_URL/pgbench "$HOST_BIN" migrate --config "$CFG/pgbench.yaml" >/dev/null
        "${PSQL[@]}" -d pgbench -c "
            INSERT INTO customers (tenant_id, customer_id, attributes, version, created_at, updated_at)
              SELECT 'bench', 'pgb-' || i, '{\"tier\":\"standard\"}', 1, 0, 0 FROM generate_series(1, $CUSTOMERS) i;
            INSERT INTO credit_accounts (tenant_id, customer_id, balance, updated_at)
              SELECT 'bench', 'pgb-' || i, 1000000000, 0 FROM generate_series(1, $CUSTOMERS) i;" \
            -c "VACUUM ANALYZE"
    fi
    if [ "$MODE" != pgbench ]; then
        say "fluxpay-host on PostgreSQL (pool $PG_POOL)"
        config "$CFG/pg.yaml" "max_connections: $PG_POOL"
        start_host "$CFG/pg.yaml" "$PG_URL/fluxpay"
        seed
    fi

    # The host's runs and pgbench's alternate, ROUNDS times: this VM's speed
    # drifts with its neighbours by 20-30 % within minutes, so only runs
    # close in time compare. Each starts from the same state: both databases
    # vacuumed, then a CHECKPOINT, so neither pays for the other's dead rows
    # (autovacuum waking up mid-run) or dirty pages.
    settle() {
        "${PSQL[@]}" -d fluxpay -c VACUUM
        "${PSQL[@]}" -d pgbench -c VACUUM
        "${PSQL[@]}" -d postgres -c CHECKPOINT
    }
    for round in $(seq 1 "$ROUNDS"); do
        if [ "$MODE" != pgbench ]; then
            say "round $round: fluxpay-host on PostgreSQL (pool $PG_POOL)"
            settle
            runs "postgres r$round"
        fi
        if [ "$MODE" != postgres ]; then
            say "round $round: pgbench, the same statements (bench/pgbench_credit_use.sql)"
            for c in $PGBENCH_CLIENTS; do
                settle
                facts
                # A warm-up, as the host's runs have: the first seconds on a
                # fresh cluster run at a third of the speed.
                pgbench -n -M prepared -f "$REPO/bench/pgbench_credit_use.sql" \
                    -D ncust="$CUSTOMERS" -D now="$(date +%s%3N)" -c "$c" -j 2 -T "$WARMUP" \
                    -h 127.0.0.1 -p "$PG_PORT" -U postgres pgbench > /dev/null
                pg0=$(pg_cpu_ms)
                pgbench -n -M prepared -f "$REPO/bench/pgbench_credit_use.sql" \
                    -D ncust="$CUSTOMERS" -D now="$(date +%s%3N)" -c "$c" -j 2 -T "$DURATION" \
                    -h 127.0.0.1 -p "$PG_PORT" -U postgres pgbench | tee "$WORK/pgbench.out"
                pg1=$(pg_cpu_ms)
                n=$(grep -oP 'actually processed: \K[0-9]+' "$WORK/pgbench.out")
                echo "  PostgreSQL CPU per transaction: $(( (pg1 - pg0) * 1000 / (n > 0 ? n : 1) )) µs" | tee -a "$WORK/pgbench.out"
                tps=$(grep -oP 'tps = \K[0-9.]+' "$WORK/pgbench.out" | head -1)
                lat=$(grep -oP 'latency average = \K[0-9.]+' "$WORK/pgbench.out" | head -1)
                echo "pgbench r$round c=$c {\"tps\":$tps,\"latencyAvgMs\":$lat} $(grep 'CPU per transaction' "$WORK/pgbench.out")" >> "$WORK/summary"
                facts
            done
        fi
    done
    [ "$MODE" != pgbench ] && stop_host
    if [ "$MODE" = all ]; then
        # Per round: the host at the first CONCURRENCY ÷ the best pgbench TPS
        # of the same round, whichever its client count.
        for round in $(seq 1 "$ROUNDS"); do
            h=$(grep -oP "^postgres r$round c=${CONCURRENCY%% *} .*\"rps\":\K[0-9.]+" "$WORK/summary")
            b=$(grep -oP "^pgbench r$round c=[0-9]+ \{\"tps\":\K[0-9.]+" "$WORK/summary" | sort -g | tail -1)
            echo "ratio r$round host c=${CONCURRENCY%% *} / best pgbench: $(awk -v h="$h" -v b="$b" 'BEGIN { printf "%.3f", h / b }')" >> "$WORK/summary"
        done
    fi
fi

say "summary"
cat "$WORK/summary" | tee "$REPO/target/bench/credits_use-summary.txt"

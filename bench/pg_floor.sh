#!/usr/bin/env bash
# What PostgreSQL alone can do on this machine with the order saga's shape
# of writes (issue 16, item 5): an order is 5 durable transactions of ~8
# row writes each (BENCHMARKS.md, "The order saga end to end"). pgbench — a
# C client, no FluxPay, no simulator, no HTTP — drives a private cluster
# with the settings of bench/saga.sh (fsync=on, synchronous_commit=on) and
# a small table (primary key + one secondary index), in two shapes:
#   statements — BEGIN, 8 single-row INSERTs, COMMIT (FluxPay's shape: one
#                round trip per statement);
#   one-cte    — BEGIN, one WITH … INSERT statement writing the 8 rows,
#                COMMIT (the fewest round trips a step could take).
# Per shape: transactions/s, the "orders"/s they make (÷ 5), PostgreSQL's
# CPU per transaction and the share of the machine in use. This is the
# ceiling for the saga's PostgreSQL throughput here: FluxPay, the generator
# and the simulator need CPU of their own on the same cores.
#
#   bench/pg_floor.sh
#
# Knobs (environment): CLIENTS (32), THREADS (2), DURATION (s, 15),
# PG_PORT (54331), PG_BIN, KEEP_WORK (1: keep the cluster's directory).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CLIENTS=${CLIENTS:-32}
THREADS=${THREADS:-2}
DURATION=${DURATION:-15}
PG_PORT=${PG_PORT:-54331}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
# The cluster's own pgbench first (its output format is this version's).
if [ -z "${PGBENCH:-}" ]; then
    if [ -x "$PG_BIN/pgbench" ]; then PGBENCH=$PG_BIN/pgbench; else PGBENCH=$(command -v pgbench || true); fi
fi
[ -n "$PGBENCH" ] && [ -x "$PGBENCH" ] || { echo "pgbench not found (Debian: postgresql-contrib / postgresql-client)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/fluxpay-bench-pgfloor.XXXXXX)
chmod 755 "$WORK"
PG_DATA=""

# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

cleanup() {
    set +e
    if [ -n "$PG_DATA" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1
    fi
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_pg_cluster
psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -qc \
    "CREATE TABLE rows (id bigserial PRIMARY KEY, tenant_id text NOT NULL, \
       entity_id text NOT NULL, amount bigint NOT NULL, at bigint NOT NULL); \
     CREATE INDEX rows_entity ON rows (tenant_id, entity_id);" postgres

row() { echo "INSERT INTO rows (tenant_id, entity_id, amount, at) VALUES ('bench', md5(random()::text), $1, 0)"; }
{
    echo "BEGIN;"
    for i in 1 2 3 4 5 6 7 8; do echo "$(row "$i");"; done
    echo "COMMIT;"
} > "$WORK/statements.sql"
{
    echo "BEGIN;"
    printf 'WITH '
    for i in 1 2 3 4 5 6 7; do printf 'w%s AS (%s), ' "$i" "$(row "$i")"; done
    echo "w8 AS ($(row 8)) SELECT 1;"
    echo "COMMIT;"
} > "$WORK/one-cte.sql"

machine_busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }

say "pgbench, $CLIENTS clients, $THREADS threads, ${DURATION} s per shape"
facts
TABLE="| shape | transactions/s | orders/s (÷ 5) | PostgreSQL CPU per transaction | machine busy |
|---|---:|---:|---:|---:|"
for shape in statements one-cte; do
    read -r busy1 total1 < <(machine_busy_ticks)
    cpu1=$(pg_cpu_ms)
    if ! "$PGBENCH" -h 127.0.0.1 -p "$PG_PORT" -U postgres -n -M prepared -c "$CLIENTS" \
        -j "$THREADS" -T "$DURATION" -f "$WORK/$shape.sql" postgres > "$WORK/$shape.out" 2>&1; then
        echo "pgbench failed for $shape:" >&2
        cat "$WORK/$shape.out" >&2
        exit 1
    fi
    cpu2=$(pg_cpu_ms)
    read -r busy2 total2 < <(machine_busy_ticks)
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$WORK/$shape.out" | tail -1)
    [ -n "$tps" ] || { echo "no tps in pgbench's output for $shape" >&2; cat "$WORK/$shape.out" >&2; exit 1; }
    TABLE+=$(awk -v s="$shape" -v tps="$tps" -v d="$DURATION" -v cpu=$((cpu2 - cpu1)) \
        -v busy=$((busy2 - busy1)) -v total=$((total2 - total1)) 'BEGIN {
            printf "\n| %s | %.0f | %.0f | %.0f µs | %.2f |", s, tps, tps / 5,
                cpu * 1000 / (tps * d), busy / total }')
done
echo
echo "$TABLE"

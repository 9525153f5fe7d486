#!/usr/bin/env bash
# Relay throughput (issue 17, item 10, first half): a pre-filled outbox of
# EVENTS events published to a local Kafka-protocol broker (tansu, in-memory
# storage, built by .ci/kafka.sh into its cache) by the relay `serve` runs,
# from its first round until every event is acknowledged
# (host/examples/relay_bench.rs).
#
#   bench/relay.sh [sqlite|postgres|all|lag-sqlite|lag-postgres]   (default: all)
#
# lag-*: commit → consumer lag instead (relay_bench --lag-seconds): the
# relay runs as `serve` runs it while a writer commits RATE events a second
# for LAG_SECONDS, one per transaction through the store's write path, and a
# consumer reads them; p50/p95/p99/max of (arrival − the event's time).
#
# sqlite — a fresh temporary SQLite file; postgres — a private, durable
# PostgreSQL 15 cluster (fsync=on, synchronous_commit=on) on 127.0.0.1:PG_PORT.
# SINK=webhook: the same outbox POSTed to a tenant webhook instead, one
# signed request per event to a receiver in the bench process (CONCURRENCY
# customers at once, default 8; BATCHES is then webhooks.batch).
# Knobs (environment): EVENTS (100000), BATCHES ("500"; e.g. "100 500 2000"),
# RATE (5000; about half the durable SQLite credits/use rate), LAG_SECONDS (20),
# PARTITIONS (6), CUSTOMERS (1000), PG_PORT (54331), BUILD_PROFILE
# (production), SKIP_BUILD (1: use target/<profile>/examples/relay_bench).
# Every process it starts is stopped on exit, by PID.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-all}
EVENTS=${EVENTS:-100000}
BATCHES=${BATCHES:-500}
PARTITIONS=${PARTITIONS:-6}
CUSTOMERS=${CUSTOMERS:-1000}
SINK=${SINK:-kafka}
CONCURRENCY=${CONCURRENCY:-8}
PG_PORT=${PG_PORT:-54331}
BUILD_PROFILE=${BUILD_PROFILE:-production}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
WORK=$(mktemp -d /tmp/fluxpay-relay-bench.XXXXXX)
chmod 755 "$WORK"  # the postgres user reaches its cluster inside
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
# shellcheck source=.ci/lib.sh
source "$REPO/.ci/lib.sh"
# shellcheck source=.ci/kafka.sh
source "$REPO/.ci/kafka.sh"

cleanup() {
    if [ -n "${PG_DATA:-}" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null || true
    fi
    rm -rf "$WORK"
}
fluxpay_at_exit cleanup

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    say "building $BUILD_PROFILE relay_bench"
    (cd "$REPO" && cargo build --profile "$BUILD_PROFILE" -p fluxpay-host --example relay_bench)
fi
BENCH="$REPO/target/$BUILD_PROFILE/examples/relay_bench"

say "broker"
unset FLUXPAY_TEST_KAFKA_BROKERS
fluxpay_kafka_start
facts

run() { # <database url>
    local batch
    for batch in $BATCHES; do
        "$BENCH" --brokers "$FLUXPAY_TEST_KAFKA_BROKERS" --database "$1" --events "$EVENTS" \
            --batch "$batch" --partitions "$PARTITIONS" --customers "$CUSTOMERS" \
            --sink "$SINK" --concurrency "$CONCURRENCY"
    done
}

lag() { # <database url>
    "$BENCH" --brokers "$FLUXPAY_TEST_KAFKA_BROKERS" --database "$1" \
        --lag-seconds "${LAG_SECONDS:-20}" --rate "${RATE:-5000}" --partitions "$PARTITIONS"
}

if [ "$MODE" = lag-sqlite ]; then
    say "lag, sqlite"
    lag "sqlite://$WORK/lag.db"
fi
if [ "$MODE" = lag-postgres ]; then
    say "lag, postgres"
    start_pg_cluster
    lag "postgres://postgres@127.0.0.1:$PG_PORT/postgres"
fi
if [ "$MODE" = sqlite ] || [ "$MODE" = all ]; then
    say "sqlite"
    run "sqlite://$WORK/relay.db"
fi
if [ "$MODE" = postgres ] || [ "$MODE" = all ]; then
    say "postgres"
    start_pg_cluster
    run "postgres://postgres@127.0.0.1:$PG_PORT/postgres"
fi

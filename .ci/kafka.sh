# shellcheck shell=bash
# A private Kafka-protocol broker (tansu) for the Kafka suite, on 127.0.0.1.
#
#   source .ci/lib.sh; source .ci/kafka.sh
#   fluxpay_kafka_start   # exports FLUXPAY_TEST_KAFKA_BROKERS, stops on EXIT
#
# Idempotent: when FLUXPAY_TEST_KAFKA_BROKERS is already set and answers, it
# is reused. Otherwise tansu is installed once into the CI cache
# ($FLUXPAY_CI_CACHE, default ~/.cache/fluxpay-ci; a cold build takes about
# 10-16 minutes on 2 cores and is skipped when the binary is there), started
# from an empty directory (it reads .env from its working directory) with
# in-memory storage on a free port, checked to be the process listening
# there (tansu exits 0 without a word when its port is taken), and stopped
# by its PID when the calling shell exits.

FLUXPAY_TANSU_VERSION="0.6.0"
FLUXPAY_KAFKA_DIR=""
FLUXPAY_KAFKA_PID=""

fluxpay_tansu_bin() {
    local cache="${FLUXPAY_CI_CACHE:-$HOME/.cache/fluxpay-ci}"
    echo "$cache/tansu-$FLUXPAY_TANSU_VERSION/bin/tansu"
}

fluxpay_kafka_install() {
    local bin
    bin="$(fluxpay_tansu_bin)"
    if [[ -x "$bin" ]]; then
        return 0
    fi
    echo "kafka: tansu $FLUXPAY_TANSU_VERSION not cached; building it (cargo install)"
    local root
    root="$(dirname "$(dirname "$bin")")"
    local build
    build="$(mktemp -d /tmp/fluxpay-tansu-build.XXXXXX)"
    # dynostore: without a storage feature every storage URL falls back to
    # a null engine. Its own target dir, removed after: it is not ours.
    cargo install tansu --version "$FLUXPAY_TANSU_VERSION" --locked --features dynostore \
        --root "$root" --target-dir "$build" --quiet
    rm -rf "$build"
    [[ -x "$bin" ]] || { echo "kafka: no tansu binary after install" >&2; return 1; }
}

fluxpay_kafka_stop() {
    if [[ -n "$FLUXPAY_KAFKA_PID" ]] && kill -0 "$FLUXPAY_KAFKA_PID" 2>/dev/null; then
        kill -TERM "$FLUXPAY_KAFKA_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 50); do
            kill -0 "$FLUXPAY_KAFKA_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$FLUXPAY_KAFKA_PID" 2>/dev/null; then
            kill -KILL "$FLUXPAY_KAFKA_PID" 2>/dev/null || true
        fi
        echo "kafka: stopped (pid $FLUXPAY_KAFKA_PID)"
    fi
    FLUXPAY_KAFKA_PID=""
    if [[ -n "$FLUXPAY_KAFKA_DIR" && -d "$FLUXPAY_KAFKA_DIR" ]]; then
        rm -rf "$FLUXPAY_KAFKA_DIR"
    fi
    FLUXPAY_KAFKA_DIR=""
}

fluxpay_kafka_start() {
    if [[ -n "${FLUXPAY_TEST_KAFKA_BROKERS:-}" ]]; then
        local port="${FLUXPAY_TEST_KAFKA_BROKERS##*:}"
        if fluxpay_port_open "$port"; then
            echo "kafka: reusing FLUXPAY_TEST_KAFKA_BROKERS"
            fluxpay_kafka_install
            export FLUXPAY_TEST_TANSU_BIN
            FLUXPAY_TEST_TANSU_BIN="$(fluxpay_tansu_bin)"
            return 0
        fi
        echo "kafka: FLUXPAY_TEST_KAFKA_BROKERS is set but does not answer; starting tansu"
    fi
    fluxpay_kafka_install
    local bin
    bin="$(fluxpay_tansu_bin)"
    FLUXPAY_KAFKA_DIR="$(mktemp -d /tmp/fluxpay-kafka.XXXXXX)"
    fluxpay_at_exit fluxpay_kafka_stop

    local port attempt i
    for attempt in $(seq 1 20); do
        port=$((20000 + RANDOM % 20000))
        fluxpay_port_open "$port" && continue
        (cd "$FLUXPAY_KAFKA_DIR" && RUST_LOG=warn exec "$bin" broker \
            --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine "memory://tansu/" >"$FLUXPAY_KAFKA_DIR/broker.log" 2>&1) &
        FLUXPAY_KAFKA_PID=$!
        for i in $(seq 1 100); do
            kill -0 "$FLUXPAY_KAFKA_PID" 2>/dev/null || break
            # Still alive once the port answers: the listener is ours
            # (tansu exits at once when it cannot bind).
            if fluxpay_port_open "$port" && sleep 0.3 \
                && kill -0 "$FLUXPAY_KAFKA_PID" 2>/dev/null; then
                export FLUXPAY_TEST_KAFKA_BROKERS="127.0.0.1:$port"
                # The outage tests start and stop brokers of their own.
                export FLUXPAY_TEST_TANSU_BIN="$bin"
                echo "kafka: tansu started on 127.0.0.1:$port (pid $FLUXPAY_KAFKA_PID)"
                return 0
            fi
            sleep 0.1
        done
        # It exited (port taken meanwhile) or never listened: try another.
        kill -KILL "$FLUXPAY_KAFKA_PID" 2>/dev/null || true
        FLUXPAY_KAFKA_PID=""
        echo "kafka: port $port failed (attempt $attempt); retrying" >&2
    done
    cat "$FLUXPAY_KAFKA_DIR/broker.log" >&2 || true
    return 1
}

//! Crash points for the crash-recovery tests: with
//! `FLUXPAY_TEST_ABORT_AT=<point>` in its environment, the process aborts
//! — no unwinding, no destructors, nothing flushed: as under `kill -9` —
//! the moment it reaches `<point>` (with `FLUXPAY_TEST_ABORT_ORDER`, for
//! that order only). The points sit on the saga's step
//! boundaries: right after a step's transaction commits, and right after a
//! PG call's intent is stored but before its answer is.
//!
//! Unset (as in every deployment), a point costs one read of a value set
//! once per process.

use std::sync::OnceLock;

/// The environment variable naming the point to abort at.
pub const ABORT_AT_ENV: &str = "FLUXPAY_TEST_ABORT_AT";

/// Every point, for tests that go through them all.
pub const POINTS: [&str; 8] = [
    "payment.intent",
    "payment.confirm_answered",
    "payment.outcome",
    "payment.capture_requested",
    "payment.capture_answered",
    "saga.compensating",
    "payment.void_requested",
    "payment.void_answered",
];

/// The outbox relay's point: every record of a round acknowledged by the
/// broker, the cursor not yet moved past them (keyed by the tenant).
pub const RELAY_POINTS: [&str; 2] = ["relay.delivered", "relay.webhook_delivered"];

/// With it, only the order of this id aborts at the point (the host's
/// background work on other orders passes through it).
pub const ABORT_ORDER_ENV: &str = "FLUXPAY_TEST_ABORT_ORDER";

/// Aborts the process if it was asked to at `point` (for `order_id`, or
/// the tenant at a relay point).
pub fn reached(point: &'static str, order_id: &str) {
    static AT: OnceLock<(Option<String>, Option<String>)> = OnceLock::new();
    debug_assert!(
        POINTS.contains(&point) || RELAY_POINTS.contains(&point),
        "unknown crash point {point}"
    );
    let (at, order) = AT.get_or_init(|| {
        (
            std::env::var(ABORT_AT_ENV).ok(),
            std::env::var(ABORT_ORDER_ENV).ok(),
        )
    });
    if at.as_deref() == Some(point) && order.as_deref().is_none_or(|o| o == order_id) {
        eprintln!("fluxpay-host: aborting at crash point {point} for {order_id} ({ABORT_AT_ENV})");
        std::process::abort();
    }
}

//! Pure domain types and state machines: no I/O, no async, no clock reads.
//!
//! Everything here takes values and returns values or a [`DomainError`];
//! time arrives as a `now` argument. Operations that change state return the
//! new state *together with* what the store must write alongside it — the
//! ledger transaction ([`ledger::LedgerTransaction`]) and the history row
//! ([`history::Transition`]) — so the use-case layer cannot apply one without
//! the others.
//!
//! - [`money`]: currencies, `Money`, `Credits`, checked arithmetic.
//! - [`ledger`]: the chart of accounts and balanced transactions.
//! - [`credit`]: a customer's credit account (grant, use, refund, reserve, expire).
//! - [`order`]: the order state machine.
//! - [`payment`]: the payment state machine (gateway approvals, voids, refunds).
//! - [`saga`]: the order saga's state machine and its compensations.
//! - [`subscription`]: the subscription state machine.
//! - [`usage`]: metered-usage validation.
//! - [`history`]: state-history records.
//! - [`error`]: the one error type and its API codes.

pub mod credit;
pub mod error;
pub mod history;
pub mod id;
pub mod ledger;
pub mod money;
pub mod order;
pub mod payment;
pub mod saga;
pub mod subscription;
pub mod time;
pub mod usage;

pub use error::{DomainError, Result};
pub use history::{EntityKind, Transition};
pub use id::{
    CreditGrantId, CreditUseId, CustomerId, OrderId, PaymentId, PlanId, ReservationId,
    SubscriptionId,
};
pub use money::{Credits, Currency, Money, PositiveCredits, PositiveMoney};
pub use time::{Period, Timestamp};

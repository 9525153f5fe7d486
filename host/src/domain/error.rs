//! The one error type of the domain and its mapping to API codes.
//!
//! Every variant answers one question for the API layer: whose fault is it?
//! The client's input (`REQ_001`), the customer's balance (`PAY_001`), the
//! entity's current state (`PAY_004`), or ours (`SYS_001`). [`DomainError::code`]
//! is the single place that decides, so the API layer maps codes to HTTP
//! statuses without looking inside domain errors.

use super::credit::CreditError;
use super::history::EntityKind;
use super::ledger::LedgerError;
use super::money::{AmountError, Credits, CurrencyError};
use super::time::Timestamp;
use super::usage::UsageError;

/// Result of a domain operation.
pub type Result<T, E = DomainError> = std::result::Result<T, E>;

/// The API error codes a domain error can map to (issue 3's error table).
pub mod codes {
    /// Malformed or invalid request: bad amounts, unknown currencies, bad ids.
    pub const INVALID_REQUEST: &str = "REQ_001";
    /// The customer's available balance does not cover the request.
    pub const INSUFFICIENT_BALANCE: &str = "PAY_001";
    /// The entity's current state does not allow the request.
    pub const STATE_CONFLICT: &str = "PAY_004";
    /// An invariant the host itself must keep was broken: a bug or corrupt data.
    pub const INTERNAL: &str = "SYS_001";
}

/// Everything a domain operation can refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// An unknown or malformed currency code.
    #[error(transparent)]
    Currency(#[from] CurrencyError),
    /// An amount that overflows, mixes currencies, or has the wrong sign.
    #[error(transparent)]
    Amount(#[from] AmountError),
    /// An identifier that is empty, too long or has characters we refuse.
    #[error("invalid {kind}: {reason}")]
    InvalidId {
        /// What the id names, e.g. "customer id".
        kind: &'static str,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A field that is well-typed but makes no sense (empty order, a period
    /// that ends before it starts, …).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field, as the API names it where possible.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A usage event or batch that fails validation.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// Credit-account rules other than the balance check (refund bounds,
    /// reservations, grants).
    #[error(transparent)]
    Credit(#[from] CreditError),
    /// The available balance (balance minus reservations) is short.
    #[error("insufficient credits: {requested} requested, {available} available")]
    InsufficientCredits {
        /// Credits the customer can spend now.
        available: Credits,
        /// Credits the operation needed.
        requested: Credits,
    },
    /// The entity's status has no transition for the requested action.
    #[error(
        "cannot {action} {entity} in status {from}{}",
        match to { Some(to) => format!(": {from} → {to} is not a legal transition"), None => String::new() }
    )]
    IllegalTransition {
        /// What kind of entity.
        entity: EntityKind,
        /// The action asked for, e.g. "cancel".
        action: &'static str,
        /// The current status.
        from: &'static str,
        /// The status the action leads to, when it changes the status.
        to: Option<&'static str>,
    },
    /// The status allows the action in general, but not now: a flag or a
    /// date stands in the way (renewing before the period ends, scheduling a
    /// cancellation twice, …).
    #[error("cannot {action} {entity} in status {status}: {reason}")]
    ActionNotAllowed {
        /// What kind of entity.
        entity: EntityKind,
        /// The action asked for.
        action: &'static str,
        /// The current status.
        status: &'static str,
        /// What stands in the way.
        reason: String,
    },
    /// An action that is due at an instant that has not come yet.
    #[error("cannot {action} {entity} before {due_at} (now is {now})")]
    NotYetDue {
        /// What kind of entity.
        entity: EntityKind,
        /// The action asked for.
        action: &'static str,
        /// When it becomes due.
        due_at: Timestamp,
        /// The `now` the caller passed.
        now: Timestamp,
    },
    /// A ledger transaction that does not balance, or ledger data that does
    /// not parse. The host builds every transaction, so this is always ours.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// State loaded from the store breaks an invariant (reserved above
    /// balance, a use refunded past its charge, …), or two records that must
    /// belong to the same customer do not.
    #[error("domain invariant broken: {0}")]
    Invariant(String),
}

impl DomainError {
    /// The stable API code for this error; the API layer maps codes to HTTP
    /// statuses in one place.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Currency(_)
            | DomainError::Amount(_)
            | DomainError::InvalidId { .. }
            | DomainError::InvalidInput { .. }
            | DomainError::Usage(_) => codes::INVALID_REQUEST,
            DomainError::Credit(e) => e.code(),
            DomainError::InsufficientCredits { .. } => codes::INSUFFICIENT_BALANCE,
            DomainError::IllegalTransition { .. }
            | DomainError::ActionNotAllowed { .. }
            | DomainError::NotYetDue { .. } => codes::STATE_CONFLICT,
            DomainError::Ledger(_) | DomainError::Invariant(_) => codes::INTERNAL,
        }
    }

    /// Shorthand for [`DomainError::InvalidInput`].
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        DomainError::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Currency;

    #[test]
    fn client_input_errors_map_to_req_001() {
        let errors = [
            DomainError::from(CurrencyError::Unknown { code: "ABC".into() }),
            DomainError::from(AmountError::Overflow { operation: "add" }),
            DomainError::InvalidId {
                kind: "customer id",
                reason: "must not be empty",
            },
            DomainError::invalid("items", "must not be empty"),
            DomainError::from(UsageError::EmptyBatch),
            DomainError::from(CreditError::RefundExceedsRemaining {
                use_id: crate::domain::id::CreditUseId::new("u").unwrap(),
                remaining: Credits(1),
                requested: Credits(2),
            }),
        ];
        for error in errors {
            assert_eq!(error.code(), "REQ_001", "{error}");
        }
    }

    #[test]
    fn insufficient_credits_maps_to_pay_001() {
        let error = DomainError::InsufficientCredits {
            available: Credits(5),
            requested: Credits(30),
        };
        assert_eq!(error.code(), "PAY_001");
        assert_eq!(
            error.to_string(),
            "insufficient credits: 30 requested, 5 available"
        );
    }

    #[test]
    fn state_errors_map_to_pay_004_and_name_from_and_to() {
        let illegal = DomainError::IllegalTransition {
            entity: EntityKind::Order,
            action: "cancel",
            from: "COMPLETED",
            to: Some("CANCELLED"),
        };
        assert_eq!(illegal.code(), "PAY_004");
        assert_eq!(
            illegal.to_string(),
            "cannot cancel order in status COMPLETED: COMPLETED → CANCELLED is not a legal transition"
        );
        let not_allowed = DomainError::ActionNotAllowed {
            entity: EntityKind::Subscription,
            action: "resume",
            status: "ACTIVE",
            reason: "no cancellation is scheduled".into(),
        };
        assert_eq!(not_allowed.code(), "PAY_004");
        let not_due = DomainError::NotYetDue {
            entity: EntityKind::Subscription,
            action: "renew",
            due_at: Timestamp::from_unix_millis(10),
            now: Timestamp::from_unix_millis(5),
        };
        assert_eq!(not_due.code(), "PAY_004");
        let over_capture = DomainError::from(CreditError::ReservationExceeded {
            reservation_id: crate::domain::id::ReservationId::new("r").unwrap(),
            held: Credits(1),
            requested: Credits(2),
        });
        assert_eq!(over_capture.code(), "PAY_004");
    }

    #[test]
    fn host_invariant_errors_map_to_sys_001() {
        let unbalanced = DomainError::from(LedgerError::Unbalanced {
            unit: crate::domain::ledger::Unit::Money(Currency::USD),
            sum: 1,
        });
        assert_eq!(unbalanced.code(), "SYS_001");
        assert_eq!(DomainError::Invariant("x".into()).code(), "SYS_001");
    }
}

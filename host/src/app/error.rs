//! What a use case can answer besides success. No codes or HTTP statuses
//! here: `api::error` maps every variant to exactly one code, in one place.

use serde::Serialize;

use crate::domain::DomainError;
use crate::policy::{CallError, CallStats};
use crate::store::StoreError;

/// Result of a use case.
pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// Who answered a policy call: recorded with quotes and errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    /// The binding's name (pricing kind or validation name).
    pub policy: String,
    /// `credit`, `order`, … or `validation`.
    pub kind: &'static str,
    /// sha256 of the module.
    pub content_hash: String,
    /// The binding's version.
    pub version: u64,
}

/// A policy call that produced no answer.
#[derive(Debug, Clone)]
pub struct PolicyFault {
    /// Who was called.
    pub policy: PolicyRef,
    /// How it went wrong (the policy's own refusal, or the sandbox's).
    pub error: CallError,
    /// What the call used.
    pub stats: CallStats,
}

/// One broken rule, with the validation policy that reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyViolation {
    /// The validation policy.
    pub policy: String,
    /// Its stable rule id.
    pub rule_id: String,
    /// A sentence for the end user.
    pub message: String,
}

/// Why a use case did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or invalid (nothing was written).
    #[error("{0}")]
    Invalid(String),
    /// A domain rule refused it; its code says whose fault.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// No such customer, transaction, … for this tenant.
    #[error("{0}")]
    NotFound(String),
    /// The Idempotency-Key was used for a different request.
    #[error("{0}")]
    IdempotencyConflict(String),
    /// The entity's state does not allow it.
    #[error("{0}")]
    StateConflict(String),
    /// The tenant's validation policies refused it.
    #[error("the request breaks {} rule(s) of the tenant's validation policies", .0.len())]
    Violations(Vec<PolicyViolation>),
    /// A policy refused to answer or the sandbox stopped it.
    #[error("policy `{}` gave no answer: {}", .0.policy.policy, .0.error)]
    Policy(Box<PolicyFault>),
    /// The tenant has no policy for this kind of request.
    #[error("tenant `{tenant}` has no {kind} pricing policy bound")]
    NoPolicy {
        /// The tenant.
        tenant: String,
        /// The pricing kind.
        kind: &'static str,
    },
    /// Policies are not loaded yet.
    #[error("policies are still loading")]
    NotReady,
    /// What a policy decided on (a balance, usage totals) changed before
    /// the transaction could apply the decision, every time it was tried:
    /// nothing was written; the request may be sent again.
    #[error("{0}")]
    Stale(String),
    /// The tenant has no payment gateway configured.
    #[error("tenant `{0}` has no payment gateway configured (tenants.{0}.gateway)")]
    NoGateway(String),
    /// The PG certainly did not take the payment (a transient fault, an
    /// outage, the breaker open): the call did not take effect; retry
    /// later.
    #[error("the payment gateway is unavailable ({0}); nothing was done there, retry later")]
    GatewayUnavailable(String),
    /// The PG's answer was lost: payment `payment_id` may or may not have
    /// been taken, and is being resolved by asking the PG.
    #[error(
        "the payment gateway's answer was lost: payment `{payment_id}` is being resolved; \
         send the same request again to learn its outcome"
    )]
    PaymentPending {
        /// The payment being resolved.
        payment_id: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(StoreError),
    /// A bug: an invariant the host keeps itself was broken.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::domain::money::AmountError> for AppError {
    fn from(err: crate::domain::money::AmountError) -> Self {
        AppError::Domain(err.into())
    }
}

/// Named constraints are the schema's last line of defence behind the
/// guarded statements: when one fires anyway (a race the guard did not
/// cover, a bug), the client gets what the rule means rather than a 500.
impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        let StoreError::Constraint { constraint, .. } = &err else {
            return match err {
                StoreError::OutOfRange => AppError::Domain(DomainError::from(
                    crate::domain::money::AmountError::Overflow { operation: "add" },
                )),
                other => AppError::Store(other),
            };
        };
        let name = constraint.as_str();
        let mapped = match name {
            "payments_one_active_key" | "payments.tenant_id, payments.order_id" => {
                Some(AppError::StateConflict(
                    "the order already has a payment in progress or approved".into(),
                ))
            }
            "credit_uses_refunded_check" => Some(AppError::Invalid(
                "the refund exceeds what the use charged minus what was already refunded".into(),
            )),
            "credit_accounts_reserved_check" | "credit_reservations_held_check" => {
                Some(AppError::StateConflict(
                    "the credit account does not hold that many credits".into(),
                ))
            }
            _ if name.ends_with("_credits_check")
                || name.ends_with("_charged_check")
                || name.ends_with("_quantity_check")
                || name.ends_with("_total_check")
                || name.ends_with("_amount_check") =>
            {
                Some(AppError::Invalid(format!(
                    "an amount must be positive ({name})"
                )))
            }
            // PostgreSQL names unique keys `<table>_pkey` / `<table>_<what>_key`;
            // SQLite reports `<table>.<column>, …`.
            _ if name.ends_with("_pkey") || name.ends_with("_key") || name.contains('.') => Some(
                AppError::StateConflict(format!("it already exists ({name})")),
            ),
            _ => None,
        };
        match mapped {
            Some(mapped) => {
                tracing::warn!(constraint = name, error = %err, "app.constraint_violation");
                mapped
            }
            None => AppError::Store(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn constraint(name: &str) -> AppError {
        AppError::from(StoreError::Constraint {
            constraint: name.into(),
            message: String::new(),
        })
    }

    #[test]
    fn named_constraints_map_to_what_the_rule_means() {
        assert!(matches!(
            constraint("credit_uses_refunded_check"),
            AppError::Invalid(_)
        ));
        assert!(matches!(
            constraint("credit_grants_credits_check"),
            AppError::Invalid(_)
        ));
        assert!(matches!(
            constraint("credit_accounts_reserved_check"),
            AppError::StateConflict(_)
        ));
        assert!(matches!(
            constraint("customers_pkey"),
            AppError::StateConflict(_)
        ));
        assert!(matches!(
            constraint("customers.tenant_id, customers.customer_id"),
            AppError::StateConflict(_)
        ));
        assert!(matches!(constraint("foreign key"), AppError::Store(_)));
        assert!(matches!(
            AppError::from(StoreError::OutOfRange),
            AppError::Domain(_)
        ));
    }
}

//! What a PG's answer means for a payment ([`Outcome`]), and a stored
//! payment as the domain's [`Payment`].

use super::super::error::{AppError, Result};
use crate::domain::payment::{Payment, StoredPayment};
use crate::domain::{CustomerId, Money, OrderId, PaymentId, PositiveMoney};
use crate::gateway::{GatewayError, PgPayment, codes};
use crate::store::PaymentRecord;

/// What the PG's answer means for the payment.
pub(super) enum Outcome {
    /// Approved under the PG's key.
    Approved(String),
    /// Declined for good (a card decline), with the PG's code and message.
    Declined(String, String),
    /// The PG refused the request itself (an unknown payment key, an amount
    /// or order that differs from the checkout): nothing was taken, and the
    /// client must fix the request.
    Rejected(String, String),
    /// Certainly not taken, for now (transient, unreachable, breaker open).
    NotTaken(String, String),
    /// The PG's answer was lost.
    Lost(String),
}

impl Outcome {
    pub(super) fn attempt_outcome(&self) -> &'static str {
        match self {
            Outcome::Approved(_) => "approved",
            Outcome::Declined(..) => "declined",
            Outcome::Rejected(..) => "refused",
            Outcome::NotTaken(..) => "transient",
            Outcome::Lost(_) => "unknown",
        }
    }

    pub(super) fn pg_code(&self) -> Option<String> {
        match self {
            Outcome::Declined(code, _)
            | Outcome::Rejected(code, _)
            | Outcome::NotTaken(code, _) => Some(code.clone()),
            _ => None,
        }
    }
}

/// What a confirm's (or billing charge's) answer means.
pub(super) fn outcome_of_confirm(
    answer: Result<PgPayment, GatewayError>,
    amount: i64,
    currency: &str,
) -> Outcome {
    match answer {
        Ok(pg) => adopt(pg, amount, currency),
        Err(GatewayError::Refused { code, message }) => match code.as_str() {
            // FluxPay's own key was refused: a configuration fault, and
            // certainly nothing taken.
            codes::UNAUTHORIZED_KEY => Outcome::NotTaken(code, message),
            codes::INVALID_REQUEST | codes::NOT_FOUND_PAYMENT => Outcome::Rejected(code, message),
            _ => Outcome::Declined(code, message),
        },
        Err(GatewayError::Transient { code, message }) => Outcome::NotTaken(code, message),
        Err(GatewayError::Unreachable(message)) => {
            Outcome::NotTaken("GATEWAY_UNREACHABLE".into(), message)
        }
        Err(GatewayError::CircuitOpen) => Outcome::NotTaken(
            "GATEWAY_CIRCUIT_OPEN".into(),
            "calls to the payment gateway are paused after repeated failures".into(),
        ),
        Err(GatewayError::Unknown(reason)) => Outcome::Lost(reason),
    }
}

/// What a status query's answer means.
pub(super) fn outcome_of_query(
    answer: Result<PgPayment, GatewayError>,
    amount: i64,
    currency: &str,
) -> Outcome {
    match answer {
        Ok(pg) => adopt(pg, amount, currency),
        // Not even "not found" settles it: an approval may still be on
        // its way to the PG. The schedule asks again, then an operator.
        Err(err) => Outcome::Lost(err.to_string()),
    }
}

/// What the PG's view of a payment means for FluxPay's.
fn adopt(pg: PgPayment, amount: i64, currency: &str) -> Outcome {
    if pg.status == crate::gateway::PgStatus::Done {
        if pg.total_amount != amount || pg.balance_amount != amount || pg.currency != currency {
            // Never adopt an approval of another amount: an operator looks.
            return Outcome::Lost(format!(
                "the PG approved {} {} (balance {}) for a payment of {amount} {currency}",
                pg.total_amount, pg.currency, pg.balance_amount
            ));
        }
        return Outcome::Approved(pg.payment_key);
    }
    if pg.status.holds_money() || pg.status == crate::gateway::PgStatus::Canceled {
        // Taken, then given back in part or whole, by someone else.
        return Outcome::Lost(format!(
            "the PG reports the payment {:?}: cancelled outside FluxPay",
            pg.status
        ));
    }
    if pg.status.failed() {
        return Outcome::Declined(
            format!("{:?}", pg.status).to_uppercase(),
            "the PG reports the payment did not go through".into(),
        );
    }
    Outcome::Lost(format!("the PG reports the payment {:?}", pg.status))
}

pub(super) fn restore_payment(record: &PaymentRecord) -> Result<Payment> {
    let corrupt =
        |what: String| AppError::Internal(format!("payment {}: {what}", record.payment_id));
    let currency =
        crate::domain::Currency::parse(&record.currency).map_err(|e| corrupt(e.to_string()))?;
    let amount = PositiveMoney::new(Money::new(record.amount, currency), "amount")
        .map_err(|e| corrupt(e.to_string()))?;
    Payment::restore(StoredPayment {
        id: PaymentId::new(&record.payment_id).map_err(|e| corrupt(e.to_string()))?,
        order: OrderId::new(&record.order_id).map_err(|e| corrupt(e.to_string()))?,
        customer: CustomerId::new(&record.customer_id).map_err(|e| corrupt(e.to_string()))?,
        amount,
        approval_key: record.approval_key.clone(),
        pg_payment_key: record.pg_payment_key.clone(),
        refunded: Money::new(record.refunded, currency),
        status: record
            .status
            .parse()
            .map_err(|e: crate::domain::DomainError| corrupt(e.to_string()))?,
    })
    .map_err(|e| corrupt(e.to_string()))
}

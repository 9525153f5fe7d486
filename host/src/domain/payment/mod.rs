//! Payments: one attempt to take (part of) an order's money through the
//! payment gateway (PG), from the approval to the last refund.
//!
//! | from \ event        | approve  | decline | lose    | confirm   | void      | refund (part)      | refund (rest) |
//! |---------------------|----------|---------|---------|-----------|-----------|--------------------|---------------|
//! | READY               | APPROVED | FAILED  | UNKNOWN | —         | —         | —                  | —             |
//! | UNKNOWN             | APPROVED | FAILED  | —       | —         | —         | —                  | —             |
//! | APPROVED            | —        | —       | —       | CONFIRMED | CANCELLED | —                  | —             |
//! | CONFIRMED           | —        | —       | —       | —         | —         | PARTIALLY_REFUNDED | REFUNDED      |
//! | PARTIALLY_REFUNDED  | —        | —       | —       | —         | —         | PARTIALLY_REFUNDED | REFUNDED      |
//! | FAILED              | —        | —       | —       | —         | —         | —                  | —             |
//! | CANCELLED           | —        | —       | —       | —         | —         | —                  | —             |
//! | REFUNDED            | —        | —       | —       | —         | —         | —                  | —             |
//!
//! Every "—" is [`DomainError::IllegalTransition`] (`PAY_004`).
//!
//! What the reference systems taught (`shared/NOTES-payments.md`):
//! - **One PG idempotency key per payment's approval**, made when the
//!   payment is created and stored before the PG is called: every retry of
//!   the approval (a transient PG error) sends the same key, so the PG can
//!   never approve twice.
//! - **A timeout is not a failure**: `lose` moves a payment to `UNKNOWN`
//!   (the PG may or may not have approved), and only the PG's own answer
//!   to a status query resolves it (`approve` or `decline`). There is no
//!   way back to `READY`: an unknown payment is never approved again.
//! - **Terminal states never move back**: a late or contradictory PG
//!   notification (a `DONE` after an `ABORTED`) finds no transition.
//! - **Refunds never exceed what was confirmed**, summed over partial
//!   refunds.
//!
//! Money in the books ([`LedgerTransaction`]): the approval settles the
//! customer's bill (`payment.approved`: clearing ← receivable), a void
//! opens it again (`payment.voided`), a refund after the order completed
//! is contra revenue (`payment.refunded`: refunds ← clearing).
//! Confirmation moves no money in the books: the order's completion earns
//! the revenue. So `tenant:payments_clearing` is always what the PG holds
//! for the tenant: approved − voided − refunded.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::{DomainError, Result};
use super::history::{EntityKind, Transition};
use super::id::{CustomerId, OrderId, PaymentId, id_problem};
use super::ledger::LedgerTransaction;
use super::money::{Money, PositiveMoney};

/// Longest PG idempotency key: Toss Payments accepts up to 300 characters.
pub const MAX_PG_IDEMPOTENCY_KEY_LEN: usize = 300;
/// Longest key the PG gives a payment (Toss: `paymentKey`, ≤ 200).
pub const MAX_PG_PAYMENT_KEY_LEN: usize = 200;

/// Where a payment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// Created, its approval key stored; the PG has not answered yet.
    Ready,
    /// The PG's answer to the approval was lost (timeout, 5xx): it may or
    /// may not have approved. Resolved by querying the PG.
    Unknown,
    /// Approved by the PG: the money is taken, the order is paid.
    Approved,
    /// Confirmed: the order was fulfilled and the payment stands.
    Confirmed,
    /// Part of the confirmed amount was given back.
    PartiallyRefunded,
    /// All of the confirmed amount was given back. Terminal.
    Refunded,
    /// Declined or aborted at the PG: no money was taken. Terminal.
    Failed,
    /// Voided at the PG before confirmation: no money stays taken.
    /// Terminal.
    Cancelled,
}

/// What can happen to a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentEvent {
    /// The PG approved it (its answer, or a status query's).
    Approve,
    /// The PG declined it or reports it aborted or expired.
    Decline,
    /// The PG's answer to the approval was lost.
    Lose,
    /// The order it pays for was fulfilled.
    Confirm,
    /// Called off before confirmation (a void at the PG if it approved).
    Void,
    /// A refund that leaves part of the confirmed amount.
    RefundPart,
    /// A refund of everything still refundable.
    RefundRest,
}

impl PaymentStatus {
    /// Every status, for exhaustive checks.
    pub const ALL: [PaymentStatus; 8] = [
        PaymentStatus::Ready,
        PaymentStatus::Unknown,
        PaymentStatus::Approved,
        PaymentStatus::Confirmed,
        PaymentStatus::PartiallyRefunded,
        PaymentStatus::Refunded,
        PaymentStatus::Failed,
        PaymentStatus::Cancelled,
    ];

    /// The stable database and API form, e.g. `"PARTIALLY_REFUNDED"`.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Ready => "READY",
            PaymentStatus::Unknown => "UNKNOWN",
            PaymentStatus::Approved => "APPROVED",
            PaymentStatus::Confirmed => "CONFIRMED",
            PaymentStatus::PartiallyRefunded => "PARTIALLY_REFUNDED",
            PaymentStatus::Refunded => "REFUNDED",
            PaymentStatus::Failed => "FAILED",
            PaymentStatus::Cancelled => "CANCELLED",
        }
    }

    /// Whether no event applies any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            PaymentStatus::Refunded | PaymentStatus::Failed | PaymentStatus::Cancelled
        )
    }

    /// Whether the PG's outcome is still to be learnt or acted on: what
    /// the recovery scheduler converges.
    pub fn is_in_flight(self) -> bool {
        matches!(self, PaymentStatus::Ready | PaymentStatus::Unknown)
    }

    /// The transition table: the status `event` leads to from `self`.
    pub fn on(self, event: PaymentEvent) -> Result<PaymentStatus> {
        use PaymentEvent as E;
        use PaymentStatus as S;
        match (self, event) {
            (S::Ready | S::Unknown, E::Approve) => Ok(S::Approved),
            (S::Ready | S::Unknown, E::Decline) => Ok(S::Failed),
            (S::Ready, E::Lose) => Ok(S::Unknown),
            (S::Approved, E::Confirm) => Ok(S::Confirmed),
            // Not from READY: its approval call may be in flight.
            (S::Approved, E::Void) => Ok(S::Cancelled),
            (S::Confirmed | S::PartiallyRefunded, E::RefundPart) => Ok(S::PartiallyRefunded),
            (S::Confirmed | S::PartiallyRefunded, E::RefundRest) => Ok(S::Refunded),
            _ => Err(DomainError::IllegalTransition {
                entity: EntityKind::Payment,
                action: event.as_str(),
                from: self.as_str(),
                to: Some(event.target().as_str()),
            }),
        }
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PaymentStatus {
    type Err = DomainError;
    fn from_str(value: &str) -> Result<Self> {
        PaymentStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or_else(|| DomainError::Invariant(format!("`{value}` is not a payment status")))
    }
}

impl PaymentEvent {
    /// Every event, for exhaustive checks.
    pub const ALL: [PaymentEvent; 7] = [
        PaymentEvent::Approve,
        PaymentEvent::Decline,
        PaymentEvent::Lose,
        PaymentEvent::Confirm,
        PaymentEvent::Void,
        PaymentEvent::RefundPart,
        PaymentEvent::RefundRest,
    ];

    /// The event's stable name, used in errors and history rows.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentEvent::Approve => "approve",
            PaymentEvent::Decline => "decline",
            PaymentEvent::Lose => "lose",
            PaymentEvent::Confirm => "confirm",
            PaymentEvent::Void => "void",
            PaymentEvent::RefundPart | PaymentEvent::RefundRest => "refund",
        }
    }

    /// The status the event leads to where it is legal.
    pub fn target(self) -> PaymentStatus {
        match self {
            PaymentEvent::Approve => PaymentStatus::Approved,
            PaymentEvent::Decline => PaymentStatus::Failed,
            PaymentEvent::Lose => PaymentStatus::Unknown,
            PaymentEvent::Confirm => PaymentStatus::Confirmed,
            PaymentEvent::Void => PaymentStatus::Cancelled,
            PaymentEvent::RefundPart => PaymentStatus::PartiallyRefunded,
            PaymentEvent::RefundRest => PaymentStatus::Refunded,
        }
    }
}

/// A key that goes to or comes from the PG, checked: printable ASCII
/// without spaces, 1 to `max` bytes.
fn pg_key(field: &'static str, value: String, max: usize) -> Result<String> {
    match id_problem(&value, max) {
        None => Ok(value),
        Some(reason) => Err(DomainError::invalid(field, reason)),
    }
}

/// A payment and what it has come to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    id: PaymentId,
    order: OrderId,
    customer: CustomerId,
    amount: PositiveMoney,
    /// The key every approval call for this payment sends to the PG.
    approval_key: String,
    /// The PG's key for the payment, once it has one.
    pg_payment_key: Option<String>,
    /// Σ refunds so far, in the payment's currency.
    refunded: Money,
    status: PaymentStatus,
}

/// A payment after a change, with what the store writes alongside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentChange {
    /// The payment after the change.
    pub payment: Payment,
    /// The history row.
    pub transition: Transition,
    /// The ledger transaction, when the change moves money.
    pub ledger: Option<LedgerTransaction>,
}

/// What a payment is made from when it is stored ([`Payment::restore`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPayment {
    /// Its id.
    pub id: PaymentId,
    /// The order it pays for.
    pub order: OrderId,
    /// Who pays.
    pub customer: CustomerId,
    /// What the PG is asked to take.
    pub amount: PositiveMoney,
    /// The approval's PG idempotency key.
    pub approval_key: String,
    /// The PG's key for it, once known.
    pub pg_payment_key: Option<String>,
    /// Σ refunds so far.
    pub refunded: Money,
    /// Its status.
    pub status: PaymentStatus,
}

impl Payment {
    /// A `READY` payment of `amount` for `order`, with the PG idempotency
    /// key all of its approval calls will send.
    pub fn create(
        id: PaymentId,
        order: OrderId,
        customer: CustomerId,
        amount: PositiveMoney,
        approval_key: impl Into<String>,
        reason: impl Into<String>,
    ) -> Result<PaymentChange> {
        let payment = Payment::restore(StoredPayment {
            id,
            order,
            customer,
            amount,
            approval_key: approval_key.into(),
            pg_payment_key: None,
            refunded: Money::zero(amount.currency()),
            status: PaymentStatus::Ready,
        })?;
        let transition = payment.transition(None, "create", reason.into());
        Ok(PaymentChange {
            payment,
            transition,
            ledger: None,
        })
    }

    /// Rebuilds a payment from stored values, re-checking what the
    /// transitions guarantee.
    pub fn restore(stored: StoredPayment) -> Result<Self> {
        let StoredPayment {
            id,
            order,
            customer,
            amount,
            approval_key,
            pg_payment_key,
            refunded,
            status,
        } = stored;
        let approval_key = pg_key(
            "PG idempotency key",
            approval_key,
            MAX_PG_IDEMPOTENCY_KEY_LEN,
        )?;
        let pg_payment_key = pg_payment_key
            .map(|key| pg_key("PG payment key", key, MAX_PG_PAYMENT_KEY_LEN))
            .transpose()?;
        let corrupt = |what: String| DomainError::Invariant(format!("payment {id}: {what}"));
        if refunded.currency != amount.currency() {
            return Err(corrupt(format!(
                "refunds in {}, the payment in {}",
                refunded.currency,
                amount.currency()
            )));
        }
        let refunds_allowed = match status {
            PaymentStatus::PartiallyRefunded => {
                refunded.is_positive() && refunded.minor < amount.minor()
            }
            PaymentStatus::Refunded => refunded.minor == amount.minor(),
            _ => refunded.is_zero(),
        };
        if !refunds_allowed {
            return Err(corrupt(format!("{refunded} refunded in status {status}")));
        }
        let settled = !matches!(status, PaymentStatus::Ready | PaymentStatus::Unknown);
        // Every status past READY/UNKNOWN but FAILED came through an
        // approval, which records the PG's key.
        let took_money = settled && status != PaymentStatus::Failed;
        if took_money && pg_payment_key.is_none() {
            return Err(corrupt(format!(
                "status {status} without the PG's payment key"
            )));
        }
        Ok(Payment {
            id,
            order,
            customer,
            amount,
            approval_key,
            pg_payment_key,
            refunded,
            status,
        })
    }

    /// The PG approved, under its key `pg_payment_key`: `READY | UNKNOWN →
    /// APPROVED`. The customer's bill is paid.
    pub fn approve(
        &self,
        pg_payment_key: impl Into<String>,
        reason: impl Into<String>,
    ) -> Result<PaymentChange> {
        let to = self.status.on(PaymentEvent::Approve)?;
        let key = pg_key(
            "PG payment key",
            pg_payment_key.into(),
            MAX_PG_PAYMENT_KEY_LEN,
        )?;
        let ledger = LedgerTransaction::payment_approved(&self.customer, self.amount);
        let payment = Payment {
            status: to,
            pg_payment_key: Some(key),
            ..self.clone()
        };
        Ok(self.change(payment, PaymentEvent::Approve, Some(ledger), reason.into()))
    }

    /// The PG declined, or reports the payment aborted or expired:
    /// `READY | UNKNOWN → FAILED`. No money moved.
    pub fn decline(&self, reason: impl Into<String>) -> Result<PaymentChange> {
        self.step(PaymentEvent::Decline, None, reason.into())
    }

    /// The PG's answer was lost (timeout, 5xx, connection closed):
    /// `READY → UNKNOWN`, to be resolved by a status query.
    pub fn lose(&self, reason: impl Into<String>) -> Result<PaymentChange> {
        self.step(PaymentEvent::Lose, None, reason.into())
    }

    /// The order was fulfilled: `APPROVED → CONFIRMED`.
    pub fn confirm(&self, reason: impl Into<String>) -> Result<PaymentChange> {
        self.step(PaymentEvent::Confirm, None, reason.into())
    }

    /// Voided at the PG before confirmation: `APPROVED → CANCELLED`; the
    /// bill opens again. (A `READY` payment cannot be voided: its approval
    /// may be in flight; it is resolved first.)
    pub fn void(&self, reason: impl Into<String>) -> Result<PaymentChange> {
        let ledger = LedgerTransaction::payment_voided(&self.customer, self.amount);
        self.step(PaymentEvent::Void, Some(ledger), reason.into())
    }

    /// Gives back `amount` of a confirmed payment: `CONFIRMED |
    /// PARTIALLY_REFUNDED → PARTIALLY_REFUNDED`, or `REFUNDED` when nothing
    /// is left. Never more than [`Payment::refundable`].
    pub fn refund(
        &self,
        amount: PositiveMoney,
        reason: impl Into<String>,
    ) -> Result<PaymentChange> {
        let refundable = self.refundable();
        let left = refundable.checked_sub(amount.get())?;
        let event = if left.is_zero() {
            PaymentEvent::RefundRest
        } else {
            PaymentEvent::RefundPart
        };
        // The status decides first: refunding a payment that is not
        // confirmed is a state conflict whatever the amount.
        let to = self.status.on(event)?;
        if left.is_negative() {
            return Err(DomainError::ActionNotAllowed {
                entity: EntityKind::Payment,
                action: "refund",
                status: self.status.as_str(),
                reason: format!("{amount} is more than the {refundable} still refundable"),
            });
        }
        let payment = Payment {
            status: to,
            refunded: self.refunded.checked_add(amount.get())?,
            ..self.clone()
        };
        let ledger = LedgerTransaction::payment_refunded(amount);
        Ok(self.change(payment, event, Some(ledger), reason.into()))
    }

    /// What can still be refunded: the amount once confirmed, less the
    /// refunds so far; zero before confirmation.
    pub fn refundable(&self) -> Money {
        match self.status {
            PaymentStatus::Confirmed | PaymentStatus::PartiallyRefunded => Money::new(
                self.amount.minor() - self.refunded.minor,
                self.amount.currency(),
            ),
            _ => Money::zero(self.amount.currency()),
        }
    }

    fn step(
        &self,
        event: PaymentEvent,
        ledger: Option<LedgerTransaction>,
        reason: String,
    ) -> Result<PaymentChange> {
        let to = self.status.on(event)?;
        let payment = Payment {
            status: to,
            ..self.clone()
        };
        Ok(self.change(payment, event, ledger, reason))
    }

    fn change(
        &self,
        payment: Payment,
        event: PaymentEvent,
        ledger: Option<LedgerTransaction>,
        reason: String,
    ) -> PaymentChange {
        let transition = payment.transition(Some(self.status.as_str()), event.as_str(), reason);
        PaymentChange {
            payment,
            transition,
            ledger,
        }
    }

    fn transition(
        &self,
        from: Option<&'static str>,
        event: &'static str,
        reason: String,
    ) -> Transition {
        Transition {
            entity: EntityKind::Payment,
            entity_id: self.id.to_string(),
            from,
            to: self.status.as_str(),
            event,
            reason,
        }
    }

    /// Its id.
    pub fn id(&self) -> &PaymentId {
        &self.id
    }

    /// The order it pays for.
    pub fn order(&self) -> &OrderId {
        &self.order
    }

    /// Who pays.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// What the PG is asked to take.
    pub fn amount(&self) -> PositiveMoney {
        self.amount
    }

    /// The PG idempotency key of every approval call.
    pub fn approval_key(&self) -> &str {
        &self.approval_key
    }

    /// The PG's key for the payment, once it approved.
    pub fn pg_payment_key(&self) -> Option<&str> {
        self.pg_payment_key.as_deref()
    }

    /// Σ refunds so far.
    pub fn refunded(&self) -> Money {
        self.refunded
    }

    /// Its status.
    pub fn status(&self) -> PaymentStatus {
        self.status
    }
}

#[cfg(test)]
mod tests;

//! The records credit operations leave behind: uses (what refunds point
//! at) and reservations (what sagas capture or release).

use crate::domain::error::{DomainError, Result};
use crate::domain::id::{CreditUseId, CustomerId, ReservationId};
use crate::domain::money::{Credits, PositiveCredits};

/// What a debit paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreditUseKind {
    /// A feature use (`credits/use`, or a saga's capture).
    Use,
    /// A subscription period.
    SubscriptionCharge,
}

impl CreditUseKind {
    /// The stable database form.
    pub fn as_str(self) -> &'static str {
        match self {
            CreditUseKind::Use => "use",
            CreditUseKind::SubscriptionCharge => "subscription_charge",
        }
    }
}

/// One debit and how much of it has been refunded. Kept per use so refunds
/// are bounded by what *that* use charged, not by the customer's balance.
/// Invariant: `0 ≤ refunded ≤ charged`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditUse {
    id: CreditUseId,
    customer: CustomerId,
    kind: CreditUseKind,
    charged: PositiveCredits,
    refunded: Credits,
}

impl CreditUse {
    pub(super) fn new(
        id: CreditUseId,
        customer: CustomerId,
        kind: CreditUseKind,
        charged: PositiveCredits,
    ) -> Self {
        CreditUse {
            id,
            customer,
            kind,
            charged,
            refunded: Credits::ZERO,
        }
    }

    /// Rebuilds a use from stored values, refusing ones that break the
    /// invariant.
    pub fn restore(
        id: CreditUseId,
        customer: CustomerId,
        kind: CreditUseKind,
        charged: PositiveCredits,
        refunded: Credits,
    ) -> Result<Self> {
        if refunded.is_negative() || refunded > charged.get() {
            return Err(DomainError::Invariant(format!(
                "credit use {id}: refunded {refunded} must be within 0..=charged {charged}"
            )));
        }
        Ok(CreditUse {
            id,
            customer,
            kind,
            charged,
            refunded,
        })
    }

    /// The use's id (the transaction id clients refund by).
    pub fn id(&self) -> &CreditUseId {
        &self.id
    }

    /// Whose credits were spent.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// What the credits paid for.
    pub fn kind(&self) -> CreditUseKind {
        self.kind
    }

    /// Credits the use charged.
    pub fn charged(&self) -> PositiveCredits {
        self.charged
    }

    /// Credits refunded so far.
    pub fn refunded(&self) -> Credits {
        self.refunded
    }

    /// What can still be refunded: charged − refunded.
    pub fn refundable(&self) -> Credits {
        // Cannot overflow: 0 ≤ refunded ≤ charged.
        Credits(self.charged.value() - self.refunded.value())
    }

    pub(super) fn with_refunded(&self, refunded: Credits) -> Self {
        CreditUse {
            refunded,
            ..self.clone()
        }
    }
}

/// A saga's hold on credits. `held` shrinks with each capture and drops to
/// zero on release. Invariant: `held ≥ 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditReservation {
    id: ReservationId,
    customer: CustomerId,
    held: Credits,
}

impl CreditReservation {
    pub(super) fn new(id: ReservationId, customer: CustomerId, held: Credits) -> Self {
        CreditReservation { id, customer, held }
    }

    /// Rebuilds a reservation from stored values.
    pub fn restore(id: ReservationId, customer: CustomerId, held: Credits) -> Result<Self> {
        if held.is_negative() {
            return Err(DomainError::Invariant(format!(
                "reservation {id}: held {held} must not be negative"
            )));
        }
        Ok(CreditReservation { id, customer, held })
    }

    /// The reservation's id.
    pub fn id(&self) -> &ReservationId {
        &self.id
    }

    /// Whose credits are held.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// Credits still held.
    pub fn held(&self) -> Credits {
        self.held
    }

    /// Whether nothing is held any more (fully captured or released).
    pub fn is_settled(&self) -> bool {
        self.held == Credits::ZERO
    }

    pub(super) fn with_held(&self, held: Credits) -> Self {
        CreditReservation {
            held,
            ..self.clone()
        }
    }
}

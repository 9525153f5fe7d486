//! A customer's prepaid credits: balance, reservations, uses and refunds.
//!
//! Every operation takes the current state by reference and returns the new
//! state together with the ledger transaction it implies, so the caller
//! writes both in one database transaction or neither.
//!
//! How the materialised balance relates to the ledger (what the auditor
//! checks): the balance of `customer:{id}:credits` equals
//! [`CreditAccount::available`] (balance − reserved), and the balance of
//! `customer:{id}:credits_reserved` equals [`CreditAccount::reserved`].

mod grant;
mod records;

pub use grant::CreditGrant;
pub use records::{CreditReservation, CreditUse, CreditUseKind};

use super::error::{DomainError, Result, codes};
use super::id::{CreditGrantId, CreditUseId, CustomerId, ReservationId};
use super::ledger::LedgerTransaction;
use super::money::{Credits, PositiveCredits};
use super::time::Timestamp;

/// Credit rules other than the balance check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    /// A refund larger than what is left to refund on the use.
    #[error(
        "refund of {requested} credits exceeds the {remaining} still refundable on use {use_id}"
    )]
    RefundExceedsRemaining {
        /// The use being refunded.
        use_id: CreditUseId,
        /// Charged minus already refunded.
        remaining: Credits,
        /// The refund asked for.
        requested: Credits,
    },
    /// A capture larger than what the reservation still holds.
    #[error("reservation {reservation_id} holds {held} credits; cannot capture {requested}")]
    ReservationExceeded {
        /// The reservation.
        reservation_id: ReservationId,
        /// Credits it still holds.
        held: Credits,
        /// The capture asked for.
        requested: Credits,
    },
    /// Releasing a reservation that holds nothing (already captured or released).
    #[error("reservation {reservation_id} holds no credits to release")]
    NothingToRelease {
        /// The reservation.
        reservation_id: ReservationId,
    },
    /// A grant whose expiry is not after the moment it is granted.
    #[error("a grant must expire after it is made: expiresAt {expires_at} is not after now {now}")]
    ExpiryNotInFuture {
        /// The expiry asked for.
        expires_at: Timestamp,
        /// The `now` passed.
        now: Timestamp,
    },
    /// Expiring a grant that has no expiry or whose expiry has not come.
    #[error("grant {grant_id} has not expired (expires at {expires_at:?}, now {now})")]
    GrantNotExpired {
        /// The grant.
        grant_id: CreditGrantId,
        /// Its expiry, if any.
        expires_at: Option<Timestamp>,
        /// The `now` passed.
        now: Timestamp,
    },
}

impl CreditError {
    /// The API code: bad amounts are the request's fault, acting on a
    /// reservation or grant in the wrong state is a state conflict.
    pub fn code(&self) -> &'static str {
        match self {
            CreditError::RefundExceedsRemaining { .. } | CreditError::ExpiryNotInFuture { .. } => {
                codes::INVALID_REQUEST
            }
            CreditError::ReservationExceeded { .. }
            | CreditError::NothingToRelease { .. }
            | CreditError::GrantNotExpired { .. } => codes::STATE_CONFLICT,
        }
    }
}

/// The result of a credit operation: new account state, the record the
/// operation created or changed, and the ledger transaction to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditChange<R> {
    /// The account after the operation.
    pub account: CreditAccount,
    /// The grant, use or reservation created or updated.
    pub record: R,
    /// What to post, in the same database transaction.
    pub ledger: LedgerTransaction,
}

/// What a capture produces: the reservation with less held, and the use
/// that a later refund points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The reservation after the capture.
    pub reservation: CreditReservation,
    /// The spend the capture recorded.
    pub credit_use: CreditUse,
}

/// The result of expiring a grant. The ledger transaction is absent when
/// nothing was left to expire (all used, or all of it reserved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// The account after expiry.
    pub account: CreditAccount,
    /// The grant after: nothing remaining, except what was reserved.
    pub grant: CreditGrant,
    /// Credits removed from the balance.
    pub expired: Credits,
    /// What to post, if anything expired.
    pub ledger: Option<LedgerTransaction>,
}

/// One customer's credits. Invariant: `0 ≤ reserved ≤ balance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditAccount {
    customer: CustomerId,
    balance: Credits,
    reserved: Credits,
}

impl CreditAccount {
    /// A new, empty account.
    pub fn open(customer: CustomerId) -> Self {
        CreditAccount {
            customer,
            balance: Credits::ZERO,
            reserved: Credits::ZERO,
        }
    }

    /// Rebuilds an account from stored values, refusing ones that break the
    /// invariant (that would be corrupt data, not a client error).
    pub fn restore(customer: CustomerId, balance: Credits, reserved: Credits) -> Result<Self> {
        if reserved.is_negative() || reserved > balance {
            return Err(DomainError::Invariant(format!(
                "credit account of {customer}: reserved {reserved} must be within 0..=balance {balance}"
            )));
        }
        Ok(CreditAccount {
            customer,
            balance,
            reserved,
        })
    }

    /// Whose credits these are.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// All credits the customer holds, reserved ones included.
    pub fn balance(&self) -> Credits {
        self.balance
    }

    /// Credits on hold for sagas in flight.
    pub fn reserved(&self) -> Credits {
        self.reserved
    }

    /// Credits the customer can spend now: balance − reserved.
    pub fn available(&self) -> Credits {
        // Cannot overflow: 0 ≤ reserved ≤ balance.
        Credits(self.balance.0 - self.reserved.0)
    }

    /// Adds `amount` credits, optionally expiring at `expires_at` (which
    /// must be after `now`: a grant born expired is a mistake).
    pub fn grant(
        &self,
        id: CreditGrantId,
        amount: PositiveCredits,
        expires_at: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<CreditChange<CreditGrant>> {
        if let Some(expires_at) = expires_at.filter(|at| *at <= now) {
            return Err(CreditError::ExpiryNotInFuture { expires_at, now }.into());
        }
        let account = self.with_balance(self.balance.checked_add(amount.get())?);
        Ok(CreditChange {
            record: CreditGrant::new(id, self.customer.clone(), amount, expires_at),
            ledger: LedgerTransaction::credit_grant(&self.customer, amount),
            account,
        })
    }

    /// Spends `amount` on a feature use. Reserved credits are not
    /// spendable: a saga's hold must survive concurrent uses.
    pub fn debit(
        &self,
        use_id: CreditUseId,
        amount: PositiveCredits,
    ) -> Result<CreditChange<CreditUse>> {
        self.spend(use_id, amount, CreditUseKind::Use)
    }

    /// Pays a subscription period from credits. Same rules as [`debit`](Self::debit);
    /// a different ledger kind so reports can tell the two apart.
    pub fn charge_subscription(
        &self,
        use_id: CreditUseId,
        amount: PositiveCredits,
    ) -> Result<CreditChange<CreditUse>> {
        self.spend(use_id, amount, CreditUseKind::SubscriptionCharge)
    }

    fn spend(
        &self,
        use_id: CreditUseId,
        amount: PositiveCredits,
        kind: CreditUseKind,
    ) -> Result<CreditChange<CreditUse>> {
        self.check_available(amount)?;
        let ledger = match kind {
            CreditUseKind::Use => LedgerTransaction::credit_use(&self.customer, amount),
            CreditUseKind::SubscriptionCharge => {
                LedgerTransaction::subscription_charge(&self.customer, amount)
            }
        };
        Ok(CreditChange {
            account: self.with_balance(self.balance.checked_sub(amount.get())?),
            record: CreditUse::new(use_id, self.customer.clone(), kind, amount),
            ledger,
        })
    }

    /// Gives back `amount` of an earlier use. The total refunded on one use
    /// can never exceed what it charged, however the refund is split.
    pub fn refund(
        &self,
        credit_use: &CreditUse,
        amount: PositiveCredits,
    ) -> Result<CreditChange<CreditUse>> {
        self.check_owner(credit_use.customer(), "credit use")?;
        let remaining = credit_use.refundable();
        if amount.get() > remaining {
            return Err(CreditError::RefundExceedsRemaining {
                use_id: credit_use.id().clone(),
                remaining,
                requested: amount.get(),
            }
            .into());
        }
        Ok(CreditChange {
            account: self.with_balance(self.balance.checked_add(amount.get())?),
            record: credit_use.with_refunded(credit_use.refunded().checked_add(amount.get())?),
            ledger: LedgerTransaction::credit_refund(&self.customer, amount),
        })
    }

    /// Holds `amount` for a saga; it stays in the balance but is no longer
    /// available until captured or released.
    pub fn reserve(
        &self,
        id: ReservationId,
        amount: PositiveCredits,
    ) -> Result<CreditChange<CreditReservation>> {
        self.check_available(amount)?;
        Ok(CreditChange {
            account: self.with_reserved(self.reserved.checked_add(amount.get())?),
            record: CreditReservation::new(id, self.customer.clone(), amount.get()),
            ledger: LedgerTransaction::credit_reserve(&self.customer, amount),
        })
    }

    /// Lets go of everything `reservation` still holds (after a failed step,
    /// or the unused rest after a partial capture).
    pub fn release(
        &self,
        reservation: &CreditReservation,
    ) -> Result<CreditChange<CreditReservation>> {
        self.check_reservation(reservation)?;
        let held = PositiveCredits::try_from(reservation.held()).map_err(|_| {
            CreditError::NothingToRelease {
                reservation_id: reservation.id().clone(),
            }
        })?;
        Ok(CreditChange {
            account: self.with_reserved(self.reserved.checked_sub(held.get())?),
            record: reservation.with_held(Credits::ZERO),
            ledger: LedgerTransaction::credit_release(&self.customer, held),
        })
    }

    /// Spends `amount` of what `reservation` holds, recording it as use
    /// `use_id` (refundable like any use). Capturing less than held leaves
    /// the rest on hold for a later capture or release.
    pub fn capture(
        &self,
        reservation: &CreditReservation,
        amount: PositiveCredits,
        use_id: CreditUseId,
    ) -> Result<CreditChange<Capture>> {
        self.check_reservation(reservation)?;
        if amount.get() > reservation.held() {
            return Err(CreditError::ReservationExceeded {
                reservation_id: reservation.id().clone(),
                held: reservation.held(),
                requested: amount.get(),
            }
            .into());
        }
        let account = CreditAccount {
            customer: self.customer.clone(),
            balance: self.balance.checked_sub(amount.get())?,
            reserved: self.reserved.checked_sub(amount.get())?,
        };
        let capture = Capture {
            reservation: reservation.with_held(reservation.held().checked_sub(amount.get())?),
            credit_use: CreditUse::new(use_id, self.customer.clone(), CreditUseKind::Use, amount),
        };
        Ok(CreditChange {
            account,
            record: capture,
            ledger: LedgerTransaction::credit_capture(&self.customer, amount),
        })
    }

    /// Removes what is left of an expired grant. Takes at most the available
    /// credits: credits reserved by a saga in flight are not pulled from
    /// under it (they stay on the grant, to expire once released), and the
    /// balance never goes negative.
    pub fn expire(&self, grant: &CreditGrant, now: Timestamp) -> Result<Expiry> {
        self.check_owner(grant.customer(), "credit grant")?;
        match grant.expires_at() {
            Some(at) if at <= now => {}
            expires_at => {
                return Err(CreditError::GrantNotExpired {
                    grant_id: grant.id().clone(),
                    expires_at,
                    now,
                }
                .into());
            }
        }
        let expired = grant.remaining().min(self.available());
        let ledger = PositiveCredits::try_from(expired)
            .ok()
            .map(|amount| LedgerTransaction::credit_expiry(&self.customer, amount));
        Ok(Expiry {
            account: self.with_balance(self.balance.checked_sub(expired)?),
            // What a reservation holds stays on the grant: when the saga
            // releases it, the next expiry run takes it.
            grant: grant.with_remaining(grant.remaining().checked_sub(expired)?),
            expired,
            ledger,
        })
    }

    fn check_available(&self, amount: PositiveCredits) -> Result<()> {
        if amount.get() > self.available() {
            return Err(DomainError::InsufficientCredits {
                available: self.available(),
                requested: amount.get(),
            });
        }
        Ok(())
    }

    fn check_reservation(&self, reservation: &CreditReservation) -> Result<()> {
        self.check_owner(reservation.customer(), "reservation")?;
        if reservation.held() > self.reserved {
            return Err(DomainError::Invariant(format!(
                "reservation {} holds {} but the account of {} has only {} reserved",
                reservation.id(),
                reservation.held(),
                self.customer,
                self.reserved
            )));
        }
        Ok(())
    }

    /// A record of another customer reaching this account is a bug in the
    /// caller's lookup, never something a client can ask for.
    fn check_owner(&self, owner: &CustomerId, what: &str) -> Result<()> {
        if owner != &self.customer {
            return Err(DomainError::Invariant(format!(
                "{what} of customer {owner} applied to the credit account of {}",
                self.customer
            )));
        }
        Ok(())
    }

    fn with_balance(&self, balance: Credits) -> Self {
        CreditAccount {
            customer: self.customer.clone(),
            balance,
            reserved: self.reserved,
        }
    }

    fn with_reserved(&self, reserved: Credits) -> Self {
        CreditAccount {
            customer: self.customer.clone(),
            balance: self.balance,
            reserved,
        }
    }
}

#[cfg(test)]
mod tests;

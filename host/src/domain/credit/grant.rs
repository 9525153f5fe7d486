//! Credit grants and which of them a spend consumes.
//!
//! The balance is one number, but grants expire separately, so the store
//! also keeps each grant's `remaining`. [`CreditGrant::allocate`] decides
//! which grants a spend comes out of — soonest-expiring first, so customers
//! lose as little as possible to expiry — and expiry then removes only what
//! is left of the grant that lapsed.

use crate::domain::error::{DomainError, Result};
use crate::domain::id::{CreditGrantId, CustomerId};
use crate::domain::money::{Credits, PositiveCredits};
use crate::domain::time::Timestamp;

/// One grant of credits. Invariant: `0 ≤ remaining ≤ granted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditGrant {
    id: CreditGrantId,
    customer: CustomerId,
    granted: PositiveCredits,
    remaining: Credits,
    expires_at: Option<Timestamp>,
}

impl CreditGrant {
    pub(super) fn new(
        id: CreditGrantId,
        customer: CustomerId,
        granted: PositiveCredits,
        expires_at: Option<Timestamp>,
    ) -> Self {
        CreditGrant {
            id,
            customer,
            granted,
            remaining: granted.get(),
            expires_at,
        }
    }

    /// Rebuilds a grant from stored values, refusing ones that break the
    /// invariant.
    pub fn restore(
        id: CreditGrantId,
        customer: CustomerId,
        granted: PositiveCredits,
        remaining: Credits,
        expires_at: Option<Timestamp>,
    ) -> Result<Self> {
        if remaining.is_negative() || remaining > granted.get() {
            return Err(DomainError::Invariant(format!(
                "credit grant {id}: remaining {remaining} must be within 0..=granted {granted}"
            )));
        }
        Ok(CreditGrant {
            id,
            customer,
            granted,
            remaining,
            expires_at,
        })
    }

    /// The grant's id.
    pub fn id(&self) -> &CreditGrantId {
        &self.id
    }

    /// Who received it.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// Credits granted.
    pub fn granted(&self) -> PositiveCredits {
        self.granted
    }

    /// Credits of this grant not yet spent or expired.
    pub fn remaining(&self) -> Credits {
        self.remaining
    }

    /// When unspent credits lapse; `None` never.
    pub fn expires_at(&self) -> Option<Timestamp> {
        self.expires_at
    }

    /// Whether the grant has lapsed at `now`.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    pub(super) fn with_remaining(&self, remaining: Credits) -> Self {
        CreditGrant {
            remaining,
            ..self.clone()
        }
    }

    /// Takes `amount` out of `grants`, soonest expiry first (never-expiring
    /// grants last, ties by id so the result is deterministic). Returns only
    /// the grants that changed. A spend larger than the grants cover is not
    /// an error: the rest came from refunded credits, which belong to no
    /// grant.
    ///
    /// A grant that has lapsed but not been expired yet is still in the
    /// balance, so it is spendable — and spent first, having the soonest
    /// expiry. Skipping it would let a spend take credits that never expire
    /// while the lapsed ones wait, and the expiry would then take from
    /// those.
    pub fn allocate(grants: &[CreditGrant], amount: Credits) -> Vec<CreditGrant> {
        let mut order: Vec<&CreditGrant> = grants
            .iter()
            .filter(|g| g.remaining.is_positive())
            .collect();
        order.sort_by(|a, b| {
            // `None` (never expires) sorts after every instant.
            let key = |g: &CreditGrant| (g.expires_at.is_none(), g.expires_at, g.id.clone());
            key(a).cmp(&key(b))
        });
        let mut left = amount.value().max(0);
        let mut changed = Vec::new();
        for grant in order {
            if left == 0 {
                break;
            }
            let take = left.min(grant.remaining.value());
            left -= take;
            changed.push(grant.with_remaining(Credits(grant.remaining.value() - take)));
        }
        changed
    }
}

//! The subscription status table, independent of flags and dates; the
//! table itself is drawn in the parent module's documentation.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::error::{DomainError, Result};
use crate::domain::history::EntityKind;

/// Where a subscription is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionStatus {
    /// In a free trial; nothing paid yet.
    Trialing,
    /// Paid for the current period.
    Active,
    /// A renewal (or the first charge after a trial) failed; awaiting payment.
    PastDue,
    /// Ended early at the customer's or tenant's request. Terminal.
    Cancelled,
    /// Ran to the end of its last period (or dunning gave up). Terminal.
    Expired,
}

/// What can happen to a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionEvent {
    /// The trial ended and the first period was paid.
    EndTrial,
    /// The next period was paid.
    Renew,
    /// The charge due at the end of the period failed.
    PaymentFailed,
    /// A past-due charge was paid after all.
    PaymentRecovered,
    /// Cancel now.
    CancelNow,
    /// Cancel when the current period ends.
    CancelAtPeriodEnd,
    /// Undo a scheduled cancellation.
    Resume,
    /// The last period ended (or dunning gave up).
    Expire,
    /// Switch plan now (proration is the policy's job).
    ChangePlanNow,
    /// Switch plan at the next renewal.
    ChangePlanAtPeriodEnd,
}

impl SubscriptionStatus {
    /// Every status, for exhaustive checks.
    pub const ALL: [SubscriptionStatus; 5] = [
        SubscriptionStatus::Trialing,
        SubscriptionStatus::Active,
        SubscriptionStatus::PastDue,
        SubscriptionStatus::Cancelled,
        SubscriptionStatus::Expired,
    ];

    /// The stable database and API form, e.g. `"PAST_DUE"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Trialing => "TRIALING",
            SubscriptionStatus::Active => "ACTIVE",
            SubscriptionStatus::PastDue => "PAST_DUE",
            SubscriptionStatus::Cancelled => "CANCELLED",
            SubscriptionStatus::Expired => "EXPIRED",
        }
    }

    /// Whether no event applies any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Cancelled | SubscriptionStatus::Expired
        )
    }

    /// The status table (module docs): where `event` leads from `self`.
    pub fn on(self, event: SubscriptionEvent) -> Result<SubscriptionStatus> {
        use SubscriptionEvent as E;
        use SubscriptionStatus as S;
        let next = match (self, event) {
            (S::Trialing, E::EndTrial) => S::Active,
            (S::Active, E::Renew) => S::Active,
            (S::Trialing | S::Active, E::PaymentFailed) => S::PastDue,
            (S::PastDue, E::PaymentRecovered) => S::Active,
            (S::Trialing | S::Active | S::PastDue, E::CancelNow) => S::Cancelled,
            (
                S::Trialing | S::Active,
                E::CancelAtPeriodEnd | E::Resume | E::ChangePlanNow | E::ChangePlanAtPeriodEnd,
            ) => self,
            (S::Trialing | S::Active | S::PastDue, E::Expire) => S::Expired,
            _ => {
                return Err(DomainError::IllegalTransition {
                    entity: EntityKind::Subscription,
                    action: event.as_str(),
                    from: self.as_str(),
                    to: event.target().map(SubscriptionStatus::as_str),
                });
            }
        };
        Ok(next)
    }
}

impl fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SubscriptionStatus {
    type Err = DomainError;
    fn from_str(value: &str) -> Result<Self> {
        SubscriptionStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or_else(|| {
                DomainError::Invariant(format!("`{value}` is not a subscription status"))
            })
    }
}

impl SubscriptionEvent {
    /// Every event, for exhaustive checks.
    pub const ALL: [SubscriptionEvent; 10] = [
        SubscriptionEvent::EndTrial,
        SubscriptionEvent::Renew,
        SubscriptionEvent::PaymentFailed,
        SubscriptionEvent::PaymentRecovered,
        SubscriptionEvent::CancelNow,
        SubscriptionEvent::CancelAtPeriodEnd,
        SubscriptionEvent::Resume,
        SubscriptionEvent::Expire,
        SubscriptionEvent::ChangePlanNow,
        SubscriptionEvent::ChangePlanAtPeriodEnd,
    ];

    /// The event's stable name, used in errors and history rows.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionEvent::EndTrial => "end_trial",
            SubscriptionEvent::Renew => "renew",
            SubscriptionEvent::PaymentFailed => "payment_failed",
            SubscriptionEvent::PaymentRecovered => "payment_recovered",
            SubscriptionEvent::CancelNow => "cancel",
            SubscriptionEvent::CancelAtPeriodEnd => "cancel_at_period_end",
            SubscriptionEvent::Resume => "resume",
            SubscriptionEvent::Expire => "expire",
            SubscriptionEvent::ChangePlanNow => "change_plan",
            SubscriptionEvent::ChangePlanAtPeriodEnd => "change_plan_at_period_end",
        }
    }

    /// The status the event moves to, or `None` for events that keep the
    /// status (they change a flag or the plan).
    pub fn target(self) -> Option<SubscriptionStatus> {
        match self {
            SubscriptionEvent::EndTrial
            | SubscriptionEvent::Renew
            | SubscriptionEvent::PaymentRecovered => Some(SubscriptionStatus::Active),
            SubscriptionEvent::PaymentFailed => Some(SubscriptionStatus::PastDue),
            SubscriptionEvent::CancelNow => Some(SubscriptionStatus::Cancelled),
            SubscriptionEvent::Expire => Some(SubscriptionStatus::Expired),
            SubscriptionEvent::CancelAtPeriodEnd
            | SubscriptionEvent::Resume
            | SubscriptionEvent::ChangePlanNow
            | SubscriptionEvent::ChangePlanAtPeriodEnd => None,
        }
    }
}

//! Subscriptions: trial, paid periods, past due, cancellation, expiry and
//! plan changes.
//!
//! The domain never computes a calendar: the caller passes each new period
//! as the tenant's subscription policy quoted it, and the domain checks that
//! it starts exactly where the current one ends. Money is not handled here
//! either: the caller charges (credits or an order) and then reports the
//! outcome as `renew` / `payment_failed` / `payment_recovered`.
//!
//! The status table ([`SubscriptionStatus::on`]); columns are the status
//! *before*, cells the status after, "—" is
//! [`DomainError::IllegalTransition`] (`PAY_004`):
//!
//! | event \ from              | TRIALING  | ACTIVE    | PAST_DUE  | CANCELLED | EXPIRED |
//! |---------------------------|-----------|-----------|-----------|-----------|---------|
//! | end_trial                 | ACTIVE    | —         | —         | —         | —       |
//! | renew                     | —         | ACTIVE    | —         | —         | —       |
//! | payment_failed            | PAST_DUE  | PAST_DUE  | —         | —         | —       |
//! | payment_recovered         | —         | —         | ACTIVE    | —         | —       |
//! | cancel (now)              | CANCELLED | CANCELLED | CANCELLED | —         | —       |
//! | cancel_at_period_end      | TRIALING  | ACTIVE    | —         | —         | —       |
//! | resume                    | TRIALING  | ACTIVE    | —         | —         | —       |
//! | expire                    | EXPIRED   | EXPIRED   | EXPIRED   | —         | —       |
//! | change_plan (immediate)   | TRIALING  | ACTIVE    | —         | —         | —       |
//! | change_plan_at_period_end | TRIALING  | ACTIVE    | —         | —         | —       |
//!
//! Rules on top of the table, checked by [`Subscription`]'s methods
//! ([`DomainError::ActionNotAllowed`] / [`DomainError::NotYetDue`], both
//! `PAY_004`):
//! - `end_trial`, `renew` and `payment_failed` are due only once the current
//!   period has ended (`now ≥ period end`), else [`DomainError::NotYetDue`].
//! - `cancel_at_period_end` sets a flag (twice is refused); `resume` clears
//!   it (refused when not set). While the flag is set the subscription
//!   cannot renew, end its trial, fail a payment or schedule a plan change:
//!   the only way forward is `expire` at the period end (or `cancel` now).
//! - `expire` from TRIALING/ACTIVE needs the flag and `now ≥ period end`;
//!   from PAST_DUE it is the scheduler giving up on dunning, allowed any time.
//! - A plan change at period end is kept as `pending_plan` and applied by
//!   the next `end_trial`, `renew` or `payment_recovered` (it survives a
//!   failed payment); an immediate change replaces the plan and drops any
//!   pending one; scheduling a cancellation drops it too. Changing to the
//!   current plan is an invalid request (`REQ_001`).
//! - A plan change during a trial follows the policy's answer: the trial
//!   goes on on the new plan, never longer ([`Subscription::change_plan_in_trial`]),
//!   or it ends at the change and the first paid period starts there
//!   ([`Subscription::change_plan_now`], then [`Subscription::end_trial_early`]:
//!   an `end_trial` that is due before the period end because the customer
//!   chose a plan whose trial is over).

mod status;

pub use status::{SubscriptionEvent, SubscriptionStatus};

use super::error::{DomainError, Result};
use super::history::{EntityKind, Transition};
use super::id::{CustomerId, PlanId, SubscriptionId};
use super::time::{Period, Timestamp};

/// A subscription's stored fields, for [`Subscription::restore`] and for the
/// store to write back ([`Subscription::to_parts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionParts {
    /// The subscription's id.
    pub id: SubscriptionId,
    /// The subscriber.
    pub customer: CustomerId,
    /// The plan in force.
    pub plan: PlanId,
    /// A plan change scheduled for the next period.
    pub pending_plan: Option<PlanId>,
    /// The status.
    pub status: SubscriptionStatus,
    /// The current period (the trial, while trialing).
    pub period: Period,
    /// Start of the first paid period; the policy's billing anchor.
    pub anchor: Option<Timestamp>,
    /// Whether it ends (expires) when the current period ends.
    pub cancel_at_period_end: bool,
}

/// The result of a subscription event: new state and its history row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionChange {
    /// The subscription after the event.
    pub subscription: Subscription,
    /// The history row (`from == to` for events that keep the status).
    pub transition: Transition,
}

/// A customer's subscription to a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    parts: SubscriptionParts,
}

impl Subscription {
    /// Starts with a free trial over `trial`; nothing is paid yet, so there
    /// is no billing anchor until the trial ends.
    pub fn start_trial(
        id: SubscriptionId,
        customer: CustomerId,
        plan: PlanId,
        trial: Period,
        reason: impl Into<String>,
    ) -> SubscriptionChange {
        Self::created(
            id,
            customer,
            plan,
            trial,
            SubscriptionStatus::Trialing,
            reason.into(),
        )
    }

    /// Starts paid: `period` is the first paid period and its start the
    /// billing anchor.
    pub fn start(
        id: SubscriptionId,
        customer: CustomerId,
        plan: PlanId,
        period: Period,
        reason: impl Into<String>,
    ) -> SubscriptionChange {
        Self::created(
            id,
            customer,
            plan,
            period,
            SubscriptionStatus::Active,
            reason.into(),
        )
    }

    fn created(
        id: SubscriptionId,
        customer: CustomerId,
        plan: PlanId,
        period: Period,
        status: SubscriptionStatus,
        reason: String,
    ) -> SubscriptionChange {
        let anchor = (status == SubscriptionStatus::Active).then_some(period.start());
        let subscription = Subscription {
            parts: SubscriptionParts {
                id,
                customer,
                plan,
                pending_plan: None,
                status,
                period,
                anchor,
                cancel_at_period_end: false,
            },
        };
        let transition = subscription.transition(None, "create", reason);
        SubscriptionChange {
            subscription,
            transition,
        }
    }

    /// Rebuilds a subscription from stored fields, refusing combinations no
    /// sequence of events can produce (corrupt data).
    pub fn restore(parts: SubscriptionParts) -> Result<Self> {
        use SubscriptionStatus as S;
        let broken = |why: &str| {
            Err(DomainError::Invariant(format!(
                "subscription {}: {why}",
                parts.id
            )))
        };
        if parts.pending_plan.as_ref() == Some(&parts.plan) {
            return broken("the pending plan is the current plan");
        }
        if parts.status.is_terminal()
            && (parts.pending_plan.is_some() || parts.cancel_at_period_end)
        {
            return broken("an ended subscription has a pending plan or scheduled cancellation");
        }
        if parts.status == S::PastDue && parts.cancel_at_period_end {
            return broken("a past-due subscription has a scheduled cancellation");
        }
        match (parts.status, parts.anchor) {
            (S::Trialing, Some(_)) => broken("a trialing subscription has a billing anchor"),
            (S::Active, None) => broken("an active subscription has no billing anchor"),
            _ => Ok(Subscription { parts }),
        }
    }

    /// The stored fields.
    pub fn to_parts(&self) -> SubscriptionParts {
        self.parts.clone()
    }

    /// The subscription's id.
    pub fn id(&self) -> &SubscriptionId {
        &self.parts.id
    }

    /// The subscriber.
    pub fn customer(&self) -> &CustomerId {
        &self.parts.customer
    }

    /// The plan in force.
    pub fn plan(&self) -> &PlanId {
        &self.parts.plan
    }

    /// The plan the next period will be on, if a change is scheduled.
    pub fn pending_plan(&self) -> Option<&PlanId> {
        self.parts.pending_plan.as_ref()
    }

    /// The status.
    pub fn status(&self) -> SubscriptionStatus {
        self.parts.status
    }

    /// The current period (the trial, while trialing; the last paid
    /// period, while past due).
    pub fn period(&self) -> Period {
        self.parts.period
    }

    /// Start of the first paid period, the policy's billing anchor.
    pub fn anchor(&self) -> Option<Timestamp> {
        self.parts.anchor
    }

    /// Whether it will expire at the end of the current period.
    pub fn cancels_at_period_end(&self) -> bool {
        self.parts.cancel_at_period_end
    }

    /// The trial ended and the first paid period `next` was paid.
    pub fn end_trial(
        &self,
        next: Period,
        now: Timestamp,
        reason: impl Into<String>,
    ) -> Result<SubscriptionChange> {
        let event = SubscriptionEvent::EndTrial;
        self.check(event)?;
        self.refuse_if_cancelling(event)?;
        self.check_due(event, now)?;
        self.start_next_period(event, next, reason.into())
    }

    /// The next period `next` was paid.
    pub fn renew(
        &self,
        next: Period,
        now: Timestamp,
        reason: impl Into<String>,
    ) -> Result<SubscriptionChange> {
        let event = SubscriptionEvent::Renew;
        self.check(event)?;
        self.refuse_if_cancelling(event)?;
        self.check_due(event, now)?;
        self.start_next_period(event, next, reason.into())
    }

    /// The charge for the next period failed. The period stays the last
    /// paid one, so a later recovery continues from its end.
    pub fn payment_failed(
        &self,
        now: Timestamp,
        reason: impl Into<String>,
    ) -> Result<SubscriptionChange> {
        let event = SubscriptionEvent::PaymentFailed;
        let status = self.check(event)?;
        self.refuse_if_cancelling(event)?;
        self.check_due(event, now)?;
        let mut parts = self.parts.clone();
        parts.status = status;
        // A scheduled plan change waits for the period it was meant for.
        Ok(self.changed(parts, event, reason.into()))
    }

    /// A past-due charge for `next` was paid: active again from `next`.
    pub fn payment_recovered(
        &self,
        next: Period,
        reason: impl Into<String>,
    ) -> Result<SubscriptionChange> {
        let event = SubscriptionEvent::PaymentRecovered;
        self.check(event)?;
        self.start_next_period(event, next, reason.into())
    }

    /// Ends the subscription now.
    pub fn cancel_now(&self, reason: impl Into<String>) -> Result<SubscriptionChange> {
        let event = SubscriptionEvent::CancelNow;
        let status = self.check(event)?;
        Ok(self.ended(status, event, reason.into()))
    }

    /// Schedules the end for the end of the current period. Drops a pending
    /// plan change: there will be no next period to apply it to.
    pub fn cancel_at_period_end(&self, reason: impl Into<String>) -> Result<SubscriptionChange> {
        let event = SubscriptionEvent::CancelAtPeriodEnd;
        self.check(event)?;
        self.refuse_if_cancelling(event)?;
        let mut parts = self.parts.clone();
        parts.cancel_at_period_end = true;
        parts.pending_plan = None;
        Ok(self.changed(parts, event, reason.into()))
    }

    /// Undoes a scheduled cancellation.
    pub fn resume(&self, reason: impl Into<String>) -> Result<SubscriptionChange> {
        let event = SubscriptionEvent::Resume;
        self.check(event)?;
        if !self.parts.cancel_at_period_end {
            return Err(self.not_allowed(event, "no cancellation is scheduled"));
        }
        let mut parts = self.parts.clone();
        parts.cancel_at_period_end = false;
        Ok(self.changed(parts, event, reason.into()))
    }

    /// Ends a subscription whose last period is over: one scheduled to
    /// cancel at period end (once `now ≥ period end`), or a past-due one
    /// the scheduler has given up on.
    pub fn expire(&self, now: Timestamp, reason: impl Into<String>) -> Result<SubscriptionChange> {
        let event = SubscriptionEvent::Expire;
        let status = self.check(event)?;
        if self.parts.status != SubscriptionStatus::PastDue {
            if !self.parts.cancel_at_period_end {
                return Err(self.not_allowed(
                    event,
                    "it renews at period end; schedule a cancellation at period end first",
                ));
            }
            self.check_due(event, now)?;
        }
        Ok(self.ended(status, event, reason.into()))
    }

    /// Switches to `plan` now. Proration is priced by the policy and charged
    /// by the caller; the period is unchanged.
    pub fn change_plan_now(
        &self,
        plan: PlanId,
        reason: impl Into<String>,
    ) -> Result<SubscriptionChange> {
        let event = SubscriptionEvent::ChangePlanNow;
        self.check(event)?;
        self.check_new_plan(&plan)?;
        let mut parts = self.parts.clone();
        parts.plan = plan;
        parts.pending_plan = None;
        Ok(self.changed(parts, event, reason.into()))
    }

    /// Switches to `plan` during the free trial when the policy lets the
    /// trial go on on the new plan until `trial_end` (never past the current
    /// trial end). The trial keeps its start: the policy prices a later
    /// change as if the customer had begun on the new plan then.
    pub fn change_plan_in_trial(
        &self,
        plan: PlanId,
        trial_end: Timestamp,
        now: Timestamp,
        reason: impl Into<String>,
    ) -> Result<SubscriptionChange> {
        let event = SubscriptionEvent::ChangePlanNow;
        self.check(event)?;
        if self.parts.status != SubscriptionStatus::Trialing {
            return Err(self.not_allowed(event, "only a trialing subscription has a trial"));
        }
        self.check_new_plan(&plan)?;
        if trial_end <= now || trial_end > self.parts.period.end() {
            return Err(DomainError::invalid(
                "trial",
                format!(
                    "the new trial end ({trial_end}) must be after now ({now}) and not after \
                     the current trial end ({})",
                    self.parts.period.end()
                ),
            ));
        }
        let mut parts = self.parts.clone();
        parts.plan = plan;
        parts.pending_plan = None;
        parts.period = Period::new(self.parts.period.start(), trial_end)?;
        Ok(self.changed(parts, event, reason.into()))
    }

    /// Ends the free trial early: a plan change started the first paid
    /// period `next` inside the trial (the policy's answer to a change to a
    /// plan whose own trial is already over). `next` becomes the billing
    /// anchor. Call it after [`Subscription::change_plan_now`], so history
    /// shows the plan change and then the trial ending.
    pub fn end_trial_early(
        &self,
        next: Period,
        reason: impl Into<String>,
    ) -> Result<SubscriptionChange> {
        let event = SubscriptionEvent::EndTrial;
        self.check(event)?;
        self.refuse_if_cancelling(event)?;
        let trial = self.parts.period;
        if next.start() < trial.start() || next.start() > trial.end() {
            return Err(DomainError::invalid(
                "period",
                format!(
                    "the first paid period must start within the trial ({} – {}), not at {}",
                    trial.start(),
                    trial.end(),
                    next.start()
                ),
            ));
        }
        let mut parts = self.parts.clone();
        parts.status = SubscriptionStatus::Active;
        parts.period = next;
        parts.anchor = Some(next.start());
        parts.pending_plan = None;
        Ok(self.changed(parts, event, reason.into()))
    }

    /// Schedules `plan` for the next period (replacing any earlier schedule).
    pub fn change_plan_at_period_end(
        &self,
        plan: PlanId,
        reason: impl Into<String>,
    ) -> Result<SubscriptionChange> {
        let event = SubscriptionEvent::ChangePlanAtPeriodEnd;
        self.check(event)?;
        self.refuse_if_cancelling(event)?;
        self.check_new_plan(&plan)?;
        let mut parts = self.parts.clone();
        parts.pending_plan = Some(plan);
        Ok(self.changed(parts, event, reason.into()))
    }

    /// Moves into `next`: applies the pending plan, sets the anchor if this
    /// is the first paid period, and becomes ACTIVE.
    fn start_next_period(
        &self,
        event: SubscriptionEvent,
        next: Period,
        reason: String,
    ) -> Result<SubscriptionChange> {
        self.parts.period.check_followed_by(&next)?;
        let mut parts = self.parts.clone();
        parts.status = SubscriptionStatus::Active;
        parts.period = next;
        parts.anchor = parts.anchor.or(Some(next.start()));
        if let Some(plan) = parts.pending_plan.take() {
            parts.plan = plan;
        }
        Ok(self.changed(parts, event, reason))
    }

    fn ended(
        &self,
        status: SubscriptionStatus,
        event: SubscriptionEvent,
        reason: String,
    ) -> SubscriptionChange {
        let mut parts = self.parts.clone();
        parts.status = status;
        parts.cancel_at_period_end = false;
        parts.pending_plan = None;
        self.changed(parts, event, reason)
    }

    fn check(&self, event: SubscriptionEvent) -> Result<SubscriptionStatus> {
        self.parts.status.on(event)
    }

    fn refuse_if_cancelling(&self, event: SubscriptionEvent) -> Result<()> {
        if self.parts.cancel_at_period_end {
            return Err(self.not_allowed(
                event,
                "a cancellation is scheduled for the end of the period; resume it first",
            ));
        }
        Ok(())
    }

    fn check_due(&self, event: SubscriptionEvent, now: Timestamp) -> Result<()> {
        let due_at = self.parts.period.end();
        if now < due_at {
            return Err(DomainError::NotYetDue {
                entity: EntityKind::Subscription,
                action: event.as_str(),
                due_at,
                now,
            });
        }
        Ok(())
    }

    fn check_new_plan(&self, plan: &PlanId) -> Result<()> {
        if plan == &self.parts.plan {
            return Err(DomainError::invalid(
                "planId",
                format!("the subscription is already on plan {plan}"),
            ));
        }
        Ok(())
    }

    fn not_allowed(&self, event: SubscriptionEvent, reason: &str) -> DomainError {
        DomainError::ActionNotAllowed {
            entity: EntityKind::Subscription,
            action: event.as_str(),
            status: self.parts.status.as_str(),
            reason: reason.to_string(),
        }
    }

    fn changed(
        &self,
        parts: SubscriptionParts,
        event: SubscriptionEvent,
        reason: String,
    ) -> SubscriptionChange {
        let subscription = Subscription { parts };
        let transition = subscription.transition(Some(self.parts.status), event.as_str(), reason);
        SubscriptionChange {
            subscription,
            transition,
        }
    }

    fn transition(
        &self,
        from: Option<SubscriptionStatus>,
        event: &'static str,
        reason: String,
    ) -> Transition {
        Transition {
            entity: EntityKind::Subscription,
            entity_id: self.parts.id.to_string(),
            from: from.map(SubscriptionStatus::as_str),
            to: self.parts.status.as_str(),
            event,
            reason,
        }
    }
}

#[cfg(test)]
mod tests;

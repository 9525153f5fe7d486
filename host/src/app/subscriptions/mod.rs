//! Subscriptions: create (a trial or a paid first period, as the tenant's
//! `subscription` policy quotes it), read, change plan (now, prorated by the
//! policy, or at period end), cancel (now or at period end), and the
//! scheduler that ends trials, renews and expires them.
//!
//! **Who computes what.** The policy owns every price and every calendar:
//! the host sends `start` / `renewal` (with the billing anchor) /
//! `plan-change` requests and takes periods from the quote's `subscription`
//! terms; the domain ([`crate::domain::subscription`]) checks that the
//! periods chain and that the status allows the event.
//!
//! **How a charge is paid** (tenant setting `subscriptions.pay_from_credits`,
//! see `charge.rs`):
//! - `true`: the money total is converted into credits at the tenant's
//!   `credits_per_major_unit` (rounded up to a whole credit) and debited
//!   like a credit use (kind `subscription_charge`), never past the
//!   available balance. Short of credits at creation or on an immediate
//!   plan change → `PAY_001`, nothing written; at a renewal → the
//!   subscription goes `PAST_DUE` (and the scheduler retries each tick).
//!   A negative plan-change total (credit owed) is granted back as credits.
//! - `false`: a `PENDING` order is left for the charge and the subscription
//!   moves on (`ACTIVE`, next period): collecting the order is the payment
//!   step's job, not the scheduler's. A credit owed is reported in the
//!   answer and the event, not paid out.
//!
//! **Transactions.** Each effect is one transaction: the guarded update
//! (on the version read before pricing), the history rows, one event under
//! the subscription's business transaction id, and — under ids of their
//! own — the credit debit or grant or the order, each with its ledger
//! postings and its own event.

pub(super) mod card;
mod charge;
mod commands;
mod create;
mod scheduler;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use charge::{ChargeInfo, PaymentMethod};
pub use scheduler::{DUNNING_WINDOW_MS, SchedulerSummary};

use super::App;
use super::customers::{Customer, not_found};
use super::error::{AppError, Result};
use crate::config::PricingKind;
use crate::domain::subscription::{
    Subscription, SubscriptionChange, SubscriptionParts, SubscriptionStatus,
};
use crate::domain::{CustomerId, Period, PlanId, SubscriptionId, Timestamp, Transition};
use crate::policy::registry::{Binding, CallContext};
use crate::policy::types;
use crate::store::{Queries, SubscriptionQueries, SubscriptionRecord};

pub use super::credits::Render;

/// Longest cancellation reason, in bytes.
pub const MAX_REASON_LEN: usize = 500;

/// `POST /subscriptions`.
#[derive(Debug, Clone)]
pub struct CreateCommand {
    /// The subscriber.
    pub customer_id: String,
    /// The plan (the policy's plan id).
    pub plan_id: String,
    /// Kept with the subscription.
    pub metadata: BTreeMap<String, String>,
}

/// When a plan change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Now, prorated by the policy.
    Immediate,
    /// At the next renewal.
    PeriodEnd,
}

/// `POST /subscriptions/{id}/change-plan`.
#[derive(Debug, Clone)]
pub struct ChangePlanCommand {
    /// The subscription.
    pub subscription_id: String,
    /// The new plan.
    pub plan_id: String,
    /// Now or at period end.
    pub timing: Timing,
}

/// `POST /subscriptions/{id}/cancel`.
#[derive(Debug, Clone)]
pub struct CancelCommand {
    /// The subscription.
    pub subscription_id: String,
    /// Expire at the end of the current period (default) or end now.
    pub at_period_end: bool,
    /// Why (history).
    pub reason: Option<String>,
}

/// `POST /subscriptions/{id}/resume`: withdraws a cancellation scheduled
/// for period end.
#[derive(Debug, Clone)]
pub struct ResumeCommand {
    /// The subscription.
    pub subscription_id: String,
    /// Why (history).
    pub reason: Option<String>,
}

/// A subscription as the API shows it.
#[derive(Debug, Clone)]
pub struct SubscriptionView {
    /// Its id.
    pub subscription_id: String,
    /// The subscriber.
    pub customer_id: String,
    /// The plan in force.
    pub plan_id: String,
    /// Scheduled for the next period.
    pub pending_plan_id: Option<String>,
    /// Status.
    pub status: String,
    /// Current period start.
    pub current_period_start: i64,
    /// Current period end.
    pub current_period_end: i64,
    /// End of the trial while trialing.
    pub trial_end: Option<i64>,
    /// The billing anchor.
    pub anchor: Option<i64>,
    /// Expires at the period end.
    pub cancel_at_period_end: bool,
    /// The tenant's metadata.
    pub metadata: BTreeMap<String, String>,
    /// Version (+1 per change).
    pub version: i64,
    /// Created.
    pub created_at: i64,
    /// Last changed.
    pub updated_at: i64,
}

impl SubscriptionView {
    fn of(record: &SubscriptionRecord) -> Self {
        SubscriptionView {
            subscription_id: record.subscription_id.clone(),
            customer_id: record.customer_id.clone(),
            plan_id: record.plan_id.clone(),
            pending_plan_id: record.pending_plan_id.clone(),
            status: record.status.clone(),
            current_period_start: record.period_start,
            current_period_end: record.period_end,
            trial_end: (record.status == SubscriptionStatus::Trialing.as_str())
                .then_some(record.period_end),
            anchor: record.anchor,
            cancel_at_period_end: record.cancel_at_period_end,
            metadata: serde_json::from_str(&record.metadata).unwrap_or_default(),
            version: record.version,
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// What a command did: the subscription after it, and the charge.
#[derive(Debug, Clone)]
pub struct SubscriptionOutcome {
    /// The subscription after the command.
    pub subscription: SubscriptionView,
    /// The charge (or credit) the command priced, when it priced one.
    pub charge: Option<ChargeInfo>,
    /// The subscription change's business transaction id.
    pub transaction_id: String,
}

impl App {
    /// One of the tenant's subscriptions.
    pub async fn subscription(
        &self,
        tenant: &str,
        subscription_id: &str,
    ) -> Result<SubscriptionView> {
        let id = SubscriptionId::new(subscription_id)?;
        let record = self
            .store()
            .subscription(tenant, id.as_str())
            .await?
            .ok_or_else(|| subscription_not_found(id.as_str()))?;
        Ok(SubscriptionView::of(&record))
    }

    /// The tenant's subscription pricing binding.
    fn subscription_policy(&self, tenant: &str) -> Result<Arc<Binding>> {
        Ok(self.policies_for(tenant, PricingKind::Subscription)?.0)
    }

    /// What a policy call about `customer` is told.
    async fn call_context(&self, tenant: &str, customer: &str, now: i64) -> Result<CallContext> {
        let record = self
            .store()
            .customer(tenant, customer)
            .await?
            .ok_or_else(|| not_found(customer))?;
        Ok(CallContext {
            customer_id: customer.to_owned(),
            customer_attributes: Customer::policy_attributes_of(&record.attributes)?,
            now_ms: now,
        })
    }
}

pub(super) fn subscription_not_found(id: &str) -> AppError {
    AppError::NotFound(format!("no subscription `{id}`"))
}

/// A stored row as the domain's [`Subscription`].
fn restore(record: &SubscriptionRecord) -> Result<Subscription> {
    let corrupt = |what: String| {
        AppError::Internal(format!("subscription {}: {what}", record.subscription_id))
    };
    let plan = |id: &str| PlanId::new(id).map_err(|e| corrupt(e.to_string()));
    let parts = SubscriptionParts {
        id: SubscriptionId::new(&record.subscription_id).map_err(|e| corrupt(e.to_string()))?,
        customer: CustomerId::new(&record.customer_id).map_err(|e| corrupt(e.to_string()))?,
        plan: plan(&record.plan_id)?,
        pending_plan: record.pending_plan_id.as_deref().map(plan).transpose()?,
        status: record
            .status
            .parse()
            .map_err(|e: crate::domain::DomainError| corrupt(e.to_string()))?,
        period: Period::new(
            Timestamp::from_unix_millis(record.period_start),
            Timestamp::from_unix_millis(record.period_end),
        )
        .map_err(|e| corrupt(e.to_string()))?,
        anchor: record.anchor.map(Timestamp::from_unix_millis),
        cancel_at_period_end: record.cancel_at_period_end,
    };
    Subscription::restore(parts).map_err(|e| corrupt(e.to_string()))
}

/// The row after `changes` (applied in order to `before`): version +1 per
/// history row.
fn updated(
    before: &SubscriptionRecord,
    after: &Subscription,
    rows: usize,
    now: i64,
) -> SubscriptionRecord {
    let parts = after.to_parts();
    SubscriptionRecord {
        subscription_id: before.subscription_id.clone(),
        customer_id: before.customer_id.clone(),
        plan_id: parts.plan.to_string(),
        pending_plan_id: parts.pending_plan.map(|p| p.to_string()),
        status: parts.status.as_str().to_owned(),
        period_start: parts.period.start().unix_millis(),
        period_end: parts.period.end().unix_millis(),
        anchor: parts.anchor.map(Timestamp::unix_millis),
        cancel_at_period_end: parts.cancel_at_period_end,
        metadata: before.metadata.clone(),
        version: before.version + rows as i64,
        created_at: before.created_at,
        updated_at: now,
    }
}

/// The quote's period, which every subscription answer must carry.
fn terms_period(
    binding: &Binding,
    quote: &types::Quote,
) -> Result<(types::SubscriptionTerms, Period)> {
    let terms = quote.subscription.clone().ok_or_else(|| {
        super::policy::invalid_output(binding, "a subscription quote has no subscription terms")
    })?;
    let period = Period::new(
        Timestamp::from_unix_millis(terms.period_start_ms),
        Timestamp::from_unix_millis(terms.period_end_ms),
    )
    .map_err(|e| super::policy::invalid_output(binding, e.to_string()))?;
    Ok((terms, period))
}

/// A metadata entry of the quote (the first occurrence).
fn quote_meta<'q>(quote: &'q types::Quote, key: &str) -> Option<&'q str> {
    quote
        .metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The subscription event's payload: the state after.
fn event_data(
    view: &SubscriptionView,
    transaction_id: &str,
    charge: Option<&ChargeInfo>,
) -> serde_json::Value {
    serde_json::json!({
        "subscriptionId": &view.subscription_id,
        "customerId": &view.customer_id,
        "transactionId": transaction_id,
        "planId": &view.plan_id,
        "pendingPlanId": &view.pending_plan_id,
        "status": &view.status,
        "currentPeriodStart": view.current_period_start,
        "currentPeriodEnd": view.current_period_end,
        "cancelAtPeriodEnd": view.cancel_at_period_end,
        "charge": charge.map(ChargeInfo::summary),
    })
}

/// The changes a command applied, in order, and the subscription after.
struct Applied {
    after: Subscription,
    transitions: Vec<Transition>,
}

impl Applied {
    fn one(change: SubscriptionChange) -> Self {
        Applied {
            after: change.subscription,
            transitions: vec![change.transition],
        }
    }

    fn then(mut self, change: SubscriptionChange) -> Self {
        self.after = change.subscription;
        self.transitions.push(change.transition);
        self
    }
}

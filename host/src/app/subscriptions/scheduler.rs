//! The subscription scheduler: every subscription whose period has ended
//! is moved on, each in its own transaction.
//!
//! - flagged `cancel_at_period_end` → `expire` (`subscription.expired`);
//! - TRIALING → the policy prices a `renewal` at the trial end (anchor =
//!   trial end), it is paid, `end_trial` (`subscription.activated`);
//! - ACTIVE → a `renewal` from the period end with the stored anchor, on the
//!   pending plan if one is scheduled, paid, `renew`
//!   (`subscription.renewed`);
//! - too few credits (paying from credits) → `payment_failed`, PAST_DUE
//!   (`subscription.past_due`);
//! - PAST_DUE → the renewal is retried each run; once paid,
//!   `payment_recovered` (`subscription.activated`); until then nothing is
//!   written. After [`DUNNING_WINDOW_MS`] unpaid past the period end the
//!   scheduler gives up: `expire` (`subscription.expired`). So a recovery
//!   is charged for at most the one period it resumes, never for a backlog
//!   of periods the customer did not have.
//!
//! Pricing happens before the transaction; the transaction then applies
//! the change only to the row as it was read (a version guard, and on
//! PostgreSQL `FOR UPDATE SKIP LOCKED`), so two schedulers running at once
//! never renew a period twice: the second finds the row locked or moved on
//! and skips it. A failure on one subscription (a policy refusal, a bug) is
//! logged and leaves it due; the others go on.

use super::super::error::{AppError, Result};
use super::super::journal::{Recorder, event_type};
use super::super::policy::price;
use super::super::{App, RequestCtx, new_id};
use super::charge::{ChargeFor, Paid, PaymentMethod};
use super::{Applied, SubscriptionView, event_data, restore, terms_period, updated};
use crate::domain::Timestamp;

/// How long a past-due subscription is retried after its period ended
/// before it expires: 14 days.
pub const DUNNING_WINDOW_MS: i64 = 14 * 86_400_000;
use crate::domain::subscription::SubscriptionStatus;
use crate::policy::types;
use crate::store::{
    RenewalChargeRecord, RenewalQueries, RenewalTx, SubscriptionQueries, SubscriptionTx,
    Transactions, TxOps,
};

/// Subscriptions read per page of the due scan.
const PAGE: i64 = 200;

/// What one scheduler run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerSummary {
    /// Trials ended into a paid period, or past-due subscriptions paid.
    pub activated: usize,
    /// Paid periods renewed.
    pub renewed: usize,
    /// Renewals that could not be paid.
    pub past_due: usize,
    /// Ended at their period end.
    pub expired: usize,
    /// Renewals left as orders to charge to the customer's stored card
    /// (the subscription moves on once the charge is approved).
    pub card_charges: usize,
    /// Found changed or locked by someone else, or still unpaid.
    pub skipped: usize,
    /// Failed (logged; left due for the next run).
    pub failed: usize,
}

impl SchedulerSummary {
    /// Whether the run changed or failed anything (skips alone do not
    /// count: a past-due subscription is skipped on every run).
    pub fn changed_any(&self) -> bool {
        self.activated
            + self.renewed
            + self.past_due
            + self.expired
            + self.card_charges
            + self.failed
            > 0
    }
}

enum Outcome {
    Activated,
    Renewed,
    PastDue,
    Expired,
    CardCharge,
    Skipped,
}

impl App {
    /// Moves every due subscription of every tenant on (see the module
    /// docs). `serve` calls it every few seconds; tests call it after
    /// moving the clock.
    pub async fn run_subscription_scheduler(&self, now: i64) -> Result<SchedulerSummary> {
        let mut summary = SchedulerSummary::default();
        for tenant in self.tenants().iter() {
            let mut after: Option<(String, i64)> = None;
            loop {
                // One tenant's database trouble must not stop the others.
                let page = match self
                    .store()
                    .due_subscriptions(&tenant.id, now, after.as_ref(), PAGE)
                    .await
                {
                    Ok(page) => page,
                    Err(err) => {
                        tracing::warn!(
                            tenant = %tenant.id,
                            error = %err,
                            "subscriptions.scheduler_scan_failed"
                        );
                        summary.failed += 1;
                        break;
                    }
                };
                for (id, _) in &page {
                    match self.settle_due(&tenant.id, id, now).await {
                        Ok(Outcome::Activated) => summary.activated += 1,
                        Ok(Outcome::Renewed) => summary.renewed += 1,
                        Ok(Outcome::PastDue) => summary.past_due += 1,
                        Ok(Outcome::Expired) => summary.expired += 1,
                        Ok(Outcome::CardCharge) => summary.card_charges += 1,
                        Ok(Outcome::Skipped) => summary.skipped += 1,
                        Err(err) => {
                            tracing::warn!(
                                tenant = %tenant.id,
                                subscription_id = %id,
                                error = %err,
                                "subscriptions.scheduler_failed"
                            );
                            summary.failed += 1;
                        }
                    }
                }
                if (page.len() as i64) < PAGE {
                    break;
                }
                after = page.last().cloned();
            }
        }
        Ok(summary)
    }

    async fn settle_due(&self, tenant: &str, id: &str, now: i64) -> Result<Outcome> {
        let ctx = RequestCtx::system(tenant, "scheduler");
        let Some(record) = self.store().subscription(tenant, id).await? else {
            return Ok(Outcome::Skipped);
        };
        let sub = restore(&record)?;
        let at = Timestamp::from_unix_millis(now);
        if record.period_end > now || sub.status().is_terminal() {
            return Ok(Outcome::Skipped);
        }

        // A renewal being charged to a card moves the subscription on when
        // the charge is settled ([`crate::app::payments`]' renewal charges).
        let by_card = self.tenants().get(tenant).is_some_and(|t| t.charge_card);
        if by_card
            && self
                .store()
                .due_renewal_charge_of(tenant, id)
                .await?
                .is_some()
        {
            return Ok(Outcome::Skipped);
        }

        // Price (outside the transaction) what moving on costs.
        let gave_up = sub.status() == SubscriptionStatus::PastDue
            && now.saturating_sub(record.period_end) >= DUNNING_WINDOW_MS;
        let renewal = if sub.cancels_at_period_end() || gave_up {
            None
        } else {
            let binding = self.subscription_policy(tenant)?;
            let plan = sub.pending_plan().unwrap_or(sub.plan()).to_string();
            let anchor = match sub.status() {
                SubscriptionStatus::Trialing => record.period_end,
                _ => record.anchor.unwrap_or(record.period_end),
            };
            let call_ctx = self.call_context(tenant, &record.customer_id, now).await?;
            let request = types::PricingRequest::Subscription(types::SubscriptionRequest::Renewal(
                types::SubscriptionRenewal {
                    plan_id: plan.clone(),
                    period_start_ms: record.period_end,
                    anchor_ms: anchor,
                },
            ));
            let quote = price(&binding, call_ctx, &request)?;
            let (_, period) = terms_period(&binding, &quote)?;
            Some((binding, quote, plan, period))
        };

        let mut tx = self.store().begin(tenant).await?;
        match tx.lock_subscription(id, true).await? {
            Some(locked) if locked.version == record.version => {}
            // Locked by another scheduler, or already moved on.
            _ => return Ok(Outcome::Skipped),
        }
        let (applied, event, outcome, charge) = match &renewal {
            None => (
                Applied::one(sub.expire(
                    at,
                    if gave_up {
                        "unpaid 14 days after the period ended"
                    } else {
                        "cancelled at period end"
                    },
                )?),
                event_type::SUBSCRIPTION_EXPIRED,
                Outcome::Expired,
                None,
            ),
            Some((binding, quote, plan, period)) => {
                let what = ChargeFor {
                    subscription: &record,
                    plan_id: plan,
                    purpose: "subscription renewal",
                    may_credit: false,
                };
                match self.pay(&mut tx, &ctx, now, binding, quote, what).await? {
                    // Charged to the stored card after this commits.
                    Paid::Done(info) if by_card && info.method == PaymentMethod::Order => {
                        let order_id = info.order_id.clone().ok_or_else(|| {
                            AppError::Internal("a renewal order without its id".into())
                        })?;
                        let charge = RenewalChargeRecord {
                            order_id,
                            subscription_id: record.subscription_id.clone(),
                            customer_id: record.customer_id.clone(),
                            period_start: period.start().unix_millis(),
                            period_end: period.end().unix_millis(),
                            status: "DUE".into(),
                            attempts: 0,
                            next_attempt_at: Some(now),
                            last_error: None,
                            created_at: now,
                        };
                        tx.insert_renewal_charge(&charge, now, now).await?;
                        tx.commit(None).await?;
                        return Ok(Outcome::CardCharge);
                    }
                    Paid::Done(info) => {
                        let (change, event, outcome) = match sub.status() {
                            SubscriptionStatus::Trialing => (
                                sub.end_trial(*period, at, "trial ended")?,
                                event_type::SUBSCRIPTION_ACTIVATED,
                                Outcome::Activated,
                            ),
                            SubscriptionStatus::PastDue => (
                                sub.payment_recovered(*period, "renewal paid")?,
                                event_type::SUBSCRIPTION_ACTIVATED,
                                Outcome::Activated,
                            ),
                            _ => (
                                sub.renew(*period, at, "renewal")?,
                                event_type::SUBSCRIPTION_RENEWED,
                                Outcome::Renewed,
                            ),
                        };
                        (Applied::one(change), event, outcome, Some(*info))
                    }
                    // Still unpaid: nothing changes (the debit wrote nothing).
                    Paid::Insufficient { .. } if sub.status() == SubscriptionStatus::PastDue => {
                        return Ok(Outcome::Skipped);
                    }
                    Paid::Insufficient {
                        available,
                        requested,
                    } => {
                        let reason =
                            format!("renewal needs {requested} credits, {available} available");
                        (
                            Applied::one(sub.payment_failed(at, reason)?),
                            event_type::SUBSCRIPTION_PAST_DUE,
                            Outcome::PastDue,
                            None,
                        )
                    }
                }
            }
        };
        let after = updated(&record, &applied.after, applied.transitions.len(), now);
        if !tx.update_subscription(&after, record.version).await? {
            return Err(AppError::Internal(format!(
                "subscription {id} changed under its lock"
            )));
        }
        let transaction_id = new_id("tx");
        let mut journal = Recorder::new(&ctx, &transaction_id, now);
        for transition in &applied.transitions {
            journal.transition(transition);
        }
        let view = SubscriptionView::of(&after);
        journal.event(
            event,
            &after.customer_id,
            &event_data(&view, &transaction_id, charge.as_ref()),
        );
        tx.record(journal.finish());
        tx.commit(None).await?;
        Ok(outcome)
    }
}

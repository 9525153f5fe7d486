//! `change-plan` and `cancel`: read, price outside the transaction, then
//! apply to the row only if nobody changed it since it was read.

use std::sync::Arc;

use super::super::error::{AppError, Result};
use super::super::idempotency::{Claimed, claim};
use super::super::journal::{Recorder, event_type};
use super::super::policy::price;
use super::super::{App, Reply, RequestCtx, new_id};
use super::charge::{ChargeFor, ChargeInfo, Paid};
use super::{
    Applied, CancelCommand, ChangePlanCommand, MAX_REASON_LEN, Render, ResumeCommand,
    SubscriptionOutcome, SubscriptionView, Timing, event_data, quote_meta, restore,
    subscription_not_found, terms_period, updated,
};
use crate::domain::subscription::SubscriptionStatus;
use crate::domain::{Credits, DomainError, PlanId, SubscriptionId, Timestamp};
use crate::policy::registry::Binding;
use crate::policy::types;
use crate::store::{SubscriptionQueries, SubscriptionRecord, SubscriptionTx, Transactions, TxOps};

/// What a command applies once the transaction is open.
struct Effect {
    applied: Applied,
    event: &'static str,
    /// The quote to pay, with the plan it is for and why.
    payment: Option<(Arc<Binding>, types::Quote, String, &'static str)>,
}

impl App {
    /// Changes the plan now (prorated by the policy and paid) or schedules
    /// it for the next renewal.
    pub async fn change_subscription_plan(
        &self,
        ctx: &RequestCtx,
        cmd: ChangePlanCommand,
        render: impl Render<SubscriptionOutcome>,
    ) -> Result<Reply> {
        let now = self.now();
        let checked = self.plan_change(ctx, cmd, now).await;
        self.apply_or_replay(ctx, checked, now, render).await
    }

    /// Reads, checks and prices a plan change.
    async fn plan_change(
        &self,
        ctx: &RequestCtx,
        cmd: ChangePlanCommand,
        now: i64,
    ) -> Result<(SubscriptionRecord, Effect)> {
        let id = SubscriptionId::new(&cmd.subscription_id)?;
        let plan = PlanId::new(&cmd.plan_id)?;
        let binding = self.subscription_policy(&ctx.tenant)?;
        let record = self.subscription_record(&ctx.tenant, id.as_str()).await?;
        let sub = restore(&record)?;
        let call_ctx = self
            .call_context(&ctx.tenant, &record.customer_id, now)
            .await?;
        let effect = match cmd.timing {
            Timing::PeriodEnd => {
                let change =
                    sub.change_plan_at_period_end(plan.clone(), "plan change at period end")?;
                // Priced now only to learn the plan exists: an unknown plan is
                // refused here, not at the renewal.
                let request = types::PricingRequest::Subscription(
                    types::SubscriptionRequest::Start(types::SubscriptionStart {
                        plan_id: plan.to_string(),
                        start_ms: record.period_end,
                    }),
                );
                price(&binding, call_ctx, &request)?;
                Effect {
                    applied: Applied::one(change),
                    event: event_type::SUBSCRIPTION_PLAN_CHANGED,
                    payment: None,
                }
            }
            Timing::Immediate => {
                // Checked before pricing: a refused change costs no policy call.
                let change = sub.change_plan_now(plan.clone(), "plan change")?;
                if now >= record.period_end {
                    return Err(AppError::StateConflict(format!(
                        "subscription {id}'s period ended at {}: its renewal is due first",
                        record.period_end
                    )));
                }
                let trialing = sub.status() == SubscriptionStatus::Trialing;
                let request = types::PricingRequest::Subscription(
                    types::SubscriptionRequest::PlanChange(types::PlanChange {
                        from_plan_id: record.plan_id.clone(),
                        to_plan_id: plan.to_string(),
                        period_start_ms: record.period_start,
                        period_end_ms: record.period_end,
                        change_at_ms: now,
                        trial_end_ms: trialing.then_some(record.period_end),
                    }),
                );
                let quote = price(&binding, call_ctx, &request)?;
                let (terms, period) = terms_period(&binding, &quote)?;
                let during_trial =
                    trialing && quote_meta(&quote, "plan_change") == Some("during-trial");
                let applied = match (during_trial, terms.trial_end_ms) {
                    (true, Some(trial_end)) => Applied::one(sub.change_plan_in_trial(
                        plan.clone(),
                        Timestamp::from_unix_millis(trial_end),
                        Timestamp::from_unix_millis(now),
                        "plan change during trial",
                    )?),
                    (true, None) => {
                        let ended = change
                            .subscription
                            .end_trial_early(period, "plan change ended the trial")?;
                        Applied::one(change).then(ended)
                    }
                    // Paid time: the plan changes, the period stays (the
                    // terms' `[change_at, period_end)` is its remainder), so
                    // a later change is prorated over the whole period.
                    (false, _) => Applied::one(change),
                };
                Effect {
                    applied,
                    event: event_type::SUBSCRIPTION_PLAN_CHANGED,
                    payment: Some((binding, quote, plan.to_string(), "subscription plan change")),
                }
            }
        };
        Ok((record, effect))
    }

    /// Cancels now, or schedules the end for the period end.
    pub async fn cancel_subscription(
        &self,
        ctx: &RequestCtx,
        cmd: CancelCommand,
        render: impl Render<SubscriptionOutcome>,
    ) -> Result<Reply> {
        let checked = self.cancellation(ctx, cmd).await;
        self.apply_or_replay(ctx, checked, self.now(), render).await
    }

    /// Reads and checks a cancellation.
    async fn cancellation(
        &self,
        ctx: &RequestCtx,
        cmd: CancelCommand,
    ) -> Result<(SubscriptionRecord, Effect)> {
        let id = SubscriptionId::new(&cmd.subscription_id)?;
        let reason = checked_reason(cmd.reason, "cancelled by the tenant")?;
        let record = self.subscription_record(&ctx.tenant, id.as_str()).await?;
        let sub = restore(&record)?;
        let change = if cmd.at_period_end {
            sub.cancel_at_period_end(reason)?
        } else {
            sub.cancel_now(reason)?
        };
        let effect = Effect {
            applied: Applied::one(change),
            event: event_type::SUBSCRIPTION_CANCELLED,
            payment: None,
        };
        Ok((record, effect))
    }

    /// Withdraws a cancellation scheduled for period end: the subscription
    /// renews as before. `PAY_004` when none is scheduled.
    pub async fn resume_subscription(
        &self,
        ctx: &RequestCtx,
        cmd: ResumeCommand,
        render: impl Render<SubscriptionOutcome>,
    ) -> Result<Reply> {
        let checked = self.resumption(ctx, cmd).await;
        self.apply_or_replay(ctx, checked, self.now(), render).await
    }

    /// Reads and checks a resumption.
    async fn resumption(
        &self,
        ctx: &RequestCtx,
        cmd: ResumeCommand,
    ) -> Result<(SubscriptionRecord, Effect)> {
        let id = SubscriptionId::new(&cmd.subscription_id)?;
        let reason = checked_reason(cmd.reason, "resumed by the tenant")?;
        let record = self.subscription_record(&ctx.tenant, id.as_str()).await?;
        let change = restore(&record)?.resume(reason)?;
        let effect = Effect {
            applied: Applied::one(change),
            event: event_type::SUBSCRIPTION_RESUMED,
            payment: None,
        };
        Ok((record, effect))
    }

    /// Applies a command its checks accepted. A command they refused may
    /// be the retry of one that succeeded (the subscription has moved on
    /// since, so the checks now fail): the stored answer wins over the fresh
    /// refusal.
    async fn apply_or_replay(
        &self,
        ctx: &RequestCtx,
        checked: Result<(SubscriptionRecord, Effect)>,
        now: i64,
        render: impl Render<SubscriptionOutcome>,
    ) -> Result<Reply> {
        let err = match checked {
            Ok((record, effect)) => return self.apply(ctx, &record, effect, now, render).await,
            Err(err) => err,
        };
        if ctx.idempotency.is_none() {
            return Err(err);
        }
        let tx = self.store().begin(&ctx.tenant).await?;
        match claim(tx, ctx, self.now()).await? {
            Claimed::Replay(reply) => Ok(reply),
            Claimed::Proceed(tx) => {
                tx.rollback().await?;
                Err(err)
            }
        }
    }

    async fn subscription_record(&self, tenant: &str, id: &str) -> Result<SubscriptionRecord> {
        self.store()
            .subscription(tenant, id)
            .await?
            .ok_or_else(|| subscription_not_found(id))
    }

    /// One transaction: claim the key, apply the change to the row as it
    /// was read, pay, journal, commit the rendered answer.
    async fn apply(
        &self,
        ctx: &RequestCtx,
        before: &SubscriptionRecord,
        effect: Effect,
        now: i64,
        render: impl Render<SubscriptionOutcome>,
    ) -> Result<Reply> {
        let after = updated(
            before,
            &effect.applied.after,
            effect.applied.transitions.len(),
            now,
        );
        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(reply),
        };
        let locked = tx
            .lock_subscription(&before.subscription_id, false)
            .await?
            .ok_or_else(|| subscription_not_found(&before.subscription_id))?;
        if locked.version != before.version
            || !tx.update_subscription(&after, before.version).await?
        {
            return Err(AppError::StateConflict(format!(
                "subscription {} changed while this request was priced; retry it",
                before.subscription_id
            )));
        }
        let charge: Option<ChargeInfo> = match &effect.payment {
            None => None,
            Some((binding, quote, plan_id, purpose)) => {
                let what = ChargeFor {
                    subscription: &after,
                    plan_id,
                    purpose,
                    may_credit: true,
                };
                match self.pay(&mut tx, ctx, now, binding, quote, what).await? {
                    Paid::Done(info) => Some(*info),
                    Paid::Insufficient {
                        available,
                        requested,
                    } => {
                        return Err(DomainError::InsufficientCredits {
                            available: Credits(available),
                            requested: Credits(requested),
                        }
                        .into());
                    }
                }
            }
        };
        let transaction_id = new_id("tx");
        let view = SubscriptionView::of(&after);
        let mut journal = Recorder::new(ctx, &transaction_id, now);
        for transition in &effect.applied.transitions {
            journal.transition(transition);
        }
        journal.event(
            effect.event,
            &after.customer_id,
            &event_data(&view, &transaction_id, charge.as_ref()),
        );
        tx.record(journal.finish());
        let response = render(&SubscriptionOutcome {
            subscription: view,
            charge,
            transaction_id,
        });
        tx.commit(Some(response.clone())).await?;
        Ok(Reply {
            response,
            replayed: false,
        })
    }
}

/// A command's reason, or `default`: 1–[`MAX_REASON_LEN`] bytes, not blank.
fn checked_reason(reason: Option<String>, default: &str) -> Result<String> {
    let reason = reason.unwrap_or_else(|| default.into());
    if reason.trim().is_empty() || reason.len() > MAX_REASON_LEN {
        return Err(AppError::Invalid(format!(
            "reason must be 1-{MAX_REASON_LEN} bytes and not blank"
        )));
    }
    Ok(reason)
}

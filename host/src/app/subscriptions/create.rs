//! `POST /subscriptions`: the policy prices the start; a trial costs
//! nothing, a paid start pays its first period in the same transaction.

use super::super::credits::check_metadata;
use super::super::error::{AppError, Result};
use super::super::idempotency::{Claimed, claim};
use super::super::journal::{Recorder, event_type};
use super::super::policy::{invalid_output, price};
use super::super::{App, Reply, RequestCtx, new_id};
use super::charge::{ChargeFor, Paid};
use super::{
    CreateCommand, Render, SubscriptionOutcome, SubscriptionView, event_data, quote_meta,
    terms_period,
};
use crate::domain::subscription::Subscription;
use crate::domain::{Credits, CustomerId, DomainError, PlanId, SubscriptionId, Timestamp};
use crate::policy::types;
use crate::store::{SubscriptionRecord, SubscriptionTx, Transactions, TxOps};

impl App {
    /// Subscribes a customer to a plan: TRIALING when the plan has a trial,
    /// otherwise ACTIVE with its first period paid.
    pub async fn create_subscription(
        &self,
        ctx: &RequestCtx,
        cmd: CreateCommand,
        render: impl Render<SubscriptionOutcome>,
    ) -> Result<Reply> {
        let customer = CustomerId::new(&cmd.customer_id)?;
        let plan = PlanId::new(&cmd.plan_id)?;
        check_metadata(&cmd.metadata)?;
        let binding = self.subscription_policy(&ctx.tenant)?;
        let now = self.now();
        let call_ctx = self
            .call_context(&ctx.tenant, customer.as_str(), now)
            .await?;
        let request = types::PricingRequest::Subscription(types::SubscriptionRequest::Start(
            types::SubscriptionStart {
                plan_id: plan.to_string(),
                start_ms: now,
            },
        ));
        let quote = price(&binding, call_ctx, &request)?;
        let (terms, period) = terms_period(&binding, &quote)?;
        if terms.plan_id != plan.as_str() {
            return Err(invalid_output(
                &binding,
                format!("asked to start plan {plan}, quoted plan {}", terms.plan_id),
            ));
        }
        let id = SubscriptionId::new(new_id("sub"))?;
        let change = match terms.trial_end_ms {
            Some(_) => {
                if !matches!(&quote.total, types::Amount::Money(m) if m.amount == 0) {
                    return Err(invalid_output(
                        &binding,
                        "a trial was quoted a non-zero total",
                    ));
                }
                Subscription::start_trial(id, customer.clone(), plan.clone(), period, "trial start")
            }
            None => Subscription::start(id, customer.clone(), plan.clone(), period, "paid start"),
        };
        let parts = change.subscription.to_parts();
        // The policy names the anchor; it is the first paid period's start.
        let anchor = match (parts.anchor, quote_meta(&quote, "billing_anchor_ms")) {
            (Some(_), Some(text)) => Some(text.parse::<i64>().map_err(|_| {
                invalid_output(
                    &binding,
                    format!("billing_anchor_ms `{text}` is not an instant"),
                )
            })?),
            (anchor, _) => anchor.map(Timestamp::unix_millis),
        };
        let record = SubscriptionRecord {
            subscription_id: parts.id.to_string(),
            customer_id: customer.to_string(),
            plan_id: plan.to_string(),
            pending_plan_id: None,
            status: parts.status.as_str().to_owned(),
            period_start: period.start().unix_millis(),
            period_end: period.end().unix_millis(),
            anchor,
            cancel_at_period_end: false,
            metadata: serde_json::to_string(&cmd.metadata)
                .map_err(|err| AppError::Internal(err.to_string()))?,
            version: 1,
            created_at: now,
            updated_at: now,
        };

        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(reply),
        };
        tx.insert_subscription(&record).await?;
        let what = ChargeFor {
            subscription: &record,
            plan_id: plan.as_str(),
            purpose: "subscription first period",
            may_credit: false,
        };
        let charge = match self.pay(&mut tx, ctx, now, &binding, &quote, what).await? {
            Paid::Done(info) => *info,
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
        };
        let transaction_id = new_id("tx");
        let view = SubscriptionView::of(&record);
        let mut journal = Recorder::new(ctx, &transaction_id, now);
        journal.transition(&change.transition);
        journal.event(
            event_type::SUBSCRIPTION_CREATED,
            customer.as_str(),
            &event_data(&view, &transaction_id, Some(&charge)),
        );
        tx.record(journal.finish());
        let response = render(&SubscriptionOutcome {
            subscription: view,
            charge: Some(charge),
            transaction_id,
        });
        tx.commit(Some(response.clone())).await?;
        Ok(Reply {
            response,
            replayed: false,
        })
    }
}

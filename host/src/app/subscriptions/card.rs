//! A renewal charged to the customer's stored card, settled: the
//! subscription moves into the paid period (`end_trial`, `renew` or
//! `payment_recovered`), goes `PAST_DUE` at the first failed charge, or is
//! cancelled (with its unpaid renewal order) when the dunning schedule is
//! used up. Each is one transaction with the renewal charge's row, the
//! history rows and the events.

use super::super::error::{AppError, Result};
use super::super::journal::{Recorder, event_type};
use super::super::orders::{cancelled_event, record_order_step, restore_order};
use super::super::{App, RequestCtx, new_id};
use super::{SubscriptionView, event_data, restore, updated};
use crate::domain::subscription::SubscriptionStatus;
use crate::domain::{Period, Timestamp};
use crate::store::{OrderTx, RenewalChargeRecord, RenewalTx, SubscriptionTx, Transactions, TxOps};

const DAY_MS: i64 = 86_400_000;

/// How a renewal charge came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::app) enum CardRenewal {
    /// Approved: the subscription moves into the period.
    Paid,
    /// Declined or not taken, with why.
    Failed(String),
}

impl App {
    /// Applies a settled renewal charge (module docs); the charge's row as
    /// it now stands is returned.
    pub(in crate::app) async fn settle_card_renewal(
        &self,
        ctx: &RequestCtx,
        charge: &RenewalChargeRecord,
        outcome: CardRenewal,
        now: i64,
    ) -> Result<()> {
        let dunning_days = self
            .tenants()
            .get(&ctx.tenant)
            .map(|t| t.dunning_days.clone())
            .unwrap_or_default();
        let mut tx = self.store().begin(&ctx.tenant).await?;
        let record = tx
            .lock_subscription(&charge.subscription_id, false)
            .await?
            .ok_or_else(|| {
                AppError::Internal(format!(
                    "subscription `{}` of renewal order `{}` vanished",
                    charge.subscription_id, charge.order_id
                ))
            })?;
        let sub = restore(&record)?;
        let at = Timestamp::from_unix_millis(now);
        let (change, event, row) = match &outcome {
            CardRenewal::Paid => {
                let period = Period::new(
                    Timestamp::from_unix_millis(charge.period_start),
                    Timestamp::from_unix_millis(charge.period_end),
                )?;
                let reason = format!(
                    "renewal order {} charged to the stored card",
                    charge.order_id
                );
                let (change, event) = match sub.status() {
                    SubscriptionStatus::Trialing => (
                        Some(sub.end_trial(period, at, reason)?),
                        event_type::SUBSCRIPTION_ACTIVATED,
                    ),
                    SubscriptionStatus::PastDue => (
                        Some(sub.payment_recovered(period, reason)?),
                        event_type::SUBSCRIPTION_ACTIVATED,
                    ),
                    // Set to end at this period's end meanwhile: it ends;
                    // the paid order stands (a refund is the tenant's call).
                    SubscriptionStatus::Active if sub.cancels_at_period_end() => {
                        (None, event_type::SUBSCRIPTION_RENEWED)
                    }
                    SubscriptionStatus::Active => (
                        Some(sub.renew(period, at, reason)?),
                        event_type::SUBSCRIPTION_RENEWED,
                    ),
                    // Ended meanwhile (cancelled by the tenant): the money
                    // stays paid for the order; nothing to move.
                    _ => (None, event_type::SUBSCRIPTION_RENEWED),
                };
                (change, event, ("PAID", charge.attempts, None, None))
            }
            CardRenewal::Failed(reason) => {
                let attempts = charge.attempts + 1;
                let retry = dunning_days
                    .get(attempts as usize - 1)
                    .map(|days| now + i64::from(*days) * DAY_MS);
                match (retry, sub.status()) {
                    // Ended meanwhile: nothing more to try.
                    (_, status) if status.is_terminal() => (
                        None,
                        event_type::SUBSCRIPTION_CANCELLED,
                        ("FAILED", attempts, None, Some(reason.as_str())),
                    ),
                    (Some(next), SubscriptionStatus::Active | SubscriptionStatus::Trialing) => (
                        Some(sub.payment_failed(at, format!("renewal charge failed: {reason}"))?),
                        event_type::SUBSCRIPTION_PAST_DUE,
                        ("DUE", attempts, Some(next), Some(reason.as_str())),
                    ),
                    (Some(next), _) => (
                        None,
                        event_type::SUBSCRIPTION_PAST_DUE,
                        ("DUE", attempts, Some(next), Some(reason.as_str())),
                    ),
                    (None, _) => (
                        Some(sub.cancel_now(format!(
                            "renewal unpaid after {attempts} charges: {reason}"
                        ))?),
                        event_type::SUBSCRIPTION_CANCELLED,
                        ("FAILED", attempts, None, Some(reason.as_str())),
                    ),
                }
            }
        };
        let (status, attempts, next, error) = row;
        tx.update_renewal_charge(&charge.order_id, status, attempts, next, error, now)
            .await?;
        if let Some(change) = change {
            let after = updated(&record, &change.subscription, 1, now);
            if !tx.update_subscription(&after, record.version).await? {
                return Err(AppError::Internal(format!(
                    "subscription {} changed under its lock",
                    record.subscription_id
                )));
            }
            let transaction_id = new_id("tx");
            let mut journal = Recorder::new(ctx, &transaction_id, now);
            journal.transition(&change.transition);
            let mut data = event_data(&SubscriptionView::of(&after), &transaction_id, None);
            data["renewalOrderId"] = serde_json::json!(&charge.order_id);
            data["chargeAttempts"] = serde_json::json!(attempts);
            data["nextChargeAt"] = serde_json::json!(next);
            journal.event(event, &after.customer_id, &data);
            tx.record(journal.finish());
        }
        if status == "FAILED" {
            // The unpaid renewal order is withdrawn with the subscription.
            let order = tx
                .order_for_update(&charge.order_id)
                .await?
                .ok_or_else(|| {
                    AppError::Internal(format!("order `{}` vanished", charge.order_id))
                })?;
            if order.status == "PENDING" {
                let order_change =
                    restore_order(&order)?.cancel("renewal unpaid: dunning ended")?;
                let data = cancelled_event(&order, &order_change);
                record_order_step(
                    &mut tx,
                    ctx,
                    &order,
                    order_change,
                    event_type::ORDER_CANCELLED,
                    data,
                    now,
                )
                .await?;
            }
        }
        tx.commit(None).await?;
        Ok(())
    }
}

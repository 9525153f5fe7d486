//! Renewals charged to stored cards, and the cards themselves.
//!
//! **Cards** (`POST/GET/DELETE /customers/{id}/payment-methods`): FluxPay
//! keeps the PG's billing key, never card data (the PG tokenises).
//!
//! **Charges**: the subscription scheduler leaves a renewal of a tenant
//! with `subscriptions.charge_card` as a `PENDING` order with a renewal
//! charge due now ([`crate::store::RenewalTx`]). This job claims due
//! charges (a lease, as the payment janitor does) and moves each on from
//! what its order shows, so a host that stops anywhere leaves nothing that
//! the next run cannot finish:
//! - `PENDING`, no payment in flight: charge the customer's newest card
//!   through the tenant's gateway, with the payment's one approval key
//!   stored first (the same three steps as a confirm); approved → the
//!   payment is confirmed and the order completed at once (a renewal has
//!   nothing to fulfil), and the subscription moves into the period;
//!   declined (or no card) → a failed charge: the subscription goes
//!   `PAST_DUE` and the charge is tried again on the tenant's
//!   `dunning_days`, after the last one the subscription is cancelled;
//! - a payment in flight (its answer lost): left to the payment janitor,
//!   and looked at again when the lease ends; a PG that is down for now is
//!   waited for the same way, not counted as a failed charge;
//! - `PAID` or `COMPLETED` (a host stopped half way): completed, and the
//!   subscription moved on; `CANCELLED`: the charge is dropped.

use super::super::credits::Render;
use super::super::error::{AppError, Result};
use super::super::idempotency::{Claimed, claim};
use super::super::journal::{Recorder, entity, event_type};
use super::super::subscriptions::card::CardRenewal;
use super::super::{App, Reply, RequestCtx, new_id};
use super::outcome::{Outcome, outcome_of_confirm, outcome_of_query};
use crate::domain::{Money, OrderId, PositiveMoney};
use crate::gateway::{BillingChargeRequest, GatewayError, PaymentGateway, codes};
use crate::store::{
    OrderQueries, PaymentAttemptRecord, PaymentMethodRecord, PaymentQueries, Queries,
    RenewalChargeRecord, RenewalQueries, RenewalTx, SubscriptionQueries, Transactions, TxOps,
};

/// How many due charges one run takes per tenant.
const BATCH: i64 = 100;
/// Longest billing key or customer key accepted (Toss: 200 / 300).
const MAX_KEY_LEN: usize = 200;

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenewalRun {
    /// Charges looked at.
    pub claimed: u64,
    /// Approved (the subscription moved into its period).
    pub paid: u64,
    /// Failed (declined, no card): dunning goes on or ends.
    pub failed: u64,
    /// Waiting for a payment in flight or a PG that is down.
    pub waiting: u64,
    /// Runs that failed (logged; due again when the lease ends).
    pub errors: u64,
}

enum Step {
    Paid,
    Failed,
    Waiting,
}

/// `POST /customers/{id}/payment-methods`.
#[derive(Debug, Clone)]
pub struct AddPaymentMethod {
    /// What the PG's billing-key issue returned.
    pub billing_key: String,
    /// The customer key it was issued to (default: the customer's id).
    pub customer_key: Option<String>,
    /// What the PG shows of the card.
    pub label: Option<String>,
}

impl App {
    /// Stores a customer's card (its PG billing key); the newest is
    /// charged for renewals.
    pub async fn add_payment_method(
        &self,
        ctx: &RequestCtx,
        customer_id: &str,
        add: AddPaymentMethod,
        render: impl Render<PaymentMethodRecord>,
    ) -> Result<Reply> {
        self.gateway(&ctx.tenant)?;
        let customer_key = add.customer_key.unwrap_or_else(|| customer_id.to_owned());
        for (field, value) in [
            ("billingKey", add.billing_key.as_str()),
            ("customerKey", customer_key.as_str()),
        ] {
            let printable = value.bytes().all(|b| b.is_ascii_graphic());
            if value.is_empty() || value.len() > MAX_KEY_LEN || !printable {
                return Err(AppError::Invalid(format!(
                    "{field} must be 1-{MAX_KEY_LEN} printable ASCII characters"
                )));
            }
        }
        if add.label.as_ref().is_some_and(|l| l.len() > 64) {
            return Err(AppError::Invalid("label must be at most 64 bytes".into()));
        }
        self.store()
            .customer(&ctx.tenant, customer_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no customer `{customer_id}`")))?;
        let now = self.now();
        let method = PaymentMethodRecord {
            method_id: new_id("pm"),
            customer_id: customer_id.to_owned(),
            billing_key: add.billing_key,
            customer_key,
            label: add.label,
            created_at: now,
            removed_at: None,
        };
        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(reply),
        };
        tx.insert_payment_method(&method).await?;
        let mut journal = Recorder::new(ctx, new_id("op"), now);
        journal.history(
            entity::PAYMENT_METHOD,
            &method.method_id,
            None,
            "ACTIVE".into(),
            "create",
            "card stored by the tenant",
        );
        journal.event(
            event_type::PAYMENT_METHOD_ADDED,
            customer_id,
            &serde_json::json!({
                "methodId": &method.method_id,
                "customerId": customer_id,
                "label": &method.label,
            }),
        );
        tx.record(journal.finish());
        let response = render(&method);
        tx.commit(Some(response.clone())).await?;
        Ok(Reply {
            response,
            replayed: false,
        })
    }

    /// A customer's stored cards (removed ones too).
    pub async fn payment_methods(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> Result<Vec<PaymentMethodRecord>> {
        self.store()
            .customer(tenant, customer_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no customer `{customer_id}`")))?;
        Ok(self.store().payment_methods(tenant, customer_id).await?)
    }

    /// Removes a stored card: it is no longer charged.
    pub async fn remove_payment_method(
        &self,
        ctx: &RequestCtx,
        customer_id: &str,
        method_id: &str,
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.store().begin(&ctx.tenant).await?;
        if !tx
            .remove_payment_method(customer_id, method_id, now)
            .await?
        {
            return Err(AppError::NotFound(format!(
                "customer `{customer_id}` has no payment method `{method_id}`"
            )));
        }
        let mut journal = Recorder::new(ctx, new_id("op"), now);
        journal.history(
            entity::PAYMENT_METHOD,
            method_id,
            Some("ACTIVE".into()),
            "REMOVED".into(),
            "remove",
            "card removed by the tenant",
        );
        journal.event(
            event_type::PAYMENT_METHOD_REMOVED,
            customer_id,
            &serde_json::json!({ "methodId": method_id, "customerId": customer_id }),
        );
        tx.record(journal.finish());
        tx.commit(None).await?;
        Ok(())
    }

    /// Claims and moves on every renewal charge due at `now` (module docs).
    pub async fn run_renewal_charges(&self, now: i64) -> RenewalRun {
        let mut run = RenewalRun::default();
        let tenants: Vec<String> = self.inner.gateways.load().keys().cloned().collect();
        for tenant in tenants {
            if !self.tenants().get(&tenant).is_some_and(|t| t.charge_card) {
                continue;
            }
            let claimed = async {
                let mut tx = self.store().begin(&tenant).await?;
                let due = tx
                    .claim_due_renewal_charges(now, now + super::CLAIM_LEASE_MS, BATCH)
                    .await?;
                tx.commit(None).await?;
                Ok::<_, AppError>(due)
            };
            let due = match claimed.await {
                Ok(due) => due,
                Err(err) => {
                    tracing::warn!(%tenant, error = %err, "renewals.claim_failed");
                    run.errors += 1;
                    continue;
                }
            };
            for charge in due {
                run.claimed += 1;
                let ctx = RequestCtx::system(&tenant, "system:renewal-charges");
                match self.charge_renewal(&ctx, &charge, now).await {
                    Ok(Step::Paid) => run.paid += 1,
                    Ok(Step::Failed) => run.failed += 1,
                    Ok(Step::Waiting) => run.waiting += 1,
                    Err(err) => {
                        tracing::warn!(
                            %tenant,
                            order_id = %charge.order_id,
                            error = %err,
                            "renewals.charge_failed"
                        );
                        run.errors += 1;
                    }
                }
            }
        }
        run
    }

    async fn charge_renewal(
        &self,
        ctx: &RequestCtx,
        charge: &RenewalChargeRecord,
        now: i64,
    ) -> Result<Step> {
        let order = self
            .store()
            .order(&ctx.tenant, &charge.order_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("order `{}` vanished", charge.order_id)))?;
        match order.status.as_str() {
            "COMPLETED" => {}
            "PAID" => {
                self.complete_order(ctx, &charge.order_id, crate::app::unanswered)
                    .await?;
            }
            "CANCELLED" => {
                let mut tx = self.store().begin(&ctx.tenant).await?;
                tx.update_renewal_charge(
                    &charge.order_id,
                    "FAILED",
                    charge.attempts,
                    None,
                    Some("the renewal order was cancelled"),
                    now,
                )
                .await?;
                tx.commit(None).await?;
                return Ok(Step::Failed);
            }
            _ => {
                let payments = self
                    .store()
                    .payments_of_order(&ctx.tenant, &charge.order_id)
                    .await?;
                if payments
                    .iter()
                    .any(|p| p.status == "READY" || p.status == "UNKNOWN")
                {
                    return Ok(Step::Waiting);
                }
                // A subscription that ended (or ends at this period's end)
                // is not renewed: its card is not charged, the renewal
                // order is withdrawn.
                let subscription = self
                    .store()
                    .subscription(&ctx.tenant, &charge.subscription_id)
                    .await?;
                if let Some(ending) = subscription.filter(|s| {
                    s.cancel_at_period_end
                        || !matches!(s.status.as_str(), "TRIALING" | "ACTIVE" | "PAST_DUE")
                }) {
                    let why = format!(
                        "subscription {} is {}",
                        ending.subscription_id, ending.status
                    );
                    self.drop_renewal(ctx, charge, &why, now).await?;
                    return Ok(Step::Failed);
                }
                let card = self
                    .store()
                    .payment_methods(&ctx.tenant, &charge.customer_id)
                    .await?
                    .into_iter()
                    .rev()
                    .find(|m| m.removed_at.is_none());
                let Some(card) = card else {
                    let reason = "the customer has no stored card".to_owned();
                    self.settle_card_renewal(ctx, charge, CardRenewal::Failed(reason), now)
                        .await?;
                    return Ok(Step::Failed);
                };
                match self.charge_card(ctx, &order, &card).await? {
                    Some(reason) => {
                        self.settle_card_renewal(ctx, charge, CardRenewal::Failed(reason), now)
                            .await?;
                        return Ok(Step::Failed);
                    }
                    None => {
                        let paid = self
                            .store()
                            .order(&ctx.tenant, &charge.order_id)
                            .await?
                            .is_some_and(|o| o.status == "PAID");
                        if !paid {
                            return Ok(Step::Waiting);
                        }
                        self.complete_order(ctx, &charge.order_id, crate::app::unanswered)
                            .await?;
                    }
                }
            }
        }
        self.settle_card_renewal(ctx, charge, CardRenewal::Paid, now)
            .await?;
        Ok(Step::Paid)
    }

    /// Gives up a renewal charge without charging: the charge `FAILED`
    /// and its `PENDING` order cancelled, in one transaction.
    async fn drop_renewal(
        &self,
        ctx: &RequestCtx,
        charge: &RenewalChargeRecord,
        why: &str,
        now: i64,
    ) -> Result<()> {
        use super::super::orders::{cancelled_event, record_order_step, restore_order};
        use crate::store::OrderTx;
        let mut tx = self.store().begin(&ctx.tenant).await?;
        let order = tx
            .order_for_update(&charge.order_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("order `{}` vanished", charge.order_id)))?;
        if order.status == "PENDING" {
            let change = restore_order(&order)?.cancel(format!("renewal dropped: {why}"))?;
            let data = cancelled_event(&order, &change);
            record_order_step(
                &mut tx,
                ctx,
                &order,
                change,
                event_type::ORDER_CANCELLED,
                data,
                now,
            )
            .await?;
        }
        tx.update_renewal_charge(
            &charge.order_id,
            "FAILED",
            charge.attempts,
            None,
            Some(why),
            now,
        )
        .await?;
        tx.commit(None).await?;
        Ok(())
    }

    /// Charges `card` for the `PENDING` `order`: `None` when the payment
    /// was approved or is still being resolved, `Some(why)` when the
    /// charge failed for good.
    async fn charge_card(
        &self,
        ctx: &RequestCtx,
        order: &crate::store::OrderRecord,
        card: &PaymentMethodRecord,
    ) -> Result<Option<String>> {
        let gateway = self.gateway(&ctx.tenant)?;
        let order_id = OrderId::new(&order.order_id)?;
        let amount = PositiveMoney::new(
            Money::parse(order.total, &order.currency)
                .map_err(|err| AppError::Internal(format!("order currency: {err}")))?,
            "amount",
        )?;
        let payment = self
            .open_payment(
                ctx,
                &order_id,
                &order.customer_id,
                amount,
                "renewal charged to the stored card",
                (None, super::confirm::SagaStart::No),
            )
            .await?;
        let request = BillingChargeRequest {
            customer_key: card.customer_key.clone(),
            amount: order.total,
            currency: Some(order.currency.clone()),
            order_id: order.order_id.clone(),
            order_name: format!("Renewal {}", order.order_id),
        };
        let started = std::time::Instant::now();
        let answer = gateway
            .charge_billing_key(&card.billing_key, &request, payment.approval_key())
            .await;
        let outcome = match answer {
            Err(GatewayError::Refused { code, .. }) if code == codes::ALREADY_PROCESSED_PAYMENT => {
                outcome_of_query(
                    gateway.payment_by_order(&order.order_id).await,
                    order.total,
                    &order.currency,
                )
            }
            answer => outcome_of_confirm(answer, order.total, &order.currency),
        };
        let failure = match &outcome {
            Outcome::Declined(code, message) | Outcome::Rejected(code, message) => {
                Some(format!("{code}: {message}"))
            }
            _ => None,
        };
        let attempt = PaymentAttemptRecord {
            attempt: 0,
            kind: "approve".into(),
            idempotency_key: Some(payment.approval_key().to_owned()),
            outcome: outcome.attempt_outcome().into(),
            pg_code: outcome.pg_code(),
            latency_ms: started.elapsed().as_millis() as i64,
            created_at: self.now(),
        };
        match self
            .settle(
                ctx,
                (order.order_id.as_str(), payment.id().as_str()),
                outcome,
                (attempt, false),
                crate::app::unanswered,
            )
            .await
        {
            Ok(_) => Ok(failure),
            // Declined or refused: recorded, and a failed charge.
            Err(AppError::Invalid(_)) => Ok(failure),
            // Lost or not taken for now: waited for, not counted.
            Err(AppError::PaymentPending { .. } | AppError::GatewayUnavailable(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }
}

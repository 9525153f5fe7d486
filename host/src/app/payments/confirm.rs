//! `POST /payments/confirm`: intent, PG call, outcome (see the module docs
//! of [`super`]).

use std::time::Instant;

use super::super::credits::{Render, check_metadata};
use super::super::customers::Customer;
use super::super::error::{AppError, Result};
use super::super::idempotency::{Claimed, claim, stored_answer};
use super::super::journal::{Recorder, event_type};
use super::super::orders::{OrderDetails, answer_order_step, record_order_step_as, restore_order};
use super::super::policy::validate;
use super::super::saga_credits::CreditsApplied;
use super::super::{App, Reply, RequestCtx, new_id};
use super::PaymentDetails;
use super::outcome::{Outcome, outcome_of_confirm, outcome_of_query};
use super::settle::payment_event;
use crate::domain::order::OrderStatus;
use crate::domain::payment::Payment;
use crate::domain::{CustomerId, Money, OrderId, PaymentId, PositiveMoney};
use crate::gateway::{ConfirmRequest, GatewayError, PaymentGateway, codes};
use crate::policy::registry::CallContext;
use crate::policy::types;
use crate::store::{
    NewPayment, OrderQueries, OrderRecord, OrderTx, PaymentAttemptRecord, PaymentQueries,
    PaymentRecord, PaymentTx, Queries, Transactions, TxOps,
};

/// Longest payment key accepted from a client (Toss: 200).
const MAX_PAYMENT_KEY_LEN: usize = 200;

/// `POST /payments/confirm`.
#[derive(Debug, Clone)]
pub struct ConfirmCommand {
    /// The order to pay.
    pub order_id: String,
    /// What the PG's checkout returned (absent when credits pay it all).
    pub payment_key: Option<String>,
    /// Minor units: must equal what the order owes, less what `credits`
    /// are worth.
    pub amount: i64,
    /// Credits to pay the order with first (reserved before the PG is
    /// asked), at the tenant's `credits_per_major_unit`.
    pub credits: Option<i64>,
    /// What the tenant's validation policies see with the payment (e.g.
    /// an invoice number).
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// Whether a payment's intent starts its order's saga (payments through
/// the confirm API), and with which credits.
pub(super) enum SagaStart {
    /// No saga (a renewal's charge).
    No,
    /// The saga starts, holding these credits first.
    With(Option<CreditsApplied>),
}

impl App {
    /// Takes an order's money through the tenant's PG (module docs).
    pub async fn confirm_payment(
        &self,
        ctx: &RequestCtx,
        cmd: ConfirmCommand,
        render: impl Render<PaymentDetails>,
    ) -> Result<Reply> {
        let order_id = OrderId::new(&cmd.order_id)?;
        let payment_key = match cmd.payment_key.as_deref() {
            Some(key) if !key.is_empty() && key.len() <= MAX_PAYMENT_KEY_LEN => key.to_owned(),
            _ => {
                return Err(AppError::Invalid(format!(
                    "paymentKey must be 1-{MAX_PAYMENT_KEY_LEN} bytes"
                )));
            }
        };
        check_metadata(&cmd.metadata)?;
        let gateway = self.gateway(&ctx.tenant)?;
        if let Some(answer) = stored_answer(self.store(), ctx).await? {
            return answer;
        }
        let order = self
            .store()
            .order(&ctx.tenant, order_id.as_str())
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no order `{order_id}`")))?;
        // A payment left unresolved (lost answer, or a host that stopped
        // between intent and outcome) is resolved before anything else.
        let payments = self
            .store()
            .payments_of_order(&ctx.tenant, order_id.as_str())
            .await?;
        if let Some(pending) = payments
            .into_iter()
            .find(|p| p.status == "READY" || p.status == "UNKNOWN")
        {
            return self.resolve(ctx, &*gateway, (pending, false), render).await;
        }
        if order.status != OrderStatus::Pending.as_str() {
            return Err(AppError::StateConflict(format!(
                "order `{order_id}` is {}: only a PENDING order can be paid",
                order.status
            )));
        }
        let amount = Money::parse(cmd.amount, &order.currency)
            .map_err(|err| AppError::Internal(format!("order currency: {err}")))?;
        let credits = cmd
            .credits
            .map(|n| self.credits_applied(&ctx.tenant, n, (order.total, &order.currency)))
            .transpose()?;
        let due = order.total - credits.map_or(0, |c| c.value.minor());
        if cmd.amount != due {
            return Err(AppError::Invalid(format!(
                "amount {} does not equal what order `{order_id}` owes ({due} {}{}); nothing was \
                 sent to the payment gateway",
                cmd.amount,
                order.currency,
                match credits {
                    Some(c) => format!(" after {} credits", c.credits),
                    None => String::new(),
                }
            )));
        }
        let amount = PositiveMoney::new(amount, "amount")?;

        // The tenant's validation policies see the payment first.
        self.validate_payment(ctx, &order, (cmd.amount, "card"), &cmd.metadata)
            .await?;

        // 1. Intent (with the credits reserved).
        let created = self
            .open_payment(
                ctx,
                &order_id,
                &order.customer_id,
                amount,
                "confirm requested",
                (Some(&payment_key), SagaStart::With(credits)),
            )
            .await?;
        let payment_id = created.id().clone();
        crate::crash_points::reached("payment.intent", order_id.as_str());

        // 2. The PG call, with the payment's one approval key.
        let request = ConfirmRequest {
            payment_key,
            order_id: order_id.to_string(),
            amount: cmd.amount,
        };
        let started = Instant::now();
        let answer = gateway.confirm(&request, created.approval_key()).await;
        let outcome = match answer {
            // Approved before, under another key: ask and adopt.
            Err(GatewayError::Refused { code, .. }) if code == codes::ALREADY_PROCESSED_PAYMENT => {
                outcome_of_query(
                    gateway.payment_by_order(order_id.as_str()).await,
                    cmd.amount,
                    &order.currency,
                )
            }
            answer => outcome_of_confirm(answer, cmd.amount, &order.currency),
        };
        crate::crash_points::reached("payment.confirm_answered", order_id.as_str());
        let latency = started.elapsed();

        // 3. Outcome.
        let attempt = PaymentAttemptRecord {
            attempt: 0,
            kind: "approve".into(),
            idempotency_key: Some(created.approval_key().to_owned()),
            outcome: outcome.attempt_outcome().into(),
            pg_code: outcome.pg_code(),
            latency_ms: latency.as_millis() as i64,
            created_at: self.now(),
        };
        let settled = self
            .settle(
                ctx,
                (order_id.as_str(), payment_id.as_str()),
                outcome,
                (attempt, false),
                render,
            )
            .await;
        crate::crash_points::reached("payment.outcome", order_id.as_str());
        settled
    }

    /// Pays a `PENDING` order with credits alone: they are reserved, the
    /// order becomes `PAID` and its saga waits for the tenant's service, in
    /// one transaction; nothing is sent to the PG. The answer is the order
    /// with its saga, kept for the Idempotency-Key.
    pub async fn pay_with_credits(
        &self,
        ctx: &RequestCtx,
        cmd: ConfirmCommand,
        render: impl Render<OrderDetails>,
    ) -> Result<Reply> {
        let order_id = OrderId::new(&cmd.order_id)?;
        if cmd.payment_key.is_some() {
            return Err(AppError::Invalid(
                "paymentKey must be absent when credits pay the whole order (amount 0)".into(),
            ));
        }
        let credits = cmd.credits.ok_or_else(|| {
            AppError::Invalid("amount must be positive, or credits must pay the order".into())
        })?;
        check_metadata(&cmd.metadata)?;
        if let Some(answer) = stored_answer(self.store(), ctx).await? {
            return answer;
        }
        let order = self
            .store()
            .order(&ctx.tenant, order_id.as_str())
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no order `{order_id}`")))?;
        let applied = self.credits_applied(&ctx.tenant, credits, (order.total, &order.currency))?;
        if applied.value.minor() != order.total {
            return Err(AppError::Invalid(format!(
                "{credits} credits are worth {} of the {} {} order `{order_id}` owes: send the \
                 rest as amount, with a paymentKey",
                applied.value.minor(),
                order.total,
                order.currency
            )));
        }
        self.validate_payment(
            ctx,
            &order,
            (applied.value.minor(), "credits"),
            &cmd.metadata,
        )
        .await?;

        let now = self.now();
        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(reply),
        };
        let locked = tx
            .order_for_update(order_id.as_str())
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no order `{order_id}`")))?;
        if locked.status != OrderStatus::Pending.as_str() {
            return Err(AppError::StateConflict(format!(
                "order `{order_id}` is {}: only a PENDING order can be paid",
                locked.status
            )));
        }
        if let Some(payment) = tx.active_payment_of_order(order_id.as_str()).await? {
            return Err(AppError::StateConflict(format!(
                "order `{order_id}` has payment `{}` in status {}",
                payment.payment_id, payment.status
            )));
        }
        // The order's step is the business transaction the saga's rows
        // join: `order.paid`.
        let transaction_id = new_id("tx");
        super::super::saga::start(
            &mut tx,
            ctx,
            (order_id.as_str(), &locked.customer_id, None),
            Some(applied),
            &transaction_id,
            now,
        )
        .await?;
        let change = restore_order(&locked)?.pay(format!("{credits} credits reserved"))?;
        let data = serde_json::json!({
            "orderId": &locked.order_id,
            "customerId": &locked.customer_id,
            "status": change.order.status().as_str(),
            "currency": &locked.currency,
            "total": locked.total,
            "paymentId": null,
            "credits": credits,
        });
        let to = change.order.status().as_str();
        let version = record_order_step_as(
            &mut tx,
            ctx,
            &locked,
            change,
            (event_type::ORDER_PAID, data),
            &transaction_id,
            now,
        )
        .await?;
        let deadline = now + self.payment_settings(&ctx.tenant).service_timeout_ms;
        super::super::saga::payment_settled(
            &mut tx,
            ctx,
            order_id.as_str(),
            Ok(deadline),
            &transaction_id,
            now,
        )
        .await?;
        answer_order_step(tx, locked, (to, version, now), render).await
    }

    /// The tenant's validation policies on a payment of `amount` (minor
    /// units of the order's currency) by `method`.
    async fn validate_payment(
        &self,
        ctx: &RequestCtx,
        order: &OrderRecord,
        (amount, method): (i64, &str),
        metadata: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let validation = self.validation_policies(&ctx.tenant)?;
        if validation.is_empty() {
            return Ok(());
        }
        let customer = self
            .store()
            .customer(&ctx.tenant, &order.customer_id)
            .await?
            .ok_or_else(|| AppError::Internal("the order's customer vanished".into()))?;
        let call_ctx = CallContext {
            customer_id: order.customer_id.clone(),
            customer_attributes: Customer::policy_attributes_of(&customer.attributes)?,
            now_ms: self.now(),
        };
        validate(
            &validation,
            &call_ctx,
            &types::ValidationSubject::Payment(types::PaymentSubject {
                order_id: order.order_id.clone(),
                amount: types::Money {
                    amount,
                    currency: order.currency.clone(),
                },
                method: method.into(),
                metadata: metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }),
        )
    }

    /// Step 1: stores a `READY` payment of `amount` for the still
    /// `PENDING` order, with the approval key every PG call for it sends
    /// (at most one payment of an order is in flight: a unique index).
    pub(super) async fn open_payment(
        &self,
        ctx: &RequestCtx,
        order_id: &OrderId,
        customer_id: &str,
        amount: PositiveMoney,
        reason: &str,
        (checkout_key, saga): (Option<&str>, SagaStart),
    ) -> Result<Payment> {
        let payment_id = PaymentId::new(new_id("pay"))?;
        let customer = CustomerId::new(customer_id)?;
        let created = Payment::create(
            payment_id.clone(),
            order_id.clone(),
            customer,
            amount,
            payment_id.as_str(),
            reason,
        )?;
        let now = self.now();
        let mut tx = self.store().begin(&ctx.tenant).await?;
        let locked = tx
            .order_for_update(order_id.as_str())
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no order `{order_id}`")))?;
        if locked.status != OrderStatus::Pending.as_str() {
            return Err(AppError::StateConflict(format!(
                "order `{order_id}` is {}: only a PENDING order can be paid",
                locked.status
            )));
        }
        // Fixed now, whatever the tenant's setting says later: a renewal's
        // billing-key charge is captured with its approval.
        let capture_mode = match (
            &saga,
            self.payment_settings(&ctx.tenant).capture_with_approval,
        ) {
            (SagaStart::No, _) | (_, true) => "automatic",
            (SagaStart::With(_), false) => "manual",
        };
        tx.insert_payment(&NewPayment {
            payment_id: payment_id.to_string(),
            order_id: order_id.to_string(),
            customer_id: customer_id.to_owned(),
            amount: amount.minor(),
            currency: amount.currency().code().to_owned(),
            approval_key: created.payment.approval_key().to_owned(),
            pg_payment_key: checkout_key.map(str::to_owned),
            // Asked about by the recovery scheduler if no outcome is
            // recorded by then (the host stopped during the PG call).
            next_check_at: now + super::CHECK_SCHEDULE_MS[0],
            capture_mode,
            now,
        })
        .await?;
        let transaction_id = new_id("tx");
        let mut journal = Recorder::new(ctx, &transaction_id, now);
        journal.transition(&created.transition);
        journal.event(
            event_type::PAYMENT_CREATED,
            customer_id,
            &payment_event(&created.payment, None),
        );
        tx.record(journal.finish());
        if let SagaStart::With(credits) = saga {
            super::super::saga::start(
                &mut tx,
                ctx,
                (order_id.as_str(), customer_id, Some(payment_id.as_str())),
                credits,
                &transaction_id,
                now,
            )
            .await?;
        }
        tx.commit(None).await?;
        Ok(created.payment)
    }

    /// Asks the PG what became of a payment left `READY` or `UNKNOWN`, and
    /// adopts its answer.
    pub(super) async fn resolve<G: PaymentGateway>(
        &self,
        ctx: &RequestCtx,
        gateway: &G,
        (pending, scheduled): (PaymentRecord, bool),
        render: impl Render<PaymentDetails>,
    ) -> Result<Reply> {
        let started = Instant::now();
        let found = gateway.payment_by_order(&pending.order_id).await;
        let checkout = pending.pg_payment_key.clone();
        let (outcome, attempt_kind, key) = match (&found, checkout) {
            // Checked out but never confirmed: the confirm did not reach
            // the PG (the host stopped before the call, or the request was
            // lost on the way). Sent again with the payment's one approval
            // key, it cannot take the money twice.
            (Ok(pg), Some(payment_key)) if pg.status == crate::gateway::PgStatus::Ready => {
                let request = ConfirmRequest {
                    payment_key,
                    order_id: pending.order_id.clone(),
                    amount: pending.amount,
                };
                let again = gateway.confirm(&request, &pending.approval_key).await;
                (
                    outcome_of_confirm(again, pending.amount, &pending.currency),
                    "approve",
                    Some(pending.approval_key.clone()),
                )
            }
            _ => (
                outcome_of_query(found, pending.amount, &pending.currency),
                "query",
                None,
            ),
        };
        let attempt = PaymentAttemptRecord {
            attempt: 0,
            kind: attempt_kind.into(),
            idempotency_key: key,
            outcome: outcome.attempt_outcome().into(),
            pg_code: outcome.pg_code(),
            latency_ms: started.elapsed().as_millis() as i64,
            created_at: self.now(),
        };
        // A PG that cannot say does not make a pending payment failed: it
        // stays unresolved, and so does the answer.
        let outcome = match outcome {
            Outcome::NotTaken(_, message) => Outcome::Lost(message),
            other => other,
        };
        // Only the recovery schedule's own asks use it up: a client's retry
        // or a PG notification (unauthenticated) cannot flag a payment.
        self.settle(
            ctx,
            (&pending.order_id, &pending.payment_id),
            outcome,
            (attempt, scheduled),
            render,
        )
        .await
    }
}

//! `POST /service-callbacks/completed`: the tenant's service fulfilled a
//! paid order, which is then captured and completed.
//!
//! **An order paid by card** (its saga holds an authorization, see
//! [`crate::gateway`]) is captured at the PG, with the saga's rules for a
//! PG call — intent, call, outcome:
//! 1. **intent**: the saga `WAITING_FOR_SERVICE → COMPLETING`
//!    (`saga.completing`) and the payment's capture request, one
//!    transaction: from then on nothing voids the authorization, and the
//!    orchestrator resumes the capture if the host stops;
//! 2. **call**: `capture` with the payment's one capture key
//!    (`<payment id>-capture`), so every retry is the same request, which
//!    the PG answers once;
//! 3. **outcome**: captured → the payment `CONFIRMED` (`payment.confirmed`),
//!    the reserved credits deducted, the order `COMPLETED`
//!    (`order.completed`) and the saga `COMPLETED`, one transaction;
//!    refused → the saga `COMPENSATING`, then the authorization voided,
//!    the order cancelled and the credits released (`402 PAY_002`); a
//!    lost or failed call → the saga stays `COMPLETING` and the
//!    orchestrator asks the PG (never capturing with another key) until it
//!    knows (`202 PAY_006`); after [`FLAG_CAPTURE_AFTER`] such tries the
//!    payment is also flagged for an operator (`/admin/v1/payments/flagged`
//!    and the health's `flagged`), and unflagged by its confirmation.
//!
//! **An order paid with credits alone**, a renewal (a billing-key charge,
//! captured with its approval), or a card payment opened while its
//! tenant's PG captured with the approval (`capture: automatic`) completes
//! in one transaction, with nothing sent to the PG. Each payment keeps the
//! capture mode it was opened under (`payments.capture_mode`), so a tenant
//! that changes its setting with payments in flight never confirms an
//! authorization without capturing it.
//!
//! A repeat for a completed order answers with the order as it stands; one
//! for an order being captured sends the same capture again. A callback for
//! an order in any other state than `PAID`, or whose payment is being
//! voided (the void was stored before the PG was asked, so it may have
//! happened), is `PAY_004`.

use std::time::Instant;

use super::super::credits::Render;
use super::super::error::{AppError, Result};
use super::super::idempotency::{Claimed, claim, stored_answer};
use super::super::journal::{Recorder, event_type};
use super::super::orders::{OrderDetails, answer_order_step, record_order_step_as, restore_order};
use super::super::{App, Reply, RequestCtx, new_id};
use super::outcome::restore_payment;
use super::store_payment_change;
use crate::domain::OrderId;
use crate::domain::order::OrderStatus;
use crate::domain::saga::{SagaEvent, SagaState};
use crate::gateway::{CaptureRequest, GatewayError, PaymentGateway, PgStatus};
use crate::store::{
    OrderRecord, OrderTx, PaymentAttemptRecord, PaymentQueries, PaymentRecord, PaymentTx,
    SagaQueries, SagaRecord, SagaTx, Transactions, Tx, TxOps,
};

/// How long a host that starts a capture keeps it: if it stops meanwhile,
/// the orchestrator (of any host) resumes it after this.
pub(in crate::app) const CAPTURE_LEASE_MS: i64 = 10_000;
/// Capture tries whose outcome stayed unknown before the payment is
/// flagged for an operator (the tries go on): the compensation's parking
/// limit.
const FLAG_CAPTURE_AFTER: i64 = super::super::saga::MAX_COMPENSATION_ATTEMPTS;

/// What the PG said about a capture.
enum Captured {
    /// Captured (now, or before: a repeat, or learnt by a query).
    Yes,
    /// Refused for good, or the PG holds nothing to capture: why.
    Refused(String),
    /// Not known yet (a lost answer, a PG failing for now): why.
    Pending(String),
}

impl App {
    /// Captures a paid order's payment and completes the order (module
    /// docs).
    pub async fn complete_order(
        &self,
        ctx: &RequestCtx,
        order_id: &str,
        render: impl Render<OrderDetails> + Copy,
    ) -> Result<Reply> {
        let id = OrderId::new(order_id)?;
        if let Some(answer) = stored_answer(self.store(), ctx).await? {
            return answer;
        }
        let saga = self.store().saga(&ctx.tenant, id.as_str()).await?;
        // A first guess from the tenant's setting: the payment's own
        // capture mode, read under its lock, decides.
        let automatic = self.payment_settings(&ctx.tenant).capture_with_approval;
        let capturing = saga.as_ref().is_some_and(|s| {
            s.payment_id.is_some()
                && ((!automatic && s.state == SagaState::WaitingForService.as_str())
                    || s.state == SagaState::Completing.as_str())
        });
        if !capturing && let Some(reply) = self.complete_at_once(ctx, &id, render).await? {
            return Ok(reply);
        }
        let gateway = self.gateway(&ctx.tenant)?;
        let Some(payment) = self.request_capture(ctx, &id).await? else {
            // It moved on meanwhile (completed, or compensating), or its
            // approval captured it.
            return self
                .complete_at_once(ctx, &id, render)
                .await?
                .ok_or_else(|| {
                    AppError::StateConflict(format!(
                        "order `{id}`'s payment is authorized, not captured, and its saga is not \
                         waiting for the capture"
                    ))
                });
        };
        crate::crash_points::reached("payment.capture_requested", id.as_str());
        let (captured, attempt) = self.pg_capture(&*gateway, &payment).await;
        crate::crash_points::reached("payment.capture_answered", id.as_str());
        self.record_capture(ctx, &payment, (captured, vec![attempt]), render)
            .await
    }

    /// The capture's intent (module docs): the payment to capture, or
    /// `None` when the order is not waiting for its capture any more.
    async fn request_capture(
        &self,
        ctx: &RequestCtx,
        id: &OrderId,
    ) -> Result<Option<PaymentRecord>> {
        let now = self.now();
        let mut tx = self.store().begin(&ctx.tenant).await?;
        // Order → payment → saga: the order every step of an order locks
        // them in.
        let order = tx
            .order_for_update(id.as_str())
            .await?
            .ok_or_else(|| AppError::NotFound(format!("order `{id}` not found")))?;
        // Nothing to capture (it moved on, or its approval captured it):
        // the locks go at once.
        let payment = match order.status == OrderStatus::Paid.as_str() {
            true => self.approved_payment(&mut tx, id).await?,
            false => None,
        };
        let saga = match payment {
            Some(_) => tx.saga_for_update(id.as_str()).await?,
            None => None,
        };
        let (Some(payment), Some(saga)) = (payment, saga) else {
            tx.rollback().await?;
            return Ok(None);
        };
        let ours = saga.payment_id.as_deref() == Some(payment.payment_id.as_str());
        let repeat = saga.state == SagaState::Completing.as_str();
        if !ours || (!repeat && self.captured_with_approval(&ctx.tenant, &payment)) {
            tx.rollback().await?;
            return Ok(None);
        }
        match saga.state.as_str() {
            // A repeat (or the orchestrator): the same capture again.
            "COMPLETING" => {}
            _ => {
                super::super::saga::advance(
                    &mut tx,
                    ctx,
                    &saga,
                    (&[SagaEvent::ServiceCompleted], None),
                    "the tenant's service completed the order; capturing its payment",
                    |s| s.next_run_at = Some(now + CAPTURE_LEASE_MS),
                    now,
                )
                .await?;
                if tx
                    .request_capture(&payment.payment_id, Some(now))
                    .await?
                    .is_none()
                {
                    return Err(AppError::Internal(format!(
                        "payment `{}` was APPROVED under its lock and is not now",
                        payment.payment_id
                    )));
                }
            }
        }
        tx.commit(None).await?;
        Ok(Some(payment))
    }

    /// Whether the PG took `payment`'s money with its approval: the mode it
    /// was opened under, or for a payment opened before modes were stored,
    /// the tenant's setting.
    fn captured_with_approval(&self, tenant: &str, payment: &PaymentRecord) -> bool {
        match payment.capture_mode.as_deref() {
            Some(mode) => mode == "automatic",
            None => self.payment_settings(tenant).capture_with_approval,
        }
    }

    /// The order's active payment if it is `APPROVED` (locked), `PAY_004`
    /// when its void was requested, `None` without one.
    async fn approved_payment(&self, tx: &mut Tx, id: &OrderId) -> Result<Option<PaymentRecord>> {
        match tx.active_payment_of_order(id.as_str()).await? {
            Some(p) if p.status == "APPROVED" => {
                let payment = tx.payment_for_update(&p.payment_id).await?.ok_or_else(|| {
                    AppError::Internal(format!("payment `{}` vanished", p.payment_id))
                })?;
                if payment.void_requested_at.is_some() {
                    // The void may have reached the PG already: it goes on.
                    return Err(AppError::StateConflict(format!(
                        "payment `{}` of order `{id}` is being voided: the order cannot be \
                         completed",
                        payment.payment_id
                    )));
                }
                Ok(Some(payment))
            }
            None => Ok(None),
            Some(other) => Err(AppError::Internal(format!(
                "order `{id}` is PAID but its active payment is {}",
                other.status
            ))),
        }
    }

    /// One capture call with the payment's capture key.
    async fn pg_capture<G: PaymentGateway>(
        &self,
        gateway: &G,
        payment: &PaymentRecord,
    ) -> (Captured, PaymentAttemptRecord) {
        let key = format!("{}-capture", payment.payment_id);
        let started = Instant::now();
        let answer = match &payment.pg_payment_key {
            Some(pg_key) => {
                gateway
                    .capture(
                        pg_key,
                        &CaptureRequest {
                            amount: payment.amount,
                        },
                        &key,
                    )
                    .await
            }
            None => Err(GatewayError::Refused {
                code: "NO_PG_PAYMENT_KEY".into(),
                message: "the payment has no PG key".into(),
            }),
        };
        let mut attempt = PaymentAttemptRecord {
            attempt: 0,
            kind: "capture".into(),
            idempotency_key: Some(key),
            outcome: String::new(),
            pg_code: None,
            latency_ms: started.elapsed().as_millis() as i64,
            created_at: self.now(),
        };
        let captured = match answer {
            Ok(pg) if pg.captured_at.is_some() => {
                attempt.outcome = "captured".into();
                Captured::Yes
            }
            Ok(pg) => {
                attempt.outcome = "unknown".into();
                Captured::Pending(format!("the PG answered the capture with {:?}", pg.status))
            }
            Err(err) => {
                attempt.pg_code = err.code().map(str::to_owned);
                attempt.outcome = match &err {
                    GatewayError::Refused { .. } => "refused",
                    GatewayError::Transient { .. } => "transient",
                    GatewayError::Unknown(_) => "unknown",
                    GatewayError::Unreachable(_) | GatewayError::CircuitOpen => "unreachable",
                }
                .into();
                match err {
                    // A refusal may hide a capture that happened (with the
                    // approval, or under another key): the PG's own view
                    // decides, and when it cannot be had the capture stays
                    // unknown — never a compensation on a guess.
                    GatewayError::Refused { code, message } => {
                        match self.pg_captured(gateway, payment).await {
                            Some(true) => {
                                attempt.outcome = "captured".into();
                                Captured::Yes
                            }
                            Some(false) => Captured::Refused(format!(
                                "the PG refused the capture: {code}: {message}"
                            )),
                            None => Captured::Pending(format!(
                                "the PG refused the capture ({code}: {message}) and could not \
                                 say whether it was captured"
                            )),
                        }
                    }
                    other => Captured::Pending(other.to_string()),
                }
            }
        };
        (captured, attempt)
    }

    /// Whether the PG reports `payment` captured; `None` when it cannot
    /// say.
    async fn pg_captured<G: PaymentGateway>(
        &self,
        gateway: &G,
        payment: &PaymentRecord,
    ) -> Option<bool> {
        let pg_key = payment.pg_payment_key.as_deref()?;
        match gateway.payment(pg_key).await {
            Ok(pg) => Some(pg.captured_at.is_some()),
            Err(_) => None,
        }
    }

    /// Records what the PG said about `payment`'s capture (module docs),
    /// with the calls that told it (a query, a capture), in order.
    async fn record_capture(
        &self,
        ctx: &RequestCtx,
        payment: &PaymentRecord,
        (captured, attempts): (Captured, Vec<PaymentAttemptRecord>),
        render: impl Render<OrderDetails>,
    ) -> Result<Reply> {
        let now = self.now();
        // The request's key is claimed by the transaction that answers: a
        // capture's outcome; after a refusal, the one after the
        // compensation.
        let answers = matches!(captured, Captured::Yes);
        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match answers {
            true => match claim(tx, ctx, now).await? {
                Claimed::Proceed(tx) => tx,
                Claimed::Replay(reply) => return Ok(reply),
            },
            false => tx,
        };
        let order = tx
            .order_for_update(&payment.order_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("order `{}` vanished", payment.order_id)))?;
        let locked = tx
            .payment_for_update(&payment.payment_id)
            .await?
            .ok_or_else(|| {
                AppError::Internal(format!("payment `{}` vanished", payment.payment_id))
            })?;
        let saga = tx
            .saga_for_update(&payment.order_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("saga `{}` vanished", payment.order_id)))?;
        let waiting = saga.state == SagaState::Completing.as_str()
            && locked.status == "APPROVED"
            && locked.capture_requested_at.is_some();
        if !waiting {
            // Recorded meanwhile (a repeat, the orchestrator): the order as
            // it stands.
            if answers {
                return answer_order(tx, order, render).await;
            }
            tx.commit(None).await?;
            return self.answer_as_it_stands(ctx, &order.order_id, render).await;
        }
        for attempt in &attempts {
            tx.record_payment_attempt(&locked.payment_id, attempt)
                .await?;
        }
        match captured {
            Captured::Yes => {
                let transaction_id = new_id("tx");
                super::super::saga::advance(
                    &mut tx,
                    ctx,
                    &saga,
                    (&[SagaEvent::Captured], Some(&transaction_id)),
                    "the PG captured the payment",
                    |s| s.next_run_at = None,
                    now,
                )
                .await?;
                self.confirm_captured(&mut tx, ctx, &locked, &transaction_id, now)
                    .await?;
                finish_order(tx, ctx, order, Some(&locked), new_id("tx"), render, now).await
            }
            Captured::Refused(why) => {
                tx.request_capture(&locked.payment_id, None).await?;
                let saga = super::super::saga::advance(
                    &mut tx,
                    ctx,
                    &saga,
                    (&[SagaEvent::CaptureRefused], None),
                    &why,
                    |s| {
                        s.last_error = Some(why.clone());
                        // The compensation's runs are counted afresh.
                        s.attempts = 0;
                        s.next_run_at = Some(now + super::super::saga::COMPENSATION_LEASE_MS);
                    },
                    now,
                )
                .await?;
                tx.commit(None).await?;
                tracing::warn!(tenant = %ctx.tenant, order_id = %saga.order_id, %why, "saga.capture_refused");
                // The compensation's steps answer nobody: the request's key
                // is kept for its own answer.
                let steps = RequestCtx {
                    idempotency: None,
                    ..ctx.clone()
                };
                self.compensate(&steps, saga, &why).await?;
                self.answer_as_it_stands(ctx, &locked.order_id, render)
                    .await
            }
            Captured::Pending(why) => {
                // Not a state change: the saga stays COMPLETING, and the
                // orchestrator asks the PG.
                let mut retry = saga.clone();
                retry.attempts = saga.attempts + 1;
                retry.last_error = Some(why);
                retry.next_run_at = Some(now + 5_000 * (1 << retry.attempts.min(6)));
                retry.updated_at = now;
                if !tx.update_saga(&retry, saga.version).await? {
                    return Err(AppError::StateConflict("the saga changed meanwhile".into()));
                }
                // Asked on and on, never parked: the authorization is held
                // and only the PG can say whether it was captured. Past the
                // limit an operator is told (the payment flagged, which its
                // confirmation or void clears).
                let flag = retry.attempts >= FLAG_CAPTURE_AFTER && locked.flagged_at.is_none();
                if flag {
                    tx.reschedule_payment(
                        &locked.payment_id,
                        locked.next_check_at,
                        locked.checks,
                        Some(now),
                    )
                    .await?;
                }
                tx.commit(None).await?;
                if flag {
                    tracing::warn!(tenant = %ctx.tenant, payment_id = %locked.payment_id, attempts = retry.attempts, "payments.capture_flagged_for_operator");
                }
                Err(AppError::PaymentPending {
                    payment_id: locked.payment_id.clone(),
                })
            }
        }
    }

    /// The order as it stands, as the answer kept for the request's key.
    async fn answer_as_it_stands(
        &self,
        ctx: &RequestCtx,
        order_id: &str,
        render: impl Render<OrderDetails>,
    ) -> Result<Reply> {
        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, self.now()).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(reply),
        };
        let order = tx
            .order_for_update(order_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("order `{order_id}` vanished")))?;
        answer_order(tx, order, render).await
    }

    /// The orchestrator's turn at a `COMPLETING` saga whose host stopped,
    /// or whose capture's answer was lost: the PG is asked what it did,
    /// and the capture sent again (same key) only if it holds the
    /// authorization still uncaptured. The saga after.
    pub(in crate::app) async fn resume_capture(
        &self,
        ctx: &RequestCtx,
        saga: &SagaRecord,
    ) -> Result<SagaRecord> {
        let gateway = self.gateway(&ctx.tenant)?;
        let payment_id = saga
            .payment_id
            .as_deref()
            .ok_or_else(|| AppError::Internal("a COMPLETING saga without a payment".into()))?;
        let payment = self
            .store()
            .payment(&ctx.tenant, payment_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("payment `{payment_id}` vanished")))?;
        let pg_key = payment.pg_payment_key.clone().unwrap_or_default();
        let started = Instant::now();
        let query = gateway.payment(&pg_key).await;
        let mut attempt =
            super::cancel::query_attempt(started.elapsed().as_millis() as i64, self.now());
        let captured = match query {
            Ok(pg) if pg.captured_at.is_some() => {
                attempt.outcome = "captured".into();
                (Captured::Yes, vec![attempt])
            }
            Ok(pg) if pg.status == PgStatus::Done => {
                let (captured, capture) = self.pg_capture(&*gateway, &payment).await;
                (captured, vec![attempt, capture])
            }
            Ok(pg) => (
                Captured::Refused(format!(
                    "the PG holds nothing to capture: the payment is {:?}",
                    pg.status
                )),
                vec![attempt],
            ),
            Err(err) => {
                attempt.outcome = "unknown".into();
                attempt.pg_code = err.code().map(str::to_owned);
                (Captured::Pending(err.to_string()), vec![attempt])
            }
        };
        match self
            .record_capture(ctx, &payment, captured, crate::app::unanswered)
            .await
        {
            Ok(_) | Err(AppError::PaymentPending { .. }) => {}
            Err(err) => return Err(err),
        }
        self.store()
            .saga(&ctx.tenant, &saga.order_id)
            .await?
            .ok_or_else(|| AppError::Internal("saga vanished".into()))
    }

    /// The captured payment `CONFIRMED` (`payment.confirmed`), in `tx`.
    async fn confirm_captured(
        &self,
        tx: &mut Tx,
        ctx: &RequestCtx,
        payment: &PaymentRecord,
        transaction_id: &str,
        now: i64,
    ) -> Result<()> {
        let change = restore_payment(payment)?.confirm("the order was fulfilled")?;
        store_payment_change(
            tx,
            payment,
            &change,
            None,
            (None, payment.checks, None),
            now,
        )
        .await?;
        let mut journal = Recorder::new(ctx, transaction_id, now);
        journal.transition(&change.transition);
        journal.event(
            event_type::PAYMENT_CONFIRMED,
            &payment.customer_id,
            &super::settle::payment_event_with(&change.payment, serde_json::json!({})),
        );
        tx.record(journal.finish());
        Ok(())
    }

    /// Completes an order with nothing to capture, in one transaction: paid
    /// with credits alone (deducted), by a renewal's charge or a card the
    /// PG captured with its approval (confirmed here); a repeat answers
    /// with the completed order. `None`, with nothing written: the order's
    /// payment is only authorized, and must be captured first.
    async fn complete_at_once(
        &self,
        ctx: &RequestCtx,
        id: &OrderId,
        render: impl Render<OrderDetails>,
    ) -> Result<Option<Reply>> {
        let now = self.now();
        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(Some(reply)),
        };
        let order = tx
            .order_for_update(id.as_str())
            .await?
            .ok_or_else(|| AppError::NotFound(format!("order `{id}` not found")))?;
        if order.status == OrderStatus::Completed.as_str() {
            // The callback came again: the order stays as it is.
            return answer_order(tx, order, render).await.map(Some);
        }
        if order.status != OrderStatus::Paid.as_str() {
            return Err(AppError::StateConflict(format!(
                "order `{id}` is {}: only a PAID order can be completed",
                order.status
            )));
        }
        let payment = self.approved_payment(&mut tx, id).await?;
        let saga = tx.saga_for_update(id.as_str()).await?;
        let transaction_id = new_id("tx");
        match (&payment, &saga) {
            // A renewal's charge: no saga.
            (Some(_), None) => {}
            // Credits alone (the saga deducts them), or a card the PG
            // captured with its approval (`capture: automatic`).
            (None, Some(saga)) if saga.payment_id.is_none() => {
                complete_saga_at_once(&mut tx, ctx, saga, &transaction_id, now).await?;
            }
            (Some(payment), Some(saga))
                if saga.payment_id.is_some()
                    && self.captured_with_approval(&ctx.tenant, payment) =>
            {
                complete_saga_at_once(&mut tx, ctx, saga, &transaction_id, now).await?;
            }
            // Authorized only (`capture: manual` when it was opened):
            // captured first, never confirmed here.
            (Some(_), Some(saga))
                if saga.payment_id.is_some()
                    && (saga.state == SagaState::WaitingForService.as_str()
                        || saga.state == SagaState::Completing.as_str()) =>
            {
                tx.rollback().await?;
                return Ok(None);
            }
            // `PAY_004` once its compensation began.
            (_, Some(saga)) => {
                return Err(AppError::StateConflict(format!(
                    "order `{id}`'s saga is {}: it cannot be completed",
                    saga.state
                )));
            }
            (None, None) => {
                return Err(AppError::Internal(format!(
                    "order `{id}` is PAID without an approved payment or reserved credits"
                )));
            }
        }
        if let Some(payment) = &payment {
            self.confirm_captured(&mut tx, ctx, payment, &transaction_id, now)
                .await?;
        }
        // Its own business transaction, unless the saga's rows need one.
        let step_id = match &payment {
            Some(_) => new_id("tx"),
            None => transaction_id,
        };
        finish_order(tx, ctx, order, payment.as_ref(), step_id, render, now)
            .await
            .map(Some)
    }
}

/// The saga `WAITING_FOR_SERVICE → COMPLETING → COMPLETED` in one step,
/// joined to business transaction `transaction_id` (its reserved credits
/// deducted): nothing to capture at the PG.
async fn complete_saga_at_once(
    tx: &mut Tx,
    ctx: &RequestCtx,
    saga: &SagaRecord,
    transaction_id: &str,
    now: i64,
) -> Result<()> {
    super::super::saga::advance(
        tx,
        ctx,
        saga,
        (
            &[SagaEvent::ServiceCompleted, SagaEvent::Captured],
            Some(transaction_id),
        ),
        "the tenant's service completed the order",
        |s| s.next_run_at = None,
        now,
    )
    .await?;
    Ok(())
}

/// The paid `order` `COMPLETED` (`order.completed`) as business
/// transaction `step_id`, committed with the answer.
async fn finish_order(
    mut tx: Tx,
    ctx: &RequestCtx,
    order: OrderRecord,
    payment: Option<&PaymentRecord>,
    step_id: String,
    render: impl Render<OrderDetails>,
    now: i64,
) -> Result<Reply> {
    let paid_by = match payment {
        Some(p) => format!("payment {} confirmed", p.payment_id),
        None => "reserved credits deducted".to_owned(),
    };
    let order_change = restore_order(&order)?.complete(format!("fulfilled; {paid_by}"))?;
    let data = serde_json::json!({
        "orderId": &order.order_id,
        "customerId": &order.customer_id,
        "status": order_change.order.status().as_str(),
        "currency": &order.currency,
        "total": order.total,
        "paymentId": payment.map(|p| &p.payment_id),
    });
    let to = order_change.order.status().as_str();
    let version = record_order_step_as(
        &mut tx,
        ctx,
        &order,
        order_change,
        (event_type::ORDER_COMPLETED, data),
        &step_id,
        now,
    )
    .await?;
    answer_order_step(tx, order, (to, version, now), render).await
}

/// Commits `tx` (which claimed the request's key) with the order as it
/// stands as the answer.
async fn answer_order(
    tx: Tx,
    order: OrderRecord,
    render: impl Render<OrderDetails>,
) -> Result<Reply> {
    let response = render(&OrderDetails::from_record(order)?);
    tx.commit(Some(response.clone())).await?;
    Ok(Reply {
        response,
        replayed: false,
    })
}

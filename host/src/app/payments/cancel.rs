//! `POST /payments/{id}/cancel`: before confirmation a void, after it a
//! refund ([`super::refund`]), in full or in part, at the PG.
//!
//! - **Void** (`APPROVED`, in full only): the PG call carries a key derived
//!   from the payment (`<id>-void`), so a retry after a lost answer sends
//!   the very same cancel, which the PG answers once. The void is stored
//!   before the call; the void and the order's cancellation are one
//!   transaction: the payment `CANCELLED` (`payment.voided` opens the bill
//!   again), the order `CANCELLED` (`order.cancelled` withdraws it) and its
//!   saga compensated.
//!
//! One host's cancels of a customer take turns (the per-customer lock);
//! several hosts are kept apart by the payment's version: a refund recorded
//! meanwhile under the same key is not recorded twice.

use std::time::Instant;

use super::super::credits::Render;
use super::super::error::{AppError, Result};
use super::super::idempotency::{Claimed, claim, stored_answer};
use super::super::journal::{Recorder, event_type};
use super::super::orders::{cancelled_event, record_order_step, restore_order};
use super::super::{App, Reply, RequestCtx, new_id};
use super::outcome::restore_payment;
use super::{PaymentDetails, store_payment_change};
use crate::domain::payment::PaymentStatus;
use crate::domain::saga::SagaEvent;
use crate::domain::{Money, PositiveMoney};
use crate::gateway::{CancelRequest, GatewayError, PaymentGateway, PgPayment, PgStatus};
use crate::store::{
    OrderTx, PaymentAttemptRecord, PaymentQueries, PaymentRecord, PaymentTx, SagaTx, Transactions,
    TxOps,
};

/// Longest cancel reason, in bytes.
const MAX_REASON_LEN: usize = 200;

/// The attempt outcome of a refund the PG made.
pub(super) const REFUNDED: &str = "refunded";

impl App {
    /// Voids an approved payment and cancels its order, or refunds (part
    /// of) a confirmed payment (module docs). `amount`: minor units, only
    /// for refunds; `None` gives back everything still refundable.
    pub async fn cancel_payment(
        &self,
        ctx: &RequestCtx,
        payment_id: &str,
        reason: Option<String>,
        amount: Option<i64>,
        render: impl Render<PaymentDetails>,
    ) -> Result<Reply> {
        let reason = reason.unwrap_or_else(|| "cancelled through the API".into());
        if reason.trim().is_empty() || reason.len() > MAX_REASON_LEN {
            return Err(AppError::Invalid(format!(
                "reason must be 1-{MAX_REASON_LEN} bytes"
            )));
        }
        let gateway = self.gateway(&ctx.tenant)?;
        if let Some(answer) = stored_answer(self.store(), ctx).await? {
            return answer;
        }
        let record = self
            .store()
            .payment(&ctx.tenant, payment_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no payment `{payment_id}`")))?;
        // One customer's cancels on this host take turns: a refund reads
        // the payment, asks the PG and records, and must not race another.
        let _turn = self
            .customer_locks()
            .lock(&ctx.tenant, &record.customer_id)
            .await;
        // The same request may have run while this one waited its turn.
        if let Some(answer) = stored_answer(self.store(), ctx).await? {
            return answer;
        }
        let record = self
            .store()
            .payment(&ctx.tenant, payment_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("payment `{payment_id}` vanished")))?;
        let payment = restore_payment(&record)?;
        match payment.status() {
            PaymentStatus::Approved => {
                if amount.is_some_and(|a| a != record.amount) {
                    return Err(AppError::Invalid(format!(
                        "payment `{payment_id}` is APPROVED: it is voided in full before its \
                         order is fulfilled (refund part of it after confirmation)"
                    )));
                }
                self.void(ctx, &*gateway, record, reason, render).await
            }
            PaymentStatus::Confirmed | PaymentStatus::PartiallyRefunded => {
                let currency = payment.amount().currency();
                let amount = match amount {
                    Some(minor) => PositiveMoney::new(Money::new(minor, currency), "amount")?,
                    None => PositiveMoney::new(payment.refundable(), "amount")?,
                };
                // The domain decides before the PG is asked: more than is
                // refundable is refused with nothing sent.
                payment.refund(amount, reason.clone())?;
                self.refund(ctx, &*gateway, record, amount, reason, render)
                    .await
            }
            status => Err(AppError::StateConflict(format!(
                "payment `{payment_id}` is {status}: only an APPROVED payment can be voided and \
                 only a CONFIRMED or PARTIALLY_REFUNDED one refunded"
            ))),
        }
    }

    /// Voids an `APPROVED` payment at the PG and cancels its order. The
    /// void is stored first, so the order can no longer be completed under
    /// a void that may reach the PG; if the call fails, the recovery
    /// scheduler tries it again.
    pub(super) async fn void<G: PaymentGateway>(
        &self,
        ctx: &RequestCtx,
        gateway: &G,
        record: PaymentRecord,
        reason: String,
        render: impl Render<PaymentDetails>,
    ) -> Result<Reply> {
        let payment_id = record.payment_id.as_str();
        let key = format!("{payment_id}-void");
        let mut tx = self.store().begin(&ctx.tenant).await?;
        let requested = tx
            .request_void(payment_id, self.now(), self.now() + super::VOID_RETRY_MS)
            .await?;
        if requested.is_none() {
            return Err(AppError::StateConflict(format!(
                "payment `{payment_id}` is no longer APPROVED"
            )));
        }
        tx.commit(None).await?;
        crate::crash_points::reached("payment.void_requested", &record.order_id);
        let call = self
            .pg_cancel(ctx, gateway, &record, &key, &reason, None)
            .await;
        crate::crash_points::reached("payment.void_answered", &record.order_id);
        let call = call?;
        let voided = &call.answer;
        if voided.status != PgStatus::Canceled || voided.balance_amount != 0 {
            return Err(AppError::Internal(format!(
                "the PG answered the void of `{payment_id}` with {:?} and {} left",
                voided.status, voided.balance_amount
            )));
        }
        let attempt = call.attempt("cancelled", self.now());
        self.record_void(ctx, record, reason, attempt, render).await
    }

    /// Records a void the PG made (`attempt`: the call that learnt it):
    /// the payment `CANCELLED`, its order cancelled and its saga
    /// compensated, in one transaction.
    pub(super) async fn record_void(
        &self,
        ctx: &RequestCtx,
        record: PaymentRecord,
        reason: String,
        attempt: PaymentAttemptRecord,
        render: impl Render<PaymentDetails>,
    ) -> Result<Reply> {
        let payment_id = record.payment_id.as_str();
        let now = self.now();
        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(reply),
        };
        // Order first, then payment, then saga: the order every step of an
        // order locks them in.
        tx.order_for_update(&record.order_id).await?;
        let locked = tx
            .payment_for_update(payment_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("payment `{payment_id}` vanished")))?;
        tx.record_payment_attempt(payment_id, &attempt).await?;
        let change = restore_payment(&locked)?.void(reason.clone())?;
        let version = store_payment_change(
            &mut tx,
            &locked,
            &change,
            None,
            (None, locked.checks, None),
            now,
        )
        .await?;
        let transaction_id = new_id("tx");
        let mut journal = Recorder::new(ctx, &transaction_id, now);
        if let Some(ledger) = change.ledger.clone() {
            journal.ledger(Some(&locked.customer_id), ledger);
        }
        journal.transition(&change.transition);
        journal.event(
            event_type::PAYMENT_CANCELLED,
            &locked.customer_id,
            &super::settle::payment_event_with(
                &change.payment,
                serde_json::json!({ "reason": &reason }),
            ),
        );
        tx.record(journal.finish());

        // The order goes with its payment: its bill is withdrawn.
        let order = tx
            .order_for_update(&locked.order_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("order `{}` vanished", locked.order_id)))?;
        // The order's saga is compensated with it: the payment voided and
        // the order cancelled are its compensations, in this transaction.
        if let Some(saga) = tx.saga_for_update(&locked.order_id).await? {
            let events: &[SagaEvent] = match saga.state.as_str() {
                "WAITING_FOR_SERVICE" => &[SagaEvent::ServiceFailed, SagaEvent::Compensated],
                "COMPENSATING" => &[SagaEvent::Compensated],
                // An operator's retry that went through.
                "COMPENSATION_FAILED" => &[SagaEvent::Retry, SagaEvent::Compensated],
                _ => &[],
            };
            if !events.is_empty() {
                super::super::saga::advance(
                    &mut tx,
                    ctx,
                    &saga,
                    // Its own business transaction: `saga.compensated`.
                    (events, None),
                    &format!("payment {payment_id} voided: {reason}"),
                    |s| s.next_run_at = None,
                    now,
                )
                .await?;
            }
        }
        let order_change =
            restore_order(&order)?.cancel(format!("payment {payment_id} voided: {reason}"))?;
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

        let mut payment = locked;
        payment.status = change.payment.status().as_str().to_owned();
        payment.version = version;
        payment.updated_at = now;
        self.answer_cancel(tx, payment, render).await
    }

    /// One cancel call to the PG with `key`; a failure is recorded as an
    /// attempt of its own and answered with its code.
    pub(super) async fn pg_cancel<G: PaymentGateway>(
        &self,
        ctx: &RequestCtx,
        gateway: &G,
        record: &PaymentRecord,
        key: &str,
        reason: &str,
        amount: Option<i64>,
    ) -> Result<CancelCall> {
        let payment_id = record.payment_id.as_str();
        let pg_key = record
            .pg_payment_key
            .clone()
            .ok_or_else(|| AppError::Internal(format!("payment `{payment_id}` has no PG key")))?;
        let started = Instant::now();
        let answer = gateway
            .cancel(
                &pg_key,
                &CancelRequest {
                    cancel_reason: reason.to_owned(),
                    cancel_amount: amount,
                },
                key,
            )
            .await;
        let latency_ms = started.elapsed().as_millis() as i64;
        let err = match answer {
            Ok(pg) => {
                debug_assert_eq!(pg.payment_key, pg_key);
                return Ok(CancelCall {
                    key: key.to_owned(),
                    latency_ms,
                    answer: pg,
                });
            }
            Err(err) => err,
        };
        let (outcome, code) = match &err {
            GatewayError::Refused { code, .. } => ("refused", Some(code.clone())),
            GatewayError::Transient { code, .. } => ("transient", Some(code.clone())),
            GatewayError::Unknown(_) => ("unknown", None),
            GatewayError::Unreachable(_) | GatewayError::CircuitOpen => ("unreachable", None),
        };
        let now = self.now();
        let mut attempt = cancel_attempt(key, latency_ms, outcome, now);
        attempt.pg_code = code;
        let mut tx = self.store().begin(&ctx.tenant).await?;
        // Attempts are numbered under the payment's lock.
        tx.payment_for_update(payment_id).await?;
        tx.record_payment_attempt(payment_id, &attempt).await?;
        if amount.is_some() && matches!(err, GatewayError::Unknown(_)) {
            // A refund whose answer was lost: the recovery scheduler asks
            // the PG what it gave back, if the client does not send the
            // request again first (a void has its own retry: the stored
            // void request).
            tx.reschedule_payment(
                payment_id,
                Some(now + super::CHECK_SCHEDULE_MS[0]),
                record.checks,
                None,
            )
            .await?;
        }
        tx.commit(None).await?;
        Err(match err {
            GatewayError::Refused { code, message } => AppError::StateConflict(format!(
                "the payment gateway refused the cancel ({code}: {message})"
            )),
            GatewayError::Unknown(_) => AppError::PaymentPending {
                payment_id: payment_id.to_owned(),
            },
            other => AppError::GatewayUnavailable(other.to_string()),
        })
    }

    /// Commits `tx` with the answer: the payment and its attempts, the one
    /// this transaction records included.
    pub(super) async fn answer_cancel(
        &self,
        mut tx: crate::store::Tx,
        payment: PaymentRecord,
        render: impl Render<PaymentDetails>,
    ) -> Result<Reply> {
        // Read in the transaction: it sees the attempt it records.
        let attempts = tx.attempts_in_tx(&payment.payment_id).await?;
        let response = render(&PaymentDetails { payment, attempts });
        tx.commit(Some(response.clone())).await?;
        Ok(Reply {
            response,
            replayed: false,
        })
    }
}

/// A cancel the PG answered.
pub(super) struct CancelCall {
    key: String,
    latency_ms: i64,
    /// The payment as the PG answered.
    pub(super) answer: PgPayment,
}

impl CancelCall {
    pub(super) fn attempt(&self, outcome: &str, now: i64) -> PaymentAttemptRecord {
        cancel_attempt(&self.key, self.latency_ms, outcome, now)
    }
}

/// A status query's record (`found`; the caller sets another outcome
/// when the PG did not answer).
pub(super) fn query_attempt(latency_ms: i64, now: i64) -> PaymentAttemptRecord {
    PaymentAttemptRecord {
        attempt: 0,
        kind: "query".into(),
        idempotency_key: None,
        outcome: "found".into(),
        pg_code: None,
        latency_ms,
        created_at: now,
    }
}

pub(super) fn cancel_attempt(
    key: &str,
    latency_ms: i64,
    outcome: &str,
    now: i64,
) -> PaymentAttemptRecord {
    PaymentAttemptRecord {
        attempt: 0,
        kind: "cancel".into(),
        idempotency_key: Some(key.to_owned()),
        outcome: outcome.into(),
        pg_code: None,
        latency_ms,
        created_at: now,
    }
}

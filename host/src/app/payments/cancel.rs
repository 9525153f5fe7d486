//! `POST /payments/{id}/cancel`: before confirmation a void, after it a
//! refund, in full or in part, at the PG.
//!
//! - **Void** (`APPROVED`, in full only): the PG call carries a key derived
//!   from the payment (`<id>-void`), so a retry after a lost answer sends
//!   the very same cancel, which the PG answers once. The void and the
//!   order's cancellation are one transaction: the payment `CANCELLED`
//!   (`payment.voided` opens the bill again) and the order `CANCELLED`
//!   (`order.cancelled` withdraws it).
//! - **Refund** (`CONFIRMED | PARTIALLY_REFUNDED`, any amount up to what is
//!   still refundable, checked by the domain before the PG is asked): the
//!   n-th refund of a payment sends the key `<id>-refund-<n>`, so a retry
//!   after a lost answer (`PAY_006`) repeats the same refund, and the PG
//!   answers it once; what it gave back is read from the PG's answer (its
//!   last cancellation), never assumed from the request. The payment goes
//!   `PARTIALLY_REFUNDED` or `REFUNDED` (`payment.refunded`: refunds ←
//!   clearing); the order stays `COMPLETED`.
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
use super::confirm::restore_payment;
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
const REFUNDED: &str = "refunded";

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
            &serde_json::json!({
                "paymentId": payment_id,
                "orderId": &locked.order_id,
                "customerId": &locked.customer_id,
                "status": change.payment.status().as_str(),
                "amount": locked.amount,
                "currency": &locked.currency,
                "pgPaymentKey": &locked.pg_payment_key,
                "reason": &reason,
            }),
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

    /// Refunds `amount` of a `CONFIRMED | PARTIALLY_REFUNDED` payment.
    async fn refund<G: PaymentGateway>(
        &self,
        ctx: &RequestCtx,
        gateway: &G,
        record: PaymentRecord,
        amount: PositiveMoney,
        reason: String,
        render: impl Render<PaymentDetails>,
    ) -> Result<Reply> {
        let payment_id = record.payment_id.as_str();
        let attempts = self
            .store()
            .payment_attempts(&ctx.tenant, payment_id)
            .await?;
        // One key per refund the PG answered for good (made or refused); a
        // key whose answer was lost or never came is sent again as it was.
        let answered = attempts
            .iter()
            .filter(|a| {
                a.idempotency_key
                    .as_deref()
                    .is_some_and(|k| k.starts_with(&format!("{payment_id}-refund-")))
                    && (a.outcome == REFUNDED || a.outcome == "refused")
            })
            .count();
        let key = format!("{payment_id}-refund-{}", answered + 1);
        let call = self
            .pg_cancel(ctx, gateway, &record, &key, &reason, Some(amount.minor()))
            .await?;
        // What the PG gave back under this key: the last cancellation of
        // its answer (a repeat of a lost request answers as the first did).
        let given = call.answer.cancels.last().map(|c| c.cancel_amount);
        let given = match given {
            Some(minor) if minor > 0 => {
                PositiveMoney::new(Money::new(minor, amount.currency()), "refund")?
            }
            _ => {
                return Err(AppError::Internal(format!(
                    "the PG answered refund `{key}` without a cancellation"
                )));
            }
        };

        // What the PG did is recorded whatever the claim finds: a key taken
        // meanwhile (by another host's run of the same request) only
        // changes what this request answers.
        let now = self.now();
        let tx = self.store().begin(&ctx.tenant).await?;
        let (mut tx, taken) = match claim(tx, ctx, now).await {
            Ok(Claimed::Proceed(tx)) => (tx, None),
            Ok(Claimed::Replay(reply)) => (self.store().begin(&ctx.tenant).await?, Some(Ok(reply))),
            Err(err @ AppError::IdempotencyConflict(_)) => {
                (self.store().begin(&ctx.tenant).await?, Some(Err(err)))
            }
            Err(err) => return Err(err),
        };
        let locked = tx
            .payment_for_update(payment_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("payment `{payment_id}` vanished")))?;
        if locked.version != record.version {
            // Moved meanwhile (another host): recorded already if its
            // refund used this key; otherwise this one is recorded on top.
            let recorded = tx
                .attempts_in_tx(payment_id)
                .await?
                .iter()
                .any(|a| a.outcome == REFUNDED && a.idempotency_key.as_deref() == Some(&key));
            if recorded {
                tx.commit(None).await?;
                return taken.unwrap_or_else(|| {
                    Err(AppError::StateConflict(format!(
                        "refund `{key}` of payment `{payment_id}` was recorded by another request"
                    )))
                });
            }
        }
        let attempt = call.attempt(REFUNDED, now);
        tx.record_payment_attempt(payment_id, &attempt).await?;
        let change = restore_payment(&locked)?.refund(given, reason.clone())?;
        let version = store_payment_change(
            &mut tx,
            &locked,
            &change,
            None,
            (None, locked.checks, None),
            now,
        )
        .await?;
        let mut journal = Recorder::new(ctx, new_id("tx"), now);
        if let Some(ledger) = change.ledger.clone() {
            journal.ledger(Some(&locked.customer_id), ledger);
        }
        journal.transition(&change.transition);
        journal.event(
            event_type::PAYMENT_REFUNDED,
            &locked.customer_id,
            &serde_json::json!({
                "paymentId": payment_id,
                "orderId": &locked.order_id,
                "customerId": &locked.customer_id,
                "status": change.payment.status().as_str(),
                "amount": locked.amount,
                "refundAmount": given.minor(),
                "refunded": change.payment.refunded().minor,
                "refundable": change.payment.refundable().minor,
                "currency": &locked.currency,
                "pgPaymentKey": &locked.pg_payment_key,
                "reason": &reason,
            }),
        );
        tx.record(journal.finish());
        let mut payment = locked;
        payment.status = change.payment.status().as_str().to_owned();
        payment.refunded = change.payment.refunded().minor;
        payment.version = version;
        payment.updated_at = now;
        if let Some(answer) = taken {
            tx.commit(None).await?;
            return answer;
        }
        if given != amount {
            // A repeat of a lost refund of another amount: what the PG did
            // is recorded, and the client learns it was not this request.
            tx.commit(None).await?;
            return Err(AppError::StateConflict(format!(
                "refund `{key}` had been made before with {given}, not {amount}: that refund is \
                 now recorded; read the payment and ask again for what is still owed"
            )));
        }
        self.answer_cancel(tx, payment, render).await
    }

    /// One cancel call to the PG with `key`; a failure is recorded as an
    /// attempt of its own and answered with its code.
    async fn pg_cancel<G: PaymentGateway>(
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

    /// The recovery scheduler's look at a confirmed payment with a refund
    /// whose answer was lost: the PG's balance says whether it was made.
    /// Made: recorded now, under the lost request's key. Not made: nothing
    /// changes (a retry of the request sends the same key). The PG cannot
    /// tell: asked again later along the schedule, then flagged.
    pub(super) async fn reconcile_refund<G: PaymentGateway>(
        &self,
        ctx: &RequestCtx,
        gateway: &G,
        record: PaymentRecord,
    ) -> Result<bool> {
        let payment_id = record.payment_id.as_str();
        let pg_key = record
            .pg_payment_key
            .clone()
            .ok_or_else(|| AppError::Internal(format!("payment `{payment_id}` has no PG key")))?;
        let started = Instant::now();
        let found = gateway.payment(&pg_key).await;
        let now = self.now();
        let ours = record.amount - record.refunded;
        let mut tx = self.store().begin(&ctx.tenant).await?;
        let locked = tx
            .payment_for_update(payment_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("payment `{payment_id}` vanished")))?;
        if locked.version != record.version {
            // Moved meanwhile (the client's retry recorded it): done.
            tx.reschedule_payment(payment_id, None, locked.checks, None)
                .await?;
            tx.commit(None).await?;
            return Ok(true);
        }
        let mut query = PaymentAttemptRecord {
            attempt: 0,
            kind: "query".into(),
            idempotency_key: None,
            outcome: "found".into(),
            pg_code: None,
            latency_ms: started.elapsed().as_millis() as i64,
            created_at: now,
        };
        let pg = match found {
            Ok(pg) => pg,
            Err(err) => {
                query.outcome = "unknown".into();
                query.pg_code = err.code().map(str::to_owned);
                tx.record_payment_attempt(payment_id, &query).await?;
                let checks = record.checks + 1;
                let (next, flagged) = match super::CHECK_SCHEDULE_MS.get(checks as usize) {
                    Some(wait) => (Some(now + wait), None),
                    None => (None, Some(now)),
                };
                tx.reschedule_payment(payment_id, next, checks, flagged)
                    .await?;
                tx.commit(None).await?;
                return Ok(false);
            }
        };
        tx.record_payment_attempt(payment_id, &query).await?;
        let missing = ours - pg.balance_amount;
        if missing < 0 || missing > ours {
            // The PG holds more than FluxPay's books say: an operator looks.
            tx.reschedule_payment(payment_id, None, record.checks, Some(now))
                .await?;
            tx.commit(None).await?;
            tracing::warn!(tenant = %ctx.tenant, payment_id, pg_balance = pg.balance_amount, ours, "payments.refund_mismatch_flagged");
            return Ok(false);
        }
        if missing == 0 {
            // Not made (yet: a PG may still be processing it): asked again
            // along the schedule, then left to the client's retry, which
            // sends the same key.
            let checks = record.checks + 1;
            let next = super::CHECK_SCHEDULE_MS
                .get(checks as usize)
                .map(|wait| now + wait);
            tx.reschedule_payment(payment_id, next, checks, None)
                .await?;
            tx.commit(None).await?;
            return Ok(true);
        }
        // Made: recorded under the key of the request whose answer was lost
        // (so the next refund takes the next key).
        let attempts = tx.attempts_in_tx(payment_id).await?;
        let lost_key = attempts
            .iter()
            .rev()
            .find(|a| a.kind == "cancel" && a.outcome == "unknown")
            .and_then(|a| a.idempotency_key.clone())
            .unwrap_or_else(|| format!("{payment_id}-refund-found"));
        let refund = cancel_attempt(&lost_key, 0, REFUNDED, now);
        tx.record_payment_attempt(payment_id, &refund).await?;
        let currency = crate::domain::Currency::parse(&record.currency)
            .map_err(|err| AppError::Internal(err.to_string()))?;
        let given = PositiveMoney::new(Money::new(missing, currency), "refund")?;
        let reason = "a refund whose answer was lost, found made at the PG";
        let change = restore_payment(&locked)?.refund(given, reason)?;
        store_payment_change(
            &mut tx,
            &locked,
            &change,
            None,
            (None, locked.checks, None),
            now,
        )
        .await?;
        let mut journal = Recorder::new(ctx, new_id("tx"), now);
        if let Some(ledger) = change.ledger.clone() {
            journal.ledger(Some(&locked.customer_id), ledger);
        }
        journal.transition(&change.transition);
        journal.event(
            event_type::PAYMENT_REFUNDED,
            &locked.customer_id,
            &serde_json::json!({
                "paymentId": payment_id,
                "orderId": &locked.order_id,
                "customerId": &locked.customer_id,
                "status": change.payment.status().as_str(),
                "amount": locked.amount,
                "refundAmount": missing,
                "refunded": change.payment.refunded().minor,
                "refundable": change.payment.refundable().minor,
                "currency": &locked.currency,
                "pgPaymentKey": &locked.pg_payment_key,
                "reason": reason,
            }),
        );
        tx.record(journal.finish());
        tx.commit(None).await?;
        Ok(true)
    }

    /// Commits `tx` with the answer: the payment and its attempts, the one
    /// this transaction records included.
    async fn answer_cancel(
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
struct CancelCall {
    key: String,
    latency_ms: i64,
    answer: PgPayment,
}

impl CancelCall {
    fn attempt(&self, outcome: &str, now: i64) -> PaymentAttemptRecord {
        cancel_attempt(&self.key, self.latency_ms, outcome, now)
    }
}

fn cancel_attempt(key: &str, latency_ms: i64, outcome: &str, now: i64) -> PaymentAttemptRecord {
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

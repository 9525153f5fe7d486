//! Step 3 of a confirm (and of a janitor's resolution, a billing charge):
//! the PG's outcome recorded and the payment, its order and its saga moved
//! as it says, in one transaction (see the module docs of [`super`]).

use super::super::credits::Render;
use super::super::error::{AppError, Result};
use super::super::idempotency::{Claimed, claim};
use super::super::journal::{Recorder, event_type};
use super::super::orders::{record_order_step, restore_order};
use super::super::{App, Reply, RequestCtx, new_id};
use super::outcome::{Outcome, restore_payment};
use super::{PaymentDetails, store_payment_change};
use crate::domain::payment::{Payment, PaymentChange, PaymentStatus};
use crate::store::{
    OrderTx, PaymentAttemptRecord, PaymentRecord, PaymentTx, Transactions, Tx, TxOps,
};

impl App {
    /// Step 3: records the call and moves the payment (and its order) as
    /// the outcome says, in one transaction. `check`: the call was the
    /// recovery schedule's (a step along it when the outcome stays
    /// unknown).
    pub(super) async fn settle(
        &self,
        ctx: &RequestCtx,
        (order_id, payment_id): (&str, &str),
        outcome: Outcome,
        (attempt, check): (PaymentAttemptRecord, bool),
        render: impl Render<PaymentDetails>,
    ) -> Result<Reply> {
        let now = self.now();
        // Only a final answer is kept for the Idempotency-Key. Whatever the
        // claim finds, the PG's outcome is recorded: a key taken meanwhile
        // (a replay, another request's body) only changes what this
        // request answers.
        let keeps_answer = matches!(outcome, Outcome::Approved(_) | Outcome::Declined(..));
        // Locks are taken order first, then payment, then saga, as every
        // other step of an order takes them (two steps locking the same
        // rows in opposite order would deadlock on PostgreSQL).
        let tx = self.store().begin(&ctx.tenant).await?;
        let (mut tx, taken) = if keeps_answer && ctx.idempotency.is_some() {
            match claim(tx, ctx, now).await {
                Ok(Claimed::Proceed(tx)) => (tx, None),
                Ok(Claimed::Replay(reply)) => {
                    (self.store().begin(&ctx.tenant).await?, Some(Ok(reply)))
                }
                Err(err @ AppError::IdempotencyConflict(_)) => {
                    (self.store().begin(&ctx.tenant).await?, Some(Err(err)))
                }
                Err(err) => return Err(err),
            }
        } else {
            (tx, None)
        };
        tx.order_for_update(order_id).await?;
        let record = tx
            .payment_for_update(payment_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("payment `{payment_id}` vanished")))?;
        tx.record_payment_attempt(payment_id, &attempt).await?;
        if record.status != "READY" && record.status != "UNKNOWN" {
            // Settled meanwhile (another request, the janitor): it stays as
            // it is, and this request answers with it.
            return self.answer_with(tx, record, taken, render).await;
        }
        let payment = restore_payment(&record)?;
        let (change, failure) = match &outcome {
            Outcome::Approved(pg_key) => (payment.approve(pg_key, "approved by the PG")?, None),
            Outcome::Declined(code, message)
            | Outcome::Rejected(code, message)
            | Outcome::NotTaken(code, message) => (
                payment.decline(format!("{code}: {message}"))?,
                Some((code.clone(), message.clone())),
            ),
            Outcome::Lost(reason) => match payment.status() {
                // Already unknown: the query said nothing new; the next
                // check moves on along the schedule (or the payment is
                // flagged for an operator once it is used up).
                PaymentStatus::Unknown => {
                    // Only the schedule's own asks move it on (or use it
                    // up); anyone else's leaves it as it was.
                    let (next, checks, flagged) = if check {
                        next_check(&record, check, now)
                    } else {
                        (record.next_check_at, record.checks, record.flagged_at)
                    };
                    tx.reschedule_payment(payment_id, next, checks, flagged)
                        .await?;
                    tx.commit(None).await?;
                    if check && flagged.is_some() {
                        tracing::warn!(
                            tenant = %ctx.tenant,
                            payment_id,
                            checks,
                            "payments.flagged_for_operator"
                        );
                    }
                    return Err(AppError::PaymentPending {
                        payment_id: payment_id.to_owned(),
                    });
                }
                _ => (payment.lose(reason.clone())?, None),
            },
        };
        let (next_check_at, checks, flagged_at) = match change.payment.status() {
            PaymentStatus::Unknown => next_check(&record, check, now),
            // Voided by the scheduler if its order is not fulfilled in time.
            PaymentStatus::Approved => (
                Some(now + self.payment_settings(&ctx.tenant).void_unconfirmed_after_ms),
                record.checks,
                None,
            ),
            _ => (None, record.checks, None),
        };
        let version = store_payment_change(
            &mut tx,
            &record,
            &change,
            failure.clone(),
            (next_check_at, checks, flagged_at),
            now,
        )
        .await?;

        let transaction_id = new_id("tx");
        let mut journal = Recorder::new(ctx, &transaction_id, now);
        record_change(&mut journal, &record.customer_id, &change, failure.as_ref());
        tx.record(journal.finish());
        if let Outcome::Approved(_) = outcome {
            // The order's step is a business transaction of its own (its
            // history row and event), in the same database transaction.
            pay_order(&mut tx, ctx, &record, now).await?;
        }
        // The order's saga (orders paid through the confirm API) moves with
        // its payment: waiting for the service, or nothing to undo.
        let saga_step = match &outcome {
            Outcome::Approved(_) => Some(Ok(
                now + self.payment_settings(&ctx.tenant).service_timeout_ms
            )),
            Outcome::Declined(code, message)
            | Outcome::Rejected(code, message)
            | Outcome::NotTaken(code, message) => Some(Err(format!(
                "payment {payment_id} not taken: {code}: {message}"
            ))),
            Outcome::Lost(_) => None,
        };
        if let Some(step) = saga_step {
            super::super::saga::payment_settled(
                &mut tx,
                ctx,
                &record.order_id,
                step,
                &transaction_id,
                now,
            )
            .await?;
        }

        let mut stored = record.clone();
        stored.status = change.payment.status().as_str().to_owned();
        stored.pg_payment_key = change.payment.pg_payment_key().map(str::to_owned);
        stored.version = version;
        stored.updated_at = now;
        stored.next_check_at = next_check_at;
        stored.checks = checks;
        stored.flagged_at = flagged_at;
        if let Some((code, message)) = &failure {
            stored.failure_code = Some(code.clone());
            stored.failure_message = Some(message.clone());
        }
        match outcome {
            Outcome::Approved(_) | Outcome::Declined(..) => {
                self.answer_with(tx, stored, taken, render).await
            }
            Outcome::Rejected(code, message) => {
                tx.commit(None).await?;
                Err(AppError::Invalid(format!(
                    "the payment gateway refused the request ({code}: {message}); nothing was \
                     charged"
                )))
            }
            Outcome::NotTaken(code, message) => {
                tx.commit(None).await?;
                Err(AppError::GatewayUnavailable(format!("{code}: {message}")))
            }
            Outcome::Lost(_) => {
                tx.commit(None).await?;
                Err(AppError::PaymentPending {
                    payment_id: payment_id.to_owned(),
                })
            }
        }
    }

    /// Commits `tx` and answers with `payment` as it now stands (kept for
    /// the key when this request claimed it), or with what the key's
    /// earlier request was answered.
    async fn answer_with(
        &self,
        mut tx: Tx,
        payment: PaymentRecord,
        taken: Option<Result<Reply>>,
        render: impl Render<PaymentDetails>,
    ) -> Result<Reply> {
        if let Some(answer) = taken {
            tx.commit(None).await?;
            return answer;
        }
        if payment.status == "READY" || payment.status == "UNKNOWN" {
            tx.commit(None).await?;
            return Err(AppError::PaymentPending {
                payment_id: payment.payment_id,
            });
        }
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

/// Where an unresolved payment goes next on the recovery schedule: a
/// status query counts as a check; past the last one the payment is
/// flagged for an operator and no longer asked about.
fn next_check(record: &PaymentRecord, check: bool, now: i64) -> (Option<i64>, i64, Option<i64>) {
    let checks = record.checks + i64::from(check);
    match super::CHECK_SCHEDULE_MS.get(checks as usize) {
        Some(wait) => (Some(now + wait), checks, None),
        None => (None, checks, Some(now)),
    }
}

/// The order becomes `PAID` with its payment's approval.
async fn pay_order(tx: &mut Tx, ctx: &RequestCtx, payment: &PaymentRecord, now: i64) -> Result<()> {
    let order = tx
        .order_for_update(&payment.order_id)
        .await?
        .ok_or_else(|| AppError::Internal(format!("order `{}` vanished", payment.order_id)))?;
    let change = restore_order(&order)?.pay(format!("payment {}", payment.payment_id))?;
    let data = serde_json::json!({
        "orderId": &order.order_id,
        "customerId": &order.customer_id,
        "status": change.order.status().as_str(),
        "currency": &order.currency,
        "total": order.total,
        "paymentId": &payment.payment_id,
    });
    record_order_step(tx, ctx, &order, change, event_type::ORDER_PAID, data, now).await?;
    Ok(())
}

/// The payment's history row, its ledger movement and its event.
pub(super) fn record_change(
    journal: &mut Recorder<'_>,
    customer_id: &str,
    change: &PaymentChange,
    failure: Option<&(String, String)>,
) {
    if let Some(ledger) = change.ledger.clone() {
        journal.ledger(Some(customer_id), ledger);
    }
    journal.transition(&change.transition);
    let event = match change.payment.status() {
        PaymentStatus::Approved => event_type::PAYMENT_APPROVED,
        PaymentStatus::Unknown => event_type::PAYMENT_UNKNOWN,
        _ => event_type::PAYMENT_FAILED,
    };
    journal.event(event, customer_id, &payment_event(&change.payment, failure));
}

/// The body of an outcome's event (`payment.approved`, `.unknown`,
/// `.failed`): the payment, and the PG's refusal if any.
pub(super) fn payment_event(
    payment: &Payment,
    failure: Option<&(String, String)>,
) -> serde_json::Value {
    payment_event_with(
        payment,
        serde_json::json!({
            "failureCode": failure.map(|f| &f.0),
            "failureMessage": failure.map(|f| &f.1),
        }),
    )
}

/// The body of a `payment.*` event: the fields every one carries (the
/// payment as `payment` is now), then those of `extra` (an object).
pub(super) fn payment_event_with(payment: &Payment, extra: serde_json::Value) -> serde_json::Value {
    let mut body = serde_json::json!({
        "paymentId": payment.id().as_str(),
        "orderId": payment.order().as_str(),
        "customerId": payment.customer().as_str(),
        "status": payment.status().as_str(),
        "amount": payment.amount().minor(),
        "currency": payment.amount().currency().code(),
        "pgPaymentKey": payment.pg_payment_key(),
    });
    if let (Some(body), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

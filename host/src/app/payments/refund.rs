//! Refunds of a confirmed payment (`CONFIRMED | PARTIALLY_REFUNDED`), for
//! `POST /payments/{id}/cancel` ([`super::cancel`]): any amount up to what
//! is still refundable, checked by the domain before the PG is asked.
//!
//! - The n-th refund the PG answers for good (made or refused) sends the
//!   key `<id>-refund-<n>`: a retry after a lost answer (`PAY_006`)
//!   repeats the same refund, which the PG makes once.
//! - What it gave back is read from the PG's answer (its last
//!   cancellation), never assumed from the request.
//! - The payment goes `PARTIALLY_REFUNDED` or `REFUNDED`
//!   (`payment.refunded`: refunds ← clearing); the order stays
//!   `COMPLETED`.
//! - A lost answer nobody sends again is found by the recovery scheduler
//!   ([`App::reconcile_refund`]): the PG's balance says whether the refund
//!   was made.

use std::time::Instant;

use super::super::credits::Render;
use super::super::error::{AppError, Result};
use super::super::idempotency::{Claimed, claim};
use super::super::journal::{Recorder, event_type};
use super::super::{App, Reply, RequestCtx, new_id};
use super::cancel::{REFUNDED, cancel_attempt};
use super::outcome::restore_payment;
use super::{PaymentDetails, store_payment_change};
use crate::domain::{Money, PositiveMoney};
use crate::gateway::PaymentGateway;
use crate::store::{PaymentQueries, PaymentRecord, PaymentTx, Transactions, TxOps};

impl App {
    /// Refunds `amount` of a `CONFIRMED | PARTIALLY_REFUNDED` payment.
    pub(super) async fn refund<G: PaymentGateway>(
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
        let (change, version) = record_refund(&mut tx, ctx, &locked, given, &reason, now).await?;
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
        let mut query = super::cancel::query_attempt(started.elapsed().as_millis() as i64, now);
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
        record_refund(&mut tx, ctx, &locked, given, reason, now).await?;
        tx.commit(None).await?;
        Ok(true)
    }
}

/// Stores a refund of `given` the PG made on the locked payment, with its
/// history row, ledger movement and `payment.refunded`, in `tx`; the change
/// and the payment's version after.
async fn record_refund(
    tx: &mut crate::store::Tx,
    ctx: &RequestCtx,
    locked: &PaymentRecord,
    given: PositiveMoney,
    reason: &str,
    now: i64,
) -> Result<(crate::domain::payment::PaymentChange, i64)> {
    let change = restore_payment(locked)?.refund(given, reason)?;
    let version =
        store_payment_change(tx, locked, &change, None, (None, locked.checks, None), now).await?;
    let mut journal = Recorder::new(ctx, new_id("tx"), now);
    if let Some(ledger) = change.ledger.clone() {
        journal.ledger(Some(&locked.customer_id), ledger);
    }
    journal.transition(&change.transition);
    journal.event(
        event_type::PAYMENT_REFUNDED,
        &locked.customer_id,
        &super::settle::payment_event_with(
            &change.payment,
            serde_json::json!({
                "refundAmount": given.minor(),
                "refunded": change.payment.refunded().minor,
                "refundable": change.payment.refundable().minor,
                "reason": reason,
            }),
        ),
    );
    tx.record(journal.finish());
    Ok((change, version))
}

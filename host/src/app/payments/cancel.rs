//! `POST /payments/{id}/cancel` before confirmation: a void at the PG.
//!
//! The PG call carries a key derived from the payment (`<id>-void`), so a
//! retry after a lost answer sends the very same cancel, which the PG
//! answers once. The void and the order's cancellation are one
//! transaction: the payment `CANCELLED` (`payment.voided` opens the bill
//! again) and the order `CANCELLED` (`order.cancelled` withdraws it).
//! Refunds of a confirmed payment come with confirmation (the saga).

use std::time::Instant;

use super::super::credits::Render;
use super::super::error::{AppError, Result};
use super::super::idempotency::{Claimed, claim, stored_answer};
use super::super::journal::{Recorder, event_type};
use super::super::orders::{cancelled_event, record_order_step, restore_order};
use super::super::{App, Reply, RequestCtx, new_id};
use super::confirm::restore_payment;
use super::{PaymentDetails, store_payment_change};
use crate::gateway::{CancelRequest, GatewayError, PaymentGateway, PgStatus};
use crate::store::{OrderTx, PaymentAttemptRecord, PaymentQueries, PaymentTx, Transactions, TxOps};

/// Longest cancel reason, in bytes.
const MAX_REASON_LEN: usize = 200;

impl App {
    /// Voids an approved payment at the PG and cancels its order.
    pub async fn cancel_payment(
        &self,
        ctx: &RequestCtx,
        payment_id: &str,
        reason: Option<String>,
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
        if record.status != "APPROVED" {
            return Err(AppError::StateConflict(format!(
                "payment `{payment_id}` is {}: only an APPROVED payment can be voided (refunds of \
                 confirmed payments come with confirmation)",
                record.status
            )));
        }
        let pg_key = record
            .pg_payment_key
            .clone()
            .ok_or_else(|| AppError::Internal(format!("payment `{payment_id}` has no PG key")))?;
        let key = format!("{payment_id}-void");
        let started = Instant::now();
        let answer = gateway
            .cancel(
                &pg_key,
                &CancelRequest {
                    cancel_reason: reason.clone(),
                    cancel_amount: None,
                },
                &key,
            )
            .await;
        let latency = started.elapsed().as_millis() as i64;
        let now = self.now();
        let attempt = |outcome: &str, pg_code: Option<String>| PaymentAttemptRecord {
            attempt: 0,
            kind: "cancel".into(),
            idempotency_key: Some(key.clone()),
            outcome: outcome.into(),
            pg_code,
            latency_ms: latency,
            created_at: now,
        };
        let voided = match answer {
            Ok(pg) if pg.status == PgStatus::Canceled && pg.balance_amount == 0 => pg,
            Ok(pg) => {
                return Err(AppError::Internal(format!(
                    "the PG answered the void of `{payment_id}` with {:?} and {} left",
                    pg.status, pg.balance_amount
                )));
            }
            Err(err) => {
                let (outcome, code) = match &err {
                    GatewayError::Refused { code, .. } => ("refused", Some(code.clone())),
                    GatewayError::Transient { code, .. } => ("transient", Some(code.clone())),
                    GatewayError::Unknown(_) => ("unknown", None),
                    GatewayError::Unreachable(_) | GatewayError::CircuitOpen => {
                        ("unreachable", None)
                    }
                };
                let mut tx = self.store().begin(&ctx.tenant).await?;
                tx.record_payment_attempt(payment_id, &attempt(outcome, code))
                    .await?;
                tx.commit(None).await?;
                return Err(match err {
                    GatewayError::Refused { code, message } => AppError::StateConflict(format!(
                        "the payment gateway refused the void ({code}: {message})"
                    )),
                    GatewayError::Unknown(_) => AppError::PaymentPending {
                        payment_id: payment_id.to_owned(),
                    },
                    other => AppError::GatewayUnavailable(other.to_string()),
                });
            }
        };
        debug_assert_eq!(voided.payment_key, pg_key);

        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(reply),
        };
        tx.record_payment_attempt(payment_id, &attempt("cancelled", None))
            .await?;
        let locked = tx
            .payment_for_update(payment_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("payment `{payment_id}` vanished")))?;
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
        let mut journal = Recorder::new(ctx, new_id("tx"), now);
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
                "reason": &reason,
            }),
        );
        tx.record(journal.finish());

        // The order goes with its payment: its bill is withdrawn.
        let order = tx
            .order_for_update(&locked.order_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("order `{}` vanished", locked.order_id)))?;
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
        let mut attempts = self
            .store()
            .payment_attempts(&ctx.tenant, payment_id)
            .await?;
        let mut recorded = attempt("cancelled", None);
        recorded.attempt = attempts.last().map_or(1, |a| a.attempt + 1);
        attempts.push(recorded);
        let response = render(&PaymentDetails { payment, attempts });
        tx.commit(Some(response.clone())).await?;
        Ok(Reply {
            response,
            replayed: false,
        })
    }
}

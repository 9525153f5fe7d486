//! `POST /service-callbacks/completed`: the tenant's service fulfilled a
//! paid order. Its approved payment is confirmed (`APPROVED → CONFIRMED`,
//! `payment.confirmed`) and the order completed (`PAID → COMPLETED`, the
//! revenue earned, `order.completed`), in one transaction. Nothing is sent
//! to the PG: a Toss-style approval already took the money, and the
//! confirmation is FluxPay's record that it stands (from then on it can
//! only be refunded, never voided).
//!
//! Credits the order's saga reserved are deducted in the same transaction;
//! an order paid with credits alone has no payment to confirm.
//!
//! A repeat for a completed order answers with the order as it stands; a
//! callback for an order in any other state than `PAID`, or whose payment
//! is being voided (the void was stored before the PG was asked, so it may
//! have happened), is `PAY_004`.

use super::super::credits::Render;
use super::super::error::{AppError, Result};
use super::super::idempotency::{Claimed, claim};
use super::super::journal::{Recorder, event_type};
use super::super::orders::{OrderDetails, answer_order_step, record_order_step_as, restore_order};
use super::super::{App, Reply, RequestCtx, new_id};
use super::outcome::restore_payment;
use super::store_payment_change;
use crate::domain::OrderId;
use crate::domain::order::OrderStatus;
use crate::domain::saga::SagaEvent;
use crate::store::{OrderTx, PaymentTx, SagaTx, Transactions, TxOps};

impl App {
    /// Confirms a paid order's payment and completes the order.
    pub async fn complete_order(
        &self,
        ctx: &RequestCtx,
        order_id: &str,
        render: impl Render<OrderDetails>,
    ) -> Result<Reply> {
        let id = OrderId::new(order_id)?;
        let now = self.now();
        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(reply),
        };
        let order = tx
            .order_for_update(id.as_str())
            .await?
            .ok_or_else(|| AppError::NotFound(format!("order `{id}` not found")))?;
        if order.status == OrderStatus::Completed.as_str() {
            // The callback came again: the order stays as it is.
            let response = render(&OrderDetails::from_record(order)?);
            tx.commit(Some(response.clone())).await?;
            return Ok(Reply {
                response,
                replayed: false,
            });
        }
        if order.status != OrderStatus::Paid.as_str() {
            return Err(AppError::StateConflict(format!(
                "order `{id}` is {}: only a PAID order can be completed",
                order.status
            )));
        }
        // The money held for it: an approved payment, reserved credits, or
        // both (`saga_credits`).
        let payment = match tx.active_payment_of_order(id.as_str()).await? {
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
                Some(payment)
            }
            None => None,
            Some(other) => {
                return Err(AppError::Internal(format!(
                    "order `{id}` is PAID but its active payment is {}",
                    other.status
                )));
            }
        };
        // The order's saga: fulfilled, captured (its credits deducted),
        // completed — refused (`PAY_004`, nothing written) once
        // compensation began. Its rows join the payment's confirmation, or
        // the order's completion when credits alone paid it.
        let transaction_id = new_id("tx");
        let saga = tx.saga_for_update(id.as_str()).await?;
        if payment.is_none() && saga.as_ref().is_none_or(|s| s.payment_id.is_some()) {
            return Err(AppError::Internal(format!(
                "order `{id}` is PAID without an approved payment or reserved credits"
            )));
        }
        if let Some(saga) = saga {
            super::super::saga::advance(
                &mut tx,
                ctx,
                &saga,
                (
                    &[SagaEvent::ServiceCompleted, SagaEvent::Captured],
                    Some(&transaction_id),
                ),
                "the tenant's service completed the order",
                |s| s.next_run_at = None,
                now,
            )
            .await?;
        }
        if let Some(payment) = &payment {
            let change = restore_payment(payment)?.confirm("the order was fulfilled")?;
            store_payment_change(
                &mut tx,
                payment,
                &change,
                None,
                (None, payment.checks, None),
                now,
            )
            .await?;
            let mut journal = Recorder::new(ctx, &transaction_id, now);
            journal.transition(&change.transition);
            journal.event(
                event_type::PAYMENT_CONFIRMED,
                &payment.customer_id,
                &serde_json::json!({
                    "paymentId": &payment.payment_id,
                    "orderId": &payment.order_id,
                    "customerId": &payment.customer_id,
                    "status": change.payment.status().as_str(),
                    "amount": payment.amount,
                    "currency": &payment.currency,
                    "pgPaymentKey": &payment.pg_payment_key,
                }),
            );
            tx.record(journal.finish());
        }

        let paid_by = match &payment {
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
            "paymentId": payment.as_ref().map(|p| &p.payment_id),
        });
        let to = order_change.order.status().as_str();
        // Its own business transaction, unless the saga's rows need one.
        let step_id = match &payment {
            Some(_) => new_id("tx"),
            None => transaction_id,
        };
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
}

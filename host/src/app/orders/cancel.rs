//! `POST /orders/{id}/cancel`: `PENDING | PAID → CANCELLED` by the domain's
//! state table, with the reversing ledger posting, history row and event
//! in one transaction. Any other status is `PAY_004`, nothing written.
//! An order paid with credits alone has its saga compensated with it (the
//! credits released).

use super::super::credits::{MAX_REASON_LEN, Render, check_text};
use super::super::error::{AppError, Result};
use super::super::idempotency::{Claimed, claim};
use super::super::journal::event_type;
use super::super::{App, Reply, RequestCtx};
use super::{
    OrderDetails, answer_order_step, cancelled_event, order_not_found, record_order_step,
    restore_order,
};
use crate::domain::OrderId;
use crate::domain::saga::SagaEvent;
use crate::store::{OrderTx, PaymentTx, SagaTx, Transactions};

impl App {
    /// Cancels an order that is not yet completed.
    pub async fn cancel_order(
        &self,
        ctx: &RequestCtx,
        order_id: &str,
        reason: Option<String>,
        render: impl Render<OrderDetails>,
    ) -> Result<Reply> {
        let id = OrderId::new(order_id)?;
        let reason = reason.unwrap_or_else(|| "cancelled through the API".into());
        check_text("reason", &reason, MAX_REASON_LEN)?;
        let now = self.now();
        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(reply),
        };
        let record = tx
            .order_for_update(id.as_str())
            .await?
            .ok_or_else(|| order_not_found(id.as_str()))?;
        // A payment in flight or holding the order's money must be voided
        // (or resolved) first: cancelling under it would leave money taken
        // for a cancelled order, or an approval with nowhere to land.
        if let Some(payment) = tx.active_payment_of_order(id.as_str()).await? {
            return Err(AppError::StateConflict(format!(
                "order `{id}` has payment `{}` in status {}: cancel or resolve the payment first",
                payment.payment_id, payment.status
            )));
        }
        // Paid with credits alone, its saga waits for the tenant's service:
        // cancelling the order compensates the saga, which releases the
        // credits, in this transaction.
        if let Some(saga) = tx.saga_for_update(id.as_str()).await? {
            match saga.state.as_str() {
                "WAITING_FOR_SERVICE" if record.status == "PAID" => {
                    crate::app::saga::advance(
                        &mut tx,
                        ctx,
                        &saga,
                        (&[SagaEvent::ServiceFailed, SagaEvent::Compensated], None),
                        &format!("order cancelled: {reason}"),
                        |s| s.next_run_at = None,
                        now,
                    )
                    .await?;
                }
                "COMPENSATED" | "COMPLETED" => {}
                state => {
                    return Err(AppError::StateConflict(format!(
                        "order `{id}`'s saga is {state}: it must finish first"
                    )));
                }
            }
        }
        let change = restore_order(&record)?.cancel(reason)?;
        let to = change.order.status().as_str();
        let data = cancelled_event(&record, &change);
        let version = record_order_step(
            &mut tx,
            ctx,
            &record,
            change,
            event_type::ORDER_CANCELLED,
            data,
            now,
        )
        .await?;
        answer_order_step(tx, record, (to, version, now), render).await
    }
}

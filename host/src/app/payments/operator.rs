//! What an operator does with a flagged payment — one the recovery
//! scheduler gave up on, or whose capture stayed unknown too long (see
//! [`super::complete`]): list them, and resolve each one —
//! - `adopt`: ask the PG now and adopt its answer (`READY`/`UNKNOWN`; or
//!   an `APPROVED` payment the PG reports cancelled — a void that keeps
//!   failing because the money was already given back);
//! - `fail`: mark it `FAILED` on the operator's word, e.g. after checking
//!   the PG's console (`READY`/`UNKNOWN` and flagged, never one still on
//!   its schedule; the operator's reason is kept as the failure and in the
//!   history);
//! - `retry`: put it back on the check schedule from its start (or, for an
//!   approved payment whose void kept failing, try the void again; for one
//!   being captured, have the orchestrator ask the PG at its next run).
//!
//! A payment being captured belongs to its order's saga, which settles it
//! from the PG's answer alone: `adopt` and `fail` are refused for it.

use super::super::error::{AppError, Result};
use super::super::journal::Recorder;
use super::super::{App, RequestCtx, new_id};
use super::outcome::restore_payment;
use super::settle::record_change;
use super::{PaymentDetails, store_payment_change};
use crate::domain::saga::SagaState;
use crate::gateway::PaymentGateway as _;
use crate::store::{PaymentQueries, PaymentRecord, PaymentTx, SagaTx, Transactions, TxOps};

/// Most flagged payments listed per tenant.
const LIST_LIMIT: i64 = 500;

/// What an operator does with a flagged payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    /// Ask the PG now and adopt its answer.
    Adopt,
    /// Mark it failed.
    Fail,
    /// Back on the schedule from its start.
    Retry,
}

/// What a flagged payment is stuck on: `approval` (the PG never said
/// whether it approved), `void` (a void that keeps failing), `capture` (a
/// capture whose outcome stays unknown) or `refund` (a refund the PG's
/// balance does not show).
pub fn stuck_on(payment: &PaymentRecord) -> &'static str {
    match payment.status.as_str() {
        "READY" | "UNKNOWN" => "approval",
        "APPROVED" if payment.capture_requested_at.is_some() => "capture",
        "APPROVED" => "void",
        _ => "refund",
    }
}

impl App {
    /// Every gateway tenant's flagged payments, oldest flag first.
    pub async fn flagged_payments(&self) -> Result<Vec<(String, PaymentRecord)>> {
        let tenants: Vec<String> = self.inner.gateways.load().keys().cloned().collect();
        let mut all = Vec::new();
        for tenant in tenants {
            for payment in self.store().flagged_payments(&tenant, LIST_LIMIT).await? {
                all.push((tenant.clone(), payment));
            }
        }
        Ok(all)
    }

    /// Resolves one payment as an operator says; the payment as it is now.
    pub async fn resolve_payment(
        &self,
        tenant: &str,
        payment_id: &str,
        action: OperatorAction,
        reason: &str,
        actor: &str,
    ) -> Result<PaymentDetails> {
        let record = self
            .store()
            .payment(tenant, payment_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no payment `{payment_id}`")))?;
        let ctx = RequestCtx::system(tenant, actor);
        let unresolved = record.status == "READY" || record.status == "UNKNOWN";
        let stuck_void = record.status == "APPROVED" && record.void_requested_at.is_some();
        let capturing = record.status == "APPROVED" && record.capture_requested_at.is_some();
        match action {
            OperatorAction::Retry if capturing => {
                let now = self.now();
                let mut tx = self.store().begin(tenant).await?;
                let saga = tx.saga_for_update(&record.order_id).await?;
                match saga {
                    Some(mut saga) if saga.state == SagaState::Completing.as_str() => {
                        let version = saga.version;
                        saga.next_run_at = Some(now);
                        saga.updated_at = now;
                        tx.update_saga(&saga, version).await?;
                        tx.commit(None).await?;
                    }
                    // Settled meanwhile.
                    _ => tx.rollback().await?,
                }
            }
            OperatorAction::Adopt | OperatorAction::Fail if capturing => {
                return Err(AppError::StateConflict(format!(
                    "payment `{payment_id}` is being captured by its order's saga, which \
                     settles it from the PG's answer: `retry` has it ask the PG now"
                )));
            }
            // A void that keeps failing because the PG no longer holds the
            // money (cancelled in its console, or by an earlier request):
            // the PG's state is adopted, never sent again.
            OperatorAction::Adopt if stuck_void || record.status == "APPROVED" => {
                let gateway = self.gateway(tenant)?;
                let pg_key = record.pg_payment_key.clone().ok_or_else(|| {
                    AppError::Internal(format!("payment `{payment_id}` has no PG key"))
                })?;
                let started = std::time::Instant::now();
                let pg = gateway
                    .payment(&pg_key)
                    .await
                    .map_err(|err| AppError::GatewayUnavailable(err.to_string()))?;
                if pg.status != crate::gateway::PgStatus::Canceled || pg.balance_amount != 0 {
                    return Err(AppError::StateConflict(format!(
                        "the PG reports payment `{payment_id}` {:?} with {} still held: retry \
                         the void instead",
                        pg.status, pg.balance_amount
                    )));
                }
                let attempt =
                    super::cancel::query_attempt(started.elapsed().as_millis() as i64, self.now());
                let why = if reason.trim().is_empty() {
                    "the PG reports it cancelled; adopted by an operator".to_owned()
                } else {
                    format!("adopted by an operator: {reason}")
                };
                self.record_void(&ctx, record, why, attempt, crate::app::unanswered)
                    .await?;
            }
            OperatorAction::Adopt if unresolved => {
                let gateway = self.gateway(tenant)?;
                self.resolve(&ctx, &*gateway, (record, false), crate::app::unanswered)
                    .await?;
            }
            // Only once the scheduler gave up: a payment still on its
            // schedule may have an approval in flight.
            OperatorAction::Fail if unresolved && record.flagged_at.is_some() => {
                let now = self.now();
                let mut tx = self.store().begin(tenant).await?;
                let locked = tx.payment_for_update(payment_id).await?.ok_or_else(|| {
                    AppError::Internal(format!("payment `{payment_id}` vanished"))
                })?;
                let change = restore_payment(&locked)?.decline(format!("operator: {reason}"))?;
                let failure = ("MARKED_FAILED_BY_OPERATOR".to_owned(), reason.to_owned());
                store_payment_change(
                    &mut tx,
                    &locked,
                    &change,
                    Some(failure.clone()),
                    (None, locked.checks, None),
                    now,
                )
                .await?;
                let transaction_id = new_id("tx");
                let mut journal = Recorder::new(&ctx, &transaction_id, now);
                record_change(&mut journal, &locked.customer_id, &change, Some(&failure));
                tx.record(journal.finish());
                // Nothing was taken: the order's saga has nothing to undo,
                // and the order is open for another attempt.
                super::super::saga::payment_settled(
                    &mut tx,
                    &ctx,
                    &locked.order_id,
                    Err(format!(
                        "payment {payment_id} marked failed by an operator: {reason}"
                    )),
                    &transaction_id,
                    now,
                )
                .await?;
                tx.commit(None).await?;
            }
            OperatorAction::Retry if unresolved || stuck_void => {
                let mut tx = self.store().begin(tenant).await?;
                let checks = if unresolved { 0 } else { record.checks };
                tx.reschedule_payment(payment_id, Some(self.now()), checks, None)
                    .await?;
                tx.commit(None).await?;
            }
            _ => {
                return Err(AppError::StateConflict(format!(
                    "payment `{payment_id}` is {}: nothing to {action:?}",
                    record.status
                )));
            }
        }
        self.payment(tenant, payment_id).await
    }
}

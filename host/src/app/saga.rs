//! The order saga's orchestration ([`crate::domain::saga`]): one saga per
//! order paid through `POST /payments/confirm`, moved in the same
//! transaction as each step's effect, with its history rows and events.
//!
//! - **confirm** (intent): the saga starts `RUNNING` (or starts again
//!   after a declined attempt left the order open), holding the credits
//!   the confirm names first ([`super::saga_credits`]); paid with credits
//!   alone, it goes on to `WAITING_FOR_SERVICE` in the same transaction;
//! - **approval** (outcome): `WAITING_FOR_SERVICE`, with the tenant's
//!   service deadline; a decline (or a PG that certainly took nothing)
//!   has nothing to undo: `COMPENSATED`, the order still open for another
//!   card;
//! - **`completed` callback**: `COMPLETING` with the payment's capture
//!   request, then the capture at the PG, then `COMPLETED` with the
//!   payment's confirmation and the order's completion; a capture the PG
//!   refuses compensates; one whose answer was lost is resumed by the
//!   orchestrator, which asks the PG first ([`super::payments`]'s
//!   `complete`); paid with credits alone, `COMPLETED` at once;
//! - **`failed` callback, or no callback by the deadline**:
//!   `COMPENSATING`, stored first (so a host that stops here leaves it to
//!   the next run), then the compensations in reverse — the payment voided
//!   and the order cancelled in one transaction, which also makes the saga
//!   `COMPENSATED` (`saga.compensated`);
//! - **a compensation that fails** (the PG down or refusing) is retried
//!   with backoff by the orchestrator ([`App::run_sagas`], every 2 s in
//!   `serve`), and parked `COMPENSATION_FAILED` for an operator after
//!   [`MAX_COMPENSATION_ATTEMPTS`] (`saga.compensation_failed`).
//!
//! Whichever transaction ends the saga also settles its credits: deducted
//! with `COMPLETED`, released with `COMPENSATED` ([`advance`]).
//!
//! Several hosts: the orchestrator claims due sagas with a lease (as the
//! payment janitor does), and every step is guarded by the saga's version
//! and the domain's state table, so a step applied twice changes nothing.

use super::error::{AppError, Result};
use super::journal::{Recorder, event_type};
use super::orders::{OrderDetails, cancelled_event, record_order_step, restore_order};
use super::saga_credits::CreditsApplied;
use super::{App, RequestCtx, new_id};
use crate::domain::order::OrderStatus;
use crate::domain::saga::{SagaEvent, SagaState, SagaStep};
use crate::store::{
    OrderTx, PaymentQueries, SagaQueries, SagaRecord, SagaTx, Transactions, Tx, TxOps,
};

/// Compensation runs that may fail before the saga is parked.
pub const MAX_COMPENSATION_ATTEMPTS: i64 = 5;
/// How long the orchestrator's claim on a due saga lasts.
const CLAIM_LEASE_MS: i64 = 60_000;
/// How long a host that starts a compensation keeps it: if it stops
/// meanwhile, the orchestrator (of any host) takes over after this.
pub(super) const COMPENSATION_LEASE_MS: i64 = 10_000;
/// Sagas one orchestrator run takes per tenant.
const BATCH: i64 = 200;

/// What one orchestrator run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SagaRun {
    /// Sagas looked at.
    pub claimed: u64,
    /// Whose service missed its deadline (compensation started).
    pub timed_out: u64,
    /// Whose resumed capture completed the order.
    pub completed: u64,
    /// Compensated in this run.
    pub compensated: u64,
    /// Compensations that failed (retried later, or parked).
    pub failed: u64,
    /// Parked for an operator in this run.
    pub parked: u64,
}

/// The forward steps of a stored list.
fn steps_of(record: &SagaRecord) -> Vec<SagaStep> {
    record
        .steps_done
        .split(',')
        .filter_map(|step| match step {
            "reserve_credits" => Some(SagaStep::ReserveCredits),
            "approve_payment" => Some(SagaStep::ApprovePayment),
            "pay_order" => Some(SagaStep::PayOrder),
            _ => None,
        })
        .collect()
}

fn step_name(step: SagaStep) -> &'static str {
    match step {
        SagaStep::ReserveCredits => "reserve_credits",
        SagaStep::ApprovePayment => "approve_payment",
        SagaStep::PayOrder => "pay_order",
    }
}

/// Applies `events` to the locked saga `record` in `tx`, with `edit`
/// making the rest of the row; the saga as stored. Each event's history
/// row joins the business transaction `caused_by` (the payment's or
/// order's step that moved the saga, whose event tells the tenant), or a
/// transaction of its own with its event: `saga.completing`,
/// `saga.compensating`,
/// `saga.compensated`, `saga.compensation_failed`.
pub(super) async fn advance(
    tx: &mut Tx,
    ctx: &RequestCtx,
    record: &SagaRecord,
    (events, caused_by): (&[SagaEvent], Option<&str>),
    reason: &str,
    edit: impl FnOnce(&mut SagaRecord),
    now: i64,
) -> Result<SagaRecord> {
    let mut state: SagaState = record.state.parse()?;
    let mut journal = Recorder::new(
        ctx,
        caused_by.map_or_else(|| new_id("op"), str::to_owned),
        now,
    );
    for event in events {
        let transition = state.transition(&record.order_id, *event, reason)?;
        journal.transition(&transition);
        state = state.on(*event)?;
    }
    // The credits the order holds go with the saga's outcome, in this
    // transaction (`saga_credits`).
    if steps_of(record).contains(&SagaStep::ReserveCredits) {
        match state {
            SagaState::Compensated => {
                super::saga_credits::release(tx, ctx, &record.order_id, reason, now).await?;
            }
            SagaState::Completed => {
                super::saga_credits::capture(tx, ctx, &record.order_id, now).await?;
            }
            _ => {}
        }
    }
    let mut after = record.clone();
    after.state = state.as_str().to_owned();
    after.version = record.version + events.len() as i64;
    after.updated_at = now;
    edit(&mut after);
    // A step joined to its cause is told by the cause's event (a business
    // transaction has one event, and exactly one with a ledger posting).
    let event = match (state, caused_by) {
        (_, Some(_)) => None,
        (SagaState::Compensated, None) => Some(event_type::SAGA_COMPENSATED),
        (SagaState::CompensationFailed, None) => Some(event_type::SAGA_COMPENSATION_FAILED),
        (SagaState::Compensating, None) => Some(event_type::SAGA_COMPENSATING),
        (SagaState::Completing, None) => Some(event_type::SAGA_COMPLETING),
        (_, None) => {
            return Err(AppError::Internal(format!(
                "saga step to {state} without the business transaction that caused it"
            )));
        }
    };
    if let Some(event) = event {
        let mut data = serde_json::json!({
            "orderId": &record.order_id,
            "customerId": &record.customer_id,
            "state": state.as_str(),
            "paymentId": &after.payment_id,
            "reason": reason,
            "attempts": after.attempts,
            "lastError": &after.last_error,
        });
        // What compensating undoes; a completing saga undoes nothing.
        if state != SagaState::Completing {
            data["compensated"] = SagaStep::compensations(&steps_of(record))
                .into_iter()
                .map(step_name)
                .collect::<Vec<_>>()
                .into();
        }
        journal.event(event, &record.customer_id, &data);
    }
    if !tx.update_saga(&after, record.version).await? {
        return Err(AppError::StateConflict(format!(
            "the saga of order `{}` changed meanwhile",
            record.order_id
        )));
    }
    tx.record(journal.finish());
    Ok(after)
}

/// The saga of `order_id` starts (or, after a declined attempt left the
/// order open, starts again) for `payment_id` (none: paid with credits
/// only), in the intent's `tx`, holding `credits` first when the order is
/// paid with them (`INSUFFICIENT_BALANCE` when too few are available).
pub(super) async fn start(
    tx: &mut Tx,
    ctx: &RequestCtx,
    (order_id, customer_id, payment_id): (&str, &str, Option<&str>),
    credits: Option<CreditsApplied>,
    caused_by: &str,
    now: i64,
) -> Result<()> {
    // The saga row before the credit account, as every other step locks
    // them (order → payment → saga → account).
    let existing = tx.saga_for_update(order_id).await?;
    let steps_done = match credits {
        Some(applied) => {
            super::saga_credits::reserve(tx, ctx, (order_id, customer_id), applied, now).await?;
            step_name(SagaStep::ReserveCredits).to_owned()
        }
        None => String::new(),
    };
    match existing {
        None => {
            let record = SagaRecord {
                order_id: order_id.to_owned(),
                customer_id: customer_id.to_owned(),
                state: SagaState::Running.as_str().to_owned(),
                payment_id: payment_id.map(str::to_owned),
                steps_done,
                service_deadline_at: None,
                next_run_at: None,
                attempts: 0,
                last_error: None,
                version: 1,
                created_at: now,
                updated_at: now,
            };
            tx.insert_saga(&record).await?;
            let mut journal = Recorder::new(ctx, caused_by, now);
            journal.history(
                crate::domain::EntityKind::Saga.as_str(),
                order_id,
                None,
                SagaState::Running.as_str().to_owned(),
                "create",
                "payment confirm requested",
            );
            tx.record(journal.finish());
        }
        Some(saga) => {
            let payment = payment_id.map(str::to_owned);
            advance(
                tx,
                ctx,
                &saga,
                (&[SagaEvent::Started], Some(caused_by)),
                "another payment attempt",
                |s| {
                    s.payment_id = payment;
                    s.steps_done = steps_done;
                    s.last_error = None;
                    s.attempts = 0;
                },
                now,
            )
            .await?;
        }
    }
    Ok(())
}

/// The payment of `order_id`'s saga was approved (`WAITING_FOR_SERVICE`,
/// with the service deadline) or certainly not taken (`COMPENSATED`:
/// nothing to undo, the order stays open), in the outcome's `tx`. Orders
/// without a saga (renewals) are left alone.
pub(super) async fn payment_settled(
    tx: &mut Tx,
    ctx: &RequestCtx,
    order_id: &str,
    approved: Result<i64, String>,
    caused_by: &str,
    now: i64,
) -> Result<()> {
    let Some(saga) = tx.saga_for_update(order_id).await? else {
        return Ok(());
    };
    if saga.state != SagaState::Running.as_str() {
        return Ok(());
    }
    match approved {
        Ok(deadline) => {
            advance(
                tx,
                ctx,
                &saga,
                (&[SagaEvent::Approved], Some(caused_by)),
                "payment approved; waiting for the tenant's service",
                |s| {
                    let mut steps = steps_of(s);
                    if s.payment_id.is_some() {
                        steps.push(SagaStep::ApprovePayment);
                    }
                    steps.push(SagaStep::PayOrder);
                    s.steps_done = steps
                        .into_iter()
                        .map(step_name)
                        .collect::<Vec<_>>()
                        .join(",");
                    s.service_deadline_at = Some(deadline);
                    s.next_run_at = Some(deadline);
                },
                now,
            )
            .await?;
        }
        Err(why) => {
            advance(
                tx,
                ctx,
                &saga,
                (
                    &[SagaEvent::Declined, SagaEvent::Compensated],
                    Some(caused_by),
                ),
                &why,
                |s| {
                    s.last_error = Some(why.clone());
                    s.next_run_at = None;
                },
                now,
            )
            .await?;
        }
    }
    Ok(())
}

impl App {
    /// An order's saga, if it has one.
    pub async fn saga(&self, tenant: &str, order_id: &str) -> Result<Option<SagaRecord>> {
        Ok(self.store().saga(tenant, order_id).await?)
    }

    /// The tenant's sagas in `state` (all: `None`), most recently changed
    /// first.
    pub async fn sagas(
        &self,
        tenant: &str,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SagaRecord>> {
        if let Some(state) = state {
            state.parse::<SagaState>()?;
        }
        Ok(self.store().sagas(tenant, state, limit).await?)
    }

    /// The tenant's service failed to fulfil `order_id`: the saga
    /// compensates (module docs). A repeat, or a callback for a saga
    /// already compensating, answers with the order as it stands.
    pub async fn fail_order(
        &self,
        ctx: &RequestCtx,
        order_id: &str,
        reason: Option<String>,
    ) -> Result<(OrderDetails, Option<SagaRecord>)> {
        let reason = reason.unwrap_or_else(|| "the tenant's service failed".into());
        if reason.trim().is_empty() || reason.len() > 200 {
            return Err(AppError::Invalid("reason must be 1-200 bytes".into()));
        }
        let now = self.now();
        let mut tx = self.store().begin(&ctx.tenant).await?;
        let saga = tx
            .saga_for_update(order_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("order `{order_id}` has no saga")))?;
        let saga = match saga.state.as_str() {
            "COMPENSATING" | "COMPENSATED" | "COMPENSATION_FAILED" => {
                tx.commit(None).await?;
                saga
            }
            _ => {
                let reason = format!("service failed: {reason}");
                let saga = advance(
                    &mut tx,
                    ctx,
                    &saga,
                    (&[SagaEvent::ServiceFailed], None),
                    &reason,
                    |s| s.next_run_at = Some(now + COMPENSATION_LEASE_MS),
                    now,
                )
                .await?;
                tx.commit(None).await?;
                crate::crash_points::reached("saga.compensating", order_id);
                self.compensate(ctx, saga, &reason).await?
            }
        };
        let order = self.order(&ctx.tenant, order_id).await?;
        Ok((order, Some(saga)))
    }

    /// An operator sends a parked saga (`COMPENSATION_FAILED`) back to
    /// compensating: the orchestrator's next run tries again, with a fresh
    /// count of attempts.
    pub async fn retry_saga(&self, tenant: &str, order_id: &str) -> Result<SagaRecord> {
        let ctx = RequestCtx::system(tenant, "admin");
        let now = self.now();
        let mut tx = self.store().begin(tenant).await?;
        let saga = tx
            .saga_for_update(order_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("order `{order_id}` has no saga")))?;
        let after = advance(
            &mut tx,
            &ctx,
            &saga,
            (&[SagaEvent::Retry], None),
            "an operator retries the compensation",
            |s| {
                s.attempts = 0;
                s.next_run_at = Some(now);
            },
            now,
        )
        .await?;
        tx.commit(None).await?;
        Ok(after)
    }

    /// Runs a `COMPENSATING` saga's compensations; the saga after. A
    /// failure is recorded (retried with backoff, parked past the limit),
    /// not returned.
    pub(super) async fn compensate(
        &self,
        ctx: &RequestCtx,
        saga: SagaRecord,
        reason: &str,
    ) -> Result<SagaRecord> {
        let outcome = match &saga.payment_id {
            Some(payment_id) => self.compensate_payment(ctx, payment_id, reason).await,
            None => Ok(()),
        };
        let now = self.now();
        let mut tx = self.store().begin(&ctx.tenant).await?;
        // Order first, then saga: the order every step of an order locks
        // them in.
        let order = tx
            .order_for_update(&saga.order_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("order `{}` vanished", saga.order_id)))?;
        let current = tx
            .saga_for_update(&saga.order_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("saga `{}` vanished", saga.order_id)))?;
        if current.state != SagaState::Compensating.as_str() {
            // The void's transaction compensated it (or someone else did).
            tx.commit(None).await?;
            return Ok(current);
        }
        let after = match outcome {
            Ok(()) => {
                // Still PAID with no money left to give back: paid with
                // credits alone, whose release (in `advance`) comes with
                // the order's cancellation.
                if order.status == OrderStatus::Paid.as_str() {
                    let change = restore_order(&order)?.cancel(reason.to_owned())?;
                    let data = cancelled_event(&order, &change);
                    record_order_step(
                        &mut tx,
                        ctx,
                        &order,
                        change,
                        event_type::ORDER_CANCELLED,
                        data,
                        now,
                    )
                    .await?;
                }
                advance(
                    &mut tx,
                    ctx,
                    &current,
                    (&[SagaEvent::Compensated], None),
                    reason,
                    |s| s.next_run_at = None,
                    now,
                )
                .await?
            }
            Err(err) => {
                let attempts = current.attempts + 1;
                let error = err.to_string();
                if attempts >= MAX_COMPENSATION_ATTEMPTS {
                    tracing::warn!(tenant = %ctx.tenant, order_id = %current.order_id, %error, "saga.parked");
                    advance(
                        &mut tx,
                        ctx,
                        &current,
                        (&[SagaEvent::Parked], None),
                        &format!("compensation failed {attempts} times: {error}"),
                        |s| {
                            s.attempts = attempts;
                            s.last_error = Some(error.clone());
                            s.next_run_at = None;
                        },
                        now,
                    )
                    .await?
                } else {
                    // Not a state change: the saga stays COMPENSATING.
                    let mut retry = current.clone();
                    retry.attempts = attempts;
                    retry.last_error = Some(error);
                    retry.next_run_at = Some(now + 5_000 * (1 << attempts.min(6)));
                    if !tx.update_saga(&retry, current.version).await? {
                        return Err(AppError::StateConflict("the saga changed meanwhile".into()));
                    }
                    retry
                }
            }
        };
        tx.commit(None).await?;
        Ok(after)
    }

    /// The payment's compensation: voided if approved (which cancels the
    /// order and completes the saga's compensation in one transaction);
    /// nothing when it is already given back or never took money.
    async fn compensate_payment(
        &self,
        ctx: &RequestCtx,
        payment_id: &str,
        reason: &str,
    ) -> Result<()> {
        let payment = self
            .store()
            .payment(&ctx.tenant, payment_id)
            .await?
            .ok_or_else(|| AppError::Internal(format!("payment `{payment_id}` vanished")))?;
        match payment.status.as_str() {
            "APPROVED" => {
                self.void_payment(ctx, payment, reason.to_owned(), crate::app::unanswered)
                    .await?;
                Ok(())
            }
            "READY" | "UNKNOWN" => Err(AppError::PaymentPending {
                payment_id: payment_id.to_owned(),
            }),
            // Nothing was taken, or it was given back.
            "FAILED" | "CANCELLED" | "REFUNDED" => Ok(()),
            // Confirmed: only a completed order's payment is; a saga that
            // compensates never confirmed it.
            status => Err(AppError::StateConflict(format!(
                "payment `{payment_id}` is {status}: a compensation cannot void it"
            ))),
        }
    }

    /// Claims and moves on every saga due at `now`: services past their
    /// deadline are compensated, captures whose answer is unknown resolved
    /// (by asking the PG), failed compensations retried.
    pub async fn run_sagas(&self, now: i64) -> SagaRun {
        let mut run = SagaRun::default();
        let tenants: Vec<String> = self.tenants().iter().map(|t| t.id.clone()).collect();
        for tenant in tenants {
            let claimed = async {
                let mut tx = self.store().begin(&tenant).await?;
                let due = tx.claim_due_sagas(now, now + CLAIM_LEASE_MS, BATCH).await?;
                tx.commit(None).await?;
                Ok::<_, AppError>(due)
            };
            let due = match claimed.await {
                Ok(due) => due,
                Err(err) => {
                    tracing::warn!(%tenant, error = %err, "sagas.claim_failed");
                    run.failed += 1;
                    continue;
                }
            };
            for saga in due {
                run.claimed += 1;
                let ctx = RequestCtx::system(&tenant, "system:saga-orchestrator");
                match self.move_saga(&ctx, saga, now, &mut run).await {
                    Ok(after) => match after.state.as_str() {
                        "COMPLETED" => run.completed += 1,
                        "COMPENSATED" => run.compensated += 1,
                        "COMPENSATION_FAILED" => run.parked += 1,
                        "COMPENSATING" => run.failed += 1,
                        _ => {}
                    },
                    Err(err) => {
                        tracing::warn!(%tenant, error = %err, "sagas.run_failed");
                        run.failed += 1;
                    }
                }
            }
        }
        run
    }

    async fn move_saga(
        &self,
        ctx: &RequestCtx,
        saga: SagaRecord,
        now: i64,
        run: &mut SagaRun,
    ) -> Result<SagaRecord> {
        match saga.state.as_str() {
            "WAITING_FOR_SERVICE" if saga.service_deadline_at.is_some_and(|d| d <= now) => {
                run.timed_out += 1;
                let reason = "the tenant's service did not answer by its deadline".to_owned();
                let mut tx = self.store().begin(&ctx.tenant).await?;
                let current = tx
                    .saga_for_update(&saga.order_id)
                    .await?
                    .ok_or_else(|| AppError::Internal("saga vanished".into()))?;
                if current.state != SagaState::WaitingForService.as_str() {
                    // Called back meanwhile.
                    tx.commit(None).await?;
                    return Ok(current);
                }
                let after = advance(
                    &mut tx,
                    ctx,
                    &current,
                    (&[SagaEvent::ServiceFailed], None),
                    &reason,
                    |s| s.next_run_at = Some(now + COMPENSATION_LEASE_MS),
                    now,
                )
                .await?;
                tx.commit(None).await?;
                self.compensate(ctx, after, &reason).await
            }
            "COMPLETING" => self.resume_capture(ctx, &saga).await,
            "COMPENSATING" => {
                let reason = saga
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "compensation resumed".into());
                self.compensate(ctx, saga, &reason).await
            }
            // Moved on meanwhile: nothing is due; the claim's lease goes.
            _ => {
                let mut tx = self.store().begin(&ctx.tenant).await?;
                let mut cleared = saga.clone();
                cleared.next_run_at = None;
                tx.update_saga(&cleared, saga.version).await?;
                tx.commit(None).await?;
                Ok(cleared)
            }
        }
    }
}

//! The recovery scheduler ("janitor"). Every payment with a due check is
//! claimed and moved on:
//! - `READY` (the host stopped during the PG call) or `UNKNOWN` (the PG's
//!   answer was lost): resolved by asking the PG, on
//!   [`super::CHECK_SCHEDULE_MS`], adopting its answer; when the schedule
//!   is used up the payment is flagged for an operator. A checkout the PG
//!   says was never confirmed (the confirm never reached it) is confirmed
//!   again with the payment's one approval key, which the PG answers once.
//! - `APPROVED` past the tenant's `void_unconfirmed_after_s` (its order was
//!   never fulfilled), or with a void requested whose call failed: voided
//!   at the PG, and its order cancelled.
//! - `CONFIRMED` / `PARTIALLY_REFUNDED` with a refund whose answer was
//!   lost: the PG's balance says whether it was made; if so it is recorded.
//!
//! Several hosts may run it: a claim moves the payment's next check a lease
//! ahead ([`super::CLAIM_LEASE_MS`]) in one statement (skipping rows
//! another host's claim holds, on PostgreSQL), so one host works on a
//! payment at a time, and one that dies leaves it to another when the
//! lease ends. Outcomes are applied from the state and version they were
//! read at, so a late second worker changes nothing.

use super::super::error::{AppError, Result};
use super::super::{App, RequestCtx};
use crate::store::{PaymentQueries, PaymentRecord, PaymentTx, Transactions, TxOps};

/// How many due payments one run takes per tenant.
const BATCH: i64 = 100;

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JanitorRun {
    /// Payments asked about.
    pub checked: u64,
    /// Resolved (approved or failed) by the PG's answer, or voided.
    pub resolved: u64,
    /// Still unknown (asked again later, or flagged).
    pub unresolved: u64,
    /// Runs that failed (logged).
    pub failed: u64,
}

impl App {
    /// Claims and moves on every payment whose check is due at `now`.
    pub async fn run_payment_janitor(&self, now: i64) -> JanitorRun {
        let mut run = JanitorRun::default();
        let tenants: Vec<String> = self.inner.gateways.load().keys().cloned().collect();
        for tenant in tenants {
            let due = match self.claim_due(&tenant, now).await {
                Ok(due) => due,
                Err(err) => {
                    tracing::warn!(%tenant, error = %err, "payments.janitor_read_failed");
                    run.failed += 1;
                    continue;
                }
            };
            let Ok(gateway) = self.gateway(&tenant) else {
                continue;
            };
            for payment in due {
                run.checked += 1;
                let ctx = RequestCtx::system(&tenant, "system:payment-janitor");
                let payment_id = payment.payment_id.clone();
                // No client waits for this answer.
                let moved = match payment.status.as_str() {
                    "READY" | "UNKNOWN" => self
                        .resolve(&ctx, &*gateway, (payment, true), crate::app::unanswered)
                        .await
                        .map(drop),
                    "APPROVED" => {
                        let reason = match payment.void_requested_at {
                            Some(_) => "void requested".to_owned(),
                            None => format!(
                                "not fulfilled within {} s of its approval",
                                self.payment_settings(&tenant).void_unconfirmed_after_ms / 1000
                            ),
                        };
                        let voided = self
                            .void(&ctx, &*gateway, payment, reason, crate::app::unanswered)
                            .await;
                        if voided.is_err() {
                            self.flag_if_voids_keep_failing(&tenant, &payment_id, now)
                                .await;
                        }
                        voided.map(drop)
                    }
                    // A refund whose answer was lost.
                    "CONFIRMED" | "PARTIALLY_REFUNDED" => {
                        match self.reconcile_refund(&ctx, &*gateway, payment).await {
                            Ok(true) => Ok(()),
                            Ok(false) => Err(AppError::PaymentPending {
                                payment_id: payment_id.clone(),
                            }),
                            Err(err) => Err(err),
                        }
                    }
                    status => Err(AppError::Internal(format!(
                        "payment `{payment_id}` is {status} with a check due"
                    ))),
                };
                match moved {
                    Ok(_) => run.resolved += 1,
                    Err(AppError::PaymentPending { .. }) => run.unresolved += 1,
                    Err(err) => {
                        tracing::warn!(%tenant, %payment_id, error = %err, "payments.janitor_failed");
                        run.failed += 1;
                    }
                }
            }
        }
        run
    }

    /// The PG notified a status change of `order_id`'s payment: each of
    /// the order's payments still in flight is resolved by asking the PG
    /// (the notification's own body is not trusted). How many were; an
    /// order FluxPay does not know, or with nothing in flight, is 0.
    pub async fn pg_notified(&self, tenant: &str, order_id: &str) -> Result<u64> {
        let gateway = self
            .gateway(tenant)
            .map_err(|_| AppError::NotFound(format!("no tenant `{tenant}` takes payments")))?;
        let mut resolved = 0;
        for payment in self.store().payments_of_order(tenant, order_id).await? {
            if payment.status != "READY" && payment.status != "UNKNOWN" {
                continue;
            }
            let ctx = RequestCtx::system(tenant, "system:pg-notification");
            match self
                .resolve(&ctx, &*gateway, (payment, false), crate::app::unanswered)
                .await
            {
                Ok(_) => resolved += 1,
                // Still unknown: the schedule goes on.
                Err(AppError::PaymentPending { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(resolved)
    }

    /// A void the PG keeps refusing or failing is flagged for an operator
    /// once it failed as often as the check schedule is long.
    async fn flag_if_voids_keep_failing(&self, tenant: &str, payment_id: &str, now: i64) {
        let flag = async {
            let failed = self
                .store()
                .payment_attempts(tenant, payment_id)
                .await?
                .iter()
                .filter(|a| a.kind == "cancel" && a.outcome != "cancelled")
                .count();
            if failed < super::CHECK_SCHEDULE_MS.len() {
                return Ok(());
            }
            let mut tx = self.store().begin(tenant).await?;
            if let Some(p) = tx.payment_for_update(payment_id).await?
                && p.status == "APPROVED"
            {
                tx.reschedule_payment(payment_id, None, p.checks, Some(now))
                    .await?;
                tracing::warn!(%tenant, payment_id, failed, "payments.void_flagged_for_operator");
            }
            tx.commit(None).await?;
            Ok::<_, AppError>(())
        };
        if let Err(err) = flag.await {
            tracing::warn!(%tenant, payment_id, error = %err, "payments.janitor_failed");
        }
    }

    /// Claims the tenant's due payments for [`super::CLAIM_LEASE_MS`].
    async fn claim_due(&self, tenant: &str, now: i64) -> Result<Vec<PaymentRecord>> {
        let mut tx = self.store().begin(tenant).await?;
        let due = tx
            .claim_due_payments(now, now + super::CLAIM_LEASE_MS, BATCH)
            .await?;
        tx.commit(None).await?;
        Ok(due)
    }
}

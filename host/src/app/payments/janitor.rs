//! The recovery scheduler ("janitor"): payments left `READY` (the host
//! stopped during the PG call) or `UNKNOWN` (the PG's answer was lost) are
//! resolved by asking the PG, on [`super::CHECK_SCHEDULE_MS`], and adopt
//! its answer; when the schedule is used up they are flagged for an
//! operator. It never asks the PG to approve anything.
//!
//! Several hosts may run it: a payment's outcome is applied from the state
//! and version it was read at, so the second host to resolve one changes
//! nothing (it only asked the PG once more).

use super::super::error::AppError;
use super::super::{App, RequestCtx, new_id};
use crate::store::{PaymentQueries, StoredResponse};

/// How many due payments one run takes per tenant.
const BATCH: i64 = 100;

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JanitorRun {
    /// Payments asked about.
    pub checked: u64,
    /// Resolved (approved or failed) by the PG's answer.
    pub resolved: u64,
    /// Still unknown (asked again later, or flagged).
    pub unresolved: u64,
    /// Runs that failed (logged).
    pub failed: u64,
}

impl App {
    /// Asks the PG about every payment whose check is due at `now`.
    pub async fn run_payment_janitor(&self, now: i64) -> JanitorRun {
        let mut run = JanitorRun::default();
        let tenants: Vec<String> = self.inner.gateways.load().keys().cloned().collect();
        for tenant in tenants {
            let due = match self.store().due_payments(&tenant, now, BATCH).await {
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
                let ctx = RequestCtx {
                    tenant: tenant.clone(),
                    actor: "system:payment-janitor".into(),
                    request_id: new_id("req"),
                    idempotency: None,
                };
                let payment_id = payment.payment_id.clone();
                // No client waits for this answer.
                let ignore = |_: &super::PaymentDetails| StoredResponse {
                    status: 200,
                    body: Vec::new(),
                };
                match self.resolve(&ctx, &*gateway, payment, ignore).await {
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
}

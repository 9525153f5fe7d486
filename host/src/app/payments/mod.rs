//! Payments through the tenant's payment gateway (PG).
//!
//! `confirm_payment` takes an order's money, in three steps, so that no
//! write transaction is open while the PG is called and nothing the PG did
//! can go unrecorded:
//!
//! 1. **intent** (one transaction): the order is still `PENDING` and owes
//!    exactly the amount; a `READY` payment is stored with its approval
//!    key (at most one payment of an order is in flight: a unique index);
//! 2. **the PG call**, with that key, through the breaker and retries of
//!    the boundary ([`crate::gateway::resilient`]);
//! 3. **outcome** (one transaction): the call is recorded as an attempt
//!    and the payment moves as the domain says — approved (the order is
//!    paid, `payment.approved` is posted), declined (`FAILED`, the PG's
//!    code kept), unknown (`UNKNOWN`: resolved by querying the PG, never by
//!    asking it to approve again), or not taken at all (a transient fault:
//!    `FAILED`, `PAY_005`, and the client may try again).
//!
//! Approvals and declines are answers kept for the request's
//! Idempotency-Key; a lost or unavailable answer is not (the retry learns
//! more). A retry while the payment is `UNKNOWN` or still `READY` (the host
//! stopped between steps) asks the PG about the order and adopts what it
//! says.

mod cancel;
mod complete;
mod confirm;
mod janitor;
mod operator;
mod outcome;
mod refund;
mod renewals;
mod settle;

pub use confirm::ConfirmCommand;
pub use janitor::JanitorRun;
pub use operator::{OperatorAction, stuck_on};
pub use renewals::{AddPaymentMethod, RenewalRun};

/// When the recovery scheduler asks the PG about a payment left `READY` or
/// `UNKNOWN`: after 10 s, then 30 s, 2 min, 10 min and 1 h later; then it
/// flags the payment for an operator (Hyperswitch's psync and Kill Bill's
/// janitor run bounded schedules that end with a person, not silence).
pub const CHECK_SCHEDULE_MS: [i64; 5] = [10_000, 30_000, 120_000, 600_000, 3_600_000];

/// How long the recovery scheduler's claim on a due payment lasts: a host
/// that dies while asking the PG leaves it to another host after this.
pub const CLAIM_LEASE_MS: i64 = 60_000;

/// When a void whose PG call failed is tried again.
pub const VOID_RETRY_MS: i64 = 30_000;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::App;
use super::error::{AppError, Result};
use crate::gateway::resilient::ResilientGateway;
use crate::store::{
    PaymentAttemptRecord, PaymentHealth, PaymentQueries, PaymentRecord, SagaQueries,
};

/// The gateways of the tenants that take payments.
pub type Gateways = BTreeMap<String, Arc<ResilientGateway>>;

/// Stores a domain step of the locked payment `record` (status, PG key,
/// refunds, the PG's failure) with the recovery scheduler's next check
/// `(next_check_at, checks, flagged_at)`, guarded by the status and
/// version it was read at; the new version, or `PAY_004` if it moved.
async fn store_payment_change(
    tx: &mut crate::store::Tx,
    record: &PaymentRecord,
    change: &crate::domain::payment::PaymentChange,
    failure: Option<(String, String)>,
    (next_check_at, checks, flagged_at): (Option<i64>, i64, Option<i64>),
    now: i64,
) -> Result<i64> {
    use crate::store::{PaymentTx, PaymentUpdate};
    tx.update_payment(&PaymentUpdate {
        payment_id: record.payment_id.clone(),
        from: (record.status.clone(), record.version),
        status: change.payment.status().as_str().to_owned(),
        pg_payment_key: change.payment.pg_payment_key().map(str::to_owned),
        refunded: change.payment.refunded().minor,
        failure,
        next_check_at,
        checks,
        flagged_at,
        now,
    })
    .await?
    .ok_or_else(|| {
        AppError::StateConflict(format!("payment `{}` changed meanwhile", record.payment_id))
    })
}

/// How a tenant's payments are run, besides its gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentSettings {
    /// An approved payment whose order is not fulfilled within this is
    /// voided by the recovery scheduler (and the order cancelled).
    pub void_unconfirmed_after_ms: i64,
    /// How long an order's saga waits for the tenant's service to call
    /// back after the payment's approval before it compensates.
    pub service_timeout_ms: i64,
    /// The PG captures with the approval (`capture: automatic`): the
    /// fulfilment sends nothing to the PG.
    pub capture_with_approval: bool,
}

/// Default `service_timeout_s`: 30 s (the 1-pager's consistency window).
pub const DEFAULT_SERVICE_TIMEOUT_MS: i64 = 30_000;

impl Default for PaymentSettings {
    fn default() -> Self {
        PaymentSettings {
            void_unconfirmed_after_ms: crate::config::DEFAULT_VOID_UNCONFIRMED_AFTER.as_millis()
                as i64,
            service_timeout_ms: DEFAULT_SERVICE_TIMEOUT_MS,
            capture_with_approval: false,
        }
    }
}

/// One tenant's payment gauges and its gateway's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPaymentHealth {
    /// The tenant.
    pub tenant: String,
    /// Its payments' gauges.
    pub payments: PaymentHealth,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// Order sagas parked `COMPENSATION_FAILED`: an operator must act.
    pub sagas_parked: i64,
}

/// A payment with its calls to the PG, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentDetails {
    /// The payment.
    pub payment: PaymentRecord,
    /// Its calls to the PG, in order.
    pub attempts: Vec<PaymentAttemptRecord>,
}

impl App {
    /// Installs the tenants' gateways (`serve` does at start-up).
    pub fn set_gateways(&self, gateways: Gateways) {
        self.inner.gateways.store(Arc::new(gateways));
    }

    /// Installs the tenants' payment settings (`serve` does at start-up);
    /// a tenant without any runs on [`PaymentSettings::default`].
    pub fn set_payment_settings(&self, settings: BTreeMap<String, PaymentSettings>) {
        self.inner.payment_settings.store(Arc::new(settings));
    }

    /// The tenant's payment settings.
    fn payment_settings(&self, tenant: &str) -> PaymentSettings {
        self.inner
            .payment_settings
            .load()
            .get(tenant)
            .copied()
            .unwrap_or_default()
    }

    /// Voids an `APPROVED` payment through the tenant's gateway and cancels
    /// its order (and compensates its saga), in one transaction.
    pub(in crate::app) async fn void_payment(
        &self,
        ctx: &super::RequestCtx,
        record: PaymentRecord,
        reason: String,
        render: impl super::credits::Render<PaymentDetails>,
    ) -> Result<super::Reply> {
        let gateway = self.gateway(&ctx.tenant)?;
        self.void(ctx, &*gateway, record, reason, render).await
    }

    /// The tenant's gateway.
    fn gateway(&self, tenant: &str) -> Result<Arc<ResilientGateway>> {
        self.inner
            .gateways
            .load()
            .get(tenant)
            .cloned()
            .ok_or_else(|| AppError::NoGateway(tenant.to_owned()))
    }

    /// A payment and its calls to the PG.
    pub async fn payment(&self, tenant: &str, payment_id: &str) -> Result<PaymentDetails> {
        let payment = self
            .store()
            .payment(tenant, payment_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no payment `{payment_id}`")))?;
        let attempts = self.store().payment_attempts(tenant, payment_id).await?;
        Ok(PaymentDetails { payment, attempts })
    }

    /// A payment's transitions, oldest first.
    pub async fn payment_history(
        &self,
        tenant: &str,
        payment_id: &str,
    ) -> Result<Vec<crate::store::PaymentTransitionRecord>> {
        // The payment first: another tenant's id is NOT_FOUND, not empty.
        self.store()
            .payment(tenant, payment_id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("no payment `{payment_id}`")))?;
        Ok(self.store().payment_history(tenant, payment_id).await?)
    }

    /// The tenant's payment gauges: payments `READY` or `UNKNOWN` (and how
    /// many of them for longer than `stuck_after_ms`), and those flagged
    /// for an operator.
    pub async fn payment_health(&self, tenant: &str, stuck_after_ms: i64) -> Result<PaymentHealth> {
        Ok(self
            .store()
            .payment_health(tenant, self.now() - stuck_after_ms)
            .await?)
    }

    /// Every gateway tenant's gauges, and its breaker's state (for the
    /// admin API, and the metrics the monitoring issue exports).
    pub async fn payments_health(&self, stuck_after_ms: i64) -> Result<Vec<TenantPaymentHealth>> {
        let gateways = self.inner.gateways.load_full();
        let mut all = Vec::with_capacity(gateways.len());
        for (tenant, gateway) in gateways.iter() {
            use tower_resilience_circuitbreaker::CircuitState;
            let breaker = match gateway.state() {
                CircuitState::Closed => "closed",
                CircuitState::Open => "open",
                CircuitState::HalfOpen => "half_open",
            };
            all.push(TenantPaymentHealth {
                tenant: tenant.clone(),
                payments: self.payment_health(tenant, stuck_after_ms).await?,
                breaker,
                sagas_parked: self
                    .store()
                    .saga_count(tenant, "COMPENSATION_FAILED")
                    .await?,
            });
        }
        Ok(all)
    }

    /// An order's payments, oldest first.
    pub async fn payments_of_order(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> Result<Vec<PaymentRecord>> {
        Ok(self.store().payments_of_order(tenant, order_id).await?)
    }
}

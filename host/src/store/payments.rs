//! Payments: the payment row (`payments`), guarded status changes, and the
//! record of every call made to the PG for it (`payment_attempts`).
//!
//! The SQL is written once in `payment_queries!` and compiled for each
//! backend (see [`super::queries`] for why a macro).

use std::future::Future;

use super::error::Result;
use super::error::StoreError;
use super::pg_pool::pg_read;
use super::postgres::PgTx;
use super::sqlite::SqliteTx;
use super::sqlite_inline as inline;
use super::{PgStore, SqliteStore, Store, Tx};

/// A payment as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PaymentRecord {
    /// Its id.
    pub payment_id: String,
    /// The order it pays for.
    pub order_id: String,
    /// Who pays.
    pub customer_id: String,
    /// Minor units the PG is asked to take.
    pub amount: i64,
    /// ISO-4217.
    pub currency: String,
    /// The domain's status name (`READY`, `APPROVED`, …).
    pub status: String,
    /// The approval's PG idempotency key.
    pub approval_key: String,
    /// The PG's key for the payment, once it approved.
    pub pg_payment_key: Option<String>,
    /// Σ refunds so far.
    pub refunded: i64,
    /// The PG's code of the last refusal or failure.
    pub failure_code: Option<String>,
    /// Its message.
    pub failure_message: Option<String>,
    /// When the recovery scheduler next asks the PG about it.
    pub next_check_at: Option<i64>,
    /// How often it has asked.
    pub checks: i64,
    /// When it gave up and flagged the payment for an operator.
    pub flagged_at: Option<i64>,
    /// When a void was requested (stored before the PG is asked): the
    /// payment is voided, never confirmed.
    pub void_requested_at: Option<i64>,
    /// When a capture was requested (stored before the PG is asked): the
    /// order's saga owns the payment until the PG's answer is recorded;
    /// nothing voids it meanwhile.
    pub capture_requested_at: Option<i64>,
    /// `manual` (the approval authorizes; fulfilment captures) or
    /// `automatic` (the approval captures), as when it was opened; `None`
    /// for a payment opened before it was stored (the tenant's setting).
    pub capture_mode: Option<String>,
    /// +1 per change.
    pub version: i64,
    /// Created (ms since the epoch).
    pub created_at: i64,
    /// Last changed.
    pub updated_at: i64,
}

/// A new `READY` payment.
#[derive(Debug, Clone)]
pub struct NewPayment {
    /// Its id.
    pub payment_id: String,
    /// The order it pays for.
    pub order_id: String,
    /// Who pays.
    pub customer_id: String,
    /// Minor units.
    pub amount: i64,
    /// ISO-4217.
    pub currency: String,
    /// The approval's PG idempotency key.
    pub approval_key: String,
    /// The PG's key of the checkout it confirms, when there is one: the
    /// recovery scheduler confirms it again (same idempotency key) if the
    /// PG says it never saw the confirm.
    pub pg_payment_key: Option<String>,
    /// When the recovery scheduler asks the PG if the payment is still
    /// `READY` then (the host stopped before it recorded the outcome).
    pub next_check_at: i64,
    /// `manual` or `automatic` ([`PaymentRecord::capture_mode`]).
    pub capture_mode: &'static str,
    /// When (ms since the epoch).
    pub now: i64,
}

/// A payment's new state, applied only if it is still at `from`.
#[derive(Debug, Clone)]
pub struct PaymentUpdate {
    /// Its id.
    pub payment_id: String,
    /// The status and version it must still have.
    pub from: (String, i64),
    /// The status it moves to.
    pub status: String,
    /// The PG's key, once known.
    pub pg_payment_key: Option<String>,
    /// Σ refunds after the change.
    pub refunded: i64,
    /// The PG's code and message, when the change records a refusal.
    pub failure: Option<(String, String)>,
    /// The recovery scheduler's next check (`None`: nothing to ask).
    pub next_check_at: Option<i64>,
    /// Checks made so far.
    pub checks: i64,
    /// When it was flagged for an operator.
    pub flagged_at: Option<i64>,
    /// When.
    pub now: i64,
}

/// One call made to the PG for a payment.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PaymentAttemptRecord {
    /// 1, 2, … per payment.
    pub attempt: i64,
    /// `approve`, `cancel` or `query`.
    pub kind: String,
    /// The idempotency key it sent (mutating calls).
    pub idempotency_key: Option<String>,
    /// What came of it (`approved`, `declined`, `transient`, `unknown`, …).
    pub outcome: String,
    /// The PG's code, when it gave one.
    pub pg_code: Option<String>,
    /// How long the call took.
    pub latency_ms: i64,
    /// When it ended (ms since the epoch).
    pub created_at: i64,
}

/// One transition of a payment, as its history row recorded it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PaymentTransitionRecord {
    /// The status before (`None`: created).
    pub from_state: Option<String>,
    /// The status after.
    pub to_state: String,
    /// What happened (`create`, `approve`, `lose`, `refund`, …).
    pub event: String,
    /// Why; for the PG's answers, its code and message.
    pub reason: String,
    /// Who: `api_key:<id>`, `scheduler`, …
    pub actor: String,
    /// The API request, if any.
    pub request_id: Option<String>,
    /// The business transaction it belongs to.
    pub transaction_id: String,
    /// When (ms since the epoch).
    pub at: i64,
}

/// Payment reads outside a transaction.
pub trait PaymentQueries: Send + Sync {
    /// A payment's transitions, oldest first.
    fn payment_history(
        &self,
        tenant: &str,
        payment_id: &str,
    ) -> impl Future<Output = Result<Vec<PaymentTransitionRecord>>> + Send;

    /// A payment.
    fn payment(
        &self,
        tenant: &str,
        payment_id: &str,
    ) -> impl Future<Output = Result<Option<PaymentRecord>>> + Send;

    /// An order's payments, oldest first.
    fn payments_of_order(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> impl Future<Output = Result<Vec<PaymentRecord>>> + Send;

    /// A payment's calls to the PG, in order.
    fn payment_attempts(
        &self,
        tenant: &str,
        payment_id: &str,
    ) -> impl Future<Output = Result<Vec<PaymentAttemptRecord>>> + Send;

    /// Payments whose next check is due at `now`, soonest first.
    fn due_payments(
        &self,
        tenant: &str,
        now: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<PaymentRecord>>> + Send;

    /// Payments the recovery scheduler gave up on, oldest flag first.
    fn flagged_payments(
        &self,
        tenant: &str,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<PaymentRecord>>> + Send;

    /// How many payments are `READY` or `UNKNOWN`, how many of those were
    /// created before `stuck_before`, how many are flagged and how many
    /// wait for their void. Reads only payments still in flight or holding
    /// money (the partial index `payments_one_active_key` covers them).
    fn payment_health(
        &self,
        tenant: &str,
        stuck_before: i64,
    ) -> impl Future<Output = Result<PaymentHealth>> + Send;
}

/// The payment gauges of one tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct PaymentHealth {
    /// `READY` (the PG not answered yet).
    pub ready: i64,
    /// `UNKNOWN` (the answer lost, being resolved).
    pub unknown: i64,
    /// `READY` or `UNKNOWN` since before the threshold.
    pub stuck: i64,
    /// Given up on by the scheduler (its checks, or its void's tries, used
    /// up): an operator must look.
    pub flagged: i64,
    /// `APPROVED` with a void requested that has not gone through yet.
    pub voiding: i64,
    /// `APPROVED` with a capture requested whose outcome is not recorded
    /// yet (the PG's answer lost, or the PG failing).
    pub capturing: i64,
}

/// Payment writes inside a transaction.
pub trait PaymentTx: Send {
    /// Inserts a `READY` payment (version 1, nothing refunded).
    fn insert_payment(&mut self, payment: &NewPayment) -> impl Future<Output = Result<()>> + Send;

    /// A payment, locked until the transaction ends.
    fn payment_for_update(
        &mut self,
        payment_id: &str,
    ) -> impl Future<Output = Result<Option<PaymentRecord>>> + Send;

    /// The order's payment in flight or holding its money (`READY`,
    /// `UNKNOWN`, `APPROVED`), locked until the transaction ends.
    fn active_payment_of_order(
        &mut self,
        order_id: &str,
    ) -> impl Future<Output = Result<Option<PaymentRecord>>> + Send;

    /// Applies `update` if the payment is still at its `from`; the new
    /// version, or `None` when it moved meanwhile.
    fn update_payment(
        &mut self,
        update: &PaymentUpdate,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// Moves the recovery scheduler's next check, its count and the
    /// operator flag, leaving the status and version alone (asking the PG
    /// again changes no state).
    fn reschedule_payment(
        &mut self,
        payment_id: &str,
        next_check_at: Option<i64>,
        checks: i64,
        flagged_at: Option<i64>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Claims up to `limit` payments whose check is due at `now`, soonest
    /// first, by moving their next check to `lease_until`: another host's
    /// claim skips them (rows locked now are skipped on PostgreSQL; SQLite
    /// has one writer), and if this host dies before it settles them they
    /// are due again when the lease ends.
    fn claim_due_payments(
        &mut self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<PaymentRecord>>> + Send;

    /// Stores that the `APPROVED` payment is to be voided (keeping an
    /// earlier request's time), with the scheduler's next look at it. Not a
    /// change of state (no history row, the version stays): the version,
    /// or `None` when it is no longer `APPROVED` or its capture was
    /// requested.
    fn request_void(
        &mut self,
        payment_id: &str,
        now: i64,
        next_check_at: i64,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// Stores that the `APPROVED` payment is being captured (`at`), or,
    /// with `None`, that the PG refused the capture; either way the
    /// scheduler leaves it to the order's saga. Not a change of state: the
    /// version, or `None` when it is no longer `APPROVED` or its void was
    /// requested.
    fn request_capture(
        &mut self,
        payment_id: &str,
        at: Option<i64>,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;

    /// The payment's calls to the PG, in order, as this transaction sees
    /// them (its own records included). Read on the transaction's own
    /// connection: a read through the store while a transaction is held
    /// would need a second connection, and a pool full of such
    /// transactions would wait for itself.
    fn attempts_in_tx(
        &mut self,
        payment_id: &str,
    ) -> impl Future<Output = Result<Vec<PaymentAttemptRecord>>> + Send;

    /// Records a call made to the PG (numbered after the last one).
    fn record_payment_attempt(
        &mut self,
        payment_id: &str,
        attempt: &PaymentAttemptRecord,
    ) -> impl Future<Output = Result<i64>> + Send;
}

macro_rules! payment_queries {
    (db = $db:ty, for_update = $for_update:literal, skip_locked = $skip_locked:literal) => {
        use super::*;

        type Db = $db;

        pub(super) const PAYMENT_COLUMNS: &str = "SELECT payment_id, order_id, customer_id, amount, \
             currency, status, approval_key, pg_payment_key, refunded, failure_code, \
             failure_message, next_check_at, checks, flagged_at, void_requested_at, \
             capture_requested_at, capture_mode, version, created_at, updated_at FROM payments";

        pub(super) async fn payment<'e, E>(
            ex: E,
            tenant: &str,
            payment_id: &str,
            lock: bool,
        ) -> Result<Option<PaymentRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "{PAYMENT_COLUMNS} WHERE tenant_id = $1 AND payment_id = $2{}",
                if lock { $for_update } else { "" }
            );
            Ok(sqlx::query_as::<_, PaymentRecord>(&sql)
                .bind(tenant)
                .bind(payment_id)
                .fetch_optional(ex)
                .await?)
        }

        pub(super) const ACTIVE_OF_ORDER: &str = "WHERE tenant_id = $1 AND order_id = $2 \
             AND status IN ('READY', 'UNKNOWN', 'APPROVED')";

        // SQLite runs it inline (`sqlite_inline`).
        #[allow(dead_code)]
        pub(super) async fn active_payment_of_order<'e, E>(
            ex: E,
            tenant: &str,
            order_id: &str,
        ) -> Result<Option<PaymentRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!("{PAYMENT_COLUMNS} {ACTIVE_OF_ORDER}{}", $for_update);
            Ok(sqlx::query_as::<_, PaymentRecord>(&sql)
                .bind(tenant)
                .bind(order_id)
                .fetch_optional(ex)
                .await?)
        }

        pub(super) async fn payments_of_order<'e, E>(
            ex: E,
            tenant: &str,
            order_id: &str,
        ) -> Result<Vec<PaymentRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "{PAYMENT_COLUMNS} WHERE tenant_id = $1 AND order_id = $2 \
                 ORDER BY created_at, payment_id"
            );
            Ok(sqlx::query_as::<_, PaymentRecord>(&sql)
                .bind(tenant)
                .bind(order_id)
                .fetch_all(ex)
                .await?)
        }

        pub(super) async fn due_payments<'e, E>(
            ex: E,
            tenant: &str,
            now: i64,
            limit: i64,
        ) -> Result<Vec<PaymentRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "{PAYMENT_COLUMNS} WHERE tenant_id = $1 AND next_check_at IS NOT NULL \
                 AND next_check_at <= $2 ORDER BY next_check_at, payment_id LIMIT $3"
            );
            Ok(sqlx::query_as::<_, PaymentRecord>(&sql)
                .bind(tenant)
                .bind(now)
                .bind(limit)
                .fetch_all(ex)
                .await?)
        }

        pub(super) async fn payment_health<'e, E>(
            ex: E,
            tenant: &str,
            stuck_before: i64,
        ) -> Result<PaymentHealth>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_as::<_, PaymentHealth>(
                "SELECT \
                   COUNT(*) FILTER (WHERE status = 'READY') AS ready, \
                   COUNT(*) FILTER (WHERE status = 'UNKNOWN') AS unknown, \
                   COUNT(*) FILTER (WHERE status IN ('READY', 'UNKNOWN') \
                     AND created_at < $2) AS stuck, \
                   COUNT(*) FILTER (WHERE flagged_at IS NOT NULL) AS flagged, \
                   COUNT(*) FILTER (WHERE void_requested_at IS NOT NULL) AS voiding, \
                   COUNT(*) FILTER (WHERE capture_requested_at IS NOT NULL \
                     AND status = 'APPROVED') AS capturing \
                 FROM payments WHERE tenant_id = $1 \
                   AND status IN ('READY', 'UNKNOWN', 'APPROVED')",
            )
            .bind(tenant)
            .bind(stuck_before)
            .fetch_one(ex)
            .await?)
        }

        pub(super) async fn payment_history<'e, E>(
            ex: E,
            tenant: &str,
            payment_id: &str,
        ) -> Result<Vec<PaymentTransitionRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            // state_history_payment_idx (partial: payments only).
            Ok(sqlx::query_as::<_, PaymentTransitionRecord>(
                "SELECT from_state, to_state, event, reason, actor, request_id, transaction_id, \
                 at FROM state_history \
                 WHERE tenant_id = $1 AND entity_id = $2 AND entity_type = 'payment' ORDER BY id",
            )
            .bind(tenant)
            .bind(payment_id)
            .fetch_all(ex)
            .await?)
        }

        pub(super) const ATTEMPTS: &str = "SELECT attempt, kind, idempotency_key, outcome, \
             pg_code, latency_ms, created_at \
             FROM payment_attempts WHERE tenant_id = $1 AND payment_id = $2 ORDER BY attempt";

        pub(super) async fn payment_attempts<'e, E>(
            ex: E,
            tenant: &str,
            payment_id: &str,
        ) -> Result<Vec<PaymentAttemptRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_as::<_, PaymentAttemptRecord>(ATTEMPTS)
            .bind(tenant)
            .bind(payment_id)
            .fetch_all(ex)
            .await?)
        }

        pub(super) const INSERT_PAYMENT: &str = "INSERT INTO payments (tenant_id, payment_id, \
             order_id, customer_id, amount, currency, status, approval_key, refunded, \
             next_check_at, checks, version, created_at, updated_at, pg_payment_key, \
             capture_mode) \
             VALUES ($1, $2, $3, $4, $5, $6, 'READY', $7, 0, $9, 0, 1, $8, $8, $10, $11)";

        // SQLite runs it inline (`sqlite_inline`).
        #[allow(dead_code)]
        pub(super) async fn insert_payment<'e, E>(
            ex: E,
            tenant: &str,
            payment: &NewPayment,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(INSERT_PAYMENT)
            .bind(tenant)
            .bind(&payment.payment_id)
            .bind(&payment.order_id)
            .bind(&payment.customer_id)
            .bind(payment.amount)
            .bind(&payment.currency)
            .bind(&payment.approval_key)
            .bind(payment.now)
            .bind(payment.next_check_at)
            .bind(&payment.pg_payment_key)
            .bind(payment.capture_mode)
            .execute(ex)
            .await?;
            Ok(())
        }

        pub(super) const UPDATE_PAYMENT: &str = "UPDATE payments SET status = $5, \
             pg_payment_key = $6, refunded = $7, \
             failure_code = COALESCE($8, failure_code), \
             failure_message = COALESCE($9, failure_message), \
             next_check_at = $11, checks = $12, flagged_at = $13, \
             version = version + 1, updated_at = $10 \
             WHERE tenant_id = $1 AND payment_id = $2 AND status = $3 AND version = $4 \
             RETURNING version";

        // SQLite runs it inline (`sqlite_inline`).
        #[allow(dead_code)]
        pub(super) async fn update_payment<'e, E>(
            ex: E,
            tenant: &str,
            update: &PaymentUpdate,
        ) -> Result<Option<i64>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let (code, message) = match &update.failure {
                Some((code, message)) => (Some(code.as_str()), Some(message.as_str())),
                None => (None, None),
            };
            Ok(sqlx::query_scalar::<_, i64>(UPDATE_PAYMENT)
            .bind(tenant)
            .bind(&update.payment_id)
            .bind(&update.from.0)
            .bind(update.from.1)
            .bind(&update.status)
            .bind(&update.pg_payment_key)
            .bind(update.refunded)
            .bind(code)
            .bind(message)
            .bind(update.now)
            .bind(update.next_check_at)
            .bind(update.checks)
            .bind(update.flagged_at)
            .fetch_optional(ex)
            .await?)
        }

        pub(super) async fn flagged_payments<'e, E>(
            ex: E,
            tenant: &str,
            limit: i64,
        ) -> Result<Vec<PaymentRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "{PAYMENT_COLUMNS} WHERE tenant_id = $1 AND flagged_at IS NOT NULL \
                 ORDER BY flagged_at, payment_id LIMIT $2"
            );
            Ok(sqlx::query_as::<_, PaymentRecord>(&sql)
                .bind(tenant)
                .bind(limit)
                .fetch_all(ex)
                .await?)
        }

        pub(super) async fn claim_due_payments<'e, E>(
            ex: E,
            tenant: &str,
            now: i64,
            lease_until: i64,
            limit: i64,
        ) -> Result<Vec<PaymentRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "UPDATE payments SET next_check_at = $3 \
                 WHERE tenant_id = $1 AND payment_id IN ( \
                   SELECT payment_id FROM payments WHERE tenant_id = $1 \
                     AND next_check_at IS NOT NULL AND next_check_at <= $2 \
                   ORDER BY next_check_at, payment_id LIMIT $4{}) \
                 RETURNING payment_id, order_id, customer_id, amount, currency, status, \
                   approval_key, pg_payment_key, refunded, failure_code, failure_message, \
                   next_check_at, checks, flagged_at, void_requested_at, capture_requested_at, \
                   capture_mode, version, created_at, updated_at",
                $skip_locked
            );
            let mut claimed = sqlx::query_as::<_, PaymentRecord>(&sql)
                .bind(tenant)
                .bind(now)
                .bind(lease_until)
                .bind(limit)
                .fetch_all(ex)
                .await?;
            // RETURNING's order is unspecified.
            claimed.sort_by(|a, b| (a.created_at, &a.payment_id).cmp(&(b.created_at, &b.payment_id)));
            Ok(claimed)
        }

        pub(super) async fn request_void<'e, E>(
            ex: E,
            tenant: &str,
            payment_id: &str,
            now: i64,
            next_check_at: i64,
        ) -> Result<Option<i64>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_scalar::<_, i64>(
                "UPDATE payments SET void_requested_at = COALESCE(void_requested_at, $3), \
                   next_check_at = $4 \
                 WHERE tenant_id = $1 AND payment_id = $2 AND status = 'APPROVED' \
                   AND capture_requested_at IS NULL \
                 RETURNING version",
            )
            .bind(tenant)
            .bind(payment_id)
            .bind(now)
            .bind(next_check_at)
            .fetch_optional(ex)
            .await?)
        }

        pub(super) const REQUEST_CAPTURE: &str = "UPDATE payments \
             SET capture_requested_at = $3, next_check_at = NULL \
             WHERE tenant_id = $1 AND payment_id = $2 AND status = 'APPROVED' \
               AND void_requested_at IS NULL \
             RETURNING version";

        // SQLite runs it inline (`sqlite_inline`).
        #[allow(dead_code)]
        pub(super) async fn request_capture<'e, E>(
            ex: E,
            tenant: &str,
            payment_id: &str,
            at: Option<i64>,
        ) -> Result<Option<i64>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_scalar::<_, i64>(REQUEST_CAPTURE)
            .bind(tenant)
            .bind(payment_id)
            .bind(at)
            .fetch_optional(ex)
            .await?)
        }

        pub(super) async fn reschedule_payment<'e, E>(
            ex: E,
            tenant: &str,
            payment_id: &str,
            next_check_at: Option<i64>,
            checks: i64,
            flagged_at: Option<i64>,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "UPDATE payments SET next_check_at = $3, checks = $4, flagged_at = $5 \
                 WHERE tenant_id = $1 AND payment_id = $2",
            )
            .bind(tenant)
            .bind(payment_id)
            .bind(next_check_at)
            .bind(checks)
            .bind(flagged_at)
            .execute(ex)
            .await?;
            Ok(())
        }

        pub(super) const RECORD_ATTEMPT: &str = "INSERT INTO payment_attempts (tenant_id, \
             payment_id, attempt, kind, idempotency_key, outcome, pg_code, latency_ms, created_at) \
             SELECT $1, $2, COALESCE(MAX(attempt), 0) + 1, $3, $4, $5, $6, $7, $8 \
               FROM payment_attempts WHERE tenant_id = $1 AND payment_id = $2 \
             RETURNING attempt";

        // SQLite runs it inline (`sqlite_inline`).
        #[allow(dead_code)]
        pub(super) async fn record_payment_attempt(
            conn: &mut <Db as sqlx::Database>::Connection,
            tenant: &str,
            payment_id: &str,
            attempt: &PaymentAttemptRecord,
        ) -> Result<i64> {
            // Numbered in the transaction that holds the payment's lock (or
            // SQLite's one writer), so two writers never take one number;
            // the primary key refuses it if they did.
            Ok(sqlx::query_scalar::<_, i64>(RECORD_ATTEMPT)
            .bind(tenant)
            .bind(payment_id)
            .bind(&attempt.kind)
            .bind(&attempt.idempotency_key)
            .bind(&attempt.outcome)
            .bind(&attempt.pg_code)
            .bind(attempt.latency_ms)
            .bind(attempt.created_at)
            .fetch_one(&mut *conn)
            .await?)
        }
    };
}

mod sqlite_q {
    payment_queries!(db = sqlx::Sqlite, for_update = "", skip_locked = "");
}

mod pg_q {
    payment_queries!(
        db = sqlx::Postgres,
        for_update = " FOR UPDATE",
        skip_locked = " FOR UPDATE SKIP LOCKED"
    );
}

impl PaymentQueries for SqliteStore {
    async fn flagged_payments(&self, tenant: &str, limit: i64) -> Result<Vec<PaymentRecord>> {
        sqlite_q::flagged_payments(&self.reader, tenant, limit).await
    }

    async fn payment_history(
        &self,
        tenant: &str,
        payment_id: &str,
    ) -> Result<Vec<PaymentTransitionRecord>> {
        sqlite_q::payment_history(&self.reader, tenant, payment_id).await
    }

    async fn payment(&self, tenant: &str, payment_id: &str) -> Result<Option<PaymentRecord>> {
        sqlite_q::payment(&self.reader, tenant, payment_id, false).await
    }

    async fn payments_of_order(&self, tenant: &str, order_id: &str) -> Result<Vec<PaymentRecord>> {
        sqlite_q::payments_of_order(&self.reader, tenant, order_id).await
    }

    async fn payment_attempts(
        &self,
        tenant: &str,
        payment_id: &str,
    ) -> Result<Vec<PaymentAttemptRecord>> {
        sqlite_q::payment_attempts(&self.reader, tenant, payment_id).await
    }

    async fn due_payments(&self, tenant: &str, now: i64, limit: i64) -> Result<Vec<PaymentRecord>> {
        sqlite_q::due_payments(&self.reader, tenant, now, limit).await
    }

    async fn payment_health(&self, tenant: &str, stuck_before: i64) -> Result<PaymentHealth> {
        sqlite_q::payment_health(&self.reader, tenant, stuck_before).await
    }
}

impl PaymentQueries for PgStore {
    async fn flagged_payments(&self, tenant: &str, limit: i64) -> Result<Vec<PaymentRecord>> {
        pg_read!(self.db, |conn| pg_q::flagged_payments(conn, tenant, limit))
    }

    async fn payment_history(
        &self,
        tenant: &str,
        payment_id: &str,
    ) -> Result<Vec<PaymentTransitionRecord>> {
        pg_read!(self.db, |conn| pg_q::payment_history(
            conn, tenant, payment_id
        ))
    }

    async fn payment(&self, tenant: &str, payment_id: &str) -> Result<Option<PaymentRecord>> {
        pg_read!(self.db, |conn| pg_q::payment(
            conn, tenant, payment_id, false
        ))
    }

    async fn payments_of_order(&self, tenant: &str, order_id: &str) -> Result<Vec<PaymentRecord>> {
        pg_read!(self.db, |conn| pg_q::payments_of_order(
            conn, tenant, order_id
        ))
    }

    async fn payment_attempts(
        &self,
        tenant: &str,
        payment_id: &str,
    ) -> Result<Vec<PaymentAttemptRecord>> {
        pg_read!(self.db, |conn| pg_q::payment_attempts(
            conn, tenant, payment_id
        ))
    }

    async fn due_payments(&self, tenant: &str, now: i64, limit: i64) -> Result<Vec<PaymentRecord>> {
        pg_read!(self.db, |conn| pg_q::due_payments(conn, tenant, now, limit))
    }

    async fn payment_health(&self, tenant: &str, stuck_before: i64) -> Result<PaymentHealth> {
        pg_read!(self.db, |conn| pg_q::payment_health(
            conn,
            tenant,
            stuck_before
        ))
    }
}

impl PaymentQueries for Store {
    async fn flagged_payments(&self, tenant: &str, limit: i64) -> Result<Vec<PaymentRecord>> {
        dispatch!(self, s => s.flagged_payments(tenant, limit).await)
    }

    async fn payment_history(
        &self,
        tenant: &str,
        payment_id: &str,
    ) -> Result<Vec<PaymentTransitionRecord>> {
        dispatch!(self, s => s.payment_history(tenant, payment_id).await)
    }

    async fn payment(&self, tenant: &str, payment_id: &str) -> Result<Option<PaymentRecord>> {
        dispatch!(self, s => s.payment(tenant, payment_id).await)
    }

    async fn payments_of_order(&self, tenant: &str, order_id: &str) -> Result<Vec<PaymentRecord>> {
        dispatch!(self, s => s.payments_of_order(tenant, order_id).await)
    }

    async fn payment_attempts(
        &self,
        tenant: &str,
        payment_id: &str,
    ) -> Result<Vec<PaymentAttemptRecord>> {
        dispatch!(self, s => s.payment_attempts(tenant, payment_id).await)
    }

    async fn due_payments(&self, tenant: &str, now: i64, limit: i64) -> Result<Vec<PaymentRecord>> {
        dispatch!(self, s => s.due_payments(tenant, now, limit).await)
    }

    async fn payment_health(&self, tenant: &str, stuck_before: i64) -> Result<PaymentHealth> {
        dispatch!(self, s => s.payment_health(tenant, stuck_before).await)
    }
}

/// PostgreSQL: every statement through sqlx.
impl PaymentTx for PgTx {
    async fn attempts_in_tx(&mut self, payment_id: &str) -> Result<Vec<PaymentAttemptRecord>> {
        pg_q::payment_attempts(&mut *self.tx, &self.tenant, payment_id).await
    }

    async fn request_void(
        &mut self,
        payment_id: &str,
        now: i64,
        next_check_at: i64,
    ) -> Result<Option<i64>> {
        pg_q::request_void(&mut *self.tx, &self.tenant, payment_id, now, next_check_at).await
    }

    async fn request_capture(&mut self, payment_id: &str, at: Option<i64>) -> Result<Option<i64>> {
        pg_q::request_capture(&mut *self.tx, &self.tenant, payment_id, at).await
    }

    async fn claim_due_payments(
        &mut self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<PaymentRecord>> {
        pg_q::claim_due_payments(&mut *self.tx, &self.tenant, now, lease_until, limit).await
    }

    async fn insert_payment(&mut self, payment: &NewPayment) -> Result<()> {
        pg_q::insert_payment(&mut *self.tx, &self.tenant, payment).await
    }

    async fn payment_for_update(&mut self, payment_id: &str) -> Result<Option<PaymentRecord>> {
        pg_q::payment(&mut *self.tx, &self.tenant, payment_id, true).await
    }

    async fn active_payment_of_order(&mut self, order_id: &str) -> Result<Option<PaymentRecord>> {
        pg_q::active_payment_of_order(&mut *self.tx, &self.tenant, order_id).await
    }

    async fn update_payment(&mut self, update: &PaymentUpdate) -> Result<Option<i64>> {
        pg_q::update_payment(&mut *self.tx, &self.tenant, update).await
    }

    async fn reschedule_payment(
        &mut self,
        payment_id: &str,
        next_check_at: Option<i64>,
        checks: i64,
        flagged_at: Option<i64>,
    ) -> Result<()> {
        pg_q::reschedule_payment(
            &mut *self.tx,
            &self.tenant,
            payment_id,
            next_check_at,
            checks,
            flagged_at,
        )
        .await
    }

    async fn record_payment_attempt(
        &mut self,
        payment_id: &str,
        attempt: &PaymentAttemptRecord,
    ) -> Result<i64> {
        pg_q::record_payment_attempt(&mut self.tx, &self.tenant, payment_id, attempt).await
    }
}

/// SQLite: the statements of a payment's steps inline on the writer
/// (`sqlite_inline`); the scheduler's claim and the void request through
/// sqlx.
impl PaymentTx for SqliteTx {
    async fn attempts_in_tx(&mut self, payment_id: &str) -> Result<Vec<PaymentAttemptRecord>> {
        inline::all(
            self.tx.raw(),
            sqlite_q::ATTEMPTS,
            rusqlite::params![self.tenant, payment_id],
            |row| {
                Ok(PaymentAttemptRecord {
                    attempt: row.get(0)?,
                    kind: row.get(1)?,
                    idempotency_key: row.get(2)?,
                    outcome: row.get(3)?,
                    pg_code: row.get(4)?,
                    latency_ms: row.get(5)?,
                    created_at: row.get(6)?,
                })
            },
        )
    }

    async fn request_void(
        &mut self,
        payment_id: &str,
        now: i64,
        next_check_at: i64,
    ) -> Result<Option<i64>> {
        sqlite_q::request_void(&mut *self.tx, &self.tenant, payment_id, now, next_check_at).await
    }

    async fn request_capture(&mut self, payment_id: &str, at: Option<i64>) -> Result<Option<i64>> {
        inline::optional(
            self.tx.raw(),
            sqlite_q::REQUEST_CAPTURE,
            rusqlite::params![self.tenant, payment_id, at],
            |row| row.get(0),
        )
    }

    async fn claim_due_payments(
        &mut self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<PaymentRecord>> {
        sqlite_q::claim_due_payments(&mut *self.tx, &self.tenant, now, lease_until, limit).await
    }

    async fn insert_payment(&mut self, p: &NewPayment) -> Result<()> {
        inline::execute(
            self.tx.raw(),
            sqlite_q::INSERT_PAYMENT,
            rusqlite::params![
                self.tenant,
                p.payment_id,
                p.order_id,
                p.customer_id,
                p.amount,
                p.currency,
                p.approval_key,
                p.now,
                p.next_check_at,
                p.pg_payment_key,
                p.capture_mode,
            ],
        )?;
        Ok(())
    }

    async fn payment_for_update(&mut self, payment_id: &str) -> Result<Option<PaymentRecord>> {
        let sql = format!(
            "{} WHERE tenant_id = $1 AND payment_id = $2",
            sqlite_q::PAYMENT_COLUMNS
        );
        inline::optional(
            self.tx.raw(),
            &sql,
            rusqlite::params![self.tenant, payment_id],
            payment_of_row,
        )
    }

    async fn active_payment_of_order(&mut self, order_id: &str) -> Result<Option<PaymentRecord>> {
        let sql = format!(
            "{} {}",
            sqlite_q::PAYMENT_COLUMNS,
            sqlite_q::ACTIVE_OF_ORDER
        );
        inline::optional(
            self.tx.raw(),
            &sql,
            rusqlite::params![self.tenant, order_id],
            payment_of_row,
        )
    }

    async fn update_payment(&mut self, u: &PaymentUpdate) -> Result<Option<i64>> {
        let (code, message) = match &u.failure {
            Some((code, message)) => (Some(code.as_str()), Some(message.as_str())),
            None => (None, None),
        };
        inline::optional(
            self.tx.raw(),
            sqlite_q::UPDATE_PAYMENT,
            rusqlite::params![
                self.tenant,
                u.payment_id,
                u.from.0,
                u.from.1,
                u.status,
                u.pg_payment_key,
                u.refunded,
                code,
                message,
                u.now,
                u.next_check_at,
                u.checks,
                u.flagged_at,
            ],
            |row| row.get(0),
        )
    }

    async fn reschedule_payment(
        &mut self,
        payment_id: &str,
        next_check_at: Option<i64>,
        checks: i64,
        flagged_at: Option<i64>,
    ) -> Result<()> {
        sqlite_q::reschedule_payment(
            &mut *self.tx,
            &self.tenant,
            payment_id,
            next_check_at,
            checks,
            flagged_at,
        )
        .await
    }

    async fn record_payment_attempt(
        &mut self,
        payment_id: &str,
        a: &PaymentAttemptRecord,
    ) -> Result<i64> {
        inline::optional(
            self.tx.raw(),
            sqlite_q::RECORD_ATTEMPT,
            rusqlite::params![
                self.tenant,
                payment_id,
                a.kind,
                a.idempotency_key,
                a.outcome,
                a.pg_code,
                a.latency_ms,
                a.created_at,
            ],
            |row| row.get(0),
        )?
        .ok_or_else(|| StoreError::Database("the attempt's insert returned no row".into()))
    }
}

/// A payment from a row of `PAYMENT_COLUMNS`.
fn payment_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PaymentRecord> {
    Ok(PaymentRecord {
        payment_id: row.get(0)?,
        order_id: row.get(1)?,
        customer_id: row.get(2)?,
        amount: row.get(3)?,
        currency: row.get(4)?,
        status: row.get(5)?,
        approval_key: row.get(6)?,
        pg_payment_key: row.get(7)?,
        refunded: row.get(8)?,
        failure_code: row.get(9)?,
        failure_message: row.get(10)?,
        next_check_at: row.get(11)?,
        checks: row.get(12)?,
        flagged_at: row.get(13)?,
        void_requested_at: row.get(14)?,
        capture_requested_at: row.get(15)?,
        capture_mode: row.get(16)?,
        version: row.get(17)?,
        created_at: row.get(18)?,
        updated_at: row.get(19)?,
    })
}

impl PaymentTx for Tx {
    async fn attempts_in_tx(&mut self, payment_id: &str) -> Result<Vec<PaymentAttemptRecord>> {
        dispatch_tx!(self, t => t.attempts_in_tx(payment_id).await)
    }

    async fn request_void(
        &mut self,
        payment_id: &str,
        now: i64,
        next_check_at: i64,
    ) -> Result<Option<i64>> {
        dispatch_tx!(self, t => t.request_void(payment_id, now, next_check_at).await)
    }

    async fn request_capture(&mut self, payment_id: &str, at: Option<i64>) -> Result<Option<i64>> {
        dispatch_tx!(self, t => t.request_capture(payment_id, at).await)
    }

    async fn claim_due_payments(
        &mut self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<PaymentRecord>> {
        dispatch_tx!(self, t => t.claim_due_payments(now, lease_until, limit).await)
    }

    async fn insert_payment(&mut self, payment: &NewPayment) -> Result<()> {
        dispatch_tx!(self, t => t.insert_payment(payment).await)
    }

    async fn payment_for_update(&mut self, payment_id: &str) -> Result<Option<PaymentRecord>> {
        dispatch_tx!(self, t => t.payment_for_update(payment_id).await)
    }

    async fn active_payment_of_order(&mut self, order_id: &str) -> Result<Option<PaymentRecord>> {
        dispatch_tx!(self, t => t.active_payment_of_order(order_id).await)
    }

    async fn update_payment(&mut self, update: &PaymentUpdate) -> Result<Option<i64>> {
        dispatch_tx!(self, t => t.update_payment(update).await)
    }

    async fn reschedule_payment(
        &mut self,
        payment_id: &str,
        next_check_at: Option<i64>,
        checks: i64,
        flagged_at: Option<i64>,
    ) -> Result<()> {
        dispatch_tx!(self, t => t.reschedule_payment(payment_id, next_check_at, checks, flagged_at).await)
    }

    async fn record_payment_attempt(
        &mut self,
        payment_id: &str,
        attempt: &PaymentAttemptRecord,
    ) -> Result<i64> {
        dispatch_tx!(self, t => t.record_payment_attempt(payment_id, attempt).await)
    }
}

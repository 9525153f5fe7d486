//! Subscriptions: the row, its guarded writes and the scheduler's scan,
//! both backends from one macro (see [`super::queries`] for why a macro).
//!
//! Every write is guarded on the version the caller read: two schedulers
//! (or a scheduler and an API call) that priced the same period can never
//! both apply it; the loser sees `false` and leaves the row alone.

use std::future::Future;

use super::error::Result;
use super::pg_pool::pg_read;
use super::postgres::{PgStore, PgTx};
use super::sqlite::{SqliteStore, SqliteTx};
use super::{Store, Tx};

/// A subscription row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SubscriptionRecord {
    /// Its id.
    pub subscription_id: String,
    /// The subscriber.
    pub customer_id: String,
    /// The plan in force.
    pub plan_id: String,
    /// The plan scheduled for the next period.
    pub pending_plan_id: Option<String>,
    /// `TRIALING`, `ACTIVE`, `PAST_DUE`, `CANCELLED`, `EXPIRED`.
    pub status: String,
    /// Current period (the trial while trialing), ms since the epoch.
    pub period_start: i64,
    /// Its end; the scheduler acts when it is reached.
    pub period_end: i64,
    /// The billing anchor (start of the first paid period).
    pub anchor: Option<i64>,
    /// Expires at the period end instead of renewing.
    pub cancel_at_period_end: bool,
    /// The tenant's metadata (JSON object).
    pub metadata: String,
    /// +1 per history row.
    pub version: i64,
    /// Created (ms since the epoch).
    pub created_at: i64,
    /// Last changed.
    pub updated_at: i64,
}

/// Reads outside a transaction.
pub trait SubscriptionQueries: Send + Sync {
    /// One subscription of the tenant.
    fn subscription(
        &self,
        tenant: &str,
        subscription_id: &str,
    ) -> impl Future<Output = Result<Option<SubscriptionRecord>>> + Send;

    /// Live subscriptions (TRIALING, ACTIVE, PAST_DUE) whose period ended at
    /// or before `now`, as (id, period end), by period end then id, after
    /// the position `after` (keyset paging: a page of subscriptions that
    /// stay due, e.g. past due ones, cannot starve the rest).
    fn due_subscriptions(
        &self,
        tenant: &str,
        now: i64,
        after: Option<&(String, i64)>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<(String, i64)>>> + Send;
}

/// Writes inside the tenant's transaction.
pub trait SubscriptionTx: Send {
    /// The subscription, locked until the transaction ends. With
    /// `skip_locked` (the scheduler) a row another transaction holds is
    /// answered `None` on PostgreSQL instead of waited for.
    fn lock_subscription(
        &mut self,
        subscription_id: &str,
        skip_locked: bool,
    ) -> impl Future<Output = Result<Option<SubscriptionRecord>>> + Send;

    /// Inserts a new subscription.
    fn insert_subscription(
        &mut self,
        record: &SubscriptionRecord,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Writes `record` only if the row is still at `expected_version`;
    /// `false` when someone else changed it first.
    fn update_subscription(
        &mut self,
        record: &SubscriptionRecord,
        expected_version: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
}

macro_rules! subscription_queries {
    (db = $db:ty, for_update = $for_update:literal, skip_locked = $skip_locked:literal) => {
        use super::super::error::Result;
        use super::SubscriptionRecord;

        type Db = $db;

        const COLUMNS: &str = "subscription_id, customer_id, plan_id, pending_plan_id, status, \
             period_start, period_end, anchor, cancel_at_period_end, metadata, version, \
             created_at, updated_at";

        pub(crate) async fn subscription<'e, E>(
            ex: E,
            tenant: &str,
            subscription_id: &str,
            lock: &str,
        ) -> Result<Option<SubscriptionRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "SELECT {COLUMNS} FROM subscriptions \
                 WHERE tenant_id = $1 AND subscription_id = $2{lock}"
            );
            Ok(sqlx::query_as::<_, SubscriptionRecord>(&sql)
                .bind(tenant)
                .bind(subscription_id)
                .fetch_optional(ex)
                .await?)
        }

        pub(crate) const FOR_UPDATE: &str = $for_update;
        pub(crate) const SKIP_LOCKED: &str = $skip_locked;

        pub(crate) async fn due<'e, E>(
            ex: E,
            tenant: &str,
            now: i64,
            after: Option<&(String, i64)>,
            limit: i64,
        ) -> Result<Vec<(String, i64)>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let (after_id, after_end) = after.map_or(("", i64::MIN), |(id, end)| (id.as_str(), *end));
            Ok(sqlx::query_as::<_, (String, i64)>(
                "SELECT subscription_id, period_end FROM subscriptions \
                 WHERE tenant_id = $1 AND period_end <= $2 \
                   AND status IN ('TRIALING', 'ACTIVE', 'PAST_DUE') \
                   AND (period_end > $3 OR (period_end = $3 AND subscription_id > $4)) \
                 ORDER BY period_end, subscription_id LIMIT $5",
            )
            .bind(tenant)
            .bind(now)
            .bind(after_end)
            .bind(after_id)
            .bind(limit)
            .fetch_all(ex)
            .await?)
        }

        pub(crate) async fn insert<'e, E>(
            ex: E,
            tenant: &str,
            r: &SubscriptionRecord,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "INSERT INTO subscriptions (tenant_id, subscription_id, customer_id, plan_id, \
                   pending_plan_id, status, period_start, period_end, anchor, \
                   cancel_at_period_end, metadata, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(tenant)
            .bind(&r.subscription_id)
            .bind(&r.customer_id)
            .bind(&r.plan_id)
            .bind(&r.pending_plan_id)
            .bind(&r.status)
            .bind(r.period_start)
            .bind(r.period_end)
            .bind(r.anchor)
            .bind(r.cancel_at_period_end)
            .bind(&r.metadata)
            .bind(r.version)
            .bind(r.created_at)
            .bind(r.updated_at)
            .execute(ex)
            .await?;
            Ok(())
        }

        pub(crate) async fn update<'e, E>(
            ex: E,
            tenant: &str,
            r: &SubscriptionRecord,
            expected_version: i64,
        ) -> Result<bool>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let done = sqlx::query(
                "UPDATE subscriptions SET plan_id = $3, pending_plan_id = $4, status = $5, \
                   period_start = $6, period_end = $7, anchor = $8, cancel_at_period_end = $9, \
                   version = $10, updated_at = $11 \
                 WHERE tenant_id = $1 AND subscription_id = $2 AND version = $12",
            )
            .bind(tenant)
            .bind(&r.subscription_id)
            .bind(&r.plan_id)
            .bind(&r.pending_plan_id)
            .bind(&r.status)
            .bind(r.period_start)
            .bind(r.period_end)
            .bind(r.anchor)
            .bind(r.cancel_at_period_end)
            .bind(r.version)
            .bind(r.updated_at)
            .bind(expected_version)
            .execute(ex)
            .await?;
            Ok(done.rows_affected() == 1)
        }
    };
}

mod sqlite_q {
    // SQLite's one writer already excludes every other write transaction.
    subscription_queries!(db = sqlx::Sqlite, for_update = "", skip_locked = "");
}

mod pg_q {
    subscription_queries!(
        db = sqlx::Postgres,
        for_update = " FOR UPDATE",
        skip_locked = " FOR UPDATE SKIP LOCKED"
    );
}

impl SubscriptionQueries for Store {
    async fn subscription(
        &self,
        tenant: &str,
        subscription_id: &str,
    ) -> Result<Option<SubscriptionRecord>> {
        dispatch!(self, s => s.subscription(tenant, subscription_id).await)
    }

    async fn due_subscriptions(
        &self,
        tenant: &str,
        now: i64,
        after: Option<&(String, i64)>,
        limit: i64,
    ) -> Result<Vec<(String, i64)>> {
        dispatch!(self, s => s.due_subscriptions(tenant, now, after, limit).await)
    }
}

impl SubscriptionQueries for SqliteStore {
    async fn subscription(
        &self,
        tenant: &str,
        subscription_id: &str,
    ) -> Result<Option<SubscriptionRecord>> {
        sqlite_q::subscription(&self.reader, tenant, subscription_id, "").await
    }

    async fn due_subscriptions(
        &self,
        tenant: &str,
        now: i64,
        after: Option<&(String, i64)>,
        limit: i64,
    ) -> Result<Vec<(String, i64)>> {
        sqlite_q::due(&self.reader, tenant, now, after, limit).await
    }
}

impl SubscriptionQueries for PgStore {
    async fn subscription(
        &self,
        tenant: &str,
        subscription_id: &str,
    ) -> Result<Option<SubscriptionRecord>> {
        pg_read!(self.db, |conn| pg_q::subscription(
            conn,
            tenant,
            subscription_id,
            ""
        ))
    }

    async fn due_subscriptions(
        &self,
        tenant: &str,
        now: i64,
        after: Option<&(String, i64)>,
        limit: i64,
    ) -> Result<Vec<(String, i64)>> {
        pg_read!(self.db, |conn| pg_q::due(conn, tenant, now, after, limit))
    }
}

impl SubscriptionTx for Tx {
    async fn lock_subscription(
        &mut self,
        subscription_id: &str,
        skip_locked: bool,
    ) -> Result<Option<SubscriptionRecord>> {
        dispatch_tx!(self, t => t.lock_subscription(subscription_id, skip_locked).await)
    }

    async fn insert_subscription(&mut self, record: &SubscriptionRecord) -> Result<()> {
        dispatch_tx!(self, t => t.insert_subscription(record).await)
    }

    async fn update_subscription(
        &mut self,
        record: &SubscriptionRecord,
        expected_version: i64,
    ) -> Result<bool> {
        dispatch_tx!(self, t => t.update_subscription(record, expected_version).await)
    }
}

impl SubscriptionTx for SqliteTx {
    async fn lock_subscription(
        &mut self,
        subscription_id: &str,
        skip_locked: bool,
    ) -> Result<Option<SubscriptionRecord>> {
        let lock = if skip_locked {
            sqlite_q::SKIP_LOCKED
        } else {
            sqlite_q::FOR_UPDATE
        };
        sqlite_q::subscription(&mut *self.tx, &self.tenant, subscription_id, lock).await
    }

    async fn insert_subscription(&mut self, record: &SubscriptionRecord) -> Result<()> {
        sqlite_q::insert(&mut *self.tx, &self.tenant, record).await
    }

    async fn update_subscription(
        &mut self,
        record: &SubscriptionRecord,
        expected_version: i64,
    ) -> Result<bool> {
        sqlite_q::update(&mut *self.tx, &self.tenant, record, expected_version).await
    }
}

impl SubscriptionTx for PgTx {
    async fn lock_subscription(
        &mut self,
        subscription_id: &str,
        skip_locked: bool,
    ) -> Result<Option<SubscriptionRecord>> {
        let lock = if skip_locked {
            pg_q::SKIP_LOCKED
        } else {
            pg_q::FOR_UPDATE
        };
        pg_q::subscription(&mut *self.tx, &self.tenant, subscription_id, lock).await
    }

    async fn insert_subscription(&mut self, record: &SubscriptionRecord) -> Result<()> {
        pg_q::insert(&mut *self.tx, &self.tenant, record).await
    }

    async fn update_subscription(
        &mut self,
        record: &SubscriptionRecord,
        expected_version: i64,
    ) -> Result<bool> {
        pg_q::update(&mut *self.tx, &self.tenant, record, expected_version).await
    }
}

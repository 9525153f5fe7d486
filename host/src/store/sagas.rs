//! Order sagas (`sagas`): one row per order paid through the confirm API,
//! written in the same transaction as each step's effect.
//!
//! The SQL is written once in `saga_queries!` and compiled for each
//! backend (see [`super::queries`] for why a macro).

use std::future::Future;

use super::error::Result;
use super::pg_pool::pg_read;
use super::postgres::PgTx;
use super::sqlite::SqliteTx;
use super::sqlite_inline as inline;
use super::{PgStore, SqliteStore, Store, Tx};

/// A saga as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SagaRecord {
    /// The order it runs for (its id).
    pub order_id: String,
    /// Who pays.
    pub customer_id: String,
    /// The domain's state name (`RUNNING`, …).
    pub state: String,
    /// The payment of the current attempt.
    pub payment_id: Option<String>,
    /// Forward steps done, comma-separated.
    pub steps_done: String,
    /// When the tenant's service must have answered.
    pub service_deadline_at: Option<i64>,
    /// When the orchestrator next looks at it.
    pub next_run_at: Option<i64>,
    /// PG calls of the current phase that failed: capture tries while
    /// `COMPLETING` (kept once `COMPLETED`), compensation runs from
    /// `COMPENSATING` on (counted afresh when a refused capture starts the
    /// compensation).
    pub attempts: i64,
    /// Why the last step or compensation failed.
    pub last_error: Option<String>,
    /// +1 per state change (each has a history row).
    pub version: i64,
    /// Created (ms since the epoch).
    pub created_at: i64,
    /// Last changed.
    pub updated_at: i64,
}

impl SagaRecord {
    /// Failed capture tries and failed compensation runs: `attempts`, by
    /// the phase the saga is in.
    pub fn attempts_by_phase(&self) -> (i64, i64) {
        match self.state.as_str() {
            "COMPLETING" | "COMPLETED" => (self.attempts, 0),
            _ => (0, self.attempts),
        }
    }
}

/// Reads outside a transaction.
pub trait SagaQueries: Send + Sync {
    /// An order's saga.
    fn saga(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> impl Future<Output = Result<Option<SagaRecord>>> + Send;

    /// How many of the tenant's sagas are in `state` (`sagas_state_idx`).
    fn saga_count(&self, tenant: &str, state: &str) -> impl Future<Output = Result<i64>> + Send;

    /// The tenant's sagas in `state` (any state: `None`), most recently
    /// changed first.
    fn sagas(
        &self,
        tenant: &str,
        state: Option<&str>,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<SagaRecord>>> + Send;
}

/// Writes inside a transaction.
pub trait SagaTx: Send {
    /// The order's saga, locked until the transaction ends.
    fn saga_for_update(
        &mut self,
        order_id: &str,
    ) -> impl Future<Output = Result<Option<SagaRecord>>> + Send;

    /// Stores a new saga.
    fn insert_saga(&mut self, saga: &SagaRecord) -> impl Future<Output = Result<()>> + Send;

    /// Writes `saga` if the row is still at `expected_version`; `false`
    /// when it moved meanwhile.
    fn update_saga(
        &mut self,
        saga: &SagaRecord,
        expected_version: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Claims up to `limit` sagas due at `now` by moving their next run to
    /// `lease_until` (skipping rows another host's claim holds, on
    /// PostgreSQL; SQLite has one writer).
    fn claim_due_sagas(
        &mut self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<SagaRecord>>> + Send;
}

macro_rules! saga_queries {
    (db = $db:ty, for_update = $for_update:literal, skip_locked = $skip_locked:literal) => {
        use super::*;

        type Db = $db;

        pub(super) const COLUMNS: &str = "order_id, customer_id, state, payment_id, steps_done, \
             service_deadline_at, next_run_at, attempts, last_error, version, created_at, \
             updated_at";

        pub(super) const INSERT: &str = "INSERT INTO sagas (tenant_id, order_id, customer_id, \
             state, payment_id, steps_done, service_deadline_at, next_run_at, attempts, \
             last_error, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

        pub(super) const UPDATE: &str = "UPDATE sagas SET state = $3, payment_id = $4, \
             steps_done = $5, service_deadline_at = $6, next_run_at = $7, attempts = $8, \
             last_error = $9, version = $10, updated_at = $11 \
             WHERE tenant_id = $1 AND order_id = $2 AND version = $12";

        pub(super) async fn saga<'e, E>(
            ex: E,
            tenant: &str,
            order_id: &str,
            lock: bool,
        ) -> Result<Option<SagaRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "SELECT {COLUMNS} FROM sagas WHERE tenant_id = $1 AND order_id = $2{}",
                if lock { $for_update } else { "" }
            );
            Ok(sqlx::query_as::<_, SagaRecord>(&sql)
                .bind(tenant)
                .bind(order_id)
                .fetch_optional(ex)
                .await?)
        }

        pub(super) async fn sagas<'e, E>(
            ex: E,
            tenant: &str,
            state: Option<&str>,
            limit: i64,
        ) -> Result<Vec<SagaRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "SELECT {COLUMNS} FROM sagas WHERE tenant_id = $1 \
                 AND ($2 IS NULL OR state = $2) ORDER BY updated_at DESC, order_id LIMIT $3"
            );
            Ok(sqlx::query_as::<_, SagaRecord>(&sql)
                .bind(tenant)
                .bind(state)
                .bind(limit)
                .fetch_all(ex)
                .await?)
        }

        pub(super) async fn saga_count<'e, E>(ex: E, tenant: &str, state: &str) -> Result<i64>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM sagas WHERE tenant_id = $1 AND state = $2",
            )
            .bind(tenant)
            .bind(state)
            .fetch_one(ex)
            .await?)
        }

        // SQLite runs it inline (`sqlite_inline`).
        #[allow(dead_code)]
        pub(super) async fn insert_saga<'e, E>(ex: E, tenant: &str, s: &SagaRecord) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(INSERT)
                .bind(tenant)
                .bind(&s.order_id)
                .bind(&s.customer_id)
                .bind(&s.state)
                .bind(&s.payment_id)
                .bind(&s.steps_done)
                .bind(s.service_deadline_at)
                .bind(s.next_run_at)
                .bind(s.attempts)
                .bind(&s.last_error)
                .bind(s.version)
                .bind(s.created_at)
                .bind(s.updated_at)
                .execute(ex)
                .await?;
            Ok(())
        }

        // SQLite runs it inline (`sqlite_inline`).
        #[allow(dead_code)]
        pub(super) async fn update_saga<'e, E>(
            ex: E,
            tenant: &str,
            s: &SagaRecord,
            expected_version: i64,
        ) -> Result<bool>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let done = sqlx::query(UPDATE)
                .bind(tenant)
                .bind(&s.order_id)
                .bind(&s.state)
                .bind(&s.payment_id)
                .bind(&s.steps_done)
                .bind(s.service_deadline_at)
                .bind(s.next_run_at)
                .bind(s.attempts)
                .bind(&s.last_error)
                .bind(s.version)
                .bind(s.updated_at)
                .bind(expected_version)
                .execute(ex)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        pub(super) async fn claim_due_sagas<'e, E>(
            ex: E,
            tenant: &str,
            now: i64,
            lease_until: i64,
            limit: i64,
        ) -> Result<Vec<SagaRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "UPDATE sagas SET next_run_at = $3 \
                 WHERE tenant_id = $1 AND order_id IN ( \
                   SELECT order_id FROM sagas WHERE tenant_id = $1 \
                     AND next_run_at IS NOT NULL AND next_run_at <= $2 \
                   ORDER BY next_run_at, order_id LIMIT $4{}) \
                 RETURNING {COLUMNS}",
                $skip_locked
            );
            let mut claimed = sqlx::query_as::<_, SagaRecord>(&sql)
                .bind(tenant)
                .bind(now)
                .bind(lease_until)
                .bind(limit)
                .fetch_all(ex)
                .await?;
            // RETURNING's order is unspecified.
            claimed.sort_by(|a, b| (a.created_at, &a.order_id).cmp(&(b.created_at, &b.order_id)));
            Ok(claimed)
        }
    };
}

mod sqlite_q {
    saga_queries!(db = sqlx::Sqlite, for_update = "", skip_locked = "");
}

mod pg_q {
    saga_queries!(
        db = sqlx::Postgres,
        for_update = " FOR UPDATE",
        skip_locked = " FOR UPDATE SKIP LOCKED"
    );
}

impl SagaQueries for SqliteStore {
    async fn saga_count(&self, tenant: &str, state: &str) -> Result<i64> {
        sqlite_q::saga_count(&self.reader, tenant, state).await
    }

    async fn saga(&self, tenant: &str, order_id: &str) -> Result<Option<SagaRecord>> {
        sqlite_q::saga(&self.reader, tenant, order_id, false).await
    }

    async fn sagas(
        &self,
        tenant: &str,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SagaRecord>> {
        sqlite_q::sagas(&self.reader, tenant, state, limit).await
    }
}

impl SagaQueries for PgStore {
    async fn saga_count(&self, tenant: &str, state: &str) -> Result<i64> {
        pg_read!(self.db, |conn| pg_q::saga_count(conn, tenant, state))
    }

    async fn saga(&self, tenant: &str, order_id: &str) -> Result<Option<SagaRecord>> {
        pg_read!(self.db, |conn| pg_q::saga(conn, tenant, order_id, false))
    }

    async fn sagas(
        &self,
        tenant: &str,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SagaRecord>> {
        pg_read!(self.db, |conn| pg_q::sagas(conn, tenant, state, limit))
    }
}

impl SagaQueries for Store {
    async fn saga_count(&self, tenant: &str, state: &str) -> Result<i64> {
        dispatch!(self, s => s.saga_count(tenant, state).await)
    }

    async fn saga(&self, tenant: &str, order_id: &str) -> Result<Option<SagaRecord>> {
        dispatch!(self, s => s.saga(tenant, order_id).await)
    }

    async fn sagas(
        &self,
        tenant: &str,
        state: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SagaRecord>> {
        dispatch!(self, s => s.sagas(tenant, state, limit).await)
    }
}

/// PostgreSQL: every statement through sqlx.
impl SagaTx for PgTx {
    async fn saga_for_update(&mut self, order_id: &str) -> Result<Option<SagaRecord>> {
        pg_q::saga(&mut *self.tx, &self.tenant, order_id, true).await
    }

    async fn insert_saga(&mut self, saga: &SagaRecord) -> Result<()> {
        pg_q::insert_saga(&mut *self.tx, &self.tenant, saga).await
    }

    async fn update_saga(&mut self, saga: &SagaRecord, expected_version: i64) -> Result<bool> {
        pg_q::update_saga(&mut *self.tx, &self.tenant, saga, expected_version).await
    }

    async fn claim_due_sagas(
        &mut self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<SagaRecord>> {
        pg_q::claim_due_sagas(&mut *self.tx, &self.tenant, now, lease_until, limit).await
    }
}

/// SQLite: the saga's statements inline on the writer (`sqlite_inline`).
impl SagaTx for SqliteTx {
    async fn saga_for_update(&mut self, order_id: &str) -> Result<Option<SagaRecord>> {
        let sql = format!(
            "SELECT {} FROM sagas WHERE tenant_id = $1 AND order_id = $2",
            sqlite_q::COLUMNS
        );
        inline::optional(
            self.tx.raw(),
            &sql,
            rusqlite::params![self.tenant, order_id],
            saga_of_row,
        )
    }

    async fn insert_saga(&mut self, s: &SagaRecord) -> Result<()> {
        inline::execute(
            self.tx.raw(),
            sqlite_q::INSERT,
            rusqlite::params![
                self.tenant,
                s.order_id,
                s.customer_id,
                s.state,
                s.payment_id,
                s.steps_done,
                s.service_deadline_at,
                s.next_run_at,
                s.attempts,
                s.last_error,
                s.version,
                s.created_at,
                s.updated_at,
            ],
        )?;
        Ok(())
    }

    async fn update_saga(&mut self, s: &SagaRecord, expected_version: i64) -> Result<bool> {
        let changed = inline::execute(
            self.tx.raw(),
            sqlite_q::UPDATE,
            rusqlite::params![
                self.tenant,
                s.order_id,
                s.state,
                s.payment_id,
                s.steps_done,
                s.service_deadline_at,
                s.next_run_at,
                s.attempts,
                s.last_error,
                s.version,
                s.updated_at,
                expected_version,
            ],
        )?;
        Ok(changed == 1)
    }

    async fn claim_due_sagas(
        &mut self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<SagaRecord>> {
        sqlite_q::claim_due_sagas(&mut *self.tx, &self.tenant, now, lease_until, limit).await
    }
}

/// A saga from a row of `COLUMNS`.
fn saga_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SagaRecord> {
    Ok(SagaRecord {
        order_id: row.get(0)?,
        customer_id: row.get(1)?,
        state: row.get(2)?,
        payment_id: row.get(3)?,
        steps_done: row.get(4)?,
        service_deadline_at: row.get(5)?,
        next_run_at: row.get(6)?,
        attempts: row.get(7)?,
        last_error: row.get(8)?,
        version: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
    })
}

impl SagaTx for Tx {
    async fn saga_for_update(&mut self, order_id: &str) -> Result<Option<SagaRecord>> {
        dispatch_tx!(self, t => t.saga_for_update(order_id).await)
    }

    async fn insert_saga(&mut self, saga: &SagaRecord) -> Result<()> {
        dispatch_tx!(self, t => t.insert_saga(saga).await)
    }

    async fn update_saga(&mut self, saga: &SagaRecord, expected_version: i64) -> Result<bool> {
        dispatch_tx!(self, t => t.update_saga(saga, expected_version).await)
    }

    async fn claim_due_sagas(
        &mut self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<SagaRecord>> {
        dispatch_tx!(self, t => t.claim_due_sagas(now, lease_until, limit).await)
    }
}

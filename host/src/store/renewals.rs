//! Stored cards (`payment_methods`: the PG's billing keys) and renewal
//! orders charged to them with their dunning (`renewal_charges`).
//!
//! The SQL is written once in `renewal_queries!` and compiled for each
//! backend (see [`super::queries`] for why a macro).

use std::future::Future;

use super::error::Result;
use super::pg_pool::pg_read;
use super::postgres::PgTx;
use super::sqlite::SqliteTx;
use super::{PgStore, SqliteStore, Store, Tx};

/// A stored card.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PaymentMethodRecord {
    /// Its id.
    pub method_id: String,
    /// Whose.
    pub customer_id: String,
    /// The PG's billing key.
    pub billing_key: String,
    /// The merchant's customer key the PG issued it to.
    pub customer_key: String,
    /// What the PG shows of the card.
    pub label: Option<String>,
    /// Stored (ms since the epoch).
    pub created_at: i64,
    /// Removed, if it was.
    pub removed_at: Option<i64>,
}

/// A renewal order charged to a stored card.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RenewalChargeRecord {
    /// The renewal's order.
    pub order_id: String,
    /// The subscription it renews.
    pub subscription_id: String,
    /// Who pays.
    pub customer_id: String,
    /// The period it pays for.
    pub period_start: i64,
    /// Its end.
    pub period_end: i64,
    /// `DUE`, `PAID` or `FAILED`.
    pub status: String,
    /// Charges that failed so far.
    pub attempts: i64,
    /// When the next charge is due.
    pub next_attempt_at: Option<i64>,
    /// Why the last charge failed.
    pub last_error: Option<String>,
    /// Created (ms since the epoch).
    pub created_at: i64,
}

/// Reads outside a transaction.
pub trait RenewalQueries: Send + Sync {
    /// A customer's stored cards (removed ones too), oldest first.
    fn payment_methods(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> impl Future<Output = Result<Vec<PaymentMethodRecord>>> + Send;

    /// The subscription's renewal charge still `DUE`, if any.
    fn due_renewal_charge_of(
        &self,
        tenant: &str,
        subscription_id: &str,
    ) -> impl Future<Output = Result<Option<RenewalChargeRecord>>> + Send;

    /// A renewal order's charge, if it is charged to a card.
    fn renewal_charge(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> impl Future<Output = Result<Option<RenewalChargeRecord>>> + Send;
}

/// Writes inside a transaction.
pub trait RenewalTx: Send {
    /// Stores a card.
    fn insert_payment_method(
        &mut self,
        method: &PaymentMethodRecord,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Marks a customer's card removed; whether it was there to remove.
    fn remove_payment_method(
        &mut self,
        customer_id: &str,
        method_id: &str,
        now: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The customer's newest card not removed.
    fn active_payment_method(
        &mut self,
        customer_id: &str,
    ) -> impl Future<Output = Result<Option<PaymentMethodRecord>>> + Send;

    /// Puts a renewal order up for a card charge, due at `due_at`.
    fn insert_renewal_charge(
        &mut self,
        charge: &RenewalChargeRecord,
        due_at: i64,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Claims up to `limit` charges due at `now` by moving their next
    /// attempt to `lease_until` (skipping rows another host's claim holds,
    /// on PostgreSQL; SQLite has one writer).
    fn claim_due_renewal_charges(
        &mut self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<RenewalChargeRecord>>> + Send;

    /// Records a charge's outcome.
    fn update_renewal_charge(
        &mut self,
        order_id: &str,
        status: &str,
        attempts: i64,
        next_attempt_at: Option<i64>,
        last_error: Option<&str>,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;
}

macro_rules! renewal_queries {
    (db = $db:ty, skip_locked = $skip_locked:literal) => {
        use super::*;

        type Db = $db;

        const METHOD_COLUMNS: &str = "SELECT method_id, customer_id, billing_key, customer_key, \
             label, created_at, removed_at FROM payment_methods";
        const CHARGE_COLUMNS: &str = "order_id, subscription_id, customer_id, period_start, \
             period_end, status, attempts, next_attempt_at, last_error, created_at";

        pub(super) async fn payment_methods<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
        ) -> Result<Vec<PaymentMethodRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "{METHOD_COLUMNS} WHERE tenant_id = $1 AND customer_id = $2 \
                 ORDER BY created_at, method_id"
            );
            Ok(sqlx::query_as::<_, PaymentMethodRecord>(&sql)
                .bind(tenant)
                .bind(customer_id)
                .fetch_all(ex)
                .await?)
        }

        pub(super) async fn active_payment_method<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
        ) -> Result<Option<PaymentMethodRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "{METHOD_COLUMNS} WHERE tenant_id = $1 AND customer_id = $2 \
                 AND removed_at IS NULL ORDER BY created_at DESC, method_id DESC LIMIT 1"
            );
            Ok(sqlx::query_as::<_, PaymentMethodRecord>(&sql)
                .bind(tenant)
                .bind(customer_id)
                .fetch_optional(ex)
                .await?)
        }

        pub(super) async fn renewal_charge<'e, E>(
            ex: E,
            tenant: &str,
            order_id: &str,
        ) -> Result<Option<RenewalChargeRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "SELECT {CHARGE_COLUMNS} FROM renewal_charges \
                 WHERE tenant_id = $1 AND order_id = $2"
            );
            Ok(sqlx::query_as::<_, RenewalChargeRecord>(&sql)
                .bind(tenant)
                .bind(order_id)
                .fetch_optional(ex)
                .await?)
        }

        pub(super) async fn due_renewal_charge_of<'e, E>(
            ex: E,
            tenant: &str,
            subscription_id: &str,
        ) -> Result<Option<RenewalChargeRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            // renewal_charges_one_due_key.
            let sql = format!(
                "SELECT {CHARGE_COLUMNS} FROM renewal_charges \
                 WHERE tenant_id = $1 AND subscription_id = $2 AND status = 'DUE'"
            );
            Ok(sqlx::query_as::<_, RenewalChargeRecord>(&sql)
                .bind(tenant)
                .bind(subscription_id)
                .fetch_optional(ex)
                .await?)
        }

        pub(super) async fn insert_payment_method<'e, E>(
            ex: E,
            tenant: &str,
            m: &PaymentMethodRecord,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "INSERT INTO payment_methods (tenant_id, method_id, customer_id, billing_key, \
                   customer_key, label, created_at, removed_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(tenant)
            .bind(&m.method_id)
            .bind(&m.customer_id)
            .bind(&m.billing_key)
            .bind(&m.customer_key)
            .bind(&m.label)
            .bind(m.created_at)
            .bind(m.removed_at)
            .execute(ex)
            .await?;
            Ok(())
        }

        pub(super) async fn remove_payment_method<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
            method_id: &str,
            now: i64,
        ) -> Result<bool>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let done = sqlx::query(
                "UPDATE payment_methods SET removed_at = $4 \
                 WHERE tenant_id = $1 AND customer_id = $2 AND method_id = $3 \
                   AND removed_at IS NULL",
            )
            .bind(tenant)
            .bind(customer_id)
            .bind(method_id)
            .bind(now)
            .execute(ex)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        pub(super) async fn insert_renewal_charge<'e, E>(
            ex: E,
            tenant: &str,
            c: &RenewalChargeRecord,
            due_at: i64,
            now: i64,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "INSERT INTO renewal_charges (tenant_id, order_id, subscription_id, customer_id, \
                   period_start, period_end, status, attempts, next_attempt_at, created_at, \
                   updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'DUE', 0, $7, $8, $8)",
            )
            .bind(tenant)
            .bind(&c.order_id)
            .bind(&c.subscription_id)
            .bind(&c.customer_id)
            .bind(c.period_start)
            .bind(c.period_end)
            .bind(due_at)
            .bind(now)
            .execute(ex)
            .await?;
            Ok(())
        }

        pub(super) async fn claim_due_renewal_charges<'e, E>(
            ex: E,
            tenant: &str,
            now: i64,
            lease_until: i64,
            limit: i64,
        ) -> Result<Vec<RenewalChargeRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "UPDATE renewal_charges SET next_attempt_at = $3 \
                 WHERE tenant_id = $1 AND order_id IN ( \
                   SELECT order_id FROM renewal_charges WHERE tenant_id = $1 \
                     AND next_attempt_at IS NOT NULL AND next_attempt_at <= $2 \
                   ORDER BY next_attempt_at, order_id LIMIT $4{}) \
                 RETURNING {CHARGE_COLUMNS}",
                $skip_locked
            );
            let mut claimed = sqlx::query_as::<_, RenewalChargeRecord>(&sql)
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

        pub(super) async fn update_renewal_charge<'e, E>(
            ex: E,
            tenant: &str,
            order_id: &str,
            (status, attempts, next_attempt_at, last_error): (&str, i64, Option<i64>, Option<&str>),
            now: i64,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "UPDATE renewal_charges SET status = $3, attempts = $4, next_attempt_at = $5, \
                   last_error = COALESCE($6, last_error), updated_at = $7 \
                 WHERE tenant_id = $1 AND order_id = $2",
            )
            .bind(tenant)
            .bind(order_id)
            .bind(status)
            .bind(attempts)
            .bind(next_attempt_at)
            .bind(last_error)
            .bind(now)
            .execute(ex)
            .await?;
            Ok(())
        }
    };
}

mod sqlite_q {
    renewal_queries!(db = sqlx::Sqlite, skip_locked = "");
}

mod pg_q {
    renewal_queries!(db = sqlx::Postgres, skip_locked = " FOR UPDATE SKIP LOCKED");
}

impl RenewalQueries for SqliteStore {
    async fn due_renewal_charge_of(
        &self,
        tenant: &str,
        subscription_id: &str,
    ) -> Result<Option<RenewalChargeRecord>> {
        sqlite_q::due_renewal_charge_of(&self.reader, tenant, subscription_id).await
    }

    async fn payment_methods(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> Result<Vec<PaymentMethodRecord>> {
        sqlite_q::payment_methods(&self.reader, tenant, customer_id).await
    }

    async fn renewal_charge(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> Result<Option<RenewalChargeRecord>> {
        sqlite_q::renewal_charge(&self.reader, tenant, order_id).await
    }
}

impl RenewalQueries for PgStore {
    async fn due_renewal_charge_of(
        &self,
        tenant: &str,
        subscription_id: &str,
    ) -> Result<Option<RenewalChargeRecord>> {
        pg_read!(self.db, |conn| pg_q::due_renewal_charge_of(
            conn,
            tenant,
            subscription_id
        ))
    }

    async fn payment_methods(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> Result<Vec<PaymentMethodRecord>> {
        pg_read!(self.db, |conn| pg_q::payment_methods(
            conn,
            tenant,
            customer_id
        ))
    }

    async fn renewal_charge(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> Result<Option<RenewalChargeRecord>> {
        pg_read!(self.db, |conn| pg_q::renewal_charge(conn, tenant, order_id))
    }
}

impl RenewalQueries for Store {
    async fn due_renewal_charge_of(
        &self,
        tenant: &str,
        subscription_id: &str,
    ) -> Result<Option<RenewalChargeRecord>> {
        dispatch!(self, s => s.due_renewal_charge_of(tenant, subscription_id).await)
    }

    async fn payment_methods(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> Result<Vec<PaymentMethodRecord>> {
        dispatch!(self, s => s.payment_methods(tenant, customer_id).await)
    }

    async fn renewal_charge(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> Result<Option<RenewalChargeRecord>> {
        dispatch!(self, s => s.renewal_charge(tenant, order_id).await)
    }
}

macro_rules! renewal_tx {
    ($ty:ty, $q:ident) => {
        impl RenewalTx for $ty {
            async fn insert_payment_method(&mut self, method: &PaymentMethodRecord) -> Result<()> {
                $q::insert_payment_method(&mut *self.tx, &self.tenant, method).await
            }

            async fn remove_payment_method(
                &mut self,
                customer_id: &str,
                method_id: &str,
                now: i64,
            ) -> Result<bool> {
                $q::remove_payment_method(&mut *self.tx, &self.tenant, customer_id, method_id, now)
                    .await
            }

            async fn active_payment_method(
                &mut self,
                customer_id: &str,
            ) -> Result<Option<PaymentMethodRecord>> {
                $q::active_payment_method(&mut *self.tx, &self.tenant, customer_id).await
            }

            async fn insert_renewal_charge(
                &mut self,
                charge: &RenewalChargeRecord,
                due_at: i64,
                now: i64,
            ) -> Result<()> {
                $q::insert_renewal_charge(&mut *self.tx, &self.tenant, charge, due_at, now).await
            }

            async fn claim_due_renewal_charges(
                &mut self,
                now: i64,
                lease_until: i64,
                limit: i64,
            ) -> Result<Vec<RenewalChargeRecord>> {
                $q::claim_due_renewal_charges(&mut *self.tx, &self.tenant, now, lease_until, limit)
                    .await
            }

            async fn update_renewal_charge(
                &mut self,
                order_id: &str,
                status: &str,
                attempts: i64,
                next_attempt_at: Option<i64>,
                last_error: Option<&str>,
                now: i64,
            ) -> Result<()> {
                $q::update_renewal_charge(
                    &mut *self.tx,
                    &self.tenant,
                    order_id,
                    (status, attempts, next_attempt_at, last_error),
                    now,
                )
                .await
            }
        }
    };
}

renewal_tx!(SqliteTx, sqlite_q);
renewal_tx!(PgTx, pg_q);

impl RenewalTx for Tx {
    async fn insert_payment_method(&mut self, method: &PaymentMethodRecord) -> Result<()> {
        dispatch_tx!(self, t => t.insert_payment_method(method).await)
    }

    async fn remove_payment_method(
        &mut self,
        customer_id: &str,
        method_id: &str,
        now: i64,
    ) -> Result<bool> {
        dispatch_tx!(self, t => t.remove_payment_method(customer_id, method_id, now).await)
    }

    async fn active_payment_method(
        &mut self,
        customer_id: &str,
    ) -> Result<Option<PaymentMethodRecord>> {
        dispatch_tx!(self, t => t.active_payment_method(customer_id).await)
    }

    async fn insert_renewal_charge(
        &mut self,
        charge: &RenewalChargeRecord,
        due_at: i64,
        now: i64,
    ) -> Result<()> {
        dispatch_tx!(self, t => t.insert_renewal_charge(charge, due_at, now).await)
    }

    async fn claim_due_renewal_charges(
        &mut self,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<RenewalChargeRecord>> {
        dispatch_tx!(self, t => t.claim_due_renewal_charges(now, lease_until, limit).await)
    }

    async fn update_renewal_charge(
        &mut self,
        order_id: &str,
        status: &str,
        attempts: i64,
        next_attempt_at: Option<i64>,
        last_error: Option<&str>,
        now: i64,
    ) -> Result<()> {
        dispatch_tx!(self, t => t
            .update_renewal_charge(order_id, status, attempts, next_attempt_at, last_error, now)
            .await)
    }
}

//! Credit expiry: finding grants whose time is up and taking what is left
//! of them off the balance, with the expiry row the statement shows.
//!
//! The SQL is written once in [`expiry_queries!`] and compiled for each
//! backend (see [`super::queries`] for why a macro).

use std::future::Future;

use super::error::Result;
use super::model::AccountAfter;
use super::pg_pool::pg_read;
use super::postgres::PgTx;
use super::sqlite::SqliteTx;
use super::{PgStore, SqliteStore, Store, Tx};

/// A grant whose time is up and that still holds credits.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DueGrant {
    /// The grant's id.
    pub grant_id: String,
    /// Whose credits.
    pub customer_id: String,
    /// Credits granted.
    pub credits: i64,
    /// Credits not spent yet.
    pub remaining: i64,
    /// When it lapsed (ms since the epoch).
    pub expires_at: i64,
}

/// What an expiry writes (decided by the domain's `CreditAccount::expire`).
#[derive(Debug, Clone)]
pub struct ExpireGrant {
    /// The expiry's id = its ledger transaction id.
    pub expiry_id: String,
    /// The grant.
    pub grant_id: String,
    /// The customer.
    pub customer_id: String,
    /// Credits that leave the balance, the grant and `expiring` (≤ the
    /// grant's remaining credits; 0 writes nothing).
    pub expired: i64,
    /// When (ms since the epoch).
    pub now: i64,
}

/// Reads for the expiry job.
pub trait CreditExpiryQueries: Send + Sync {
    /// Up to `limit` of the tenant's grants due at `now`, soonest first.
    fn due_grants(
        &self,
        tenant: &str,
        now: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<DueGrant>>> + Send;
}

/// Writes of the expiry job, inside a transaction.
pub trait CreditExpiryTx: Send {
    /// The grant, locked, if it is still due at `now` (another run may have
    /// expired it meanwhile).
    fn due_grant(
        &mut self,
        grant_id: &str,
        now: i64,
    ) -> impl Future<Output = Result<Option<DueGrant>>> + Send;

    /// Takes `expired` off the grant, the balance and `expiring`, and
    /// records the expiry. Returns the account after (`None` when nothing
    /// left the balance: credits still reserved stay on the grant).
    fn expire_grant(
        &mut self,
        expiry: &ExpireGrant,
    ) -> impl Future<Output = Result<Option<AccountAfter>>> + Send;
}

macro_rules! expiry_queries {
    (db = $db:ty, for_update = $for_update:literal) => {
        use super::*;

        type Db = $db;

        pub(super) async fn due_grants<'e, E>(
            ex: E,
            tenant: &str,
            now: i64,
            limit: i64,
        ) -> Result<Vec<DueGrant>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_as::<_, DueGrant>(
                "SELECT grant_id, customer_id, credits, remaining, expires_at FROM credit_grants \
                 WHERE tenant_id = $1 AND remaining > 0 AND expires_at <= $2 \
                 ORDER BY expires_at, grant_id LIMIT $3",
            )
            .bind(tenant)
            .bind(now)
            .bind(limit)
            .fetch_all(ex)
            .await?)
        }

        pub(super) async fn due_grant(
            conn: &mut <Db as sqlx::Database>::Connection,
            tenant: &str,
            grant_id: &str,
            now: i64,
        ) -> Result<Option<DueGrant>> {
            Ok(sqlx::query_as::<_, DueGrant>(concat!(
                "SELECT grant_id, customer_id, credits, remaining, expires_at FROM credit_grants \
                 WHERE tenant_id = $1 AND grant_id = $2 AND remaining > 0 AND expires_at <= $3",
                $for_update
            ))
            .bind(tenant)
            .bind(grant_id)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?)
        }

        pub(super) async fn expire_grant(
            conn: &mut <Db as sqlx::Database>::Connection,
            tenant: &str,
            expiry: &ExpireGrant,
        ) -> Result<Option<AccountAfter>> {
            if expiry.expired == 0 {
                // Everything left is reserved: nothing moves now; the grant
                // stays due and a later run takes what a release frees.
                return Ok(None);
            }
            sqlx::query(
                "UPDATE credit_grants SET remaining = remaining - $3 \
                 WHERE tenant_id = $1 AND grant_id = $2",
            )
            .bind(tenant)
            .bind(&expiry.grant_id)
            .bind(expiry.expired)
            .execute(&mut *conn)
            .await?;
            // The guard re-checks what the domain decided on the locked row:
            // never below the reserved credits.
            let after = sqlx::query_as::<_, (i64, i64, i64, i64)>(
                "UPDATE credit_accounts \
                 SET balance = balance - $3, expiring = expiring - $4, \
                     version = version + 1, updated_at = $5 \
                 WHERE tenant_id = $1 AND customer_id = $2 AND balance - reserved >= $3 \
                 RETURNING balance, reserved, spent_today, version",
            )
            .bind(tenant)
            .bind(&expiry.customer_id)
            .bind(expiry.expired)
            .bind(expiry.expired)
            .bind(expiry.now)
            .fetch_optional(&mut *conn)
            .await?;
            let Some((balance, reserved, spent_today, version)) = after else {
                return Err(super::super::error::StoreError::Database(format!(
                    "the account of {} no longer covers the expiry of grant {}",
                    expiry.customer_id, expiry.grant_id
                )));
            };
            sqlx::query(
                "INSERT INTO credit_expiries (tenant_id, expiry_id, grant_id, customer_id, \
                   credits, balance_after, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(tenant)
            .bind(&expiry.expiry_id)
            .bind(&expiry.grant_id)
            .bind(&expiry.customer_id)
            .bind(expiry.expired)
            .bind(balance)
            .bind(expiry.now)
            .execute(&mut *conn)
            .await?;
            Ok(Some(AccountAfter {
                balance,
                reserved,
                spent_today,
                version,
            }))
        }
    };
}

mod sqlite_q {
    expiry_queries!(db = sqlx::Sqlite, for_update = "");
}

mod pg_q {
    expiry_queries!(db = sqlx::Postgres, for_update = " FOR UPDATE");
}

impl CreditExpiryQueries for SqliteStore {
    async fn due_grants(&self, tenant: &str, now: i64, limit: i64) -> Result<Vec<DueGrant>> {
        sqlite_q::due_grants(&self.reader, tenant, now, limit).await
    }
}

impl CreditExpiryQueries for PgStore {
    async fn due_grants(&self, tenant: &str, now: i64, limit: i64) -> Result<Vec<DueGrant>> {
        pg_read!(self.db, |conn| pg_q::due_grants(conn, tenant, now, limit))
    }
}

impl CreditExpiryQueries for Store {
    async fn due_grants(&self, tenant: &str, now: i64, limit: i64) -> Result<Vec<DueGrant>> {
        dispatch!(self, s => s.due_grants(tenant, now, limit).await)
    }
}

impl CreditExpiryTx for SqliteTx {
    async fn due_grant(&mut self, grant_id: &str, now: i64) -> Result<Option<DueGrant>> {
        sqlite_q::due_grant(&mut self.tx, &self.tenant, grant_id, now).await
    }

    async fn expire_grant(&mut self, expiry: &ExpireGrant) -> Result<Option<AccountAfter>> {
        sqlite_q::expire_grant(&mut self.tx, &self.tenant, expiry).await
    }
}

impl CreditExpiryTx for PgTx {
    async fn due_grant(&mut self, grant_id: &str, now: i64) -> Result<Option<DueGrant>> {
        pg_q::due_grant(&mut self.tx, &self.tenant, grant_id, now).await
    }

    async fn expire_grant(&mut self, expiry: &ExpireGrant) -> Result<Option<AccountAfter>> {
        pg_q::expire_grant(&mut self.tx, &self.tenant, expiry).await
    }
}

impl CreditExpiryTx for Tx {
    async fn due_grant(&mut self, grant_id: &str, now: i64) -> Result<Option<DueGrant>> {
        dispatch_tx!(self, t => t.due_grant(grant_id, now).await)
    }

    async fn expire_grant(&mut self, expiry: &ExpireGrant) -> Result<Option<AccountAfter>> {
        dispatch_tx!(self, t => t.expire_grant(expiry).await)
    }
}

//! Credits an order's saga holds (`credit_reservations`, migration 0015):
//! reserved with the payment's intent, captured when the order completes
//! (by [`super::TxOps::debit_credits`] with `from_reserved`, which also
//! takes them from the expiring grants), released when the saga
//! compensates.
//!
//! The SQL is written once in `reservation_queries!` and compiled for each
//! backend (see [`super::queries`] for why a macro).

use std::future::Future;

use super::error::Result;
use super::model::{AccountAfter, CreditAccountRecord};
use super::pg_pool::pg_read;
use super::postgres::PgTx;
use super::sqlite::SqliteTx;
use super::{PgStore, SqliteStore, Store, Tx};

/// A reservation as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReservationRecord {
    /// Its id.
    pub reservation_id: String,
    /// Whose credits.
    pub customer_id: String,
    /// The order they pay.
    pub order_id: String,
    /// Credits held (> 0).
    pub credits: i64,
    /// What they settle of the order's bill, in minor units.
    pub value: i64,
    /// The order's currency.
    pub currency: String,
    /// `HELD`, `CAPTURED` or `RELEASED`.
    pub status: String,
    /// The credit use a capture recorded.
    pub use_id: Option<String>,
    /// Created (ms since the epoch).
    pub created_at: i64,
    /// Last changed.
    pub updated_at: i64,
}

/// What a reservation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Held; the account after.
    Reserved(AccountAfter),
    /// The customer has no credit account.
    NoAccount,
    /// Fewer credits available than asked for; the account as it is.
    Insufficient(CreditAccountRecord),
}

/// Reads outside a transaction.
pub trait ReservationQueries: Send + Sync {
    /// The order's reservations, oldest first.
    fn reservations_of_order(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> impl Future<Output = Result<Vec<ReservationRecord>>> + Send;
}

/// Writes inside a transaction.
pub trait ReservationTx: Send {
    /// Holds `r.credits` of the customer's available credits and stores the
    /// reservation `HELD` — or, when fewer are available, writes nothing.
    fn reserve_credits(
        &mut self,
        r: &ReservationRecord,
    ) -> impl Future<Output = Result<ReserveOutcome>> + Send;

    /// The order's `HELD` reservation, if any.
    fn held_reservation(
        &mut self,
        order_id: &str,
    ) -> impl Future<Output = Result<Option<ReservationRecord>>> + Send;

    /// Gives the held credits of `r` back to the customer's available
    /// credits; the account after (`None`: the account no longer holds
    /// them, which the caller treats as corrupt data).
    fn release_credits(
        &mut self,
        r: &ReservationRecord,
        now: i64,
    ) -> impl Future<Output = Result<Option<AccountAfter>>> + Send;

    /// Marks `r` captured by credit use `use_id` (whose debit took the
    /// credits); `false` when it was no longer held.
    fn mark_captured(
        &mut self,
        r: &ReservationRecord,
        use_id: &str,
        now: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
}

macro_rules! reservation_queries {
    (db = $db:ty, for_update = $for_update:literal) => {
        use super::*;

        type Db = $db;

        const COLUMNS: &str = "reservation_id, customer_id, order_id, credits, value, currency, \
             status, use_id, created_at, updated_at";

        pub(super) async fn reservations_of_order<'e, E>(
            ex: E,
            tenant: &str,
            order_id: &str,
        ) -> Result<Vec<ReservationRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "SELECT {COLUMNS} FROM credit_reservations WHERE tenant_id = $1 AND order_id = $2 \
                 ORDER BY created_at, reservation_id"
            );
            Ok(sqlx::query_as::<_, ReservationRecord>(&sql)
                .bind(tenant)
                .bind(order_id)
                .fetch_all(ex)
                .await?)
        }

        pub(super) async fn held_reservation<'e, E>(
            ex: E,
            tenant: &str,
            order_id: &str,
        ) -> Result<Option<ReservationRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let sql = format!(
                "SELECT {COLUMNS} FROM credit_reservations \
                 WHERE tenant_id = $1 AND order_id = $2 AND status = 'HELD'{}",
                $for_update
            );
            Ok(sqlx::query_as::<_, ReservationRecord>(&sql)
                .bind(tenant)
                .bind(order_id)
                .fetch_optional(ex)
                .await?)
        }

        /// Moves `delta` credits into (> 0) or out of (< 0) the account's
        /// reserved credits, guarded: a hold only from available credits,
        /// a release only of what is reserved (`None`: the guard failed).
        pub(super) async fn shift_reserved<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
            delta: i64,
            now: i64,
        ) -> Result<Option<AccountAfter>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_as::<_, (i64, i64, i64, i64)>(
                "UPDATE credit_accounts SET reserved = reserved + $3, version = version + 1, \
                   updated_at = $4 \
                 WHERE tenant_id = $1 AND customer_id = $2 \
                   AND balance - reserved >= $3 AND reserved + $3 >= 0 \
                 RETURNING balance, reserved, spent_today, version",
            )
            .bind(tenant)
            .bind(customer_id)
            .bind(delta)
            .bind(now)
            .fetch_optional(ex)
            .await?
            .map(|(balance, reserved, spent_today, version)| AccountAfter {
                balance,
                reserved,
                spent_today,
                version,
            }))
        }

        pub(super) async fn insert_reservation<'e, E>(
            ex: E,
            tenant: &str,
            r: &ReservationRecord,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "INSERT INTO credit_reservations (tenant_id, reservation_id, customer_id, \
                   order_id, credits, value, currency, status, use_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(tenant)
            .bind(&r.reservation_id)
            .bind(&r.customer_id)
            .bind(&r.order_id)
            .bind(r.credits)
            .bind(r.value)
            .bind(&r.currency)
            .bind(&r.status)
            .bind(&r.use_id)
            .bind(r.created_at)
            .bind(r.updated_at)
            .execute(ex)
            .await?;
            Ok(())
        }

        /// `HELD` → `status` (with the capture's use); `false` when it was
        /// not held.
        pub(super) async fn settle_reservation<'e, E>(
            ex: E,
            tenant: &str,
            reservation_id: &str,
            (status, use_id): (&str, Option<&str>),
            now: i64,
        ) -> Result<bool>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let done = sqlx::query(
                "UPDATE credit_reservations SET status = $3, use_id = $4, updated_at = $5 \
                 WHERE tenant_id = $1 AND reservation_id = $2 AND status = 'HELD'",
            )
            .bind(tenant)
            .bind(reservation_id)
            .bind(status)
            .bind(use_id)
            .bind(now)
            .execute(ex)
            .await?;
            Ok(done.rows_affected() == 1)
        }
    };
}

mod sqlite_q {
    reservation_queries!(db = sqlx::Sqlite, for_update = "");
}

mod pg_q {
    reservation_queries!(db = sqlx::Postgres, for_update = " FOR UPDATE");
}

impl ReservationQueries for SqliteStore {
    async fn reservations_of_order(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> Result<Vec<ReservationRecord>> {
        sqlite_q::reservations_of_order(&self.reader, tenant, order_id).await
    }
}

impl ReservationQueries for PgStore {
    async fn reservations_of_order(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> Result<Vec<ReservationRecord>> {
        pg_read!(self.db, |conn| pg_q::reservations_of_order(
            conn, tenant, order_id
        ))
    }
}

impl ReservationQueries for Store {
    async fn reservations_of_order(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> Result<Vec<ReservationRecord>> {
        dispatch!(self, s => s.reservations_of_order(tenant, order_id).await)
    }
}

macro_rules! reservation_tx {
    ($ty:ty, $q:ident, $shared:path) => {
        impl ReservationTx for $ty {
            async fn reserve_credits(&mut self, r: &ReservationRecord) -> Result<ReserveOutcome> {
                let held = $q::shift_reserved(
                    &mut *self.tx,
                    &self.tenant,
                    &r.customer_id,
                    r.credits,
                    r.created_at,
                )
                .await?;
                let Some(after) = held else {
                    return Ok(
                        match {
                            use $shared as shared;
                            shared::credit_account
                        }(&mut *self.tx, &self.tenant, &r.customer_id)
                        .await?
                        {
                            None => ReserveOutcome::NoAccount,
                            Some(account) => ReserveOutcome::Insufficient(account),
                        },
                    );
                };
                $q::insert_reservation(&mut *self.tx, &self.tenant, r).await?;
                Ok(ReserveOutcome::Reserved(after))
            }

            async fn held_reservation(
                &mut self,
                order_id: &str,
            ) -> Result<Option<ReservationRecord>> {
                $q::held_reservation(&mut *self.tx, &self.tenant, order_id).await
            }

            async fn release_credits(
                &mut self,
                r: &ReservationRecord,
                now: i64,
            ) -> Result<Option<AccountAfter>> {
                if !$q::settle_reservation(
                    &mut *self.tx,
                    &self.tenant,
                    &r.reservation_id,
                    ("RELEASED", None),
                    now,
                )
                .await?
                {
                    return Ok(None);
                }
                $q::shift_reserved(&mut *self.tx, &self.tenant, &r.customer_id, -r.credits, now)
                    .await
            }

            async fn mark_captured(
                &mut self,
                r: &ReservationRecord,
                use_id: &str,
                now: i64,
            ) -> Result<bool> {
                $q::settle_reservation(
                    &mut *self.tx,
                    &self.tenant,
                    &r.reservation_id,
                    ("CAPTURED", Some(use_id)),
                    now,
                )
                .await
            }
        }
    };
}

reservation_tx!(SqliteTx, sqlite_q, super::sqlite::q);
reservation_tx!(PgTx, pg_q, super::postgres::q);

impl ReservationTx for Tx {
    async fn reserve_credits(&mut self, r: &ReservationRecord) -> Result<ReserveOutcome> {
        dispatch_tx!(self, t => t.reserve_credits(r).await)
    }

    async fn held_reservation(&mut self, order_id: &str) -> Result<Option<ReservationRecord>> {
        dispatch_tx!(self, t => t.held_reservation(order_id).await)
    }

    async fn release_credits(
        &mut self,
        r: &ReservationRecord,
        now: i64,
    ) -> Result<Option<AccountAfter>> {
        dispatch_tx!(self, t => t.release_credits(r, now).await)
    }

    async fn mark_captured(
        &mut self,
        r: &ReservationRecord,
        use_id: &str,
        now: i64,
    ) -> Result<bool> {
        dispatch_tx!(self, t => t.mark_captured(r, use_id, now).await)
    }
}

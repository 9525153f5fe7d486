//! Statements both backends run verbatim.
//!
//! SQLite accepts PostgreSQL's `$N` placeholders, `RETURNING`, `ON CONFLICT`
//! and `IS DISTINCT FROM`, so most SQL is written once, here, and compiled
//! into each backend by [`shared_queries!`] with that backend's concrete
//! sqlx types (generic sqlx code needs a wall of trait bounds; a macro keeps
//! every statement in one place without them). What differs — how a write
//! transaction begins, how the journal is flushed, how feed positions are
//! assigned, `FOR UPDATE` — lives in the backend modules.
//!
//! Every statement filters by `tenant_id = $1`, except `tenants`, which the
//! auditor uses to find every tenant with data (PostgreSQL's feed sequencer
//! is the other exception: feed positions are per database).

/// The highest value a BIGINT holds: guards keep sums below it, because
/// SQLite silently turns an overflowing integer sum into a float.
pub(super) const I64_MAX: i64 = i64::MAX;

/// A customer and its credit account (`customer_and_account`), by tenant
/// and customer id. Also run inline on SQLite (`sqlite_reader`), which reads
/// its columns by position and binds `$1`, `$2` in the order they first
/// appear (rusqlite's positional binding): keep both orders.
pub(crate) const CUSTOMER_AND_ACCOUNT: &str = "SELECT c.customer_id, c.attributes, c.version, c.created_at, c.updated_at, \
       a.balance, a.reserved, a.expiring, a.spent_day, a.spent_today, \
       a.version AS account_version, a.updated_at AS account_updated_at \
     FROM customers c JOIN credit_accounts a \
       ON a.tenant_id = c.tenant_id AND a.customer_id = c.customer_id \
     WHERE c.tenant_id = $1 AND c.customer_id = $2";

/// Expands to free functions over `$db` (`sqlx::Sqlite` or `sqlx::Postgres`).
/// `$for_update` is appended to reads that lock a row for the rest of the
/// transaction (`" FOR UPDATE"` on PostgreSQL; SQLite's write transaction
/// already excludes every other writer).
macro_rules! shared_queries {
    (db = $db:ty, for_update = $for_update:literal) => {
        #[allow(unused_imports)]
        use sqlx::Executor as _;

        use $crate::store::error::{Result, StoreError};
        use $crate::store::model::*;
        use $crate::store::queries::I64_MAX;

        type Db = $db;

        // ── Reads ───────────────────────────────────────────────────────

        pub(crate) async fn customer<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
        ) -> Result<Option<CustomerRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_as::<_, CustomerRecord>(
                "SELECT customer_id, attributes, version, created_at, updated_at \
                 FROM customers WHERE tenant_id = $1 AND customer_id = $2",
            )
            .bind(tenant)
            .bind(customer_id)
            .fetch_optional(ex)
            .await?)
        }

        #[derive(sqlx::FromRow)]
        struct CustomerAccountRow {
            customer_id: String,
            attributes: String,
            version: i64,
            created_at: i64,
            updated_at: i64,
            balance: i64,
            reserved: i64,
            expiring: i64,
            spent_day: i64,
            spent_today: i64,
            account_version: i64,
            account_updated_at: i64,
        }

        /// A customer and its credit account, read together.
        pub(crate) async fn customer_and_account<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
        ) -> Result<Option<(CustomerRecord, CreditAccountRecord)>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let row = sqlx::query_as::<_, CustomerAccountRow>(
                $crate::store::queries::CUSTOMER_AND_ACCOUNT,
            )
            .bind(tenant)
            .bind(customer_id)
            .fetch_optional(ex)
            .await?;
            Ok(row.map(|r| {
                let account = CreditAccountRecord {
                    customer_id: r.customer_id.clone(),
                    balance: r.balance,
                    reserved: r.reserved,
                    expiring: r.expiring,
                    spent_day: r.spent_day,
                    spent_today: r.spent_today,
                    version: r.account_version,
                    updated_at: r.account_updated_at,
                };
                let customer = CustomerRecord {
                    customer_id: r.customer_id,
                    attributes: r.attributes,
                    version: r.version,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                };
                (customer, account)
            }))
        }

        pub(crate) async fn credit_account<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
        ) -> Result<Option<CreditAccountRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_as::<_, CreditAccountRecord>(concat!(
                "SELECT customer_id, balance, reserved, expiring, spent_day, spent_today, \
                 version, updated_at FROM credit_accounts \
                 WHERE tenant_id = $1 AND customer_id = $2",
                $for_update
            ))
            .bind(tenant)
            .bind(customer_id)
            .fetch_optional(ex)
            .await?)
        }

        #[derive(sqlx::FromRow)]
        struct CreditTxRow {
            seq: i64,
            transaction_id: String,
            created_at: i64,
            grant_credits: Option<i64>,
            grant_reason: Option<String>,
            expires_at: Option<i64>,
            grant_balance: Option<i64>,
            charged: Option<i64>,
            refunded: Option<i64>,
            feature: Option<String>,
            units: Option<i64>,
            use_balance: Option<i64>,
            refund_credits: Option<i64>,
            refund_use_id: Option<String>,
            refund_reason: Option<String>,
            refund_balance: Option<i64>,
            expiry_credits: Option<i64>,
            expiry_grant_id: Option<String>,
            expiry_balance: Option<i64>,
        }

        impl CreditTxRow {
            fn into_record(self) -> Result<CreditTransactionRecord> {
                let (entry, balance_after) = if let (Some(credits), Some(balance)) =
                    (self.grant_credits, self.grant_balance)
                {
                    let entry = CreditEntry::Grant {
                        credits,
                        reason: self.grant_reason.unwrap_or_default(),
                        expires_at: self.expires_at,
                    };
                    (entry, balance)
                } else if let (Some(charged), Some(balance)) = (self.charged, self.use_balance) {
                    let entry = CreditEntry::Use {
                        charged,
                        refunded: self.refunded.unwrap_or_default(),
                        feature: self.feature,
                        units: self.units,
                    };
                    (entry, balance)
                } else if let (Some(credits), Some(balance)) =
                    (self.refund_credits, self.refund_balance)
                {
                    let entry = CreditEntry::Refund {
                        credits,
                        use_id: self.refund_use_id.unwrap_or_default(),
                        reason: self.refund_reason.unwrap_or_default(),
                    };
                    (entry, balance)
                } else if let (Some(credits), Some(balance)) =
                    (self.expiry_credits, self.expiry_balance)
                {
                    let entry = CreditEntry::Expiry {
                        credits,
                        grant_id: self.expiry_grant_id.unwrap_or_default(),
                    };
                    (entry, balance)
                } else {
                    return Err(StoreError::Corrupt(format!(
                        "credit transaction {} has no grant, use, refund or expiry row",
                        self.transaction_id
                    )));
                };
                Ok(CreditTransactionRecord {
                    seq: self.seq,
                    transaction_id: self.transaction_id,
                    entry,
                    balance_after,
                    created_at: self.created_at,
                })
            }
        }

        /// Newest first, strictly before `before_seq`.
        pub(crate) async fn credit_transactions<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
            before_seq: i64,
            limit: i64,
        ) -> Result<Vec<CreditTransactionRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let rows = sqlx::query_as::<_, CreditTxRow>(
                "SELECT t.seq, t.transaction_id, t.created_at, \
                   g.credits AS grant_credits, g.reason AS grant_reason, g.expires_at, \
                   g.balance_after AS grant_balance, \
                   u.charged, u.refunded, u.feature, u.units, u.balance_after AS use_balance, \
                   r.credits AS refund_credits, r.use_id AS refund_use_id, \
                   r.reason AS refund_reason, r.balance_after AS refund_balance, \
                   x.credits AS expiry_credits, x.grant_id AS expiry_grant_id, \
                   x.balance_after AS expiry_balance \
                 FROM ledger_transactions t \
                 LEFT JOIN credit_grants g \
                   ON g.tenant_id = t.tenant_id AND g.grant_id = t.transaction_id \
                 LEFT JOIN credit_uses u \
                   ON u.tenant_id = t.tenant_id AND u.use_id = t.transaction_id \
                 LEFT JOIN credit_refunds r \
                   ON r.tenant_id = t.tenant_id AND r.refund_id = t.transaction_id \
                 LEFT JOIN credit_expiries x \
                   ON x.tenant_id = t.tenant_id AND x.expiry_id = t.transaction_id \
                 WHERE t.tenant_id = $1 AND t.customer_id = $2 AND t.seq < $3 \
                   AND (g.grant_id IS NOT NULL OR u.use_id IS NOT NULL \
                     OR r.refund_id IS NOT NULL OR x.expiry_id IS NOT NULL) \
                 ORDER BY t.seq DESC LIMIT $4",
            )
            .bind(tenant)
            .bind(customer_id)
            .bind(before_seq)
            .bind(limit)
            .fetch_all(ex)
            .await?;
            rows.into_iter().map(CreditTxRow::into_record).collect()
        }

        // ── Customers ───────────────────────────────────────────────────

        /// Inserts the customer and its empty credit account; `false` when
        /// the customer exists.
        pub(crate) async fn insert_customer(
            conn: &mut <Db as sqlx::Database>::Connection,
            tenant: &str,
            customer_id: &str,
            attributes: &str,
            now: i64,
        ) -> Result<bool> {
            let inserted = sqlx::query(
                "INSERT INTO customers \
                   (tenant_id, customer_id, attributes, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, 1, $4, $4) \
                 ON CONFLICT (tenant_id, customer_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(customer_id)
            .bind(attributes)
            .bind(now)
            .execute(&mut *conn)
            .await?
            .rows_affected()
                == 1;
            if inserted {
                sqlx::query(
                    "INSERT INTO credit_accounts (tenant_id, customer_id, updated_at) \
                     VALUES ($1, $2, $3)",
                )
                .bind(tenant)
                .bind(customer_id)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            }
            Ok(inserted)
        }

        pub(crate) async fn customer_for_update<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
        ) -> Result<Option<CustomerRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_as::<_, CustomerRecord>(concat!(
                "SELECT customer_id, attributes, version, created_at, updated_at \
                 FROM customers WHERE tenant_id = $1 AND customer_id = $2",
                $for_update
            ))
            .bind(tenant)
            .bind(customer_id)
            .fetch_optional(ex)
            .await?)
        }

        pub(crate) async fn update_customer<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
            attributes: &str,
            now: i64,
        ) -> Result<CustomerRecord>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_as::<_, CustomerRecord>(
                "UPDATE customers SET attributes = $3, version = version + 1, updated_at = $4 \
                 WHERE tenant_id = $1 AND customer_id = $2 \
                 RETURNING customer_id, attributes, version, created_at, updated_at",
            )
            .bind(tenant)
            .bind(customer_id)
            .bind(attributes)
            .bind(now)
            .fetch_one(ex)
            .await?)
        }

        /// A key's stored row, as [`Claim::Taken`] (`None`: free).
        pub(crate) async fn idempotency_record<'e, E>(
            ex: E,
            tenant: &str,
            key: &str,
        ) -> Result<Option<Claim>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let row = sqlx::query_as::<_, (String, Option<i32>, Option<Vec<u8>>)>(
                "SELECT fingerprint, response_status, response_body FROM idempotency_keys \
                 WHERE tenant_id = $1 AND idem_key = $2",
            )
            .bind(tenant)
            .bind(key)
            .fetch_optional(ex)
            .await?;
            Ok(row.map(|(fingerprint, status, body)| Claim::taken(fingerprint, status, body)))
        }

        // ── Maintenance ─────────────────────────────────────────────────

        pub(crate) async fn purge_idempotency<'e, E>(
            ex: E,
            tenant: &str,
            before: i64,
        ) -> Result<u64>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query(
                "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND created_at < $2",
            )
            .bind(tenant)
            .bind(before)
            .execute(ex)
            .await?
            .rows_affected())
        }

        /// Raises the tenant's pruned watermark (never lowers it).
        pub(crate) async fn raise_pruned_watermark<'e, E>(
            ex: E,
            tenant: &str,
            before_time: i64,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "INSERT INTO outbox_pruned (tenant_id, before_time, updated_at) \
                 VALUES ($1, $2, $2) \
                 ON CONFLICT (tenant_id) DO UPDATE \
                   SET before_time = excluded.before_time, updated_at = excluded.updated_at \
                   WHERE outbox_pruned.before_time < excluded.before_time",
            )
            .bind(tenant)
            .bind(before_time)
            .execute(ex)
            .await?;
            Ok(())
        }

        /// Every tenant that has data. Not tenant-scoped by nature: the
        /// auditor uses it to find tenants removed from the config.
        pub(crate) async fn tenants<'e, E>(ex: E) -> Result<Vec<String>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_scalar::<_, String>(
                "SELECT tenant_id FROM customers UNION SELECT tenant_id FROM ledger_transactions \
                 UNION SELECT tenant_id FROM outbox_events ORDER BY 1",
            )
            .fetch_all(ex)
            .await?)
        }
    };
}

pub(crate) use shared_queries;

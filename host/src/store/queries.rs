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
//! Every statement filters by `tenant_id = $1`, except the two maintenance
//! queries at the end, which say why.

/// The highest value a BIGINT holds: guards keep sums below it, because
/// SQLite silently turns an overflowing integer sum into a float.
pub(super) const I64_MAX: i64 = i64::MAX;

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
                } else {
                    return Err(StoreError::Corrupt(format!(
                        "credit transaction {} has no grant, use or refund row",
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
                   r.reason AS refund_reason, r.balance_after AS refund_balance \
                 FROM ledger_transactions t \
                 LEFT JOIN credit_grants g \
                   ON g.tenant_id = t.tenant_id AND g.grant_id = t.transaction_id \
                 LEFT JOIN credit_uses u \
                   ON u.tenant_id = t.tenant_id AND u.use_id = t.transaction_id \
                 LEFT JOIN credit_refunds r \
                   ON r.tenant_id = t.tenant_id AND r.refund_id = t.transaction_id \
                 WHERE t.tenant_id = $1 AND t.customer_id = $2 AND t.seq < $3 \
                   AND (g.grant_id IS NOT NULL OR u.use_id IS NOT NULL OR r.refund_id IS NOT NULL) \
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

        /// Events with a feed position after `after`, in position order.
        pub(crate) async fn events<'e, E>(
            ex: E,
            tenant: &str,
            after: i64,
            limit: i64,
        ) -> Result<Vec<EventRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_as::<_, EventRecord>(
                "SELECT feed_seq, event_id, type, source, subject, time, data, transaction_id \
                 FROM outbox_events WHERE tenant_id = $1 AND feed_seq > $2 \
                 ORDER BY feed_seq LIMIT $3",
            )
            .bind(tenant)
            .bind(after)
            .bind(limit)
            .fetch_all(ex)
            .await?)
        }

        // ── Idempotency ─────────────────────────────────────────────────

        /// Inserts the key; `false` when a committed row already holds it.
        /// On PostgreSQL a concurrent uncommitted insert of the same key
        /// makes this wait for that transaction to end first.
        pub(crate) async fn insert_idempotency<'e, E>(
            ex: E,
            tenant: &str,
            claim: &IdempotencyClaim,
        ) -> Result<bool>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let done = sqlx::query(
                "INSERT INTO idempotency_keys (tenant_id, idem_key, fingerprint, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, idem_key) DO NOTHING",
            )
            .bind(tenant)
            .bind(&claim.key)
            .bind(&claim.fingerprint)
            .bind(claim.now)
            .execute(ex)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        pub(crate) async fn stored_idempotency<'e, E>(
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
            Ok(row.map(|(fingerprint, status, body)| Claim::Taken {
                fingerprint,
                response: match (status, body) {
                    (Some(status), Some(body)) => Some(StoredResponse {
                        status: u16::try_from(status).unwrap_or(500),
                        body,
                    }),
                    _ => None,
                },
            }))
        }

        pub(crate) async fn complete_idempotency<'e, E>(
            ex: E,
            tenant: &str,
            key: &str,
            response: &StoredResponse,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "UPDATE idempotency_keys SET response_status = $3, response_body = $4 \
                 WHERE tenant_id = $1 AND idem_key = $2",
            )
            .bind(tenant)
            .bind(key)
            .bind(i32::from(response.status))
            .bind(&response.body)
            .execute(ex)
            .await?;
            Ok(())
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

        // ── Credits ─────────────────────────────────────────────────────

        /// Adds credits to the account (and to `expiring` when they expire).
        /// The guard keeps the balance inside 64 bits.
        pub(crate) async fn add_credits<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
            credits: i64,
            expiring: i64,
            now: i64,
        ) -> Result<Option<AccountAfter>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let row = sqlx::query_as::<_, (i64, i64, i64, i64)>(
                "UPDATE credit_accounts \
                 SET balance = balance + $3, expiring = expiring + $4, \
                     version = version + 1, updated_at = $5 \
                 WHERE tenant_id = $1 AND customer_id = $2 AND balance <= $6 - $3 \
                   AND expiring <= $6 - $4 \
                 RETURNING balance, reserved, spent_today, version",
            )
            .bind(tenant)
            .bind(customer_id)
            .bind(credits)
            .bind(expiring)
            .bind(now)
            .bind(I64_MAX)
            .fetch_optional(ex)
            .await?;
            Ok(row.map(|(balance, reserved, spent_today, version)| AccountAfter {
                balance,
                reserved,
                spent_today,
                version,
            }))
        }

        pub(crate) async fn insert_grant<'e, E>(
            ex: E,
            tenant: &str,
            grant: &GrantCredits,
            balance_after: i64,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "INSERT INTO credit_grants (tenant_id, grant_id, customer_id, credits, remaining, \
                   expires_at, reason, balance_after, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(tenant)
            .bind(&grant.grant_id)
            .bind(&grant.customer_id)
            .bind(grant.credits)
            .bind(grant.expires_at.map(|_| grant.credits))
            .bind(grant.expires_at)
            .bind(&grant.reason)
            .bind(balance_after)
            .bind(grant.now)
            .execute(ex)
            .await?;
            Ok(())
        }

        /// The guarded debit: takes the credits only if the available
        /// balance covers them, and counts them in today's spend, in one
        /// statement that also locks the row.
        pub(crate) async fn take_credits<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
            credits: i64,
            day: i64,
            now: i64,
        ) -> Result<Option<(AccountAfter, i64)>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let row = sqlx::query_as::<_, (i64, i64, i64, i64, i64)>(
                "UPDATE credit_accounts \
                 SET balance = balance - $3, \
                     spent_today = CASE WHEN spent_day = $4 THEN spent_today + $3 ELSE $3 END, \
                     spent_day = $4, version = version + 1, updated_at = $5 \
                 WHERE tenant_id = $1 AND customer_id = $2 AND balance - reserved >= $3 \
                   AND (spent_day <> $4 OR spent_today <= $6 - $3) \
                 RETURNING balance, reserved, spent_today, version, expiring",
            )
            .bind(tenant)
            .bind(customer_id)
            .bind(credits)
            .bind(day)
            .bind(now)
            .bind(I64_MAX)
            .fetch_optional(ex)
            .await?;
            Ok(row.map(|(balance, reserved, spent_today, version, expiring)| {
                (
                    AccountAfter {
                        balance,
                        reserved,
                        spent_today,
                        version,
                    },
                    expiring,
                )
            }))
        }

        pub(crate) async fn insert_use<'e, E>(
            ex: E,
            tenant: &str,
            debit: &DebitCredits,
            balance_after: i64,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "INSERT INTO credit_uses (tenant_id, use_id, customer_id, kind, feature, units, \
                   charged, metadata, quote, policy, policy_hash, balance_after, created_at) \
                 VALUES ($1, $2, $3, 'use', $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(tenant)
            .bind(&debit.use_id)
            .bind(&debit.customer_id)
            .bind(&debit.feature)
            .bind(debit.units)
            .bind(debit.credits)
            .bind(&debit.metadata)
            .bind(&debit.quote)
            .bind(&debit.policy)
            .bind(&debit.policy_hash)
            .bind(balance_after)
            .bind(debit.now)
            .execute(ex)
            .await?;
            Ok(())
        }

        /// The customer's grants that can still be spent from and expire,
        /// locked: (id, credits, remaining, expires_at).
        pub(crate) async fn expiring_grants<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
            now: i64,
        ) -> Result<Vec<(String, i64, i64, i64)>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_as::<_, (String, i64, i64, i64)>(concat!(
                "SELECT grant_id, credits, remaining, expires_at FROM credit_grants \
                 WHERE tenant_id = $1 AND customer_id = $2 AND remaining > 0 AND expires_at > $3 \
                 ORDER BY expires_at, grant_id",
                $for_update
            ))
            .bind(tenant)
            .bind(customer_id)
            .bind(now)
            .fetch_all(ex)
            .await?)
        }

        pub(crate) async fn set_grant_remaining<'e, E>(
            ex: E,
            tenant: &str,
            grant_id: &str,
            remaining: i64,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "UPDATE credit_grants SET remaining = $3 WHERE tenant_id = $1 AND grant_id = $2",
            )
            .bind(tenant)
            .bind(grant_id)
            .bind(remaining)
            .execute(ex)
            .await?;
            Ok(())
        }

        pub(crate) async fn reduce_expiring<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
            by: i64,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "UPDATE credit_accounts SET expiring = expiring - $3 \
                 WHERE tenant_id = $1 AND customer_id = $2",
            )
            .bind(tenant)
            .bind(customer_id)
            .bind(by)
            .execute(ex)
            .await?;
            Ok(())
        }

        pub(crate) async fn credit_use_for_update<'e, E>(
            ex: E,
            tenant: &str,
            use_id: &str,
        ) -> Result<Option<CreditUseRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_as::<_, CreditUseRecord>(concat!(
                "SELECT use_id, customer_id, kind, charged, refunded FROM credit_uses \
                 WHERE tenant_id = $1 AND use_id = $2",
                $for_update
            ))
            .bind(tenant)
            .bind(use_id)
            .fetch_optional(ex)
            .await?)
        }

        /// Adds to a use's refunded total only while it stays within what
        /// was charged; returns the new total.
        pub(crate) async fn add_refunded<'e, E>(
            ex: E,
            tenant: &str,
            use_id: &str,
            credits: i64,
        ) -> Result<Option<i64>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_scalar::<_, i64>(
                "UPDATE credit_uses SET refunded = refunded + $3 \
                 WHERE tenant_id = $1 AND use_id = $2 AND charged - refunded >= $3 \
                 RETURNING refunded",
            )
            .bind(tenant)
            .bind(use_id)
            .bind(credits)
            .fetch_optional(ex)
            .await?)
        }

        pub(crate) async fn insert_refund<'e, E>(
            ex: E,
            tenant: &str,
            refund: &RefundCredits,
            balance_after: i64,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "INSERT INTO credit_refunds (tenant_id, refund_id, use_id, customer_id, credits, \
                   reason, balance_after, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(tenant)
            .bind(&refund.refund_id)
            .bind(&refund.use_id)
            .bind(&refund.customer_id)
            .bind(refund.credits)
            .bind(&refund.reason)
            .bind(balance_after)
            .bind(refund.now)
            .execute(ex)
            .await?;
            Ok(())
        }

        // ── Journal, one row at a time (SQLite's flush; PostgreSQL batches) ─

        pub(crate) async fn insert_ledger(
            conn: &mut <Db as sqlx::Database>::Connection,
            tenant: &str,
            entry: &LedgerEntry,
        ) -> Result<()> {
            sqlx::query(
                "INSERT INTO ledger_transactions \
                   (tenant_id, transaction_id, kind, customer_id, request_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(tenant)
            .bind(&entry.transaction_id)
            .bind(entry.transaction.kind().as_str())
            .bind(&entry.customer_id)
            .bind(&entry.request_id)
            .bind(entry.created_at)
            .execute(&mut *conn)
            .await?;
            for (line, posting) in entry.transaction.postings().iter().enumerate() {
                sqlx::query(
                    "INSERT INTO ledger_postings \
                       (tenant_id, transaction_id, line, account, unit, amount) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(tenant)
                .bind(&entry.transaction_id)
                .bind(line_number(line)?)
                .bind(posting.account.key())
                .bind(posting.unit.as_str())
                .bind(posting.amount)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        pub(crate) async fn insert_history<'e, E>(
            ex: E,
            tenant: &str,
            entry: &HistoryEntry,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "INSERT INTO state_history (tenant_id, entity_type, entity_id, from_state, \
                   to_state, event, reason, actor, request_id, transaction_id, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(tenant)
            .bind(entry.entity_type)
            .bind(&entry.entity_id)
            .bind(&entry.from_state)
            .bind(&entry.to_state)
            .bind(&entry.event)
            .bind(&entry.reason)
            .bind(&entry.actor)
            .bind(&entry.request_id)
            .bind(&entry.transaction_id)
            .bind(entry.at)
            .execute(ex)
            .await?;
            Ok(())
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

        // ── Audit ───────────────────────────────────────────────────────

        pub(crate) async fn audit_data(
            conn: &mut <Db as sqlx::Database>::Connection,
            tenant: &str,
        ) -> Result<AuditData> {
            let mut data = AuditData::default();

            // Sums are cast to text: PostgreSQL sums BIGINTs as NUMERIC,
            // which does not decode into i64, and an audit must not overflow.
            let sums = sqlx::query_as::<_, (String, String, String)>(
                "SELECT account, unit, CAST(SUM(amount) AS TEXT) FROM ledger_postings \
                 WHERE tenant_id = $1 GROUP BY account, unit ORDER BY account, unit",
            )
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await?;
            for (account, unit, sum) in sums {
                let sum = parse_sum(&sum)?;
                data.account_sums.push(AccountSum { account, unit, sum });
            }

            let unbalanced = sqlx::query_as::<_, (String, String, String)>(
                "SELECT transaction_id, unit, CAST(SUM(amount) AS TEXT) FROM ledger_postings \
                 WHERE tenant_id = $1 GROUP BY transaction_id, unit HAVING SUM(amount) <> 0",
            )
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await?;
            for (transaction_id, unit, sum) in unbalanced {
                data.transaction_problems.push(TransactionProblem {
                    transaction_id,
                    problem: format!("postings in {unit} sum to {sum}, not zero"),
                });
            }
            let thin = sqlx::query_as::<_, (String, i64)>(
                "SELECT t.transaction_id, COUNT(p.line) FROM ledger_transactions t \
                 LEFT JOIN ledger_postings p \
                   ON p.tenant_id = t.tenant_id AND p.transaction_id = t.transaction_id \
                 WHERE t.tenant_id = $1 GROUP BY t.transaction_id HAVING COUNT(p.line) < 2",
            )
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await?;
            for (transaction_id, count) in thin {
                data.transaction_problems.push(TransactionProblem {
                    transaction_id,
                    problem: format!("has {count} posting(s); a transaction needs at least two"),
                });
            }
            let orphans = sqlx::query_scalar::<_, String>(
                "SELECT DISTINCT p.transaction_id FROM ledger_postings p \
                 WHERE p.tenant_id = $1 AND (p.amount = 0 OR NOT EXISTS ( \
                   SELECT 1 FROM ledger_transactions t \
                   WHERE t.tenant_id = p.tenant_id AND t.transaction_id = p.transaction_id))",
            )
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await?;
            for transaction_id in orphans {
                data.transaction_problems.push(TransactionProblem {
                    transaction_id,
                    problem: "has a zero posting or postings without a transaction row".into(),
                });
            }

            data.credit_accounts = sqlx::query_as::<_, CreditAccountRecord>(
                "SELECT customer_id, balance, reserved, expiring, spent_day, spent_today, \
                 version, updated_at FROM credit_accounts WHERE tenant_id = $1 \
                 ORDER BY customer_id",
            )
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await?;
            data.expiring_sums = sqlx::query_as::<_, (String, i64)>(
                "SELECT customer_id, CAST(SUM(remaining) AS BIGINT) FROM credit_grants \
                 WHERE tenant_id = $1 AND remaining IS NOT NULL GROUP BY customer_id",
            )
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await?;

            // Each credit detail row against its ledger transaction: the
            // right kind, and the right amount on the customer's account.
            let credit_checks: [(&str, &str); 3] = [
                (
                    "grant",
                    "SELECT g.grant_id FROM credit_grants g \
                     LEFT JOIN ledger_transactions t \
                       ON t.tenant_id = g.tenant_id AND t.transaction_id = g.grant_id \
                     WHERE g.tenant_id = $1 AND (t.kind IS DISTINCT FROM 'credit.grant' \
                       OR NOT EXISTS (SELECT 1 FROM ledger_postings p \
                         WHERE p.tenant_id = g.tenant_id AND p.transaction_id = g.grant_id \
                           AND p.account = 'customer:' || g.customer_id || ':credits' \
                           AND p.unit = 'CREDITS' AND p.amount = -g.credits))",
                ),
                (
                    "use",
                    "SELECT u.use_id FROM credit_uses u \
                     LEFT JOIN ledger_transactions t \
                       ON t.tenant_id = u.tenant_id AND t.transaction_id = u.use_id \
                     WHERE u.tenant_id = $1 AND (t.kind NOT IN ('credit.use', 'subscription.charge') \
                       OR t.kind IS NULL \
                       OR NOT EXISTS (SELECT 1 FROM ledger_postings p \
                         WHERE p.tenant_id = u.tenant_id AND p.transaction_id = u.use_id \
                           AND p.account = 'customer:' || u.customer_id || ':credits' \
                           AND p.unit = 'CREDITS' AND p.amount = u.charged))",
                ),
                (
                    "refund",
                    "SELECT r.refund_id FROM credit_refunds r \
                     LEFT JOIN ledger_transactions t \
                       ON t.tenant_id = r.tenant_id AND t.transaction_id = r.refund_id \
                     WHERE r.tenant_id = $1 AND (t.kind IS DISTINCT FROM 'credit.refund' \
                       OR NOT EXISTS (SELECT 1 FROM ledger_postings p \
                         WHERE p.tenant_id = r.tenant_id AND p.transaction_id = r.refund_id \
                           AND p.account = 'customer:' || r.customer_id || ':credits' \
                           AND p.unit = 'CREDITS' AND p.amount = -r.credits))",
                ),
            ];
            for (what, sql) in credit_checks {
                let ids = sqlx::query_scalar::<_, String>(sql)
                    .bind(tenant)
                    .fetch_all(&mut *conn)
                    .await?;
                for transaction_id in ids {
                    data.credit_problems.push(TransactionProblem {
                        transaction_id,
                        problem: format!(
                            "the credit {what} row disagrees with its ledger transaction \
                             (missing, wrong kind, or wrong amount on the customer's credits)"
                        ),
                    });
                }
            }
            let refunds = sqlx::query_as::<_, (String, i64, i64)>(
                "SELECT u.use_id, u.refunded, CAST(COALESCE(SUM(r.credits), 0) AS BIGINT) \
                 FROM credit_uses u LEFT JOIN credit_refunds r \
                   ON r.tenant_id = u.tenant_id AND r.use_id = u.use_id \
                 WHERE u.tenant_id = $1 GROUP BY u.use_id, u.refunded \
                 HAVING u.refunded <> COALESCE(SUM(r.credits), 0)",
            )
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await?;
            for (use_id, refunded, sum) in refunds {
                data.credit_problems.push(TransactionProblem {
                    transaction_id: use_id,
                    problem: format!("use records {refunded} refunded but its refunds sum to {sum}"),
                });
            }

            // Every effect has its history row and exactly one event, and
            // every history row and event belongs to an effect with both.
            let links: [(&str, &str); 4] = [
                (
                    "ledger transaction has no state-history row",
                    "SELECT t.transaction_id FROM ledger_transactions t WHERE t.tenant_id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM state_history h \
                       WHERE h.tenant_id = t.tenant_id AND h.transaction_id = t.transaction_id)",
                ),
                (
                    "ledger transaction does not have exactly one outbox event",
                    "SELECT t.transaction_id FROM ledger_transactions t WHERE t.tenant_id = $1 \
                     AND (SELECT COUNT(*) FROM outbox_events o \
                       WHERE o.tenant_id = t.tenant_id AND o.transaction_id = t.transaction_id) <> 1",
                ),
                (
                    "state change has no outbox event",
                    "SELECT DISTINCT h.transaction_id FROM state_history h WHERE h.tenant_id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM outbox_events o \
                       WHERE o.tenant_id = h.tenant_id AND o.transaction_id = h.transaction_id)",
                ),
                (
                    "outbox event has no state-history row",
                    "SELECT DISTINCT o.transaction_id FROM outbox_events o WHERE o.tenant_id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM state_history h \
                       WHERE h.tenant_id = o.tenant_id AND h.transaction_id = o.transaction_id)",
                ),
            ];
            for (problem, sql) in links {
                let ids = sqlx::query_scalar::<_, String>(sql)
                    .bind(tenant)
                    .fetch_all(&mut *conn)
                    .await?;
                for transaction_id in ids {
                    data.link_problems.push(TransactionProblem {
                        transaction_id,
                        problem: problem.to_owned(),
                    });
                }
            }

            // Current states in the exact form history rows write them
            // (see app::history for the credit_account and credit_use forms).
            data.entities = sqlx::query_as::<_, EntityState>(
                "SELECT 'customer' AS entity_type, customer_id AS entity_id, \
                   'ACTIVE' AS state, version FROM customers WHERE tenant_id = $1 \
                 UNION ALL \
                 SELECT 'credit_account', customer_id, \
                   'balance=' || balance || ' reserved=' || reserved, version \
                   FROM credit_accounts WHERE tenant_id = $1 \
                 UNION ALL \
                 SELECT 'credit_use', u.use_id, 'refunded=' || u.refunded, \
                   (SELECT COUNT(*) FROM credit_refunds r \
                     WHERE r.tenant_id = u.tenant_id AND r.use_id = u.use_id) \
                   FROM credit_uses u WHERE u.tenant_id = $1 \
                 UNION ALL \
                 SELECT 'order', order_id, status, version FROM orders WHERE tenant_id = $1 \
                 UNION ALL \
                 SELECT 'subscription', subscription_id, status, version FROM subscriptions \
                   WHERE tenant_id = $1",
            )
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await?;
            data.history = sqlx::query_as::<_, HistoryRecord>(
                "SELECT id, entity_type, entity_id, from_state, to_state, event, transaction_id \
                 FROM state_history WHERE tenant_id = $1 ORDER BY entity_type, entity_id, id",
            )
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await?;
            Ok(data)
        }

        fn parse_sum(text: &str) -> Result<i128> {
            text.trim()
                .parse::<i128>()
                .map_err(|_| StoreError::Corrupt(format!("posting sum `{text}` is not an integer")))
        }

        fn line_number(index: usize) -> Result<i16> {
            i16::try_from(index + 1)
                .map_err(|_| StoreError::Corrupt("a transaction has too many postings".into()))
        }
    };
}

pub(crate) use shared_queries;

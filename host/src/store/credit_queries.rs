//! Credit statements (grants, guarded debits, grant allocation, refunds),
//! both backends verbatim (see [`super::queries`] for why a macro).
//! Every guard keeps a sum inside 64 bits: SQLite would silently turn an
//! overflowing integer into a float.

/// Expands to the credit statements. Invoke it in the module where
/// `shared_queries!` was invoked (it uses that module's `Db`, `Result` and
/// model imports), with the same `for_update` suffix for locking reads.
macro_rules! credit_queries {
    (for_update = $for_update:literal) => {
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
            Ok(
                row.map(|(balance, reserved, spent_today, version)| AccountAfter {
                    balance,
                    reserved,
                    spent_today,
                    version,
                }),
            )
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

        /// The customer's expiring grants with credits left (lapsed ones
        /// included until the expiry job has run), locked:
        /// (id, credits, remaining, expires_at).
        pub(crate) async fn expiring_grants<'e, E>(
            ex: E,
            tenant: &str,
            customer_id: &str,
        ) -> Result<Vec<(String, i64, i64, i64)>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_as::<_, (String, i64, i64, i64)>(concat!(
                "SELECT grant_id, credits, remaining, expires_at FROM credit_grants \
                 WHERE tenant_id = $1 AND customer_id = $2 AND remaining > 0 \
                 ORDER BY expires_at, grant_id",
                $for_update
            ))
            .bind(tenant)
            .bind(customer_id)
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
    };
}

pub(crate) use credit_queries;

//! The auditor's reads, both backends verbatim (see [`super::queries`] for
//! why a macro). Aggregates only: the auditor never copies the ledger.

/// Expands to `audit_data`. Invoke it in the module where
/// `shared_queries!` was invoked: it uses that module's `Db`, `Result` and
/// model imports.
macro_rules! audit_queries {
    () => {
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
            let credit_checks: [(&str, &str); 4] = [
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
                     WHERE u.tenant_id = $1 \
                       AND (t.kind NOT IN ('credit.use', 'subscription.charge', 'credit.capture') \
                       OR t.kind IS NULL \
                       OR NOT EXISTS (SELECT 1 FROM ledger_postings p \
                         WHERE p.tenant_id = u.tenant_id AND p.transaction_id = u.use_id \
                           AND p.account = 'customer:' || u.customer_id || \
                             CASE WHEN t.kind = 'credit.capture' THEN ':credits_reserved' \
                               ELSE ':credits' END \
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
                (
                    "expiry",
                    "SELECT x.expiry_id FROM credit_expiries x \
                     LEFT JOIN ledger_transactions t \
                       ON t.tenant_id = x.tenant_id AND t.transaction_id = x.expiry_id \
                     WHERE x.tenant_id = $1 AND (t.kind IS DISTINCT FROM 'credit.expire' \
                       OR NOT EXISTS (SELECT 1 FROM ledger_postings p \
                         WHERE p.tenant_id = x.tenant_id AND p.transaction_id = x.expiry_id \
                           AND p.account = 'customer:' || x.customer_id || ':credits' \
                           AND p.unit = 'CREDITS' AND p.amount = x.credits))",
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
            // Whole sets are compared (EXCEPT, GROUP BY): no index by
            // transaction id is needed (SQLite has none since 0009), and
            // each check is a sort of the tenant's rows, not a lookup per row.
            // Events older than the tenant's pruned watermark may be gone
            // (outbox retention): effects from before it are not matched
            // to their events.
            let pruned_before = sqlx::query_scalar::<_, i64>(
                "SELECT COALESCE(MAX(before_time), 0) FROM outbox_pruned WHERE tenant_id = $1",
            )
            .bind(tenant)
            .fetch_one(&mut *conn)
            .await?;
            let links: [(&str, &str, bool); 5] = [
                (
                    "ledger transaction has no state-history row",
                    "SELECT transaction_id FROM ledger_transactions WHERE tenant_id = $1 \
                     EXCEPT SELECT transaction_id FROM state_history WHERE tenant_id = $1",
                    false,
                ),
                (
                    "ledger transaction does not have exactly one outbox event",
                    "SELECT transaction_id FROM ledger_transactions WHERE tenant_id = $1 \
                       AND created_at >= $2 \
                     EXCEPT SELECT transaction_id FROM outbox_events WHERE tenant_id = $1",
                    true,
                ),
                (
                    "ledger transaction does not have exactly one outbox event",
                    "SELECT transaction_id FROM outbox_events WHERE tenant_id = $1 \
                       AND transaction_id IN \
                         (SELECT transaction_id FROM ledger_transactions WHERE tenant_id = $1) \
                     GROUP BY transaction_id HAVING COUNT(*) > 1",
                    false,
                ),
                (
                    "state change has no outbox event",
                    "SELECT transaction_id FROM state_history WHERE tenant_id = $1 AND at >= $2 \
                     EXCEPT SELECT transaction_id FROM outbox_events WHERE tenant_id = $1",
                    true,
                ),
                (
                    "outbox event has no state-history row",
                    "SELECT transaction_id FROM outbox_events WHERE tenant_id = $1 \
                     EXCEPT SELECT transaction_id FROM state_history WHERE tenant_id = $1",
                    false,
                ),
            ];
            for (problem, sql, since_watermark) in links {
                let query = sqlx::query_scalar::<_, String>(sql).bind(tenant);
                let query = match since_watermark {
                    true => query.bind(pruned_before),
                    false => query,
                };
                let ids = query.fetch_all(&mut *conn).await?;
                for transaction_id in ids {
                    data.link_problems.push(TransactionProblem {
                        transaction_id,
                        problem: problem.to_owned(),
                    });
                }
            }

            // Orders and their money: a PAID order holds an approved payment
            // or reserved credits, a saga's order is where the saga says it
            // is, a finished saga holds no credits, what the customer's
            // account reserves is what its orders hold, only a completing
            // saga captures its payment, and an authorization (manual
            // capture) is confirmed only once the PG reported it captured.
            let money: [(&str, &str); 6] = [
                (
                    "order is PAID without an APPROVED payment or reserved credits",
                    "SELECT o.order_id FROM orders o WHERE o.tenant_id = $1 AND o.status = 'PAID' \
                       AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.tenant_id = o.tenant_id \
                         AND p.order_id = o.order_id AND p.status = 'APPROVED') \
                       AND NOT EXISTS (SELECT 1 FROM credit_reservations r \
                         WHERE r.tenant_id = o.tenant_id AND r.order_id = o.order_id \
                           AND r.status = 'HELD')",
                ),
                (
                    "saga finished with credits still reserved (neither deducted nor released)",
                    "SELECT s.order_id FROM sagas s JOIN credit_reservations r \
                       ON r.tenant_id = s.tenant_id AND r.order_id = s.order_id \
                     WHERE s.tenant_id = $1 AND r.status = 'HELD' \
                       AND s.state IN ('COMPLETED', 'COMPENSATED')",
                ),
                (
                    "credits reserved by the account differ from what its orders hold",
                    "SELECT 'customer:' || a.customer_id FROM credit_accounts a \
                     WHERE a.tenant_id = $1 AND a.reserved <> COALESCE((SELECT SUM(r.credits) \
                       FROM credit_reservations r WHERE r.tenant_id = a.tenant_id \
                         AND r.customer_id = a.customer_id AND r.status = 'HELD'), 0)",
                ),
                (
                    "saga and order disagree",
                    "SELECT s.order_id FROM sagas s JOIN orders o \
                       ON o.tenant_id = s.tenant_id AND o.order_id = s.order_id \
                     WHERE s.tenant_id = $1 AND NOT ( \
                       (s.state = 'RUNNING' AND o.status = 'PENDING') \
                       OR (s.state IN ('WAITING_FOR_SERVICE', 'COMPLETING', 'COMPENSATING', \
                           'COMPENSATION_FAILED') AND o.status = 'PAID') \
                       OR (s.state = 'COMPLETED' AND o.status = 'COMPLETED') \
                       OR (s.state = 'COMPENSATED' AND o.status IN ('PENDING', 'CANCELLED')))",
                ),
                (
                    "payment is being captured outside its order's COMPLETING saga",
                    "SELECT p.order_id FROM payments p WHERE p.tenant_id = $1 \
                       AND p.status = 'APPROVED' AND p.capture_requested_at IS NOT NULL \
                       AND NOT EXISTS (SELECT 1 FROM sagas s WHERE s.tenant_id = p.tenant_id \
                         AND s.order_id = p.order_id AND s.payment_id = p.payment_id \
                         AND s.state = 'COMPLETING')",
                ),
                (
                    "payment authorized for a manual capture was confirmed without the PG \
                     reporting it captured",
                    "SELECT p.order_id FROM payments p WHERE p.tenant_id = $1 \
                       AND p.capture_mode = 'manual' \
                       AND p.status IN ('CONFIRMED', 'PARTIALLY_REFUNDED', 'REFUNDED') \
                       AND NOT EXISTS (SELECT 1 FROM payment_attempts a \
                         WHERE a.tenant_id = p.tenant_id AND a.payment_id = p.payment_id \
                           AND a.kind IN ('capture', 'query') AND a.outcome = 'captured')",
                ),
            ];
            for (problem, sql) in money {
                let ids = sqlx::query_scalar::<_, String>(sql)
                    .bind(tenant)
                    .fetch_all(&mut *conn)
                    .await?;
                for order_id in ids {
                    data.saga_problems.push(TransactionProblem {
                        transaction_id: order_id,
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
                   WHERE tenant_id = $1 \
                 UNION ALL \
                 SELECT 'usage_period', close_id, 'CLOSED', 1 FROM period_closes \
                   WHERE tenant_id = $1 \
                 UNION ALL \
                 SELECT 'payment_method', method_id, \
                   CASE WHEN removed_at IS NULL THEN 'ACTIVE' ELSE 'REMOVED' END, \
                   CASE WHEN removed_at IS NULL THEN 1 ELSE 2 END \
                   FROM payment_methods WHERE tenant_id = $1 \
                 UNION ALL \
                 SELECT 'saga', order_id, state, version FROM sagas WHERE tenant_id = $1 \
                 UNION ALL \
                 SELECT 'payment', payment_id, status, version FROM payments \
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
    };
}

pub(crate) use audit_queries;

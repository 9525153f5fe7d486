//! The production backend: PostgreSQL.
//!
//! Round trips are what a money-moving request costs here (the database is
//! the bottleneck, not HTTP or Wasm), so a `credits/use` is five: `BEGIN`,
//! the idempotency claim, the guarded debit (one statement that also
//! inserts the use row), the journal flush (one statement inserting the
//! ledger transaction, its postings, the history rows and the outbox events
//! with `UNNEST`, and completing the idempotency row), and `COMMIT`.
//!
//! ## Feed positions and commit order
//! Identity values are taken at insert time, so under concurrency a
//! transaction holding a lower id can commit *after* one holding a higher
//! id; a consumer that had already read past the higher one would never see
//! the lower one. An effect's transaction therefore only adds its events'
//! ids to `outbox_unsequenced`, and [`PgStore::sequence_feed`] numbers them
//! after they commit: one sequencer at a time (a transaction-level advisory
//! lock) moves the committed ids into `outbox_feed` with the positions
//! `max + 1 …` of their tenant, in id order, and commits. A position is only
//! ever handed out above every position already visible, and a batch
//! becomes visible all at once, so a reader paging by position never skips
//! an event. Two events of one customer keep their causal order: the later
//! one's row is inserted after the earlier one's transaction committed (the
//! account row lock orders them), so it has the higher id and is numbered in
//! the same batch after it, or in a later one. The feed endpoint runs a pass
//! before reading and `serve` runs one every few hundred milliseconds, so
//! the feed lags commits by at most that. Outbox rows themselves are never
//! rewritten for the feed (migration 0006 says why).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::error::{Result, StoreError};
use super::model::*;
use super::pg_pool::{Lease, PgConnections, pg_read};
use super::queries::I64_MAX;
use super::{Maintenance, Queries, Transactions, TxOps, allocate_grants, utc_day};

// Some shared statements are unused here: PostgreSQL batches the journal
// and folds the use row into the debit.
#[allow(dead_code)]
pub(super) mod q {
    super::super::queries::shared_queries!(db = sqlx::Postgres, for_update = " FOR UPDATE");
    super::super::credit_queries::credit_queries!(for_update = " FOR UPDATE");
    super::super::audit_queries::audit_queries!();
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// `pg_try_advisory_xact_lock` key of the feed sequencer ("fluxfeed").
const FEED_LOCK: i64 = 0x666c_7578_6665_6564;
/// Most events one sequencer pass numbers.
const FEED_BATCH: i64 = 10_000;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PgStore {
    pub(super) db: PgConnections,
}

impl PgStore {
    /// Connects a pool of `max_connections` to `url`.
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|err: sqlx::Error| StoreError::Unavailable(format!("database url: {err}")))?;
        let options = options.application_name("fluxpay-host");
        // A connection that broke within 30 s of its last use fails the one
        // request that finds it (the client retries under its idempotency
        // key) and is then dropped: checking every one before use would be
        // a round trip per checkout (see `pg_pool`).
        let db = PgConnections::connect(options, max_connections as usize, ACQUIRE_TIMEOUT).await?;
        Ok(PgStore { db })
    }

    pub(super) async fn close(&self) {
        self.db.close();
    }

    pub(super) async fn begin(&self, tenant: &str) -> Result<PgTx> {
        Ok(PgTx {
            tx: self.db.begin("BEGIN").await?,
            tenant: tenant.to_owned(),
            claimed: None,
            journal: Journal::default(),
            _open: super::WriteMark::new(),
        })
    }

    /// Numbers committed, unnumbered outbox rows (see the module docs).
    /// Returns 0 without waiting when another pass holds the lock.
    pub async fn sequence_feed(&self) -> Result<u64> {
        let mut tx = self.db.begin("BEGIN").await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(FEED_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            tx.rollback().await?;
            return Ok(0);
        }
        // `tops` is MATERIALIZED so each tenant's highest position is read
        // once, before the first insert: inlined, it was evaluated per row
        // and each evaluation stepped back over the rows this statement had
        // already inserted (21 ms instead of 3 ms for 500 events).
        let numbered = sqlx::query(
            "WITH pending AS ( \
               DELETE FROM outbox_unsequenced WHERE id IN \
                 (SELECT id FROM outbox_unsequenced ORDER BY id LIMIT $1) \
               RETURNING tenant_id, id), \
             numbered AS ( \
               SELECT tenant_id, id, \
                 row_number() OVER (PARTITION BY tenant_id ORDER BY id) AS n FROM pending), \
             tops AS MATERIALIZED ( \
               SELECT t.tenant_id, COALESCE((SELECT MAX(f.feed_seq) FROM outbox_feed f \
                 WHERE f.tenant_id = t.tenant_id), 0) AS top \
               FROM (SELECT DISTINCT tenant_id FROM pending) t) \
             INSERT INTO outbox_feed (tenant_id, feed_seq, event_row) \
             SELECT numbered.tenant_id, tops.top + numbered.n, numbered.id \
             FROM numbered JOIN tops USING (tenant_id)",
        )
        .bind(FEED_BATCH)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(numbered)
    }
}

impl Queries for PgStore {
    async fn ping(&self) -> Result<()> {
        pg_read!(self.db, |conn| sqlx::query("SELECT 1").execute(conn))?;
        Ok(())
    }

    async fn customer(&self, tenant: &str, customer_id: &str) -> Result<Option<CustomerRecord>> {
        pg_read!(self.db, |conn| q::customer(conn, tenant, customer_id))
    }

    async fn idempotency_record(&self, tenant: &str, key: &str) -> Result<Option<Claim>> {
        pg_read!(self.db, |conn| q::idempotency_record(conn, tenant, key))
    }

    async fn customer_and_account(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> Result<Option<(CustomerRecord, CreditAccountRecord)>> {
        pg_read!(self.db, |conn| q::customer_and_account(
            conn,
            tenant,
            customer_id
        ))
    }

    async fn credit_account(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> Result<Option<CreditAccountRecord>> {
        pg_read!(self.db, |conn| q::credit_account(conn, tenant, customer_id))
    }

    async fn credit_transactions(
        &self,
        tenant: &str,
        customer_id: &str,
        before_seq: i64,
        limit: i64,
    ) -> Result<Vec<CreditTransactionRecord>> {
        pg_read!(self.db, |conn| q::credit_transactions(
            conn,
            tenant,
            customer_id,
            before_seq,
            limit
        ))
    }

    async fn events(&self, tenant: &str, after: i64, limit: i64) -> Result<Vec<EventRecord>> {
        // Number what has committed since the last pass, so a consumer
        // polling the feed sees its own writes at once.
        self.sequence_feed().await?;
        pg_read!(self.db, |conn| sqlx::query_as::<_, EventRecord>(
            "SELECT f.feed_seq, o.event_id, o.type, o.source, o.subject, o.time, o.data, \
               o.transaction_id, o.request_id \
             FROM outbox_feed f JOIN outbox_events o ON o.id = f.event_row \
             WHERE f.tenant_id = $1 AND f.feed_seq > $2 ORDER BY f.feed_seq LIMIT $3",
        )
        .bind(tenant)
        .bind(after)
        .bind(limit)
        .fetch_all(conn))
    }
}

impl Transactions for PgStore {
    type Tx = PgTx;

    async fn begin(&self, tenant: &str) -> Result<PgTx> {
        PgStore::begin(self, tenant).await
    }
}

impl PgStore {
    async fn prune_outbox_tx(
        &self,
        tenant: &str,
        before_time: i64,
        through: i64,
        limit: i64,
    ) -> Result<u64> {
        let mut tx = self.begin(tenant).await?;
        // Feed rows have no foreign key to their events: both go. The
        // tenant's highest position stays: the sequencer numbers from it.
        let pruned = sqlx::query_scalar::<_, i64>(
            "WITH doomed AS ( \
               SELECT f.feed_seq, f.event_row FROM outbox_feed f \
                 JOIN outbox_events o ON o.id = f.event_row \
               WHERE f.tenant_id = $1 AND f.feed_seq <= $3 AND o.time < $2 \
                 AND f.feed_seq < (SELECT MAX(feed_seq) FROM outbox_feed WHERE tenant_id = $1) \
               ORDER BY f.feed_seq LIMIT $4), \
             gone_feed AS ( \
               DELETE FROM outbox_feed f USING doomed d \
               WHERE f.tenant_id = $1 AND f.feed_seq = d.feed_seq), \
             gone AS ( \
               DELETE FROM outbox_events o USING doomed d WHERE o.id = d.event_row \
               RETURNING 1) \
             SELECT COUNT(*) FROM gone",
        )
        .bind(tenant)
        .bind(before_time)
        .bind(through)
        .bind(limit)
        .fetch_one(&mut *tx.tx)
        .await?;
        if pruned > 0 {
            q::raise_pruned_watermark(&mut *tx.tx, tenant, before_time).await?;
        }
        tx.tx.commit().await?;
        Ok(pruned as u64)
    }
}

impl Maintenance for PgStore {
    async fn prune_outbox(
        &self,
        tenant: &str,
        before_time: i64,
        through: i64,
        limit: i64,
    ) -> Result<u64> {
        self.prune_outbox_tx(tenant, before_time, through, limit)
            .await
    }

    async fn migrate(&self) -> Result<()> {
        pg_read!(self.db, |conn| async {
            MIGRATOR.run_direct(conn).await.map_err(StoreError::from)
        })
    }

    async fn purge_idempotency(&self, tenant: &str, before_ms: i64) -> Result<u64> {
        pg_read!(self.db, |conn| q::purge_idempotency(
            conn, tenant, before_ms
        ))
    }

    async fn sequence_feed(&self) -> Result<u64> {
        PgStore::sequence_feed(self).await
    }

    async fn tenants(&self) -> Result<Vec<String>> {
        pg_read!(self.db, |conn| q::tenants(conn))
    }

    async fn audit_data(&self, tenant: &str) -> Result<AuditData> {
        // One snapshot for every aggregate, so writes that commit during the
        // audit cannot make a consistent ledger look inconsistent.
        let mut tx = self
            .db
            .begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let mut data = q::audit_data(&mut tx, tenant).await?;
        // An event committed but not yet numbered waits in
        // outbox_unsequenced; the sequencer moves it in one transaction.
        let feed = sqlx::query_as::<_, (String, String)>(
            "SELECT 'position ' || f.feed_seq, 'points to no event of this tenant' \
             FROM outbox_feed f LEFT JOIN outbox_events o \
               ON o.id = f.event_row AND o.tenant_id = f.tenant_id \
             WHERE f.tenant_id = $1 AND o.id IS NULL \
             UNION ALL \
             SELECT o.transaction_id, 'event ' || o.event_id || ' has ' || COUNT(*) \
               || ' feed positions' \
             FROM outbox_feed f JOIN outbox_events o ON o.id = f.event_row \
             WHERE f.tenant_id = $1 GROUP BY o.transaction_id, o.event_id HAVING COUNT(*) > 1 \
             UNION ALL \
             SELECT o.transaction_id, \
               'event ' || o.event_id || ' has no feed position and is not queued for one' \
             FROM outbox_events o WHERE o.tenant_id = $1 \
               AND NOT EXISTS (SELECT 1 FROM outbox_feed f \
                 WHERE f.tenant_id = $1 AND f.event_row = o.id) \
               AND NOT EXISTS (SELECT 1 FROM outbox_unsequenced u WHERE u.id = o.id)",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?;
        data.feed_problems = TransactionProblem::from_rows(feed);
        tx.rollback().await?;
        Ok(data)
    }

    async fn unapplied_migrations(&self) -> Result<Vec<i64>> {
        // sqlx's own listing would create its table first.
        let applied = pg_read!(self.db, |conn| async {
            let migrated: bool =
                sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                    .fetch_one(&mut *conn)
                    .await?;
            if !migrated {
                return Ok(Vec::new());
            }
            sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&mut *conn)
                .await
        })?;
        Ok(super::unapplied(&MIGRATOR, &applied))
    }
}

/// A write transaction.
pub struct PgTx {
    pub(super) tx: Lease,
    pub(super) tenant: String,
    claimed: Option<String>,
    journal: Journal,
    _open: super::WriteMark,
}

impl TxOps for PgTx {
    async fn claim_idempotency(&mut self, claim: &IdempotencyClaim) -> Result<Claim> {
        if insert_idempotency(&mut *self.tx, &self.tenant, claim).await? {
            self.claimed = Some(claim.key.clone());
            return Ok(Claim::Claimed);
        }
        // ON CONFLICT waited for the holder to commit: its row is visible
        // to this (read committed) statement.
        q::idempotency_record(&mut *self.tx, &self.tenant, &claim.key)
            .await?
            .ok_or_else(|| StoreError::Database("idempotency key vanished".into()))
    }

    async fn upsert_customer(
        &mut self,
        customer_id: &str,
        attributes: &str,
        now: i64,
    ) -> Result<CustomerUpsert> {
        if q::insert_customer(&mut self.tx, &self.tenant, customer_id, attributes, now).await? {
            return Ok(CustomerUpsert::Created(CustomerRecord {
                customer_id: customer_id.to_owned(),
                attributes: attributes.to_owned(),
                version: 1,
                created_at: now,
                updated_at: now,
            }));
        }
        let current = q::customer_for_update(&mut *self.tx, &self.tenant, customer_id)
            .await?
            .ok_or_else(|| StoreError::Database("customer vanished during upsert".into()))?;
        if current.attributes == attributes {
            return Ok(CustomerUpsert::Unchanged(current));
        }
        let updated =
            q::update_customer(&mut *self.tx, &self.tenant, customer_id, attributes, now).await?;
        Ok(CustomerUpsert::Updated(updated))
    }

    async fn credit_account(&mut self, customer_id: &str) -> Result<Option<CreditAccountRecord>> {
        q::credit_account(&mut *self.tx, &self.tenant, customer_id).await
    }

    async fn grant_credits(&mut self, grant: &GrantCredits) -> Result<GrantOutcome> {
        let expiring = if grant.expires_at.is_some() {
            grant.credits
        } else {
            0
        };
        let after = q::add_credits(
            &mut *self.tx,
            &self.tenant,
            &grant.customer_id,
            grant.credits,
            expiring,
            grant.now,
        )
        .await?;
        let Some(after) = after else {
            return Ok(
                match q::credit_account(&mut *self.tx, &self.tenant, &grant.customer_id).await? {
                    None => GrantOutcome::NoAccount,
                    Some(_) => GrantOutcome::Overflow,
                },
            );
        };
        q::insert_grant(&mut *self.tx, &self.tenant, grant, after.balance).await?;
        Ok(GrantOutcome::Granted(after))
    }

    async fn debit_credits(&mut self, debit: &DebitCredits) -> Result<DebitOutcome> {
        // The guarded debit and the use row in one round trip: the INSERT
        // reads the UPDATE's RETURNING, so it happens only if the guard held.
        let taken = sqlx::query_as::<_, (i64, i64, i64, i64, i64)>(
            "WITH account AS ( \
               UPDATE credit_accounts \
               SET balance = balance - $3, reserved = reserved - $15, \
                   spent_today = CASE WHEN spent_day = $4 THEN spent_today + $3 ELSE $3 END, \
                   spent_day = $4, version = version + 1, updated_at = $5 \
               WHERE tenant_id = $1 AND customer_id = $2 \
                 AND balance - reserved >= $3 - $15 AND reserved >= $15 \
                 AND (spent_day <> $4 OR spent_today <= $6 - $3) \
               RETURNING balance, reserved, spent_today, version, expiring), \
             used AS ( \
               INSERT INTO credit_uses (tenant_id, use_id, customer_id, kind, feature, units, \
                 charged, metadata, quote, policy, policy_hash, balance_after, created_at) \
               SELECT $1, $7, $2, $14, $8, $9, $3, $10, $11, $12, $13, account.balance, $5 \
               FROM account) \
             SELECT balance, reserved, spent_today, version, expiring FROM account",
        )
        .bind(&self.tenant)
        .bind(&debit.customer_id)
        .bind(debit.credits)
        .bind(utc_day(debit.now))
        .bind(debit.now)
        .bind(I64_MAX)
        .bind(&debit.use_id)
        .bind(&debit.feature)
        .bind(debit.units)
        .bind(&debit.metadata)
        .bind(&debit.quote)
        .bind(&debit.policy)
        .bind(&debit.policy_hash)
        .bind(debit.kind.as_str())
        .bind(debit.from_reserved)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some((balance, reserved, spent_today, version, expiring)) = taken else {
            return Ok(
                match q::credit_account(&mut *self.tx, &self.tenant, &debit.customer_id).await? {
                    None => DebitOutcome::NoAccount,
                    Some(account) => DebitOutcome::Insufficient(account),
                },
            );
        };
        if expiring > 0 {
            let grants =
                q::expiring_grants(&mut *self.tx, &self.tenant, &debit.customer_id).await?;
            let (updates, spent) = allocate_grants(&debit.customer_id, grants, debit.credits)?;
            for (grant_id, remaining) in &updates {
                q::set_grant_remaining(&mut *self.tx, &self.tenant, grant_id, *remaining).await?;
            }
            if spent > 0 {
                q::reduce_expiring(&mut *self.tx, &self.tenant, &debit.customer_id, spent).await?;
            }
        }
        Ok(DebitOutcome::Debited(AccountAfter {
            balance,
            reserved,
            spent_today,
            version,
        }))
    }

    async fn credit_use(&mut self, use_id: &str) -> Result<Option<CreditUseRecord>> {
        q::credit_use_for_update(&mut *self.tx, &self.tenant, use_id).await
    }

    async fn refund_credits(&mut self, refund: &RefundCredits) -> Result<RefundOutcome> {
        let Some(refunded) =
            q::add_refunded(&mut *self.tx, &self.tenant, &refund.use_id, refund.credits).await?
        else {
            let remaining = q::credit_use_for_update(&mut *self.tx, &self.tenant, &refund.use_id)
                .await?
                .map_or(0, |u| u.charged - u.refunded);
            return Ok(RefundOutcome::ExceedsRemaining { remaining });
        };
        let after = q::add_credits(
            &mut *self.tx,
            &self.tenant,
            &refund.customer_id,
            refund.credits,
            0,
            refund.now,
        )
        .await?;
        let Some(account) = after else {
            return Ok(RefundOutcome::Overflow);
        };
        q::insert_refund(&mut *self.tx, &self.tenant, refund, account.balance).await?;
        Ok(RefundOutcome::Refunded { account, refunded })
    }

    fn record(&mut self, journal: Journal) {
        self.journal.extend(journal);
    }

    async fn commit(mut self, response: Option<StoredResponse>) -> Result<()> {
        let journal = std::mem::take(&mut self.journal);
        let completion = match (&self.claimed, response) {
            (Some(key), Some(response)) => Some((key.clone(), response)),
            _ => None,
        };
        if !journal.is_empty() || completion.is_some() {
            flush(&mut self.tx, &self.tenant, &journal, completion).await?;
        }
        self.tx.commit().await?;
        Ok(())
    }

    async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// Writes a whole journal and the idempotent response in one statement:
/// each table gets one `INSERT … SELECT FROM UNNEST(arrays)` in a
/// data-modifying CTE. Foreign keys between them are deferred to commit.
async fn flush(
    conn: &mut PgConnection,
    tenant: &str,
    journal: &Journal,
    completion: Option<(String, StoredResponse)>,
) -> Result<()> {
    let n = journal.ledger.len();
    let mut l_id = Vec::with_capacity(n);
    let mut l_kind = Vec::with_capacity(n);
    let mut l_customer = Vec::with_capacity(n);
    let mut l_request = Vec::with_capacity(n);
    let mut l_at = Vec::with_capacity(n);
    let (mut p_id, mut p_line, mut p_account, mut p_unit, mut p_amount) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for entry in &journal.ledger {
        l_id.push(entry.transaction_id.clone());
        l_kind.push(entry.transaction.kind().as_str().to_owned());
        l_customer.push(entry.customer_id.clone());
        l_request.push(entry.request_id.clone());
        l_at.push(entry.created_at);
        for (index, posting) in entry.transaction.postings().iter().enumerate() {
            p_id.push(entry.transaction_id.clone());
            p_line.push(
                i16::try_from(index + 1)
                    .map_err(|_| StoreError::Corrupt("too many postings".into()))?,
            );
            p_account.push(posting.account.key());
            p_unit.push(posting.unit.as_str().to_owned());
            p_amount.push(posting.amount);
        }
    }
    let h = &journal.history;
    let e = &journal.events;
    let (status, body, key) = match completion {
        Some((key, response)) => (
            Some(i32::from(response.status)),
            Some(response.body),
            Some(key),
        ),
        None => (None, None, None),
    };
    sqlx::query(
        "WITH \
         lt AS (INSERT INTO ledger_transactions \
                  (tenant_id, transaction_id, kind, customer_id, request_id, created_at) \
                SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], \
                  $6::bigint[])), \
         lp AS (INSERT INTO ledger_postings \
                  (tenant_id, transaction_id, line, account, unit, amount) \
                SELECT $1, * FROM UNNEST($7::text[], $8::int2[], $9::text[], $10::text[], \
                  $11::bigint[])), \
         sh AS (INSERT INTO state_history (tenant_id, entity_type, entity_id, from_state, \
                  to_state, event, reason, actor, request_id, transaction_id, at) \
                SELECT $1, * FROM UNNEST($12::text[], $13::text[], $14::text[], $15::text[], \
                  $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], \
                  $21::bigint[])), \
         ob AS (INSERT INTO outbox_events \
                  (tenant_id, event_id, type, source, subject, time, data, transaction_id, \
                   request_id) \
                SELECT $1, * FROM UNNEST($22::text[], $23::text[], $24::text[], $25::text[], \
                  $26::bigint[], $27::text[], $28::text[], $32::text[]) \
                RETURNING id), \
         ou AS (INSERT INTO outbox_unsequenced (tenant_id, id) SELECT $1, id FROM ob), \
         ik AS (UPDATE idempotency_keys SET response_status = $29, response_body = $30 \
                WHERE tenant_id = $1 AND idem_key = $31) \
         SELECT 1",
    )
    .bind(tenant)
    .bind(l_id)
    .bind(l_kind)
    .bind(l_customer)
    .bind(l_request)
    .bind(l_at)
    .bind(p_id)
    .bind(p_line)
    .bind(p_account)
    .bind(p_unit)
    .bind(p_amount)
    .bind(
        h.iter()
            .map(|r| r.entity_type.to_owned())
            .collect::<Vec<_>>(),
    )
    .bind(h.iter().map(|r| r.entity_id.clone()).collect::<Vec<_>>())
    .bind(h.iter().map(|r| r.from_state.clone()).collect::<Vec<_>>())
    .bind(h.iter().map(|r| r.to_state.clone()).collect::<Vec<_>>())
    .bind(h.iter().map(|r| r.event.clone()).collect::<Vec<_>>())
    .bind(h.iter().map(|r| r.reason.clone()).collect::<Vec<_>>())
    .bind(h.iter().map(|r| r.actor.clone()).collect::<Vec<_>>())
    .bind(h.iter().map(|r| r.request_id.clone()).collect::<Vec<_>>())
    .bind(
        h.iter()
            .map(|r| r.transaction_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(h.iter().map(|r| r.at).collect::<Vec<_>>())
    .bind(e.iter().map(|r| r.event_id.clone()).collect::<Vec<_>>())
    .bind(
        e.iter()
            .map(|r| r.event_type.to_owned())
            .collect::<Vec<_>>(),
    )
    .bind(e.iter().map(|r| r.source.clone()).collect::<Vec<_>>())
    .bind(e.iter().map(|r| r.subject.clone()).collect::<Vec<_>>())
    .bind(e.iter().map(|r| r.time).collect::<Vec<_>>())
    .bind(e.iter().map(|r| r.data.clone()).collect::<Vec<_>>())
    .bind(
        e.iter()
            .map(|r| r.transaction_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(status)
    .bind(body)
    .bind(key)
    .bind(e.iter().map(|r| r.request_id.clone()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts the key; `false` when a committed row already holds it.
/// On PostgreSQL a concurrent uncommitted insert of the same key
/// makes this wait for that transaction to end first.
async fn insert_idempotency<'e, E>(ex: E, tenant: &str, claim: &IdempotencyClaim) -> Result<bool>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
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

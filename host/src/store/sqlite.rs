//! The embedded backend: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time. Rather than let several connections
//! race for the write lock (and sleep in the busy handler with growing
//! back-offs, which ruins tail latency), the store keeps exactly **one
//! writer connection**: write transactions queue for it, first come first
//! served, and share commits when they queue ([`super::sqlite_writer`]:
//! group commit). A group starts with `BEGIN IMMEDIATE`, so it holds the
//! write lock from its first statement and can never fail with SQLITE_BUSY
//! half-way (e.g. when `serve` and a `migrate` or an operator's sqlite3
//! shell share the file). Reads go to a separate pool of read-only
//! connections that WAL lets run alongside the writer.
//!
//! Because writes are serialised, insert order is commit order: an outbox
//! event's feed position is set at insert.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};

use super::error::{Result, StoreError};
use super::model::*;
use super::sqlite_writer::{RELEASE, Writer, WriterTx};
use super::{Maintenance, Queries, Transactions, TxOps, allocate_grants, utc_day};
use crate::config::{self, DatabaseConfig};

pub(super) mod q {
    super::super::queries::shared_queries!(db = sqlx::Sqlite, for_update = "");
    super::super::credit_queries::credit_queries!(for_update = "");
    super::super::audit_queries::audit_queries!();
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a request waits for a reader before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long SQLite itself waits for a lock held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite store: one writer connection, a pool of readers.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: Writer,
    /// How the writer connects (migrations open their own connection).
    writer_options: Arc<SqliteConnectOptions>,
    pub(super) reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub async fn open(path: &Path, config: &DatabaseConfig) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|err| {
                StoreError::Unavailable(format!("creating {}: {err}", dir.display()))
            })?;
        }
        let synchronous = match config.sqlite_synchronous {
            config::SqliteSynchronous::Full => SqliteSynchronous::Full,
            config::SqliteSynchronous::Normal => SqliteSynchronous::Normal,
        };
        let base = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let writer_options = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous);
        // The one writer lives as long as the store.
        let writer = Writer::new(SqliteConnection::connect_with(&writer_options).await?);
        // Readers open the file the writer created and switched to WAL.
        let reader = SqlitePoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(base.read_only(true))
            .await?;
        Ok(SqliteStore {
            writer,
            writer_options: Arc::new(writer_options),
            reader,
        })
    }

    pub(super) async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    pub(super) async fn begin(&self, tenant: &str) -> Result<SqliteTx> {
        let tx = self.writer.begin().await?;
        Ok(SqliteTx {
            tx,
            tenant: tenant.to_owned(),
            claimed: None,
            journal: Journal::default(),
        })
    }
}

impl Queries for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn customer(&self, tenant: &str, customer_id: &str) -> Result<Option<CustomerRecord>> {
        q::customer(&self.reader, tenant, customer_id).await
    }

    async fn credit_account(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> Result<Option<CreditAccountRecord>> {
        q::credit_account(&self.reader, tenant, customer_id).await
    }

    async fn credit_transactions(
        &self,
        tenant: &str,
        customer_id: &str,
        before_seq: i64,
        limit: i64,
    ) -> Result<Vec<CreditTransactionRecord>> {
        q::credit_transactions(&self.reader, tenant, customer_id, before_seq, limit).await
    }

    async fn events(&self, tenant: &str, after: i64, limit: i64) -> Result<Vec<EventRecord>> {
        Ok(sqlx::query_as::<_, EventRecord>(
            "SELECT feed_seq, event_id, type, source, subject, time, data, transaction_id \
             FROM outbox_events WHERE tenant_id = $1 AND feed_seq > $2 \
             ORDER BY feed_seq LIMIT $3",
        )
        .bind(tenant)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }
}

impl Transactions for SqliteStore {
    type Tx = SqliteTx;

    async fn begin(&self, tenant: &str) -> Result<SqliteTx> {
        SqliteStore::begin(self, tenant).await
    }
}

impl Maintenance for SqliteStore {
    async fn migrate(&self) -> Result<()> {
        self.writer.migrate(&MIGRATOR, &self.writer_options).await
    }

    async fn purge_idempotency(&self, tenant: &str, before_ms: i64) -> Result<u64> {
        let mut tx = self.begin(tenant).await?;
        let purged = q::purge_idempotency(&mut *tx.tx, tenant, before_ms).await?;
        tx.tx.commit().await?;
        Ok(purged)
    }

    async fn sequence_feed(&self) -> Result<u64> {
        Ok(0)
    }

    async fn tenants(&self) -> Result<Vec<String>> {
        q::tenants(&self.reader).await
    }

    async fn audit_data(&self, tenant: &str) -> Result<AuditData> {
        // One read transaction: every aggregate sees the same snapshot.
        let mut tx = self.reader.begin().await?;
        let mut data = q::audit_data(&mut tx, tenant).await?;
        // Positions are unique (a constraint) and set at insert.
        let feed = sqlx::query_as::<_, (String, String)>(
            "SELECT transaction_id, 'event ' || event_id || ' has no feed position' \
             FROM outbox_events WHERE tenant_id = $1 AND feed_seq IS NULL",
        )
        .bind(tenant)
        .fetch_all(&mut *tx)
        .await?;
        data.feed_problems = TransactionProblem::from_rows(feed);
        tx.rollback().await?;
        Ok(data)
    }
}

/// A write transaction on the writer connection.
pub struct SqliteTx {
    pub(super) tx: WriterTx,
    pub(super) tenant: String,
    claimed: Option<String>,
    journal: Journal,
}

impl TxOps for SqliteTx {
    async fn claim_idempotency(&mut self, claim: &IdempotencyClaim) -> Result<Claim> {
        if q::insert_idempotency(&mut *self.tx, &self.tenant, claim).await? {
            self.claimed = Some(claim.key.clone());
            return Ok(Claim::Claimed);
        }
        q::stored_idempotency(&mut *self.tx, &self.tenant, &claim.key)
            .await?
            .ok_or_else(|| StoreError::Database("idempotency key vanished".into()))
    }

    async fn upsert_customer(
        &mut self,
        customer_id: &str,
        attributes: &str,
        now: i64,
    ) -> Result<CustomerUpsert> {
        upsert_customer(&mut self.tx, &self.tenant, customer_id, attributes, now).await
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
        // The guarded debit and the use row in one round trip (two
        // statements, one hand-off to the worker thread): the INSERT runs
        // only if the UPDATE changed the row (`changes()`), and reads the
        // balance it left. PostgreSQL does the same with a CTE.
        let taken = sqlx::query_as::<_, (i64, i64, i64, i64, i64)>(
            "UPDATE credit_accounts \
             SET balance = balance - $3, \
                 spent_today = CASE WHEN spent_day = $4 THEN spent_today + $3 ELSE $3 END, \
                 spent_day = $4, version = version + 1, updated_at = $5 \
             WHERE tenant_id = $1 AND customer_id = $2 AND balance - reserved >= $3 \
               AND (spent_day <> $4 OR spent_today <= $6 - $3) \
             RETURNING balance, reserved, spent_today, version, expiring; \
             INSERT INTO credit_uses (tenant_id, use_id, customer_id, kind, feature, units, \
               charged, metadata, quote, policy, policy_hash, balance_after, created_at) \
             SELECT $1, $7, $2, $14, $8, $9, $3, $10, $11, $12, $13, balance, $5 \
             FROM credit_accounts WHERE tenant_id = $1 AND customer_id = $2 AND changes() = 1",
        )
        .bind(&self.tenant)
        .bind(&debit.customer_id)
        .bind(debit.credits)
        .bind(utc_day(debit.now))
        .bind(debit.now)
        .bind(i64::MAX)
        .bind(&debit.use_id)
        .bind(&debit.feature)
        .bind(debit.units)
        .bind(&debit.metadata)
        .bind(&debit.quote)
        .bind(&debit.policy)
        .bind(&debit.policy_hash)
        .bind(debit.kind.as_str())
        // `fetch_all` runs both statements to the end.
        .fetch_all(&mut *self.tx)
        .await?;
        let Some(&(balance, reserved, spent_today, version, expiring)) = taken.first() else {
            return Ok(
                match q::credit_account(&mut *self.tx, &self.tenant, &debit.customer_id).await? {
                    None => DebitOutcome::NoAccount,
                    Some(account) => DebitOutcome::Insufficient(account),
                },
            );
        };
        let after = AccountAfter {
            balance,
            reserved,
            spent_today,
            version,
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
        Ok(DebitOutcome::Debited(after))
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
        let completion = match (&self.claimed, &response) {
            (Some(key), Some(response)) => Some((key.as_str(), response)),
            _ => None,
        };
        match journal_flush(&self.tenant, &journal, completion)? {
            Some(mut flush) => {
                // The savepoint's release rides along with the journal.
                flush.push(RELEASE);
                flush.build().execute(&mut *self.tx).await?;
                self.tx.commit_released().await?;
            }
            None => self.tx.commit().await?,
        }
        Ok(())
    }

    async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// The whole journal and the idempotent response as **one** multi-statement
/// query: sqlx runs every SQLite statement on the connection's worker
/// thread, so each statement is a thread hand-off there and back while the
/// only writer is held; one query is one hand-off. Positional `?`
/// parameters run on across the statements. `None` when there is nothing
/// to write.
///
/// One writer: an event's feed position is the highest so far plus one
/// (read through the unique index on `feed_seq`), one statement per event
/// so each sees the one before.
fn journal_flush<'a>(
    tenant: &'a str,
    journal: &'a Journal,
    completion: Option<(&'a str, &'a StoredResponse)>,
) -> Result<Option<QueryBuilder<'a, Sqlite>>> {
    let mut q = QueryBuilder::<Sqlite>::new("");
    let mut statements = 0;
    if !journal.ledger.is_empty() {
        q.push(
            "INSERT INTO ledger_transactions \
               (tenant_id, transaction_id, kind, customer_id, request_id, created_at) ",
        );
        q.push_values(&journal.ledger, |mut row, entry| {
            row.push_bind(tenant)
                .push_bind(&entry.transaction_id)
                .push_bind(entry.transaction.kind().as_str())
                .push_bind(&entry.customer_id)
                .push_bind(&entry.request_id)
                .push_bind(entry.created_at);
        });
        q.push("; INSERT INTO ledger_postings (tenant_id, transaction_id, line, account, unit, amount) ");
        let mut postings = Vec::new();
        for entry in &journal.ledger {
            for (index, posting) in entry.transaction.postings().iter().enumerate() {
                let line = i16::try_from(index + 1).map_err(|_| {
                    StoreError::Corrupt("a transaction has too many postings".into())
                })?;
                postings.push((&entry.transaction_id, line, posting.account.key(), posting));
            }
        }
        q.push_values(postings, |mut row, (id, line, account, posting)| {
            row.push_bind(tenant)
                .push_bind(id)
                .push_bind(line)
                .push_bind(account)
                .push_bind(posting.unit.as_str().to_owned())
                .push_bind(posting.amount);
        });
        q.push("; ");
        statements += 2;
    }
    if !journal.history.is_empty() {
        q.push(
            "INSERT INTO state_history (tenant_id, entity_type, entity_id, from_state, \
               to_state, event, reason, actor, request_id, transaction_id, at) ",
        );
        q.push_values(&journal.history, |mut row, h| {
            row.push_bind(tenant)
                .push_bind(h.entity_type)
                .push_bind(&h.entity_id)
                .push_bind(&h.from_state)
                .push_bind(&h.to_state)
                .push_bind(&h.event)
                .push_bind(&h.reason)
                .push_bind(&h.actor)
                .push_bind(&h.request_id)
                .push_bind(&h.transaction_id)
                .push_bind(h.at);
        });
        q.push("; ");
        statements += 1;
    }
    for event in &journal.events {
        q.push(
            "INSERT INTO outbox_events (tenant_id, event_id, type, source, subject, time, data, \
               transaction_id, feed_seq) VALUES (",
        );
        let mut values = q.separated(", ");
        values
            .push_bind(tenant)
            .push_bind(&event.event_id)
            .push_bind(event.event_type)
            .push_bind(&event.source)
            .push_bind(&event.subject)
            .push_bind(event.time)
            .push_bind(&event.data)
            .push_bind(&event.transaction_id)
            .push("(SELECT COALESCE(MAX(feed_seq), 0) + 1 FROM outbox_events)");
        q.push("); ");
        statements += 1;
    }
    if let Some((key, response)) = completion {
        q.push("UPDATE idempotency_keys SET response_status = ");
        q.push_bind(i32::from(response.status));
        q.push(", response_body = ");
        q.push_bind(&response.body);
        q.push(" WHERE tenant_id = ");
        q.push_bind(tenant);
        q.push(" AND idem_key = ");
        q.push_bind(key);
        q.push("; ");
        statements += 1;
    }
    Ok((statements > 0).then_some(q))
}

async fn upsert_customer(
    tx: &mut SqliteConnection,
    tenant: &str,
    customer_id: &str,
    attributes: &str,
    now: i64,
) -> Result<CustomerUpsert> {
    if q::insert_customer(tx, tenant, customer_id, attributes, now).await? {
        return Ok(CustomerUpsert::Created(CustomerRecord {
            customer_id: customer_id.to_owned(),
            attributes: attributes.to_owned(),
            version: 1,
            created_at: now,
            updated_at: now,
        }));
    }
    let current = q::customer_for_update(&mut *tx, tenant, customer_id)
        .await?
        .ok_or_else(|| StoreError::Database("customer vanished during upsert".into()))?;
    if current.attributes == attributes {
        return Ok(CustomerUpsert::Unchanged(current));
    }
    let updated = q::update_customer(&mut *tx, tenant, customer_id, attributes, now).await?;
    Ok(CustomerUpsert::Updated(updated))
}

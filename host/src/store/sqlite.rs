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
//! connections that WAL lets run alongside the writer; the hottest read
//! (a `credits/use`'s customer and account) runs inline instead
//! ([`super::sqlite_reader`]).
//!
//! Because writes are serialised, insert order is commit order: an outbox
//! event's feed position is set at insert.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{OptionalExtension, params};
use sqlx::SqliteConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::error::{Result, StoreError};
use super::model::*;
use super::sqlite_checkpoint::{Checkpointer, WRITER_AUTOCHECKPOINT_PAGES};
use super::sqlite_jobs::{Jobs, Step};
use super::sqlite_reader::InlineReaders;
use super::sqlite_writer::{Batch, Writer, WriterTx};
use super::{Maintenance, Queries, Transactions, TxOps, WriteJobFn, allocate_grants, utc_day};
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
    /// Readers for the hot reads, run on the caller's thread.
    inline: Arc<InlineReaders>,
    checkpointer: Arc<Checkpointer>,
    /// Write jobs, run on the writer's own thread (`sqlite_jobs`).
    jobs: Jobs,
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
            .synchronous(synchronous)
            // Checkpoints are the checkpointer's (a safety net here).
            .pragma(
                "wal_autocheckpoint",
                WRITER_AUTOCHECKPOINT_PAGES.to_string(),
            )
            // Every request runs in a savepoint of its group, so SQLite
            // keeps a statement journal of the pages it changes; on disk
            // that is a temporary file per group and a write per page,
            // all on the one writer. In memory it is a copy per page, as
            // large as the transaction's changes (a 1,000-event usage
            // batch: megabytes; `tests/usage_volume.rs`).
            .pragma("temp_store", "memory");
        // The one writer lives as long as the store.
        let writer = Writer::open(&writer_options).await?;
        // Readers open the file the writer created and switched to WAL.
        let reader = SqlitePoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(base.read_only(true))
            .await?;
        let checkpointer = Arc::new(Checkpointer::start(
            writer_options.clone(),
            writer.wal_restart_flag(),
        ));
        Ok(SqliteStore {
            jobs: Jobs::start(writer.clone())?,
            writer,
            writer_options: Arc::new(writer_options),
            reader,
            inline: Arc::new(InlineReaders::new(path)),
            checkpointer,
        })
    }

    pub(super) async fn close(&self) {
        self.checkpointer.stop().await;
        self.reader.close().await;
        self.inline.close();
        self.writer.close().await;
    }

    pub(super) async fn begin(&self, tenant: &str) -> Result<SqliteTx> {
        Ok(SqliteTx::new(self.writer.begin().await?, tenant))
    }

    /// [`super::Store::write`]: on the writer's own thread.
    pub(super) async fn write<F, R, E>(&self, tenant: &str, job: F) -> std::result::Result<R, E>
    where
        F: WriteJobFn<R, E>,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.jobs.submit(tenant, job).await
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

    async fn idempotency_record(&self, tenant: &str, key: &str) -> Result<Option<Claim>> {
        q::idempotency_record(&self.reader, tenant, key).await
    }

    async fn customer_and_account(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> Result<Option<(CustomerRecord, CreditAccountRecord)>> {
        // Every `credits/use` starts with this read: inline, unless SQLite
        // is busy (`sqlite_reader`).
        let inline = self.inline.read(|conn| {
            conn.prepare_cached(super::queries::CUSTOMER_AND_ACCOUNT)?
                .query_row(params![tenant, customer_id], |row| {
                    let customer = CustomerRecord {
                        customer_id: row.get(0)?,
                        attributes: row.get(1)?,
                        version: row.get(2)?,
                        created_at: row.get(3)?,
                        updated_at: row.get(4)?,
                    };
                    let account = CreditAccountRecord {
                        customer_id: customer.customer_id.clone(),
                        balance: row.get(5)?,
                        reserved: row.get(6)?,
                        expiring: row.get(7)?,
                        spent_day: row.get(8)?,
                        spent_today: row.get(9)?,
                        version: row.get(10)?,
                        updated_at: row.get(11)?,
                    };
                    Ok((customer, account))
                })
                .optional()
        })?;
        match inline {
            Some(found) => Ok(found),
            None => q::customer_and_account(&self.reader, tenant, customer_id).await,
        }
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
            "SELECT feed_seq, event_id, type, source, subject, time, data, transaction_id, \
               request_id \
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

    async fn prune_outbox(
        &self,
        tenant: &str,
        before_time: i64,
        through: i64,
        limit: i64,
    ) -> Result<u64> {
        let mut tx = self.begin(tenant).await?;
        // The feed position is the row id (0009), and the next row takes
        // the highest one + 1: the highest row stays, so that no position
        // is ever given out twice.
        let pruned = sqlx::query(
            "DELETE FROM outbox_events WHERE feed_seq IN ( \
               SELECT feed_seq FROM outbox_events WHERE tenant_id = $1 \
                 AND feed_seq IS NOT NULL AND feed_seq <= $3 AND time < $2 \
                 AND feed_seq < (SELECT MAX(feed_seq) FROM outbox_events) \
               ORDER BY feed_seq LIMIT $4)",
        )
        .bind(tenant)
        .bind(before_time)
        .bind(through)
        .bind(limit)
        .execute(&mut *tx.tx)
        .await?
        .rows_affected();
        if pruned > 0 {
            q::raise_pruned_watermark(&mut *tx.tx, tenant, before_time).await?;
        }
        tx.tx.commit().await?;
        Ok(pruned)
    }

    async fn tenants(&self) -> Result<Vec<String>> {
        q::tenants(&self.reader).await
    }

    async fn audit_data(&self, tenant: &str) -> Result<AuditData> {
        // One read transaction: every aggregate sees the same snapshot.
        let mut tx = self.reader.begin().await?;
        // No feed check: an event's position is its rowid, so every event
        // has exactly one and no two share it (migration 0009).
        let data = q::audit_data(&mut tx, tenant).await?;
        tx.rollback().await?;
        Ok(data)
    }

    async fn unapplied_migrations(&self) -> Result<Vec<i64>> {
        // sqlx's own listing would create its table first.
        let migrated: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master \
               WHERE type = 'table' AND name = '_sqlx_migrations')",
        )
        .fetch_one(&self.reader)
        .await?;
        let applied: Vec<i64> = if migrated {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.reader)
                .await?
        } else {
            Vec::new()
        };
        Ok(super::unapplied(&MIGRATOR, &applied))
    }
}

/// A write transaction on the writer connection.
pub struct SqliteTx {
    pub(super) tx: WriterTx,
    pub(super) tenant: String,
    /// The idempotency key this transaction claimed, inserted at commit.
    claimed: Option<IdempotencyClaim>,
    journal: Journal,
    _open: super::WriteMark,
}

impl SqliteTx {
    pub(super) fn new(tx: WriterTx, tenant: &str) -> Self {
        SqliteTx {
            tx,
            tenant: tenant.to_owned(),
            claimed: None,
            journal: Journal::default(),
            _open: super::WriteMark::new(),
        }
    }

    /// Writes the journal, and the claimed key with `response` as its
    /// answer: what keeping this transaction's work takes, before its
    /// savepoint is released.
    fn flush(&self, response: Option<&StoredResponse>) -> Result<()> {
        let completion = self.claimed.as_ref().map(|claim| (claim, response));
        journal_flush(self.tx.raw(), &self.tenant, &self.journal, completion)
    }

    /// Ends a write job's transaction in its batch (`sqlite_jobs`): on
    /// [`Step::Keep`], writes the journal and the claimed key's answer and
    /// keeps the work; else undoes it. The first result is the job's (a
    /// failed write undoes its work alone); the second, the batch's (`Err`:
    /// the group was rolled back).
    pub(super) fn end_in_batch(self, step: Step) -> (Result<()>, Result<Batch>) {
        let flushed = match step {
            Step::Undo => return (Ok(()), self.tx.into_batch(false)),
            Step::Keep(response) => self.flush(response.as_ref()),
        };
        let kept = flushed.is_ok();
        (flushed, self.tx.into_batch(kept))
    }
}

impl TxOps for SqliteTx {
    async fn claim_idempotency(&mut self, claim: &IdempotencyClaim) -> Result<Claim> {
        // Inline (see `sqlite_writer`): the first statement of every
        // money-moving request. A lookup: the row is inserted once, with
        // its answer, at commit (`journal_flush`). Nothing can claim the
        // key in between, because this transaction holds the one writer
        // from here to its commit, and a request of the same group that
        // ran before this one has released its row into the group's
        // transaction, where the lookup finds it. Inserting the row here
        // and completing it at commit would write it twice.
        let raw = self.tx.raw();
        let stored = raw
            .prepare_cached(
                "SELECT fingerprint, response_status, response_body FROM idempotency_keys \
                 WHERE tenant_id = ?1 AND idem_key = ?2",
            )?
            .query_row(params![self.tenant, claim.key], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
        let Some((fingerprint, status, body)) = stored else {
            self.claimed = Some(claim.clone());
            return Ok(Claim::Claimed);
        };
        Ok(Claim::taken(fingerprint, status, body))
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
        // Inline (see `sqlite_writer`): the guarded debit, then the use row
        // with the balance it left.
        let raw = self.tx.raw();
        let taken = raw
            .prepare_cached(
                "UPDATE credit_accounts \
                 SET balance = balance - ?3, reserved = reserved - ?7, \
                     spent_today = CASE WHEN spent_day = ?4 THEN spent_today + ?3 ELSE ?3 END, \
                     spent_day = ?4, version = version + 1, updated_at = ?5 \
                 WHERE tenant_id = ?1 AND customer_id = ?2 \
                   AND balance - reserved >= ?3 - ?7 AND reserved >= ?7 \
                   AND (spent_day <> ?4 OR spent_today <= ?6 - ?3) \
                 RETURNING balance, reserved, spent_today, version, expiring",
            )?
            .query_row(
                params![
                    self.tenant,
                    debit.customer_id,
                    debit.credits,
                    utc_day(debit.now),
                    debit.now,
                    i64::MAX,
                    debit.from_reserved,
                ],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                        row.get::<_, i64>(3)?,
                        row.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()?;
        if let Some((balance, ..)) = taken {
            raw.prepare_cached(
                "INSERT INTO credit_uses (tenant_id, use_id, customer_id, kind, feature, units, \
                   charged, metadata, quote, policy, policy_hash, balance_after, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                self.tenant,
                debit.use_id,
                debit.customer_id,
                debit.kind.as_str(),
                debit.feature,
                debit.units,
                debit.credits,
                debit.metadata,
                debit.quote,
                debit.policy,
                debit.policy_hash,
                balance,
                debit.now,
            ])?;
        }
        let Some((balance, reserved, spent_today, version, expiring)) = taken else {
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

    async fn commit(self, response: Option<StoredResponse>) -> Result<()> {
        self.flush(response.as_ref())?;
        self.tx.commit().await
    }

    async fn rollback(self) -> Result<()> {
        self.tx.rollback().await?;
        Ok(())
    }
}

/// Writes the journal and the claimed idempotency key with its answer,
/// inline (see `sqlite_writer`): one cached statement per row, no round
/// trips.
///
/// An event's feed position is its rowid (`feed_seq INTEGER PRIMARY KEY`,
/// migration 0009): with one writer, the next rowid is the next position in
/// commit order.
fn journal_flush(
    raw: &rusqlite::Connection,
    tenant: &str,
    journal: &Journal,
    completion: Option<(&IdempotencyClaim, Option<&StoredResponse>)>,
) -> Result<()> {
    if !journal.ledger.is_empty() {
        let mut transaction = raw.prepare_cached(
            "INSERT INTO ledger_transactions \
               (tenant_id, transaction_id, kind, customer_id, request_id, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut posting = raw.prepare_cached(
            "INSERT INTO ledger_postings (tenant_id, transaction_id, line, account, unit, amount) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for entry in &journal.ledger {
            transaction.execute(params![
                tenant,
                entry.transaction_id,
                entry.transaction.kind().as_str(),
                entry.customer_id,
                entry.request_id,
                entry.created_at,
            ])?;
            for (index, p) in entry.transaction.postings().iter().enumerate() {
                let line = i16::try_from(index + 1).map_err(|_| {
                    StoreError::Corrupt("a transaction has too many postings".into())
                })?;
                posting.execute(params![
                    tenant,
                    entry.transaction_id,
                    line,
                    p.account.key(),
                    p.unit.as_str(),
                    p.amount,
                ])?;
            }
        }
    }
    if !journal.history.is_empty() {
        let mut history = raw.prepare_cached(
            "INSERT INTO state_history (tenant_id, entity_type, entity_id, from_state, \
               to_state, event, reason, actor, request_id, transaction_id, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for h in &journal.history {
            history.execute(params![
                tenant,
                h.entity_type,
                h.entity_id,
                h.from_state,
                h.to_state,
                h.event,
                h.reason,
                h.actor,
                h.request_id,
                h.transaction_id,
                h.at,
            ])?;
        }
    }
    if !journal.events.is_empty() {
        let mut event = raw.prepare_cached(
            "INSERT INTO outbox_events (tenant_id, event_id, type, source, subject, time, data, \
               transaction_id, request_id) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for e in &journal.events {
            event.execute(params![
                tenant,
                e.event_id,
                e.event_type,
                e.source,
                e.subject,
                e.time,
                e.data,
                e.transaction_id,
                e.request_id,
            ])?;
        }
    }
    if let Some((claim, response)) = completion {
        // Without an answer (no command commits so) the row still keeps
        // the key, as "in flight": answered with a conflict, never re-run.
        raw.prepare_cached(
            "INSERT INTO idempotency_keys \
               (tenant_id, idem_key, fingerprint, created_at, response_status, response_body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            tenant,
            claim.key,
            claim.fingerprint,
            claim.now,
            response.map(|r| i32::from(r.status)),
            response.map(|r| &r.body),
        ])?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseUrl;

    /// The store on the file at `path`, migrated.
    async fn migrated(path: &Path) -> SqliteStore {
        let config = DatabaseConfig {
            url: DatabaseUrl::Sqlite(path.to_owned()),
            max_connections: 1,
            sqlite_synchronous: config::SqliteSynchronous::Full,
            idempotency_retention_hours: 24,
            outbox_retention_days: 30,
        };
        let store = SqliteStore::open(path, &config).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// Both kinds of write transaction mark who holds them open, which is
    /// what the app layer's "no policy call in a write transaction"
    /// assertion reads: a transaction held by a task, and a write job on
    /// the writer's own thread.
    #[cfg(debug_assertions)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn write_transactions_are_seen_as_open_by_their_holder_only() {
        use super::super::{Finish, Store, write_transaction_open};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Sqlite(migrated(&dir.path().join("open.db")).await);
        let held = {
            let store = store.clone();
            tokio::spawn(async move {
                let tx = store.begin("t").await.unwrap();
                let open = write_transaction_open();
                tx.rollback().await.unwrap();
                (open, write_transaction_open())
            })
        };
        assert_eq!(held.await.unwrap(), (true, false));
        let in_job: bool = store
            .write("t", |_tx| {
                Box::pin(async { Ok::<_, StoreError>(Finish::Discard(write_transaction_open())) })
            })
            .await
            .unwrap();
        assert!(in_job, "a write job runs with its transaction open");
        assert!(!write_transaction_open());
    }

    /// The inline read (rusqlite, columns by position) and the pool's (sqlx,
    /// columns by name) agree on every field, and both are tenant-scoped.
    #[tokio::test]
    async fn the_inline_customer_and_account_read_matches_the_pools() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read.db");
        let store = migrated(&path).await;
        let tx = store.begin("t").await.unwrap();
        tx.tx
            .raw()
            .execute_batch(
                "INSERT INTO customers VALUES ('t', 'c', '{\"tier\":\"gold\"}', 3, 5, 7);
                 INSERT INTO credit_accounts VALUES ('t', 'c', 11, 2, 4, 19, 23, 29, 31);",
            )
            .unwrap();
        tx.tx.commit().await.unwrap();

        let inline = store.customer_and_account("t", "c").await.unwrap().unwrap();
        let pooled = q::customer_and_account(&store.reader, "t", "c")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(format!("{inline:?}"), format!("{pooled:?}"));
        let (customer, account) = inline;
        assert_eq!(
            (
                customer.attributes.as_str(),
                customer.version,
                customer.created_at,
                customer.updated_at
            ),
            ("{\"tier\":\"gold\"}", 3, 5, 7)
        );
        assert_eq!(
            (
                account.balance,
                account.reserved,
                account.expiring,
                account.spent_day,
                account.spent_today,
                account.version,
                account.updated_at
            ),
            (11, 2, 4, 19, 23, 29, 31)
        );
        assert!(
            store
                .customer_and_account("u", "c")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .customer_and_account("t", "d")
                .await
                .unwrap()
                .is_none()
        );
        store.close().await;
    }

    /// A database made by an older release, with history and events in it,
    /// migrated by this one: migration 0008 rebuilds both tables, and 0009
    /// the outbox again, with an event's feed position as its rowid.
    #[tokio::test]
    async fn rebuilt_history_and_outbox_keep_their_rows_and_positions_and_number_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        // The migrations as they were before 0008.
        let old = dir.path().join("migrations");
        std::fs::create_dir(&old).unwrap();
        let current = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
        for entry in std::fs::read_dir(current).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().as_ref() < "0008" {
                std::fs::copy(entry.path(), old.join(entry.file_name())).unwrap();
            }
        }
        let pool = SqlitePool::connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        for n in 1..=3 {
            sqlx::query(
                "INSERT INTO state_history (tenant_id, entity_type, entity_id, to_state, event, \
                   reason, actor, transaction_id, at) \
                 VALUES ('t', 'order', $1, 'PENDING', 'create', 'r', 'a', $1, 0)",
            )
            .bind(format!("o-{n}"))
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO outbox_events (tenant_id, event_id, type, source, subject, time, \
                   data, transaction_id, feed_seq) \
                 VALUES ('t', $1, 'order.created', 's', 'c', 0, '{}', $1, $2)",
            )
            .bind(format!("o-{n}"))
            .bind(n * 10)
            .execute(&pool)
            .await
            .unwrap();
        }
        // An event without a position, which no release wrote: it gets one
        // after every other, not a clash.
        sqlx::query(
            "INSERT INTO outbox_events (tenant_id, event_id, type, source, subject, time, \
               data, transaction_id) \
             VALUES ('t', 'o-4', 'order.created', 's', 'c', 0, '{}', 'o-4')",
        )
        .execute(&pool)
        .await
        .unwrap();
        // A row in the middle is gone: the copy keeps every id as it was.
        sqlx::query("DELETE FROM state_history WHERE entity_id = 'o-2'")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let store = migrated(&path).await;
        store.close().await;

        let pool = SqlitePool::connect_with(SqliteConnectOptions::new().filename(&path))
            .await
            .unwrap();
        let history: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, entity_id FROM state_history ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(history, [(1, "o-1".into()), (3, "o-3".into())]);
        // Every event keeps its feed position, so consumers' cursors stay valid.
        let events: Vec<(i64, String)> =
            sqlx::query_as("SELECT feed_seq, event_id FROM outbox_events ORDER BY feed_seq")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            events,
            [
                (10, "o-1".into()),
                (20, "o-2".into()),
                (30, "o-3".into()),
                (34, "o-4".into())
            ]
        );
        // New rows number on after the highest.
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO state_history (tenant_id, entity_type, entity_id, to_state, event, \
               reason, actor, transaction_id, at) \
             VALUES ('t', 'order', 'o-4', 'PENDING', 'create', 'r', 'a', 'o-4', 0) RETURNING id",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(id, 4);
        let position: i64 = sqlx::query_scalar(
            "INSERT INTO outbox_events (tenant_id, event_id, type, source, subject, time, data, \
               transaction_id) \
             VALUES ('t', 'o-5', 'order.created', 's', 'c', 0, '{}', 'o-5') RETURNING feed_seq",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(position, 35);
        // The constraints and indexes came back with the tables.
        let duplicate = sqlx::query(
            "INSERT INTO outbox_events (tenant_id, event_id, type, source, subject, time, data, \
               transaction_id) \
             VALUES ('t', 'o-1', 'order.created', 's', 'c', 0, '{}', 'o-1')",
        )
        .execute(&pool)
        .await
        .unwrap_err();
        assert!(duplicate.to_string().contains("UNIQUE"), "{duplicate}");
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' \
               AND tbl_name IN ('state_history', 'outbox_events') AND sql IS NOT NULL \
             ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        // The feed's, and the partial one of payment histories (0011).
        assert_eq!(
            indexes,
            ["outbox_events_feed_idx", "state_history_payment_idx"]
        );
        // The feed reads that index in position order, without a sort.
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
            "EXPLAIN QUERY PLAN SELECT feed_seq, data FROM outbox_events \
             WHERE tenant_id = 't' AND feed_seq > 10 ORDER BY feed_seq LIMIT 2",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let plan: Vec<&str> = plan.iter().map(|(.., detail)| detail.as_str()).collect();
        assert_eq!(
            plan,
            ["SEARCH outbox_events USING INDEX outbox_events_feed_idx (tenant_id=? AND rowid>?)"]
        );
        let autoincrement: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sqlite_master \
             WHERE name IN ('state_history', 'outbox_events') AND sql LIKE '%AUTOINCREMENT%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(autoincrement, 0);
    }
}

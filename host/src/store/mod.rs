//! Storage: one trait family, two backends — SQLite (the embedded default,
//! one file) and PostgreSQL (production). sqlx types never leave this module.
//!
//! - [`Queries`]: reads, outside any transaction.
//! - [`Transactions`] / [`TxOps`]: a write transaction opened for one tenant.
//!   Every money-moving command is exactly one of these: the state change
//!   (a guarded `UPDATE … RETURNING`), then [`TxOps::record`] of its
//!   [`Journal`] (ledger postings, state history, outbox events), then
//!   [`TxOps::commit`] with the idempotent response. The journal is buffered
//!   and written at commit in as few round trips as the backend allows.
//! - [`Maintenance`]: migrations' companions — idempotency purge, feed
//!   sequencing, tenant discovery and the auditor's aggregate reads.
//!
//! Every method takes the tenant id first; a transaction is opened for one
//! tenant and every statement in it filters by that tenant.
//!
//! [`Store`] and [`Tx`] dispatch to the backend chosen by the database URL,
//! so the rest of the host holds one concrete type.

/// Forwards a method to the backend inside an enum.
macro_rules! dispatch {
    ($self:expr, $inner:ident => $call:expr) => {
        match $self {
            $crate::store::Store::Sqlite($inner) => $call,
            $crate::store::Store::Postgres($inner) => $call,
        }
    };
}

macro_rules! dispatch_tx {
    ($self:expr, $inner:ident => $call:expr) => {
        match $self {
            $crate::store::Tx::Sqlite($inner) => $call,
            $crate::store::Tx::Postgres($inner) => $call,
        }
    };
}

// Feature modules (orders, subscriptions, usage, …) each define their own
// store traits next to their SQL and implement them for [`Store`]/[`Tx`] with
// these macros and for both backends, so a feature lives in one file.
mod audit_queries;
mod credit_expiry;
mod credit_queries;
mod error;
pub mod model;
mod open_writes;
mod orders;
mod payments;
mod pg_pool;
mod postgres;
mod queries;
mod relay;
mod renewals;
mod reservations;
mod sagas;
mod sqlite;
mod sqlite_checkpoint;
mod sqlite_inline;
mod sqlite_jobs;
mod sqlite_reader;
mod sqlite_writer;
mod subscriptions;
mod usage;

use std::future::Future;
use std::pin::Pin;

pub use credit_expiry::{CreditExpiryQueries, CreditExpiryTx, DueGrant, ExpireGrant};
pub use error::{Result, StoreError};
pub use model::*;
use open_writes::WriteMark;
pub use open_writes::write_transaction_open;
pub use orders::{NewOrder, OrderLineRecord, OrderQueries, OrderRecord, OrderSource, OrderTx};
pub use payments::{
    NewPayment, PaymentAttemptRecord, PaymentHealth, PaymentQueries, PaymentRecord,
    PaymentTransitionRecord, PaymentTx, PaymentUpdate,
};
pub use postgres::PgStore;
pub use relay::{RelayCursor, RelayEventRecord, RelayQueries, RelayTx, RelayTypeCounts};
pub use renewals::{PaymentMethodRecord, RenewalChargeRecord, RenewalQueries, RenewalTx};
pub use reservations::{ReservationQueries, ReservationRecord, ReservationTx, ReserveOutcome};
pub use sagas::{SagaQueries, SagaRecord, SagaTx};
pub use sqlite::SqliteStore;
pub use subscriptions::*;
pub use usage::*;

use crate::config::{DatabaseConfig, DatabaseUrl};

/// Reads outside a transaction (SQLite: the reader pool).
pub trait Queries: Send + Sync {
    /// Whether the database answers.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;

    /// A customer.
    fn customer(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> impl Future<Output = Result<Option<CustomerRecord>>> + Send;

    /// A customer and its credit account, as last committed (`None`: no
    /// such customer).
    fn customer_and_account(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> impl Future<Output = Result<Option<(CustomerRecord, CreditAccountRecord)>>> + Send;

    /// A customer's credit account (`None`: no such customer).
    fn credit_account(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> impl Future<Output = Result<Option<CreditAccountRecord>>> + Send;

    /// A customer's credit transactions, newest first, before `before_seq`.
    fn credit_transactions(
        &self,
        tenant: &str,
        customer_id: &str,
        before_seq: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<CreditTransactionRecord>>> + Send;

    /// What a request with idempotency key `key` left, as last committed
    /// (`None`: the key is free). A read: it claims nothing.
    fn idempotency_record(
        &self,
        tenant: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Claim>>> + Send;

    /// The tenant's events after feed position `after`, in feed order.
    fn events(
        &self,
        tenant: &str,
        after: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<EventRecord>>> + Send;
}

/// Opens write transactions.
pub trait Transactions: Send + Sync {
    /// The backend's transaction.
    type Tx: TxOps;

    /// Begins a write transaction for `tenant`.
    fn begin(&self, tenant: &str) -> impl Future<Output = Result<Self::Tx>> + Send;
}

/// What a write transaction can do. Dropping it without [`TxOps::commit`]
/// rolls it back.
pub trait TxOps: Send {
    /// The first statement of an idempotent command: claims the key, or
    /// reports who has it. A concurrent duplicate waits here until the
    /// holder commits or rolls back, so two effects can never both proceed.
    fn claim_idempotency(
        &mut self,
        claim: &IdempotencyClaim,
    ) -> impl Future<Output = Result<Claim>> + Send;

    /// Creates the customer (with an empty credit account) or replaces its
    /// attributes.
    fn upsert_customer(
        &mut self,
        customer_id: &str,
        attributes: &str,
        now: i64,
    ) -> impl Future<Output = Result<CustomerUpsert>> + Send;

    /// A customer's credit account, locked until the transaction ends.
    fn credit_account(
        &mut self,
        customer_id: &str,
    ) -> impl Future<Output = Result<Option<CreditAccountRecord>>> + Send;

    /// Adds credits and records the grant.
    fn grant_credits(
        &mut self,
        grant: &GrantCredits,
    ) -> impl Future<Output = Result<GrantOutcome>> + Send;

    /// The guarded debit: takes the credits only if the available balance
    /// covers them, records the use, and spends expiring grants first.
    fn debit_credits(
        &mut self,
        debit: &DebitCredits,
    ) -> impl Future<Output = Result<DebitOutcome>> + Send;

    /// A credit use, locked for a refund.
    fn credit_use(
        &mut self,
        use_id: &str,
    ) -> impl Future<Output = Result<Option<CreditUseRecord>>> + Send;

    /// Gives back credits of a use, never past what it charged.
    fn refund_credits(
        &mut self,
        refund: &RefundCredits,
    ) -> impl Future<Output = Result<RefundOutcome>> + Send;

    /// Buffers ledger postings, history rows and outbox events; they are
    /// written by [`TxOps::commit`].
    fn record(&mut self, journal: Journal);

    /// Writes the journal and the idempotent response (when a key was
    /// claimed), then commits.
    fn commit(self, response: Option<StoredResponse>) -> impl Future<Output = Result<()>> + Send;

    /// Rolls back (also what dropping does; this one reports errors).
    fn rollback(self) -> impl Future<Output = Result<()>> + Send;
}

/// Housekeeping and the auditor's reads.
pub trait Maintenance: Send + Sync {
    /// Applies pending migrations.
    fn migrate(&self) -> impl Future<Output = Result<()>> + Send;

    /// Deletes the tenant's idempotency records created before `before_ms`.
    fn purge_idempotency(
        &self,
        tenant: &str,
        before_ms: i64,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Gives committed outbox events their feed positions (PostgreSQL; a
    /// no-op on SQLite, which numbers at insert). Returns how many.
    fn sequence_feed(&self) -> impl Future<Output = Result<u64>> + Send;

    /// Removes up to `limit` of the tenant's numbered events older than
    /// `before_time` and at or before feed position `through` (what every
    /// sink has published), oldest first, and raises the tenant's pruned
    /// watermark to `before_time`; how many went.
    fn prune_outbox(
        &self,
        tenant: &str,
        before_time: i64,
        through: i64,
        limit: i64,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Every tenant with data in the database.
    fn tenants(&self) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// What the auditor checks, for one tenant.
    fn audit_data(&self, tenant: &str) -> impl Future<Output = Result<AuditData>> + Send;

    /// Versions of this build's migrations that the database has not
    /// applied (every one, for a database that was never migrated). Reads
    /// only: nothing is created.
    fn unapplied_migrations(&self) -> impl Future<Output = Result<Vec<i64>>> + Send;
}

/// The versions of `migrator` missing from `applied`, in order.
fn unapplied(migrator: &sqlx::migrate::Migrator, applied: &[i64]) -> Vec<i64> {
    migrator
        .iter()
        .map(|m| m.version)
        .filter(|version| !applied.contains(version))
        .collect()
}

/// The store the host runs on.
#[derive(Clone, Debug)]
pub enum Store {
    /// Embedded SQLite.
    Sqlite(SqliteStore),
    /// PostgreSQL.
    Postgres(PgStore),
}

/// A write transaction of either backend.
pub enum Tx {
    /// SQLite.
    Sqlite(sqlite::SqliteTx),
    /// PostgreSQL.
    Postgres(postgres::PgTx),
}

/// A boxed future that may borrow for `'a`: what a write job returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A write job ([`Store::write`]): given the transaction, it does its work
/// and says how the transaction ends.
pub trait WriteJobFn<R, E>:
    for<'a> FnOnce(&'a mut Tx) -> BoxFuture<'a, std::result::Result<Finish<R>, E>> + Send + 'static
{
}

impl<F, R, E> WriteJobFn<R, E> for F where
    F: for<'a> FnOnce(&'a mut Tx) -> BoxFuture<'a, std::result::Result<Finish<R>, E>>
        + Send
        + 'static
{
}

/// How a write job ([`Store::write`]) ends its transaction.
pub enum Finish<R> {
    /// Keep its work: the journal is written, with `response` as the
    /// claimed idempotency key's answer, and `value` is returned once the
    /// transaction has committed.
    Commit {
        /// The answer stored for the idempotency key.
        response: Option<StoredResponse>,
        /// What the caller gets.
        value: R,
    },
    /// Undo its work (a replay, a request that changed nothing) and return
    /// `value` once what it read is durable.
    Discard(R),
}

impl Store {
    /// Runs `job` as one write transaction for `tenant` and returns its
    /// value once committed; a job's error undoes its work. On SQLite the
    /// job runs on the writer's own thread, back to back with the other
    /// jobs of its group (`sqlite_jobs`); it must use only the transaction
    /// it is given, and await every statement it starts to its end (no
    /// `select!` or timeout around one). On PostgreSQL it runs here, in a
    /// transaction of its own.
    pub async fn write<F, R, E>(&self, tenant: &str, job: F) -> std::result::Result<R, E>
    where
        F: WriteJobFn<R, E>,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        match self {
            Store::Sqlite(store) => store.write(tenant, job).await,
            Store::Postgres(store) => {
                let mut tx = Tx::Postgres(store.begin(tenant).await?);
                match job(&mut tx).await {
                    Ok(Finish::Commit { response, value }) => {
                        tx.commit(response).await?;
                        Ok(value)
                    }
                    Ok(Finish::Discard(value)) => {
                        tx.rollback().await?;
                        Ok(value)
                    }
                    Err(err) => {
                        // Its error stands whether or not the rollback
                        // answers: an unfinished transaction is undone.
                        let _ = tx.rollback().await;
                        Err(err)
                    }
                }
            }
        }
    }

    /// Connects to the configured database (creating an SQLite file and its
    /// directory when missing). Does not migrate: see [`Maintenance::migrate`].
    pub async fn connect(config: &DatabaseConfig) -> Result<Store> {
        match &config.url {
            DatabaseUrl::Sqlite(path) => Ok(Store::Sqlite(SqliteStore::open(path, config).await?)),
            DatabaseUrl::Postgres(url) => Ok(Store::Postgres(
                PgStore::connect(url.expose(), config.max_connections).await?,
            )),
        }
    }

    /// Connects and migrates: what `serve` does at start-up.
    pub async fn open(config: &DatabaseConfig) -> Result<Store> {
        let store = Store::connect(config).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Closes every connection (waits for those in use to be returned).
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }
}

impl Queries for Store {
    async fn ping(&self) -> Result<()> {
        dispatch!(self, s => s.ping().await)
    }

    async fn customer(&self, tenant: &str, customer_id: &str) -> Result<Option<CustomerRecord>> {
        dispatch!(self, s => s.customer(tenant, customer_id).await)
    }

    async fn customer_and_account(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> Result<Option<(CustomerRecord, CreditAccountRecord)>> {
        dispatch!(self, s => s.customer_and_account(tenant, customer_id).await)
    }

    async fn credit_account(
        &self,
        tenant: &str,
        customer_id: &str,
    ) -> Result<Option<CreditAccountRecord>> {
        dispatch!(self, s => s.credit_account(tenant, customer_id).await)
    }

    async fn credit_transactions(
        &self,
        tenant: &str,
        customer_id: &str,
        before_seq: i64,
        limit: i64,
    ) -> Result<Vec<CreditTransactionRecord>> {
        dispatch!(self, s => s.credit_transactions(tenant, customer_id, before_seq, limit).await)
    }

    async fn idempotency_record(&self, tenant: &str, key: &str) -> Result<Option<Claim>> {
        dispatch!(self, s => s.idempotency_record(tenant, key).await)
    }

    async fn events(&self, tenant: &str, after: i64, limit: i64) -> Result<Vec<EventRecord>> {
        dispatch!(self, s => s.events(tenant, after, limit).await)
    }
}

impl Transactions for Store {
    type Tx = Tx;

    async fn begin(&self, tenant: &str) -> Result<Tx> {
        match self {
            Store::Sqlite(s) => Ok(Tx::Sqlite(s.begin(tenant).await?)),
            Store::Postgres(s) => Ok(Tx::Postgres(s.begin(tenant).await?)),
        }
    }
}

impl TxOps for Tx {
    async fn claim_idempotency(&mut self, claim: &IdempotencyClaim) -> Result<Claim> {
        dispatch_tx!(self, t => t.claim_idempotency(claim).await)
    }

    async fn upsert_customer(
        &mut self,
        customer_id: &str,
        attributes: &str,
        now: i64,
    ) -> Result<CustomerUpsert> {
        dispatch_tx!(self, t => t.upsert_customer(customer_id, attributes, now).await)
    }

    async fn credit_account(&mut self, customer_id: &str) -> Result<Option<CreditAccountRecord>> {
        dispatch_tx!(self, t => t.credit_account(customer_id).await)
    }

    async fn grant_credits(&mut self, grant: &GrantCredits) -> Result<GrantOutcome> {
        dispatch_tx!(self, t => t.grant_credits(grant).await)
    }

    async fn debit_credits(&mut self, debit: &DebitCredits) -> Result<DebitOutcome> {
        dispatch_tx!(self, t => t.debit_credits(debit).await)
    }

    async fn credit_use(&mut self, use_id: &str) -> Result<Option<CreditUseRecord>> {
        dispatch_tx!(self, t => t.credit_use(use_id).await)
    }

    async fn refund_credits(&mut self, refund: &RefundCredits) -> Result<RefundOutcome> {
        dispatch_tx!(self, t => t.refund_credits(refund).await)
    }

    fn record(&mut self, journal: Journal) {
        dispatch_tx!(self, t => t.record(journal))
    }

    async fn commit(self, response: Option<StoredResponse>) -> Result<()> {
        dispatch_tx!(self, t => t.commit(response).await)
    }

    async fn rollback(self) -> Result<()> {
        dispatch_tx!(self, t => t.rollback().await)
    }
}

impl Maintenance for Store {
    async fn migrate(&self) -> Result<()> {
        dispatch!(self, s => s.migrate().await)
    }

    async fn purge_idempotency(&self, tenant: &str, before_ms: i64) -> Result<u64> {
        dispatch!(self, s => s.purge_idempotency(tenant, before_ms).await)
    }

    async fn sequence_feed(&self) -> Result<u64> {
        dispatch!(self, s => s.sequence_feed().await)
    }

    async fn prune_outbox(
        &self,
        tenant: &str,
        before_time: i64,
        through: i64,
        limit: i64,
    ) -> Result<u64> {
        dispatch!(self, s => s.prune_outbox(tenant, before_time, through, limit).await)
    }

    async fn tenants(&self) -> Result<Vec<String>> {
        dispatch!(self, s => s.tenants().await)
    }

    async fn audit_data(&self, tenant: &str) -> Result<AuditData> {
        dispatch!(self, s => s.audit_data(tenant).await)
    }

    async fn unapplied_migrations(&self) -> Result<Vec<i64>> {
        dispatch!(self, s => s.unapplied_migrations().await)
    }
}

/// Credits spent on a grant allocation: which expiring grants a debit takes
/// from (soonest expiry first, by the domain's rule) and how much in total.
fn allocate_grants(
    customer_id: &str,
    grants: Vec<(String, i64, i64, i64)>,
    credits: i64,
) -> Result<(Vec<(String, i64)>, i64)> {
    use crate::domain::credit::CreditGrant;
    use crate::domain::{CreditGrantId, CustomerId, PositiveCredits, Timestamp};
    let corrupt = |e: crate::domain::DomainError| StoreError::Corrupt(e.to_string());
    let customer = CustomerId::new(customer_id).map_err(corrupt)?;
    let mut restored = Vec::with_capacity(grants.len());
    for (id, granted, remaining, expires_at) in grants {
        restored.push(
            CreditGrant::restore(
                CreditGrantId::new(id).map_err(corrupt)?,
                customer.clone(),
                PositiveCredits::new(granted).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                crate::domain::Credits(remaining),
                Some(Timestamp::from_unix_millis(expires_at)),
            )
            .map_err(corrupt)?,
        );
    }
    let before: std::collections::HashMap<String, i64> = restored
        .iter()
        .map(|g| (g.id().to_string(), g.remaining().value()))
        .collect();
    let changed = CreditGrant::allocate(&restored, crate::domain::Credits(credits));
    let mut taken = 0i64;
    let mut updates = Vec::with_capacity(changed.len());
    for grant in changed {
        let id = grant.id().to_string();
        let was = before.get(&id).copied().unwrap_or_default();
        taken += was - grant.remaining().value();
        updates.push((id, grant.remaining().value()));
    }
    Ok((updates, taken))
}

/// The UTC day (days since the epoch) of an instant: `spent_today` resets
/// when it changes.
pub fn utc_day(now_ms: i64) -> i64 {
    now_ms.div_euclid(86_400_000)
}

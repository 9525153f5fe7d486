//! Group commit for SQLite's single writer.
//!
//! SQLite has one writer, so write transactions run one after another on
//! one connection. Committing each of them on its own costs, per request,
//! a WAL append of every page it touched (the right-most leaves of the
//! ledger, history and outbox indexes are the same pages for consecutive
//! requests) and, with `synchronous = full`, an fsync: under load that,
//! not the SQL, bounds throughput.
//!
//! So write transactions that queue behind each other share one database
//! transaction (a *group*): the first `BEGIN IMMEDIATE`s; each request runs
//! inside its own `SAVEPOINT`, which it releases on success or rolls back on
//! failure (undoing only its own work); and whoever finishes while nobody is
//! queued behind it — or when the group is full or old — `COMMIT`s. A
//! request's [`WriterTx::commit`] returns only once the group's `COMMIT`
//! has succeeded, so nothing is acknowledged that is not durable; if the
//! `COMMIT` fails, every request of the group gets the error and none of
//! them took effect. Under no contention a group has one member and this is
//! exactly a transaction per request.
//!
//! Requests still run one at a time, in queue order, so they see each
//! other's released work as any serial schedule would, and insert order
//! stays commit order (the feed relies on it).
//!
//! Hand-rolled because connection pools and sqlx transactions have no
//! notion of sharing a transaction across requests.
//!
//! Write jobs (`sqlite_jobs`) take their turn in the same queue: the
//! writer's own thread waits for the connection like any request, runs a
//! batch of jobs as members of a group (joining one handed on to it), and
//! commits it.
//!
//! # Inline statements
//!
//! The writer is the one serial resource, so what bounds throughput is how
//! long each request holds it. sqlx runs every SQLite statement on the
//! connection's worker thread: a statement is a hand-off there and back,
//! and under load the request's task then waits for a busy runtime thread
//! before it can send the next one — a `credits/use` held the writer
//! ~280 µs, most of it in four such round trips (BENCHMARKS.md). So the
//! statements of a request's savepoint (and the savepoint bookkeeping) can
//! also run **inline**, on the request's own thread, through a
//! [`rusqlite::Connection`] wrapped around the *same* database handle
//! ([`WriterTx::raw`]): no hand-off, no await, and so no way for a
//! cancelled caller to stop between two of them. They are short: inside
//! the group's transaction the write lock is held, so nothing waits for
//! another process and nothing touches the disk before `COMMIT`. The two
//! statements that can block stay on sqlx's worker thread, as does every
//! statement written against sqlx: `COMMIT` (fsync), and `BEGIN IMMEDIATE`
//! when another process holds the write lock (it is tried inline first,
//! without waiting).
//!
//! Sharing the handle is safe because only the holder of the writer's slot
//! uses either side, one statement at a time, and a sqlx statement is
//! always awaited to its end before the next inline one, with one
//! exception the code handles: a caller cancelled while a sqlx statement
//! runs, whose undo is then queued behind that statement on sqlx's thread
//! rather than run inline ([`WriterTx`]'s `Drop`). The connection is
//! opened `serialized` as well, so SQLite's own mutex would keep even a
//! mistake in that reasoning from becoming a data race.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Connection, SqliteConnection};
use tokio::sync::{Mutex, OwnedMutexGuard, watch};

use super::error::{Result, StoreError};

/// How long a request waits for the writer before giving up.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most requests in one group: bounds how much one failed `COMMIT` undoes.
const MAX_MEMBERS: usize = 64;
/// Oldest a group may get before the next member commits it: bounds the
/// latency a member adds to those waiting for the group.
const MAX_AGE: Duration = Duration::from_millis(10);
/// How long a finished member waits for the group's outcome before it
/// checks whether the group was left with nobody to commit it (the request
/// queued behind it was cancelled).
const STALL_CHECK: Duration = Duration::from_millis(25);
/// Prepared statements kept for inline use: a `credits/use` alone runs ten
/// distinct ones, besides the savepoint statements.
const INLINE_STATEMENT_CACHE: usize = 64;

/// What a group's `COMMIT` came to, shared with every member.
type Outcome = Option<std::result::Result<(), StoreError>>;

/// The writer connection and the group open on it.
pub(super) struct Slot {
    /// `conn`'s database handle, for inline statements. Declared before
    /// `conn` so that it is dropped first: its prepared statements must be
    /// finalised before `conn` closes the handle. `None` once closed.
    raw: Option<rusqlite::Connection>,
    /// `None` once the store is closed.
    conn: Option<SqliteConnection>,
    group: Option<Arc<Group>>,
}

struct Group {
    members: AtomicUsize,
    /// When it stops taking members ([`MAX_AGE`] after it began).
    closes: Instant,
    outcome: watch::Sender<Outcome>,
}

impl Group {
    fn new(max_age: Duration) -> Self {
        Group {
            members: AtomicUsize::new(0),
            closes: Instant::now() + max_age,
            outcome: watch::Sender::new(None),
        }
    }

    fn open_to_more(&self) -> bool {
        self.members.load(Ordering::SeqCst) < MAX_MEMBERS && Instant::now() < self.closes
    }
}

/// The single writer connection, handed to write transactions in turn.
#[derive(Clone)]
pub(super) struct Writer {
    slot: Arc<Mutex<Slot>>,
    /// Write transactions waiting for the connection.
    queued: Arc<AtomicUsize>,
    /// Group `COMMIT`s so far (tests check that requests share them).
    commits: Arc<AtomicUsize>,
    /// How long `BEGIN IMMEDIATE` waits for another process's write lock
    /// (the connection's busy timeout).
    busy_timeout: Duration,
    /// See [`Writer::wal_restart_flag`].
    wal_restart_due: Arc<AtomicBool>,
    /// [`MAX_AGE`], but for tests that need a group to stay open while
    /// they arrange who joins it.
    max_age: Duration,
}

impl fmt::Debug for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writer")
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Counts a waiter for as long as it waits (also when it is cancelled).
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Queued(counter)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

const SAVEPOINT: &str = "SAVEPOINT fluxpay_request";
const RELEASE: &str = "RELEASE fluxpay_request";
const UNDO: &str = "ROLLBACK TO fluxpay_request; RELEASE fluxpay_request";

impl Writer {
    /// Opens the writer connection (`serialized`: see the module docs).
    pub(super) async fn open(options: &SqliteConnectOptions) -> Result<Self> {
        let mut conn = SqliteConnection::connect_with(&options.clone().serialized(true)).await?;
        let handle = conn.lock_handle().await?.as_raw_handle();
        // SAFETY: `handle` is `conn`'s open database handle. It stays valid
        // for as long as `raw` lives: the slot owns both, drops `raw` first
        // (field order, and `close`), and `raw` never closes a handle it
        // was given. The two are used one at a time (module docs), and the
        // handle is serialized besides.
        let raw = unsafe { rusqlite::Connection::from_handle(handle.as_ptr()) }?;
        raw.set_prepared_statement_cache_capacity(INLINE_STATEMENT_CACHE);
        let busy_ms: u64 = raw.query_row("PRAGMA busy_timeout", [], |row| row.get(0))?;
        Ok(Writer {
            slot: Arc::new(Mutex::new(Slot {
                raw: Some(raw),
                conn: Some(conn),
                group: None,
            })),
            queued: Arc::new(AtomicUsize::new(0)),
            commits: Arc::new(AtomicUsize::new(0)),
            busy_timeout: Duration::from_millis(busy_ms),
            wal_restart_due: Arc::new(AtomicBool::new(false)),
            max_age: MAX_AGE,
        })
    }

    /// A write transaction: joins the open group or begins one.
    pub(super) async fn begin(&self) -> Result<WriterTx> {
        let mut slot = {
            let _queued = Queued::new(&self.queued);
            tokio::time::timeout(ACQUIRE_TIMEOUT, self.slot.clone().lock_owned())
                .await
                .map_err(|_| {
                    StoreError::Unavailable("timed out waiting for the database writer".into())
                })?
        };
        if let Some(group) = slot.group.clone() {
            // Joining: one inline statement, nothing to cancel half-way.
            if let Err(err) = inline_prepared(&slot, SAVEPOINT) {
                // The group's transaction is unusable: end it for everyone.
                abort(&mut slot, &group, err.clone());
                return Err(err);
            }
            return Ok(self.member(slot, group));
        }
        // Starting a group. `BEGIN IMMEDIATE` takes the write lock, which
        // another process (an operator's shell, a `migrate`) may hold: try
        // inline without waiting, which is all it takes when the lock is
        // free.
        if self.try_begin_inline(&slot)? {
            return Ok(self.first_member(slot));
        }
        // It is taken: wait for it (busy timeout) on sqlx's thread, in a
        // task of its own, so that a caller cancelled meanwhile cannot leave
        // the connection in a transaction that no group knows about. A
        // transaction nobody takes is dropped, which undoes it.
        let writer = self.clone();
        tokio::spawn(async move {
            let conn = conn_of(&mut slot)?;
            exec(conn, "BEGIN IMMEDIATE; SAVEPOINT fluxpay_request")
                .await
                .inspect_err(|_| {
                    // Undo a `BEGIN` whose `SAVEPOINT` failed (fails
                    // harmlessly when there is nothing to undo).
                    let _ = inline(&slot, "ROLLBACK");
                })?;
            Ok(writer.first_member(slot))
        })
        .await
        .map_err(task_failed)?
    }

    /// `BEGIN IMMEDIATE` and the first savepoint, inline, if the write lock
    /// is free right now; `false` if another process holds it.
    fn try_begin_inline(&self, slot: &Slot) -> Result<bool> {
        let raw = slot.raw.as_ref().ok_or_else(closed)?;
        raw.busy_timeout(Duration::ZERO)?;
        let begun = prepared(raw, "BEGIN IMMEDIATE");
        raw.busy_timeout(self.busy_timeout)?;
        match begun {
            Ok(()) => {}
            Err(rusqlite::Error::SqliteFailure(failure, _))
                if failure.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                return Ok(false);
            }
            Err(err) => return Err(err.into()),
        }
        if let Err(err) = prepared(raw, SAVEPOINT) {
            let _ = raw.execute_batch("ROLLBACK");
            return Err(err.into());
        }
        Ok(true)
    }

    /// The transaction that began a new group on `slot`.
    fn first_member(&self, mut slot: OwnedMutexGuard<Slot>) -> WriterTx {
        let group = Arc::new(Group::new(self.max_age));
        slot.group = Some(group.clone());
        self.member(slot, group)
    }

    fn member(&self, slot: OwnedMutexGuard<Slot>, group: Arc<Group>) -> WriterTx {
        group.members.fetch_add(1, Ordering::SeqCst);
        WriterTx {
            slot: Some(slot),
            group,
            writer: self.clone(),
            sqlx_used: false,
            in_batch: false,
        }
    }

    /// Applies `migrator` through a connection of its own opened with
    /// `options`, while no write transaction runs.
    pub(super) async fn migrate(
        &self,
        migrator: &'static sqlx::migrate::Migrator,
        options: &SqliteConnectOptions,
    ) -> Result<()> {
        let _slot = self.slot.clone().lock_owned().await;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        let migrated = migrator.run(&pool).await;
        pool.close().await;
        migrated?;
        Ok(())
    }

    /// Closes the connection once the transactions queued before have
    /// finished.
    pub(super) async fn close(&self) {
        let mut slot = self.slot.clone().lock_owned().await;
        if let Some(group) = slot.group.clone() {
            abort(
                &mut slot,
                &group,
                StoreError::Unavailable("the store was closed".into()),
            );
        }
        // Finalises the inline statements before the handle is closed.
        drop(slot.raw.take());
        if let Some(conn) = slot.conn.take() {
            let _ = conn.close().await;
        }
    }

    /// Whether to leave the group open for the request queued behind.
    fn should_pass_on(&self, group: &Group) -> bool {
        self.queued.load(Ordering::SeqCst) > 0 && group.open_to_more()
    }

    /// Waits for the group's `COMMIT`. If the group is left with nobody to
    /// commit it (the request it was handed to was cancelled before it got
    /// the connection), commits it.
    async fn outcome_of(&self, group: &Arc<Group>) -> Result<()> {
        let mut outcome = group.outcome.subscribe();
        loop {
            let done: Option<Outcome> =
                match tokio::time::timeout(STALL_CHECK, outcome.wait_for(Option::is_some)).await {
                    Ok(Ok(done)) => Some(done.clone()),
                    Ok(Err(_)) => {
                        return Err(StoreError::Database("the group commit was lost".into()));
                    }
                    Err(_) => None,
                };
            match done {
                Some(Some(Ok(()))) => return Ok(()),
                Some(Some(Err(err))) => return Err(err.shared_by_group()),
                Some(None) => unreachable!("waited for an outcome"),
                None => {
                    // Free connection + still our group ⇒ nobody will
                    // commit it but us.
                    let Ok(slot) = self.slot.clone().try_lock_owned() else {
                        continue;
                    };
                    if slot.group.as_ref().is_some_and(|g| Arc::ptr_eq(g, group)) {
                        // Its outcome reaches us through the loop.
                        self.spawn_commit(slot, group.clone());
                    }
                }
            }
        }
    }

    /// `COMMIT`s the group and tells its members. On sqlx's thread (the
    /// fsync must not block a runtime thread), in a task of its own so that
    /// a cancelled caller cannot separate the `COMMIT` from telling them;
    /// they learn the outcome through the group ([`Writer::outcome_of`]).
    ///
    /// When the checkpointer asks for it, the task then checkpoints what
    /// was committed since its last pass, before it lets the next request
    /// in, so that the next group starts the WAL over (module docs of
    /// `sqlite_checkpoint`). The members are told before that.
    fn spawn_commit(&self, mut slot: OwnedMutexGuard<Slot>, group: Arc<Group>) {
        let writer = self.clone();
        tokio::spawn(async move {
            let Some(conn) = slot.conn.as_mut() else {
                abort(&mut slot, &group, closed());
                return;
            };
            if let Err(err) = exec(conn, "COMMIT").await {
                abort(&mut slot, &group, StoreError::from(err));
                return;
            }
            slot.group = None;
            writer.commits.fetch_add(1, Ordering::Relaxed);
            group.outcome.send_replace(Some(Ok(())));
            if writer.wal_restart_due.swap(false, Ordering::SeqCst)
                && let Some(conn) = slot.conn.as_mut()
                && let Err(err) = exec(conn, "PRAGMA wal_checkpoint(PASSIVE)").await
            {
                tracing::warn!(error = %err, "store.sqlite_checkpoint_failed");
            }
        });
    }

    /// After a request's savepoint is undone: commits the group if nobody
    /// is queued behind (others may be waiting for it), else hands it on.
    fn hand_on(&self, slot: OwnedMutexGuard<Slot>, group: Arc<Group>) {
        if !self.should_pass_on(&group) {
            self.spawn_commit(slot, group);
        }
    }

    /// Takes the connection for a run of members on the calling thread,
    /// which must not be a runtime thread: it blocks until the connection
    /// is free, and then, if it begins the group, until another process's
    /// write lock is released (busy timeout). Joins the open group if a
    /// request handed one on.
    pub(super) fn batch_blocking(&self) -> Result<Batch> {
        let mut slot = {
            let _queued = Queued::new(&self.queued);
            self.slot.clone().blocking_lock_owned()
        };
        if let Some(group) = slot.group.clone() {
            return Ok(Batch::new(slot, group));
        }
        prepared(slot.raw.as_ref().ok_or_else(closed)?, "BEGIN IMMEDIATE")?;
        let group = Arc::new(Group::new(self.max_age));
        slot.group = Some(group.clone());
        Ok(Batch::new(slot, group))
    }

    /// Lets groups stay open for `max_age`.
    #[cfg(test)]
    pub(super) fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Group `COMMIT`s so far.
    #[cfg(test)]
    pub(super) fn commits(&self) -> usize {
        self.commits.load(Ordering::Relaxed)
    }

    /// Transactions and batches waiting for the connection.
    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Holds the connection, as a request would, until dropped.
    #[cfg(test)]
    pub(super) async fn hold(&self) -> OwnedMutexGuard<Slot> {
        self.slot.clone().lock_owned().await
    }

    /// Set by the checkpointer when the writer should let the WAL start
    /// over after its next `COMMIT`.
    pub(super) fn wal_restart_flag(&self) -> Arc<AtomicBool> {
        self.wal_restart_due.clone()
    }
}

/// The connection held for a run of members by one thread, which also
/// commits their group (`SqliteStore::write`): members follow each other
/// with no hand-off between tasks, and the `COMMIT` needs none either.
pub(super) struct Batch {
    /// `None` once lent to a member.
    slot: Option<OwnedMutexGuard<Slot>>,
    group: Arc<Group>,
}

/// A batch dropped with its group still open (its thread panicked between
/// two members) rolls the group back: its jobs' callers were not answered,
/// so nothing of theirs may commit with the next request's work.
impl Drop for Batch {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.as_mut()
            && slot.group.is_some()
        {
            abort(
                slot,
                &self.group,
                StoreError::Database("the writer's batch ended unfinished".into()),
            );
        }
    }
}

impl Batch {
    fn new(slot: OwnedMutexGuard<Slot>, group: Arc<Group>) -> Self {
        Batch {
            slot: Some(slot),
            group,
        }
    }

    fn slot(&mut self) -> Result<&mut OwnedMutexGuard<Slot>> {
        self.slot.as_mut().ok_or_else(closed)
    }

    /// Whether the group has reached its size or age limit.
    pub(super) fn full(&self) -> bool {
        !self.group.open_to_more()
    }

    /// The next member's savepoint. On an error the group was rolled back
    /// for every member and the connection released.
    pub(super) fn member(mut self, writer: &Writer) -> Result<WriterTx> {
        let Some(mut slot) = self.slot.take() else {
            return Err(closed());
        };
        let group = self.group.clone();
        if let Err(err) = inline_prepared(&slot, SAVEPOINT) {
            abort(&mut slot, &group, err.clone());
            return Err(err);
        }
        let mut member = writer.member(slot, group);
        member.in_batch = true;
        Ok(member)
    }

    /// `COMMIT`s the group, inline: the fsync blocks this thread only.
    /// Members that joined before the batch learn the outcome through the
    /// group, as from any commit. On an error the group was rolled back.
    pub(super) fn commit(&mut self, writer: &Writer) -> Result<()> {
        let group = self.group.clone();
        let slot = self.slot()?;
        if let Err(err) = inline_prepared(slot, "COMMIT") {
            abort(slot, &group, err.clone());
            return Err(err);
        }
        slot.group = None;
        writer.commits.fetch_add(1, Ordering::Relaxed);
        group.outcome.send_replace(Some(Ok(())));
        Ok(())
    }

    /// Releases the connection, first letting the WAL start over if the
    /// checkpointer asked for it (as after any group commit).
    pub(super) fn finish(self, writer: &Writer) {
        if let Some(slot) = &self.slot
            && slot.group.is_none()
            && writer.wal_restart_due.swap(false, Ordering::SeqCst)
            && let Err(err) = inline(slot, "PRAGMA wal_checkpoint(PASSIVE)")
        {
            tracing::warn!(error = %err, "store.sqlite_checkpoint_failed");
        }
    }
}

/// One request's write transaction (a savepoint in its group). Dropping it
/// unfinished rolls its work back.
pub struct WriterTx {
    slot: Option<OwnedMutexGuard<Slot>>,
    group: Arc<Group>,
    writer: Writer,
    /// Whether a statement went through sqlx (which may still be running on
    /// sqlx's thread if the caller was cancelled).
    sqlx_used: bool,
    /// A member of a [`Batch`], whose thread ends it: dropped unfinished
    /// (that thread panicked), it rolls the whole group back.
    in_batch: bool,
}

/// The connection, for statements written against sqlx.
impl Deref for WriterTx {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.slot()
            .conn
            .as_ref()
            .expect("a live write transaction holds the connection")
    }
}

impl DerefMut for WriterTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.sqlx_used = true;
        self.slot
            .as_mut()
            .and_then(|slot| slot.conn.as_mut())
            .expect("a live write transaction holds the connection")
    }
}

impl WriterTx {
    fn slot(&self) -> &Slot {
        // Set from `begin` until `commit`/`rollback`/drop consume it.
        self.slot
            .as_ref()
            .expect("a live write transaction holds the connection")
    }

    /// The same connection, for statements run inline (see the module
    /// docs).
    pub(super) fn raw(&self) -> &rusqlite::Connection {
        self.slot()
            .raw
            .as_ref()
            .expect("a live write transaction holds the connection")
    }

    /// Keeps this request's work and returns once its group has committed.
    pub(super) async fn commit(mut self) -> Result<()> {
        let mut slot = self.take_slot();
        let group = self.group.clone();
        if let Err(err) = inline_prepared(&slot, RELEASE) {
            abort(&mut slot, &group, err.clone());
            return Err(err);
        }
        if self.writer.should_pass_on(&group) {
            drop(slot);
        } else {
            self.writer.spawn_commit(slot, group.clone());
        }
        self.writer.outcome_of(&group).await
    }

    /// Undoes this request's work; the group goes on. Returns once the
    /// group has committed, like [`WriterTx::commit`]: what the request read
    /// may be earlier members' work, not yet committed (an answer to
    /// replay for the same idempotency key, a row that needed no change),
    /// and it must not be answered from unless that work is durable. If
    /// the group's `COMMIT` fails, so does this.
    pub(super) async fn rollback(mut self) -> Result<()> {
        let mut slot = self.take_slot();
        let group = self.group.clone();
        // Every sqlx statement was awaited to its end: undo inline.
        if let Err(err) = inline(&slot, UNDO) {
            let err = undo_failed(&slot, err);
            abort(&mut slot, &group, err.clone());
            return Err(err);
        }
        self.writer.hand_on(slot, group.clone());
        self.writer.outcome_of(&group).await
    }

    /// Ends a member of a [`Batch`]: keeps (`RELEASE`) or undoes its work
    /// and gives the connection back to the batch, without committing or
    /// handing it on. On an error the group was rolled back for every
    /// member and the connection released.
    pub(super) fn into_batch(mut self, keep: bool) -> Result<Batch> {
        let mut slot = self.take_slot();
        let group = self.group.clone();
        // The batch's thread awaited every statement to its end.
        let ended = if keep {
            inline_prepared(&slot, RELEASE)
        } else {
            inline(&slot, UNDO).map_err(|err| undo_failed(&slot, err))
        };
        if let Err(err) = ended {
            abort(&mut slot, &group, err.clone());
            return Err(err);
        }
        Ok(Batch::new(slot, group))
    }

    /// [`WriterTx::into_batch`] undoing the work of a member whose job
    /// panicked, possibly while a statement it sent through sqlx was still
    /// running on sqlx's thread: then the undo is sent there too, behind
    /// it (as in `Drop`), and this thread waits for it.
    pub(super) fn undo_after_panic(mut self, runtime: &tokio::runtime::Handle) -> Result<Batch> {
        if !self.sqlx_used {
            return self.into_batch(false);
        }
        let mut slot = self.take_slot();
        let group = self.group.clone();
        let undone = match conn_of(&mut slot) {
            Ok(conn) => runtime
                .block_on(exec(conn, UNDO))
                .map_err(StoreError::from)
                .map_err(|err| undo_failed(&slot, err)),
            Err(err) => Err(err),
        };
        if let Err(err) = undone {
            abort(&mut slot, &group, err.clone());
            return Err(err);
        }
        Ok(Batch::new(slot, group))
    }

    fn take_slot(&mut self) -> OwnedMutexGuard<Slot> {
        self.slot
            .take()
            .expect("a write transaction is finished once")
    }
}

impl Drop for WriterTx {
    fn drop(&mut self) {
        let Some(mut slot) = self.slot.take() else {
            return;
        };
        let group = self.group.clone();
        if self.in_batch {
            // Earlier jobs of the batch have released their work into the
            // group, and their callers will not hear from it.
            abort(
                &mut slot,
                &group,
                StoreError::Database("a write job's batch ended unfinished".into()),
            );
            return;
        }
        // An error path (`?`) or a cancelled request: undo its work without
        // holding up the group.
        let writer = self.writer.clone();
        let runtime = tokio::runtime::Handle::try_current();
        if !self.sqlx_used {
            // Nothing of ours can still be running: undo inline, now.
            if let Err(err) = inline(&slot, UNDO) {
                let err = undo_failed(&slot, err);
                abort(&mut slot, &group, err.clone());
                return;
            }
            if runtime.is_ok() {
                writer.hand_on(slot, group);
            }
            // Else (dropped outside any runtime, which tokio never does)
            // the group is left open: a member waiting for it commits it
            // (`outcome_of`), or the next request joins it.
            return;
        }
        let Ok(handle) = runtime else {
            // The undo would have to wait behind a cancelled sqlx statement,
            // which takes a runtime: end the group for every member rather
            // than let this request's work commit with it.
            abort(
                &mut slot,
                &group,
                StoreError::Database("a write transaction was dropped outside the runtime".into()),
            );
            return;
        };
        // A cancelled sqlx statement may still be running on sqlx's thread:
        // the undo goes there too, behind it.
        handle.spawn(async move {
            let Ok(conn) = conn_of(&mut slot) else { return };
            if let Err(err) = exec(conn, UNDO).await {
                tracing::warn!(error = %err, "store.sqlite_rollback_failed");
                abort(&mut slot, &group, StoreError::from(err));
                return;
            }
            writer.hand_on(slot, group);
        });
    }
}

/// Runs fixed SQL (possibly several statements) inline on the slot's
/// connection.
fn inline(slot: &Slot, sql: &str) -> Result<()> {
    let raw = slot.raw.as_ref().ok_or_else(closed)?;
    raw.execute_batch(sql)?;
    Ok(())
}

/// [`inline`] for one statement that runs on every request or group: it
/// stays prepared in the connection's statement cache rather than being
/// parsed each time (~1.4k instructions apiece, under the writer).
fn inline_prepared(slot: &Slot, sql: &str) -> Result<()> {
    Ok(prepared(slot.raw.as_ref().ok_or_else(closed)?, sql)?)
}

fn prepared(raw: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    raw.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Rolls the whole group back and tells its members it failed.
fn abort(slot: &mut Slot, group: &Arc<Group>, why: StoreError) {
    // May fail if SQLite already rolled back (some I/O errors do).
    let _ = inline(slot, "ROLLBACK");
    slot.group = None;
    tracing::warn!(error = %why, "store.sqlite_group_aborted");
    group.outcome.send_replace(Some(Err(why)));
}

/// The error a failed undo shares with its group. Some errors (a full
/// disk, an I/O error) make SQLite roll back the whole transaction itself,
/// and the undo then fails for want of a savepoint: the group's work is
/// gone, not in doubt, so the members get a retryable error rather than
/// the undo's own.
fn undo_failed(slot: &Slot, err: StoreError) -> StoreError {
    match slot.raw.as_ref() {
        Some(raw) if raw.is_autocommit() && !err.is_retryable() => StoreError::Unavailable(
            format!("SQLite rolled the group's transaction back after an error ({err})"),
        ),
        _ => err,
    }
}

fn conn_of(slot: &mut Slot) -> Result<&mut SqliteConnection> {
    slot.conn.as_mut().ok_or_else(closed)
}

/// Runs fixed SQL (possibly several statements) through sqlx.
async fn exec(
    conn: &mut SqliteConnection,
    sql: &'static str,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(sql).execute(conn).await.map(|_| ())
}

fn closed() -> StoreError {
    StoreError::Unavailable("the database is closed".into())
}

fn task_failed(err: tokio::task::JoinError) -> StoreError {
    StoreError::Database(format!("the writer task failed: {err}"))
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    use sqlx::{Connection, SqliteConnection};

    use super::*;

    /// A writer on a fresh file with one table, `t (id)`.
    pub(in crate::store) async fn writer(
        dir: &tempfile::TempDir,
    ) -> (Writer, SqliteConnectOptions) {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("w.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let writer = Writer::open(&options).await.unwrap();
        {
            let mut slot = writer.slot.lock().await;
            sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
                .execute(slot.conn.as_mut().unwrap())
                .await
                .unwrap();
        }
        (writer, options)
    }

    /// Adds `parent` and `child (id, parent)`, whose foreign key only a
    /// `COMMIT` checks: a child of a missing parent (`42`) fails the
    /// group's `COMMIT`, not its own statement.
    pub(in crate::store) async fn with_deferred_foreign_key(writer: &Writer) {
        writer
            .slot
            .lock()
            .await
            .raw
            .as_ref()
            .expect("an open writer")
            .execute_batch(
                "CREATE TABLE parent (id INTEGER PRIMARY KEY); \
                 CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER \
                   REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED); \
                 PRAGMA foreign_keys = ON",
            )
            .unwrap();
    }

    /// Rows as a separate connection sees them: committed ones only.
    pub(in crate::store) async fn committed(options: &SqliteConnectOptions) -> Vec<i64> {
        let mut conn = SqliteConnection::connect_with(options).await.unwrap();
        sqlx::query_scalar("SELECT id FROM t ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    }

    async fn insert(tx: &mut WriterTx, id: i64) {
        sqlx::query("INSERT INTO t (id) VALUES ($1)")
            .bind(id)
            .execute(&mut **tx)
            .await
            .unwrap();
    }

    /// Inserts through sqlx for odd ids, inline for even ones: both ways
    /// of running a statement must undo and commit alike.
    async fn insert_either_way(tx: &mut WriterTx, id: i64) -> Result<()> {
        if id % 2 == 0 {
            tx.raw().execute("INSERT INTO t (id) VALUES (?1)", [id])?;
        } else {
            sqlx::query("INSERT INTO t (id) VALUES ($1)")
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_requests_share_a_commit_and_each_failure_undoes_only_its_own_work() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        // Hold the writer so the others queue behind it.
        let mut first = writer.begin().await.unwrap();
        insert(&mut first, 0).await;
        let mut tasks = Vec::new();
        for id in 1..=30i64 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = writer.begin().await.unwrap();
                insert_either_way(&mut tx, id).await.unwrap();
                match id % 3 {
                    0 => tx.rollback().await.unwrap(),
                    1 => drop(tx), // an error path: undone in the background
                    _ => tx.commit().await.unwrap(),
                }
            }));
        }
        while writer.queued.load(Ordering::SeqCst) < 30 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        first.commit().await.unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        // Let the last background rollback finish its group.
        drop(writer.begin().await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let expected: Vec<i64> = (0..=30).filter(|id| id % 3 == 2 || *id == 0).collect();
        assert_eq!(committed(&options).await, expected);
        let commits = writer.commits.load(Ordering::Relaxed);
        assert!(
            (1..11).contains(&commits),
            "31 requests queued behind one another share commits, got {commits}"
        );
    }

    /// When SQLite itself rolls the group's transaction back (it does after
    /// some I/O and disk-full errors), the member's undo finds no savepoint:
    /// every member then learns its work is gone with a retryable error,
    /// not a 500.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_that_sqlite_rolled_back_fails_every_member_retryably() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        let mut first = writer.begin().await.unwrap();
        insert(&mut first, 1).await;
        let second = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let tx = writer.begin().await.unwrap();
                // What SQLite does on its own after such an error.
                tx.raw().execute_batch("ROLLBACK").unwrap();
                tx.rollback().await
            })
        };
        while writer.queued.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        let first = first.commit().await.unwrap_err();
        let second = second.await.unwrap().unwrap_err();
        for err in [&first, &second] {
            assert!(err.is_retryable(), "{err}");
        }
        assert_eq!(committed(&options).await, Vec::<i64>::new());
        // The writer goes on.
        let mut next = writer.begin().await.unwrap();
        insert(&mut next, 2).await;
        next.commit().await.unwrap();
        assert_eq!(committed(&options).await, [2]);
    }

    /// A request that read an earlier member's work and rolls back (an
    /// idempotent replay answers from such a read) learns whether that
    /// work became durable before it answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rollback_returns_once_the_work_it_read_is_committed_or_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        with_deferred_foreign_key(&writer).await;
        // `dangling`: the first request also breaks a deferred foreign key,
        // so its group's `COMMIT` fails.
        for (id, dangling) in [(1i64, false), (2, true)] {
            let first = writer.begin().await.unwrap();
            first
                .raw()
                .execute("INSERT INTO t (id) VALUES (?1)", [id])
                .unwrap();
            if dangling {
                first
                    .raw()
                    .execute("INSERT INTO child (parent) VALUES (42)", [])
                    .unwrap();
            }
            let reader = {
                let writer = writer.clone();
                let options = options.clone();
                tokio::spawn(async move {
                    let tx = writer.begin().await.unwrap();
                    let seen: i64 = tx
                        .raw()
                        .query_row("SELECT count(*) FROM t WHERE id = ?1", [id], |row| {
                            row.get(0)
                        })
                        .unwrap();
                    assert_eq!(seen, 1, "the first request's work is visible");
                    let rolled_back = tx.rollback().await;
                    (rolled_back, committed(&options).await)
                })
            };
            while writer.queued.load(Ordering::SeqCst) < 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let first_outcome = first.commit().await;
            let (rolled_back, committed_then) = reader.await.unwrap();
            if dangling {
                assert!(first_outcome.is_err());
                assert!(
                    rolled_back.is_err(),
                    "the work it read was lost: the rollback must not report success"
                );
                assert_eq!(committed_then, [1]);
            } else {
                first_outcome.unwrap();
                rolled_back.unwrap();
                assert_eq!(committed_then, [1], "durable by the time it returned");
            }
        }
    }

    /// Dropped where there is no runtime (tokio itself never does this),
    /// a transaction's work is still undone, never committed by the next
    /// group.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_dropped_outside_the_runtime_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        for sqlx_used in [false, true] {
            let mut dropped = writer.begin().await.unwrap();
            insert_either_way(&mut dropped, if sqlx_used { 1 } else { 2 })
                .await
                .unwrap();
            assert_eq!(dropped.sqlx_used, sqlx_used);
            std::thread::spawn(move || drop(dropped)).join().unwrap();
            let mut next = writer.begin().await.unwrap();
            insert(&mut next, 10).await;
            next.commit().await.unwrap();
            assert_eq!(committed(&options).await, [10]);
            let mut next = writer.begin().await.unwrap();
            sqlx::query("DELETE FROM t")
                .execute(&mut *next)
                .await
                .unwrap();
            next.commit().await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_is_cancelled_while_queued_does_not_strand_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        let mut first = writer.begin().await.unwrap();
        insert(&mut first, 1).await;
        let queued = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let _tx = writer.begin().await;
                // Cancelled before it gets any further.
                std::future::pending::<()>().await;
            })
        };
        while writer.queued.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // `first` hands the group on to the queued request…
        let commit = tokio::spawn(first.commit());
        tokio::time::sleep(Duration::from_millis(5)).await;
        // …which is cancelled: the group must still commit.
        queued.abort();
        tokio::time::timeout(Duration::from_secs(5), commit)
            .await
            .expect("the commit does not hang")
            .unwrap()
            .unwrap();
        assert_eq!(committed(&options).await, [1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_cancelled_at_any_point_leave_the_writer_usable() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        let errors = Arc::new(AtomicUsize::new(0));
        for i in 0..60u64 {
            let task = {
                let writer = writer.clone();
                let errors = errors.clone();
                tokio::spawn(async move {
                    let outcome = async {
                        let mut tx = writer.begin().await?;
                        insert_either_way(&mut tx, i as i64).await?;
                        tx.commit().await
                    };
                    if outcome.await.is_err() {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                })
            };
            // Cancel at a different point each time: waiting, mid-begin,
            // mid-statement, mid-commit, or after it all.
            tokio::time::sleep(Duration::from_micros(i * 97 % 2_000)).await;
            task.abort();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            errors.load(Ordering::SeqCst),
            0,
            "a request that ran to its end never failed because another was cancelled"
        );
        let mut last = writer.begin().await.expect("the writer still begins");
        insert(&mut last, 1_000).await;
        last.commit().await.expect("and commits");
        let rows = committed(&options).await;
        assert_eq!(rows.last(), Some(&1_000), "{rows:?}");
        assert!(rows.iter().all(|id| *id == 1_000 || *id < 60));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_lock_held_by_another_process_is_waited_for_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        // Another process (an operator's shell, say) takes the write lock.
        let mut other = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE; INSERT INTO t (id) VALUES (1)")
            .execute(&mut other)
            .await
            .unwrap();
        let waiting = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut tx = writer.begin().await?;
                insert_either_way(&mut tx, 2).await?;
                tx.commit().await
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "the writer waits for the lock");
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("and gets it once released")
            .unwrap()
            .expect("without an error");
        assert_eq!(committed(&options).await, [1, 2]);
        // The next group begins inline again.
        let mut next = writer.begin().await.unwrap();
        insert_either_way(&mut next, 4).await.unwrap();
        next.commit().await.unwrap();
        assert_eq!(committed(&options).await, [1, 2, 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_commit_the_checkpointer_asked_for_the_next_group_starts_the_wal_over() {
        use super::super::sqlite_checkpoint::tests::write_pages;
        let dir = tempfile::tempdir().unwrap();
        let (writer, _) = writer(&dir).await;
        let wal = dir.path().join("w.db-wal");
        let size = || std::fs::metadata(&wal).unwrap().len();
        for _ in 0..20 {
            write_pages(&writer).await;
        }
        let grown = size();
        write_pages(&writer).await;
        assert!(size() > grown, "the WAL grows while nobody checkpoints");
        writer.wal_restart_flag().store(true, Ordering::SeqCst);
        write_pages(&writer).await;
        let at_restart = size();
        for _ in 0..10 {
            write_pages(&writer).await;
        }
        assert_eq!(
            size(),
            at_restart,
            "later commits overwrite the WAL from its start instead of growing it"
        );
        assert!(!writer.wal_restart_flag().load(Ordering::SeqCst));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_group_commit_fails_every_member() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        with_deferred_foreign_key(&writer).await;
        let mut first = writer.begin().await.unwrap();
        insert(&mut first, 1).await;
        let second = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut tx = writer.begin().await.unwrap();
                sqlx::query("INSERT INTO child (id, parent) VALUES (1, 42)")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await
            })
        };
        while writer.queued.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let first = first.commit().await;
        let second = second.await.unwrap();
        assert!(first.is_err(), "the member whose work was fine fails too");
        assert!(second.is_err());
        assert!(committed(&options).await.is_empty(), "nothing took effect");
        // The writer goes on.
        let mut next = writer.begin().await.unwrap();
        insert(&mut next, 7).await;
        next.commit().await.unwrap();
        assert_eq!(committed(&options).await, [7]);
    }
}

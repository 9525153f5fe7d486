//! PostgreSQL connections without a round trip per checkout.
//!
//! sqlx's own pool pings every connection it takes back
//! (`PoolConnection::return_to_pool`), whatever state it was left in: a
//! round trip, and a wake-up of the server process, per checkout. A
//! `credits/use` checks out twice (the customer read, then its
//! transaction), and those two pings cost ~8 % of its CPU, host and
//! database together (BENCHMARKS.md). sqlx has no setting for it, so the
//! store keeps its connections in a [`deadpool`] pool instead, whose
//! recycle step talks to the server only for a connection that was *not*
//! handed back clean: one whose last use failed or was cancelled half-way,
//! or that is still inside a transaction. Such a connection is rolled back
//! (or pinged) before anyone else gets it, and dropped if that fails; so is
//! one that sat unused for more than [`IDLE_CHECK`].
//!
//! A [`Lease`] is dirty from checkout until [`Lease::release`] sees its
//! work succeed or a transaction it began ends. A lease dropped inside a
//! transaction (an error returned early, a client hang-up) rolls back at
//! once in a task of its own, so the transaction's row locks are not held
//! while the connection waits in the pool.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use deadpool::Runtime;
use deadpool::managed::{self, Metrics, Object, RecycleResult};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor};

use super::error::{Result, StoreError};

/// A connection not checked out for this long is pinged before reuse.
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// A pooled connection and what its last user left it in.
#[derive(Debug)]
pub struct PooledConnection {
    conn: PgConnection,
    /// Handed back with nothing pending: no round trip needed to reuse it.
    clean: bool,
    /// A `BEGIN` was sent and neither `COMMIT` nor `ROLLBACK` finished.
    in_transaction: bool,
}

/// Opens connections and checks the ones handed back dirty.
#[derive(Debug)]
pub struct Manager {
    options: PgConnectOptions,
    idle_check: Duration,
}

impl managed::Manager for Manager {
    type Type = PooledConnection;
    type Error = sqlx::Error;

    async fn create(&self) -> std::result::Result<PooledConnection, sqlx::Error> {
        Ok(PooledConnection {
            conn: self.options.connect().await?,
            clean: true,
            in_transaction: false,
        })
    }

    async fn recycle(
        &self,
        pooled: &mut PooledConnection,
        metrics: &Metrics,
    ) -> RecycleResult<sqlx::Error> {
        // A connection in steady use is handed out as it is; one that sat
        // unused for a while is pinged first, so a server restart or an
        // idle timeout in between costs a round trip, not a request.
        if pooled.clean && metrics.last_used() < self.idle_check {
            return Ok(());
        }
        // Either drains what a cancelled use left unread (sqlx waits for
        // every answer it is owed before the next statement) and proves
        // the connection alive, or fails and the pool drops it.
        if pooled.in_transaction {
            pooled.conn.execute("ROLLBACK").await?;
            pooled.in_transaction = false;
        } else {
            pooled.conn.ping().await?;
        }
        pooled.clean = true;
        Ok(())
    }
}

/// The store's PostgreSQL connections.
#[derive(Clone, Debug)]
pub struct PgConnections {
    pool: managed::Pool<Manager>,
}

impl PgConnections {
    /// A pool of at most `max_size` connections to `options`, waiting at
    /// most `timeout` for a free connection, a new one or a recycle. Opens
    /// one connection, so a database that cannot be reached fails here.
    pub async fn connect(
        options: PgConnectOptions,
        max_size: usize,
        timeout: Duration,
    ) -> Result<PgConnections> {
        Self::connect_checking_idle(options, max_size, timeout, IDLE_CHECK).await
    }

    async fn connect_checking_idle(
        options: PgConnectOptions,
        max_size: usize,
        timeout: Duration,
        idle_check: Duration,
    ) -> Result<PgConnections> {
        let pool = managed::Pool::builder(Manager {
            options,
            idle_check,
        })
        .max_size(max_size.max(1))
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|err| StoreError::Unavailable(format!("database pool: {err}")))?;
        let connections = PgConnections { pool };
        connections.get().await?.release(Ok(()))?;
        Ok(connections)
    }

    /// A connection, dirty until [`Lease::release`] says otherwise.
    pub async fn get(&self) -> Result<Lease> {
        let mut pooled = self.pool.get().await.map_err(|err| match err {
            managed::PoolError::Backend(err) => StoreError::from(err),
            other => StoreError::Unavailable(format!("database pool: {other}")),
        })?;
        pooled.clean = false;
        Ok(Lease {
            pooled: Some(pooled),
        })
    }

    /// A connection inside a transaction opened by `begin` (`BEGIN …`).
    pub async fn begin(&self, begin: &'static str) -> Result<Lease> {
        let mut lease = self.get().await?;
        lease.pooled_mut().in_transaction = true;
        lease.execute(begin).await?;
        Ok(lease)
    }

    /// Closes every idle connection; later checkouts fail.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// A checked-out connection; derefs to sqlx's [`PgConnection`].
#[derive(Debug)]
pub struct Lease {
    /// `None` only once dropped or handed to the rollback task.
    pooled: Option<Object<Manager>>,
}

impl Lease {
    fn pooled_mut(&mut self) -> &mut PooledConnection {
        self.pooled.as_mut().expect("a live lease")
    }

    /// Hands the connection back, clean if `outcome` is a success, and
    /// returns `outcome`. Outside a transaction only.
    pub fn release<T>(mut self, outcome: Result<T>) -> Result<T> {
        let pooled = self.pooled_mut();
        debug_assert!(!pooled.in_transaction, "release inside a transaction");
        pooled.clean = outcome.is_ok() && !pooled.in_transaction;
        outcome
    }

    /// `COMMIT`s the transaction and hands the connection back.
    pub async fn commit(mut self) -> Result<()> {
        self.end("COMMIT").await
    }

    /// `ROLLBACK`s the transaction and hands the connection back.
    pub async fn rollback(mut self) -> Result<()> {
        self.end("ROLLBACK").await
    }

    async fn end(&mut self, statement: &'static str) -> Result<()> {
        self.execute(statement).await?;
        let pooled = self.pooled_mut();
        pooled.in_transaction = false;
        pooled.clean = true;
        Ok(())
    }
}

impl Deref for Lease {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.pooled.as_ref().expect("a live lease").conn
    }
}

impl DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.pooled_mut().conn
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(mut pooled) = self.pooled.take() else {
            return;
        };
        if !pooled.in_transaction {
            return;
        }
        // Roll back now, not at the next checkout: until then the
        // transaction would hold its row locks. Without a runtime (shutting
        // down) the recycle step does it, or the server when the
        // connection closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if pooled.conn.execute("ROLLBACK").await.is_ok() {
                    pooled.in_transaction = false;
                    pooled.clean = true;
                }
            });
        }
    }
}

/// Runs one use of a pooled connection: `pg_read!(connections, |conn| f(conn, …))`
/// checks a connection out, awaits the body with `conn: &mut PgConnection`
/// and hands the connection back clean if the body succeeded (a macro, not
/// a function taking a closure, so the future stays `Send` without naming
/// its lifetime).
macro_rules! pg_read {
    ($connections:expr, |$conn:ident| $body:expr) => {{
        // A read through the pool while this task holds a write
        // transaction needs a second connection: a pool full of such
        // transactions would wait for itself. Read in the transaction.
        debug_assert!(
            !$crate::store::write_transaction_open(),
            "a pooled read while this task holds a write transaction"
        );
        let mut lease = $connections.get().await?;
        let $conn: &mut sqlx::postgres::PgConnection = &mut lease;
        let outcome = $body.await.map_err($crate::store::error::StoreError::from);
        lease.release(outcome)
    }};
}
pub(crate) use pg_read;

#[cfg(test)]
mod tests {
    use super::*;

    /// The test cluster `.ci/run` starts; without it the test has nothing
    /// to run against, which CI does not accept.
    fn test_options() -> Option<PgConnectOptions> {
        match std::env::var("FLUXPAY_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(url.parse().expect("a PostgreSQL URL")),
            _ => {
                assert!(
                    !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
                    "CI=true but FLUXPAY_TEST_POSTGRES_URL is not set"
                );
                None
            }
        }
    }

    async fn backend_pid(connections: &PgConnections) -> Result<i32> {
        pg_read!(connections, |conn| sqlx::query_scalar::<_, i32>(
            "SELECT pg_backend_pid()"
        )
        .fetch_one(conn))
    }

    async fn terminate(options: &PgConnectOptions, pid: i32) {
        let mut admin = options.connect().await.unwrap();
        let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert!(done);
    }

    #[tokio::test]
    async fn a_connection_that_died_while_idle_is_replaced_at_checkout_once_idle_long_enough() {
        let Some(options) = test_options() else {
            return;
        };
        let timeout = Duration::from_secs(10);
        // Checked after any idle time: the dead connection is replaced.
        let checked =
            PgConnections::connect_checking_idle(options.clone(), 1, timeout, Duration::ZERO)
                .await
                .unwrap();
        let pid = backend_pid(&checked).await.unwrap();
        terminate(&options, pid).await;
        let replaced = backend_pid(&checked).await.unwrap();
        assert_ne!(replaced, pid);

        // Within the idle window a clean connection is handed out as it is:
        // the one request that finds it dead fails, the next gets a new one.
        let trusted =
            PgConnections::connect_checking_idle(options.clone(), 1, timeout, Duration::MAX)
                .await
                .unwrap();
        let pid = backend_pid(&trusted).await.unwrap();
        terminate(&options, pid).await;
        assert!(backend_pid(&trusted).await.is_err());
        let replaced = backend_pid(&trusted).await.unwrap();
        assert_ne!(replaced, pid);
    }

    /// 42, whether the connection is inside a transaction that wrote, and whether the
    /// test's temporary table exists.
    async fn state(connections: &PgConnections) -> Result<(i32, bool, Option<String>)> {
        pg_read!(connections, |conn| sqlx::query_as(
            "SELECT 42, txid_current_if_assigned() IS NOT NULL, to_regclass('pg_temp.probe')::text"
        )
        .fetch_one(conn))
    }

    #[tokio::test]
    async fn a_use_cancelled_half_way_leaves_a_connection_the_next_user_can_trust() {
        let Some(options) = test_options() else {
            return;
        };
        let connections = PgConnections::connect(options, 1, Duration::from_secs(10))
            .await
            .unwrap();
        // A query abandoned while the server is still answering it…
        let abandoned = tokio::time::timeout(Duration::from_millis(50), async {
            let mut lease = connections.get().await.unwrap();
            let outcome = sqlx::query("SELECT pg_sleep(0.3)")
                .execute(&mut *lease)
                .await
                .map_err(StoreError::from);
            lease.release(outcome)
        })
        .await;
        assert!(abandoned.is_err(), "the query was cancelled");
        // …and a transaction abandoned half-way.
        let mut tx = connections.begin("BEGIN").await.unwrap();
        sqlx::query("CREATE TEMPORARY TABLE probe (n int)")
            .execute(&mut *tx)
            .await
            .unwrap();
        drop(tx);
        // The one connection answers the next query with its own answer,
        // outside any transaction, and the abandoned work is gone.
        let (answer, in_transaction, probe) = state(&connections).await.unwrap();
        assert_eq!(answer, 42);
        assert!(!in_transaction, "the abandoned transaction was rolled back");
        assert_eq!(probe, None, "its work was undone");
    }
}

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
//! (or pinged) before anyone else gets it, and dropped if that fails.
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
        _: &Metrics,
    ) -> RecycleResult<sqlx::Error> {
        if pooled.clean {
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
        let pool = managed::Pool::builder(Manager { options })
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
        let mut lease = $connections.get().await?;
        let $conn: &mut sqlx::postgres::PgConnection = &mut lease;
        let outcome = $body.await.map_err($crate::store::error::StoreError::from);
        lease.release(outcome)
    }};
}
pub(crate) use pg_read;

//! Hot reads on the caller's thread.
//!
//! sqlx runs every SQLite statement on its connection's own thread, so a
//! read is a hand-off there and back: a wake-up and a context switch on
//! each side, besides sqlx's channel and statement bookkeeping. Under
//! `credits/use` load the reader pool's threads took ~16 % of the host's
//! CPU for one point lookup per request (BENCHMARKS.md, "Hot reads
//! inline"). So the reads on that path run **inline**, as the writer's
//! statements do (`sqlite_writer`): on a few read-only
//! [`rusqlite::Connection`]s, each taken by one call at a time.
//!
//! A read in WAL mode does not wait for the writer or the checkpointer: it
//! reads the snapshot of the last commit. It can wait in two rare cases:
//! while another connection recovers the WAL (after a crash), or holds the
//! database in exclusive locking mode (an operator's shell). An inline
//! reader therefore has no busy timeout: SQLite answers `SQLITE_BUSY` at
//! once, [`InlineReaders::read`] says so, and the caller falls back to the
//! sqlx pool, which waits on its own thread.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::error::Result;

/// At most this many connections, or twice the machine's cores if that is
/// more (the runtime has a thread per core), are kept between reads: enough
/// that reads never open one once the service is warm.
const MIN_IDLE_CAP: usize = 8;

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 16;

/// Read-only connections for inline reads.
#[derive(Debug)]
pub(super) struct InlineReaders {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    idle_cap: usize,
    /// Set by [`InlineReaders::close`]: reads then fall back to the sqlx
    /// pool (closed too), and no connection is opened or kept.
    closed: AtomicBool,
}

impl InlineReaders {
    /// Readers of the database file at `path` (opened on first use, after
    /// the writer has created it and switched it to WAL).
    pub(super) fn new(path: &Path) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        InlineReaders {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            idle_cap: MIN_IDLE_CAP.max(2 * cores),
            closed: AtomicBool::new(false),
        }
    }

    /// Runs `read` on an idle connection (opening one if none is idle);
    /// `None` if SQLite answered `SQLITE_BUSY` (module docs) or the readers
    /// are closed.
    pub(super) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<Option<T>> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(None);
        }
        let taken = self.lock().pop();
        let conn = match taken {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = read(&conn);
        // A statement that failed was reset when it was dropped, and no
        // transaction outlives a read: the connection is clean either way.
        {
            let mut idle = self.lock();
            if idle.len() < self.idle_cap && !self.closed.load(Ordering::Acquire) {
                idle.push(conn);
            }
        }
        match result {
            Ok(value) => Ok(Some(value)),
            Err(rusqlite::Error::SqliteFailure(failure, _))
                if matches!(
                    failure.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Closes the idle connections (the store is closing).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while the lock was held cannot leave the list half-changed.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn open(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::ZERO)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database(dir: &Path) -> (PathBuf, Connection) {
        let path = dir.join("inline.db");
        let writer = Connection::open(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
                 INSERT INTO t VALUES ('a', 1);",
            )
            .unwrap();
        (path, writer)
    }

    fn value(readers: &InlineReaders) -> Result<Option<i64>> {
        readers.read(|conn| {
            conn.prepare_cached("SELECT v FROM t WHERE k = 'a'")?
                .query_row([], |row| row.get(0))
        })
    }

    #[test]
    fn reads_the_last_commit_not_an_open_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let (path, writer) = database(dir.path());
        let readers = InlineReaders::new(&path);
        assert_eq!(value(&readers).unwrap(), Some(1));

        writer
            .execute_batch("BEGIN IMMEDIATE; UPDATE t SET v = 2 WHERE k = 'a';")
            .unwrap();
        // The writer's transaction is open: the reader neither waits nor
        // sees it.
        assert_eq!(value(&readers).unwrap(), Some(1));
        writer.execute_batch("COMMIT").unwrap();
        // The same (cached) connection sees the new commit.
        assert_eq!(value(&readers).unwrap(), Some(2));
        assert_eq!(readers.lock().len(), 1, "one connection, reused");

        // An idle reader holds no snapshot: the WAL can be copied back in
        // full and emptied (else it would grow without bound under load).
        let (busy, _, _): (i64, i64, i64) = writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .unwrap();
        assert_eq!(busy, 0, "a reader kept a read transaction open");
        assert_eq!(
            std::fs::metadata(dir.path().join("inline.db-wal"))
                .unwrap()
                .len(),
            0
        );
        assert_eq!(value(&readers).unwrap(), Some(2));
    }

    #[test]
    fn busy_is_reported_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let (path, writer) = database(dir.path());
        drop(writer);
        let readers = InlineReaders::new(&path);

        // An operator's shell holding the database exclusively (before the
        // readers open: an open WAL connection keeps a shared lock).
        let exclusive = Connection::open(&path).unwrap();
        exclusive
            .execute_batch(
                "PRAGMA locking_mode = EXCLUSIVE;
                 BEGIN EXCLUSIVE; UPDATE t SET v = 3 WHERE k = 'a'; COMMIT;",
            )
            .unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            value(&readers).unwrap(),
            None,
            "busy, so the caller falls back"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered without the busy handler"
        );

        drop(exclusive);
        assert_eq!(value(&readers).unwrap(), Some(3));
    }

    #[test]
    fn closed_readers_keep_no_connection_and_defer_to_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _writer) = database(dir.path());
        let readers = InlineReaders::new(&path);
        assert_eq!(value(&readers).unwrap(), Some(1));
        readers.close();
        assert!(readers.lock().is_empty());
        assert_eq!(value(&readers).unwrap(), None, "the caller falls back");
        assert!(readers.lock().is_empty());
    }

    #[test]
    fn other_errors_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _writer) = database(dir.path());
        let readers = InlineReaders::new(&path);
        let missing = readers.read(|conn| {
            conn.prepare_cached("SELECT v FROM no_such_table")?
                .query_row([], |row| row.get::<_, i64>(0))
        });
        assert!(missing.is_err());
        // The connection stays usable.
        assert_eq!(value(&readers).unwrap(), Some(1));
    }
}

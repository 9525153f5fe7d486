//! `store::configure_sqlite`, in a process of its own: SQLite's global
//! settings can only change before SQLite starts, and this binary's one test
//! is the only thing here that uses it.

use fluxpay_host::store::configure_sqlite;

#[test]
fn sqlite_settings_apply_before_sqlite_starts_and_are_refused_after() {
    // SAFETY: the only test in this binary, so no other thread is in SQLite.
    assert!(
        unsafe { configure_sqlite() },
        "SQLite has not started yet, so both settings must be accepted"
    );

    // Real work: a file database, a savepoint journalling pages that existed
    // before it, released and committed.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = rusqlite::Connection::open(dir.path().join("config.db")).expect("open");
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE t (x BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO t SELECT randomblob(3000) FROM n;
         BEGIN IMMEDIATE; SAVEPOINT s;
         UPDATE t SET x = randomblob(3000);
         RELEASE s; COMMIT;",
    )
    .expect("the work");
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
        .expect("count");
    assert_eq!(rows, 100);

    // With memory statistics off, SQLite counted none of those allocations.
    // SAFETY: a plain read of SQLite's status counter.
    assert_eq!(unsafe { rusqlite::ffi::sqlite3_memory_used() }, 0);

    // Once SQLite has started, the settings are refused and say so.
    // SAFETY: still the only thread using SQLite.
    assert!(!unsafe { configure_sqlite() });
}

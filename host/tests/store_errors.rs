//! One classification of database failures, made from real failures of
//! both backends: what a client may retry is a 503 with its own code and
//! `Retry-After` (nothing was written), never the internal error's 500.
//!
//! - SQLite BUSY (another connection's write lock past the busy timeout)
//!   and SQLITE_FULL, raised through sqlx and through rusqlite (the
//!   writer's inline statements): the same kind either way;
//! - PostgreSQL deadlock (40P01), serialization failure (40001), and a
//!   connection the server ends (57P01);
//! - end to end: PostgreSQL backends terminated again and again under a
//!   steady `credits/charge` load answer 201 or 503, never 500, and every
//!   request, retried with its key, takes effect exactly once.

mod harness;

use std::time::Duration;

use fluxpay_host::store::StoreError;
use harness::{Backend, Tenant, TestHost, backends};
use serde_json::json;
use sqlx::{Connection, Executor, PgConnection, SqliteConnection};

fn kind(err: &StoreError) -> &'static str {
    match err {
        StoreError::Contention(_) => "contention",
        StoreError::Storage(_) => "storage",
        StoreError::Unavailable(_) => "unavailable",
        _ => "other",
    }
}

/// A database file with one table, and a second connection holding its
/// write lock.
fn locked_database(dir: &std::path::Path) -> (std::path::PathBuf, rusqlite::Connection) {
    let path = dir.join("busy.db");
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder
        .execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (x INTEGER);
             BEGIN IMMEDIATE; INSERT INTO t VALUES (1);",
        )
        .unwrap();
    (path, holder)
}

#[tokio::test]
async fn sqlite_busy_is_contention_on_the_sqlx_and_the_inline_path() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _holder) = locked_database(dir.path());

    let mut sqlx_conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx_conn.execute("PRAGMA busy_timeout = 0").await.unwrap();
    let via_sqlx = StoreError::from(
        sqlx_conn
            .execute("INSERT INTO t VALUES (2)")
            .await
            .unwrap_err(),
    );

    let inline = rusqlite::Connection::open(&path).unwrap();
    inline.busy_timeout(Duration::ZERO).unwrap();
    let via_rusqlite =
        StoreError::from(inline.execute("INSERT INTO t VALUES (3)", []).unwrap_err());

    assert_eq!(kind(&via_sqlx), "contention", "{via_sqlx}");
    assert_eq!(kind(&via_rusqlite), "contention", "{via_rusqlite}");
}

#[tokio::test]
async fn sqlite_full_is_a_storage_error_on_the_sqlx_and_the_inline_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.db");
    // A database that may not grow past its current size: every page of
    // a large insert finds it full, as on a full disk.
    let fill = "CREATE TABLE IF NOT EXISTS t (x BLOB);
                PRAGMA max_page_count = 8;";
    let big = "INSERT INTO t VALUES (randomblob(1000000))";

    let inline = rusqlite::Connection::open(&path).unwrap();
    inline.execute_batch(fill).unwrap();
    let via_rusqlite = StoreError::from(inline.execute(big, []).unwrap_err());

    let mut sqlx_conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx_conn.execute(fill).await.unwrap();
    let via_sqlx = StoreError::from(sqlx_conn.execute(big).await.unwrap_err());

    assert_eq!(kind(&via_rusqlite), "storage", "{via_rusqlite}");
    assert_eq!(kind(&via_sqlx), "storage", "{via_sqlx}");
}

/// A fresh PostgreSQL database of the harness (created, migrated) and a
/// URL for plain connections to it.
async fn postgres() -> Option<(TestHost, String)> {
    if !backends().contains(&Backend::Postgres) {
        return None;
    }
    let host = TestHost::start(Backend::Postgres).await;
    let fluxpay_host::config::DatabaseUrl::Postgres(url) = &host.database.url else {
        unreachable!()
    };
    let url = url.expose().to_owned();
    Some((host, url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_deadlocks_and_serialization_failures_are_contention() {
    let Some((host, url)) = postgres().await else {
        return;
    };
    let mut a = PgConnection::connect(&url).await.unwrap();
    let mut b = PgConnection::connect(&url).await.unwrap();
    for conn in [&mut a, &mut b] {
        conn.execute("CREATE TABLE IF NOT EXISTS errors_t (k INT PRIMARY KEY, v INT)")
            .await
            .unwrap();
    }
    a.execute("INSERT INTO errors_t VALUES (1, 0), (2, 0) ON CONFLICT DO NOTHING")
        .await
        .unwrap();

    // Deadlock: each holds the row the other wants.
    a.execute("BEGIN; UPDATE errors_t SET v = 1 WHERE k = 1")
        .await
        .unwrap();
    b.execute("BEGIN; UPDATE errors_t SET v = 1 WHERE k = 2")
        .await
        .unwrap();
    let (ra, rb) = tokio::join!(
        a.execute("UPDATE errors_t SET v = 2 WHERE k = 2"),
        b.execute("UPDATE errors_t SET v = 2 WHERE k = 1"),
    );
    let victim = match (ra, rb) {
        (Err(err), Ok(_)) | (Ok(_), Err(err)) => StoreError::from(err),
        other => panic!("expected exactly one deadlock victim: {other:?}"),
    };
    assert_eq!(kind(&victim), "contention", "{victim}");
    assert!(victim.is_retryable());
    a.execute("ROLLBACK").await.unwrap();
    b.execute("ROLLBACK").await.unwrap();

    // Serialization failure: two serializable transactions that each read
    // what the other writes.
    for conn in [&mut a, &mut b] {
        conn.execute("BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT SUM(v) FROM errors_t")
            .await
            .unwrap();
    }
    a.execute("UPDATE errors_t SET v = v + 1 WHERE k = 1")
        .await
        .unwrap();
    b.execute("UPDATE errors_t SET v = v + 1 WHERE k = 2")
        .await
        .unwrap();
    a.execute("COMMIT").await.unwrap();
    let failure = StoreError::from(b.execute("COMMIT").await.unwrap_err());
    assert_eq!(kind(&failure), "contention", "{failure}");
    host.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_connection_ended_by_the_server_is_unavailable() {
    let Some((host, url)) = postgres().await else {
        return;
    };
    let mut victim = PgConnection::connect(&url).await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut victim)
        .await
        .unwrap();
    let mut admin = PgConnection::connect(&url).await.unwrap();
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(ended);
    let err = StoreError::from(victim.execute("SELECT 1").await.unwrap_err());
    assert_eq!(kind(&err), "unavailable", "{err}");
    host.finish().await;
}

/// Ends every other connection to the test's database, `rounds` times,
/// `pause` apart.
async fn terminate_backends(url: String, rounds: usize, pause: Duration) -> u64 {
    let mut admin = PgConnection::connect(&url).await.unwrap();
    let mut ended = 0;
    for _ in 0..rounds {
        tokio::time::sleep(pause).await;
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        ended += n as u64;
    }
    ended
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_ended_under_load_answer_503_never_500_and_nothing_is_lost() {
    let Some((host, url)) = postgres().await else {
        return;
    };
    let host = std::sync::Arc::new(host);
    host.put_customer(Tenant::Globex, "c1", json!({})).await;
    const CLIENTS: usize = 6;
    const GRANTS: usize = 40;

    let killer = tokio::spawn(terminate_backends(url, 12, Duration::from_millis(40)));
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let host = host.clone();
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for g in 0..GRANTS {
                let key = format!("g-{c}-{g}");
                let body = json!({ "customerId": "c1", "credits": 1, "reason": "load" });
                let answer = host
                    .call(
                        Tenant::Globex,
                        "POST",
                        "/api/v1/credits/charge",
                        Some(body),
                        Some(&key),
                    )
                    .await;
                answers.push((key, answer));
            }
            answers
        }));
    }
    let ended = killer.await.unwrap();
    assert!(ended > 0, "no connection was ended under the load");
    let mut unavailable = 0;
    let mut keys = Vec::new();
    for client in clients {
        for (key, answer) in client.await.unwrap() {
            match answer.status.as_u16() {
                201 => {}
                503 => {
                    assert!(
                        matches!(answer.code(), "SYS_003" | "SYS_004"),
                        "{}",
                        answer.json
                    );
                    assert!(answer.headers.contains_key("retry-after"));
                    unavailable += 1;
                }
                other => panic!("{key}: {other} {}", answer.json),
            }
            keys.push(key);
        }
    }
    eprintln!("{ended} connections ended, {unavailable} answers 503");
    assert!(
        unavailable > 0,
        "no request met an ended connection: the test did not test it"
    );

    // Every request, sent again with its key, takes effect exactly once.
    for key in &keys {
        let body = json!({ "customerId": "c1", "credits": 1, "reason": "load" });
        let mut attempts = 0;
        loop {
            let answer = host
                .call(
                    Tenant::Globex,
                    "POST",
                    "/api/v1/credits/charge",
                    Some(body.clone()),
                    Some(key),
                )
                .await;
            if answer.status.as_u16() == 201 {
                break;
            }
            attempts += 1;
            assert!(attempts < 5, "{key} still fails: {}", answer.json);
        }
    }
    assert_eq!(
        host.balance(Tenant::Globex, "c1").await.result()["balance"],
        (CLIENTS * GRANTS) as i64
    );
    let host = std::sync::Arc::into_inner(host).expect("the clients are done");
    host.finish().await;
}

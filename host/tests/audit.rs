//! The auditor: clean after real traffic, and it catches every kind of
//! deliberate corruption — through the library and through
//! `fluxpay-host audit` (exit 0 clean, 1 with a report).

mod harness;

use std::path::Path;
use std::process::Command;

use harness::{Backend, Tenant, TestHost, backends, fresh_pg_database};
use serde_json::json;

/// `fluxpay-host <subcommand> --config <config>`, logging warnings only.
fn host_command(subcommand: &str, config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fluxpay-host"));
    command
        .args([subcommand, "--config"])
        .arg(config)
        .env("RUST_LOG", "warn");
    command
}

async fn scenario(host: &TestHost) -> String {
    host.put_customer(Tenant::Globex, "c1", json!({}))
        .await
        .expect(201, "OK");
    host.put_customer(Tenant::Globex, "c2", json!({}))
        .await
        .expect(201, "OK");
    host.charge(Tenant::Globex, "c1", 50)
        .await
        .expect(201, "OK");
    host.charge(Tenant::Globex, "c2", 50)
        .await
        .expect(201, "OK");
    let used = host
        .use_credits(Tenant::Globex, "c1", "render", 7, "u1")
        .await;
    let use_id = used.result()["transactionId"].as_str().unwrap().to_owned();
    host.call(
        Tenant::Globex,
        "POST",
        "/api/v1/credits/refund",
        Some(json!({ "transactionId": use_id, "credits": 2 })),
        Some("r1"),
    )
    .await
    .expect(201, "OK");
    use_id
}

fn checks(report: &fluxpay_host::app::audit::AuditReport) -> Vec<&'static str> {
    let mut checks: Vec<_> = report.discrepancies.iter().map(|d| d.check).collect();
    checks.sort();
    checks.dedup();
    checks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auditor_is_clean_after_traffic_and_catches_each_corruption() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let use_id = scenario(&host).await;
        let clean = host.audit().await;
        assert!(clean.is_clean(), "{clean}");
        assert!(clean.checked.credit_accounts >= 2 && clean.checked.history_rows >= 6);

        // A posting changed: the transaction and the unit no longer balance,
        // and the materialised balance no longer matches the ledger.
        host.raw
            .execute(&format!(
                "UPDATE ledger_postings SET amount = amount + 1 \
                 WHERE transaction_id = '{use_id}' AND account LIKE 'customer:%'"
            ))
            .await;
        let report = host.audit().await;
        let found = checks(&report);
        for check in [
            "ledger.transaction",
            "ledger.totals",
            "credit.balance",
            "credit.records",
        ] {
            assert!(
                found.contains(&check),
                "{backend:?}: {check} not in {found:?}\n{report}"
            );
        }
        host.raw
            .execute(&format!(
                "UPDATE ledger_postings SET amount = amount - 1 \
                 WHERE transaction_id = '{use_id}' AND account LIKE 'customer:%'"
            ))
            .await;
        assert!(host.audit().await.is_clean());

        // A balance changed behind the ledger's back.
        host.raw
            .execute("UPDATE credit_accounts SET balance = balance + 5 WHERE customer_id = 'c2'")
            .await;
        let found = checks(&host.audit().await);
        assert!(
            found.contains(&"credit.balance") && found.contains(&"history.chain"),
            "{found:?}"
        );
        host.raw
            .execute("UPDATE credit_accounts SET balance = balance - 5 WHERE customer_id = 'c2'")
            .await;

        // An effect without its event, then without its history row.
        host.raw
            .execute(&format!(
                "UPDATE outbox_events SET transaction_id = 'elsewhere' WHERE transaction_id = '{use_id}'"
            ))
            .await;
        let found = checks(&host.audit().await);
        assert!(found.contains(&"journal.links"), "{found:?}");
        host.raw
            .execute(&format!(
                "UPDATE outbox_events SET transaction_id = '{use_id}' WHERE transaction_id = 'elsewhere'"
            ))
            .await;
        host.raw
            .execute(&format!(
                "DELETE FROM state_history WHERE transaction_id = '{use_id}'"
            ))
            .await;
        let found = checks(&host.audit().await);
        assert!(
            found.contains(&"history.count") && found.contains(&"journal.links"),
            "{found:?}"
        );

        // The CLI agrees: exit 1 with a report naming the tenant.
        let (code, out) = cli_audit(&host, &[]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("[globex] history.count"), "{out}");
        let (code, out) = cli_audit(&host, &["--tenant", "acme"]);
        assert_eq!(code, 0, "acme is untouched: {out}");
        let (code, out) = cli_audit(&host, &["--tenant", "nobody"]);
        assert_eq!(code, 2, "{out}");

        // No final clean audit: this database is corrupt on purpose.
        host.discard().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_command_exits_zero_on_clean_books_and_reports_as_json() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        scenario(&host).await;
        let (code, out) = cli_audit(&host, &[]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("clean: no discrepancies"), "{out}");
        let (code, out) = cli_audit(&host, &["--json", "--tenant", "globex"]);
        assert_eq!(code, 0, "{out}");
        let report: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["tenants"], json!(["globex"]));
        assert_eq!(report["discrepancies"], json!([]));
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_schema_of_a_new_sqlite_database_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.yaml");
    std::fs::write(
        &config,
        "database:\n  url: sqlite://data/new.db\ntenants: {}\n",
    )
    .unwrap();
    for _ in 0..2 {
        let output = host_command("migrate", &config)
            .env_remove("FLUXPAY_DATABASE_URL")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("migrated the sqlite database"), "{stdout}");
    }
    assert!(
        dir.path().join("data/new.db").exists(),
        "relative to the config file"
    );
}

#[test]
fn auditing_a_sqlite_database_that_does_not_exist_says_so_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.yaml");
    std::fs::write(
        &config,
        "database:\n  url: sqlite://data/none.db\ntenants: {}\n",
    )
    .unwrap();
    let output = host_command("audit", &config)
        .env_remove("FLUXPAY_DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("there is no database at"), "{stderr}");
    assert!(stderr.contains("none.db"), "{stderr}");
    assert!(!dir.path().join("data/none.db").exists());
}

/// An auditor that read a schema older than its own would fail on what is
/// missing, or judge data by rules it was not written under: against a
/// database that was never migrated, or was by an older build, `audit`
/// refuses, names the missing migrations and changes nothing; after
/// `migrate` it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditing_a_database_behind_this_builds_migrations_refuses_until_it_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.yaml");
    std::fs::write(&config, "tenants: {}\n").unwrap();
    let mut cases: Vec<(String, String)> = Vec::new();
    let mut drop_afterwards = None;
    for backend in backends() {
        match backend {
            Backend::Sqlite => {
                let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/sqlite");
                // `0009_name.sql`, in version order.
                let mut files: Vec<String> = std::fs::read_dir(&migrations)
                    .unwrap()
                    .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|name| name.ends_with(".sql"))
                    .collect();
                files.sort();
                // A file that exists but was never migrated: every migration.
                let empty = dir.path().join("empty.db");
                std::fs::write(&empty, b"").unwrap();
                cases.push((
                    format!("sqlite://{}", empty.display()),
                    format!("not applied {} of", files.len()),
                ));
                // A file an older build migrated: all but the newest.
                let older = dir.path().join("older.db");
                let old_migrations = dir.path().join("old-migrations");
                std::fs::create_dir(&old_migrations).unwrap();
                let (newest, earlier) = files.split_last().unwrap();
                for name in earlier {
                    std::fs::copy(migrations.join(name), old_migrations.join(name)).unwrap();
                }
                let newest = newest[..4].trim_start_matches('0');
                let pool = sqlx::SqlitePool::connect_with(
                    sqlx::sqlite::SqliteConnectOptions::new()
                        .filename(&older)
                        .create_if_missing(true),
                )
                .await
                .unwrap();
                sqlx::migrate::Migrator::new(old_migrations.as_path())
                    .await
                    .unwrap()
                    .run(&pool)
                    .await
                    .unwrap();
                pool.close().await;
                cases.push((
                    format!("sqlite://{}", older.display()),
                    format!("not applied 1 of this build's migrations ({newest})"),
                ));
            }
            Backend::Postgres => {
                let (admin, url, name) = fresh_pg_database().await;
                cases.push((url, "of this build's migrations (1, 2, 4,".to_owned()));
                drop_afterwards = Some((admin, name));
            }
        }
    }
    for (url, missing) in cases {
        let audit = |url: &str| {
            host_command("audit", &config)
                .env("FLUXPAY_DATABASE_URL", url)
                .output()
                .unwrap()
        };
        let output = audit(&url);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{url}: {stderr}");
        assert!(stderr.contains(&missing), "{url}: {stderr}");
        assert!(
            stderr.contains("run `fluxpay-host migrate --config"),
            "{stderr}"
        );
        // Refusing changed nothing: still behind.
        let again = audit(&url);
        assert!(
            String::from_utf8_lossy(&again.stderr).contains(&missing),
            "{url}"
        );

        let migrated = host_command("migrate", &config)
            .env("FLUXPAY_DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(migrated.status.success(), "{url}: {migrated:?}");
        let output = audit(&url);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{url}: {stdout}{:?}",
            output.stderr
        );
        assert!(
            stdout.contains("clean: no discrepancies"),
            "{url}: {stdout}"
        );
    }
    if let Some((admin, name)) = drop_afterwards {
        let pool = sqlx::PgPool::connect(&admin).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

/// Runs `fluxpay-host audit` against the test host's database.
fn cli_audit(host: &TestHost, args: &[&str]) -> (i32, String) {
    let url = match &host.database.url {
        fluxpay_host::config::DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        fluxpay_host::config::DatabaseUrl::Postgres(url) => url.expose().to_owned(),
    };
    let output = host_command("audit", &host.config_path)
        .args(args)
        .env("FLUXPAY_DATABASE_URL", url)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// The feed findings of a report, as "tenant: detail".
fn feed_findings(report: &fluxpay_host::app::audit::AuditReport) -> Vec<String> {
    report
        .discrepancies
        .iter()
        .filter(|d| d.check == "feed.positions")
        .map(|d| format!("{}: {}", d.tenant, d.detail))
        .collect()
}

/// The journal's links, one break at a time: each finding names the
/// transaction it concerns and what is wrong with it, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broken_link_between_ledger_history_and_events_is_named() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let use_id = scenario(&host).await;
        let use_id = use_id.as_str();
        let no_event = "ledger transaction does not have exactly one outbox event";

        // The effect's event moved to a transaction that does not exist.
        let moved = format!(
            "UPDATE outbox_events SET transaction_id = 'elsewhere' \
             WHERE transaction_id = '{use_id}'"
        );
        host.raw.execute(&moved).await;
        assert_eq!(
            links(&host.audit().await),
            [
                ("elsewhere", "outbox event has no state-history row"),
                (use_id, no_event),
                (use_id, "state change has no outbox event"),
            ],
            "{backend:?}"
        );
        host.raw
            .execute(&format!(
                "UPDATE outbox_events SET transaction_id = '{use_id}' \
                 WHERE transaction_id = 'elsewhere'"
            ))
            .await;

        // A second event for the same effect.
        host.raw
            .execute(&format!(
                "INSERT INTO outbox_events \
                   (tenant_id, event_id, type, source, subject, time, data, transaction_id) \
                 SELECT tenant_id, 'evt_copy', type, source, subject, time, data, transaction_id \
                 FROM outbox_events WHERE transaction_id = '{use_id}'"
            ))
            .await;
        assert_eq!(
            links(&host.audit().await),
            [(use_id, no_event)],
            "{backend:?}"
        );
        host.raw
            .execute("DELETE FROM outbox_events WHERE event_id = 'evt_copy'")
            .await;

        // The effect's history row gone.
        host.raw
            .execute(&format!(
                "DELETE FROM state_history WHERE transaction_id = '{use_id}'"
            ))
            .await;
        assert_eq!(
            links(&host.audit().await),
            [
                (use_id, "ledger transaction has no state-history row"),
                (use_id, "outbox event has no state-history row"),
            ],
            "{backend:?}"
        );
        host.discard().await;
    }
}

/// The auditor's `journal.links` findings as (transaction, problem), sorted.
fn links(report: &fluxpay_host::app::audit::AuditReport) -> Vec<(&str, &str)> {
    let mut links: Vec<_> = report
        .discrepancies
        .iter()
        .filter(|d| d.check == "journal.links")
        .map(|d| (d.subject.as_str(), d.detail.as_str()))
        .collect();
    links.sort();
    links
}

/// An event the feed would serve twice or never is a finding on PostgreSQL,
/// where a position lives in `outbox_feed` (or the event waits in
/// `outbox_unsequenced` for the sequencer). On SQLite a position is the
/// event's rowid, so the database itself refuses to drop or share one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_feed_would_serve_twice_or_never_are_reported() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let use_id = scenario(&host).await;
        // Reading the feed numbers everything committed (PostgreSQL).
        host.call(Tenant::Globex, "GET", "/api/v1/events?after=0", None, None)
            .await
            .expect(200, "OK");
        assert!(host.audit().await.is_clean());
        if backend == Backend::Sqlite {
            let event = format!("transaction_id = '{use_id}'");
            let dropped = host
                .raw
                .try_execute(&format!(
                    "UPDATE outbox_events SET feed_seq = NULL WHERE {event}"
                ))
                .await
                .unwrap_err();
            assert!(
                dropped.to_string().contains("datatype mismatch"),
                "{dropped}"
            );
            let shared = host
                .raw
                .try_execute(&format!(
                    "UPDATE outbox_events SET feed_seq = \
                       (SELECT MIN(feed_seq) FROM outbox_events) WHERE {event} \
                       AND feed_seq > (SELECT MIN(feed_seq) FROM outbox_events)"
                ))
                .await
                .unwrap_err();
            assert!(shared.to_string().contains("UNIQUE"), "{shared}");
            host.finish().await;
            continue;
        }
        let event_row = format!("(SELECT id FROM outbox_events WHERE transaction_id = '{use_id}')");
        let mut found = Vec::new();
        // Two positions for one event…
        host.raw
            .execute(&format!(
                "INSERT INTO outbox_feed (tenant_id, feed_seq, event_row) \
                 VALUES ('globex', 1000, {event_row})"
            ))
            .await;
        found.push(feed_findings(&host.audit().await));
        // …none, and not queued for one…
        host.raw
            .execute(&format!(
                "DELETE FROM outbox_feed WHERE event_row = {event_row}"
            ))
            .await;
        found.push(feed_findings(&host.audit().await));
        // …and a position without its event.
        host.raw
            .execute(
                "INSERT INTO outbox_feed (tenant_id, feed_seq, event_row) \
                 VALUES ('globex', 1001, -1)",
            )
            .await;
        found.push(feed_findings(&host.audit().await));
        let expected = [
            "has 2 feed positions",
            "has no feed position and is not queued for one",
            "points to no event of this tenant",
        ];
        assert_eq!(found.len(), expected.len());
        for (findings, expected) in found.iter().zip(expected) {
            assert!(
                findings
                    .iter()
                    .any(|f| f.starts_with("globex: ") && f.contains(expected)),
                "{backend:?}: expected {expected:?} in {findings:?}"
            );
            assert!(
                findings.iter().all(|f| f.starts_with("globex: ")),
                "{backend:?}: only the corrupted tenant: {findings:?}"
            );
        }
        host.discard().await;
    }
}

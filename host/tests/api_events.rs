//! The events feed: every committed effect's event, in commit order, paged
//! by a cursor, tenant by tenant — including on PostgreSQL, where ids are
//! taken in one order and transactions commit in another.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use harness::{Backend, Raw, Tenant, TestHost, backends};
use serde_json::{Value, json};
use tokio::task::JoinSet;

async fn page(host: &TestHost, tenant: Tenant, after: &str, limit: u32) -> (Vec<Value>, String) {
    let answer = host
        .call(
            tenant,
            "GET",
            &format!("/api/v1/events?after={after}&limit={limit}"),
            None,
            None,
        )
        .await;
    answer.expect(200, "OK");
    let events = answer.result()["events"].as_array().unwrap().clone();
    let next = answer.result()["nextCursor"].as_str().unwrap().to_owned();
    (events, next)
}

/// Reads the whole feed after `after`, in pages of `limit`.
async fn drain(
    host: &TestHost,
    tenant: Tenant,
    mut after: String,
    limit: u32,
) -> (Vec<Value>, String) {
    let mut all = Vec::new();
    loop {
        let (events, next) = page(host, tenant, &after, limit).await;
        if events.is_empty() {
            assert_eq!(next, after, "an empty page keeps the cursor");
            return (all, after);
        }
        all.extend(events);
        after = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_serves_cloud_events_in_order_with_a_cursor() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Globex, "c1", 10).await;
        let used = host
            .use_credits(Tenant::Globex, "c1", "render", 4, "u1")
            .await;
        let use_id = used.result()["transactionId"].as_str().unwrap().to_owned();
        // The caller names its request: the event carries the id.
        let mut refund = host.request(
            Tenant::Globex,
            "POST",
            "/api/v1/credits/refund",
            Some(&json!({ "transactionId": use_id })),
            Some("r1"),
        );
        refund
            .headers_mut()
            .insert("x-request-id", "req-refund-1".parse().unwrap());
        host.send(refund).await.expect(201, "OK");
        host.put_customer(Tenant::Acme, "other", json!({}))
            .await
            .expect(201, "OK");

        let (events, cursor) = drain(&host, Tenant::Globex, "0".into(), 2).await;
        let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "customer.created",
                "credit.granted",
                "credit.deducted",
                "credit.refunded"
            ],
            "{backend:?}"
        );
        let positions: Vec<i64> = events
            .iter()
            .map(|e| e["position"].as_i64().unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        assert_eq!(cursor, positions.last().unwrap().to_string());
        let deducted = &events[2];
        assert_eq!(deducted["specversion"], "1.0");
        assert_eq!(deducted["source"], "/fluxpay/tenants/globex");
        assert_eq!(deducted["subject"], "c1");
        assert_eq!(deducted["datacontenttype"], "application/json");
        assert_eq!(deducted["data"]["transactionId"], use_id.as_str());
        assert_eq!(deducted["data"]["credits"], 4);
        assert_eq!(deducted["data"]["balance"], 6);
        assert!(deducted["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(events[3]["requestid"], "req-refund-1");
        // Unnamed requests get an id of the host's, one per request.
        let generated: BTreeSet<_> = events[..3]
            .iter()
            .map(|e| e["requestid"].as_str().unwrap())
            .collect();
        assert_eq!(generated.len(), 3, "{events:?}");
        let ids: BTreeSet<_> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 4, "stable unique ids");

        // Nothing after the end; bad cursors and limits are REQ_001.
        let (rest, same) = page(&host, Tenant::Globex, &cursor, 10).await;
        assert!(rest.is_empty());
        assert_eq!(same, cursor);
        for bad in ["after=x", "after=-1", "limit=0", "limit=1001"] {
            host.call(
                Tenant::Globex,
                "GET",
                &format!("/api/v1/events?{bad}"),
                None,
                None,
            )
            .await
            .expect(400, "REQ_001");
        }
        // The other tenant sees only its own.
        let (acme, _) = drain(&host, Tenant::Acme, "0".into(), 100).await;
        assert_eq!(acme.len(), 1);
        assert_eq!(acme[0]["subject"], "other");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_polling_during_concurrent_writes_sees_every_event_once_in_causal_order() {
    for backend in backends() {
        let host = Arc::new(TestHost::start(backend).await);
        for c in 0..4 {
            host.put_customer(Tenant::Globex, &format!("c{c}"), json!({}))
                .await
                .expect(201, "OK");
            host.charge(Tenant::Globex, &format!("c{c}"), 1000)
                .await
                .expect(201, "OK");
        }
        let (start, cursor) = drain(&host, Tenant::Globex, "0".into(), 100).await;
        assert_eq!(start.len(), 8);

        let mut writers = JoinSet::new();
        for i in 0..80 {
            let host = host.clone();
            writers.spawn(async move {
                host.use_credits(
                    Tenant::Globex,
                    &format!("c{}", i % 4),
                    "render",
                    1,
                    &format!("w{i}"),
                )
                .await
                .expect(201, "OK");
            });
        }
        // Poll while they write.
        let mut seen = Vec::new();
        let mut after = cursor;
        while !writers.is_empty() {
            let (events, next) = page(&host, Tenant::Globex, &after, 7).await;
            seen.extend(events);
            after = next;
            if let Some(done) = writers.try_join_next() {
                done.unwrap();
            } else {
                tokio::task::yield_now().await;
            }
        }
        let (tail, _) = drain(&host, Tenant::Globex, after, 7).await;
        seen.extend(tail);

        assert_eq!(seen.len(), 80, "{backend:?}: every event, once");
        let ids: BTreeSet<_> = seen.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 80);
        // Per customer, each use saw the balance the previous one left.
        let mut balances: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for event in &seen {
            balances
                .entry(event["subject"].as_str().unwrap().to_owned())
                .or_default()
                .push(event["data"]["balance"].as_i64().unwrap());
        }
        for (customer, balances) in balances {
            let expected: Vec<i64> = (0..20).map(|n| 999 - n).collect();
            assert_eq!(balances, expected, "{backend:?} {customer}");
        }
        Arc::into_inner(host).unwrap().finish().await;
    }
}

/// PostgreSQL takes identity values at insert time, so a transaction with
/// a lower id can commit after one with a higher id. The feed must neither
/// skip the late one nor show anything before it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_an_event_committed_late_is_served_after_those_already_read() {
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let host = TestHost::start(Backend::Postgres).await;
    host.put_customer(Tenant::Globex, "c1", json!({}))
        .await
        .expect(201, "OK");
    let (_, cursor) = drain(&host, Tenant::Globex, "0".into(), 100).await;
    let Raw::Postgres(pool) = &host.raw else {
        unreachable!()
    };

    // A transaction takes its outbox id first and commits last.
    // (As the host writes an event: the row, and its id for the sequencer.)
    let mut late = pool.begin().await.unwrap();
    sqlx::query(
        "WITH ob AS (INSERT INTO outbox_events (tenant_id, event_id, type, source, subject, \
           time, data, transaction_id) \
           VALUES ('globex', 'evt_late', 'test.late', '/test', 'c1', 0, '{}', 'tx_late') \
           RETURNING tenant_id, id) \
         INSERT INTO outbox_unsequenced (tenant_id, id) SELECT tenant_id, id FROM ob",
    )
    .execute(&mut *late)
    .await
    .unwrap();

    // Meanwhile an API write commits with a higher id, and is served.
    host.charge(Tenant::Globex, "c1", 5).await.expect(201, "OK");
    let (early, cursor) = drain(&host, Tenant::Globex, cursor, 100).await;
    let types: Vec<_> = early.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["credit.granted"],
        "the uncommitted event is not visible"
    );

    // Once it commits, the consumer that already read past the API event
    // still gets it: its position is after the cursor it holds.
    late.commit().await.unwrap();
    let (after, _) = drain(&host, Tenant::Globex, cursor.clone(), 100).await;
    let types: Vec<_> = after.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["test.late"]);
    assert!(after[0]["position"].as_i64().unwrap() > cursor.parse::<i64>().unwrap());
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT event_row FROM outbox_feed WHERE tenant_id = 'globex' ORDER BY feed_seq",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        ids.windows(2).any(|w| w[0] > w[1]),
        "positions follow commits, not ids: {ids:?}"
    );

    // The probe row is not an effect of the host: remove it before auditing.
    host.raw
        .execute(
            "DELETE FROM outbox_feed WHERE event_row = \
               (SELECT id FROM outbox_events WHERE transaction_id = 'tx_late')",
        )
        .await;
    host.raw
        .execute("DELETE FROM outbox_events WHERE transaction_id = 'tx_late'")
        .await;
    host.finish().await;
}

/// Upgrading a PostgreSQL database whose outbox already holds numbered and
/// not-yet-numbered events (migration 0006 moves positions out of
/// `outbox_events`): every position a consumer may hold a cursor for is
/// kept, and the rest are numbered after them, per tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_feed_migration_keeps_every_position_and_numbers_the_rest() {
    use std::borrow::Cow;

    use fluxpay_host::store::{PgStore, Queries};
    use sqlx::migrate::Migrator;

    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let (_, url, _) = harness::fresh_pg_database().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let all: Migrator = sqlx::migrate!("../migrations/postgres");
    let before_0006 = Migrator {
        migrations: Cow::Owned(
            all.migrations
                .iter()
                .filter(|m| m.version < 6)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    before_0006.run(&pool).await.unwrap();
    // Positions are global before 0006; one acme event is not numbered yet.
    for (event, tenant, position) in [
        ("e1", "acme", Some(1)),
        ("e2", "globex", Some(2)),
        ("e3", "acme", Some(3)),
        ("e4", "acme", None),
    ] {
        sqlx::query(
            "INSERT INTO outbox_events (tenant_id, event_id, type, source, subject, time, \
               data, transaction_id, feed_seq) \
             VALUES ($1, $2, 'test.old', '/test', 'c1', 0, '{}', 'tx_' || $2, $3)",
        )
        .bind(tenant)
        .bind(event)
        .bind(position)
        .execute(&pool)
        .await
        .unwrap();
    }
    all.run(&pool).await.unwrap();
    pool.close().await;

    let store = PgStore::connect(&url, 2).await.unwrap();
    assert_eq!(store.sequence_feed().await.unwrap(), 1, "e4 is numbered");
    let feed = |tenant: &'static str| {
        let store = store.clone();
        async move {
            store
                .events(tenant, 0, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.feed_seq, e.event_id))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        feed("acme").await,
        [
            (1, "e1".to_owned()),
            (3, "e3".to_owned()),
            (4, "e4".to_owned())
        ]
    );
    assert_eq!(feed("globex").await, [(2, "e2".to_owned())]);
    // A consumer holding acme's cursor 3 gets exactly the event it missed.
    let after = store.events("acme", 3, 100).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].event_id, "e4");
}

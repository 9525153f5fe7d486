//! Outbox retention on both backends: events older than the window that
//! every sink has published leave the outbox and the feed (the feed then
//! starts after them); newer ones, and older ones a sink has not published
//! yet, stay; the auditor still balances the books (effects from before the
//! pruned watermark are not matched to their events).

mod harness;

use fluxpay_host::store::{Queries, RelayTx, Transactions, TxOps};
use harness::{Tenant, TestHost, backends};

const DAY: i64 = 86_400_000;

async fn feed_ids(host: &TestHost) -> Vec<i64> {
    host.app
        .store()
        .events("globex", 0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.feed_seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_past_the_window_are_pruned_and_the_books_still_balance() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        // Old: a customer, a grant and a use, 31 days ago.
        host.funded_customer(Tenant::Globex, "c1", 100).await;
        host.use_credits(Tenant::Globex, "c1", "render", 3, "use-old")
            .await
            .expect(201, "OK");
        let old = feed_ids(&host).await;
        host.advance(31 * DAY);
        host.use_credits(Tenant::Globex, "c1", "render", 2, "use-new")
            .await
            .expect(201, "OK");
        let all = feed_ids(&host).await;
        let new: Vec<i64> = all[old.len()..].to_vec();

        // A sink that has published only the first old event holds the rest.
        let mut tx = host.app.store().begin("globex").await.unwrap();
        tx.claim_relay("kafka", "host-a", (host.now(), host.now() + 10_000))
            .await
            .unwrap();
        tx.advance_relay("kafka", "host-a", old[0], (host.now(), host.now() + 10_000))
            .await
            .unwrap();
        tx.commit(None).await.unwrap();
        let pruned = host
            .app
            .prune_outbox(host.now(), 30 * DAY, &["kafka"])
            .await
            .unwrap();
        assert_eq!(pruned, 1, "{backend:?}");
        assert_eq!(feed_ids(&host).await, all[1..].to_vec());

        // A host without the sink configured still respects its cursor.
        assert_eq!(
            host.app
                .prune_outbox(host.now(), 30 * DAY, &[])
                .await
                .unwrap(),
            0
        );
        // With the sink caught up, every old event goes; the new ones stay,
        // and the feed starts after the window.
        let mut tx = host.app.store().begin("globex").await.unwrap();
        tx.advance_relay(
            "kafka",
            "host-a",
            *all.last().unwrap(),
            (host.now(), host.now() + 10_000),
        )
        .await
        .unwrap();
        tx.commit(None).await.unwrap();
        let pruned = host
            .app
            .prune_outbox(host.now(), 30 * DAY, &["kafka"])
            .await
            .unwrap();
        assert_eq!(pruned as usize, old.len() - 1, "{backend:?}");
        assert_eq!(feed_ids(&host).await, new, "{backend:?}");
        let page = host
            .call(Tenant::Globex, "GET", "/api/v1/events?after=0", None, None)
            .await;
        assert_eq!(
            page.result()["events"][0]["position"].as_i64(),
            Some(new[0])
        );
        // Nothing left to prune; the balance and the ledger are untouched.
        assert_eq!(
            host.app
                .prune_outbox(host.now(), 30 * DAY, &[])
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            host.balance(Tenant::Globex, "c1").await.result()["balance"],
            95
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_relay_still_owes_are_never_pruned() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Globex, "c1", 100).await;
        host.funded_customer(Tenant::Globex, "c2", 100).await;
        let events = host.app.store().events("globex", 0, 100).await.unwrap();
        host.advance(31 * DAY);
        host.use_credits(Tenant::Globex, "c1", "render", 1, "use-new")
            .await
            .expect(201, "OK");
        // The cursor passed everything, but c2's creation is held behind a
        // dead event (strict order): it and everything after it stay.
        let held = &events[2];
        let mut tx = host.app.store().begin("globex").await.unwrap();
        let lease = (host.now(), host.now() + 10_000);
        tx.claim_relay("kafka", "host-a", lease).await.unwrap();
        tx.advance_relay("kafka", "host-a", i64::MAX / 2, lease)
            .await
            .unwrap();
        tx.put_relay_event(
            "kafka",
            &fluxpay_host::store::RelayEventRecord {
                event_id: held.event_id.clone(),
                position: held.feed_seq,
                customer_id: held.subject.clone(),
                event_type: held.event_type.clone(),
                state: "HELD".into(),
                attempts: 0,
                last_error: None,
                created_at: host.now(),
                updated_at: host.now(),
                next_attempt_at: None,
            },
        )
        .await
        .unwrap();
        tx.commit(None).await.unwrap();
        let pruned = host
            .app
            .prune_outbox(host.now(), 30 * DAY, &["kafka"])
            .await
            .unwrap();
        assert_eq!(pruned, 2, "{backend:?}: only what lies before the held one");
        assert_eq!(feed_ids(&host).await[0], held.feed_seq);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_event_stays_so_that_no_position_is_given_out_twice() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Globex, "c1", 100).await;
        let old = feed_ids(&host).await;
        host.advance(31 * DAY);
        // Everything is past the window, but the newest event is what the
        // next position is numbered from.
        let pruned = host
            .app
            .prune_outbox(host.now(), 30 * DAY, &[])
            .await
            .unwrap();
        assert_eq!(pruned as usize, old.len() - 1, "{backend:?}");
        assert_eq!(feed_ids(&host).await, vec![*old.last().unwrap()]);
        host.use_credits(Tenant::Globex, "c1", "render", 1, "use-after")
            .await
            .expect(201, "OK");
        let after = feed_ids(&host).await;
        assert!(after[1] > *old.last().unwrap(), "{backend:?}: {after:?}");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auditor_still_matches_effects_after_the_watermark_to_their_events() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Globex, "c1", 100).await;
        host.advance(31 * DAY);
        host.use_credits(Tenant::Globex, "c1", "render", 2, "use-new")
            .await
            .expect(201, "OK");
        host.app
            .prune_outbox(host.now(), 30 * DAY, &[])
            .await
            .unwrap();
        host.assert_audit_clean().await;
        // An event after the watermark that goes missing is still found.
        host.raw
            .execute("DELETE FROM outbox_events WHERE type = 'credit.deducted'")
            .await;
        if backend == harness::Backend::Postgres {
            host.raw
                .execute(
                    "DELETE FROM outbox_feed WHERE event_row NOT IN (SELECT id FROM outbox_events)",
                )
                .await;
        }
        let report = host.audit().await;
        assert!(
            report
                .discrepancies
                .iter()
                .any(|d| d.detail.contains("exactly one outbox event")),
            "{backend:?}: {report}"
        );
        host.discard().await;
    }
}

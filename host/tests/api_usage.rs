//! Metered usage through the tenant API: ingest (single and batch,
//! deduplicated forever, all-or-nothing on invalid events), the rated
//! summary and the period close — each endpoint's happy path and its errors
//! — on SQLite and (when configured) PostgreSQL, with the auditor clean
//! after each scenario.

mod harness;

use std::sync::Arc;

use harness::{Answer, Tenant, TestHost, backends};
use serde_json::{Value, json};
use tokio::task::JoinSet;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn event(id: &str, customer: &str, metric: &str, quantity: i64, timestamp: i64) -> Value {
    json!({
        "eventId": id,
        "customerId": customer,
        "metric": metric,
        "quantity": quantity,
        "timestamp": timestamp,
    })
}

async fn ingest(host: &TestHost, tenant: Tenant, body: Value) -> Answer {
    host.call(tenant, "POST", "/api/v1/usage", Some(body), None)
        .await
}

async fn summary(host: &TestHost, tenant: Tenant, customer: &str, from: i64, to: i64) -> Answer {
    host.call(
        tenant,
        "GET",
        &format!("/api/v1/usage/summary?customerId={customer}&from={from}&to={to}"),
        None,
        None,
    )
    .await
}

async fn close(
    host: &TestHost,
    tenant: Tenant,
    customer: &str,
    start: i64,
    end: i64,
    key: &str,
) -> Answer {
    host.call(
        tenant,
        "POST",
        "/api/v1/usage/close",
        Some(json!({ "customerId": customer, "periodStart": start, "periodEnd": end })),
        Some(key),
    )
    .await
}

/// `(metric, quantity)` pairs of a summary or close.
fn usage_of(result: &Value) -> Vec<(String, i64)> {
    result["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["metric"].as_str().unwrap().to_owned(),
                u["quantity"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn statuses(result: &Value) -> Vec<String> {
    result["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect()
}

async fn usage_rows(host: &TestHost) -> i64 {
    host.raw.scalar("SELECT COUNT(*) FROM usage_events").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_event_and_a_batch_are_stored_and_the_summary_rates_them_with_the_metered_policy()
{
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Acme, "c1", json!({}))
            .await
            .expect(201, "OK");
        let t = host.now() - HOUR;

        let single = ingest(&host, Tenant::Acme, event("e1", "c1", "api-calls", 500, t)).await;
        single.expect(200, "OK");
        assert_eq!(single.result()["received"], 1);
        assert_eq!(single.result()["accepted"], 1);
        assert_eq!(statuses(single.result()), ["accepted"]);
        assert_eq!(single.result()["events"][0]["eventId"], "e1");

        let batch = ingest(
            &host,
            Tenant::Acme,
            json!({ "events": [
                event("e2", "c1", "api-calls", 12_000, t + 1),
                { "eventId": "e3", "customerId": "c1", "metric": "storage-gb",
                  "quantity": 150, "timestamp": t + 2, "properties": { "region": "eu" } },
            ]}),
        )
        .await;
        batch.expect(200, "OK");
        assert_eq!(batch.result()["accepted"], 2, "{}", batch.json);
        assert_eq!(batch.result()["duplicates"], 0);

        // api-calls 12,500: 1,000 free, then 10,000 at $0.01 per 1000 (100)
        // and 1,500 at $0.005 per 1000 (7.5 → 8); storage-gb 150 by volume:
        // all 150 at the second tier's $1.50 (22,500). Total 22,608 cents.
        let s = summary(&host, Tenant::Acme, "c1", t - HOUR, t + HOUR).await;
        s.expect(200, "OK");
        let result = s.result();
        assert_eq!(
            usage_of(result),
            [
                ("api-calls".to_owned(), 12_500),
                ("storage-gb".to_owned(), 150)
            ]
        );
        assert_eq!(
            result["total"],
            json!({ "amount": 22_608, "currency": "USD" })
        );
        let lines: Vec<(String, i64, i64)> = result["lineItems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["code"].as_str().unwrap().to_owned(),
                    l["quantity"].as_i64().unwrap(),
                    l["money"]["amount"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("metric:api-calls:free".to_owned(), 1_000, 0),
                ("metric:api-calls:tier-1".to_owned(), 10_000, 100),
                ("metric:api-calls:tier-2".to_owned(), 1_500, 8),
                ("metric:storage-gb:tier-2".to_owned(), 150, 22_500),
            ],
            "{result}"
        );
        assert_eq!(result["pricedBy"]["policy"], "metered");
        assert_eq!(result["pricedBy"]["kind"], "metered");
        assert_eq!(
            result["pricedBy"]["contentHash"].as_str().unwrap().len(),
            64
        );

        // [from, to) is half-open, and a range without usage rates to zero.
        let s = summary(&host, Tenant::Acme, "c1", t + 1, t + 2).await;
        assert_eq!(
            usage_of(s.expect(200, "OK").result()),
            [("api-calls".to_owned(), 12_000)]
        );
        let s = summary(&host, Tenant::Acme, "c1", t - 2 * HOUR, t - HOUR).await;
        s.expect(200, "OK");
        assert_eq!(usage_of(s.result()), []);
        assert_eq!(s.result()["total"]["amount"], 0);

        // The summary writes nothing.
        assert_eq!(usage_rows(&host).await, 3);
        assert_eq!(
            host.raw.scalar("SELECT COUNT(*) FROM outbox_events").await,
            1,
            "only the customer's creation"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_1000_events_is_accepted_and_one_of_1001_is_refused_with_nothing_written() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Acme, "c1", json!({}))
            .await
            .expect(201, "OK");
        let t = host.now() - DAY;
        // ~150 bytes per event: a full batch is over the API's usual 64 KiB
        // body limit and over half the policy input limit (so acme's
        // validation policies see it in several calls).
        let batch = |n: usize, prefix: &str| {
            let events: Vec<Value> = (0..n)
                .map(|i| {
                    json!({
                        "eventId": format!("{prefix}-{i:04}"),
                        "customerId": "c1",
                        "metric": "api-calls",
                        "quantity": 1,
                        "timestamp": t + i as i64,
                        "properties": { "endpoint": "/v1/render", "status": "200" },
                    })
                })
                .collect();
            json!({ "events": events })
        };

        let too_many = ingest(&host, Tenant::Acme, batch(1_001, "x")).await;
        too_many.expect(400, "REQ_001");
        assert!(
            too_many.json["message"].as_str().unwrap().contains("1000"),
            "{}",
            too_many.json
        );
        assert_eq!(usage_rows(&host).await, 0);

        // The last event breaks a policy rule: the last policy call finds it.
        let mut bad_tail = batch(1_000, "e");
        bad_tail["events"][999]["metric"] = json!("gpu-hours");
        let refused = ingest(&host, Tenant::Acme, bad_tail).await;
        refused.expect(422, "POL_001");
        let violations = refused.result()["violations"].as_array().unwrap();
        assert_eq!(violations.len(), 1, "{}", refused.json);
        assert!(
            violations[0]["message"]
                .as_str()
                .unwrap()
                .contains("e-0999")
        );
        assert_eq!(usage_rows(&host).await, 0);

        let full = ingest(&host, Tenant::Acme, batch(1_000, "e")).await;
        full.expect(200, "OK");
        assert_eq!(full.result()["accepted"], 1_000);
        assert_eq!(usage_rows(&host).await, 1_000);
        let s = summary(&host, Tenant::Acme, "c1", t, t + DAY).await;
        assert_eq!(
            usage_of(s.expect(200, "OK").result()),
            [("api-calls".to_owned(), 1_000)]
        );
        // All within acme's 1,000 free api-calls.
        assert_eq!(
            s.result()["total"],
            json!({ "amount": 0, "currency": "USD" })
        );

        // The same batch again: all duplicates, nothing counted twice.
        let again = ingest(&host, Tenant::Acme, batch(1_000, "e")).await;
        again.expect(200, "OK");
        assert_eq!(again.result()["duplicates"], 1_000);
        assert_eq!(again.result()["accepted"], 0);
        assert_eq!(usage_rows(&host).await, 1_000);

        let empty = ingest(&host, Tenant::Acme, json!({ "events": [] })).await;
        empty.expect(400, "REQ_001");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_within_a_batch_and_across_requests_are_reported_and_counted_once() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Globex, "c1", json!({}))
            .await
            .expect(201, "OK");
        let t = host.now() - HOUR;

        let first = ingest(
            &host,
            Tenant::Globex,
            json!({ "events": [
                event("a", "c1", "api-calls", 10, t),
                event("b", "c1", "api-calls", 20, t),
                event("a", "c1", "api-calls", 10, t),
            ]}),
        )
        .await;
        first.expect(200, "OK");
        assert_eq!(
            statuses(first.result()),
            ["accepted", "accepted", "duplicate"]
        );
        assert_eq!(first.result()["events"][2]["index"], 2);
        assert!(
            first.result()["events"][2]["reason"]
                .as_str()
                .unwrap()
                .contains("event 0"),
            "{}",
            first.json
        );

        let second = ingest(
            &host,
            Tenant::Globex,
            json!({ "events": [
                event("b", "c1", "api-calls", 20, t),
                event("c", "c1", "api-calls", 5, t),
            ]}),
        )
        .await;
        second.expect(200, "OK");
        assert_eq!(statuses(second.result()), ["duplicate", "accepted"]);
        assert_eq!(
            (
                second.result()["accepted"].clone(),
                second.result()["duplicates"].clone()
            ),
            (json!(1), json!(1))
        );

        // A single event sent twice.
        let once = ingest(&host, Tenant::Globex, event("c", "c1", "api-calls", 5, t)).await;
        assert_eq!(statuses(once.expect(200, "OK").result()), ["duplicate"]);

        // 10 + 20 + 5: each event once.
        let s = summary(&host, Tenant::Globex, "c1", t, t + 1).await;
        assert_eq!(
            usage_of(s.expect(200, "OK").result()),
            [("api-calls".to_owned(), 35)]
        );
        assert_eq!(usage_rows(&host).await, 3);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_id_reused_with_different_content_is_a_conflict_and_the_stored_event_stands() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Globex, "c1", json!({}))
            .await
            .expect(201, "OK");
        let t = host.now() - HOUR;
        ingest(&host, Tenant::Globex, event("a", "c1", "api-calls", 10, t))
            .await
            .expect(200, "OK");

        let answer = ingest(
            &host,
            Tenant::Globex,
            json!({ "events": [
                event("a", "c1", "api-calls", 99, t),
                event("b", "c1", "api-calls", 1, t),
                event("b", "c1", "api-calls", 2, t),
            ]}),
        )
        .await;
        answer.expect(200, "OK");
        let result = answer.result();
        assert_eq!(statuses(result), ["conflict", "accepted", "conflict"]);
        assert_eq!(result["conflicts"], 2);
        assert_eq!(result["accepted"], 1);
        assert!(result["events"][0]["reason"].is_string());

        // Different properties are different content too.
        let props = ingest(
            &host,
            Tenant::Globex,
            json!({ "eventId": "a", "customerId": "c1", "metric": "api-calls",
                    "quantity": 10, "timestamp": t, "properties": { "k": "v" } }),
        )
        .await;
        assert_eq!(statuses(props.expect(200, "OK").result()), ["conflict"]);

        let s = summary(&host, Tenant::Globex, "c1", t, t + 1).await;
        assert_eq!(
            usage_of(s.expect(200, "OK").result()),
            [("api-calls".to_owned(), 11)],
            "the first versions stand"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_event_refuses_the_whole_batch_naming_it_and_nothing_is_written() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Acme, "c1", json!({}))
            .await
            .expect(201, "OK");
        let now = host.now();
        let good = event("ok-1", "c1", "api-calls", 1, now - HOUR);
        let before = host.raw.counts().await;

        let cases = [
            (event("neg", "c1", "api-calls", -1, now), "negative"),
            (event("fut", "c1", "api-calls", 1, now + HOUR), "future"),
            (
                event("old", "c1", "api-calls", 1, now - 40 * DAY),
                "too old",
            ),
            (event("bad", "c1", "API Calls", 1, now), "metric"),
            (event("", "c1", "api-calls", 1, now), "eventId"),
        ];
        for (bad, why) in cases {
            let answer = ingest(
                &host,
                Tenant::Acme,
                json!({ "events": [good.clone(), bad] }),
            )
            .await;
            answer.expect(400, "REQ_001");
            let message = answer.json["message"].as_str().unwrap();
            assert!(message.contains("event 1"), "{why}: {message}");
            assert!(message.contains(why), "{why}: {message}");
        }

        // Every bad event is named at once.
        let answer = ingest(
            &host,
            Tenant::Acme,
            json!({ "events": [
                event("n1", "c1", "api-calls", -1, now),
                good.clone(),
                event("n2", "c1", "api-calls", -2, now),
            ]}),
        )
        .await;
        answer.expect(400, "REQ_001");
        let message = answer.json["message"].as_str().unwrap();
        assert!(
            message.contains("`n1`") && message.contains("`n2`"),
            "{message}"
        );

        // A metric acme's validation policy does not know: POL_001, per event.
        let answer = ingest(
            &host,
            Tenant::Acme,
            json!({ "events": [good.clone(), event("gpu", "c1", "gpu-hours", 1, now)] }),
        )
        .await;
        answer.expect(422, "POL_001");
        let violations = answer.result()["violations"].as_array().unwrap();
        assert_eq!(violations.len(), 1, "{}", answer.json);
        assert_eq!(violations[0]["ruleId"], "usage-unknown-metric");
        assert!(violations[0]["message"].as_str().unwrap().contains("gpu"));

        // Malformed shapes.
        let answer = ingest(
            &host,
            Tenant::Acme,
            json!({ "events": [{ "eventId": "x" }] }),
        )
        .await;
        answer.expect(400, "REQ_001");
        let mut extra = good.clone();
        extra["price"] = json!(1);
        ingest(&host, Tenant::Acme, extra)
            .await
            .expect(400, "REQ_001");

        assert_eq!(host.raw.counts().await, before, "nothing written");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_customer_is_not_found_and_nothing_is_written() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Globex, "c1", json!({}))
            .await
            .expect(201, "OK");
        let t = host.now() - HOUR;
        let answer = ingest(
            &host,
            Tenant::Globex,
            json!({ "events": [
                event("e1", "c1", "api-calls", 1, t),
                event("e2", "ghost", "api-calls", 1, t),
            ]}),
        )
        .await;
        answer.expect(404, "NOT_FOUND");
        assert!(answer.json["message"].as_str().unwrap().contains("ghost"));
        assert_eq!(usage_rows(&host).await, 0);
        summary(&host, Tenant::Globex, "ghost", t, t + 1)
            .await
            .expect(404, "NOT_FOUND");
        close(&host, Tenant::Globex, "ghost", t - DAY, t, "close-ghost")
            .await
            .expect(404, "NOT_FOUND");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_do_not_see_each_others_usage_and_event_ids_are_per_tenant() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Acme, "c1", json!({}))
            .await
            .expect(201, "OK");
        let t = host.now() - HOUR;
        ingest(
            &host,
            Tenant::Acme,
            event("shared", "c1", "api-calls", 5_000, t),
        )
        .await
        .expect(200, "OK");

        // Globex has no customer c1: its key cannot read or write acme's.
        summary(&host, Tenant::Globex, "c1", t, t + 1)
            .await
            .expect(404, "NOT_FOUND");
        ingest(
            &host,
            Tenant::Globex,
            event("shared", "c1", "api-calls", 1, t),
        )
        .await
        .expect(404, "NOT_FOUND");
        close(&host, Tenant::Globex, "c1", t - DAY, t + 1, "close-1")
            .await
            .expect(404, "NOT_FOUND");

        // Its own c1 and the same event id are independent of acme's.
        host.put_customer(Tenant::Globex, "c1", json!({}))
            .await
            .expect(201, "OK");
        let mine = ingest(
            &host,
            Tenant::Globex,
            event("shared", "c1", "api-calls", 7, t),
        )
        .await;
        assert_eq!(statuses(mine.expect(200, "OK").result()), ["accepted"]);
        let theirs = summary(&host, Tenant::Globex, "c1", t, t + 1).await;
        assert_eq!(
            usage_of(theirs.expect(200, "OK").result()),
            [("api-calls".to_owned(), 7)]
        );
        let acme = summary(&host, Tenant::Acme, "c1", t, t + 1).await;
        assert_eq!(
            usage_of(acme.expect(200, "OK").result()),
            [("api-calls".to_owned(), 5_000)]
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_and_close_refuse_bad_ranges_and_close_needs_an_idempotency_key() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Globex, "c1", json!({}))
            .await
            .expect(201, "OK");
        let now = host.now();
        for (from, to) in [(now, now), (now, now - 1), (now - 401 * DAY, now)] {
            summary(&host, Tenant::Globex, "c1", from, to)
                .await
                .expect(400, "REQ_001");
            close(
                &host,
                Tenant::Globex,
                "c1",
                from,
                to,
                &format!("k-{from}-{to}"),
            )
            .await
            .expect(400, "REQ_001");
        }
        host.call(
            Tenant::Globex,
            "GET",
            "/api/v1/usage/summary?customerId=c1",
            None,
            None,
        )
        .await
        .expect(400, "REQ_001");
        // A period that has not ended yet cannot be closed.
        close(
            &host,
            Tenant::Globex,
            "c1",
            now - DAY,
            now + HOUR,
            "k-future",
        )
        .await
        .expect(400, "REQ_001");
        host.call(
            Tenant::Globex,
            "POST",
            "/api/v1/usage/close",
            Some(json!({ "customerId": "c1", "periodStart": now - DAY, "periodEnd": now })),
            None,
        )
        .await
        .expect(400, "REQ_001");
        // Hooli has no metered policy.
        host.put_customer(Tenant::Hooli, "c1", json!({}))
            .await
            .expect(201, "OK");
        summary(&host, Tenant::Hooli, "c1", now - DAY, now)
            .await
            .expect(422, "POL_008");
        assert_eq!(
            host.raw.scalar("SELECT COUNT(*) FROM period_closes").await,
            0
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_without_billable_usage_closes_without_an_order_and_later_events_for_it_are_late()
{
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Acme, "c1", json!({}))
            .await
            .expect(201, "OK");
        let end = host.now() - HOUR;
        let start = end - DAY;
        // 800 api-calls are inside the 1,000 free: the period rates to 0.
        ingest(
            &host,
            Tenant::Acme,
            event("e1", "c1", "api-calls", 800, start + 10),
        )
        .await
        .expect(200, "OK");

        let closed = close(&host, Tenant::Acme, "c1", start, end, "close-1").await;
        closed.expect(201, "OK");
        let result = closed.result();
        assert!(result["closeId"].as_str().unwrap().starts_with("uclose_"));
        assert_eq!(result["customerId"], "c1");
        assert_eq!(
            (result["periodStart"].as_i64(), result["periodEnd"].as_i64()),
            (Some(start), Some(end))
        );
        assert_eq!(usage_of(result), [("api-calls".to_owned(), 800)]);
        assert_eq!(result["total"], json!({ "amount": 0, "currency": "USD" }));
        assert_eq!(result["orderId"], Value::Null);
        assert_eq!(result["pricedBy"]["kind"], "metered");
        assert_eq!(host.raw.scalar("SELECT COUNT(*) FROM orders").await, 0);

        // A retry with the same key replays the answer; no second close.
        let replay = close(&host, Tenant::Acme, "c1", start, end, "close-1").await;
        replay.expect(201, "OK");
        assert_eq!(replay.bytes, closed.bytes);
        assert_eq!(replay.headers.get("idempotent-replayed").unwrap(), "true");

        // The same period again, or one overlapping it: PAY_004.
        close(&host, Tenant::Acme, "c1", start, end, "close-2")
            .await
            .expect(409, "PAY_004");
        close(
            &host,
            Tenant::Acme,
            "c1",
            start + HOUR,
            end + HOUR,
            "close-3",
        )
        .await
        .expect(409, "PAY_004");
        close(
            &host,
            Tenant::Acme,
            "c1",
            start - HOUR,
            start + 1,
            "close-4",
        )
        .await
        .expect(409, "PAY_004");
        // The next period, sharing the boundary, is fine.
        close(&host, Tenant::Acme, "c1", end, end + 1, "close-5")
            .await
            .expect(201, "OK");

        // A late event for the closed period is refused; the batch's other
        // events proceed, and a stored event stays a duplicate.
        let late = ingest(
            &host,
            Tenant::Acme,
            json!({ "events": [
                event("late-1", "c1", "api-calls", 5_000, start + 20),
                event("e1", "c1", "api-calls", 800, start + 10),
                event("fresh", "c1", "api-calls", 3, end + 5),
                event("edge", "c1", "api-calls", 4, start - 1),
            ]}),
        )
        .await;
        late.expect(200, "OK");
        assert_eq!(
            statuses(late.result()),
            ["late", "duplicate", "accepted", "accepted"],
            "{}",
            late.json
        );
        assert_eq!(late.result()["late"], 1);
        let s = summary(&host, Tenant::Acme, "c1", start, end).await;
        assert_eq!(
            usage_of(s.expect(200, "OK").result()),
            [("api-calls".to_owned(), 800)]
        );

        let history = host
            .raw
            .scalar(
                "SELECT COUNT(*) FROM state_history WHERE entity_type = 'usage_period' \
                 AND to_state = 'CLOSED'",
            )
            .await;
        assert_eq!(history, 2);
        let events = host
            .raw
            .scalar("SELECT COUNT(*) FROM outbox_events WHERE type = 'usage.period_closed'")
            .await;
        assert_eq!(events, 2);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_with_the_same_event_ids_count_each_event_once() {
    for backend in backends() {
        let host = Arc::new(TestHost::start(backend).await);
        host.put_customer(Tenant::Globex, "c1", json!({}))
            .await
            .expect(201, "OK");
        host.put_customer(Tenant::Globex, "c2", json!({}))
            .await
            .expect(201, "OK");
        let t = host.now() - HOUR;
        let mut tasks = JoinSet::new();
        for task in 0..8_usize {
            let host = host.clone();
            tasks.spawn(async move {
                // Every task sends the same 50 events, in its own order.
                let mut events: Vec<Value> = (0..50)
                    .map(|i| {
                        let customer = if i % 2 == 0 { "c1" } else { "c2" };
                        event(&format!("e{i:02}"), customer, "api-calls", 1, t + i)
                    })
                    .collect();
                events.rotate_left(task * 7);
                if task % 2 == 1 {
                    events.reverse();
                }
                ingest(&host, Tenant::Globex, json!({ "events": events })).await
            });
        }
        let mut accepted = 0;
        while let Some(answer) = tasks.join_next().await {
            let answer = answer.unwrap();
            answer.expect(200, "OK");
            let result = answer.result();
            assert_eq!(
                result["accepted"].as_i64().unwrap() + result["duplicates"].as_i64().unwrap(),
                50,
                "{backend:?}: {result}"
            );
            accepted += result["accepted"].as_i64().unwrap();
        }
        assert_eq!(
            accepted, 50,
            "{backend:?}: each event accepted exactly once"
        );
        assert_eq!(usage_rows(&host).await, 50);
        for customer in ["c1", "c2"] {
            let s = summary(&host, Tenant::Globex, customer, t, t + 50).await;
            assert_eq!(
                usage_of(s.expect(200, "OK").result()),
                [("api-calls".to_owned(), 25)]
            );
        }
        let host = Arc::into_inner(host).unwrap();
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_on_a_batch_replays_its_answer() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Globex, "c1", json!({}))
            .await
            .expect(201, "OK");
        let t = host.now() - HOUR;
        let body = json!({ "events": [event("e1", "c1", "emails", 700, t)] });
        let first = host
            .call(
                Tenant::Globex,
                "POST",
                "/api/v1/usage",
                Some(body.clone()),
                Some("batch-1"),
            )
            .await;
        first.expect(200, "OK");
        let replay = host
            .call(
                Tenant::Globex,
                "POST",
                "/api/v1/usage",
                Some(body),
                Some("batch-1"),
            )
            .await;
        replay.expect(200, "OK");
        assert_eq!(
            replay.bytes, first.bytes,
            "accepted, not duplicate: the stored answer"
        );
        let other = json!({ "events": [event("e2", "c1", "emails", 1, t)] });
        host.call(
            Tenant::Globex,
            "POST",
            "/api/v1/usage",
            Some(other),
            Some("batch-1"),
        )
        .await
        .expect(409, "PAY_003");

        // Globex: 500 emails free, then €4.00 per started 1000; other
        // metrics are ignored by its policy.
        ingest(&host, Tenant::Globex, event("e3", "c1", "sms", 9, t))
            .await
            .expect(200, "OK");
        let s = summary(&host, Tenant::Globex, "c1", t, t + 1).await;
        s.expect(200, "OK");
        assert_eq!(
            usage_of(s.result()),
            [("emails".to_owned(), 700), ("sms".to_owned(), 9)]
        );
        assert_eq!(
            s.result()["total"],
            json!({ "amount": 400, "currency": "EUR" })
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_period_leaves_a_pending_order_whose_lines_sum_to_the_rated_total() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Acme, "c1", json!({}))
            .await
            .expect(201, "OK");
        let end = host.now() - HOUR;
        let start = end - 7 * DAY;
        ingest(
            &host,
            Tenant::Acme,
            json!({ "events": [
                event("e1", "c1", "api-calls", 12_000, start),
                event("e2", "c1", "api-calls", 500, end - 1),
                event("e3", "c1", "storage-gb", 150, start + DAY),
                event("e4", "c1", "storage-gb", 0, start + DAY),
                event("outside", "c1", "api-calls", 1_000_000, end),
            ]}),
        )
        .await
        .expect(200, "OK");

        let closed = close(&host, Tenant::Acme, "c1", start, end, "close-1").await;
        closed.expect(201, "OK");
        let result = closed.result().clone();
        // The same rating as the summary test: 108 + 22,500 cents.
        assert_eq!(
            usage_of(&result),
            [
                ("api-calls".to_owned(), 12_500),
                ("storage-gb".to_owned(), 150)
            ]
        );
        assert_eq!(
            result["total"],
            json!({ "amount": 22_608, "currency": "USD" })
        );
        assert_eq!(result["pricedBy"]["policy"], "metered");
        let order_id = result["orderId"].as_str().expect("an order").to_owned();

        let order = host.order(Tenant::Acme, &order_id).await;
        order.expect(200, "OK");
        let o = order.result();
        assert_eq!(o["status"], "PENDING");
        assert_eq!(o["customerId"], "c1");
        assert_eq!(o["currency"], "USD");
        assert_eq!(o["total"], 22_608);
        assert_eq!(o["source"], "usage_close");
        assert_eq!(o["sourceId"], result["closeId"]);
        assert_eq!(
            o["items"],
            json!([
                { "sku": "metric:api-calls", "quantity": 12_500 },
                { "sku": "metric:storage-gb", "quantity": 150 },
            ])
        );
        let lines = o["lineItems"].as_array().unwrap();
        let sum: i64 = lines.iter().map(|l| l["amount"].as_i64().unwrap()).sum();
        assert_eq!(sum, 22_608, "the lines add up to the total");
        assert_eq!(lines.len(), result["lineItems"].as_array().unwrap().len());

        // Closing it again, even with a new key, is refused; no second order.
        close(&host, Tenant::Acme, "c1", start, end, "close-2")
            .await
            .expect(409, "PAY_004");
        assert_eq!(host.raw.scalar("SELECT COUNT(*) FROM orders").await, 1);
        assert_eq!(
            host.raw
                .scalar("SELECT COUNT(*) FROM outbox_events WHERE type = 'order.created'")
                .await,
            1
        );

        // A tenant-B key cannot see the order.
        host.order(Tenant::Globex, &order_id)
            .await
            .expect(404, "NOT_FOUND");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_racing_a_close_are_either_in_its_total_or_late_and_one_close_wins() {
    for backend in backends() {
        let host = Arc::new(TestHost::start(backend).await);
        host.put_customer(Tenant::Acme, "c1", json!({}))
            .await
            .expect(201, "OK");
        let end = host.now() - HOUR;
        let start = end - DAY;
        let mut ingests = JoinSet::new();
        for i in 0..20_i64 {
            let host = host.clone();
            ingests.spawn(async move {
                let answer = ingest(
                    &host,
                    Tenant::Acme,
                    event(&format!("e{i}"), "c1", "api-calls", 1, start + i),
                )
                .await;
                answer.expect(200, "OK");
                answer.result()["events"][0]["status"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            });
        }
        let mut closes = JoinSet::new();
        for k in 0..4_i64 {
            let host = host.clone();
            closes.spawn(async move {
                // Overlapping periods: at most one of them can close. A
                // close that usage kept overtaking closed nothing and asks
                // to be sent again (`SYS_006`, retryable): a client does.
                for _ in 0..20 {
                    let answer = close(
                        &host,
                        Tenant::Acme,
                        "c1",
                        start - k,
                        end,
                        &format!("close-{k}"),
                    )
                    .await;
                    if answer.code() != "SYS_006" {
                        return answer;
                    }
                }
                panic!("close-{k} was overtaken by usage 20 times");
            });
        }
        let mut statuses = Vec::new();
        while let Some(status) = ingests.join_next().await {
            statuses.push(status.unwrap());
        }
        let mut won = Vec::new();
        while let Some(answer) = closes.join_next().await {
            let answer = answer.unwrap();
            match answer.code() {
                "OK" => won.push(answer.result().clone()),
                "PAY_004" => {}
                other => panic!("{backend:?}: unexpected {other}: {}", answer.json),
            }
        }
        assert_eq!(won.len(), 1, "{backend:?}: exactly one close");
        let accepted = statuses.iter().filter(|s| *s == "accepted").count() as i64;
        let late = statuses.iter().filter(|s| *s == "late").count() as i64;
        assert_eq!(accepted + late, 20, "{statuses:?}");
        let closed: i64 = usage_of(&won[0]).iter().map(|(_, q)| q).sum();
        assert_eq!(
            closed, accepted,
            "{backend:?}: the close billed what was accepted"
        );
        assert_eq!(usage_rows(&host).await, accepted);
        let host = Arc::into_inner(host).unwrap();
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auditor_checks_a_closed_period_has_its_history_row_and_event() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Globex, "c1", json!({}))
            .await
            .expect(201, "OK");
        let end = host.now() - HOUR;
        ingest(
            &host,
            Tenant::Globex,
            event("e1", "c1", "api-calls", 250, end - 10),
        )
        .await
        .expect(200, "OK");
        let closed = close(&host, Tenant::Globex, "c1", end - DAY, end, "close-1").await;
        closed.expect(201, "OK");
        assert_eq!(closed.result()["total"]["amount"], 250);
        host.assert_audit_clean().await;

        host.raw
            .execute("DELETE FROM state_history WHERE entity_type = 'usage_period'")
            .await;
        let report = host.audit().await;
        assert!(!report.is_clean());
        let text = report.to_string();
        assert!(text.contains("usage_period:"), "{text}");
        assert!(
            text.contains("outbox event has no state-history row"),
            "{text}"
        );
        host.discard().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_with_more_metrics_than_an_order_holds_is_billed_as_one_usage_period_item() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Globex, "g1", json!({}))
            .await
            .expect(201, "OK");
        let end = host.now() - HOUR;
        let start = end - DAY;
        // Globex bills `api-calls` (1 cent each) and ignores other metrics,
        // which still count as usage: 121 metrics in all.
        let mut events = vec![event("calls", "g1", "api-calls", 250, start)];
        for m in 0..120 {
            events.push(event(
                &format!("m-{m}"),
                "g1",
                &format!("metric-{m}"),
                1,
                start,
            ));
        }
        ingest(&host, Tenant::Globex, json!({ "events": events }))
            .await
            .expect(200, "OK");
        let closed = close(&host, Tenant::Globex, "g1", start, end, "close-many").await;
        closed.expect(201, "OK");
        let order_id = closed.result()["orderId"].as_str().expect("an order");
        let order = host.order(Tenant::Globex, &order_id).await;
        order.expect(200, "OK");
        assert_eq!(
            order.result()["items"],
            json!([{ "sku": "usage-period", "quantity": 1 }])
        );
        assert_eq!(order.result()["total"], closed.result()["total"]["amount"]);
        assert_eq!(order.result()["total"], 250);
        host.finish().await;
    }
}

//! Orders through the tenant API: created priced by the tenant's order
//! policy and checked by its validation policies, read, cancelled — each
//! endpoint's happy path and its errors — on SQLite and (when configured)
//! PostgreSQL, with the auditor clean after each scenario.

mod harness;

use harness::{Answer, Tenant, TestHost, backends};
use serde_json::{Value, json};

async fn create_order(host: &TestHost, tenant: Tenant, body: Value, key: &str) -> Answer {
    host.call(tenant, "POST", "/api/v1/orders", Some(body), Some(key))
        .await
}

async fn acme_customer(host: &TestHost, id: &str, tier: &str) {
    host.put_customer(Tenant::Acme, id, json!({ "tier": tier }))
        .await
        .expect(201, "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_priced_by_the_policy_and_reads_back_as_created() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        acme_customer(&host, "c1", "gold").await;

        let created = create_order(
            &host,
            Tenant::Acme,
            json!({
                "customerId": "c1",
                "currency": "USD",
                "items": [
                    { "sku": "pro-pack", "quantity": 4 },
                    { "sku": "starter-pack", "quantity": 2 },
                    { "sku": "pro-pack", "quantity": 6 }
                ],
                "metadata": { "cart": "42" }
            }),
            "order-1",
        )
        .await;
        created.expect(201, "OK");
        let order = created.result().clone();
        // 10 pro-packs reach the 4499 break (all units), 2 starter packs at
        // 999, then gold's 10 % off the subtotal: 44990 + 1998 = 46988,
        // discount −4699 (4698.8 rounded half away from zero) → 42289.
        assert_eq!(order["status"], "PENDING");
        assert_eq!(order["currency"], "USD");
        assert_eq!(order["total"], 42289, "{order}");
        let lines = order["lineItems"].as_array().unwrap();
        let codes: Vec<&str> = lines.iter().map(|l| l["code"].as_str().unwrap()).collect();
        assert_eq!(
            codes,
            ["sku:pro-pack", "sku:starter-pack", "discount:tier:gold"]
        );
        assert_eq!(lines[0]["amount"], 44990);
        assert_eq!(lines[2]["amount"], -4699);
        let sum: i64 = lines.iter().map(|l| l["amount"].as_i64().unwrap()).sum();
        assert_eq!(sum, 42289, "the lines add up to the total");
        assert_eq!(
            order["items"].as_array().unwrap().len(),
            3,
            "items as asked"
        );
        assert_eq!(order["metadata"]["cart"], "42");
        assert_eq!(order["pricedBy"]["policy"], "order");
        assert_eq!(order["pricedBy"]["contentHash"].as_str().unwrap().len(), 64);
        assert_eq!(order["source"], "api");

        let id = order["orderId"].as_str().unwrap();
        let read = host.order(Tenant::Acme, &id).await;
        read.expect(200, "OK");
        assert_eq!(read.result(), &order, "GET shows what POST answered");

        // The receivable is on the ledger and the event is in the feed.
        let receivable = host
            .raw
            .scalar(
                "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_postings \
                 WHERE tenant_id = 'acme' AND account = 'customer:c1:receivable'",
            )
            .await;
        assert_eq!(receivable, 42289);
        let events = host
            .call(Tenant::Acme, "GET", "/api/v1/events", None, None)
            .await;
        let created_events: Vec<&Value> = events.result()["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "order.created")
            .collect();
        assert_eq!(created_events.len(), 1);
        assert_eq!(created_events[0]["data"]["orderId"], id);
        assert_eq!(created_events[0]["data"]["total"], 42289);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_in_the_tenants_default_currency_needs_no_currency_field() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Globex, "g1", json!({}))
            .await
            .expect(201, "OK");
        let created = create_order(
            &host,
            Tenant::Globex,
            json!({ "customerId": "g1", "items": [{ "sku": "report", "quantity": 3 }] }),
            "g-order-1",
        )
        .await;
        created.expect(201, "OK");
        assert_eq!(created.result()["currency"], "EUR");
        assert_eq!(created.result()["total"], 7500);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_order_can_be_cancelled_once_and_the_receivable_is_withdrawn() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        acme_customer(&host, "c1", "silver").await;
        let created = create_order(
            &host,
            Tenant::Acme,
            json!({ "customerId": "c1", "items": [{ "sku": "starter-pack", "quantity": 1 }] }),
            "order-1",
        )
        .await;
        created.expect(201, "OK");
        let id = created.result()["orderId"].as_str().unwrap().to_owned();
        let path = format!("/api/v1/orders/{id}/cancel");

        let cancelled = host
            .call(
                Tenant::Acme,
                "POST",
                &path,
                Some(json!({ "reason": "changed my mind" })),
                None,
            )
            .await;
        cancelled.expect(200, "OK");
        assert_eq!(cancelled.result()["status"], "CANCELLED");
        assert_eq!(cancelled.result()["version"], 2);
        let receivable = host
            .raw
            .scalar(
                "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM ledger_postings \
                 WHERE tenant_id = 'acme' AND account = 'customer:c1:receivable'",
            )
            .await;
        assert_eq!(receivable, 0, "the bill is withdrawn");

        // A cancelled order is terminal: a second cancel is a state conflict
        // and writes nothing.
        let before = host.raw.counts().await;
        host.call(Tenant::Acme, "POST", &path, None, None)
            .await
            .expect(409, "PAY_004");
        assert_eq!(host.raw.counts().await, before);

        let history = host
            .raw
            .scalar(&format!(
                "SELECT COUNT(*) FROM state_history WHERE entity_type = 'order' \
                 AND entity_id = '{id}'"
            ))
            .await;
        assert_eq!(history, 2, "create and cancel");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_order_request_replays_the_answer_and_a_changed_one_conflicts() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        acme_customer(&host, "c1", "silver").await;
        let body =
            json!({ "customerId": "c1", "items": [{ "sku": "starter-pack", "quantity": 1 }] });
        let first = create_order(&host, Tenant::Acme, body.clone(), "k-1").await;
        first.expect(201, "OK");
        let again = create_order(&host, Tenant::Acme, body, "k-1").await;
        assert_eq!(again.status, first.status);
        assert_eq!(again.bytes, first.bytes, "byte-for-byte replay");
        assert!(again.headers.get("idempotent-replayed").is_some());
        let changed =
            json!({ "customerId": "c1", "items": [{ "sku": "starter-pack", "quantity": 2 }] });
        create_order(&host, Tenant::Acme, changed, "k-1")
            .await
            .expect(409, "PAY_003");
        let orders = host.raw.scalar("SELECT COUNT(*) FROM orders").await;
        assert_eq!(orders, 1, "one effect");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_orders_are_refused_with_a_precise_code_and_write_nothing() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        acme_customer(&host, "c1", "silver").await;
        let before = host.raw.counts().await;
        let item = |sku: &str, quantity: Value| json!([{ "sku": sku, "quantity": quantity }]);
        let cases: Vec<(Value, u16, &str)> = vec![
            // Not something the client may decide or send.
            (
                json!({ "customerId": "c1", "items": item("starter-pack", json!(1)), "total": 1 }),
                400,
                "REQ_001",
            ),
            (json!({ "customerId": "c1", "items": [] }), 400, "REQ_001"),
            (
                json!({ "customerId": "c1", "items": item("starter-pack", json!(0)) }),
                400,
                "REQ_001",
            ),
            (
                json!({ "customerId": "c1", "items": item("starter-pack", json!(-3)) }),
                400,
                "REQ_001",
            ),
            (
                json!({ "customerId": "c1", "items": item("starter-pack", json!(9_223_372_036_854_775_808u64)) }),
                400,
                "REQ_001",
            ),
            (
                json!({ "customerId": "c1", "currency": "XYZ", "items": item("starter-pack", json!(1)) }),
                400,
                "REQ_001",
            ),
            (
                json!({ "customerId": "", "items": item("starter-pack", json!(1)) }),
                400,
                "REQ_001",
            ),
            // The policy's own refusals.
            (
                json!({ "customerId": "c1", "items": item("no-such-sku", json!(1)) }),
                422,
                "POL_003",
            ),
            (
                json!({ "customerId": "c1", "items": item("pro-pack", json!(4_000_000_000_000_000i64)) }),
                422,
                "POL_003",
            ),
            // The validation policies: a currency the tenant does not take,
            // and a total above its limit.
            (
                json!({ "customerId": "c1", "currency": "EUR", "items": item("starter-pack", json!(1)) }),
                422,
                "POL_001",
            ),
            (
                json!({ "customerId": "c1", "items": item("pro-pack", json!(30)) }),
                422,
                "POL_001",
            ),
            (
                json!({ "customerId": "nobody", "items": item("starter-pack", json!(1)) }),
                404,
                "NOT_FOUND",
            ),
        ];
        for (i, (body, status, code)) in cases.into_iter().enumerate() {
            let answer = create_order(&host, Tenant::Acme, body.clone(), &format!("bad-{i}")).await;
            assert_eq!(
                (answer.status.as_u16(), answer.code()),
                (status, code),
                "{body} → {}",
                answer.json
            );
        }
        // A money-moving POST without an Idempotency-Key.
        host.call(
            Tenant::Acme,
            "POST",
            "/api/v1/orders",
            Some(json!({ "customerId": "c1", "items": item("starter-pack", json!(1)) })),
            None,
        )
        .await
        .expect(400, "REQ_001");
        assert_eq!(
            host.raw.counts().await,
            before,
            "nothing written by any refused order"
        );
        // A tenant without an order policy.
        host.put_customer(Tenant::Hooli, "h1", json!({}))
            .await
            .expect(201, "OK");
        let before_hooli = host.raw.counts().await;
        create_order(
            &host,
            Tenant::Hooli,
            json!({ "customerId": "h1", "currency": "USD", "items": item("x", json!(1)) }),
            "hooli-1",
        )
        .await
        .expect(422, "POL_008");
        assert_eq!(host.raw.counts().await, before_hooli);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_key_cannot_read_or_cancel_an_order() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        acme_customer(&host, "c1", "silver").await;
        let created = create_order(
            &host,
            Tenant::Acme,
            json!({ "customerId": "c1", "items": [{ "sku": "starter-pack", "quantity": 1 }] }),
            "order-1",
        )
        .await;
        let id = created.result()["orderId"].as_str().unwrap().to_owned();
        let before = host.raw.counts().await;
        host.order(Tenant::Globex, &id)
            .await
            .expect(404, "NOT_FOUND");
        host.call(
            Tenant::Globex,
            "POST",
            &format!("/api/v1/orders/{id}/cancel"),
            None,
            None,
        )
        .await
        .expect(404, "NOT_FOUND");
        assert_eq!(host.raw.counts().await, before);
        let status = host.order(Tenant::Acme, &id).await;
        assert_eq!(status.result()["status"], "PENDING", "unchanged");
        host.finish().await;
    }
}

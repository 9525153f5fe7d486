//! `POST /api/v1/payments/confirm` on both backends, against the bundled
//! PG simulator over real HTTP: an approval pays the order once, a decline
//! is final and replayed, an amount that differs reaches no PG, a lost
//! answer is resolved by asking the PG (one approval), an outage charges
//! nothing and a retry succeeds, and the books (FluxPay's auditor, the
//! simulator's ledger) agree.

mod harness;

use std::time::Duration;

use fluxpay_host::gateway::simulator::{Faults, cards};
use harness::{Answer, PG_TIMEOUT as TIMEOUT, Pg, Tenant, TestHost, backends, pg};
use serde_json::{Value, json};

/// A customer and a PENDING order of 2 reports (5,000 EUR minor units).
async fn order(host: &TestHost, customer: &str) -> (String, i64) {
    host.put_customer(Tenant::Globex, customer, json!({})).await;
    let created = host
        .call(
            Tenant::Globex,
            "POST",
            "/api/v1/orders",
            Some(json!({ "customerId": customer, "items": [{ "sku": "report", "quantity": 2 }] })),
            Some(&format!("order-{customer}")),
        )
        .await;
    created.expect(201, "OK");
    let result = created.result();
    (
        result["orderId"].as_str().unwrap().to_owned(),
        result["total"].as_i64().unwrap(),
    )
}

async fn confirm(
    host: &TestHost,
    order: &str,
    payment_key: &str,
    amount: i64,
    key: &str,
) -> Answer {
    host.call(
        Tenant::Globex,
        "POST",
        "/api/v1/payments/confirm",
        Some(json!({ "orderId": order, "paymentKey": payment_key, "amount": amount })),
        Some(key),
    )
    .await
}

/// An order of `customer` whose payment's answer was lost (202 PAY_006),
/// paid with `card`: (order id, total, payment key, payment id).
async fn lost_payment(
    host: &TestHost,
    pg: &Pg,
    customer: &str,
    card: &str,
) -> (String, i64, String, String) {
    let (order_id, total) = order(host, customer).await;
    let payment_key = pg.checkout(&order_id, total, card).await;
    let key = format!("pay-{customer}");
    let lost = confirm(host, &order_id, &payment_key, total, &key).await;
    lost.expect(202, "PAY_006");
    assert!(lost.headers.contains_key("retry-after"));
    let id = lost.result()["paymentId"].as_str().unwrap().to_owned();
    (order_id, total, payment_key, id)
}

async fn order_status(host: &TestHost, order: &str) -> String {
    host.order(Tenant::Globex, order).await.result()["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_payment_pays_the_order_once_and_replays_byte_for_byte() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (order_id, total) = order(&host, "c1").await;
        let payment_key = pg.checkout(&order_id, total, cards::APPROVE).await;

        let paid = confirm(&host, &order_id, &payment_key, total, "pay-1").await;
        paid.expect(201, "OK");
        let payment = paid.result();
        assert_eq!(payment["status"], "APPROVED", "{backend:?}");
        assert_eq!(
            payment["amount"],
            json!({ "amount": total, "currency": "EUR" })
        );
        assert_eq!(payment["pgPaymentKey"], payment_key.as_str());
        assert_eq!(payment["attempts"][0]["outcome"], "approved");
        assert_eq!(order_status(&host, &order_id).await, "PAID");

        let replay = confirm(&host, &order_id, &payment_key, total, "pay-1").await;
        assert_eq!(replay.bytes, paid.bytes, "{backend:?}");
        assert_eq!(replay.headers["idempotent-replayed"], "true");
        // Another key for a paid order: refused, nothing sent.
        confirm(&host, &order_id, &payment_key, total, "pay-2")
            .await
            .expect(409, "PAY_004");
        assert_eq!(pg.sim.ledger().approvals, 1);
        assert_eq!(pg.sim.ledger().confirm_calls, 1);
        // A paid order cannot be cancelled under its payment (the void
        // comes with the payment's own cancel).
        host.call(
            Tenant::Globex,
            "POST",
            &format!("/api/v1/orders/{order_id}/cancel"),
            None,
            None,
        )
        .await
        .expect(409, "PAY_004");
        assert_eq!(order_status(&host, &order_id).await, "PAID");

        let id = payment["paymentId"].as_str().unwrap();
        let read = host
            .call(
                Tenant::Globex,
                "GET",
                &format!("/api/v1/payments/{id}"),
                None,
                None,
            )
            .await;
        read.expect(200, "OK");
        assert_eq!(read.result()["status"], "APPROVED");
        let listed = host
            .call(
                Tenant::Globex,
                "GET",
                &format!("/api/v1/payments?orderId={order_id}"),
                None,
                None,
            )
            .await;
        assert_eq!(listed.result().as_array().unwrap().len(), 1);
        // Another tenant does not see it.
        host.call(
            Tenant::Hooli,
            "GET",
            &format!("/api/v1/payments/{id}"),
            None,
            None,
        )
        .await
        .expect(404, "NOT_FOUND");

        let events = host
            .call(
                Tenant::Globex,
                "GET",
                "/api/v1/events?limit=100",
                None,
                None,
            )
            .await;
        let types: Vec<&str> = events.result()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        for expected in ["payment.created", "payment.approved", "order.paid"] {
            assert!(types.contains(&expected), "{backend:?}: {types:?}");
        }
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_is_final_and_a_wrong_amount_reaches_no_gateway() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (order_id, total) = order(&host, "c1").await;

        let payment_key = pg.checkout(&order_id, total, cards::DECLINE).await;
        confirm(&host, &order_id, &payment_key, total + 1, "pay-1")
            .await
            .expect(400, "REQ_001");
        assert_eq!(pg.sim.ledger().confirm_calls, 0, "nothing was sent");

        // A payment key the PG never issued: the request is refused (the
        // client's mistake), nothing is charged, nothing is kept.
        let refused = confirm(&host, &order_id, "tsim_nope", total, "pay-0").await;
        refused.expect(400, "REQ_001");
        assert!(
            refused.json["message"]
                .as_str()
                .unwrap()
                .contains("NOT_FOUND_PAYMENT")
        );

        let declined = confirm(&host, &order_id, &payment_key, total, "pay-2").await;
        declined.expect(402, "PAY_002");
        assert_eq!(declined.result()["status"], "FAILED");
        assert_eq!(declined.result()["failure"]["code"], "REJECT_CARD_PAYMENT");
        let replay = confirm(&host, &order_id, &payment_key, total, "pay-2").await;
        assert_eq!(
            replay.bytes, declined.bytes,
            "{backend:?}: a decline replays"
        );
        assert_eq!(
            pg.sim.ledger().confirm_calls,
            2,
            "the refused key and the decline, each once: never retried"
        );
        assert_eq!(order_status(&host, &order_id).await, "PENDING");

        // The customer tries another card: a new checkout, a new payment.
        let second_key = pg.checkout(&order_id, total, cards::APPROVE).await;
        let paid = confirm(&host, &order_id, &second_key, total, "pay-3").await;
        paid.expect(201, "OK");
        assert_eq!(order_status(&host, &order_id).await, "PAID");
        assert_eq!(pg.sim.ledger().approvals, 1);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_resolved_by_asking_the_pg_never_by_approving_again() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (order_id, total, payment_key, id) =
            lost_payment(&host, &pg, "c1", cards::APPROVE_THEN_TIMEOUT).await;
        let pending = host
            .call(
                Tenant::Globex,
                "GET",
                &format!("/api/v1/payments/{id}"),
                None,
                None,
            )
            .await;
        assert_eq!(pending.result()["status"], "UNKNOWN", "{backend:?}");
        assert_eq!(order_status(&host, &order_id).await, "PENDING");

        // The same request again: the PG is asked, and its approval adopted.
        let resolved = confirm(&host, &order_id, &payment_key, total, "pay-c1").await;
        resolved.expect(201, "OK");
        assert_eq!(resolved.result()["paymentId"], id.as_str());
        assert_eq!(resolved.result()["status"], "APPROVED");
        let kinds: Vec<&str> = resolved.result()["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["approve", "query"]);
        assert_eq!(order_status(&host, &order_id).await, "PAID");
        assert_eq!(pg.sim.ledger().approvals, 1);
        assert_eq!(
            pg.sim.ledger().confirm_calls,
            1,
            "approved once, asked after"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_charges_nothing_and_the_same_request_succeeds_once_the_pg_is_back() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (order_id, total) = order(&host, "c1").await;
        let payment_key = pg.checkout(&order_id, total, cards::APPROVE).await;

        pg.sim.set_faults(Faults {
            outage: true,
            ..Faults::default()
        });
        let down = confirm(&host, &order_id, &payment_key, total, "pay-1").await;
        down.expect(503, "PAY_005");
        assert!(down.headers.contains_key("retry-after"));
        assert_eq!(order_status(&host, &order_id).await, "PENDING");

        pg.sim.set_faults(Faults::default());
        let paid = confirm(&host, &order_id, &payment_key, total, "pay-1").await;
        paid.expect(201, "OK");
        assert_eq!(pg.sim.ledger().approvals, 1);
        // The failed attempt stays on record, beside the one that paid.
        let listed = host
            .call(
                Tenant::Globex,
                "GET",
                &format!("/api/v1/payments?orderId={order_id}"),
                None,
                None,
            )
            .await;
        let statuses: Vec<&str> = listed
            .result()
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["FAILED", "APPROVED"], "{backend:?}");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_without_a_gateway_takes_no_payments() {
    let host = TestHost::start(backends()[0]).await;
    let _pg = pg(&host).await;
    host.put_customer(Tenant::Hooli, "c1", json!({})).await;
    host.call(
        Tenant::Hooli,
        "POST",
        "/api/v1/payments/confirm",
        Some(json!({ "orderId": "ord_x", "paymentKey": "k", "amount": 1 })),
        Some("pay-1"),
    )
    .await
    .expect(422, "PAY_007");
    host.finish().await;
}

async fn payment(host: &TestHost, id: &str) -> Value {
    host.call(
        Tenant::Globex,
        "GET",
        &format!("/api/v1/payments/{id}"),
        None,
        None,
    )
    .await
    .result()
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_janitor_resolves_lost_answers_by_asking_the_pg_without_a_client_retry() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        // The PG approved, the answer was lost.
        let (approved_order, _, _, approved_id) =
            lost_payment(&host, &pg, "c1", cards::APPROVE_THEN_TIMEOUT).await;
        // The PG did not approve, and the answer was lost too.
        let (aborted_order, _, _, aborted_id) =
            lost_payment(&host, &pg, "c2", cards::TIMEOUT_NOT_APPROVED).await;

        // Not due yet: nothing is asked.
        let early = host.app.run_payment_janitor(host.now()).await;
        assert_eq!(early.checked, 0, "{backend:?}");
        host.advance(10_000);
        let run = host.app.run_payment_janitor(host.now()).await;
        assert_eq!((run.checked, run.resolved), (2, 2), "{backend:?}: {run:?}");

        assert_eq!(payment(&host, &approved_id).await["status"], "APPROVED");
        assert_eq!(order_status(&host, &approved_order).await, "PAID");
        assert_eq!(payment(&host, &aborted_id).await["status"], "FAILED");
        assert_eq!(order_status(&host, &aborted_order).await, "PENDING");
        assert_eq!(pg.sim.ledger().approvals, 1);
        assert_eq!(pg.sim.ledger().confirm_calls, 2, "the janitor only asks");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_the_pg_cannot_tell_about_is_asked_on_a_schedule_then_flagged() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (_, _, _, id) = lost_payment(&host, &pg, "c1", cards::TIMEOUT_NOT_APPROVED).await;
        pg.sim.set_faults(Faults {
            outage: true,
            ..Faults::default()
        });
        // 10 s, then 30 s, 2 min, 10 min and 1 h later: five checks.
        for wait in fluxpay_host::app::payments::CHECK_SCHEDULE_MS {
            host.advance(wait);
            let run = host.app.run_payment_janitor(host.now()).await;
            assert_eq!(
                (run.checked, run.unresolved),
                (1, 1),
                "{backend:?}: {run:?}"
            );
        }
        let health = host.app.payment_health("globex", 60_000).await.unwrap();
        assert_eq!((health.unknown, health.stuck, health.flagged), (1, 1, 1));
        // What operators see (the admin API).
        let admin = host
            .send(
                axum::http::Request::builder()
                    .method("GET")
                    .uri("/admin/v1/payments/health")
                    .header("authorization", format!("Bearer {}", harness::ADMIN_TOKEN))
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await;
        admin.expect(200, "OK");
        let globex = &admin.result()["tenants"][0];
        assert_eq!(
            (&globex["tenant"], &globex["unknown"], &globex["flagged"]),
            (&json!("globex"), &json!(1), &json!(1)),
            "{backend:?}: {}",
            admin.json
        );
        assert_eq!(
            globex["breaker"], "closed",
            "20 failed queries stay under the breaker's minimum of 50 calls"
        );
        // Flagged: no longer asked about, even once the PG is back.
        pg.sim.set_faults(Faults::default());
        host.advance(86_400_000);
        assert_eq!(host.app.run_payment_janitor(host.now()).await.checked, 0);
        let shown = payment(&host, &id).await;
        assert_eq!(shown["status"], "UNKNOWN");
        let queries = shown["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "query")
            .count();
        assert_eq!(queries, 5, "{backend:?}");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_gives_the_money_back_and_cancels_the_order_in_one_step() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (order_id, total) = order(&host, "c1").await;
        let key = pg.checkout(&order_id, total, cards::APPROVE).await;
        let paid = confirm(&host, &order_id, &key, total, "pay-1").await;
        paid.expect(201, "OK");
        let id = paid.result()["paymentId"].as_str().unwrap().to_owned();

        let cancel = |idem: &'static str| {
            let (host, id) = (&host, id.clone());
            async move {
                host.call(
                    Tenant::Globex,
                    "POST",
                    &format!("/api/v1/payments/{id}/cancel"),
                    Some(json!({ "reason": "customer changed their mind" })),
                    Some(idem),
                )
                .await
            }
        };
        // A blank reason is refused before anything reaches the PG.
        host.call(
            Tenant::Globex,
            "POST",
            &format!("/api/v1/payments/{id}/cancel"),
            Some(json!({ "reason": " " })),
            Some("void-0"),
        )
        .await
        .expect(400, "REQ_001");
        assert_eq!(pg.sim.ledger().cancelled_amount, 0);

        let voided = cancel("void-1").await;
        voided.expect(200, "OK");
        assert_eq!(voided.result()["status"], "CANCELLED", "{backend:?}");
        let kinds: Vec<&str> = voided.result()["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["approve", "cancel"]);
        assert_eq!(order_status(&host, &order_id).await, "CANCELLED");
        assert_eq!(pg.sim.ledger().cancelled_amount, total);

        // The same request replays; another one finds nothing to void.
        let replay = cancel("void-1").await;
        assert_eq!(replay.bytes, voided.bytes);
        cancel("void-2").await.expect(409, "PAY_004");
        assert_eq!(pg.sim.ledger().cancelled_amount, total, "voided once");
        // The books: clearing, receivable and deferred revenue back to 0.
        host.finish().await;
    }
}

async fn complete(host: &TestHost, tenant: Tenant, order: &str) -> Answer {
    host.call(
        tenant,
        "POST",
        "/api/v1/service-callbacks/completed",
        Some(json!({ "orderId": order })),
        None,
    )
    .await
}

/// An order paid and fulfilled: (order id, total, payment id).
async fn confirmed_payment(host: &TestHost, pg: &Pg, customer: &str) -> (String, i64, String) {
    let (order_id, total) = order(host, customer).await;
    let key = pg.checkout(&order_id, total, cards::APPROVE).await;
    let paid = confirm(host, &order_id, &key, total, &format!("pay-{customer}")).await;
    paid.expect(201, "OK");
    let id = paid.result()["paymentId"].as_str().unwrap().to_owned();
    complete(host, Tenant::Globex, &order_id)
        .await
        .expect(200, "OK");
    (order_id, total, id)
}

async fn cancel_payment(host: &TestHost, id: &str, body: Value, idem: &str) -> Answer {
    host.call(
        Tenant::Globex,
        "POST",
        &format!("/api/v1/payments/{id}/cancel"),
        Some(body),
        Some(idem),
    )
    .await
}

async fn event_types(host: &TestHost) -> Vec<String> {
    host.call(
        Tenant::Globex,
        "GET",
        "/api/v1/events?limit=500",
        None,
        None,
    )
    .await
    .result()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fulfilled_order_confirms_its_payment_once_and_only_a_paid_order_can_be() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (order_id, total) = order(&host, "c1").await;
        // Not paid yet: nothing to confirm.
        complete(&host, Tenant::Globex, &order_id)
            .await
            .expect(409, "PAY_004");
        let key = pg.checkout(&order_id, total, cards::APPROVE).await;
        let paid = confirm(&host, &order_id, &key, total, "pay-1").await;
        let id = paid.result()["paymentId"].as_str().unwrap().to_owned();
        // Another tenant's service cannot complete it.
        complete(&host, Tenant::Hooli, &order_id)
            .await
            .expect(404, "NOT_FOUND");

        let done = complete(&host, Tenant::Globex, &order_id).await;
        done.expect(200, "OK");
        assert_eq!(done.result()["status"], "COMPLETED", "{backend:?}");
        assert_eq!(payment(&host, &id).await["status"], "CONFIRMED");
        // The callback again: the order as it stands, nothing moves.
        let again = complete(&host, Tenant::Globex, &order_id).await;
        again.expect(200, "OK");
        assert_eq!(again.result()["version"], done.result()["version"]);
        // A confirmed payment is refunded, never voided: the order stays.
        host.call(
            Tenant::Globex,
            "POST",
            &format!("/api/v1/orders/{order_id}/cancel"),
            None,
            None,
        )
        .await
        .expect(409, "PAY_004");
        let types = event_types(&host).await;
        for expected in ["payment.confirmed", "order.completed"] {
            assert_eq!(
                types.iter().filter(|t| *t == expected).count(),
                1,
                "{backend:?}: {types:?}"
            );
        }
        assert_eq!(pg.sim.ledger().approvals, 1);

        // Its history: every transition, who made it and in which request.
        let history = host
            .call(
                Tenant::Globex,
                "GET",
                &format!("/api/v1/payments/{id}/history"),
                None,
                None,
            )
            .await;
        history.expect(200, "OK");
        let steps: Vec<(Value, Value, Value)> = history
            .result()
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["from"].clone(), t["to"].clone(), t["event"].clone()))
            .collect();
        assert_eq!(
            steps,
            [
                (Value::Null, json!("READY"), json!("create")),
                (json!("READY"), json!("APPROVED"), json!("approve")),
                (json!("APPROVED"), json!("CONFIRMED"), json!("confirm")),
            ],
            "{backend:?}"
        );
        for t in history.result().as_array().unwrap() {
            assert!(t["actor"].as_str().unwrap().starts_with("api_key:"), "{t}");
            assert!(t["requestId"].is_string(), "{t}");
        }
        host.call(
            Tenant::Hooli,
            "GET",
            &format!("/api/v1/payments/{id}/history"),
            None,
            None,
        )
        .await
        .expect(404, "NOT_FOUND");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_give_back_part_then_the_rest_and_never_more_than_was_confirmed() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (order_id, total, id) = confirmed_payment(&host, &pg, "c1").await;

        // More than was confirmed, zero, negative: refused, nothing sent.
        for (amount, code, status) in [
            (total + 1, "PAY_004", 409),
            (0, "REQ_001", 400),
            (-5, "REQ_001", 400),
        ] {
            cancel_payment(
                &host,
                &id,
                json!({ "reason": "broken", "amount": amount }),
                &format!("refund-bad-{amount}"),
            )
            .await
            .expect(status, code);
        }
        assert_eq!(pg.sim.ledger().cancelled_amount, 0, "{backend:?}");

        let part = cancel_payment(
            &host,
            &id,
            json!({ "reason": "one report was late", "amount": 1_000 }),
            "refund-1",
        )
        .await;
        part.expect(200, "OK");
        assert_eq!(part.result()["status"], "PARTIALLY_REFUNDED", "{backend:?}");
        assert_eq!(part.result()["refunded"], 1_000);
        let replay = cancel_payment(
            &host,
            &id,
            json!({ "reason": "one report was late", "amount": 1_000 }),
            "refund-1",
        )
        .await;
        assert_eq!(replay.bytes, part.bytes);
        // What is left, and not a unit more.
        cancel_payment(
            &host,
            &id,
            json!({ "reason": "too much", "amount": total - 999 }),
            "refund-2",
        )
        .await
        .expect(409, "PAY_004");
        let rest = cancel_payment(&host, &id, json!({ "reason": "all of it" }), "refund-3").await;
        rest.expect(200, "OK");
        assert_eq!(rest.result()["status"], "REFUNDED");
        assert_eq!(rest.result()["refunded"], total);
        let keys: Vec<&str> = rest.result()["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["idempotencyKey"].as_str())
            .collect();
        assert_eq!(
            keys,
            [
                id.clone(),
                format!("{id}-refund-1"),
                format!("{id}-refund-2")
            ]
        );
        cancel_payment(&host, &id, json!({ "reason": "again" }), "refund-4")
            .await
            .expect(409, "PAY_004");
        assert_eq!(pg.sim.ledger().cancelled_amount, total, "{backend:?}");
        assert_eq!(order_status(&host, &order_id).await, "COMPLETED");
        let types = event_types(&host).await;
        assert_eq!(
            types.iter().filter(|t| *t == "payment.refunded").count(),
            2,
            "{backend:?}: {types:?}"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_whose_answer_was_lost_is_repeated_with_its_key_and_made_once() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (_, total, id) = confirmed_payment(&host, &pg, "c1").await;
        // The PG refunds, but only after the connector gave up waiting.
        let slow = 2 * TIMEOUT.as_millis() as u64;
        pg.sim.set_faults(Faults {
            latency_ms: [slow, slow],
            ..Faults::default()
        });
        let body = json!({ "reason": "late delivery", "amount": 700 });
        cancel_payment(&host, &id, body.clone(), "refund-1")
            .await
            .expect(202, "PAY_006");
        while pg.sim.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pg.sim.set_faults(Faults::default());
        assert_eq!(pg.sim.ledger().cancelled_amount, 700, "the PG did refund");
        assert_eq!(payment(&host, &id).await["status"], "CONFIRMED");

        // The client sends the same request again: the same PG key, so the
        // PG answers the refund it made, and FluxPay records it once.
        let again = cancel_payment(&host, &id, body, "refund-1").await;
        again.expect(200, "OK");
        assert_eq!(again.result()["refunded"], 700, "{backend:?}");
        assert_eq!(pg.sim.ledger().cancelled_amount, 700);
        let outcomes: Vec<(&str, &str)> = again.result()["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["idempotencyKey"].as_str().unwrap(),
                    a["outcome"].as_str().unwrap(),
                )
            })
            .collect();
        let key = format!("{id}-refund-1");
        assert_eq!(
            outcomes[1..],
            [(key.as_str(), "unknown"), (key.as_str(), "refunded")]
        );
        // The rest still refunds under the next key.
        cancel_payment(&host, &id, json!({ "reason": "rest" }), "refund-2")
            .await
            .expect(200, "OK");
        assert_eq!(pg.sim.ledger().cancelled_amount, total);
        host.finish().await;
    }
}

async fn admin(host: &TestHost, method: &str, uri: &str, body: Option<Value>) -> Answer {
    let builder = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {}", harness::ADMIN_TOKEN))
        .header("content-type", "application/json");
    let body = match body {
        Some(json) => axum::body::Body::from(json.to_string()),
        None => axum::body::Body::empty(),
    };
    host.send(builder.body(body).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_flagged_payments_and_adopts_fails_or_retries_them() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (retried_order, _, _, retried) =
            lost_payment(&host, &pg, "c1", cards::APPROVE_THEN_TIMEOUT).await;
        let (_, _, _, failed) = lost_payment(&host, &pg, "c2", cards::TIMEOUT_NOT_APPROVED).await;
        // Failing a payment still on its schedule is refused: its approval
        // may be in flight.
        admin(
            &host,
            "POST",
            &format!("/admin/v1/payments/globex/{failed}/resolve"),
            Some(json!({ "action": "fail", "reason": "checked the PG console" })),
        )
        .await
        .expect(409, "PAY_004");
        while pg.sim.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pg.sim.set_faults(Faults {
            outage: true,
            ..Faults::default()
        });
        for wait in fluxpay_host::app::payments::CHECK_SCHEDULE_MS {
            host.advance(wait);
            host.app.run_payment_janitor(host.now()).await;
        }
        pg.sim.set_faults(Faults::default());

        let listed = admin(&host, "GET", "/admin/v1/payments/flagged", None).await;
        listed.expect(200, "OK");
        let mut ids: Vec<&str> = listed.result()["payments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(p["tenant"], "globex");
                assert_eq!(p["checks"], 5);
                p["payment"]["paymentId"].as_str().unwrap()
            })
            .collect();
        ids.sort();
        let mut expected = [retried.as_str(), failed.as_str()];
        expected.sort();
        assert_eq!(ids, expected, "{backend:?}");

        let resolve = |id: String, body: Value| {
            let host = &host;
            async move {
                admin(
                    host,
                    "POST",
                    &format!("/admin/v1/payments/globex/{id}/resolve"),
                    Some(body),
                )
                .await
            }
        };
        // Retry: back on the schedule from its start; the next run asks,
        // and the PG says it approved.
        let again = resolve(retried.clone(), json!({ "action": "retry" })).await;
        again.expect(200, "OK");
        assert_eq!(again.result()["status"], "UNKNOWN", "{backend:?}");
        let run = host.app.run_payment_janitor(host.now()).await;
        assert_eq!((run.checked, run.resolved), (1, 1), "{backend:?}: {run:?}");
        assert_eq!(payment(&host, &retried).await["status"], "APPROVED");
        assert_eq!(order_status(&host, &retried_order).await, "PAID");
        // Fail: on the operator's word, with a reason.
        resolve(failed.clone(), json!({ "action": "fail" }))
            .await
            .expect(400, "REQ_001");
        let marked = resolve(
            failed.clone(),
            json!({ "action": "fail", "reason": "aborted in the PG console" }),
        )
        .await;
        marked.expect(200, "OK");
        assert_eq!(marked.result()["status"], "FAILED");
        assert_eq!(
            marked.result()["failure"]["code"],
            "MARKED_FAILED_BY_OPERATOR"
        );
        let listed = admin(&host, "GET", "/admin/v1/payments/flagged", None).await;
        assert_eq!(listed.result()["payments"], json!([]), "{backend:?}");
        // Nothing was taken: the order can be paid with another card.
        let failed_order = marked.result()["orderId"].as_str().unwrap().to_owned();
        let key = pg.checkout(&failed_order, 5_000, cards::APPROVE).await;
        confirm(&host, &failed_order, &key, 5_000, "pay-again")
            .await
            .expect(201, "OK");

        // Adopt: asks the PG now, without waiting for the schedule.
        let (adopted_order, _, _, adopted) =
            lost_payment(&host, &pg, "c3", cards::APPROVE_THEN_TIMEOUT).await;
        while pg.sim.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let answer = resolve(adopted.clone(), json!({ "action": "adopt" })).await;
        answer.expect(200, "OK");
        assert_eq!(answer.result()["status"], "APPROVED", "{backend:?}");
        assert_eq!(order_status(&host, &adopted_order).await, "PAID");

        // A settled payment has nothing to resolve.
        resolve(adopted.clone(), json!({ "action": "adopt" }))
            .await
            .expect(409, "PAY_004");
        resolve(adopted, json!({ "action": "undo" }))
            .await
            .expect(400, "REQ_001");
        resolve("pay_nope".into(), json!({ "action": "adopt" }))
            .await
            .expect(404, "NOT_FOUND");
        assert_eq!(pg.sim.ledger().approvals, 3);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_never_fulfilled_is_voided_and_a_stored_void_blocks_completion() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        host.app.set_payment_settings(
            [(
                "globex".to_owned(),
                fluxpay_host::app::payments::PaymentSettings {
                    void_unconfirmed_after_ms: 600_000,
                    ..Default::default()
                },
            )]
            .into(),
        );
        let (abandoned, total) = order(&host, "c1").await;
        let key = pg.checkout(&abandoned, total, cards::APPROVE).await;
        let id = confirm(&host, &abandoned, &key, total, "pay-1")
            .await
            .result()["paymentId"]
            .as_str()
            .unwrap()
            .to_owned();
        let (fulfilled, _, _) = confirmed_payment(&host, &pg, "c2").await;

        // Within the window nothing happens.
        host.advance(599_000);
        assert_eq!(host.app.run_payment_janitor(host.now()).await.checked, 0);
        // Past it, with the PG down: the void is stored, its call fails,
        // and from now on the order cannot be completed.
        pg.sim.set_faults(Faults {
            outage: true,
            ..Faults::default()
        });
        host.advance(1_000);
        let run = host.app.run_payment_janitor(host.now()).await;
        assert_eq!((run.checked, run.failed), (1, 1), "{backend:?}: {run:?}");
        assert_eq!(payment(&host, &id).await["status"], "APPROVED");
        let health = host.app.payment_health("globex", 60_000).await.unwrap();
        assert_eq!((health.voiding, health.flagged), (1, 0), "{backend:?}");
        complete(&host, Tenant::Globex, &abandoned)
            .await
            .expect(409, "PAY_004");
        // The PG is back: the next try voids it and cancels the order.
        pg.sim.set_faults(Faults::default());
        host.advance(fluxpay_host::app::payments::VOID_RETRY_MS);
        let run = host.app.run_payment_janitor(host.now()).await;
        assert_eq!((run.checked, run.resolved), (1, 1), "{backend:?}: {run:?}");
        assert_eq!(payment(&host, &id).await["status"], "CANCELLED");
        assert_eq!(order_status(&host, &abandoned).await, "CANCELLED");
        assert_eq!(order_status(&host, &fulfilled).await, "COMPLETED");
        assert_eq!(pg.sim.ledger().cancelled_amount, total);
        let health = host.app.payment_health("globex", 60_000).await.unwrap();
        assert_eq!(health.voiding, 0);
        host.advance(86_400_000);
        assert_eq!(host.app.run_payment_janitor(host.now()).await.checked, 0);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_never_ask_about_the_same_payment_at_once() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        for customer in ["c1", "c2", "c3", "c4", "c5", "c6"] {
            lost_payment(&host, &pg, customer, cards::APPROVE_THEN_TIMEOUT).await;
        }
        while pg.sim.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        host.advance(10_000);
        let now = host.now();
        let (a, b) = tokio::join!(
            tokio::spawn({
                let app = host.app.clone();
                async move { app.run_payment_janitor(now).await }
            }),
            tokio::spawn({
                let app = host.app.clone();
                async move { app.run_payment_janitor(now).await }
            }),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.checked + b.checked, 6, "{backend:?}: {a:?} {b:?}");
        assert_eq!(a.resolved + b.resolved, 6);
        let queries: usize = {
            let mut n = 0;
            for p in host
                .call(
                    Tenant::Globex,
                    "GET",
                    "/api/v1/events?limit=500",
                    None,
                    None,
                )
                .await
                .result()["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "payment.approved")
            {
                let id = p["data"]["paymentId"].as_str().unwrap();
                n += payment(&host, id).await["attempts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["kind"] == "query")
                    .count();
            }
            n
        };
        assert_eq!(queries, 6, "one query per payment: {backend:?}");
        assert_eq!(pg.sim.ledger().approvals, 6);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_books_hold_exactly_what_the_pg_holds_after_every_kind_of_payment() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        // Hooli takes payments too (through the same PG), to probe.
        let pg = harness::pg_for(&host, &["globex", "hooli"]).await;
        // Approved and fulfilled, then refunded in part.
        let (_, _, refunded) = confirmed_payment(&host, &pg, "c1").await;
        cancel_payment(&host, &refunded, json!({ "amount": 1_234 }), "r-1")
            .await
            .expect(200, "OK");
        // Approved and fulfilled.
        confirmed_payment(&host, &pg, "c2").await;
        // Approved, then voided.
        let (voided_order, total) = order(&host, "c3").await;
        let key = pg.checkout(&voided_order, total, cards::APPROVE).await;
        let voided = confirm(&host, &voided_order, &key, total, "pay-c3")
            .await
            .result()["paymentId"]
            .as_str()
            .unwrap()
            .to_owned();
        cancel_payment(&host, &voided, json!({}), "v-1")
            .await
            .expect(200, "OK");
        // Declined.
        let (declined_order, total) = order(&host, "c4").await;
        let key = pg.checkout(&declined_order, total, cards::DECLINE).await;
        confirm(&host, &declined_order, &key, total, "pay-c4")
            .await
            .expect(402, "PAY_002");
        // Approved with its answer lost, resolved by the janitor.
        lost_payment(&host, &pg, "c5", cards::APPROVE_THEN_TIMEOUT).await;
        while pg.sim.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        host.advance(10_000);
        assert_eq!(host.app.run_payment_janitor(host.now()).await.resolved, 1);
        // Another tenant can neither read nor refund any of them.
        host.call(
            Tenant::Hooli,
            "POST",
            &format!("/api/v1/payments/{refunded}/cancel"),
            Some(json!({ "amount": 1 })),
            Some("x-1"),
        )
        .await
        .expect(404, "NOT_FOUND");

        // What FluxPay says the PG holds, payment by payment…
        let held: i64 = host
            .raw
            .scalar(
                "SELECT CAST(COALESCE(SUM(amount - refunded), 0) AS BIGINT) FROM payments \
                 WHERE tenant_id = 'globex' \
                   AND status IN ('APPROVED', 'CONFIRMED', 'PARTIALLY_REFUNDED')",
            )
            .await;
        let approved: i64 = host
            .raw
            .scalar(
                "SELECT COUNT(*) FROM payments WHERE tenant_id = 'globex' \
                 AND status NOT IN ('READY', 'UNKNOWN', 'FAILED')",
            )
            .await;
        // …is what the PG's own ledger holds.
        let ledger = pg.sim.ledger();
        assert_eq!(
            held,
            ledger.approved_amount - ledger.cancelled_amount,
            "{backend:?}: {ledger:?}"
        );
        assert_eq!(approved, ledger.approvals as i64, "{backend:?}");
        assert_eq!(ledger.approvals, 4);
        // And the auditor proves the ledger's clearing account agrees.
        host.finish().await;
    }
}

/// Serves the host's HTTP surface on a free loopback port, for the PG's
/// notifications; its base URL.
async fn serve_http(host: &TestHost) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = host.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// Waits (bounded) until the payment `id` is no longer in flight; its
/// status.
async fn settled(host: &TestHost, id: &str) -> String {
    for _ in 0..500 {
        let status = payment(host, id).await["status"]
            .as_str()
            .unwrap()
            .to_owned();
        if status != "READY" && status != "UNKNOWN" {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("payment {id} stayed in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pgs_late_and_duplicate_notifications_resolve_a_lost_answer_once() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let url = serve_http(&host).await;
        pg.sim
            .set_notify_url(Some(format!("{url}/pg/v1/notifications/globex")));
        // Every notification comes twice, and after the client gave up.
        pg.sim.set_faults(Faults {
            slow_answer_ms: 3 * TIMEOUT.as_millis() as u64,
            notification_delay_ms: 2 * TIMEOUT.as_millis() as u64,
            duplicate_notifications: true,
            ..Faults::default()
        });
        let (approved_order, _, _, approved) =
            lost_payment(&host, &pg, "c1", cards::APPROVE_THEN_TIMEOUT).await;
        let (aborted_order, _, _, aborted) =
            lost_payment(&host, &pg, "c2", cards::TIMEOUT_NOT_APPROVED).await;

        // No client retry, no scheduler run: the notifications make FluxPay
        // ask the PG, and it adopts the PG's answer.
        assert_eq!(settled(&host, &approved).await, "APPROVED", "{backend:?}");
        assert_eq!(order_status(&host, &approved_order).await, "PAID");
        assert_eq!(settled(&host, &aborted).await, "FAILED", "{backend:?}");
        assert_eq!(order_status(&host, &aborted_order).await, "PENDING");
        while pg.sim.ledger().notifications < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pg.sim.ledger().approvals, 1);
        assert_eq!(pg.sim.ledger().confirm_calls, 2, "notifications only ask");
        let events = host
            .call(
                Tenant::Globex,
                "GET",
                "/api/v1/events?limit=100",
                None,
                None,
            )
            .await;
        let approvals = events.result()["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "payment.approved")
            .count();
        assert_eq!(approvals, 1, "the duplicate changed nothing: {backend:?}");

        // A notification is only a hint: a forged one about a settled
        // order, or an unknown one, changes nothing; bad input is refused.
        let forged = reqwest::Client::new()
            .post(format!("{url}/pg/v1/notifications/globex"))
            .json(&json!({ "eventType": "PAYMENT_STATUS_CHANGED",
                           "data": { "orderId": aborted_order, "status": "DONE" } }))
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 200);
        assert_eq!(payment(&host, &aborted).await["status"], "FAILED");
        let unknown = reqwest::Client::new()
            .post(format!("{url}/pg/v1/notifications/nobody"))
            .json(&json!({ "eventType": "PAYMENT_STATUS_CHANGED",
                           "data": { "orderId": "x" } }))
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 404);
        let malformed = reqwest::Client::new()
            .post(format!("{url}/pg/v1/notifications/globex"))
            .header("content-type", "application/json")
            .body("{\"eventType\":")
            .send()
            .await
            .unwrap();
        assert_eq!(malformed.status(), 400);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_refund_never_sent_again_is_found_at_the_pg_by_the_scheduler() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (_, total, id) = confirmed_payment(&host, &pg, "c1").await;
        let (_, _, untouched) = confirmed_payment(&host, &pg, "c2").await;
        // Two refunds whose answers are lost: the PG makes the first; the
        // second never reaches it (an outage that begins after it left).
        let slow = 2 * TIMEOUT.as_millis() as u64;
        pg.sim.set_faults(Faults {
            latency_ms: [slow, slow],
            ..Faults::default()
        });
        cancel_payment(&host, &id, json!({ "amount": 700 }), "refund-1")
            .await
            .expect(202, "PAY_006");
        while pg.sim.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pg.sim.set_faults(Faults::default());
        assert_eq!(pg.sim.ledger().cancelled_amount, 700);
        assert_eq!(payment(&host, &id).await["refunded"], 0, "{backend:?}");

        // Nobody sends it again: the scheduler asks the PG 10 s later.
        host.advance(9_999);
        assert_eq!(host.app.run_payment_janitor(host.now()).await.checked, 0);
        host.advance(1);
        let run = host.app.run_payment_janitor(host.now()).await;
        assert_eq!((run.checked, run.resolved), (1, 1), "{backend:?}: {run:?}");
        let found = payment(&host, &id).await;
        assert_eq!(
            found["status"], "PARTIALLY_REFUNDED",
            "{backend:?}: {found}"
        );
        assert_eq!(found["refunded"], 700);
        // The next refund takes the next key; the rest is refundable.
        let rest = cancel_payment(&host, &id, json!({}), "refund-2").await;
        rest.expect(200, "OK");
        assert_eq!(rest.result()["refunded"], total);
        let keys: Vec<&str> = rest.result()["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["outcome"] == "refunded")
            .map(|a| a["idempotencyKey"].as_str().unwrap())
            .collect();
        assert_eq!(keys, [format!("{id}-refund-1"), format!("{id}-refund-2")]);
        assert_eq!(pg.sim.ledger().cancelled_amount, total);
        assert_eq!(payment(&host, &untouched).await["refunded"], 0);
        host.advance(86_400_000);
        assert_eq!(host.app.run_payment_janitor(host.now()).await.checked, 0);
        host.finish().await;
    }
}

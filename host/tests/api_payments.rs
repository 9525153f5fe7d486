//! `POST /api/v1/payments/confirm`, the completion callback, voids and
//! refunds on both backends, against the bundled PG simulator over real
//! HTTP: an approval pays the order once, a decline is final and replayed,
//! an amount that differs reaches no PG, a lost answer is resolved by
//! asking the PG (one approval), an outage charges nothing and a retry
//! succeeds, refunds never exceed what was confirmed, and the books
//! (FluxPay's auditor, the simulator's ledger) agree.

mod harness;
mod payment_steps;

use std::time::Duration;

use fluxpay_host::gateway::simulator::{Faults, cards};
use harness::{PG_TIMEOUT as TIMEOUT, Tenant, TestHost, backends, pg};
use payment_steps::*;
use serde_json::{Value, json};

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
        // Approved is authorized: the PG holds the money on the card.
        assert_eq!(pg.sim.ledger().held_amount, total);

        let done = complete(&host, Tenant::Globex, &order_id).await;
        done.expect(200, "OK");
        assert_eq!(done.result()["status"], "COMPLETED", "{backend:?}");
        assert_eq!(payment(&host, &id).await["status"], "CONFIRMED");
        // Fulfilled is captured, once.
        let ledger = pg.sim.ledger();
        assert_eq!(
            (ledger.captures, ledger.captured_amount, ledger.held_amount),
            (1, total, 0)
        );
        // The callback again: the order as it stands, nothing moves.
        let again = complete(&host, Tenant::Globex, &order_id).await;
        again.expect(200, "OK");
        assert_eq!(again.result()["version"], done.result()["version"]);
        assert_eq!(pg.sim.ledger().captures, 1);
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
                format!("{id}-capture"),
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
        // After the approval and the capture.
        assert_eq!(
            outcomes[1..],
            [
                (format!("{id}-capture").as_str(), "captured"),
                (key.as_str(), "unknown"),
                (key.as_str(), "refunded")
            ]
        );
        // The rest still refunds under the next key.
        cancel_payment(&host, &id, json!({ "reason": "rest" }), "refund-2")
            .await
            .expect(200, "OK");
        assert_eq!(pg.sim.ledger().cancelled_amount, total);
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

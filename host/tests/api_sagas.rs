//! The order saga on both backends, against the PG simulator over real
//! HTTP: confirm → the service's `completed` callback → completed; the
//! service's `failed` callback and a missed deadline compensate in reverse
//! (payment voided, order cancelled) exactly once; callbacks in the wrong
//! state are `PAY_004`; a declined card leaves the order open for another
//! attempt; a compensation the PG keeps refusing is retried, then parked
//! for an operator, and finishes once the PG is back; a capture the PG
//! refuses compensates, and one it cannot answer is finished by asking it
//! (and flagged for an operator while that takes long).

mod harness;
mod payment_steps;

use std::collections::BTreeMap;
use std::time::Duration;

use fluxpay_host::app::payments::PaymentSettings;
use fluxpay_host::gateway::simulator::{Faults, cards};
use harness::{Answer, Pg, Tenant, TestHost, backends, pg};
use payment_steps::admin;
use serde_json::{Value, json};

const SERVICE_TIMEOUT_MS: i64 = 30_000;

/// A PENDING order of `customer`: (order id, total).
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
    (
        created.result()["orderId"].as_str().unwrap().to_owned(),
        created.result()["total"].as_i64().unwrap(),
    )
}

async fn confirm(host: &TestHost, pg: &Pg, order: &str, total: i64, card: &str) -> Answer {
    let key = pg.checkout(order, total, card).await;
    host.call(
        Tenant::Globex,
        "POST",
        "/api/v1/payments/confirm",
        Some(json!({ "orderId": order, "paymentKey": key, "amount": total })),
        Some(&format!("pay-{order}-{card}")),
    )
    .await
}

async fn callback(host: &TestHost, tenant: Tenant, outcome: &str, order: &str) -> Answer {
    host.call(
        tenant,
        "POST",
        &format!("/api/v1/service-callbacks/{outcome}"),
        Some(json!({ "orderId": order })),
        None,
    )
    .await
}

async fn read_order(host: &TestHost, order: &str) -> Value {
    host.order(Tenant::Globex, order).await.result().clone()
}

/// A paid order whose service failed while the PG was down, its saga
/// parked `COMPENSATION_FAILED` (the PG still down): (order id, total, the
/// approved payment as confirm answered).
async fn parked_saga(host: &TestHost, pg: &Pg) -> (String, i64, Value) {
    let (id, total) = order(host, "c1").await;
    let paid = confirm(host, pg, &id, total, cards::APPROVE).await;
    paid.expect(201, "OK");
    pg.sim.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    callback(host, Tenant::Globex, "failed", &id)
        .await
        .expect(200, "OK");
    for _ in 0..10 {
        host.advance(600_000);
        host.app.run_sagas(host.now()).await;
    }
    assert_eq!(
        read_order(host, &id).await["saga"]["state"],
        "COMPENSATION_FAILED"
    );
    (id, total, paid.result().clone())
}

/// Moves order `id`'s saga to `state` behind the host's back (a corruption
/// for the auditor to find).
async fn set_saga_state(host: &TestHost, id: &str, state: &str) {
    host.raw
        .execute(&format!(
            "UPDATE sagas SET state = '{state}' WHERE order_id = '{id}'"
        ))
        .await;
}

/// Pays `order` with `card`, then the PG fails as `faults` says and the
/// service calls back `completed`: the capture's outcome is unknown (`202
/// PAY_006`). The payment's id.
async fn capture_left_unknown(
    host: &TestHost,
    pg: &Pg,
    (order, total): (&str, i64),
    card: &str,
    faults: Faults,
) -> String {
    let paid = confirm(host, pg, order, total, card).await;
    paid.expect(201, "OK");
    pg.sim.set_faults(faults);
    callback(host, Tenant::Globex, "completed", order)
        .await
        .expect(202, "PAY_006");
    paid.result()["paymentId"].as_str().unwrap().to_owned()
}

/// Confirms `order` with a checkout whose PG captures with the approval.
async fn confirm_captured_at_approval(host: &TestHost, pg: &Pg, order: &str, total: i64) -> Answer {
    let key = pg
        .checkout_capturing(order, total, cards::APPROVE, "AUTOMATIC")
        .await;
    host.call(
        Tenant::Globex,
        "POST",
        "/api/v1/payments/confirm",
        Some(json!({ "orderId": order, "paymentKey": key, "amount": total })),
        Some(&format!("pay-{order}-auto")),
    )
    .await
}

async fn event_count(host: &TestHost, kind: &str) -> usize {
    host.call(
        Tenant::Globex,
        "GET",
        "/api/v1/events?limit=1000",
        None,
        None,
    )
    .await
    .result()["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_waits_for_its_service_and_completes_once() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (id, total) = order(&host, "c1").await;
        let paid = confirm(&host, &pg, &id, total, cards::APPROVE).await;
        paid.expect(201, "OK");

        let waiting = read_order(&host, &id).await;
        assert_eq!(waiting["status"], "PAID", "{backend:?}");
        let saga = &waiting["saga"];
        assert_eq!(
            saga["state"], "WAITING_FOR_SERVICE",
            "{backend:?}: {waiting}"
        );
        assert_eq!(saga["stepsDone"], json!(["approve_payment", "pay_order"]));
        assert_eq!(
            saga["serviceDeadlineAt"].as_i64().unwrap(),
            host.now() + SERVICE_TIMEOUT_MS
        );
        // Another tenant's service cannot call back for it.
        callback(&host, Tenant::Hooli, "completed", &id)
            .await
            .expect(404, "NOT_FOUND");
        callback(&host, Tenant::Hooli, "failed", &id)
            .await
            .expect(404, "NOT_FOUND");

        callback(&host, Tenant::Globex, "completed", &id)
            .await
            .expect(200, "OK");
        let done = read_order(&host, &id).await;
        assert_eq!(done["status"], "COMPLETED");
        assert_eq!(done["saga"]["state"], "COMPLETED", "{backend:?}: {done}");
        // Duplicate and out-of-order callbacks change nothing.
        callback(&host, Tenant::Globex, "completed", &id)
            .await
            .expect(200, "OK");
        let late = callback(&host, Tenant::Globex, "failed", &id).await;
        late.expect(409, "PAY_004");
        // The deadline passing later moves nothing either.
        host.advance(SERVICE_TIMEOUT_MS);
        assert_eq!(host.app.run_sagas(host.now()).await.claimed, 0);
        assert_eq!(
            read_order(&host, &id).await["saga"]["version"],
            done["saga"]["version"]
        );
        assert_eq!(pg.sim.ledger().approvals, 1);
        assert_eq!(pg.sim.ledger().cancelled_amount, 0);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_service_or_a_missed_deadline_compensates_in_reverse_once() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (failed, total) = order(&host, "c1").await;
        confirm(&host, &pg, &failed, total, cards::APPROVE)
            .await
            .expect(201, "OK");
        let (silent, _) = order(&host, "c2").await;
        confirm(&host, &pg, &silent, total, cards::APPROVE)
            .await
            .expect(201, "OK");

        // The service says it failed: voided and cancelled at once.
        let answer = callback(&host, Tenant::Globex, "failed", &failed).await;
        answer.expect(200, "OK");
        assert_eq!(answer.result()["status"], "CANCELLED", "{backend:?}");
        assert_eq!(answer.result()["saga"]["state"], "COMPENSATED");
        // A repeat answers with how it stands; `completed` is too late.
        let again = callback(&host, Tenant::Globex, "failed", &failed).await;
        again.expect(200, "OK");
        assert_eq!(again.result()["saga"], answer.result()["saga"]);
        callback(&host, Tenant::Globex, "completed", &failed)
            .await
            .expect(409, "PAY_004");

        // The other service never answers: nothing until the deadline.
        host.advance(SERVICE_TIMEOUT_MS - 1);
        assert_eq!(host.app.run_sagas(host.now()).await.claimed, 0);
        host.advance(1);
        let run = host.app.run_sagas(host.now()).await;
        assert_eq!(
            (run.claimed, run.timed_out, run.compensated),
            (1, 1, 1),
            "{backend:?}: {run:?}"
        );
        let timed_out = read_order(&host, &silent).await;
        assert_eq!(timed_out["status"], "CANCELLED");
        assert_eq!(timed_out["saga"]["state"], "COMPENSATED", "{timed_out}");
        callback(&host, Tenant::Globex, "completed", &silent)
            .await
            .expect(409, "PAY_004");
        assert_eq!(host.app.run_sagas(host.now()).await.claimed, 0);

        assert_eq!(pg.sim.ledger().approvals, 2);
        assert_eq!(
            pg.sim.ledger().cancelled_amount,
            2 * total,
            "voided once each"
        );
        assert_eq!(event_count(&host, "saga.compensating").await, 2);
        assert_eq!(event_count(&host, "saga.compensated").await, 2);
        host.finish().await;
    }
}

/// `completed` with an Idempotency-Key.
async fn completed_with_key(host: &TestHost, order: &str, key: &str) -> Answer {
    host.call(
        Tenant::Globex,
        "POST",
        "/api/v1/service-callbacks/completed",
        Some(json!({ "orderId": order })),
        Some(key),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_the_pg_refuses_compensates_in_reverse_and_its_answer_replays() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (id, total) = order(&host, "c1").await;
        let paid = confirm(&host, &pg, &id, total, cards::CAPTURE_REFUSED).await;
        paid.expect(201, "OK");
        let payment_id = paid.result()["paymentId"].as_str().unwrap().to_owned();

        // The service fulfilled it, but the issuer refuses the capture: the
        // saga compensates — the authorization voided, the order cancelled.
        let refused = completed_with_key(&host, &id, "done-1").await;
        refused.expect(402, "PAY_002");
        assert_eq!(refused.result()["status"], "CANCELLED", "{backend:?}");
        let cancelled = read_order(&host, &id).await;
        let saga = &cancelled["saga"];
        assert_eq!(saga["state"], "COMPENSATED", "{backend:?}: {cancelled}");
        assert_eq!(saga["stepsDone"], json!(["approve_payment", "pay_order"]));
        assert!(
            saga["lastError"]
                .as_str()
                .unwrap()
                .contains("REJECT_CARD_PAYMENT"),
            "{saga}"
        );
        let payment = payment_steps::payment(&host, &payment_id).await;
        assert_eq!(payment["status"], "CANCELLED");
        let ledger = pg.sim.ledger();
        assert_eq!(
            (
                ledger.approvals,
                ledger.captures,
                ledger.cancelled_amount,
                ledger.held_amount
            ),
            (1, 0, total, 0),
            "{backend:?}: authorized once, never captured, voided: {ledger:?}"
        );
        // The same request replays its answer byte for byte; another is
        // too late.
        let again = completed_with_key(&host, &id, "done-1").await;
        assert_eq!(
            (again.status, &again.bytes),
            (refused.status, &refused.bytes)
        );
        callback(&host, Tenant::Globex, "completed", &id)
            .await
            .expect(409, "PAY_004");
        callback(&host, Tenant::Globex, "failed", &id)
            .await
            .expect(200, "OK");
        for (kind, count) in [
            ("saga.completing", 1),
            ("saga.compensating", 1),
            ("saga.compensated", 1),
            ("payment.cancelled", 1),
            ("order.cancelled", 1),
            ("payment.confirmed", 0),
            ("order.completed", 0),
        ] {
            assert_eq!(event_count(&host, kind).await, count, "{backend:?} {kind}");
        }
        assert_eq!(host.app.run_sagas(host.now() + 3_600_000).await.claimed, 0);

        // Refused again, but the PG cannot say whether it holds the money
        // uncaptured: nothing is compensated on that guess. The saga waits
        // until the PG can say, then compensates.
        let (id, _) = order(&host, "c2").await;
        let queries_fail = Faults {
            queries_fail: true,
            ..Faults::default()
        };
        capture_left_unknown(
            &host,
            &pg,
            (&id, total),
            cards::CAPTURE_REFUSED,
            queries_fail,
        )
        .await;
        let waiting = read_order(&host, &id).await;
        assert_eq!(
            (&waiting["status"], &waiting["saga"]["state"]),
            (&json!("PAID"), &json!("COMPLETING")),
            "{backend:?}: {waiting}"
        );
        assert_eq!(pg.sim.ledger().held_amount, total, "nothing voided yet");
        pg.sim.set_faults(Faults::default());
        host.advance(600_000);
        host.app.run_sagas(host.now()).await;
        let compensated = read_order(&host, &id).await;
        assert_eq!(
            (&compensated["status"], &compensated["saga"]["state"]),
            (&json!("CANCELLED"), &json!("COMPENSATED")),
            "{backend:?}: {compensated}"
        );
        assert_eq!(pg.sim.ledger().held_amount, 0);
        assert_eq!(pg.sim.ledger().captures, 0);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_the_pg_cannot_answer_holds_the_void_off_and_is_finished_by_asking_it() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (id, total) = order(&host, "c1").await;
        let (other, _) = order(&host, "c2").await;
        for order in [&id, &other] {
            confirm(&host, &pg, order, total, cards::APPROVE)
                .await
                .expect(201, "OK");
        }
        let payment_id = read_order(&host, &id).await["saga"]["paymentId"]
            .as_str()
            .unwrap()
            .to_owned();
        pg.sim.set_faults(Faults {
            outage: true,
            ..Faults::default()
        });
        for order in [&id, &other] {
            callback(&host, Tenant::Globex, "completed", order)
                .await
                .expect(202, "PAY_006");
        }
        let capturing = read_order(&host, &id).await;
        assert_eq!(capturing["status"], "PAID", "{backend:?}");
        assert_eq!(capturing["saga"]["state"], "COMPLETING", "{capturing}");
        assert_eq!(
            (
                &capturing["saga"]["captureAttempts"],
                &capturing["saga"]["compensationAttempts"]
            ),
            (&json!(1), &json!(0))
        );
        assert!(
            capturing["saga"]["lastError"]
                .as_str()
                .unwrap()
                .contains("PROVIDER_ERROR"),
            "{capturing}"
        );
        // The capture may reach the PG: nothing voids the authorization
        // meanwhile — not the API, not the scheduler, not the deadline.
        host.call(
            Tenant::Globex,
            "POST",
            &format!("/api/v1/payments/{payment_id}/cancel"),
            Some(json!({ "reason": "changed my mind" })),
            Some("void-1"),
        )
        .await
        .expect(409, "PAY_004");
        callback(&host, Tenant::Globex, "failed", &id)
            .await
            .expect(409, "PAY_004");
        assert_eq!(
            host.app
                .run_payment_janitor(host.now() + 86_400_000)
                .await
                .checked,
            0
        );
        let health = admin(&host, "GET", "/admin/v1/payments/health", None).await;
        assert_eq!(health.result()["tenants"][0]["capturing"], 2, "{backend:?}");

        // Still down at the orchestrator's first look: the saga waits.
        host.advance(60_000);
        let run = host.app.run_sagas(host.now()).await;
        assert_eq!((run.claimed, run.completed), (2, 0), "{backend:?}: {run:?}");
        assert_eq!(read_order(&host, &id).await["saga"]["state"], "COMPLETING");
        // The PG is back: the service's repeat captures one order (with the
        // same key), the orchestrator the other (after asking the PG).
        pg.sim.set_faults(Faults::default());
        callback(&host, Tenant::Globex, "completed", &id)
            .await
            .expect(200, "OK");
        host.advance(600_000);
        let run = host.app.run_sagas(host.now()).await;
        assert_eq!((run.claimed, run.completed), (1, 1), "{backend:?}: {run:?}");
        for order in [&id, &other] {
            let done = read_order(&host, order).await;
            assert_eq!(done["status"], "COMPLETED", "{backend:?}: {done}");
            assert_eq!(done["saga"]["state"], "COMPLETED");
        }
        let ledger = pg.sim.ledger();
        assert_eq!(
            (ledger.captures, ledger.captured_amount, ledger.held_amount),
            (2, 2 * total, 0),
            "{backend:?}: {ledger:?}"
        );
        let attempts: Vec<(String, String)> =
            payment_steps::payment(&host, &payment_id).await["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["kind"].as_str().unwrap().to_owned(),
                        a["idempotencyKey"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .filter(|(kind, _)| kind == "capture")
                .collect();
        assert!(
            attempts
                .iter()
                .all(|(_, key)| *key == format!("{payment_id}-capture")),
            "one capture key: {attempts:?}"
        );
        assert_eq!(event_count(&host, "payment.confirmed").await, 2);
        assert_eq!(host.app.run_sagas(host.now() + 3_600_000).await.claimed, 0);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_whose_outcome_stays_unknown_is_flagged_for_an_operator_until_captured() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (id, total) = order(&host, "c1").await;
        let outage = Faults {
            outage: true,
            ..Faults::default()
        };
        let payment_id =
            capture_left_unknown(&host, &pg, (&id, total), cards::APPROVE, outage).await;
        // The orchestrator asks on; the payment is flagged once the tries
        // reach the limit, and only then.
        let flagged_ids = |listed: &Answer| -> Vec<String> {
            listed.result()["payments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["payment"]["paymentId"].as_str().unwrap().to_owned())
                .collect()
        };
        let mut tries = 1;
        while tries < 5 {
            let health = admin(&host, "GET", "/admin/v1/payments/health", None).await;
            assert_eq!(
                (
                    &health.result()["tenants"][0]["flagged"],
                    &health.result()["tenants"][0]["capturing"]
                ),
                (&json!(0), &json!(1)),
                "{backend:?}: after {tries} tries"
            );
            host.advance(600_000);
            assert_eq!(host.app.run_sagas(host.now()).await.claimed, 1);
            tries = read_order(&host, &id).await["saga"]["captureAttempts"]
                .as_i64()
                .unwrap();
        }
        let saga = read_order(&host, &id).await["saga"].clone();
        assert_eq!(saga["state"], "COMPLETING", "{backend:?}: {saga}");
        let health = admin(&host, "GET", "/admin/v1/payments/health", None).await;
        assert_eq!(health.result()["tenants"][0]["flagged"], 1, "{backend:?}");
        let listed = admin(&host, "GET", "/admin/v1/payments/flagged", None).await;
        assert_eq!(
            flagged_ids(&listed),
            std::slice::from_ref(&payment_id),
            "{backend:?}"
        );
        assert_eq!(listed.result()["payments"][0]["stuckOn"], "capture");
        // The saga settles it from the PG's answer: an operator can neither
        // adopt nor fail it.
        let resolve = async |action: &str| {
            admin(
                &host,
                "POST",
                &format!("/admin/v1/payments/globex/{payment_id}/resolve"),
                Some(json!({ "action": action, "reason": "operator" })),
            )
            .await
        };
        for action in ["adopt", "fail"] {
            resolve(action).await.expect(409, "PAY_004");
        }
        // The PG is back: the operator's retry has the orchestrator ask it
        // at its next run, not at the end of the backoff. Captured once,
        // and the flag is gone with the confirmation.
        pg.sim.set_faults(Faults::default());
        host.advance(1_000);
        assert_eq!(host.app.run_sagas(host.now()).await.claimed, 0);
        resolve("retry").await.expect(200, "OK");
        let run = host.app.run_sagas(host.now()).await;
        assert_eq!((run.claimed, run.completed), (1, 1), "{backend:?}: {run:?}");
        let done = read_order(&host, &id).await;
        assert_eq!(done["status"], "COMPLETED", "{backend:?}: {done}");
        let listed = admin(&host, "GET", "/admin/v1/payments/flagged", None).await;
        assert!(flagged_ids(&listed).is_empty(), "{backend:?}");
        let health = admin(&host, "GET", "/admin/v1/payments/health", None).await;
        assert_eq!(
            (
                &health.result()["tenants"][0]["flagged"],
                &health.result()["tenants"][0]["capturing"]
            ),
            (&json!(0), &json!(0)),
            "{backend:?}"
        );
        let ledger = pg.sim.ledger();
        assert_eq!((ledger.captures, ledger.held_amount), (1, 0), "{ledger:?}");
        // The orchestrator's last turn: the query that found the
        // authorization uncaptured, then the capture, both recorded.
        let attempts: Vec<(String, String)> =
            payment_steps::payment(&host, &payment_id).await["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["kind"].as_str().unwrap().to_owned(),
                        a["outcome"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
        let last_two: Vec<(&str, &str)> = attempts[attempts.len() - 2..]
            .iter()
            .map(|(k, o)| (k.as_str(), o.as_str()))
            .collect();
        assert_eq!(
            last_two,
            [("query", "found"), ("capture", "captured")],
            "{backend:?}: {attempts:?}"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_that_captures_with_the_approval_is_not_asked_to_capture_again() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        // `capture: automatic`, as Toss Payments works.
        host.app.set_payment_settings(
            [(
                "globex".to_owned(),
                PaymentSettings {
                    service_timeout_ms: SERVICE_TIMEOUT_MS,
                    capture_with_approval: true,
                    ..Default::default()
                },
            )]
            .into(),
        );
        let (id, total) = order(&host, "c1").await;
        let paid = confirm_captured_at_approval(&host, &pg, &id, total).await;
        paid.expect(201, "OK");
        let payment_id = paid.result()["paymentId"].as_str().unwrap().to_owned();
        // Taken with the approval: nothing is held on the card.
        assert_eq!(
            (pg.sim.ledger().captures, pg.sim.ledger().held_amount),
            (1, 0)
        );

        let done = callback(&host, Tenant::Globex, "completed", &id).await;
        done.expect(200, "OK");
        assert_eq!(done.result()["status"], "COMPLETED", "{backend:?}");
        let completed = read_order(&host, &id).await;
        assert_eq!(
            completed["saga"]["state"], "COMPLETED",
            "{backend:?}: {completed}"
        );
        let payment = payment_steps::payment(&host, &payment_id).await;
        assert_eq!(payment["status"], "CONFIRMED");
        let kinds: Vec<&str> = payment["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["kind"].as_str().unwrap())
            .collect();
        assert!(!kinds.contains(&"capture"), "{backend:?}: {kinds:?}");
        assert_eq!(pg.sim.ledger().captures, 1, "{backend:?}");
        assert_eq!(event_count(&host, "saga.completing").await, 0);
        assert_eq!(event_count(&host, "payment.confirmed").await, 1);

        // The tenant says `manual`, but the PG captured with the approval
        // anyway: the capture it refuses as not capturable is found
        // captured, and the order completes — never refunded on a guess.
        host.app.set_payment_settings(BTreeMap::new());
        let (other, _) = order(&host, "c2").await;
        confirm_captured_at_approval(&host, &pg, &other, total)
            .await
            .expect(201, "OK");
        let done = callback(&host, Tenant::Globex, "completed", &other).await;
        done.expect(200, "OK");
        assert_eq!(done.result()["status"], "COMPLETED", "{backend:?}");
        let ledger = pg.sim.ledger();
        assert_eq!(
            (ledger.captures, ledger.cancelled_amount, ledger.held_amount),
            (2, 0, 0),
            "{backend:?}: {ledger:?}"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flagged_capture_the_pg_then_refuses_is_compensated_and_unflagged() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (id, total) = order(&host, "c1").await;
        let outage = Faults {
            outage: true,
            ..Faults::default()
        };
        capture_left_unknown(&host, &pg, (&id, total), cards::CAPTURE_REFUSED, outage).await;
        let flagged = async || {
            admin(&host, "GET", "/admin/v1/payments/health", None)
                .await
                .result()["tenants"][0]["flagged"]
                .clone()
        };
        let tries = async || read_order(&host, &id).await["saga"]["captureAttempts"].clone();
        for _ in 0..10 {
            if tries().await == 5 {
                break;
            }
            host.advance(600_000);
            host.app.run_sagas(host.now()).await;
        }
        assert_eq!(
            (tries().await, flagged().await),
            (json!(5), json!(1)),
            "{backend:?}"
        );
        // The PG is back and refuses the capture: the saga compensates,
        // the authorization is voided, and the flag goes with the void.
        pg.sim.set_faults(Faults::default());
        host.advance(600_000);
        let run = host.app.run_sagas(host.now()).await;
        assert_eq!(
            (run.claimed, run.compensated),
            (1, 1),
            "{backend:?}: {run:?}"
        );
        let done = read_order(&host, &id).await;
        assert_eq!(
            (&done["status"], &done["saga"]["state"]),
            (&json!("CANCELLED"), &json!("COMPENSATED")),
            "{backend:?}: {done}"
        );
        assert_eq!(flagged().await, 0, "{backend:?}");
        while pg.sim.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ledger = pg.sim.ledger();
        assert_eq!(
            (ledger.captures, ledger.held_amount, ledger.cancelled_amount),
            (0, 0, total),
            "{backend:?}: {ledger:?}"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_keeps_the_capture_mode_it_was_opened_under_when_the_tenant_changes_it() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let settings = |automatic: bool| {
            [(
                "globex".to_owned(),
                PaymentSettings {
                    service_timeout_ms: SERVICE_TIMEOUT_MS,
                    capture_with_approval: automatic,
                    ..Default::default()
                },
            )]
            .into()
        };
        let capture_calls = |payment: &Value| {
            payment["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["kind"] == "capture")
                .count()
        };
        // Authorized under `capture: manual`, then the tenant switches to
        // `automatic` before the service calls back.
        host.app.set_payment_settings(settings(false));
        let (authorized, total) = order(&host, "c1").await;
        let paid = confirm(&host, &pg, &authorized, total, cards::APPROVE).await;
        paid.expect(201, "OK");
        assert_eq!(paid.result()["captureMode"], "manual", "{backend:?}");
        let authorized_payment = paid.result()["paymentId"].as_str().unwrap().to_owned();
        host.app.set_payment_settings(settings(true));
        let (taken, _) = order(&host, "c2").await;
        let paid = confirm_captured_at_approval(&host, &pg, &taken, total).await;
        paid.expect(201, "OK");
        assert_eq!(paid.result()["captureMode"], "automatic", "{backend:?}");
        let taken_payment = paid.result()["paymentId"].as_str().unwrap().to_owned();
        assert_eq!(pg.sim.ledger().held_amount, total, "one authorization held");

        // The authorization is captured, not confirmed on the new setting.
        callback(&host, Tenant::Globex, "completed", &authorized)
            .await
            .expect(200, "OK");
        let payment = payment_steps::payment(&host, &authorized_payment).await;
        assert_eq!(payment["status"], "CONFIRMED", "{backend:?}");
        assert_eq!(capture_calls(&payment), 1, "{backend:?}: {payment}");
        assert_eq!(pg.sim.ledger().held_amount, 0, "{backend:?}");

        // Back to `manual`: the payment taken with its approval is
        // confirmed without asking the PG to capture it.
        host.app.set_payment_settings(settings(false));
        callback(&host, Tenant::Globex, "completed", &taken)
            .await
            .expect(200, "OK");
        let payment = payment_steps::payment(&host, &taken_payment).await;
        assert_eq!(payment["status"], "CONFIRMED", "{backend:?}");
        assert_eq!(capture_calls(&payment), 0, "{backend:?}: {payment}");
        let ledger = pg.sim.ledger();
        assert_eq!(
            (ledger.captures, ledger.captured_amount, ledger.held_amount),
            (2, 2 * total, 0),
            "{backend:?}: {ledger:?}"
        );
        for id in [&authorized, &taken] {
            assert_eq!(read_order(&host, id).await["status"], "COMPLETED");
        }
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_leaves_the_order_open_and_the_next_card_runs_the_saga_again() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (id, total) = order(&host, "c1").await;
        confirm(&host, &pg, &id, total, cards::DECLINE)
            .await
            .expect(402, "PAY_002");
        let declined = read_order(&host, &id).await;
        assert_eq!(declined["status"], "PENDING");
        assert_eq!(
            declined["saga"]["state"], "COMPENSATED",
            "{backend:?}: {declined}"
        );
        callback(&host, Tenant::Globex, "completed", &id)
            .await
            .expect(409, "PAY_004");

        confirm(&host, &pg, &id, total, cards::APPROVE)
            .await
            .expect(201, "OK");
        let waiting = read_order(&host, &id).await;
        assert_eq!(waiting["saga"]["state"], "WAITING_FOR_SERVICE", "{waiting}");
        callback(&host, Tenant::Globex, "completed", &id)
            .await
            .expect(200, "OK");
        assert_eq!(read_order(&host, &id).await["saga"]["state"], "COMPLETED");
        assert_eq!(pg.sim.ledger().approvals, 1);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_the_pg_keeps_refusing_is_retried_then_parked_then_finished() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        host.app.set_payment_settings(
            [(
                "globex".to_owned(),
                PaymentSettings {
                    service_timeout_ms: SERVICE_TIMEOUT_MS,
                    ..Default::default()
                },
            )]
            .into(),
        );
        let (id, total) = order(&host, "c1").await;
        let paid = confirm(&host, &pg, &id, total, cards::APPROVE).await;
        let payment_id = paid.result()["paymentId"].as_str().unwrap().to_owned();
        pg.sim.set_faults(Faults {
            outage: true,
            ..Faults::default()
        });
        let answer = callback(&host, Tenant::Globex, "failed", &id).await;
        answer.expect(200, "OK");
        assert_eq!(
            answer.result()["saga"]["state"],
            "COMPENSATING",
            "{backend:?}"
        );
        assert_eq!(answer.result()["saga"]["compensationAttempts"], 1);
        // Retried with backoff until the limit, then parked.
        let mut parked = 0;
        for _ in 0..10 {
            host.advance(600_000);
            parked += host.app.run_sagas(host.now()).await.parked;
            if parked > 0 {
                break;
            }
        }
        assert_eq!(parked, 1, "{backend:?}");
        let saga = read_order(&host, &id).await["saga"].clone();
        assert_eq!(saga["state"], "COMPENSATION_FAILED", "{saga}");
        assert_eq!(saga["compensationAttempts"], 5);
        assert!(
            saga["lastError"]
                .as_str()
                .unwrap()
                .contains("PROVIDER_ERROR"),
            "{saga}"
        );
        let listed = admin(
            &host,
            "GET",
            "/admin/v1/sagas?tenant=globex&state=COMPENSATION_FAILED",
            None,
        )
        .await;
        listed.expect(200, "OK");
        assert_eq!(listed.result()["sagas"][0]["orderId"], id.as_str());
        assert_eq!(event_count(&host, "saga.compensation_failed").await, 1);
        let health = admin(&host, "GET", "/admin/v1/payments/health", None).await;
        assert_eq!(
            health.result()["tenants"][0]["sagasParked"],
            1,
            "{backend:?}"
        );
        // Parked sagas wait for an operator, not the orchestrator.
        host.advance(3_600_000);
        assert_eq!(host.app.run_sagas(host.now()).await.claimed, 0);

        // The PG is back; the operator voids the payment: the saga ends.
        pg.sim.set_faults(Faults::default());
        host.call(
            Tenant::Globex,
            "POST",
            &format!("/api/v1/payments/{payment_id}/cancel"),
            Some(json!({ "reason": "operator: compensation finished by hand" })),
            Some("void-op"),
        )
        .await
        .expect(200, "OK");
        let finished = read_order(&host, &id).await;
        assert_eq!(finished["status"], "CANCELLED");
        assert_eq!(finished["saga"]["state"], "COMPENSATED", "{finished}");
        while pg.sim.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pg.sim.ledger().cancelled_amount, total);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auditor_catches_an_order_whose_money_or_saga_disagree() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (id, total) = order(&host, "c1").await;
        confirm(&host, &pg, &id, total, cards::APPROVE)
            .await
            .expect(201, "OK");
        host.assert_audit_clean().await;
        let checks = |report: fluxpay_host::app::audit::AuditReport| {
            report
                .discrepancies
                .iter()
                .map(|d| (d.check, d.detail.clone()))
                .collect::<Vec<_>>()
        };

        // The payment gone from under a PAID order.
        host.raw
            .execute(&format!(
                "UPDATE payments SET status = 'CANCELLED', version = version + 1 \
                 WHERE order_id = '{id}'"
            ))
            .await;
        let found = checks(host.audit().await);
        assert!(
            found.contains(&(
                "order.money",
                "order is PAID without an APPROVED payment or reserved credits".into()
            )),
            "{backend:?}: {found:?}"
        );
        host.raw
            .execute(&format!(
                "UPDATE payments SET status = 'APPROVED', version = version - 1 \
                 WHERE order_id = '{id}'"
            ))
            .await;
        // A saga that says the order completed while it is only paid.
        set_saga_state(&host, &id, "COMPLETED").await;
        let found = checks(host.audit().await);
        assert!(
            found.contains(&("order.money", "saga and order disagree".into())),
            "{backend:?}: {found:?}"
        );
        // A payment being captured while its saga does not say so (a
        // capture nothing would resume or ever record).
        set_saga_state(&host, &id, "WAITING_FOR_SERVICE").await;
        host.raw
            .execute(&format!(
                "UPDATE payments SET capture_requested_at = 1 WHERE order_id = '{id}'"
            ))
            .await;
        let found = checks(host.audit().await);
        assert_eq!(
            found,
            [(
                "order.money",
                "payment is being captured outside its order's COMPLETING saga".into()
            )],
            "{backend:?}"
        );
        // Completing, it is what the saga does (only the raw edit's
        // missing history row is reported).
        set_saga_state(&host, &id, "COMPLETING").await;
        let found = checks(host.audit().await);
        assert!(
            found.iter().all(|(check, _)| *check == "history.chain"),
            "{backend:?}: {found:?}"
        );
        // A saga parked for an operator is reported until one acts.
        set_saga_state(&host, &id, "COMPENSATION_FAILED").await;
        let found = checks(host.audit().await);
        assert!(
            found.iter().any(|(check, _)| *check == "saga.parked"),
            "{backend:?}: {found:?}"
        );
        host.discard().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auditor_catches_an_authorization_confirmed_without_its_capture() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (id, total) = order(&host, "c1").await;
        let paid = confirm(&host, &pg, &id, total, cards::APPROVE).await;
        paid.expect(201, "OK");
        let payment_id = paid.result()["paymentId"].as_str().unwrap().to_owned();
        callback(&host, Tenant::Globex, "completed", &id)
            .await
            .expect(200, "OK");
        host.assert_audit_clean().await;
        // The books say confirmed; nothing says the PG captured it.
        host.raw
            .execute(&format!(
                "DELETE FROM payment_attempts WHERE payment_id = '{payment_id}' \
                 AND kind = 'capture'"
            ))
            .await;
        let found: Vec<(&str, String, String)> = host
            .audit()
            .await
            .discrepancies
            .iter()
            .map(|d| (d.check, d.subject.clone(), d.detail.clone()))
            .collect();
        assert_eq!(
            found,
            [(
                "order.money",
                format!("order:{id}"),
                "payment authorized for a manual capture was confirmed without the PG reporting \
                 it captured"
                    .to_owned()
            )],
            "{backend:?}"
        );
        host.discard().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_the_pg_made_elsewhere_is_adopted_by_an_operator_and_ends_the_saga() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (id, total, paid) = parked_saga(&host, &pg).await;
        let payment_id = paid["paymentId"].as_str().unwrap().to_owned();
        let pg_key = paid["pgPaymentKey"].as_str().unwrap().to_owned();
        // Meanwhile someone cancelled it in the PG's console.
        pg.sim.set_faults(Faults::default());
        let console = reqwest::Client::new()
            .post(format!("{}/v1/payments/{pg_key}/cancel", pg.url))
            .basic_auth(harness::PG_SECRET, Some(""))
            .header("idempotency-key", "console-1")
            .json(&json!({ "cancelReason": "by hand" }))
            .send()
            .await
            .unwrap();
        assert_eq!(console.status(), 200);

        let uri = format!("/admin/v1/payments/globex/{payment_id}/resolve");
        let adopt = |body: Value| admin(&host, "POST", &uri, Some(body));
        let adopted =
            adopt(json!({ "action": "adopt", "reason": "cancelled in the PG console" })).await;
        adopted.expect(200, "OK");
        assert_eq!(adopted.result()["status"], "CANCELLED", "{backend:?}");
        let done = read_order(&host, &id).await;
        assert_eq!(done["status"], "CANCELLED");
        assert_eq!(done["saga"]["state"], "COMPENSATED", "{backend:?}: {done}");
        // Voided once, by the console; FluxPay sent no second void.
        assert_eq!(pg.sim.ledger().cancelled_amount, total);
        adopt(json!({ "action": "adopt" }))
            .await
            .expect(409, "PAY_004");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_never_move_the_same_saga_at_once() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let mut orders = Vec::new();
        for customer in ["c1", "c2", "c3", "c4", "c5", "c6"] {
            let (id, total) = order(&host, customer).await;
            confirm(&host, &pg, &id, total, cards::APPROVE)
                .await
                .expect(201, "OK");
            orders.push((id, total));
        }
        host.advance(SERVICE_TIMEOUT_MS);
        let now = host.now();
        let run =
            |app: fluxpay_host::app::App| tokio::spawn(async move { app.run_sagas(now).await });
        let (a, b) = tokio::join!(run(host.app.clone()), run(host.app.clone()));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.claimed + b.claimed, 6, "{backend:?}: {a:?} {b:?}");
        assert_eq!(a.compensated + b.compensated, 6, "{backend:?}: {a:?} {b:?}");
        for (id, _) in &orders {
            assert_eq!(read_order(&host, id).await["saga"]["state"], "COMPENSATED");
        }
        let total: i64 = orders.iter().map(|(_, t)| t).sum();
        assert_eq!(pg.sim.ledger().cancelled_amount, total, "voided once each");
        assert_eq!(event_count(&host, "saga.compensated").await, 6);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sends_a_parked_saga_back_and_the_orchestrator_finishes_it() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let (id, total, _) = parked_saga(&host, &pg).await;
        let retry = |order: String| {
            let host = &host;
            async move {
                let uri = format!("/admin/v1/sagas/globex/{order}/retry");
                admin(host, "POST", &uri, None).await
            }
        };
        // The PG is back; the operator sends the saga back.
        pg.sim.set_faults(Faults::default());
        let answer = retry(id.clone()).await;
        answer.expect(200, "OK");
        assert_eq!(answer.result()["state"], "COMPENSATING", "{backend:?}");
        let run = host.app.run_sagas(host.now()).await;
        assert_eq!(run.compensated, 1, "{backend:?}: {run:?}");
        let done = read_order(&host, &id).await;
        assert_eq!(done["status"], "CANCELLED");
        assert_eq!(done["saga"]["state"], "COMPENSATED");
        assert_eq!(pg.sim.ledger().cancelled_amount, total);
        // Nothing to retry any more; an unknown order is not found.
        retry(id.clone()).await.expect(409, "PAY_004");
        retry("ord_nope".into()).await.expect(404, "NOT_FOUND");
        host.finish().await;
    }
}

//! The recovery scheduler, the PG's notifications and the operator's
//! tools on both backends, against the bundled PG simulator over real
//! HTTP: lost answers resolved without a client retry, a schedule that
//! ends with an operator, approvals never fulfilled voided, two schedulers
//! never asking about one payment at once, late and duplicate
//! notifications changing nothing, and lost refunds found at the PG.

mod harness;
mod payment_steps;

use std::time::Duration;

use fluxpay_host::gateway::simulator::{Faults, cards};
use harness::{PG_TIMEOUT as TIMEOUT, Tenant, TestHost, backends, pg};
use payment_steps::*;
use serde_json::{Value, json};

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

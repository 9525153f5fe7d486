//! kill -9 at every step boundary of the order saga, on both backends:
//! the real binary aborts (`FLUXPAY_TEST_ABORT_AT`, as under SIGKILL)
//! right after each step's transaction commits and right after each PG
//! call's intent is stored but before its answer is; restarted, it moves
//! every saga to `COMPLETED` or `COMPENSATED` by itself, the PG simulator
//! (which outlives the host, as a PG does) shows exactly one approval per
//! paid order and none left neither captured nor voided, every order's
//! reserved credits are deducted (completed) or released (compensated),
//! and the auditor is clean.
//!
//! The orders that abort around the capture had their service call back
//! `completed`: they end `COMPLETED`. Every other one ends compensated:
//! its service failed, or never called back by its deadline.
//!
//! Every order is a split payment: `CREDITS` of it in credits, reserved
//! with the payment's intent, the rest by card.

mod harness;
mod process;

use std::time::{Duration, Instant};

use fluxpay_host::crash_points::{ABORT_AT_ENV, ABORT_ORDER_ENV, POINTS};
use fluxpay_host::gateway::PgStatus;
use fluxpay_host::gateway::simulator::{Simulator, cards};
use harness::{TestHost, backends};
use process::{Server, database_url, http, json_of, try_http};
use serde_json::{Value, json};

const PG_SECRET: &str = "test_sk_saga_crash";
const PG_SECRET_ENV: &str = "TEST_SAGA_PG_SECRET";
/// Credits each order is paid with (globex: 1 credit = 1 cent).
const CREDITS: i64 = 1_000;

/// The order that aborted at a crash point.
struct Crashed {
    point: &'static str,
    order: String,
}

fn post(addr: &str, path: &str, body: Value, key: Option<&str>) -> std::io::Result<(u16, Vec<u8>)> {
    try_http(addr, "POST", path, Some(&body), key)
}

/// A customer holding `CREDITS`, its PENDING order and the checkout of
/// what the credits do not pay: (order id, amount by card, payment key).
fn order_with_checkout(server: &Server, sim_url: &str, n: usize) -> (String, i64, String) {
    let customer = format!("c{n}");
    let (status, _) = http(
        server,
        "PUT",
        &format!("/api/v1/customers/{customer}"),
        Some(&json!({})),
        None,
    );
    assert!(status == 200 || status == 201, "{status}");
    let (status, _) = http(
        server,
        "POST",
        "/api/v1/credits/charge",
        Some(&json!({ "customerId": customer, "credits": CREDITS, "reason": "loyalty" })),
        Some(&format!("grant-{n}")),
    );
    assert_eq!(status, 201);
    let (status, body) = http(
        server,
        "POST",
        "/api/v1/orders",
        Some(&json!({ "customerId": customer, "items": [{ "sku": "report", "quantity": 2 }] })),
        Some(&format!("order-{n}")),
    );
    assert_eq!(status, 201);
    let order = json_of(&body)["result"].clone();
    let (order_id, total) = (
        order["orderId"].as_str().unwrap().to_owned(),
        order["total"].as_i64().unwrap() - CREDITS,
    );
    let (status, body) = try_http(
        sim_url.trim_start_matches("http://"),
        "POST",
        "/v1/checkout",
        Some(
            &json!({ "orderId": order_id, "amount": total, "currency": "EUR",
                       "cardNumber": cards::APPROVE }),
        ),
        None,
    )
    .unwrap();
    assert_eq!(status, 200);
    let key = json_of(&body)["paymentKey"].as_str().unwrap().to_owned();
    (order_id, total, key)
}

/// Whether the order aborting at `point` was fulfilled (its capture).
fn completes(point: &str) -> bool {
    point.starts_with("payment.capture_")
}

/// Drives `order` to `point` on a server told to abort there for it.
fn crash_at(server: Server, point: &'static str, (order_id, amount, key): &(String, i64, String)) {
    let addr = server.addr.clone();
    let confirm = post(
        &addr,
        "/api/v1/payments/confirm",
        json!({ "orderId": order_id, "paymentKey": key, "amount": amount, "credits": CREDITS }),
        Some(&format!("pay-{order_id}")),
    );
    let compensating = matches!(
        point,
        "saga.compensating" | "payment.void_requested" | "payment.void_answered"
    );
    if compensating || completes(point) {
        assert_eq!(confirm.unwrap().0, 201, "{point}");
        let callback = match completes(point) {
            true => post(
                &addr,
                "/api/v1/service-callbacks/completed",
                json!({ "orderId": order_id }),
                None,
            ),
            false => post(
                &addr,
                "/api/v1/service-callbacks/failed",
                json!({ "orderId": order_id, "reason": "out of stock" }),
                None,
            ),
        };
        assert!(callback.is_err(), "{point}: the callback got an answer");
    } else {
        assert!(confirm.is_err(), "{point}: the confirm got an answer");
    }
    assert!(server.wait_for_death(), "{point}: the server did not abort");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_at_every_step_boundary_every_saga_ends_and_the_pg_agrees() {
    for backend in backends() {
        let sim = Simulator::new(PG_SECRET, 11);
        let sim_url = sim.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let gateway = format!(
            "    gateway: {{ kind: toss, base_url: \"{sim_url}\", secret_env: {PG_SECRET_ENV}, \
             request_timeout_ms: 5000, service_timeout_s: 2, capture: manual }}\n"
        );
        let host = TestHost::start_with(backend, |yaml| {
            let globex = "  globex:\n    dev: true\n";
            assert!(yaml.contains(globex));
            yaml.replace(globex, &format!("{globex}{gateway}"))
        })
        .await;
        host.app.store().close().await;
        let url = database_url(&host);
        let config = host.config_path.clone();
        let sim_for_test = sim_url.clone();

        let (crashed, server, recovered_in) = tokio::task::spawn_blocking(move || {
            let server = Server::start_with_env(&config, &url, &[(PG_SECRET_ENV, PG_SECRET)]);
            let orders: Vec<_> = (0..POINTS.len())
                .map(|n| order_with_checkout(&server, &sim_for_test, n))
                .collect();
            server.kill();
            let mut crashed = Vec::new();
            for (point, order) in POINTS.into_iter().zip(&orders) {
                let server = Server::start_with_env(
                    &config,
                    &url,
                    &[
                        (ABORT_AT_ENV, point),
                        (ABORT_ORDER_ENV, &order.0),
                        (PG_SECRET_ENV, PG_SECRET),
                    ],
                );
                crash_at(server, point, order);
                crashed.push(Crashed {
                    point,
                    order: order.0.clone(),
                });
            }
            // Restarted without a crash point, the host finishes every
            // saga on its own: the payment janitor resolves what the PG
            // did, the orchestrator compensates what was left.
            let server = Server::start_with_env(&config, &url, &[(PG_SECRET_ENV, PG_SECRET)]);
            let started = Instant::now();
            loop {
                let states: Vec<String> = crashed
                    .iter()
                    .map(|c| {
                        let (_, body) = http(
                            &server,
                            "GET",
                            &format!("/api/v1/orders/{}", c.order),
                            None,
                            None,
                        );
                        json_of(&body)["result"]["saga"]["state"]
                            .as_str()
                            .unwrap_or("NONE")
                            .to_owned()
                    })
                    .collect();
                if states
                    .iter()
                    .all(|s| s == "COMPLETED" || s == "COMPENSATED")
                {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "sagas still moving after 60 s: {states:?}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            (crashed, server, started.elapsed())
        })
        .await
        .unwrap();
        // The janitor's first check is 10 s after a payment's intent, the
        // service deadline 2 s: well inside the 1-pager's 30 s.
        assert!(
            recovered_in < Duration::from_secs(30),
            "{backend:?}: {recovered_in:?}"
        );

        for Crashed { point, order } in &crashed {
            let (_, body) = http(
                &server,
                "GET",
                &format!("/api/v1/orders/{order}"),
                None,
                None,
            );
            let fluxpay = json_of(&body)["result"]["status"]
                .as_str()
                .unwrap()
                .to_owned();
            let pg: Value = reqwest::Client::new()
                .get(format!("{sim_url}/v1/payments/orders/{order}"))
                .basic_auth(PG_SECRET, Some(""))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let pg_status: PgStatus = serde_json::from_value(pg["status"].clone()).unwrap();
            let customer = json_of(&body)["result"]["customerId"]
                .as_str()
                .unwrap()
                .to_owned();
            let (_, body) = http(
                &server,
                "GET",
                &format!("/api/v1/credits/balance?customerId={customer}"),
                None,
                None,
            );
            let balance = &json_of(&body)["result"];
            if completes(point) {
                // Fulfilled: captured once, the credits deducted.
                assert_eq!(fluxpay, "COMPLETED", "{backend:?} {point}");
                assert_eq!(pg_status, PgStatus::Done, "{backend:?} {point}: {pg}");
                assert!(pg["capturedAt"].is_string(), "{backend:?} {point}: {pg}");
                assert_eq!(
                    (&balance["available"], &balance["reserved"]),
                    (&json!(0), &json!(0)),
                    "{backend:?} {point}: {balance}"
                );
                continue;
            }
            // Nothing was fulfilled, so the saga compensated: what the PG
            // approved, it gave back in full; the order is cancelled.
            assert_eq!(fluxpay, "CANCELLED", "{backend:?} {point}");
            assert_eq!(
                pg_status,
                PgStatus::Canceled,
                "{backend:?} {point}: approved once, then voided: {pg}"
            );
            // The credits it reserved are the customer's again.
            assert_eq!(
                (&balance["available"], &balance["reserved"]),
                (&json!(CREDITS), &json!(0)),
                "{backend:?} {point}: {balance}"
            );
        }
        // One approval per order (the one whose confirm never reached the
        // PG was confirmed again with its one key), one capture per
        // fulfilled order, every other approval voided: nothing is left
        // held on a card.
        let ledger = sim.ledger();
        assert_eq!(
            ledger.approvals,
            POINTS.len() as u64,
            "{backend:?}: {ledger:?}"
        );
        let fulfilled = POINTS.iter().filter(|p| completes(p)).count() as u64;
        assert_eq!(ledger.captures, fulfilled, "{backend:?}: {ledger:?}");
        assert_eq!(
            (ledger.approved_amount, ledger.held_amount),
            (ledger.captured_amount + ledger.cancelled_amount, 0),
            "{backend:?}: every approval captured or voided: {ledger:?}"
        );
        server.kill();
        host.restart().await.finish().await;
    }
}

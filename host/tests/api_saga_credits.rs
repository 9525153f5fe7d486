//! Orders paid with credits through the saga, on both backends, against
//! the PG simulator over real HTTP: credits alone or split with a card;
//! the credits are reserved before the PG is asked (not spendable
//! meanwhile), deducted when the service completes the order, and released
//! whenever the saga compensates (a failed or silent service, a declined
//! card, a cancelled order). Short or ill-fitting credits are refused with
//! nothing written; every test ends with a clean audit (reserved credits
//! deducted or released, the books balanced).

mod harness;

use fluxpay_host::gateway::simulator::cards;
use harness::{Answer, Pg, Tenant, TestHost, backends, pg};
use serde_json::{Value, json};

/// globex: 1 credit = 1 euro cent; a `report` costs 2,500.
const REPORT: i64 = 2_500;

/// A PENDING order of two reports (5,000) for `customer`, funded with
/// `credits`: the order id.
async fn order(host: &TestHost, customer: &str, credits: i64) -> String {
    host.put_customer(Tenant::Globex, customer, json!({}))
        .await
        .expect(201, "OK");
    if credits > 0 {
        host.charge(Tenant::Globex, customer, credits)
            .await
            .expect(201, "OK");
    }
    new_order(host, customer).await
}

/// A PENDING order of two reports (5,000) for `customer`: its id.
async fn new_order(host: &TestHost, customer: &str) -> String {
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
    assert_eq!(created.result()["total"], 2 * REPORT);
    created.result()["orderId"].as_str().unwrap().to_owned()
}

/// `POST /payments/confirm` with `credits`, and the rest (`amount`) by
/// `card` when there is any.
async fn confirm(
    host: &TestHost,
    pg: &Pg,
    order: &str,
    (credits, amount): (i64, i64),
    card: &str,
) -> Answer {
    let mut body = json!({ "orderId": order, "amount": amount, "credits": credits });
    if amount > 0 {
        body["paymentKey"] = json!(pg.checkout(order, amount, card).await);
    }
    host.call(
        Tenant::Globex,
        "POST",
        "/api/v1/payments/confirm",
        Some(body),
        Some(&format!("pay-{order}-{card}-{credits}")),
    )
    .await
}

/// A confirm refused before the PG is asked (so no checkout is opened).
async fn refused(host: &TestHost, order: &str, (credits, amount): (i64, i64)) -> Answer {
    let mut body = json!({ "orderId": order, "amount": amount, "credits": credits });
    if amount > 0 {
        body["paymentKey"] = json!("never-used");
    }
    host.call(
        Tenant::Globex,
        "POST",
        "/api/v1/payments/confirm",
        Some(body),
        Some(&format!("refused-{order}-{credits}-{amount}")),
    )
    .await
}

/// A customer with 5,000 credits whose order of 5,000 they pay alone
/// (`PAID`, its saga waiting for the service): the order id.
async fn paid_with_credits(host: &TestHost, customer: &str) -> String {
    let pg = pg(host).await;
    let id = order(host, customer, 5_000).await;
    confirm(host, &pg, &id, (5_000, 0), cards::APPROVE)
        .await
        .expect(201, "OK");
    id
}

async fn callback(host: &TestHost, outcome: &str, order: &str) -> Answer {
    host.call(
        Tenant::Globex,
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

/// (balance, reserved, available) of `customer`.
async fn credits(host: &TestHost, customer: &str) -> (i64, i64, i64) {
    let answer = host.balance(Tenant::Globex, customer).await;
    let r = answer.result();
    (
        r["balance"].as_i64().unwrap(),
        r["reserved"].as_i64().unwrap(),
        r["available"].as_i64().unwrap(),
    )
}

async fn events(host: &TestHost, kind: &str) -> Vec<Value> {
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
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_paid_with_credits_alone_holds_them_until_its_service_completes_it() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let id = order(&host, "c1", 6_000).await;

        let paid = confirm(&host, &pg, &id, (5_000, 0), cards::APPROVE).await;
        paid.expect(201, "OK");
        assert_eq!(paid.result()["status"], "PAID", "{backend:?}");
        // Held, not spent: the balance keeps them, nobody else can use them.
        assert_eq!(credits(&host, "c1").await, (6_000, 5_000, 1_000));
        host.use_credits(Tenant::Globex, "c1", "render", 1_001, "use-too-much")
            .await
            .expect(402, "PAY_001");
        let waiting = read_order(&host, &id).await;
        assert_eq!(waiting["saga"]["state"], "WAITING_FOR_SERVICE", "{waiting}");
        assert_eq!(
            waiting["saga"]["stepsDone"],
            json!(["reserve_credits", "pay_order"])
        );
        assert_eq!(waiting["saga"]["paymentId"], Value::Null);
        assert_eq!(waiting["credits"][0]["status"], "HELD");
        assert_eq!(waiting["credits"][0]["value"], 5_000);
        // A repeat of the confirm answers the same, holding nothing more.
        let again = confirm(&host, &pg, &id, (5_000, 0), cards::APPROVE).await;
        again.expect(201, "OK");
        assert_eq!(credits(&host, "c1").await, (6_000, 5_000, 1_000));

        callback(&host, "completed", &id).await.expect(200, "OK");
        let done = read_order(&host, &id).await;
        assert_eq!(done["status"], "COMPLETED", "{backend:?}: {done}");
        assert_eq!(done["saga"]["state"], "COMPLETED");
        assert_eq!(done["credits"][0]["status"], "CAPTURED");
        assert_eq!(credits(&host, "c1").await, (1_000, 0, 1_000));
        // The capture is a credit use like any other: refundable by its id.
        let use_id = done["credits"][0]["transactionId"].as_str().unwrap();
        host.call(
            Tenant::Globex,
            "POST",
            "/api/v1/credits/refund",
            Some(json!({ "transactionId": use_id, "credits": 500 })),
            Some("refund-order-credits"),
        )
        .await
        .expect(201, "OK");
        assert_eq!(credits(&host, "c1").await, (1_500, 0, 1_500));

        assert_eq!(pg.sim.ledger().approvals, 0, "nothing went to the PG");
        let reserved = events(&host, "credit.reserved").await;
        assert_eq!(reserved.len(), 1);
        assert_eq!(reserved[0]["data"]["orderId"], id.as_str());
        assert_eq!(reserved[0]["data"]["credits"], 5_000);
        assert_eq!(events(&host, "credit.deducted").await.len(), 1);
        assert!(events(&host, "credit.released").await.is_empty());
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_payment_reserves_the_credits_then_takes_the_rest_by_card() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let id = order(&host, "c1", 2_000).await;

        let paid = confirm(&host, &pg, &id, (2_000, 3_000), cards::APPROVE).await;
        paid.expect(201, "OK");
        assert_eq!(paid.result()["status"], "APPROVED", "{backend:?}");
        assert_eq!(paid.result()["amount"]["amount"], 3_000);
        assert_eq!(credits(&host, "c1").await, (2_000, 2_000, 0));
        let waiting = read_order(&host, &id).await;
        assert_eq!(waiting["status"], "PAID");
        assert_eq!(
            waiting["saga"]["stepsDone"],
            json!(["reserve_credits", "approve_payment", "pay_order"]),
            "{waiting}"
        );

        callback(&host, "completed", &id).await.expect(200, "OK");
        let done = read_order(&host, &id).await;
        assert_eq!(done["status"], "COMPLETED", "{backend:?}: {done}");
        assert_eq!(done["credits"][0]["status"], "CAPTURED");
        assert_eq!(credits(&host, "c1").await, (0, 0, 0));
        let payment = paid.result()["paymentId"].as_str().unwrap();
        let confirmed = host
            .call(
                Tenant::Globex,
                "GET",
                &format!("/api/v1/payments/{payment}"),
                None,
                None,
            )
            .await;
        assert_eq!(confirmed.result()["status"], "CONFIRMED");
        let ledger = pg.sim.ledger();
        assert_eq!((ledger.approvals, ledger.approved_amount), (1, 3_000));
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_silent_service_releases_the_credits_with_the_compensation() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let split = order(&host, "c1", 2_000).await;
        confirm(&host, &pg, &split, (2_000, 3_000), cards::APPROVE)
            .await
            .expect(201, "OK");
        let alone = order(&host, "c2", 5_000).await;
        confirm(&host, &pg, &alone, (5_000, 0), cards::APPROVE)
            .await
            .expect(201, "OK");

        // The service fails the split order: voided, cancelled, released.
        let failed = callback(&host, "failed", &split).await;
        failed.expect(200, "OK");
        assert_eq!(failed.result()["status"], "CANCELLED", "{backend:?}");
        assert_eq!(failed.result()["saga"]["state"], "COMPENSATED");
        assert_eq!(credits(&host, "c1").await, (2_000, 0, 2_000));
        assert_eq!(pg.sim.ledger().cancelled_amount, 3_000);
        assert_eq!(
            read_order(&host, &split).await["credits"][0]["status"],
            "RELEASED"
        );

        // The other service never answers: released at its deadline.
        host.advance(30_000);
        let run = host.app.run_sagas(host.now()).await;
        assert_eq!((run.timed_out, run.compensated), (1, 1), "{run:?}");
        let timed_out = read_order(&host, &alone).await;
        assert_eq!(timed_out["status"], "CANCELLED", "{timed_out}");
        assert_eq!(timed_out["saga"]["state"], "COMPENSATED");
        assert_eq!(credits(&host, "c2").await, (5_000, 0, 5_000));
        callback(&host, "completed", &alone)
            .await
            .expect(409, "PAY_004");

        let released = events(&host, "credit.released").await;
        assert_eq!(released.len(), 2, "{backend:?}");
        assert!(events(&host, "credit.deducted").await.is_empty());
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_releases_the_credits_and_the_next_attempt_reserves_them_again() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let id = order(&host, "c1", 2_000).await;
        confirm(&host, &pg, &id, (2_000, 3_000), cards::DECLINE)
            .await
            .expect(402, "PAY_002");
        assert_eq!(credits(&host, "c1").await, (2_000, 0, 2_000));
        let declined = read_order(&host, &id).await;
        assert_eq!(declined["status"], "PENDING", "{backend:?}: {declined}");
        assert_eq!(declined["saga"]["state"], "COMPENSATED");
        assert_eq!(declined["credits"][0]["status"], "RELEASED");

        confirm(&host, &pg, &id, (1_000, 4_000), cards::APPROVE)
            .await
            .expect(201, "OK");
        assert_eq!(credits(&host, "c1").await, (2_000, 1_000, 1_000));
        callback(&host, "completed", &id).await.expect(200, "OK");
        let done = read_order(&host, &id).await;
        assert_eq!(done["credits"][1]["status"], "CAPTURED", "{done}");
        assert_eq!(credits(&host, "c1").await, (1_000, 0, 1_000));
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_order_paid_with_credits_releases_them() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let id = paid_with_credits(&host, "c1").await;
        let cancelled = host
            .call(
                Tenant::Globex,
                "POST",
                &format!("/api/v1/orders/{id}/cancel"),
                Some(json!({ "reason": "customer changed their mind" })),
                Some("cancel-credits-order"),
            )
            .await;
        cancelled.expect(200, "OK");
        assert_eq!(cancelled.result()["status"], "CANCELLED", "{backend:?}");
        assert_eq!(read_order(&host, &id).await["saga"]["state"], "COMPENSATED");
        assert_eq!(credits(&host, "c1").await, (5_000, 0, 5_000));
        callback(&host, "completed", &id)
            .await
            .expect(409, "PAY_004");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_that_are_short_too_many_or_do_not_add_up_are_refused_with_nothing_written() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let id = order(&host, "c1", 1_000).await;

        // Fewer credits than named: nothing held, nothing sent to the PG.
        refused(&host, &id, (2_000, 3_000))
            .await
            .expect(402, "PAY_001");
        // Worth more than the order owes; an amount that leaves a gap; no
        // or negative credits.
        for (credits, amount) in [(6_000, 0), (500, 3_000), (0, 5_000), (-5, 5_005)] {
            refused(&host, &id, (credits, amount))
                .await
                .expect(400, "REQ_001");
        }
        // Credits that cover only part of it cannot leave out the card.
        refused(&host, &id, (1_000, 0)).await.expect(400, "REQ_001");

        assert_eq!(credits(&host, "c1").await, (1_000, 0, 1_000));
        let view = read_order(&host, &id).await;
        assert_eq!(view["status"], "PENDING", "{backend:?}: {view}");
        assert!(view.get("saga").is_none(), "{view}");
        assert!(view.get("credits").is_none(), "{view}");
        let payments = host
            .call(
                Tenant::Globex,
                "GET",
                &format!("/api/v1/payments?orderId={id}"),
                None,
                None,
            )
            .await;
        assert_eq!(payments.result(), &json!([]), "{backend:?}");
        assert_eq!(pg.sim.ledger().approvals, 0);

        // Another tenant cannot pay this tenant's order.
        let hooli = host
            .call(
                Tenant::Hooli,
                "POST",
                "/api/v1/payments/confirm",
                Some(json!({ "orderId": id, "amount": 0, "credits": 5_000 })),
                Some("hooli-credits"),
            )
            .await;
        hooli.expect(404, "NOT_FOUND");
        host.finish().await;
    }
}

/// `customer` with 3,000 credits expiring in an hour and 3,000 that never
/// expire, and a PENDING order of 5,000 paid with credits alone.
async fn promo_order(host: &TestHost, pg: &Pg, customer: &str) -> String {
    host.put_customer(Tenant::Globex, customer, json!({}))
        .await
        .expect(201, "OK");
    host.call(
        Tenant::Globex,
        "POST",
        "/api/v1/credits/charge",
        Some(json!({
            "customerId": customer, "credits": 3_000, "reason": "promo",
            "expiresAt": host.now() + HOUR
        })),
        Some(&format!("promo-{customer}")),
    )
    .await
    .expect(201, "OK");
    host.charge(Tenant::Globex, customer, 3_000)
        .await
        .expect(201, "OK");
    let id = new_order(host, customer).await;
    confirm(host, pg, &id, (5_000, 0), cards::APPROVE)
        .await
        .expect(201, "OK");
    id
}

const HOUR: i64 = 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_credits_of_a_lapsed_grant_outlive_expiry_until_captured_or_released() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        let completed = promo_order(&host, &pg, "c1").await;
        let silent = promo_order(&host, &pg, "c2").await;

        // The promos lapse while each saga holds 5,000 of the 6,000: expiry
        // takes only what is available (1,000 each), never reserved credits.
        host.advance(2 * HOUR);
        let run = host.app.expire_credits(host.now()).await.unwrap();
        assert_eq!(run.credits, 2_000, "{backend:?}: {run:?}");
        assert_eq!(credits(&host, "c1").await, (5_000, 5_000, 0));

        // c1's order completes: the capture spends the lapsed promo's 2,000
        // first, so nothing of it is left to expire.
        callback(&host, "completed", &completed)
            .await
            .expect(200, "OK");
        assert_eq!(credits(&host, "c1").await, (0, 0, 0));

        // c2's service misses its deadline: released, the lapsed promo's
        // 2,000 are available again — and the next expiry run takes them.
        let deadline = host.app.run_sagas(host.now()).await;
        assert_eq!(deadline.timed_out, 1, "{deadline:?}");
        assert_eq!(
            read_order(&host, &silent).await["saga"]["state"],
            "COMPENSATED"
        );
        assert_eq!(credits(&host, "c2").await, (5_000, 0, 5_000));
        let again = host.app.expire_credits(host.now()).await.unwrap();
        assert_eq!(again.credits, 2_000, "{again:?}");
        assert_eq!(credits(&host, "c2").await, (3_000, 0, 3_000));
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auditor_catches_credits_a_finished_saga_still_holds_or_an_account_miscounts() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let id = paid_with_credits(&host, "c1").await;
        host.assert_audit_clean().await;
        let found = |report: fluxpay_host::app::audit::AuditReport| {
            report
                .discrepancies
                .iter()
                .map(|d| d.detail.clone())
                .collect::<Vec<_>>()
        };

        // The saga says it finished while its credits are still held.
        host.raw
            .execute(&format!(
                "UPDATE sagas SET state = 'COMPENSATED' WHERE order_id = '{id}'"
            ))
            .await;
        let report = found(host.audit().await);
        assert!(
            report.contains(
                &"saga finished with credits still reserved (neither deducted nor released)".into()
            ),
            "{backend:?}: {report:?}"
        );
        host.raw
            .execute(&format!(
                "UPDATE sagas SET state = 'WAITING_FOR_SERVICE' WHERE order_id = '{id}'"
            ))
            .await;
        // The reservation gone: the account reserves credits no order holds,
        // and the PAID order has neither a payment nor credits.
        host.raw
            .execute("UPDATE credit_reservations SET status = 'RELEASED'")
            .await;
        let report = found(host.audit().await);
        for problem in [
            "credits reserved by the account differ from what its orders hold",
            "order is PAID without an APPROVED payment or reserved credits",
        ] {
            assert!(
                report.contains(&problem.to_owned()),
                "{backend:?}: {problem}: {report:?}"
            );
        }
        host.discard().await;
    }
}

//! Renewals charged to stored cards (billing keys), on both backends,
//! against the bundled PG simulator over real HTTP: a card is stored (the
//! PG's billing key, never card data), a renewal is charged to it and the
//! subscription moves into the paid period; a declined renewal makes the
//! subscription `PAST_DUE` and is tried again on the dunning schedule,
//! recovering with a new card or ending in cancellation; the books and the
//! PG's ledger agree.

mod harness;

use fluxpay_host::gateway::simulator::cards;
use harness::{Answer, Tenant, TestHost, backends, pg};
use serde_json::{Value, json};

const DAY_MS: i64 = 86_400_000;

/// Globex charges renewals to stored cards, retrying 1 and 3 days after a
/// failure.
async fn host(backend: harness::Backend) -> TestHost {
    TestHost::start_with(backend, |yaml| {
        let globex = "  globex:\n    dev: true\n";
        let rate = "    subscriptions: { credits_per_major_unit: 100 }\n";
        assert!(yaml.contains(globex) && yaml.contains(rate));
        yaml.replace(rate, "").replace(
            globex,
            &format!(
                "{globex}    subscriptions: {{ charge_card: true, dunning_days: [1, 3] }}\n    \
                 gateway: {{ kind: toss, base_url: \"http://127.0.0.1:9\", secret_env: \
                 TEST_GLOBEX_PG_SECRET }}\n"
            ),
        )
    })
    .await
}

async fn call(host: &TestHost, method: &str, path: &str, body: Option<Value>) -> Answer {
    host.call(Tenant::Globex, method, path, body, None).await
}

/// `customer` on `basic` (10 USD a month): (subscription id, period end).
async fn subscribed(host: &TestHost, customer: &str) -> (String, i64) {
    host.put_customer(Tenant::Globex, customer, json!({}))
        .await
        .expect(201, "OK");
    let created = host
        .call(
            Tenant::Globex,
            "POST",
            "/api/v1/subscriptions",
            Some(json!({ "customerId": customer, "planId": "basic" })),
            Some(&format!("sub-{customer}")),
        )
        .await;
    created.expect(201, "OK");
    let result = created.result();
    (
        result["subscriptionId"].as_str().unwrap().to_owned(),
        result["currentPeriodEnd"].as_i64().unwrap(),
    )
}

async fn store_card(host: &TestHost, customer: &str, billing_key: &str) -> Answer {
    call(
        host,
        "POST",
        &format!("/api/v1/customers/{customer}/payment-methods"),
        Some(json!({ "billingKey": billing_key, "label": "test card" })),
    )
    .await
}

async fn subscription(host: &TestHost, id: &str) -> Value {
    call(host, "GET", &format!("/api/v1/subscriptions/{id}"), None)
        .await
        .result()
        .clone()
}

/// The newest order of the subscription.
async fn renewal_order(host: &TestHost, id: &str) -> Value {
    let order_id: String = host
        .raw
        .text(&format!(
            "SELECT order_id FROM orders WHERE source_id = '{id}' \
             ORDER BY created_at DESC, order_id DESC LIMIT 1"
        ))
        .await;
    host.order(Tenant::Globex, &order_id).await.result().clone()
}

async fn event_count(host: &TestHost, kind: &str) -> usize {
    call(host, "GET", "/api/v1/events?limit=1000", None)
        .await
        .result()["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_is_charged_to_the_stored_card_and_moves_the_subscription_on() {
    for backend in backends() {
        let host = host(backend).await;
        let pg = pg(&host).await;
        let (id, end) = subscribed(&host, "g1").await;

        // The card: stored by its billing key, which is never shown back.
        let key = pg.billing_key("g1", cards::APPROVE).await;
        let stored = store_card(&host, "g1", &key).await;
        stored.expect(201, "OK");
        assert!(!stored.json.to_string().contains(&key), "{}", stored.json);
        store_card(&host, "g1", &key).await.expect(409, "PAY_004");
        store_card(&host, "nobody", "bsim_x")
            .await
            .expect(404, "NOT_FOUND");
        store_card(&host, "g1", "").await.expect(400, "REQ_001");
        let listed = call(&host, "GET", "/api/v1/customers/g1/payment-methods", None).await;
        assert_eq!(listed.result().as_array().unwrap().len(), 1, "{backend:?}");
        host.call(
            Tenant::Hooli,
            "GET",
            "/api/v1/customers/g1/payment-methods",
            None,
            None,
        )
        .await
        .expect(404, "NOT_FOUND");

        // The period ends: the renewal is left as an order to charge, and
        // the subscription waits for the charge.
        host.advance(end - host.now());
        let run = host
            .app
            .run_subscription_scheduler(host.now())
            .await
            .unwrap();
        assert_eq!(
            (run.card_charges, run.renewed),
            (1, 0),
            "{backend:?}: {run:?}"
        );
        assert_eq!(subscription(&host, &id).await["currentPeriodEnd"], end);
        // A second scheduler run does not price it again.
        let again = host
            .app
            .run_subscription_scheduler(host.now())
            .await
            .unwrap();
        assert_eq!(again.card_charges, 0);

        let charged = host.app.run_renewal_charges(host.now()).await;
        assert_eq!(
            (charged.claimed, charged.paid),
            (1, 1),
            "{backend:?}: {charged:?}"
        );
        let sub = subscription(&host, &id).await;
        assert_eq!(sub["status"], "ACTIVE");
        assert_eq!(sub["currentPeriodStart"], end, "{backend:?}: {sub}");
        let order = renewal_order(&host, &id).await;
        assert_eq!(order["status"], "COMPLETED", "{backend:?}: {order}");
        let payments = call(
            &host,
            "GET",
            &format!(
                "/api/v1/payments?orderId={}",
                order["orderId"].as_str().unwrap()
            ),
            None,
        )
        .await;
        assert_eq!(payments.result()[0]["status"], "CONFIRMED");
        assert_eq!(pg.sim.ledger().approvals, 1);
        assert_eq!(pg.sim.ledger().approved_amount, 1000);
        assert_eq!(event_count(&host, "subscription.renewed").await, 1);
        // Nothing more is due.
        assert_eq!(host.app.run_renewal_charges(host.now()).await.claimed, 0);

        // A removed card is not charged: the next renewal fails.
        let method = listed.result()[0]["methodId"].as_str().unwrap().to_owned();
        call(
            &host,
            "DELETE",
            &format!("/api/v1/customers/g1/payment-methods/{method}"),
            None,
        )
        .await
        .expect(200, "OK");
        let next_end = sub["currentPeriodEnd"].as_i64().unwrap();
        host.advance(next_end - host.now());
        host.app
            .run_subscription_scheduler(host.now())
            .await
            .unwrap();
        let run = host.app.run_renewal_charges(host.now()).await;
        assert_eq!(run.failed, 1, "{backend:?}: {run:?}");
        assert_eq!(subscription(&host, &id).await["status"], "PAST_DUE");
        assert_eq!(pg.sim.ledger().approvals, 1);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_renewal_is_dunned_then_recovers_with_a_new_card_or_cancels() {
    for backend in backends() {
        let host = host(backend).await;
        let pg = pg(&host).await;
        let (recovers, end) = subscribed(&host, "g1").await;
        let (cancels, _) = subscribed(&host, "g2").await;
        let (quits, _) = subscribed(&host, "g3").await;
        for customer in ["g1", "g2", "g3"] {
            let key = pg.billing_key(customer, cards::DECLINE).await;
            store_card(&host, customer, &key).await.expect(201, "OK");
        }
        host.advance(end - host.now());
        let run = host
            .app
            .run_subscription_scheduler(host.now())
            .await
            .unwrap();
        assert_eq!(run.card_charges, 3, "{backend:?}: {run:?}");

        // Declined: past due, tried again in a day; not before.
        let run = host.app.run_renewal_charges(host.now()).await;
        assert_eq!((run.claimed, run.failed), (3, 3), "{backend:?}: {run:?}");
        for id in [&recovers, &cancels, &quits] {
            assert_eq!(subscription(&host, id).await["status"], "PAST_DUE");
        }
        // g3's subscription is cancelled by the tenant: its card is not
        // charged again, and its unpaid renewal order is withdrawn.
        call(
            &host,
            "POST",
            &format!("/api/v1/subscriptions/{quits}/cancel"),
            Some(json!({ "atPeriodEnd": false, "reason": "customer left" })),
        )
        .await
        .expect(200, "OK");
        host.advance(DAY_MS - 1);
        assert_eq!(host.app.run_renewal_charges(host.now()).await.claimed, 0);
        // The scheduler leaves subscriptions in dunning alone.
        let run = host
            .app
            .run_subscription_scheduler(host.now())
            .await
            .unwrap();
        assert_eq!((run.card_charges, run.expired), (0, 0), "{run:?}");

        // g1 stores a card that works; g2 does not.
        let key = pg.billing_key("g1", cards::APPROVE).await;
        store_card(&host, "g1", &key).await.expect(201, "OK");
        host.advance(1);
        let run = host.app.run_renewal_charges(host.now()).await;
        assert_eq!((run.paid, run.failed), (1, 2), "{backend:?}: {run:?}");
        assert_eq!(renewal_order(&host, &quits).await["status"], "CANCELLED");
        assert_eq!(subscription(&host, &quits).await["status"], "CANCELLED");
        let recovered = subscription(&host, &recovers).await;
        assert_eq!(recovered["status"], "ACTIVE", "{backend:?}: {recovered}");
        assert_eq!(recovered["currentPeriodStart"], end);

        // g2's last try, three days later, fails too: cancelled, with its
        // unpaid renewal order.
        host.advance(3 * DAY_MS);
        let run = host.app.run_renewal_charges(host.now()).await;
        assert_eq!((run.claimed, run.failed), (1, 1), "{backend:?}: {run:?}");
        assert_eq!(subscription(&host, &cancels).await["status"], "CANCELLED");
        assert_eq!(renewal_order(&host, &cancels).await["status"], "CANCELLED");
        host.advance(30 * DAY_MS);
        assert_eq!(host.app.run_renewal_charges(host.now()).await.claimed, 0);

        assert_eq!(event_count(&host, "subscription.past_due").await, 3);
        // g2 by the dunning's end, g3 by the tenant.
        assert_eq!(event_count(&host, "subscription.cancelled").await, 2);
        // The PG approved only g1's second card, once.
        assert_eq!(pg.sim.ledger().approvals, 1);
        assert_eq!(pg.sim.ledger().approved_amount, 1000);
        host.finish().await;
    }
}

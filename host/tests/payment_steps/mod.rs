//! What the payment tests share: orders, confirms, callbacks, refunds and
//! admin calls against the test host, on globex with the PG simulator.

#![allow(dead_code)]

use std::time::Duration;

use fluxpay_host::gateway::simulator::cards;
use serde_json::{Value, json};

use crate::harness::{self, Answer, Pg, Tenant, TestHost};

/// A customer and a PENDING order of 2 reports (5,000 EUR minor units).
pub async fn order(host: &TestHost, customer: &str) -> (String, i64) {
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

pub async fn confirm(
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
pub async fn lost_payment(
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

pub async fn order_status(host: &TestHost, order: &str) -> String {
    host.order(Tenant::Globex, order).await.result()["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub async fn payment(host: &TestHost, id: &str) -> Value {
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

pub async fn complete(host: &TestHost, tenant: Tenant, order: &str) -> Answer {
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
pub async fn confirmed_payment(host: &TestHost, pg: &Pg, customer: &str) -> (String, i64, String) {
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

pub async fn cancel_payment(host: &TestHost, id: &str, body: Value, idem: &str) -> Answer {
    host.call(
        Tenant::Globex,
        "POST",
        &format!("/api/v1/payments/{id}/cancel"),
        Some(body),
        Some(idem),
    )
    .await
}

pub async fn event_types(host: &TestHost) -> Vec<String> {
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

pub async fn admin(host: &TestHost, method: &str, uri: &str, body: Option<Value>) -> Answer {
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

/// Serves the host's HTTP surface on a free loopback port, for the PG's
/// notifications; its base URL.
pub async fn serve_http(host: &TestHost) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = host.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// Waits (bounded) until the payment `id` is no longer in flight; its
/// status.
pub async fn settled(host: &TestHost, id: &str) -> String {
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

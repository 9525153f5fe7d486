//! Hostile and broken requests: malformed bodies, bad and stale signatures,
//! replays, oversize payloads, bad keys, and one tenant probing another's
//! ids. Each is answered 4xx with its code, and not one row is written.

mod harness;

use axum::body::Body;
use axum::http::Request;
use fluxpay_host::api::tenant::auth::sign;
use harness::{ACME_KEY, ACME_SECRET, GLOBEX_KEY, Tenant, TestHost, backends};
use serde_json::json;

fn raw(
    method: &str,
    path: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    builder
        .header("idempotency-key", "k-1")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_req_001_or_415_and_write_nothing() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Globex, "c1", 10).await;
        let before = host.raw.counts().await;
        let corpus: Vec<&[u8]> = vec![
            b"",
            b"{",
            b"{\"customerId\": \"c1\", \"credits\": 5, \"reason\": \"r\"",
            b"[]",
            b"null",
            b"42",
            b"\"text\"",
            b"{\"customerId\": null, \"credits\": 5, \"reason\": \"r\"}",
            b"{\"customerId\": [\"c1\"], \"credits\": 5, \"reason\": \"r\"}",
            b"{\"customerId\": \"c1\", \"credits\": {\"n\": 5}, \"reason\": \"r\"}",
            b"{\"customerId\": \"c1\", \"credits\": 5e2, \"reason\": \"r\"}",
            b"{\"customerId\": \"c1\", \"credits\": 99999999999999999999999, \"reason\": \"r\"}",
            b"{\"customerId\": \"c1\", \"credits\": 5, \"reason\": \"r\"} trailing",
            b"{\"customerId\": \"c1\", \"credits\": 5, \"reason\": \"r\"}{}",
            b"\xff\xfe{\"customerId\": \"c1\"}",
            b"{\"customerId\": \"c\xffd\", \"credits\": 5, \"reason\": \"r\"}",
            b"{\"CUSTOMERID\": \"c1\", \"credits\": 5, \"reason\": \"r\"}",
        ];
        for path in [
            "/api/v1/credits/charge",
            "/api/v1/credits/use",
            "/api/v1/credits/refund",
        ] {
            for body in &corpus {
                let answer = host
                    .send(raw(
                        "POST",
                        path,
                        Some(GLOBEX_KEY),
                        Some("application/json"),
                        body.to_vec(),
                    ))
                    .await;
                answer.expect(400, "REQ_001");
            }
            for content_type in [
                None,
                Some("text/plain"),
                Some("application/x-www-form-urlencoded"),
            ] {
                let body = br#"{"customerId":"c1","credits":5,"reason":"r"}"#.to_vec();
                let answer = host
                    .send(raw("POST", path, Some(GLOBEX_KEY), content_type, body))
                    .await;
                answer.expect(415, "REQ_002");
            }
        }
        for body in [
            &b"{\"attributes\": {\"tier\": 5}}"[..],
            b"{\"attributes\": []}",
            b"{\"attrs\": {}}",
            b"nope",
        ] {
            host.send(raw(
                "PUT",
                "/api/v1/customers/c2",
                Some(GLOBEX_KEY),
                Some("application/json"),
                body.to_vec(),
            ))
            .await
            .expect(400, "REQ_001");
        }
        assert_eq!(
            host.raw.counts().await,
            before,
            "{backend:?}: nothing written"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_unknown_keys_are_auth_001() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let before = host.raw.counts().await;
        let body = || br#"{"customerId":"c1","credits":5,"reason":"r"}"#.to_vec();
        for key in [None, Some("nope"), Some(""), Some("fp_test_acme_key_000")] {
            host.send(raw(
                "POST",
                "/api/v1/credits/charge",
                key,
                Some("application/json"),
                body(),
            ))
            .await
            .expect(401, "AUTH_001");
        }
        let basic = Request::builder()
            .method("GET")
            .uri("/api/v1/events")
            .header("authorization", format!("Basic {GLOBEX_KEY}"))
            .body(Body::empty())
            .unwrap();
        host.send(basic).await.expect(401, "AUTH_001");
        // The admin token is not a tenant key, nor the reverse.
        let admin = Request::builder()
            .method("GET")
            .uri("/api/v1/events")
            .header("authorization", format!("Bearer {}", harness::ADMIN_TOKEN))
            .body(Body::empty())
            .unwrap();
        host.send(admin).await.expect(401, "AUTH_001");
        let tenant_on_admin = Request::builder()
            .method("GET")
            .uri("/admin/v1/policies")
            .header("authorization", format!("Bearer {GLOBEX_KEY}"))
            .body(Body::empty())
            .unwrap();
        host.send(tenant_on_admin).await.expect(401, "AUTH_001");
        assert_eq!(host.raw.counts().await, before);
        host.finish().await;
    }
}

/// A signed acme request with every part chosen by the caller.
fn signed(
    method: &str,
    path: &str,
    body: &[u8],
    timestamp: &str,
    signature: Option<String>,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {ACME_KEY}"))
        .header("content-type", "application/json")
        .header("idempotency-key", "sig-1")
        .header("x-fluxpay-timestamp", timestamp);
    if let Some(signature) = signature {
        builder = builder.header("x-fluxpay-signature", signature);
    }
    builder.body(Body::from(body.to_vec())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_auth_002_and_stale_or_replayed_ones_auth_003() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Acme, "c1", json!({}))
            .await
            .expect(201, "OK");
        let before = host.raw.counts().await;
        let path = "/api/v1/credits/charge";
        let body = br#"{"customerId":"c1","credits":5,"reason":"r"}"#;
        let now = (host.now() / 1000).to_string();
        let good = sign(ACME_SECRET.as_bytes(), &now, "POST", path, body);

        // An unsigned request to a signed tenant.
        let unsigned = Request::builder()
            .method("POST")
            .uri(path)
            .header("authorization", format!("Bearer {ACME_KEY}"))
            .header("content-type", "application/json")
            .header("idempotency-key", "sig-1")
            .body(Body::from(body.to_vec()))
            .unwrap();
        host.send(unsigned).await.expect(401, "AUTH_002");

        let bad: Vec<(Request<Body>, &str)> = vec![
            (signed("POST", path, body, &now, None), "no signature"),
            (
                signed("POST", path, body, &now, Some("v1=".into())),
                "empty",
            ),
            (
                signed("POST", path, body, &now, Some(good.replace("v1=", "v2="))),
                "version",
            ),
            (
                signed("POST", path, body, &now, Some(format!("{good}00"))),
                "long",
            ),
            (
                signed(
                    "POST",
                    path,
                    body,
                    &now,
                    Some(sign(b"wrong-secret", &now, "POST", path, body)),
                ),
                "secret",
            ),
            (
                signed(
                    "POST",
                    path,
                    br#"{"customerId":"c1","credits":500,"reason":"r"}"#,
                    &now,
                    Some(good.clone()),
                ),
                "tampered body",
            ),
            (
                signed(
                    "POST",
                    &format!("{path}?x=1"),
                    body,
                    &now,
                    Some(good.clone()),
                ),
                "tampered query",
            ),
            (
                signed("POST", path, body, "not-a-time", Some(good.clone())),
                "timestamp text",
            ),
            (
                signed(
                    "POST",
                    path,
                    body,
                    &(host.now() / 1000 + 1).to_string(),
                    Some(good.clone()),
                ),
                "timestamp changed",
            ),
        ];
        for (request, what) in bad {
            let answer = host.send(request).await;
            assert_eq!(answer.code(), "AUTH_002", "{what}: {}", answer.json);
            assert_eq!(answer.status, 401, "{what}");
        }

        // Correctly signed, but more than 300 s old or ahead.
        for offset in [-301, 301, -86_400] {
            let ts = (host.now() / 1000 + offset).to_string();
            let signature = sign(ACME_SECRET.as_bytes(), &ts, "POST", path, body);
            host.send(signed("POST", path, body, &ts, Some(signature)))
                .await
                .expect(401, "AUTH_003");
        }
        assert_eq!(
            host.raw.counts().await,
            before,
            "{backend:?}: nothing written"
        );

        // A captured, valid request replayed later than the window.
        let capture = || signed("POST", path, body, &now, Some(good.clone()));
        host.send(capture()).await.expect(201, "OK");
        let after_first = host.raw.counts().await;
        host.advance(301_000);
        host.send(capture()).await.expect(401, "AUTH_003");
        assert_eq!(
            host.raw.counts().await,
            after_first,
            "the replay wrote nothing"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_are_413_and_write_nothing() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Globex, "c1", json!({}))
            .await
            .expect(201, "OK");
        let before = host.raw.counts().await;
        let huge = format!(
            r#"{{"customerId":"c1","feature":"render","units":1,"metadata":{{"pad":"{}"}}}}"#,
            "x".repeat(70 * 1024)
        );
        host.send(raw(
            "POST",
            "/api/v1/credits/use",
            Some(GLOBEX_KEY),
            Some("application/json"),
            huge.clone().into_bytes(),
        ))
        .await
        .expect(413, "REQ_003");
        // Without a key, the body is never read: 401.
        host.send(raw(
            "POST",
            "/api/v1/credits/use",
            None,
            Some("application/json"),
            huge.into_bytes(),
        ))
        .await
        .expect(401, "AUTH_001");
        // Within the limit but over the field limits: 400.
        let many = (0..40)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect::<serde_json::Map<_, _>>();
        host.call(
            Tenant::Globex,
            "POST",
            "/api/v1/credits/use",
            Some(json!({ "customerId": "c1", "feature": "render", "units": 1, "metadata": many })),
            Some("m1"),
        )
        .await
        .expect(400, "REQ_001");
        assert_eq!(host.raw.counts().await, before);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_probing_another_tenants_ids_gets_404s_and_changes_nothing() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        // Acme's data.
        host.put_customer(Tenant::Acme, "acme-cust", json!({ "tier": "gold" }))
            .await
            .expect(201, "OK");
        host.charge(Tenant::Acme, "acme-cust", 100)
            .await
            .expect(201, "OK");
        let used = host
            .use_credits(Tenant::Acme, "acme-cust", "render", 2, "u1")
            .await;
        used.expect(201, "OK");
        let use_id = used.result()["transactionId"].as_str().unwrap().to_owned();
        let before = host.raw.counts().await;
        let acme_events = host
            .call(Tenant::Acme, "GET", "/api/v1/events", None, None)
            .await;

        // Globex, with its own valid key, tries acme's ids.
        let probes = [
            ("GET", "/api/v1/customers/acme-cust".to_owned(), None),
            (
                "GET",
                "/api/v1/credits/balance?customerId=acme-cust".to_owned(),
                None,
            ),
            (
                "GET",
                "/api/v1/credits/transactions?customerId=acme-cust".to_owned(),
                None,
            ),
            (
                "POST",
                "/api/v1/credits/use".to_owned(),
                Some(json!({ "customerId": "acme-cust", "feature": "render", "units": 1 })),
            ),
            (
                "POST",
                "/api/v1/credits/charge".to_owned(),
                Some(json!({ "customerId": "acme-cust", "credits": 1000, "reason": "steal" })),
            ),
            (
                "POST",
                "/api/v1/credits/refund".to_owned(),
                Some(json!({ "transactionId": use_id })),
            ),
        ];
        for (i, (method, path, body)) in probes.into_iter().enumerate() {
            host.call(Tenant::Globex, method, &path, body, Some(&format!("p{i}")))
                .await
                .expect(404, "NOT_FOUND");
        }
        // Globex's feed holds none of acme's events, and reusing acme's
        // idempotency key is not a conflict across tenants.
        let feed = host
            .call(Tenant::Globex, "GET", "/api/v1/events", None, None)
            .await;
        feed.expect(200, "OK");
        assert_eq!(feed.result()["events"], json!([]));
        assert_eq!(
            host.raw.counts().await,
            before,
            "{backend:?}: nothing changed"
        );
        let acme_after = host
            .call(Tenant::Acme, "GET", "/api/v1/events", None, None)
            .await;
        assert_eq!(acme_after.result(), acme_events.result());
        assert_eq!(
            host.balance(Tenant::Acme, "acme-cust").await.result()["balance"],
            95
        );
        host.finish().await;
    }
}

//! The admin API's HTTP contract: bearer-token authentication, the response
//! envelope on every answer (errors, unknown routes and malformed JSON
//! included), health probes, and evaluate's report of who answered. Reload
//! and rollback semantics are in `registry.rs` and `reload.rs`; the same
//! endpoints over a real socket in `serve.rs`.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fluxpay_host::api::{self, admin::AdminState};
use serde_json::json;

use common::{TOKEN, admin_request, assert_envelope, send};

fn empty_config() -> (
    tempfile::TempDir,
    Arc<fluxpay_host::policy::reload::Reloader>,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.yaml");
    std::fs::write(&config, "tenants:\n  acme: {}\n").unwrap();
    let reloader = common::loaded(&config);
    (dir, reloader)
}

fn request(method: &str, uri: &str, auth: Option<&str>) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(value) = auth {
        builder = builder.header("authorization", value);
    }
    builder.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn admin_routes_refuse_a_missing_or_wrong_token_with_401() {
    let (_dir, reloader) = empty_config();
    let app = common::app(&reloader);
    for (method, uri) in [
        ("GET", "/admin/v1/policies"),
        ("POST", "/admin/v1/policies/reload"),
        ("POST", "/admin/v1/policies/acme/credit/rollback"),
        ("POST", "/admin/v1/policies/acme/credit/evaluate"),
    ] {
        let (status, body) = send(&app, request(method, uri, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_envelope(&body, "AUTH_001");
        assert_eq!(body["result"], serde_json::Value::Null);

        // A wrong token is unknown credentials, like a missing one: AUTH_002
        // and AUTH_003 are reserved for request signatures.
        let (status, body) = send(&app, request(method, uri, Some("Bearer not-the-token"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_envelope(&body, "AUTH_001");

        let basic = format!("Basic {TOKEN}");
        let (status, _) = send(&app, request(method, uri, Some(&basic))).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "only the Bearer scheme is accepted"
        );
    }
}

#[tokio::test]
async fn the_right_token_opens_the_admin_api() {
    let (_dir, reloader) = empty_config();
    let app = common::app(&reloader);
    let (status, body) = send(&app, admin_request("GET", "/admin/v1/policies", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_envelope(&body, "OK");
    assert_eq!(body["result"]["snapshotVersion"], 1);
    assert_eq!(
        body["result"]["tenants"]["acme"],
        json!({ "pricing": [], "validation": [] })
    );
    assert_eq!(body["result"]["lastReload"]["ok"], true);
}

#[tokio::test]
async fn without_a_configured_token_the_admin_api_answers_503_even_to_a_token() {
    let (_dir, reloader) = empty_config();
    let app = api::router(AdminState::new(reloader, None));
    for auth in [None, Some("Bearer anything")] {
        let (status, body) = send(&app, request("GET", "/admin/v1/policies", auth)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_envelope(&body, "ADM_001");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("FLUXPAY_ADMIN_TOKEN")
        );
    }
    // Health probes do not depend on the admin token.
    let (status, body) = send(&app, request("GET", "/health/ready", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_envelope(&body, "OK");
}

#[tokio::test]
async fn malformed_json_is_answered_in_the_envelope_with_400() {
    let (_dir, reloader) = empty_config();
    let app = common::app(&reloader);
    let uri = "/admin/v1/policies/acme/credit/evaluate";
    let malformed = Request::builder()
        .method("POST")
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from("{\"context\": {"))
        .unwrap();
    let (status, body) = send(&app, malformed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&body, "REQ_001");

    // Valid JSON of the wrong shape is an invalid request too: one code, 400.
    let wrong_shape = admin_request("POST", uri, Some(json!({ "context": 5 })));
    let (status, body) = send(&app, wrong_shape).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&body, "REQ_001");

    // Unknown fields are mistakes, not ignored.
    let typo = admin_request(
        "POST",
        uri,
        Some(json!({ "context": { "customerId": "c1" }, "reqest": {} })),
    );
    let (status, body) = send(&app, typo).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&body, "REQ_001");
    assert!(
        body["message"].as_str().unwrap().contains("reqest"),
        "{body}"
    );

    let not_json = Request::builder()
        .method("POST")
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::from("{}"))
        .unwrap();
    let (status, body) = send(&app, not_json).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_envelope(&body, "REQ_002");
}

#[tokio::test]
async fn unknown_routes_tenants_and_policies_are_404_envelopes() {
    let (_dir, reloader) = empty_config();
    let app = common::app(&reloader);
    let (status, body) = send(&app, request("GET", "/nope", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "NOT_FOUND");

    let (status, body) = send(&app, request("DELETE", "/health/live", None)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_envelope(&body, "REQ_004");

    let evaluate = json!({ "context": { "customerId": "c1" }, "request": { "CreditUsage": { "feature": "x", "units": 1, "metadata": [] } } });
    let (status, body) = send(
        &app,
        admin_request(
            "POST",
            "/admin/v1/policies/globex/credit/evaluate",
            Some(evaluate.clone()),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "NOT_FOUND");
    assert!(
        body["message"].as_str().unwrap().contains("globex"),
        "{body}"
    );

    let (status, body) = send(
        &app,
        admin_request(
            "POST",
            "/admin/v1/policies/acme/credit/evaluate",
            Some(evaluate),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "NOT_FOUND");

    let (status, body) = send(
        &app,
        admin_request("POST", "/admin/v1/policies/acme/credit/rollback", None),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "NOT_FOUND");
}

#[tokio::test]
async fn health_is_live_at_once_and_ready_only_after_the_first_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.yaml");
    std::fs::write(&config, "tenants: {}\n").unwrap();
    let registry = Arc::new(fluxpay_host::policy::registry::Registry::new());
    let reloader =
        Arc::new(fluxpay_host::policy::reload::Reloader::new(&config, registry).unwrap());
    let app = common::app(&reloader);

    let (status, body) = send(&app, request("GET", "/health/live", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_envelope(&body, "OK");
    let (status, body) = send(&app, request("GET", "/health/ready", None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_envelope(&body, "SYS_002");
    // Before the first load, policy routes say "not ready", not "unknown tenant".
    let evaluate =
        json!({ "context": { "customerId": "c1" }, "request": common::credit_usage("x", 1) });
    let (status, body) = send(
        &app,
        admin_request(
            "POST",
            "/admin/v1/policies/acme/credit/evaluate",
            Some(evaluate),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_envelope(&body, "SYS_002");

    reloader
        .reload(fluxpay_host::policy::reload::Trigger::Startup)
        .unwrap();
    let (status, body) = send(&app, request("GET", "/health/ready", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["result"]["snapshotVersion"], 1);
}

#[tokio::test]
async fn a_refused_reload_is_a_422_envelope_listing_every_error_with_file_and_field() {
    let (dir, reloader) = empty_config();
    let app = common::app(&reloader);
    let config = dir.path().join("tenants.yaml");
    std::fs::write(
        &config,
        "tenants:\n  acme:\n    pricing:\n      credit: { module: missing.wasm }\n      order: { module: gone.wasm }\n",
    )
    .unwrap();
    let (status, body) = send(
        &app,
        admin_request("POST", "/admin/v1/policies/reload", None),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_envelope(&body, "CFG_001");
    assert_eq!(body["result"]["servingVersion"], 1);
    let errors = body["result"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{body}");
    assert_eq!(errors[0]["field"], "tenants.acme.pricing.credit.module");
    assert_eq!(errors[0]["file"], config.to_str().unwrap());
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("file not found: "),
        "{body}"
    );
    assert_eq!(errors[1]["field"], "tenants.acme.pricing.order.module");

    // The old version keeps serving, and the listing says why the reload failed.
    assert_eq!(reloader.registry().snapshot().version(), 1);
    let (_, body) = send(&app, admin_request("GET", "/admin/v1/policies", None)).await;
    assert_eq!(body["result"]["lastReload"]["ok"], false);
    assert_eq!(body["result"]["lastReload"]["trigger"], "admin");
    assert_eq!(
        body["result"]["lastReload"]["errors"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn evaluate_reports_who_answered_and_maps_policy_refusals_to_codes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.yaml");
    std::fs::write(&config, common::credit_tenant_yaml(3)).unwrap();
    let reloader = common::loaded(&config);
    let app = common::app(&reloader);
    let uri = "/admin/v1/policies/acme/credit/evaluate";
    let context = json!({ "customerId": "c1", "nowMs": 1_700_000_000_000i64 });

    let ok = json!({ "context": context, "request": common::credit_usage("image-render", 2) });
    let (status, body) = send(&app, admin_request("POST", uri, Some(ok))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_envelope(&body, "OK");
    let result = &body["result"];
    assert_eq!(common::quoted_credits(&result["quote"]), 6);
    assert_eq!(
        (result["tenant"].as_str(), result["policy"].as_str()),
        (Some("acme"), Some("credit"))
    );
    assert_eq!(result["version"], 1);
    assert_eq!(result["snapshotVersion"], 1);
    let hash = reloader
        .registry()
        .snapshot()
        .binding("acme", "credit")
        .unwrap()
        .content_hash()
        .to_owned();
    assert_eq!(result["contentHash"], hash.as_str());
    assert!(result["stats"]["fuelUsed"].as_u64().unwrap() > 0);

    // The policy's own refusal: 422 with its code, and who refused.
    let unknown = json!({ "context": context, "request": common::credit_usage("teleport", 1) });
    let (status, body) = send(&app, admin_request("POST", uri, Some(unknown))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_envelope(&body, "POL_003");
    assert_eq!(body["result"]["rejection"]["code"], "unknown-feature");
    assert_eq!(body["result"]["contentHash"], hash.as_str());

    // A request the binding never prices in production is refused up front.
    let wrong_kind = json!({
        "context": context,
        "request": { "Subscription": { "Start": { "plan_id": "basic", "start_ms": 0 } } },
    });
    let (status, body) = send(&app, admin_request("POST", uri, Some(wrong_kind))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_envelope(&body, "REQ_001");
    let subject = json!({ "context": context, "subject": { "Usage": [] } });
    let (status, body) = send(&app, admin_request("POST", uri, Some(subject))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("send `request`"),
        "{body}"
    );

    // Evaluations count as calls of the binding.
    let (_, listing) = send(&app, admin_request("GET", "/admin/v1/policies", None)).await;
    let binding = &listing["result"]["tenants"]["acme"]["pricing"][0];
    assert_eq!(binding["calls"], 2);
    assert_eq!(binding["policyErrors"], 1);
    assert_eq!(binding["contentHash"], hash.as_str());
    assert_eq!(binding["limits"]["fuel"], 10_000_000);
}

//! Shared by the integration tests: the reference policies built once per
//! test binary, config files in temp dirs, an admin router.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use fluxpay_host::api::{self, admin::AdminState, admin::AdminToken};
use fluxpay_host::config::{PricingKind, Secret};
use fluxpay_host::policy::registry::{Binding, CallContext, Change, Registry};
use fluxpay_host::policy::reload::ReloadReport;
use fluxpay_host::policy::reload::{Reloader, Trigger};
use fluxpay_host::policy::types;

pub const TOKEN: &str = "test-admin-token-0123456789";

/// A reference policy component (`fluxpay-policy-credit`, …), built once per
/// test binary into the test target's temp dir.
pub fn policy(package: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let built = BUILT.get_or_init(Mutex::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = built.iter().find(|(p, _)| p == package) {
        return path.clone();
    }
    let root = fluxpay_policy_build::workspace_root_from(Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("workspace root");
    // One output dir per test binary: binaries run in parallel and must not
    // rename over each other's files.
    let exe = std::env::current_exe().expect("test binary path");
    let stem = exe.file_stem().unwrap().to_string_lossy().into_owned();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("policies-{stem}"));
    let path = fluxpay_policy_build::Build::in_workspace(&root, package)
        .out_dir(out)
        .run()
        .unwrap_or_else(|err| panic!("building {package}: {err:#}"));
    built.push((package.to_owned(), path.clone()));
    path
}

/// Write `text` to `path` the way editors and deploy tools do: a temporary
/// file renamed over the old one, so readers never see half a file.
pub fn write_atomically(path: &Path, text: impl AsRef<[u8]>) {
    // A name per writer: tests write the same file from several threads.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-write-{}-{n}", std::process::id()));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A registry loaded from `config` (which must be valid).
pub fn loaded(config: &Path) -> Arc<Reloader> {
    let registry = Arc::new(Registry::new());
    let reloader = Arc::new(Reloader::new(config, registry).expect("config parses"));
    if let Err(failure) = reloader.reload(Trigger::Startup) {
        panic!("startup load failed: {failure}");
    }
    reloader
}

/// The whole HTTP surface with the test token.
pub fn app(reloader: &Arc<Reloader>) -> axum::Router {
    let token = AdminToken::new(&Secret::new(TOKEN));
    api::router(AdminState::new(reloader.clone(), Some(token)))
}

/// A request to the app with the admin token.
pub fn admin_request(
    method: &str,
    uri: &str,
    body: Option<serde_json::Value>,
) -> axum::http::Request<axum::body::Body> {
    let builder = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"));
    match body {
        Some(json) => builder
            .header("content-type", "application/json")
            .body(axum::body::Body::from(json.to_string()))
            .unwrap(),
        None => builder.body(axum::body::Body::empty()).unwrap(),
    }
}

/// Send a request through the router; status and JSON body.
pub async fn send(
    app: &axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> (axum::http::StatusCode, serde_json::Value) {
    use tower::ServiceExt as _;
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, json)
}

/// Asserts `body` is the envelope with `code` (and `isSuccess` to match).
pub fn assert_envelope(body: &serde_json::Value, code: &str) {
    let object = body.as_object().expect("envelope is an object");
    let mut keys: Vec<_> = object.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["code", "isSuccess", "message", "result"], "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["isSuccess"], code == "OK", "{body}");
    assert!(body["message"].is_string(), "{body}");
}

// --- The credit reference policy, as the reload tests use it. ------------
// Its config schema is documented in policies/credit/README.md; these
// helpers are the only place the tests depend on it.

/// The credit reference policy's component.
pub fn credit_module() -> PathBuf {
    policy("fluxpay-policy-credit")
}

/// The `config:` block making `image-render` cost `cost` credits per unit.
pub fn credit_config_yaml(cost: i64) -> String {
    format!("{{ features: {{ image-render: {{ credits_per_unit: {cost} }} }} }}")
}

/// The `engine:` section of test configs: compiled modules are cached across
/// tests and test binaries, so only the first engine compiles each module.
/// The wall-clock deadline is raised from production's 50 ms: a debug build
/// sharing two cores with parallel tests can take longer, and these tests are
/// about reload, not about the deadline (the runtime's tests prove that one).
pub fn engine_yaml() -> String {
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    format!(
        "engine:\n  artifact_dir: {}\n  default_limits: {{ deadline_ms: 10000 }}\n",
        artifacts.display()
    )
}

/// A config binding tenant `acme`'s credit pricing to the credit policy at
/// `cost` credits per `image-render` unit.
pub fn credit_tenant_yaml(cost: i64) -> String {
    format!(
        "{}tenants:\n  acme:\n    pricing:\n      credit:\n        module: {}\n        config: {}\n",
        engine_yaml(),
        credit_module().display(),
        credit_config_yaml(cost)
    )
}

/// A credit-usage pricing request as evaluate's JSON.
pub fn credit_usage(feature: &str, units: i64) -> serde_json::Value {
    serde_json::json!({ "CreditUsage": { "feature": feature, "units": units, "metadata": [] } })
}

/// The credits total of a quote in evaluate's JSON.
pub fn quoted_credits(quote: &serde_json::Value) -> i64 {
    quote["total"]["Credits"]
        .as_i64()
        .unwrap_or_else(|| panic!("not a credits quote: {quote}"))
}

/// The `image-render` cost a credit binding's config JSON sets.
pub fn credit_cost_of(config_json: &str) -> i64 {
    let config: serde_json::Value = serde_json::from_str(config_json).unwrap();
    config["features"]["image-render"]["credits_per_unit"]
        .as_i64()
        .unwrap_or_else(|| panic!("no image-render cost in {config_json}"))
}

// --- Calling the credit policy in process. ------------------------------

pub fn ctx() -> CallContext {
    CallContext {
        customer_id: "cust-1".into(),
        customer_attributes: vec![("tier".into(), "gold".into())],
        now_ms: 1_700_000_000_000,
    }
}

pub fn usage(feature: &str, units: i64) -> types::PricingRequest {
    types::PricingRequest::CreditUsage(types::CreditUsage {
        feature: feature.into(),
        units,
        metadata: vec![],
    })
}

/// Price one `image-render` unit; the credits charged.
pub fn price_one(binding: &Binding) -> i64 {
    match binding.price(ctx(), &usage("image-render", 1)).result {
        Ok(quote) => match quote.total {
            types::Amount::Credits(n) => n,
            other => panic!("credit policy answered money: {other:?}"),
        },
        Err(err) => panic!("price failed: {err}"),
    }
}

pub fn credit(reloader: &Reloader, tenant: &str) -> Arc<Binding> {
    reloader
        .registry()
        .snapshot()
        .tenant(tenant)
        .and_then(|t| t.pricing(PricingKind::Credit))
        .cloned()
        .unwrap_or_else(|| panic!("tenant {tenant} has no credit binding"))
}

/// A temp dir with `tenants.yaml` holding `yaml`, loaded.
pub fn setup(yaml: &str) -> (tempfile::TempDir, PathBuf, Arc<Reloader>) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tenants.yaml");
    std::fs::write(&config, yaml).unwrap();
    let reloader = loaded(&config);
    (dir, config, reloader)
}

/// Tenants each binding credit pricing at their cost.
pub fn tenants_yaml(costs: &[(&str, i64)]) -> String {
    let mut yaml = engine_yaml();
    yaml.push_str("tenants:\n");
    for (tenant, cost) in costs {
        yaml.push_str(&format!(
            "  {tenant}:\n    pricing:\n      credit: {{ module: {}, config: {} }}\n",
            credit_module().display(),
            credit_config_yaml(*cost)
        ));
    }
    yaml
}

pub fn change_of(report: &ReloadReport, tenant: &str, policy: &str) -> Change {
    report
        .commit
        .bindings
        .iter()
        .find(|b| b.tenant == tenant && b.policy == policy)
        .unwrap_or_else(|| panic!("{tenant}/{policy} not in the report"))
        .change
}

//! Shared by the benches: the reference policies' components, the example
//! tenant's configs, and one representative request per policy.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fluxpay_host::policy::{CallStats, Limits, LoadedPolicy, PolicyKind, types};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `config:` block of one of acme's bindings in the example config, as JSON.
pub fn example_config(path: &[&str]) -> String {
    let text =
        std::fs::read_to_string(root().join("examples/tenants.yaml")).expect("example config");
    let mut value: serde_json::Value = serde_yaml::from_str(&text).expect("example config parses");
    for key in path {
        value = value
            .get(*key)
            .unwrap_or_else(|| panic!("examples/tenants.yaml has no {path:?}"))
            .clone();
    }
    serde_json::to_string(&value["config"]).unwrap()
}

pub fn validation_config(name: &str) -> String {
    let text = std::fs::read_to_string(root().join("examples/tenants.yaml")).unwrap();
    let value: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    let list = value["tenants"]["acme"]["validation"]
        .as_array()
        .expect("acme validation list");
    let entry = list
        .iter()
        .find(|e| e["name"] == name)
        .or(list.first())
        .unwrap();
    serde_json::to_string(&entry["config"]).unwrap()
}

/// A reference policy's component: `target/policies/<package>.wasm`, or
/// the same name under `$FLUXPAY_POLICY_DIR` when that is set.
pub fn module(package: &str) -> PathBuf {
    let dir = std::env::var_os("FLUXPAY_POLICY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/policies"));
    let path = dir.join(format!("{package}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: the host build script builds it",
        path.display()
    );
    path
}

pub fn context(config: String) -> types::Context {
    types::Context {
        tenant_id: "acme".into(),
        config,
        customer_id: "cust-42".into(),
        customer_attributes: vec![
            ("tier".into(), "gold".into()),
            ("region".into(), "eu".into()),
        ],
        now_ms: 1_763_700_000_000,
    }
}

pub struct Case {
    pub name: &'static str,
    pub package: &'static str,
    pub kind: PolicyKind,
    pub ctx: types::Context,
    pub pricing: Option<types::PricingRequest>,
    pub subject: Option<types::ValidationSubject>,
}

pub fn cases() -> Vec<Case> {
    use types::*;
    vec![
        Case {
            name: "credit",
            package: "fluxpay-policy-credit",
            kind: PolicyKind::Pricing,
            ctx: context(example_config(&["tenants", "acme", "pricing", "credit"])),
            pricing: Some(PricingRequest::CreditUsage(CreditUsage {
                feature: "image-render".into(),
                units: 3,
                metadata: vec![("request-id".into(), "r-1".into())],
            })),
            subject: None,
        },
        Case {
            name: "subscription",
            package: "fluxpay-policy-subscription",
            kind: PolicyKind::Pricing,
            ctx: context(example_config(&[
                "tenants",
                "acme",
                "pricing",
                "subscription",
            ])),
            pricing: Some(PricingRequest::Subscription(SubscriptionRequest::Start(
                SubscriptionStart {
                    plan_id: "pro".into(),
                    start_ms: 1_763_700_000_000,
                },
            ))),
            subject: None,
        },
        Case {
            name: "metered",
            package: "fluxpay-policy-metered",
            kind: PolicyKind::Pricing,
            ctx: context(example_config(&["tenants", "acme", "pricing", "metered"])),
            pricing: Some(PricingRequest::Metered(MeteredPeriod {
                period_start_ms: 1_761_955_200_000,
                period_end_ms: 1_764_547_200_000,
                usage: vec![MetricUsage {
                    metric: "api-calls".into(),
                    quantity: 123_456,
                }],
            })),
            subject: None,
        },
        Case {
            name: "validation",
            package: "fluxpay-policy-validation",
            kind: PolicyKind::Validation,
            ctx: context(validation_config("limits")),
            pricing: None,
            subject: Some(ValidationSubject::CreditUse(CreditUseSubject {
                feature: "image-render".into(),
                units: 3,
                credits: 12,
                balance: 1_000,
                spent_today: 40,
                metadata: vec![("request-id".into(), "r-1".into())],
            })),
        },
    ]
}

pub fn call(policy: &LoadedPolicy, case: &Case, limits: &Limits) -> bool {
    match (&case.pricing, &case.subject) {
        (Some(req), _) => policy.price(&case.ctx, req, limits).result.is_ok(),
        (None, Some(subject)) => policy.validate(&case.ctx, subject, limits).result.is_ok(),
        _ => unreachable!(),
    }
}

/// [`call`], keeping what the call used (fuel, peak memory, sizes).
pub fn call_stats(policy: &LoadedPolicy, case: &Case, limits: &Limits) -> (bool, CallStats) {
    match (&case.pricing, &case.subject) {
        (Some(req), _) => {
            let call = policy.price(&case.ctx, req, limits);
            (call.result.is_ok(), call.stats)
        }
        (None, Some(subject)) => {
            let call = policy.validate(&case.ctx, subject, limits);
            (call.result.is_ok(), call.stats)
        }
        _ => unreachable!(),
    }
}

//! What a policy call costs: a fresh sandboxed instance per call for each
//! reference policy, the same policy code called natively, and loading a
//! module (cold compile vs precompiled artifact).
//!
//! ```text
//! RUST_BACKTRACE=0 cargo bench -p fluxpay-host --bench policy_call
//! ```
//!
//! The reference components come from `target/policies/`, which the host's
//! build script fills; configs are the `acme` tenant's in
//! `examples/tenants.yaml`, so the numbers are for the quick-start policies.

mod common;

use std::hint::black_box;

use common::{call, cases, module};
use criterion::{Criterion, criterion_group, criterion_main};
use fluxpay_host::policy::{EngineSettings, Limits, PolicyEngine, PolicyKind};

fn fresh_instance_calls(c: &mut Criterion) {
    let engine = PolicyEngine::new(EngineSettings::default()).expect("engine");
    let limits = Limits::default();
    let mut group = c.benchmark_group("fresh_instance_call");
    for case in cases() {
        let policy = engine
            .load_file(&module(case.package), case.kind, &limits)
            .expect("reference policy loads");
        assert!(
            call(&policy, &case, &limits),
            "{} answers its bench request",
            case.name
        );
        group.bench_function(case.name, |b| {
            b.iter(|| black_box(call(&policy, &case, &limits)))
        });
    }
    group.finish();
}

/// A policy's pricing function behind one signature (each has its own config type).
type NativePrice =
    Box<dyn Fn(&fluxpay_policy_sdk::Context, fluxpay_policy_sdk::PricingRequest) -> bool>;

fn native_calls(c: &mut Criterion) {
    use fluxpay_policy_sdk as sdk;
    let mut group = c.benchmark_group("native_call");
    // The same request, in the SDK's types, through the same config parsing
    // the exported function does.
    for case in cases() {
        let ctx: sdk::Context = convert(&case.ctx);
        match case.name {
            "credit" | "subscription" | "metered" => {
                let req: sdk::PricingRequest = convert(case.pricing.as_ref().unwrap());
                // Each policy has its own config type, so each gets its own closure.
                let price: NativePrice = match case.name {
                    "credit" => Box::new(|c, r| {
                        sdk::testing::price(fluxpay_policy_credit::price, c, r).is_ok()
                    }),
                    "subscription" => Box::new(|c, r| {
                        sdk::testing::price(fluxpay_policy_subscription::price, c, r).is_ok()
                    }),
                    _ => Box::new(|c, r| {
                        sdk::testing::price(fluxpay_policy_metered::price, c, r).is_ok()
                    }),
                };
                assert!(price(&ctx, req.clone()), "{} answers natively", case.name);
                group.bench_function(case.name, |b| {
                    b.iter(|| black_box(price(&ctx, req.clone())))
                });
            }
            _ => {
                let subject: sdk::ValidationSubject = convert(case.subject.as_ref().unwrap());
                let f = fluxpay_policy_validation::validate;
                assert!(sdk::testing::validate(f, &ctx, subject.clone()).is_ok());
                group.bench_function(case.name, |b| {
                    b.iter(|| black_box(sdk::testing::validate(f, &ctx, subject.clone()).is_ok()))
                });
            }
        }
    }
    group.finish();
}

/// Host and SDK types are generated from the same WIT with the same serde
/// shape; converting through JSON keeps the bench free of hand-written copies.
fn convert<A: serde::Serialize, B: serde::de::DeserializeOwned>(a: &A) -> B {
    serde_json::from_value(serde_json::to_value(a).unwrap()).unwrap()
}

fn module_load(c: &mut Criterion) {
    let limits = Limits::default();
    let bytes = std::fs::read(module("fluxpay-policy-credit")).unwrap();
    let mut group = c.benchmark_group("module_load");
    group.sample_size(20);
    let cold = PolicyEngine::new(EngineSettings::default()).unwrap();
    group.bench_function("compile", |b| {
        b.iter(|| cold.load(&bytes, PolicyKind::Pricing, &limits).unwrap())
    });
    let dir = tempfile::tempdir().unwrap();
    let warm = PolicyEngine::new(EngineSettings {
        artifact_dir: Some(dir.path().to_path_buf()),
        ..EngineSettings::default()
    })
    .unwrap();
    warm.load(&bytes, PolicyKind::Pricing, &limits).unwrap();
    group.sample_size(100);
    group.bench_function("precompiled_artifact", |b| {
        b.iter(|| warm.load(&bytes, PolicyKind::Pricing, &limits).unwrap())
    });
    group.finish();
    assert_eq!(
        warm.stats().compiled,
        1,
        "the warm engine compiled once and then only loaded artifacts"
    );
}

criterion_group!(benches, fresh_instance_calls, native_calls, module_load);
criterion_main!(benches);

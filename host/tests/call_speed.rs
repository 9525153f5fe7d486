//! A quick look at fresh-instance call latency under the engine settings
//! that matter most (see `EngineSettings`). Not a benchmark (that is
//! `benches/policy_call.rs`): ignored by default, run in release with
//!
//! ```text
//! RUST_BACKTRACE=0 cargo test --release -p fluxpay-host --test call_speed -- --ignored --nocapture
//! ```
//!
//! Compare rows within one run: other load on a 2-core machine moves every
//! figure between runs.

mod hostile;

use std::time::{Duration, Instant};

use fluxpay_host::policy::{EngineSettings, Limits, PolicyEngine, PolicyKind};

use hostile::{credit_use, ctx, fixtures};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

#[test]
#[ignore = "timing probe; run in release with --ignored --nocapture"]
fn fresh_instance_call_latency_by_engine_setting() {
    let variants: Vec<(&str, EngineSettings)> = vec![
        ("defaults", EngineSettings::default()),
        (
            "signals + guard pages",
            EngineSettings {
                signals_based_traps: true,
                ..Default::default()
            },
        ),
        (
            "keep 256K resident",
            EngineSettings {
                memory_keep_resident_bytes: 256 * 1024,
                ..Default::default()
            },
        ),
        (
            "keep 16K resident",
            EngineSettings {
                memory_keep_resident_bytes: 16 * 1024,
                ..Default::default()
            },
        ),
        (
            "no pagemap scan",
            EngineSettings {
                pagemap_scan: false,
                ..Default::default()
            },
        ),
        ("defaults again", EngineSettings::default()),
    ];
    let limits = Limits::default();
    let ctx = ctx("ok");
    let req = credit_use("render", 4);
    for (name, settings) in variants {
        let engine = PolicyEngine::new(settings).unwrap();
        let policy = engine
            .load_file(&fixtures().pricing, PolicyKind::Pricing, &limits)
            .unwrap();
        for _ in 0..2_000 {
            assert!(policy.price(&ctx, &req, &limits).result.is_ok());
        }
        let mut times = Vec::with_capacity(20_000);
        let mut inner = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            let started = Instant::now();
            let call = policy.price(&ctx, &req, &limits);
            times.push(started.elapsed());
            inner.push(call.stats.duration);
        }
        times.sort();
        inner.sort();
        println!(
            "{name:<24} p50 {:>7.2?} p99 {:>7.2?}  (inside: p50 {:>7.2?})",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&inner, 0.5),
        );
    }
}

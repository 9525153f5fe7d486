//! Latency distribution (p50/p99/p99.9) and CPU per call of a fresh-instance
//! policy call, the numbers the policy runtime is held to (target: p50 ≤ 10 µs
//! latency, ≤ 15 µs CPU). Criterion reports means; this reports percentiles.
//!
//! ```text
//! RUST_BACKTRACE=0 cargo bench -p fluxpay-host --bench fresh_call_latency
//! ```
//!
//! CPU is the process's CPU time over the measured loop divided by calls, so
//! it includes the engine's epoch ticker thread and any background work.

mod common;

use std::time::{Duration, Instant};

use common::{call, cases, module};
use fluxpay_host::policy::{EngineSettings, Limits, PolicyEngine};

const WARMUP: usize = 5_000;
const CALLS: usize = 100_000;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects one policy.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let engine = PolicyEngine::new(EngineSettings::default()).expect("engine");
    let limits = Limits::default();
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "policy", "p50 µs", "p99 µs", "p99.9 µs", "mean µs", "CPU µs/call"
    );
    for case in cases() {
        if filter.as_deref().is_some_and(|f| !case.name.contains(f)) {
            continue;
        }
        let policy = engine
            .load_file(&module(case.package), case.kind, &limits)
            .expect("reference policy loads");
        for _ in 0..WARMUP {
            assert!(call(&policy, &case, &limits));
        }
        let mut samples = Vec::with_capacity(CALLS);
        let cpu_before = process_cpu_time();
        let wall_before = Instant::now();
        for _ in 0..CALLS {
            let start = Instant::now();
            let ok = call(&policy, &case, &limits);
            samples.push(start.elapsed());
            assert!(ok);
        }
        let wall = wall_before.elapsed();
        let cpu = process_cpu_time() - cpu_before;
        samples.sort_unstable();
        let pct = |p: f64| micros(samples[((samples.len() - 1) as f64 * p) as usize]);
        println!(
            "{:<14} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>11.2}",
            case.name,
            pct(0.50),
            pct(0.99),
            pct(0.999),
            micros(wall) / CALLS as f64,
            micros(cpu) / CALLS as f64,
        );
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// User + system CPU of the whole process (all threads).
fn process_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

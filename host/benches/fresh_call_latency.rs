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
//! `faults/call` is the process's minor page faults over the loop divided by
//! calls: memory a call touches that the pool did not keep resident.
//!
//! For instruction counts (repeatable on a loaded machine), run the binary
//! under callgrind with fewer calls and take the difference of two runs:
//!
//! ```text
//! FLUXPAY_BENCH_WARMUP=10 FLUXPAY_BENCH_CALLS=1000 RUST_BACKTRACE=0 \
//!   valgrind --tool=callgrind target/release/deps/fresh_call_latency-* credit
//! ```
//!
//! `FLUXPAY_POLICY_DIR` points the bench at another directory of components
//! (to compare guest builds with one host binary).

mod common;

use std::time::{Duration, Instant};

use common::{call, call_stats, cases, module};
use fluxpay_host::policy::{EngineSettings, Limits, PolicyEngine};

const WARMUP: usize = 5_000;
const CALLS: usize = 100_000;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects one policy.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let engine = PolicyEngine::new(EngineSettings::default()).expect("engine");
    let limits = Limits::default();
    let warmup = env_count("FLUXPAY_BENCH_WARMUP", WARMUP);
    let calls = env_count("FLUXPAY_BENCH_CALLS", CALLS).max(1);
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11} {:>9} {:>9}",
        "policy",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "mean µs",
        "CPU µs/call",
        "faults/call",
        "fuel",
        "peak KiB"
    );
    for case in cases() {
        if filter.as_deref().is_some_and(|f| !case.name.contains(f)) {
            continue;
        }
        let policy = engine
            .load_file(&module(case.package), case.kind, &limits)
            .expect("reference policy loads");
        for _ in 0..warmup {
            assert!(call(&policy, &case, &limits));
        }
        let mut samples = Vec::with_capacity(calls);
        let faults_before = minor_faults();
        let cpu_before = process_cpu_time();
        let wall_before = Instant::now();
        for _ in 0..calls {
            let start = Instant::now();
            let ok = call(&policy, &case, &limits);
            samples.push(start.elapsed());
            assert!(ok);
        }
        let wall = wall_before.elapsed();
        let cpu = process_cpu_time() - cpu_before;
        let faults = minor_faults() - faults_before;
        // Fuel is the guest's wasm operator count: repeatable, load-free.
        let (ok, stats) = call_stats(&policy, &case, &limits);
        assert!(ok);
        samples.sort_unstable();
        let pct = |p: f64| micros(samples[((samples.len() - 1) as f64 * p) as usize]);
        println!(
            "{:<14} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>11.2} {:>11.2} {:>9} {:>9}",
            case.name,
            pct(0.50),
            pct(0.99),
            pct(0.999),
            micros(wall) / calls as f64,
            micros(cpu) / calls as f64,
            faults as f64 / calls as f64,
            stats.fuel_used,
            stats.peak_memory_bytes / 1024,
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

/// Minor page faults of the whole process so far.
fn minor_faults() -> i64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage through a valid pointer.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_SELF)");
    usage.ru_minflt
}

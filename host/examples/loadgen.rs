//! Load generator for `POST /api/v1/credits/use` (BENCHMARKS.md,
//! "credits/use end to end").
//!
//! 1. Seeds `--customers` customers (`PUT /api/v1/customers/{id}`) and
//!    grants each `--grant` credits (`POST /api/v1/credits/charge`).
//! 2. Drives `credits/use` over `--concurrency` keep-alive connections (one
//!    request in flight per connection, closed loop) until `--duration`
//!    seconds or `--requests` requests, whichever is given — it always stops
//!    by itself. Every request carries a fresh `Idempotency-Key` and, with a
//!    signing secret, the `X-FluxPay-Timestamp` / `X-FluxPay-Signature`
//!    headers (HMAC-SHA256 over `<ts>.<METHOD>.<path with query>.<body>`).
//!    Customers are picked uniformly, or with `--hot K --hot-percent P`, P %
//!    of the requests go to the first K customers (row-lock contention).
//!    With `--usage-batch N` each request is instead `POST /api/v1/usage`
//!    with N events of `--feature` (as the metric) for one customer, with
//!    random event ids (as client-made UUIDs are), and events/s is printed
//!    too.
//! 3. Prints requests/s, latency p50/p95/p99/max and every non-2xx answer by
//!    HTTP status and envelope code, plus one `RESULT {json}` line for
//!    scripts. Exits 1 when any answer was not 2xx (PAY_001 is allowed only
//!    with `--allow-insufficient`).
//!
//! Loopback only: the URL must point at 127.0.0.1, ::1 or localhost.
//!
//! ```sh
//! cargo run --release -p fluxpay-host --example loadgen -- \
//!   --url http://127.0.0.1:8080 --key fp_bench_0123456789abcdef \
//!   --secret bench-secret --customers 10000 --concurrency 32 --duration 20
//! ```
//! Every flag has an environment fallback (`LOADGEN_<FLAG>`, e.g.
//! `LOADGEN_SECRET`), so a secret need not appear in a process list.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

const USE_PATH: &str = "/api/v1/credits/use";
const USAGE_PATH: &str = "/api/v1/usage";
const CHARGE_PATH: &str = "/api/v1/credits/charge";

#[derive(Clone, Debug)]
struct Args {
    url: String,
    key: String,
    secret: Option<String>,
    customers: u64,
    prefix: String,
    grant: i64,
    feature: String,
    units: i64,
    concurrency: usize,
    duration: Option<f64>,
    requests: Option<u64>,
    warmup: f64,
    hot: u64,
    hot_percent: u64,
    threads: usize,
    seed_only: bool,
    skip_seed: bool,
    allow_insufficient: bool,
    usage_batch: u64,
}

const USAGE: &str = "loadgen --key K [--secret S] [--url http://127.0.0.1:8080] \
[--customers 10000] [--prefix ID] [--grant CREDITS] [--feature api-call] [--units 1] \
[--concurrency 32] (--duration SECONDS | --requests N) [--warmup SECONDS] \
[--hot K --hot-percent P] [--threads 1] [--seed-only | --skip-seed] [--allow-insufficient] \
[--usage-batch EVENTS]";

fn parse_args() -> Result<Args, String> {
    let env = |name: &str| std::env::var(format!("LOADGEN_{name}")).ok();
    let mut flags: BTreeMap<String, String> = BTreeMap::new();
    for name in [
        "URL",
        "KEY",
        "SECRET",
        "CUSTOMERS",
        "PREFIX",
        "GRANT",
        "FEATURE",
        "UNITS",
        "CONCURRENCY",
        "DURATION",
        "REQUESTS",
        "WARMUP",
        "HOT",
        "HOT_PERCENT",
        "THREADS",
        "USAGE_BATCH",
    ] {
        if let Some(value) = env(name) {
            flags.insert(name.to_lowercase().replace('_', "-"), value);
        }
    }
    let mut switches: Vec<String> = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(name) = flag.strip_prefix("--") else {
            return Err(format!("unexpected argument {flag}\n{USAGE}"));
        };
        match name {
            "help" => return Err(USAGE.into()),
            "seed-only" | "skip-seed" | "allow-insufficient" => switches.push(name.into()),
            _ => {
                let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                flags.insert(name.into(), value);
            }
        }
    }
    fn num<T: std::str::FromStr>(
        flags: &mut BTreeMap<String, String>,
        name: &str,
        default: Option<T>,
    ) -> Result<Option<T>, String> {
        match flags.remove(name) {
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("--{name}: `{v}` is not a number")),
            None => Ok(default),
        }
    }
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let args = Args {
        url: flags
            .remove("url")
            .unwrap_or_else(|| "http://127.0.0.1:8080".into())
            .trim_end_matches('/')
            .to_owned(),
        key: flags.remove("key").ok_or("--key is required")?,
        secret: flags.remove("secret").filter(|s| !s.is_empty()),
        customers: num(&mut flags, "customers", Some(10_000))?.unwrap_or(1),
        prefix: flags
            .remove("prefix")
            .unwrap_or_else(|| format!("lg{run_id}")),
        grant: num(&mut flags, "grant", Some(1_000_000_000))?.unwrap_or(1),
        feature: flags.remove("feature").unwrap_or_else(|| "api-call".into()),
        units: num(&mut flags, "units", Some(1))?.unwrap_or(1),
        concurrency: num(&mut flags, "concurrency", Some(32))?.unwrap_or(1),
        duration: num(&mut flags, "duration", None)?,
        requests: num(&mut flags, "requests", None)?,
        warmup: num(&mut flags, "warmup", Some(0.0))?.unwrap_or(0.0),
        hot: num(&mut flags, "hot", Some(0))?.unwrap_or(0),
        hot_percent: num(&mut flags, "hot-percent", Some(100))?.unwrap_or(100),
        threads: num(&mut flags, "threads", Some(1))?.unwrap_or(1),
        seed_only: switches.iter().any(|s| s == "seed-only"),
        skip_seed: switches.iter().any(|s| s == "skip-seed"),
        allow_insufficient: switches.iter().any(|s| s == "allow-insufficient"),
        usage_batch: num(&mut flags, "usage-batch", Some(0))?.unwrap_or(0),
    };
    if let Some(unknown) = flags.keys().next() {
        return Err(format!("unknown flag --{unknown}\n{USAGE}"));
    }
    let host = args
        .url
        .strip_prefix("http://")
        .ok_or("--url must be http://127.0.0.1:<port> (loopback only)")?;
    let host = host.split('/').next().unwrap_or_default();
    let loopback = ["127.0.0.1:", "[::1]:", "localhost:"]
        .iter()
        .any(|p| host.starts_with(p))
        || ["127.0.0.1", "[::1]", "localhost"].contains(&host);
    if !loopback {
        return Err(format!("--url {}: loopback only (127.0.0.1)", args.url));
    }
    if args.customers == 0 || args.concurrency == 0 || args.units <= 0 || args.threads == 0 {
        return Err("--customers, --concurrency, --units and --threads must be > 0".into());
    }
    if !args.seed_only && args.duration.is_none() && args.requests.is_none() {
        return Err(format!(
            "give --duration SECONDS or --requests N (the run is bounded)\n{USAGE}"
        ));
    }
    if args.hot > args.customers || args.hot_percent > 100 {
        return Err("--hot must be ≤ --customers and --hot-percent ≤ 100".into());
    }
    Ok(args)
}

fn unix_seconds() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        .to_string()
}

/// `v1=<lower-case hex HMAC-SHA256(secret, "<ts>.<METHOD>.<path>.<body>")>`.
fn sign(secret: &[u8], ts: &str, method: &str, path: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(method.as_bytes());
    mac.update(b".");
    mac.update(path.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The outcome of one request: HTTP status (0 = transport error) and, for a
/// non-2xx answer, the envelope code.
struct Outcome {
    status: u16,
    code: Option<String>,
}

async fn send(
    client: &reqwest::Client,
    args: &Args,
    method: reqwest::Method,
    path: &str,
    body: String,
    idempotency_key: Option<&str>,
) -> Outcome {
    let mut request = client
        .request(method.clone(), format!("{}{path}", args.url))
        .header("authorization", format!("Bearer {}", args.key))
        .header("content-type", "application/json");
    if let Some(secret) = &args.secret {
        let ts = unix_seconds();
        let signature = sign(
            secret.as_bytes(),
            &ts,
            method.as_str(),
            path,
            body.as_bytes(),
        );
        request = request
            .header("x-fluxpay-timestamp", ts)
            .header("x-fluxpay-signature", signature);
    }
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    match request.body(body).send().await {
        Err(err) => Outcome {
            status: 0,
            code: Some(format!("transport: {}", error_kind(&err))),
        },
        Ok(response) => {
            let status = response.status().as_u16();
            // Read the whole body either way, so the connection is reused.
            let bytes = response.bytes().await.unwrap_or_default();
            let code = if (200..300).contains(&status) {
                None
            } else {
                Some(
                    serde_json::from_slice::<serde_json::Value>(&bytes)
                        .ok()
                        .and_then(|v| v["code"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| "-".into()),
                )
            };
            Outcome { status, code }
        }
    }
}

fn error_kind(err: &reqwest::Error) -> &'static str {
    if err.is_connect() {
        "connect"
    } else if err.is_timeout() {
        "timeout"
    } else if err.is_body() || err.is_decode() {
        "body"
    } else {
        "request"
    }
}

fn customer_id(args: &Args, index: u64) -> String {
    format!("{}-{index}", args.prefix)
}

/// Creates the customers and grants their credits, `concurrency` at a time.
async fn seed(client: &reqwest::Client, args: &Arc<Args>) -> Result<(), String> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.min(64) {
        let (client, args, next) = (client.clone(), args.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.customers {
                    return Ok::<(), String>(());
                }
                let id = customer_id(&args, i);
                let put = send(
                    &client,
                    &args,
                    reqwest::Method::PUT,
                    &format!("/api/v1/customers/{id}"),
                    r#"{"attributes":{"tier":"standard"}}"#.into(),
                    None,
                )
                .await;
                if !(200..300).contains(&put.status) {
                    return Err(format!("PUT customer {id}: {} {:?}", put.status, put.code));
                }
                let grant = format!(
                    r#"{{"customerId":"{id}","credits":{},"reason":"load test seed"}}"#,
                    args.grant
                );
                let charged = send(
                    &client,
                    &args,
                    reqwest::Method::POST,
                    CHARGE_PATH,
                    grant,
                    Some(&format!("seed-{id}")),
                )
                .await;
                if !(200..300).contains(&charged.status) {
                    return Err(format!(
                        "charge {id}: {} {:?}",
                        charged.status, charged.code
                    ));
                }
            }
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    eprintln!(
        "seeded {} customers ({} credits each) in {:.1} s",
        args.customers,
        args.grant,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A tiny xorshift generator: picking customers must cost nothing.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A usage batch of `--usage-batch` events for one customer, each with a
/// random id, stamped a second ago.
fn usage_body(args: &Args, customer: u64, rng: &mut Rng) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let customer = customer_id(args, customer);
    let mut body = String::with_capacity(args.usage_batch as usize * 120 + 16);
    body.push_str(r#"{"events":["#);
    for i in 0..args.usage_batch {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"eventId":"{:016x}{:016x}","customerId":"{customer}","metric":"{}","quantity":{},"timestamp":{}}}"#,
            rng.next(),
            rng.next(),
            args.feature,
            args.units,
            now - 1000
        ));
    }
    body.push_str("]}");
    body
}

#[derive(Default)]
struct WorkerStats {
    /// Latencies in microseconds of measured requests (after the warm-up).
    latencies: Vec<u32>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    warmup_requests: u64,
}

async fn drive(
    client: reqwest::Client,
    args: Arc<Args>,
    worker: usize,
    shared: Arc<Shared>,
) -> WorkerStats {
    let mut stats = WorkerStats {
        latencies: Vec::with_capacity(1 << 16),
        ..Default::default()
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((worker as u64 + 1) * 0x1000_0001));
    loop {
        let now = Instant::now();
        if shared.deadline.is_some_and(|d| now >= d) {
            break;
        }
        if let Some(limit) = args.requests
            && shared.issued.fetch_add(1, Ordering::Relaxed) >= limit
        {
            break;
        }
        let r = rng.next();
        let index = if args.hot > 0 && r % 100 < args.hot_percent {
            (r >> 8) % args.hot
        } else {
            (r >> 8) % args.customers
        };
        let n = shared.sequence.fetch_add(1, Ordering::Relaxed);
        let (path, body) = if args.usage_batch > 0 {
            (USAGE_PATH, usage_body(&args, index, &mut rng))
        } else {
            let body = format!(
                r#"{{"customerId":"{}","feature":"{}","units":{},"metadata":{{"request-id":"{}-{:x}-{n}"}}}}"#,
                customer_id(&args, index),
                args.feature,
                args.units,
                args.prefix,
                shared.run
            );
            (USE_PATH, body)
        };
        let key = format!("{}-{:x}-use-{n}", args.prefix, shared.run);
        let at = Instant::now();
        let outcome = send(
            &client,
            &args,
            reqwest::Method::POST,
            path,
            body,
            Some(&key),
        )
        .await;
        let done = Instant::now();
        if done < shared.measure_from {
            stats.warmup_requests += 1;
            continue;
        }
        let micros = u32::try_from(done.duration_since(at).as_micros()).unwrap_or(u32::MAX);
        stats.latencies.push(micros);
        match outcome.code {
            None => stats.ok += 1,
            Some(code) => {
                *stats
                    .errors
                    .entry(format!("{} {code}", outcome.status))
                    .or_default() += 1
            }
        }
    }
    stats
}

struct Shared {
    /// Distinguishes this run's Idempotency-Keys from earlier runs' on the
    /// same customers (a reused key with another body would be PAY_003).
    run: u128,
    measure_from: Instant,
    deadline: Option<Instant>,
    issued: AtomicU64,
    sequence: AtomicU64,
}

fn main() {
    let args = match parse_args() {
        Ok(args) => Arc::new(args),
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = runtime.block_on(run(args));
    std::process::exit(code);
}

async fn run(args: Arc<Args>) -> i32 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency.max(64))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    if !args.skip_seed
        && let Err(message) = seed(&client, &args).await
    {
        eprintln!("seeding failed: {message}");
        return 1;
    }
    if args.seed_only {
        return 0;
    }

    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(args.warmup);
    let shared = Arc::new(Shared {
        run: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
        measure_from,
        deadline: args
            .duration
            .map(|d| measure_from + Duration::from_secs_f64(d)),
        issued: AtomicU64::new(0),
        sequence: AtomicU64::new(0),
    });
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|worker| tokio::spawn(drive(client.clone(), args.clone(), worker, shared.clone())))
        .collect();
    let mut latencies: Vec<u32> = Vec::new();
    let mut ok = 0u64;
    let mut warmup_requests = 0u64;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let stats = task.await.expect("a worker");
        latencies.extend(stats.latencies);
        ok += stats.ok;
        warmup_requests += stats.warmup_requests;
        for (code, n) in stats.errors {
            *errors.entry(code).or_default() += n;
        }
    }
    let finished = Instant::now();
    let elapsed = finished
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-9);
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len());
        f64::from(latencies[rank - 1]) / 1000.0
    };
    let total = latencies.len() as u64;
    let rps = total as f64 / elapsed;
    let (p50, p95, p99, max) = (pct(0.50), pct(0.95), pct(0.99), pct(1.0));
    let mean = if total == 0 {
        0.0
    } else {
        latencies.iter().map(|&l| f64::from(l)).sum::<f64>() / total as f64 / 1000.0
    };
    let events_per_second = rps * args.usage_batch as f64;
    println!(
        "{}: {total} requests in {elapsed:.2} s ({warmup_requests} warm-up requests not counted), \
         concurrency {}, customers {} (hot {} at {} %)",
        if args.usage_batch > 0 {
            "usage"
        } else {
            "credits/use"
        },
        args.concurrency,
        args.customers,
        args.hot,
        if args.hot > 0 { args.hot_percent } else { 0 }
    );
    println!("  throughput {rps:.0} req/s; {ok} answered 2xx");
    if args.usage_batch > 0 {
        println!(
            "  events: {events_per_second:.0} events/s in batches of {}",
            args.usage_batch
        );
    }
    println!(
        "  latency ms: mean {mean:.2}  p50 {p50:.2}  p95 {p95:.2}  p99 {p99:.2}  max {max:.2}"
    );
    if errors.is_empty() {
        println!("  non-2xx: none");
    } else {
        for (code, n) in &errors {
            println!("  non-2xx: {code} × {n}");
        }
    }
    let result = serde_json::json!({
        "requests": total,
        "seconds": elapsed,
        "rps": rps,
        "ok": ok,
        "concurrency": args.concurrency,
        "customers": args.customers,
        "hot": args.hot,
        "hotPercent": if args.hot > 0 { args.hot_percent } else { 0 },
        "latencyMs": { "mean": mean, "p50": p50, "p95": p95, "p99": p99, "max": max },
        "errors": errors,
        "usageBatch": args.usage_batch,
        "eventsPerSecond": events_per_second,
    });
    println!("RESULT {result}");
    let unexpected = errors
        .keys()
        .any(|code| !(args.allow_insufficient && code.ends_with("PAY_001")));
    i32::from(unexpected)
}

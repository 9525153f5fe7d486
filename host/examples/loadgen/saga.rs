//! `--saga`: every call of one order per iteration, from its creation to
//! the service's `completed` callback, and the simulator's books.

use super::*;

/// The calls of one order, in the order they are made: name, path
/// (the checkout's is the simulator's) and the one status expected.
const CALLS: [(&str, &str, u16); 4] = [
    ("orders", ORDERS_PATH, 201),
    ("checkout", "/v1/checkout", 200),
    ("confirm", CONFIRM_PATH, 201),
    ("completed", COMPLETED_PATH, 200),
];
const ORDER: usize = 0;
const CHECKOUT: usize = 1;
const CONFIRM: usize = 2;
const COMPLETED: usize = 3;

#[derive(Default)]
struct Stats {
    /// Per call (as [`CALLS`]), latencies (µs) of calls that ended
    /// after the warm-up.
    latencies: [Vec<u32>; 4],
    /// Orders completed after the warm-up, and during it.
    completed: u64,
    warmup_completed: u64,
    /// Confirms answered `201`, warm-up included (the simulator's
    /// approvals are counted over the same span).
    confirmed: u64,
    /// `<call> <status> <code>` → count.
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        for (all, some) in self.latencies.iter_mut().zip(other.latencies) {
            all.extend(some);
        }
        self.completed += other.completed;
        self.warmup_completed += other.warmup_completed;
        self.confirmed += other.confirmed;
        for (error, n) in other.errors {
            *self.errors.entry(error).or_default() += n;
        }
    }
}

/// Why an order stopped short: the call, its status (0 = transport)
/// and the envelope code or what was missing.
struct Failed {
    call: usize,
    status: u16,
    detail: String,
}

impl Failed {
    fn key(&self) -> String {
        format!("{} {} {}", CALLS[self.call].0, self.status, self.detail)
    }
}

/// Makes call `call` and records its latency; the answer's JSON when
/// its status is the one expected.
async fn call(
    request: reqwest::RequestBuilder,
    call: usize,
    measure_from: Instant,
    stats: &mut Stats,
) -> Result<serde_json::Value, Failed> {
    let at = Instant::now();
    let response = request.send().await.map_err(|err| Failed {
        call,
        status: 0,
        detail: format!("transport: {}", error_kind(&err)),
    })?;
    let status = response.status().as_u16();
    // Read the whole body either way, so the connection is reused.
    let bytes = response.bytes().await.unwrap_or_default();
    let done = Instant::now();
    if done >= measure_from {
        stats.latencies[call].push(micros(done.duration_since(at)));
    }
    let json = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default();
    if status == CALLS[call].2 {
        Ok(json)
    } else {
        Err(Failed {
            call,
            status,
            detail: json["code"].as_str().unwrap_or("-").to_owned(),
        })
    }
}

fn missing(call: usize, what: &str) -> Failed {
    Failed {
        call,
        status: CALLS[call].2,
        detail: format!("no {what} in the answer"),
    }
}

/// All calls of one order for customer `customer`, its idempotency
/// keys made from `key`.
async fn one_order(
    client: &reqwest::Client,
    args: &Args,
    customer: u64,
    key: &str,
    measure_from: Instant,
    stats: &mut Stats,
) -> Result<(), Failed> {
    let post = |path: &str, body: String, suffix: Option<&str>| {
        let key = suffix.map(|suffix| format!("{key}-{suffix}"));
        host_request(
            client,
            args,
            reqwest::Method::POST,
            path,
            body,
            key.as_deref(),
        )
    };
    let body = format!(
        r#"{{"customerId":"{}","items":[{{"sku":"{}","quantity":{}}}]}}"#,
        customer_id(args, customer),
        args.sku,
        args.units
    );
    let order = call(
        post(ORDERS_PATH, body, Some("order")),
        ORDER,
        measure_from,
        stats,
    )
    .await?;
    let order = &order["result"];
    let (Some(order_id), Some(amount)) = (order["orderId"].as_str(), order["total"].as_i64())
    else {
        return Err(missing(ORDER, "orderId or total"));
    };

    let sim = args.pg_sim_url.as_deref().unwrap_or_default();
    let checkout = client
        .post(format!("{sim}{}", CALLS[CHECKOUT].1))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"orderId":"{order_id}","amount":{amount},"currency":"{}"}}"#,
            order["currency"].as_str().unwrap_or("USD")
        ));
    let payment = call(checkout, CHECKOUT, measure_from, stats).await?;
    let payment_key = payment["paymentKey"]
        .as_str()
        .ok_or_else(|| missing(CHECKOUT, "paymentKey"))?;

    let confirm =
        format!(r#"{{"orderId":"{order_id}","paymentKey":"{payment_key}","amount":{amount}}}"#);
    call(
        post(CONFIRM_PATH, confirm, Some("pay")),
        CONFIRM,
        measure_from,
        stats,
    )
    .await?;
    stats.confirmed += 1;

    // The tenant's service, done fulfilling. No Idempotency-Key: the
    // callback is safe to repeat by itself (a repeat answers with the
    // order as it stands), and a key would cost the host a stored
    // answer per order.
    let done = format!(r#"{{"orderId":"{order_id}"}}"#);
    let completed = call(
        post(COMPLETED_PATH, done, None),
        COMPLETED,
        measure_from,
        stats,
    )
    .await?;
    match completed["result"]["status"].as_str() {
        Some("COMPLETED") => {}
        other => {
            return Err(Failed {
                call: COMPLETED,
                status: CALLS[COMPLETED].2,
                detail: format!("order {other:?}, not COMPLETED"),
            });
        }
    }
    if Instant::now() >= measure_from {
        stats.completed += 1;
    } else {
        stats.warmup_completed += 1;
    }
    Ok(())
}

async fn drive(
    client: reqwest::Client,
    args: Arc<Args>,
    worker: usize,
    shared: Arc<Shared>,
) -> Stats {
    let mut stats = Stats::default();
    for latencies in &mut stats.latencies {
        latencies.reserve(1 << 14);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((worker as u64 + 1) * 0x1000_0001));
    loop {
        if shared.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if let Some(limit) = args.requests
            && shared.issued.fetch_add(1, Ordering::Relaxed) >= limit
        {
            break;
        }
        let n = shared.sequence.fetch_add(1, Ordering::Relaxed);
        let key = format!("{}-{:x}-saga-{n}", args.prefix, shared.run);
        let customer = pick_customer(&args, &mut rng);
        let outcome = one_order(
            &client,
            &args,
            customer,
            &key,
            shared.measure_from,
            &mut stats,
        )
        .await;
        if let Err(failed) = outcome {
            *stats.errors.entry(failed.key()).or_default() += 1;
            if failed.status == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    stats
}

/// The simulator's books: approvals, approved and given-back amounts,
/// captures.
async fn ledger(client: &reqwest::Client, args: &Args) -> Result<[i64; 4], String> {
    let sim = args.pg_sim_url.as_deref().unwrap_or_default();
    let read = async {
        let response = client.get(format!("{sim}/sim/v1/ledger")).send().await?;
        response
            .error_for_status()?
            .json::<serde_json::Value>()
            .await
    };
    let ledger = read
        .await
        .map_err(|err| format!("the simulator's ledger: {err}"))?;
    let field = |name: &str| {
        ledger[name]
            .as_i64()
            .ok_or_else(|| format!("the simulator's ledger has no {name}"))
    };
    Ok([
        field("approvals")?,
        field("approvedAmount")?,
        field("cancelledAmount")?,
        field("captures")?,
    ])
}

pub async fn run(client: &reqwest::Client, args: &Arc<Args>) -> i32 {
    let before = match ledger(client, args).await {
        Ok(books) => books,
        Err(message) => {
            eprintln!("{message}");
            return 1;
        }
    };
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
        orders: Vec::new(),
        next_order: AtomicUsize::new(0),
    });
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|worker| tokio::spawn(drive(client.clone(), args.clone(), worker, shared.clone())))
        .collect();
    let mut total = Stats::default();
    for task in tasks {
        total.merge(task.await.expect("a worker"));
    }
    let elapsed = Instant::now()
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-9);
    let rate = total.completed as f64 / elapsed;
    println!(
        "saga: {} orders completed in {elapsed:.2} s ({} during the warm-up not counted), \
         concurrency {}, customers {}",
        total.completed, total.warmup_completed, args.concurrency, args.customers
    );
    println!("  throughput {rate:.0} completed orders/s");
    let mut calls = serde_json::Map::new();
    for ((name, _, status), latencies) in CALLS.iter().zip(total.latencies) {
        let count = latencies.len();
        let summary = Summary::of(latencies);
        let whose = if *name == "checkout" {
            ", simulator"
        } else {
            ""
        };
        println!(
            "  {name:<9} ({status}{whose}) ms: {}  [{count} calls]",
            summary.line()
        );
        let mut json = summary.json();
        json["count"] = count.into();
        calls.insert((*name).to_owned(), json);
    }
    let after = match ledger(client, args).await {
        Ok(books) => books,
        Err(message) => {
            eprintln!("{message}");
            return 1;
        }
    };
    let [approvals, approved, cancelled, captures] = [0, 1, 2, 3].map(|i| after[i] - before[i]);
    let completed_all = total.completed + total.warmup_completed;
    let books_equal = approvals == total.confirmed as i64
        && approvals == completed_all as i64
        && captures == completed_all as i64
        && cancelled == 0;
    println!(
        "  PG simulator: {approvals} approvals ({approved} approved, {cancelled} given back), \
         {captures} captures during the run; {} confirms answered 201, {completed_all} orders \
         completed (warm-up included): {}",
        total.confirmed,
        if books_equal { "equal" } else { "DIFFER" }
    );
    if total.errors.is_empty() {
        println!("  unexpected answers: none");
    } else {
        for (error, n) in &total.errors {
            println!("  unexpected answer: {error} × {n}");
        }
    }
    let result = serde_json::json!({
        "mode": "saga",
        "completed": total.completed,
        "seconds": elapsed,
        "completedPerSecond": rate,
        "concurrency": args.concurrency,
        "customers": args.customers,
        "callsMs": calls,
        "errors": total.errors,
        "books": {
            "simApprovals": approvals,
            "approvedAmount": approved,
            "cancelledAmount": cancelled,
            "confirmed": total.confirmed,
            "completedAll": completed_all,
            "equal": books_equal,
        },
    });
    println!("RESULT {result}");
    i32::from(!total.errors.is_empty() || !books_equal)
}

//! `--payments`: preparing orders (order + checkout) and handing them to
//! the confirm loop, and the simulator's books.

use super::*;

/// An order checked out at the PG, ready to be confirmed.
pub struct Prepared {
    pub order_id: String,
    pub payment_key: String,
    pub amount: i64,
}

impl Prepared {
    pub fn confirm_body(&self) -> String {
        format!(
            r#"{{"orderId":"{}","paymentKey":"{}","amount":{}}}"#,
            self.order_id, self.payment_key, self.amount
        )
    }
}

/// Orders made, and their order-create and checkout latencies (µs).
#[derive(Default)]
pub struct PrepStats {
    pub count: u64,
    pub order_us: Vec<u32>,
    pub checkout_us: Vec<u32>,
}

impl PrepStats {
    pub fn merge(&mut self, other: PrepStats) {
        self.count += other.count;
        self.order_us.extend(other.order_us);
        self.checkout_us.extend(other.checkout_us);
    }

    /// `order create ms p50 … ; checkout ms p50 …`.
    pub fn line(&self) -> String {
        format!(
            "order create ms {}; checkout ms {}",
            Summary::of(self.order_us.clone()).line(),
            Summary::of(self.checkout_us.clone()).line()
        )
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "orders": self.count,
            "orderCreateMs": Summary::of(self.order_us.clone()).json(),
            "checkoutMs": Summary::of(self.checkout_us.clone()).json(),
        })
    }
}

/// The JSON of a settled answer, or `<status> <code>`.
async fn answer(request: reqwest::RequestBuilder) -> Result<serde_json::Value, String> {
    let response = request
        .send()
        .await
        .map_err(|err| format!("transport: {}", error_kind(&err)))?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap_or_default();
    let json = serde_json::from_slice::<serde_json::Value>(&bytes).unwrap_or_default();
    if settled(status) {
        Ok(json)
    } else {
        Err(format!("{status} {}", json["code"].as_str().unwrap_or("-")))
    }
}

/// One order for seeded customer `customer` (created with
/// Idempotency-Key `key`), then its checkout at the simulator.
async fn make_one(
    client: &reqwest::Client,
    args: &Args,
    customer: u64,
    key: &str,
    stats: &mut PrepStats,
) -> Result<Prepared, String> {
    let body = format!(
        r#"{{"customerId":"{}","items":[{{"sku":"{}","quantity":{}}}]}}"#,
        customer_id(args, customer),
        args.sku,
        args.units
    );
    let at = Instant::now();
    let request = host_request(
        client,
        args,
        reqwest::Method::POST,
        ORDERS_PATH,
        body,
        Some(key),
    );
    let order = answer(request)
        .await
        .map_err(|e| format!("order create {e}"))?;
    stats.order_us.push(micros(at.elapsed()));
    let order = &order["result"];
    let (Some(order_id), Some(amount)) = (order["orderId"].as_str(), order["total"].as_i64())
    else {
        return Err("order create: no orderId or total in the answer".into());
    };
    let checkout = format!(
        r#"{{"orderId":"{order_id}","amount":{amount},"currency":"{}"}}"#,
        order["currency"].as_str().unwrap_or("USD")
    );
    let sim = args.pg_sim_url.as_deref().unwrap_or_default();
    let at = Instant::now();
    let request = client
        .post(format!("{sim}/v1/checkout"))
        .header("content-type", "application/json")
        .body(checkout);
    let payment = answer(request).await.map_err(|e| format!("checkout {e}"))?;
    stats.checkout_us.push(micros(at.elapsed()));
    let payment_key = payment["paymentKey"]
        .as_str()
        .ok_or("checkout: no paymentKey in the answer")?;
    stats.count += 1;
    Ok(Prepared {
        order_id: order_id.to_owned(),
        payment_key: payment_key.to_owned(),
        amount,
    })
}

/// `--orders` orders, made `concurrency` (at most 64) at a time, for
/// the customers in turn.
pub async fn prepare(client: &reqwest::Client, args: &Arc<Args>) -> Result<Vec<Prepared>, String> {
    let started = Instant::now();
    let run = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.min(64) {
        let (client, args, next) = (client.clone(), args.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut made = Vec::new();
            let mut stats = PrepStats::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.orders {
                    return Ok::<_, String>((made, stats));
                }
                let key = format!("{}-{run:x}-order-{i}", args.prefix);
                made.push(make_one(&client, &args, i % args.customers, &key, &mut stats).await?);
            }
        }));
    }
    let mut orders = Vec::with_capacity(args.orders as usize);
    let mut stats = PrepStats::default();
    for task in tasks {
        let (made, made_stats) = task.await.map_err(|e| e.to_string())??;
        orders.extend(made);
        stats.merge(made_stats);
    }
    eprintln!(
        "prepared {} orders (order + checkout) in {:.1} s: {}",
        orders.len(),
        started.elapsed().as_secs_f64(),
        stats.line()
    );
    Ok(orders)
}

/// The confirm body of the next prepared order, or of one made now
/// when they have run out.
pub async fn next_order(
    client: &reqwest::Client,
    args: &Args,
    shared: &Shared,
    rng: &mut Rng,
    n: u64,
    stats: &mut PrepStats,
) -> Result<String, String> {
    let i = shared.next_order.fetch_add(1, Ordering::Relaxed);
    if let Some(order) = shared.orders.get(i) {
        return Ok(order.confirm_body());
    }
    let key = format!("{}-{:x}-order-{n}", args.prefix, shared.run);
    let customer = pick_customer(args, rng);
    make_one(client, args, customer, &key, stats)
        .await
        .map(|order| order.confirm_body())
}

/// Writes `orderId paymentKey amount` lines.
pub fn write(path: &str, orders: &[Prepared]) -> std::io::Result<()> {
    let mut text = String::with_capacity(orders.len() * 64);
    for o in orders {
        text.push_str(&format!("{} {} {}\n", o.order_id, o.payment_key, o.amount));
    }
    std::fs::write(path, text)
}

/// Reads what [`write`] wrote.
pub fn read(path: &str) -> Result<Vec<Prepared>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let mut fields = line.split(' ');
            match (fields.next(), fields.next(), fields.next().map(str::parse)) {
                (Some(order_id), Some(payment_key), Some(Ok(amount))) => Ok(Prepared {
                    order_id: order_id.to_owned(),
                    payment_key: payment_key.to_owned(),
                    amount,
                }),
                _ => Err(format!("{path}:{}: not `orderId paymentKey amount`", i + 1)),
            }
        })
        .collect()
}

/// Prints the orders used and compares the simulator's approvals since
/// `approvals_before` with the `confirmed` payments (every confirm has
/// been answered, so its books are final): the `payments` part of
/// `RESULT`, and whether they differ.
pub async fn report(
    client: &reqwest::Client,
    args: &Args,
    approvals_before: u64,
    confirmed: u64,
    prepared: usize,
    inline: &PrepStats,
) -> Result<(serde_json::Value, bool), String> {
    let approvals = approvals(client, args)
        .await?
        .saturating_sub(approvals_before);
    let differ = approvals != confirmed;
    println!(
        "  orders: {prepared} prepared, {} made inside the loop (prepared ones ran out){}",
        inline.count,
        if inline.count > 0 {
            format!(": {}", inline.line())
        } else {
            String::new()
        }
    );
    println!(
        "  PG simulator: {approvals} approvals during the run, {confirmed} confirms answered \
         201 (warm-up included): {}",
        if differ { "DIFFER" } else { "equal" }
    );
    let json = serde_json::json!({
        "prepared": prepared,
        "inline": inline.json(),
        "simApprovals": approvals,
        "confirmed": confirmed,
    });
    Ok((json, differ))
}

/// The simulator's approvals so far (`GET /sim/v1/ledger`).
pub async fn approvals(client: &reqwest::Client, args: &Args) -> Result<u64, String> {
    let sim = args.pg_sim_url.as_deref().unwrap_or_default();
    let ledger = answer(client.get(format!("{sim}/sim/v1/ledger")))
        .await
        .map_err(|e| format!("the simulator's ledger: {e}"))?;
    ledger["approvals"]
        .as_u64()
        .ok_or_else(|| "the simulator's ledger has no approvals".into())
}

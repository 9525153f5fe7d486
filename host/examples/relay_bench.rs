//! Relay throughput: a pre-filled outbox published to a broker by the
//! relay `serve` runs (`events::kafka`), from the first round until every
//! event is acknowledged. `bench/relay.sh` runs it against tansu on SQLite
//! and PostgreSQL.
//!
//! ```text
//! relay_bench --brokers 127.0.0.1:9092 --database sqlite:///tmp/relay.db \
//!     [--events 100000] [--batch 500] [--customers 1000] [--partitions 6]
//! ```
//!
//! The outbox is filled through the store's own write path (1,000 events
//! per transaction; ~250-byte JSON data, five event types, the customers
//! round-robin), then the clock starts.
//!
//! With `--sink webhook` the same outbox goes to a tenant webhook instead
//! (`events::webhook`, `--concurrency` customers at once, default 8): one
//! signed POST per event to a receiver in this process on 127.0.0.1 that
//! answers 204 (it shares the machine's cores with the relay, as the
//! broker does).
//!
//! With `--lag-seconds S --rate R` it measures lag instead: the relay runs
//! as `serve` runs it (`events::kafka::run`), a writer commits R events a
//! second for S seconds, each in a transaction of its own through the same
//! write path, and a consumer notes for every record how long after its
//! event's time (taken just before the commit) it arrived: p50, p95, p99
//! and the maximum.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use fluxpay_host::app::{App, TenantDirectory, system_clock};
use fluxpay_host::events::kafka::KafkaRelay;
use fluxpay_host::events::webhook::WebhookRelay;
use fluxpay_host::policy::registry::Registry;
use fluxpay_host::store::{Journal, OutboxEntry, Store, Transactions, TxOps};

const TYPES: [&str; 5] = [
    "credit.deducted",
    "credit.granted",
    "order.created",
    "order.paid",
    "payment.approved",
];

/// The webhook's signing secret (32 bytes).
const SECRET: &str = "whsec_Zmx1eHBheS10ZXN0LXdlYmhvb2stc2VjcmV0LTMyYiE=";

/// Requests the receiver answered.
static RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A receiver on 127.0.0.1 that answers every POST with 204; its URL.
async fn receiver() -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(|body: axum::body::Bytes| async move {
            if !body.is_empty() {
                RECEIVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            axum::http::StatusCode::NO_CONTENT
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}

fn arg(args: &HashMap<String, String>, name: &str, default: &str) -> String {
    args.get(name)
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args: HashMap<String, String> = raw
        .chunks(2)
        .filter_map(|pair| match pair {
            [name, value] => Some((name.trim_start_matches("--").to_owned(), value.clone())),
            _ => None,
        })
        .collect();
    let brokers = arg(&args, "brokers", "127.0.0.1:9092");
    let database = arg(&args, "database", "sqlite:///tmp/fluxpay-relay-bench.db");
    let events: usize = arg(&args, "events", "100000").parse()?;
    let batch: usize = arg(&args, "batch", "500").parse()?;
    let customers: usize = arg(&args, "customers", "1000").parse()?;
    let partitions: usize = arg(&args, "partitions", "6").parse()?;
    let webhook = arg(&args, "sink", "kafka") == "webhook";
    let concurrency: usize = arg(&args, "concurrency", "8").parse()?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let yaml = if webhook {
        let receiver = receiver().await?;
        format!(
            "database: {{ url: \"{database}\" }}\n\
             webhooks: {{ batch: {batch} }}\n\
             tenants: {{ globex: {{ dev: true, events: {{ webhook: {{ url: \"{receiver}\", \
               secret_env: BENCH_WEBHOOK_SECRET, concurrency: {concurrency} }} }} }} }}\n"
        )
    } else {
        format!(
            "database: {{ url: \"{database}\" }}\n\
             kafka: {{ brokers: \"{brokers}\", topic_template: \"bench{run}.{{type}}\", batch: {batch},\n  \
               create_topics: {{ partitions: {partitions}, replication: 1 }} }}\n\
             tenants: {{ globex: {{ dev: true }} }}\n"
        )
    };
    let config = fluxpay_host::config::parse(Path::new("relay-bench.yaml"), &yaml)
        .map_err(|e| e.to_string())?;
    let store = Store::open(&config.database).await?;
    if let Some(seconds) = args.get("lag-seconds") {
        let rate: u64 = arg(&args, "rate", "1000").parse()?;
        return lag(&config, store, seconds.parse()?, rate, &run).await;
    }

    let filled = Instant::now();
    let data = format!(
        r#"{{"customerId":"c","credits":5,"note":"{}"}}"#,
        "x".repeat(200)
    );
    for chunk in 0..events.div_ceil(1000) {
        let mut journal = Journal::default();
        for n in chunk * 1000..((chunk + 1) * 1000).min(events) {
            journal.events.push(OutboxEntry {
                event_id: format!("evt_{run}_{n}"),
                event_type: TYPES[n % TYPES.len()],
                source: "/fluxpay/tenants/globex".into(),
                subject: format!("c{}", n % customers),
                time: 1_765_000_000_000 + n as i64,
                data: data.clone(),
                transaction_id: format!("tx_{run}_{n}"),
                request_id: Some(format!("req_{run}_{n}")),
            });
        }
        let mut tx = store.begin("globex").await?;
        tx.record(journal);
        tx.commit(None).await?;
    }
    eprintln!(
        "filled {events} events in {:.1} s",
        filled.elapsed().as_secs_f64()
    );

    let tenants = TenantDirectory::from_config(&config, &|name| {
        (name == "BENCH_WEBHOOK_SECRET").then(|| SECRET.to_owned())
    })
    .map_err(|e| e.to_string())?;
    let app = App::new(
        store.clone(),
        Arc::new(Registry::new()),
        tenants,
        system_clock(),
    );
    let kafka = match webhook {
        true => None,
        false => Some(KafkaRelay::new(
            config.kafka.clone().expect("kafka:"),
            "bench",
            &|_| None,
        )?),
    };
    let hooks = WebhookRelay::new(config.webhooks, "bench")?;
    let started = Instant::now();
    let mut published = 0u64;
    let mut rounds = 0u64;
    while published < events as u64 {
        let round = match &kafka {
            Some(relay) => relay.run_once(&app).await,
            None => hooks.run_once(&app).await,
        };
        rounds += 1;
        if round.failed > 0 {
            return Err(format!("a round failed: {round:?}").into());
        }
        published += round.published;
    }
    let seconds = started.elapsed().as_secs_f64();
    let received = RECEIVED.load(std::sync::atomic::Ordering::Relaxed);
    if webhook && received < events as u64 {
        return Err(format!("the receiver got {received} of {events} events").into());
    }
    let shape = match webhook {
        true => format!("sink=webhook concurrency={concurrency}"),
        false => format!("sink=kafka partitions={partitions}"),
    };
    println!(
        "backend={} {shape} events={events} batch={batch} rounds={rounds} seconds={seconds:.2} \
         events_per_s={:.0}",
        store.backend(),
        events as f64 / seconds
    );
    store.close().await;
    Ok(())
}

/// `--lag-seconds`: commit → consumer lag while events are written at
/// `rate` a second (module docs).
async fn lag(
    config: &fluxpay_host::config::Config,
    store: Store,
    seconds: u64,
    rate: u64,
    run: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};

    let kafka = config.kafka.clone().expect("kafka:");
    let tenants = TenantDirectory::from_config(config, &|_| None).map_err(|e| e.to_string())?;
    let app = App::new(
        store.clone(),
        Arc::new(Registry::new()),
        tenants,
        system_clock(),
    );
    let write = |n: u64, store: Store| write_one(run.to_owned(), n, store);
    // One event of each type first, so that the relay creates the topics
    // and the consumer is assigned them before the clock starts.
    for n in 0..TYPES.len() as u64 {
        write(n, store.clone()).await?;
    }
    let relay = Arc::new(KafkaRelay::new(kafka.clone(), "bench", &|_| None)?);
    let relaying = tokio::spawn(fluxpay_host::events::kafka::run(app.clone(), relay));
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", format!("lag-{run}"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()?;
    let topics: Vec<String> = TYPES.iter().map(|t| kafka.topic("globex", t)).collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    let mut warm = 0;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while warm < TYPES.len() {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(_)) => warm += 1,
            // Topics the relay is still creating.
            Ok(Err(_)) => continue,
            Err(_) => return Err("the warm-up events did not arrive".into()),
        }
    }
    let total = seconds * rate;
    let writer = {
        let store = store.clone();
        let run = run.to_owned();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(std::time::Duration::from_micros(1_000_000 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            // Each commit a task of its own, as concurrent requests are.
            let mut commits = tokio::task::JoinSet::new();
            for n in TYPES.len() as u64..TYPES.len() as u64 + total {
                tick.tick().await;
                commits.spawn(write_one(run.clone(), n, store.clone()));
            }
            while let Some(done) = commits.join_next().await {
                done.expect("a commit task")?;
            }
            Ok::<_, fluxpay_host::store::StoreError>(())
        })
    };
    let mut lags: Vec<i64> = Vec::with_capacity(total as usize);
    let mut seen = std::collections::HashSet::new();
    while (lags.len() as u64) < total {
        let message = tokio::time::timeout(std::time::Duration::from_secs(60), consumer.recv())
            .await
            .map_err(|_| format!("only {} of {total} records arrived", lags.len()))??;
        let arrived = now_ms();
        let mut time = None;
        let mut id = None;
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                let value = String::from_utf8_lossy(header.value.unwrap_or_default()).to_string();
                match header.key {
                    "ce_id" => id = Some(value),
                    "ce_time" => time = Some(value),
                    _ => {}
                }
            }
        }
        let (Some(id), Some(time)) = (id, time) else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        let time = rfc3339_to_millis(&time).ok_or("ce_time is not RFC 3339")?;
        lags.push(arrived - time);
    }
    writer.await??;
    relaying.abort();
    lags.truncate(total as usize);
    lags.sort_unstable();
    let at = |q: f64| lags[((lags.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "backend={} rate={rate}/s seconds={seconds} events={total} lag_ms p50={} p95={} p99={} \
         max={}",
        store.backend(),
        at(0.50),
        at(0.95),
        at(0.99),
        lags[lags.len() - 1]
    );
    store.close().await;
    Ok(())
}

/// Milliseconds since the epoch of `2026-12-06T18:00:00.123Z` (the form
/// the relay writes).
fn rfc3339_to_millis(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, ms) = time.split_once('.')?;
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, min, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + min) * 60_000 + s * 1000 + ms.parse::<i64>().ok()?)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Commits event `n` in a transaction of its own, timed just before.
async fn write_one(
    run: String,
    n: u64,
    store: Store,
) -> Result<(), fluxpay_host::store::StoreError> {
    let mut journal = Journal::default();
    journal.events.push(OutboxEntry {
        event_id: format!("evt_{run}_{n}"),
        event_type: TYPES[n as usize % TYPES.len()],
        source: "/fluxpay/tenants/globex".into(),
        subject: format!("c{}", n % 1000),
        time: now_ms(),
        data: r#"{"customerId":"c","credits":5}"#.into(),
        transaction_id: format!("tx_{run}_{n}"),
        request_id: Some(format!("req_{run}_{n}")),
    });
    let mut tx = store.begin("globex").await?;
    tx.record(journal);
    tx.commit(None).await
}

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

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use fluxpay_host::app::{App, TenantDirectory, system_clock};
use fluxpay_host::events::kafka::KafkaRelay;
use fluxpay_host::policy::registry::Registry;
use fluxpay_host::store::{Journal, OutboxEntry, Store, Transactions, TxOps};

const TYPES: [&str; 5] = [
    "credit.deducted",
    "credit.granted",
    "order.created",
    "order.paid",
    "payment.approved",
];

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
    let run = uuid::Uuid::now_v7().simple().to_string();
    let yaml = format!(
        "database: {{ url: \"{database}\" }}\n\
         kafka: {{ brokers: \"{brokers}\", topic_template: \"bench{run}.{{type}}\", batch: {batch},\n  \
           create_topics: {{ partitions: {partitions}, replication: 1 }} }}\n\
         tenants: {{ globex: {{ dev: true }} }}\n"
    );
    let config = fluxpay_host::config::parse(Path::new("relay-bench.yaml"), &yaml)
        .map_err(|e| e.to_string())?;
    let store = Store::open(&config.database).await?;

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

    let tenants = TenantDirectory::from_config(&config, &|_| None).map_err(|e| e.to_string())?;
    let app = App::new(
        store.clone(),
        Arc::new(Registry::new()),
        tenants,
        system_clock(),
    );
    let relay = KafkaRelay::new(config.kafka.clone().expect("kafka:"), "bench", &|_| None)?;
    let started = Instant::now();
    let mut published = 0u64;
    let mut rounds = 0u64;
    while published < events as u64 {
        let round = relay.run_once(&app).await;
        rounds += 1;
        if round.failed > 0 {
            return Err(format!("a round failed: {round:?}").into());
        }
        published += round.published;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "backend={} events={events} batch={batch} partitions={partitions} rounds={rounds} \
         seconds={seconds:.2} events_per_s={:.0}",
        store.backend(),
        events as f64 / seconds
    );
    store.close().await;
    Ok(())
}

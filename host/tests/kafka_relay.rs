//! The outbox relay against a real Kafka-protocol broker (tansu in CI:
//! `FLUXPAY_TEST_KAFKA_BROKERS`), on both backends: every event of the feed
//! is published once, to its type's topic, keyed by its customer, as a
//! CloudEvent in binary mode that the CloudEvents SDK accepts, with the
//! feed's ids and positions; one customer's events arrive in feed order
//! under concurrent load; two hosts on one database publish each event
//! once, and the second takes over when the first stops holding its lease.
//!
//! Each test publishes to topics of its own (a fresh prefix), and reads
//! them back from the earliest offset with a fresh consumer group.

mod harness;
mod payment_steps;
mod process;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use cloudevents::{AttributesReader, EventBuilder, EventBuilderV10};
use fluxpay_host::config::KafkaConfig;
use fluxpay_host::events::kafka::{KafkaRelay, RelayRun};
use fluxpay_host::gateway::simulator::cards;
use fluxpay_host::store::{EventRecord, Maintenance, Queries, RelayQueries};
use harness::{Broker, Tenant, TestHost, backends, kafka_brokers, pg};
use process::database_url;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use serde_json::json;

/// A relay configuration publishing to topics under a fresh prefix.
fn config(brokers: &str, prefix: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: brokers.to_owned(),
        topic_template: format!("{prefix}.{{tenant}}.{{type}}"),
        batch: 100,
        delivery_timeout: Duration::from_secs(3),
        lease: Duration::from_secs(10),
        client: BTreeMap::new(),
        client_secret_env: BTreeMap::new(),
        create_topics: Some(fluxpay_host::config::CreateTopics {
            partitions: 3,
            replication: 1,
        }),
        dlq_topic_template: format!("{prefix}.dlq.{{tenant}}.{{type}}"),
        max_attempts: 3,
    }
}

fn relay(config: &KafkaConfig, owner: &str) -> KafkaRelay {
    KafkaRelay::new(config.clone(), owner, &|_| None).expect("a relay")
}

/// Runs rounds until one publishes nothing more and fails nothing; the
/// events published in all.
async fn drain(relay: &KafkaRelay, host: &TestHost) -> u64 {
    let mut published = 0;
    for _ in 0..1_000 {
        let run: RelayRun = relay.run_once(&host.app).await;
        assert_eq!(run.failed, 0, "{run:?}");
        published += run.published;
        if run.published == 0 {
            return published;
        }
    }
    panic!("the relay kept finding events");
}

/// Every event of `tenant`'s feed, in feed order.
async fn feed(host: &TestHost, tenant: &str) -> Vec<EventRecord> {
    host.app.store().events(tenant, 0, 100_000).await.unwrap()
}

/// One record as read back.
#[derive(Debug, Clone)]
struct Received {
    topic: String,
    partition: i32,
    key: String,
    value: String,
    headers: HashMap<String, String>,
}

/// Reads `count` records stored in `topics` (each once, whatever the
/// consumer is handed again), from the earliest offset, with a fresh group
/// (waits up to a minute for them).
async fn consume(brokers: &str, topics: &[String], count: usize) -> Vec<Received> {
    consume_until(brokers, topics, |received| received.len() >= count).await
}

/// Reads the records stored in `topics` as [`consume`] does, until `done`
/// says what arrived is enough (waits up to a minute).
async fn consume_until(
    brokers: &str,
    topics: &[String],
    done: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("test-{}", uuid::Uuid::now_v7().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        // Topics created after the subscription are found within a second.
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .expect("a consumer");
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).expect("subscribed");
    let mut received = Vec::new();
    // A rebalance (topics appearing) may hand a record over again: each
    // broker record counts once, by where it is stored.
    let mut stored = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done(&received) {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} records arrived within a minute, not all that were expected",
                    received.len()
                )
            });
        let message = match message {
            Ok(message) => message,
            // Subscribed before the relay created it: it appears on the
            // next metadata refresh.
            Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            )) => continue,
            Err(error) => panic!("reading records: {error}"),
        };
        if !stored.insert((
            message.topic().to_owned(),
            message.partition(),
            message.offset(),
        )) {
            continue;
        }
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|header| {
                        (
                            header.key.to_owned(),
                            String::from_utf8(header.value.unwrap_or_default().to_vec())
                                .expect("UTF-8 header"),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        received.push(Received {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            key: String::from_utf8(message.key().unwrap_or_default().to_vec()).unwrap(),
            value: String::from_utf8(message.payload().unwrap_or_default().to_vec()).unwrap(),
            headers,
        });
    }
    received
}

fn topics_of(config: &KafkaConfig, tenant: &str, events: &[EventRecord]) -> Vec<String> {
    events
        .iter()
        .map(|e| config.topic(tenant, &e.event_type))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect()
}

fn prefix() -> String {
    format!("t{}", uuid::Uuid::now_v7().simple())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_published_once_as_a_valid_cloudevent_keyed_by_its_customer() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let pg = pg(&host).await;
        // A spread of event types: customers, credits (granted, deducted,
        // refunded), an order paid and completed through the saga, and one
        // whose service failed (voided, compensated).
        host.funded_customer(Tenant::Globex, "c1", 100).await;
        let used = host
            .use_credits(Tenant::Globex, "c1", "render", 7, "use-1")
            .await;
        used.expect(201, "OK");
        host.call(
            Tenant::Globex,
            "POST",
            "/api/v1/credits/refund",
            Some(json!({ "transactionId": used.result()["transactionId"], "credits": 2 })),
            Some("refund-1"),
        )
        .await
        .expect(201, "OK");
        for (customer, outcome) in [("c2", "completed"), ("c3", "failed")] {
            host.put_customer(Tenant::Globex, customer, json!({})).await;
            let order = payment_steps::order(&host, customer).await;
            let total = order.1;
            let key = pg.checkout(&order.0, total, cards::APPROVE).await;
            host.call(
                Tenant::Globex,
                "POST",
                "/api/v1/payments/confirm",
                Some(json!({ "orderId": order.0, "paymentKey": key, "amount": total })),
                Some(&format!("pay-{customer}")),
            )
            .await
            .expect(201, "OK");
            host.call(
                Tenant::Globex,
                "POST",
                &format!("/api/v1/service-callbacks/{outcome}"),
                Some(json!({ "orderId": order.0 })),
                None,
            )
            .await
            .expect(200, "OK");
        }
        host.app.store().sequence_feed().await.unwrap();
        let events = feed(&host, "globex").await;
        let types: HashSet<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert!(types.len() >= 12, "{backend:?}: {types:?}");

        let prefix = prefix();
        let config = config(&brokers, &prefix);
        let relay = relay(&config, "host-a");
        assert_eq!(drain(&relay, &host).await, events.len() as u64);
        // Published once: a second round finds nothing.
        assert_eq!(drain(&relay, &host).await, 0);

        let received = consume(
            &brokers,
            &topics_of(&config, "globex", &events),
            events.len(),
        )
        .await;
        let by_id: HashMap<&str, &EventRecord> =
            events.iter().map(|e| (e.event_id.as_str(), e)).collect();
        let mut seen = HashSet::new();
        for record in &received {
            let header = |name: &str| record.headers.get(name).cloned().unwrap_or_default();
            // An independent decoder: the CloudEvents SDK builds (and so
            // validates) the event from the binary-mode headers.
            let decoded = EventBuilderV10::new()
                .id(header("ce_id"))
                .source(header("ce_source"))
                .ty(header("ce_type"))
                .subject(header("ce_subject"))
                .time(header("ce_time"))
                .extension("tenantid", header("ce_tenantid"))
                .extension("position", header("ce_position"))
                .data(
                    header("content-type"),
                    serde_json::from_str::<serde_json::Value>(&record.value).unwrap(),
                )
                .build()
                .unwrap_or_else(|e| panic!("{backend:?}: not a valid CloudEvent: {e}: {record:?}"));
            assert_eq!(header("ce_specversion"), "1.0");
            assert_eq!(header("content-type"), "application/json");
            let event = by_id
                .get(decoded.id())
                .unwrap_or_else(|| panic!("{backend:?}: an id the feed does not have: {record:?}"));
            assert!(
                seen.insert(decoded.id().to_owned()),
                "published twice: {record:?}"
            );
            assert_eq!(decoded.ty(), event.event_type);
            assert_eq!(decoded.source().to_string(), event.source);
            assert_eq!(decoded.subject(), Some(event.subject.as_str()));
            assert_eq!(
                decoded.time().unwrap().timestamp_millis(),
                event.time,
                "{record:?}"
            );
            assert_eq!(header("ce_position"), event.feed_seq.to_string());
            assert_eq!(header("ce_tenantid"), "globex");
            assert_eq!(header("ce_transactionid"), event.transaction_id);
            assert_eq!(Some(header("ce_requestid")), event.request_id.clone());
            assert_eq!(record.key, event.subject, "keyed by the customer");
            assert_eq!(record.topic, config.topic("globex", &event.event_type));
            assert_eq!(record.value, event.data);
        }
        assert_eq!(seen.len(), events.len(), "{backend:?}");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_customers_events_arrive_in_feed_order_while_the_relay_runs_under_load() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    for backend in backends() {
        let host = std::sync::Arc::new(TestHost::start(backend).await);
        let customers: Vec<String> = (0..8).map(|n| format!("c{n}")).collect();
        for customer in &customers {
            host.funded_customer(Tenant::Globex, customer, 10_000).await;
        }
        let prefix = prefix();
        let mut config = config(&brokers, &prefix);
        // Small batches: many rounds interleave with the writes.
        config.batch = 7;
        let relay = std::sync::Arc::new(relay(&config, "host-a"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let running = {
            let (relay, app, stop) = (relay.clone(), host.app.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let run = relay.run_once(&app).await;
                    assert_eq!(run.failed, 0, "{run:?}");
                    if run.published == 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        };
        // 8 customers × 25 uses, each customer's uses concurrent with the
        // others'.
        let mut writers = tokio::task::JoinSet::new();
        for customer in customers.clone() {
            let host = host.clone();
            writers.spawn(async move {
                for n in 0..25 {
                    host.use_credits(
                        Tenant::Globex,
                        &customer,
                        "render",
                        1,
                        &format!("use-{customer}-{n}"),
                    )
                    .await
                    .expect(201, "OK");
                }
            });
        }
        while let Some(writer) = writers.join_next().await {
            writer.unwrap();
        }
        host.app.store().sequence_feed().await.unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        running.await.unwrap();
        drain(&relay, &host).await;

        let events = feed(&host, "globex").await;
        let received = consume(
            &brokers,
            &topics_of(&config, "globex", &events),
            events.len(),
        )
        .await;
        // Per customer and topic (Kafka orders a partition of one topic;
        // across types consumers order by `ce_position`), in the order its
        // partition delivered them, the feed positions only grow.
        let mut last: HashMap<(String, String, i32), i64> = HashMap::new();
        let mut partitions: HashMap<String, HashSet<i32>> = HashMap::new();
        let mut ids = HashSet::new();
        for record in &received {
            let position: i64 = record.headers["ce_position"].parse().unwrap();
            assert!(ids.insert(record.headers["ce_id"].clone()), "a duplicate");
            let previous = last.insert(
                (record.topic.clone(), record.key.clone(), record.partition),
                position,
            );
            assert!(
                previous.is_none_or(|p| p < position),
                "{backend:?}: {} got position {position} after {previous:?}",
                record.key
            );
            partitions
                .entry(record.key.clone())
                .or_default()
                .insert(record.partition);
        }
        // The key picks one partition per customer, whatever the topic.
        assert!(partitions.values().all(|p| p.len() == 1), "{partitions:?}");
        assert_eq!(ids.len(), events.len(), "{backend:?}");
        drop(relay);
        std::sync::Arc::into_inner(host)
            .expect("every task is done")
            .finish()
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_publish_each_event_once_and_the_second_takes_over_a_stopped_first() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let prefix = prefix();
        let config = config(&brokers, &prefix);
        let (a, b) = (relay(&config, "host-a"), relay(&config, "host-b"));
        host.funded_customer(Tenant::Globex, "c1", 100).await;
        host.app.store().sequence_feed().await.unwrap();

        // host-a holds globex: host-b publishes none of it.
        let first = drain(&a, &host).await;
        assert!(first > 0);
        let run = b.run_once(&host.app).await;
        assert_eq!((run.tenants, run.published), (0, 0), "{backend:?}: {run:?}");

        // More events; host-a stops without giving up its lease (SIGKILL):
        // host-b waits for the lease to expire, then publishes from where
        // host-a's acknowledgements left the cursor.
        for n in 0..5 {
            host.use_credits(Tenant::Globex, "c1", "render", 1, &format!("use-{n}"))
                .await
                .expect(201, "OK");
        }
        host.app.store().sequence_feed().await.unwrap();
        drop(a);
        assert_eq!(
            b.run_once(&host.app).await.published,
            0,
            "the lease still lives"
        );
        host.advance(config.lease.as_millis() as i64);
        let second = drain(&b, &host).await;
        assert_eq!(second, 5, "{backend:?}: the five uses' events");

        let events = feed(&host, "globex").await;
        assert_eq!(first + second, events.len() as u64);
        let received = consume(
            &brokers,
            &topics_of(&config, "globex", &events),
            events.len(),
        )
        .await;
        let ids: HashSet<&str> = received
            .iter()
            .map(|r| r.headers["ce_id"].as_str())
            .collect();
        assert_eq!(ids.len(), events.len(), "{backend:?}: each once");
        host.finish().await;
    }
}

/// Rounds until every event of the feed after `from` is published, allowing
/// rounds that fail (a broker coming back); gives up after `rounds`.
async fn drain_through_failures(relay: &KafkaRelay, host: &TestHost, rounds: usize) -> u64 {
    let mut published = 0;
    for _ in 0..rounds {
        let run = relay.run_once(&host.app).await;
        published += run.published;
        if run.failed == 0 && run.published == 0 {
            return published;
        }
    }
    panic!("the relay did not catch up in {rounds} rounds ({published} published)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_holds_publishing_back_and_the_backlog_drains_in_order_when_it_returns() {
    let Some(binary) = Broker::binary() else {
        return;
    };
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let broker = Broker::start(&binary, 0);
        let port = broker.port;
        let prefix = prefix();
        let mut config = config(&broker.address(), &prefix);
        config.delivery_timeout = Duration::from_secs(1);
        config.batch = 10;
        let relay = relay(&config, "host-a");
        let customers = ["c0", "c1", "c2"];
        for customer in customers {
            host.funded_customer(Tenant::Globex, customer, 1_000).await;
        }
        let before = drain(&relay, &host).await;
        let published_before = feed(&host, "globex").await;
        assert_eq!(before, published_before.len() as u64);
        let early = consume(
            &broker.address(),
            &topics_of(&config, "globex", &published_before),
            published_before.len(),
        )
        .await;
        assert_eq!(early.len(), published_before.len());

        // The broker dies; requests keep succeeding and their events wait.
        broker.kill();
        for n in 0..12 {
            let customer = customers[n % customers.len()];
            host.use_credits(Tenant::Globex, customer, "render", 1, &format!("use-{n}"))
                .await
                .expect(201, "OK");
        }
        for _ in 0..2 {
            let run = relay.run_once(&host.app).await;
            assert_eq!(run.published, 0, "{backend:?}: {run:?}");
            assert!(run.failed > 0, "{run:?}");
        }

        // It comes back (empty: in-memory storage) on the same address;
        // the relay recreates the topics and sends the backlog.
        let broker = Broker::start(&binary, port);
        let backlog = drain_through_failures(&relay, &host, 30).await;
        assert_eq!(
            backlog, 12,
            "{backend:?}: nothing lost, nothing published twice"
        );
        let events = feed(&host, "globex").await;
        let waiting: Vec<EventRecord> = events
            .iter()
            .filter(|e| !published_before.iter().any(|p| p.event_id == e.event_id))
            .cloned()
            .collect();
        let late = consume(
            &broker.address(),
            &topics_of(&config, "globex", &waiting),
            waiting.len(),
        )
        .await;
        let mut last: HashMap<String, i64> = HashMap::new();
        for record in &late {
            let position: i64 = record.headers["ce_position"].parse().unwrap();
            let previous = last.insert(record.key.clone(), position);
            assert!(
                previous.is_none_or(|p| p < position),
                "{backend:?}: reordered"
            );
        }
        let ids: HashSet<&str> = late.iter().map(|r| r.headers["ce_id"].as_str()).collect();
        assert!(
            waiting.iter().all(|e| ids.contains(e.event_id.as_str())),
            "{backend:?}: every waiting event arrived"
        );
        host.finish().await;
    }
}

/// How long the broker stays stopped under load (the figure).
const OUTAGE: Duration = Duration::from_secs(60);

/// One backend's run of the outage test: writers keep using credits at
/// about 100 events/s while the relay runs as in `serve` (its own loop, the
/// PostgreSQL feed sequenced alongside); the broker is stopped (SIGSTOP:
/// it keeps what it stored) for [`OUTAGE`], then resumed.
async fn outage_under_load(binary: std::path::PathBuf, backend: harness::Backend) {
    let host = std::sync::Arc::new(TestHost::start(backend).await);
    let broker = Broker::start(&binary, 0);
    let prefix = prefix();
    let mut config = config(&broker.address(), &prefix);
    config.delivery_timeout = Duration::from_secs(1);
    config.lease = Duration::from_secs(3);
    let relay = std::sync::Arc::new(relay(&config, "host-a"));
    let customers: Vec<String> = (0..4).map(|n| format!("c{n}")).collect();
    for customer in &customers {
        host.funded_customer(Tenant::Globex, customer, 1_000_000)
            .await;
    }
    let background = {
        let (app, relay) = (host.app.clone(), relay.clone());
        let sequencer = host.app.store().clone();
        (
            tokio::spawn(fluxpay_host::events::kafka::run(app, relay)),
            tokio::spawn(async move {
                loop {
                    let _ = sequencer.sequence_feed().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }),
        )
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = tokio::task::JoinSet::new();
    for customer in customers.clone() {
        let (host, stop) = (host.clone(), stop.clone());
        writers.spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                host.use_credits(
                    Tenant::Globex,
                    &customer,
                    "render",
                    1,
                    &format!("u-{customer}-{n}"),
                )
                .await
                .expect(201, "OK");
                n += 1;
                // Pacing the load (about 25 events/s per customer).
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        });
    }
    let cursor = async || {
        host.app
            .store()
            .relay_cursor("globex", "kafka")
            .await
            .unwrap()
            .map_or(0, |c| c.position)
    };
    // Published while the broker is up.
    let started = tokio::time::Instant::now();
    while cursor().await < 100 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing published"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.pause();
    // Once a round in flight has given up, the cursor stands still for the
    // rest of the outage while events pile up.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stalled_at = cursor().await;
    let feed_then = feed(&host, "globex").await.len();
    tokio::time::sleep(OUTAGE - Duration::from_secs(5)).await;
    assert_eq!(
        cursor().await,
        stalled_at,
        "{backend:?}: published to a stopped broker"
    );
    let piled_up = feed(&host, "globex").await.len() - feed_then;
    assert!(
        piled_up > 1_000,
        "{backend:?}: only {piled_up} events written during the outage"
    );
    broker.resume();
    // Load goes on a while after the broker is back, then stops.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    while let Some(writer) = writers.join_next().await {
        writer.unwrap();
    }
    host.app.store().sequence_feed().await.unwrap();
    let events = feed(&host, "globex").await;
    let last = events.last().unwrap().feed_seq;
    // The backlog drains.
    let resumed = tokio::time::Instant::now();
    while cursor().await < last {
        assert!(
            resumed.elapsed() < Duration::from_secs(120),
            "{backend:?}: the backlog did not drain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    background.0.abort();
    background.1.abort();

    // Every event is in the broker; per customer and topic, first copies
    // in feed order.
    // Records sent again after a failed round are stored again: read
    // until every event's id arrived.
    let ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let received = consume_until(
        &broker.address(),
        &topics_of(&config, "globex", &events),
        |received| {
            let got: HashSet<&str> = received
                .iter()
                .map(|r| r.headers["ce_id"].as_str())
                .collect();
            ids.iter().all(|id| got.contains(id))
        },
    )
    .await;
    let mut first: HashMap<(String, String), Vec<i64>> = HashMap::new();
    let mut seen = HashSet::new();
    for record in &received {
        if seen.insert(record.headers["ce_id"].clone()) {
            first
                .entry((record.topic.clone(), record.key.clone()))
                .or_default()
                .push(record.headers["ce_position"].parse().unwrap());
        }
    }
    harness::assert_in_feed_order(&first, &format!("{backend:?}"));
    eprintln!(
        "{backend:?}: {} events, {piled_up} written during the {OUTAGE:?} outage, {} records \
         received ({} copies again)",
        events.len(),
        received.len(),
        received.len() - seen.len()
    );
    drop(relay);
    std::sync::Arc::into_inner(host)
        .expect("every task is done")
        .finish()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_stopped_for_a_minute_under_load_loses_and_reorders_nothing() {
    let Some(binary) = Broker::binary() else {
        return;
    };
    // The backends side by side: one minute of outage, not two.
    let runs: Vec<_> = backends()
        .into_iter()
        .map(|backend| tokio::spawn(outage_under_load(binary.clone(), backend)))
        .collect();
    for run in runs {
        run.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_delivery_and_its_cursor_loses_nothing_and_keeps_order() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    for backend in backends() {
        let prefix = prefix();
        let section = format!(
            "kafka:\n  brokers: {brokers}\n  topic_template: \"{prefix}.{{tenant}}.{{type}}\"\n  \
             lease_ms: 1500\n  delivery_timeout_ms: 500\n  create_topics: {{ partitions: 3, replication: 1 }}\n"
        );
        let host = TestHost::start_with(backend, |yaml| format!("{section}{yaml}")).await;
        host.app.store().close().await;
        let (url, config_path) = (database_url(&host), host.config_path.clone());
        let (server, events) = tokio::task::spawn_blocking(move || {
            // Aborted right after the broker acknowledged a round of
            // globex's events, before the cursor moved past them.
            let (server, events) =
                process::relay_crash_then_more_events(&config_path, &url, "relay.delivered");
            let events: Vec<(String, String)> = events
                .iter()
                .map(|e| {
                    (
                        e["id"].as_str().unwrap().to_owned(),
                        e["type"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            (server, events)
        })
        .await
        .unwrap();
        let config = config(&brokers, &prefix);
        let topics: Vec<String> = events
            .iter()
            .map(|(_, kind)| config.topic("globex", kind))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        // Every event arrives (the one acknowledged before the crash at
        // least twice), and a customer's first copies come in feed order.
        let received = consume(&brokers, &topics, events.len() + 1).await;
        server.kill();
        let mut first: HashMap<String, Vec<i64>> = HashMap::new();
        let mut seen = HashSet::new();
        for record in &received {
            if seen.insert(record.headers["ce_id"].clone()) {
                first
                    .entry(record.key.clone())
                    .or_default()
                    .push(record.headers["ce_position"].parse().unwrap());
            }
        }
        assert_eq!(seen.len(), events.len(), "{backend:?}: nothing lost");
        assert!(events.iter().all(|(id, _)| seen.contains(id)));
        harness::assert_in_feed_order(&first, &format!("{backend:?}"));
        host.restart().await.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_shows_what_waits_how_long_and_who_publishes() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let status = async |host: &TestHost| {
            let answer = payment_steps::admin(host, "GET", "/admin/v1/events/status", None).await;
            answer.expect(200, "OK");
            answer.result()["tenants"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["tenant"] == "globex")
                .cloned()
                .unwrap()
        };
        host.funded_customer(Tenant::Globex, "c1", 100).await;
        host.use_credits(Tenant::Globex, "c1", "render", 1, "use-1")
            .await
            .expect(201, "OK");
        host.advance(1_500);
        let waiting = status(&host).await;
        assert_eq!(waiting["pending"], 3, "{backend:?}: {waiting}");
        assert_eq!(waiting["position"], 0);
        assert_eq!(waiting["oldestPendingAgeMs"], 1_500);
        assert_eq!(waiting["owner"], serde_json::Value::Null);
        let deducted = waiting["byType"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "credit.deducted")
            .cloned()
            .unwrap();
        assert_eq!(
            (&deducted["published"], &deducted["pending"]),
            (&json!(0), &json!(1))
        );

        let relay = relay(&config(&brokers, &prefix()), "host-a");
        drain(&relay, &host).await;
        let done = status(&host).await;
        let events = feed(&host, "globex").await;
        assert_eq!(done["pending"], 0, "{done}");
        assert_eq!(done["oldestPendingAgeMs"], 0);
        assert_eq!(done["position"], events.last().unwrap().feed_seq);
        assert_eq!(done["owner"], "host-a");
        let published: i64 = done["byType"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["published"].as_i64().unwrap())
            .sum();
        assert_eq!(published, 3);
        host.finish().await;
    }
}

/// A relay whose producer refuses records over 1,000 bytes (librdkafka's
/// smallest `message.max.bytes`): a customer created with large attributes
/// makes a poison event.
fn strict_relay(brokers: &str, prefix: &str) -> (KafkaConfig, KafkaRelay) {
    let mut config = config(brokers, prefix);
    config
        .client
        .insert("message.max.bytes".into(), "1000".into());
    let relay = relay(&config, "host-a");
    (config, relay)
}

/// `c_big`'s creation is a poison event; two grants of its own follow it,
/// and `c_ok` has a creation and a grant: the event ids in feed order.
async fn poison_feed(host: &TestHost) -> (String, Vec<String>, Vec<String>) {
    host.put_customer(
        Tenant::Globex,
        "c_big",
        json!({ "note": "x".repeat(1_000), "more": "y".repeat(1_000) }),
    )
    .await
    .expect(201, "OK");
    for n in 0..2 {
        host.charge(Tenant::Globex, "c_big", 10 + n)
            .await
            .expect(201, "OK");
    }
    host.funded_customer(Tenant::Globex, "c_ok", 5).await;
    let events = feed(host, "globex").await;
    let of = |customer: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e.subject == customer)
            .map(|e| e.event_id.clone())
            .collect()
    };
    let big = of("c_big");
    (big[0].clone(), big[1..].to_vec(), of("c_ok"))
}

async fn dead(host: &TestHost) -> serde_json::Value {
    let answer =
        payment_steps::admin(host, "GET", "/admin/v1/events/dead?tenant=globex", None).await;
    answer.expect(200, "OK");
    answer.result().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_goes_to_its_dead_letter_topic_and_holds_its_customer_until_skipped() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let prefix = prefix();
        let (config, relay) = strict_relay(&brokers, &prefix);
        let (poison, followers, other) = poison_feed(&host).await;

        // Refused max_attempts (3) rounds, then dead-lettered; the others'
        // events go out, the poison's customer's later ones are held.
        let mut rounds = Vec::new();
        for _ in 0..6 {
            rounds.push(relay.run_once(&host.app).await);
        }
        assert_eq!(
            rounds.iter().map(|r| r.dead).sum::<u64>(),
            1,
            "{backend:?}: {rounds:?}"
        );
        assert_eq!(rounds.iter().map(|r| r.held).sum::<u64>(), 2, "{rounds:?}");
        assert!(
            rounds[..2]
                .iter()
                .all(|r| r.failed == 1 && r.published == 0)
        );
        let listed = dead(&host).await;
        assert_eq!(listed["held"], 2, "{listed}");
        assert_eq!(listed["dead"][0]["eventId"], poison.as_str());
        assert_eq!(listed["dead"][0]["attempts"], 3);
        assert!(
            listed["dead"][0]["lastError"]
                .as_str()
                .unwrap()
                .contains("too large"),
            "{listed}"
        );

        // The dead letter: the event's headers and why, without the value
        // the broker refuses.
        let dlq = consume(
            &brokers,
            &[config.dlq_topic("globex", "customer.created")],
            1,
        )
        .await;
        assert_eq!(dlq[0].headers["ce_id"], poison);
        assert_eq!(dlq[0].headers["fluxpay_attempts"], "3");
        assert_eq!(dlq[0].headers["fluxpay_value_omitted"], "true");
        assert_eq!(
            dlq[0].headers["fluxpay_topic"],
            config.topic("globex", "customer.created")
        );
        assert_eq!(dlq[0].key, "c_big");

        // A replay that fails again leaves it dead and its followers held.
        let replay = payment_steps::admin(
            &host,
            "POST",
            "/admin/v1/events/replay",
            Some(json!({ "tenant": "globex", "deadOfType": "customer.created" })),
        )
        .await;
        replay.expect(200, "OK");
        assert_eq!(replay.result()["replayed"], 1);
        let run = relay.run_once(&host.app).await;
        assert_eq!(run.published, 0, "{run:?}");
        assert_eq!(dead(&host).await["dead"][0]["attempts"], 4);

        // Skipped: the held events go out, in order.
        payment_steps::admin(
            &host,
            "POST",
            &format!("/admin/v1/events/globex/{poison}/skip"),
            None,
        )
        .await
        .expect(200, "OK");
        payment_steps::admin(&host, "POST", "/admin/v1/events/globex/evt_nope/skip", None)
            .await
            .expect(404, "NOT_FOUND");
        assert_eq!(drain(&relay, &host).await, 2, "{backend:?}");
        let listed = dead(&host).await;
        assert_eq!(
            (listed["dead"].as_array().unwrap().len(), &listed["held"]),
            (0, &json!(0))
        );

        let granted = consume(
            &brokers,
            &[
                config.topic("globex", "credit.granted"),
                config.topic("globex", "customer.created"),
            ],
            followers.len() + other.len(),
        )
        .await;
        let big: Vec<&str> = granted
            .iter()
            .filter(|r| r.key == "c_big")
            .map(|r| r.headers["ce_id"].as_str())
            .collect();
        assert_eq!(
            big,
            followers.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert!(granted.iter().all(|r| r.headers["ce_id"] != poison));

        // A range replay publishes passed events again with their ids.
        let replay = payment_steps::admin(
            &host,
            "POST",
            "/admin/v1/events/replay",
            Some(json!({ "tenant": "globex", "eventIds": [other[0]] })),
        )
        .await;
        assert_eq!(replay.result()["replayed"], 1, "{:?}", replay.result());
        assert_eq!(drain(&relay, &host).await, 1);
        let again = consume(&brokers, &[config.topic("globex", "customer.created")], 2).await;
        assert_eq!(
            again
                .iter()
                .filter(|r| r.headers["ce_id"] == other[0])
                .count(),
            2,
            "{backend:?}: published again with its id"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_available_order_a_dead_event_lets_its_customers_later_events_pass() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    for backend in backends() {
        let host = TestHost::start_with(backend, |yaml| {
            let globex = "  globex:\n    dev: true\n";
            assert!(yaml.contains(globex));
            yaml.replace(
                globex,
                &format!("{globex}    events: {{ order: available }}\n"),
            )
        })
        .await;
        let prefix = prefix();
        let (config, relay) = strict_relay(&brokers, &prefix);
        let (poison, followers, _) = poison_feed(&host).await;
        let mut dead_count = 0;
        for _ in 0..6 {
            let run = relay.run_once(&host.app).await;
            dead_count += run.dead;
            assert_eq!(run.held, 0, "{backend:?}: {run:?}");
        }
        assert_eq!(dead_count, 1);
        let listed = dead(&host).await;
        assert_eq!(listed["dead"][0]["eventId"], poison.as_str());
        assert_eq!(listed["held"], 0);
        let granted = consume(
            &brokers,
            &[config.topic("globex", "credit.granted")],
            followers.len() + 1,
        )
        .await;
        let big: Vec<&str> = granted
            .iter()
            .filter(|r| r.key == "c_big")
            .map(|r| r.headers["ce_id"].as_str())
            .collect();
        assert_eq!(
            big,
            followers.iter().map(String::as_str).collect::<Vec<_>>()
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_rounds_write_nothing_until_half_the_lease_is_gone() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let config = config(&brokers, &prefix());
        let relay = relay(&config, "host-a");
        host.funded_customer(Tenant::Globex, "c1", 100).await;
        drain(&relay, &host).await;
        let cursor = async |host: &TestHost| {
            host.app
                .store()
                .relay_cursor("globex", "kafka")
                .await
                .unwrap()
                .unwrap()
        };
        let published = cursor(&host).await;
        // Nothing to publish: the rounds read, and write nothing.
        host.advance(1_000);
        for _ in 0..5 {
            assert_eq!(relay.run_once(&host.app).await.published, 0);
        }
        assert_eq!(cursor(&host).await, published, "{backend:?}");
        // Past half the lease, a round renews it.
        host.advance(config.lease.as_millis() as i64 / 2);
        relay.run_once(&host.app).await;
        let renewed = cursor(&host).await;
        assert_eq!(renewed.position, published.position);
        assert!(renewed.lease_until > published.lease_until, "{renewed:?}");
        host.finish().await;
    }
}

//! The relay to Kafka (see [`super`]): per tenant, claim the lease on the
//! `kafka` cursor, read a batch of the feed after it, produce every event
//! with an idempotent producer (`acks=all`), wait for each delivery, and
//! move the cursor past the acknowledged prefix.
//!
//! Order per customer holds because:
//! - one host publishes a tenant at a time (the lease), from the cursor;
//! - within a round, records are produced in feed order, and the key (the
//!   customer) picks one partition, where an idempotent producer keeps
//!   produce order;
//! - `enable.gapless.guarantee`: a failure that would leave a gap (a record
//!   lost while a later one of its partition went through) is a fatal
//!   error instead, so a later record is never acknowledged while an
//!   earlier one is not. After any failed round the relay drops the
//!   producer and the next round sends again from the cursor with a new
//!   one.
//!
//! A broker that is down makes deliveries time out after
//! `delivery_timeout_ms`; the cursor stays where it was, and the backlog is
//! sent when the broker answers again.

use std::collections::HashSet;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::cloudevents::kafka_record;
use crate::app::App;
use crate::config::KafkaConfig;
use crate::store::{EventRecord, Queries, RelayTx, Transactions, TxOps};

/// The sink name of the Kafka cursor.
pub const SINK: &str = "kafka";

/// Why the relay cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A `client_secret_env` variable is not set.
    #[error("kafka.client_secret_env.{setting}: environment variable {variable} is not set")]
    MissingSecret {
        /// The librdkafka setting.
        setting: String,
        /// The variable named for it.
        variable: String,
    },
    /// librdkafka refused the settings.
    #[error("the Kafka client cannot be created: {0}")]
    Client(#[from] KafkaError),
}

/// What one round over every tenant did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayRun {
    /// Tenants whose lease this host holds.
    pub tenants: u64,
    /// Events the broker acknowledged (the cursors moved past them).
    pub published: u64,
    /// Tenants whose round stopped at a failure (retried next round).
    pub failed: u64,
    /// Whether some tenant had a full batch: the next round should start
    /// at once.
    pub more: bool,
}

/// The relay of one host.
pub struct KafkaRelay {
    config: KafkaConfig,
    client: ClientConfig,
    owner: String,
    producer: std::sync::Mutex<Option<FutureProducer>>,
    admin: Option<AdminClient<DefaultClientContext>>,
    topics: tokio::sync::Mutex<HashSet<String>>,
}

impl KafkaRelay {
    /// A relay publishing as `owner` (unique per host process), with its
    /// secrets read through `env`.
    pub fn new(
        config: KafkaConfig,
        owner: impl Into<String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, RelayError> {
        let mut client = ClientConfig::new();
        for (key, value) in &config.client {
            client.set(key, value);
        }
        for (setting, variable) in &config.client_secret_env {
            let value = env(variable).ok_or_else(|| RelayError::MissingSecret {
                setting: setting.clone(),
                variable: variable.clone(),
            })?;
            client.set(setting, value);
        }
        client.set("bootstrap.servers", &config.brokers);
        let admin = match config.create_topics {
            Some(_) => Some(client.create::<AdminClient<DefaultClientContext>>()?),
            None => None,
        };
        client
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("enable.gapless.guarantee", "true")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().to_string(),
            );
        let relay = KafkaRelay {
            producer: std::sync::Mutex::new(Some(client.create()?)),
            config,
            client,
            owner: owner.into(),
            admin,
            topics: tokio::sync::Mutex::new(HashSet::new()),
        };
        Ok(relay)
    }

    /// The host's name in the cursors' leases.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// One round: every tenant's batch (of the tenants whose lease this
    /// host holds or takes).
    pub async fn run_once(&self, app: &App) -> RelayRun {
        let mut run = RelayRun::default();
        let tenants: Vec<String> = app.tenants().iter().map(|t| t.id.clone()).collect();
        for tenant in tenants {
            match self.relay_tenant(app, &tenant).await {
                Ok(None) => {}
                Ok(Some(round)) => {
                    run.tenants += 1;
                    run.published += round.published;
                    run.more |= round.full;
                    if let Some(error) = round.error {
                        run.failed += 1;
                        tracing::warn!(%tenant, %error, published = round.published, "relay.kafka_failed");
                    }
                }
                Err(error) => {
                    run.failed += 1;
                    tracing::warn!(%tenant, %error, "relay.kafka_failed");
                }
            }
        }
        run
    }

    /// Gives up this host's leases (on shutdown), so another host takes
    /// the tenants over at once.
    pub async fn release(&self, app: &App) {
        let tenants: Vec<String> = app.tenants().iter().map(|t| t.id.clone()).collect();
        for tenant in tenants {
            let released = async {
                let mut tx = app.store().begin(&tenant).await?;
                tx.release_relay(SINK, &self.owner, app.now()).await?;
                tx.commit(None).await
            };
            if let Err(error) = released.await {
                tracing::warn!(%tenant, %error, "relay.release_failed");
            }
        }
    }

    async fn relay_tenant(
        &self,
        app: &App,
        tenant: &str,
    ) -> Result<Option<Round>, crate::store::StoreError> {
        let lease = self.config.lease.as_millis() as i64;
        let now = app.now();
        let mut tx = app.store().begin(tenant).await?;
        let cursor = tx
            .claim_relay(SINK, &self.owner, (now, now + lease))
            .await?;
        tx.commit(None).await?;
        let Some(cursor) = cursor else {
            return Ok(None);
        };
        // The feed's read (on PostgreSQL it first numbers what committed
        // since the last pass, so a round sees writes that just committed).
        let events = app
            .store()
            .events(tenant, cursor.position, self.config.batch)
            .await?;
        let full = events.len() as i64 == self.config.batch;
        let (acknowledged, error) = self.publish(tenant, &events).await;
        if acknowledged.is_some() {
            crate::crash_points::reached("relay.delivered", tenant);
        }
        let published = events
            .iter()
            .take_while(|e| acknowledged.is_some_and(|last| e.feed_seq <= last))
            .count() as u64;
        let now = app.now();
        let mut tx = app.store().begin(tenant).await?;
        let held = tx
            .advance_relay(
                SINK,
                &self.owner,
                acknowledged.unwrap_or(cursor.position),
                (now, now + lease),
            )
            .await?;
        tx.commit(None).await?;
        if !held {
            // Stalled past the lease; another host took the tenant over and
            // publishes from its own cursor.
            tracing::warn!(tenant, owner = %self.owner, "relay.lease_lost");
        }
        Ok(Some(Round {
            published,
            full: full && error.is_none(),
            error,
        }))
    }

    /// Produces `events` in order and waits for every delivery: the
    /// position of the last event of the acknowledged prefix, and the
    /// first failure.
    async fn publish(&self, tenant: &str, events: &[EventRecord]) -> (Option<i64>, Option<String>) {
        if events.is_empty() {
            return (None, None);
        }
        if let Err(error) = self.ensure_topics(tenant, events).await {
            return (None, Some(error));
        }
        let Some(producer) = self.producer() else {
            return (None, Some("the Kafka producer cannot be created".into()));
        };
        let mut deliveries = Vec::with_capacity(events.len());
        let mut failure = None;
        for event in events {
            let record = kafka_record(tenant, event);
            let topic = self.config.topic(tenant, &event.event_type);
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_str()),
                });
            }
            let produced = producer.send_result(
                FutureRecord::to(&topic)
                    .key(&record.key)
                    .payload(&record.value)
                    .headers(headers),
            );
            match produced {
                Ok(delivery) => deliveries.push((event.feed_seq, delivery)),
                Err((error, _)) => {
                    failure = Some(format!("event {}: {error}", event.event_id));
                    break;
                }
            }
        }
        let mut acknowledged = None;
        for (position, delivery) in deliveries {
            match delivery.await {
                Ok(Ok(_)) if failure.is_none() => acknowledged = Some(position),
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    failure.get_or_insert_with(|| format!("position {position}: {error}"));
                }
                Err(_) => {
                    failure.get_or_insert_with(|| {
                        format!("position {position}: the producer was dropped")
                    });
                }
            }
        }
        if failure.is_some() {
            // A broker that lost its topics (restarted empty, or they were
            // deleted) gets them again before the next round.
            self.topics.lock().await.clear();
            // The next round sends from the cursor with a new producer: a
            // fatal error (gapless guarantee) forbids this one to send
            // again, and after timeouts its idempotence state (producer id,
            // sequence numbers) may not match a broker that restarted.
            if let Some((code, reason)) = producer.client().fatal_error() {
                tracing::warn!(?code, %reason, "relay.producer_fatal");
            }
            *self.producer.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        (acknowledged, failure)
    }

    /// The producer, started again after a fatal error.
    fn producer(&self) -> Option<FutureProducer> {
        let mut slot = self.producer.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            match self.client.create::<FutureProducer>() {
                Ok(producer) => *slot = Some(producer),
                Err(error) => {
                    tracing::warn!(%error, "relay.producer_failed");
                    return None;
                }
            }
        }
        slot.clone()
    }

    /// Creates the topics of `events` that this host has not seen yet, when
    /// `create_topics` is configured (one that exists already is fine).
    async fn ensure_topics(&self, tenant: &str, events: &[EventRecord]) -> Result<(), String> {
        let (Some(admin), Some(create)) = (&self.admin, self.config.create_topics) else {
            return Ok(());
        };
        let mut known = self.topics.lock().await;
        let missing: Vec<String> = events
            .iter()
            .map(|e| self.config.topic(tenant, &e.event_type))
            .filter(|topic| !known.contains(topic))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|topic| {
                NewTopic::new(
                    topic,
                    create.partitions,
                    TopicReplication::Fixed(create.replication),
                )
            })
            .collect();
        // A broker that does not answer fails the round within the delivery
        // timeout, as a produce would.
        let options = AdminOptions::new()
            .request_timeout(Some(self.config.delivery_timeout))
            .operation_timeout(Some(self.config.delivery_timeout));
        let results = admin
            .create_topics(&new, &options)
            .await
            .map_err(|e| format!("creating topics: {e}"))?;
        for result in results {
            match result {
                Ok(topic) | Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    known.insert(topic);
                }
                Err((topic, code)) => return Err(format!("creating topic {topic}: {code}")),
            }
        }
        Ok(())
    }
}

/// One tenant's round.
struct Round {
    published: u64,
    full: bool,
    error: Option<String>,
}

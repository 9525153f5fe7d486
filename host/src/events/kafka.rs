//! The relay to Kafka (see [`super`]): per tenant, claim the lease on the
//! `kafka` cursor, read a batch of the feed after it, produce every event
//! with an idempotent producer (`acks=all`), wait for each delivery, and
//! move the cursor past the acknowledged prefix.
//!
//! Order per customer holds within each event type's topic (Kafka orders
//! records per partition of one topic; across types, consumers order by
//! `ce_position`), because:
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
//!
//! A record the broker refuses for good (too large, invalid) is tried in
//! `max_attempts` rounds (`relay_events`: `FAILING`), then sent to its
//! dead-letter topic and marked `DEAD`; under the tenant's strict order its
//! customer's later events wait (`HELD`) until an operator skips it or a
//! replay (`REPLAY`) publishes it. Each round first publishes what waits
//! and is free to go, then the feed after the cursor.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::cloudevents::kafka_record;
use super::{Leases, Write, pending_row};
use crate::app::App;
use crate::config::KafkaConfig;
use crate::store::{EventRecord, Queries, RelayEventRecord, RelayQueries};

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

pub use super::RelayRun;

/// How long the relay waits between rounds that found nothing more to do.
pub const IDLE: Duration = Duration::from_millis(50);
/// How long it waits after a round that failed (a broker that refuses
/// topics, a database that does not answer) before trying again.
pub const RETRY: Duration = Duration::from_secs(1);

/// Publishes the outbox to Kafka, round after round: at once while batches
/// come full, else after [`IDLE`] (after a failure, [`RETRY`]). `serve`
/// runs it as a task of its own.
pub async fn run(app: App, relay: std::sync::Arc<KafkaRelay>) {
    loop {
        let run = relay.run_once(&app).await;
        if run.published > 0 || run.failed > 0 {
            tracing::debug!(?run, "relay.round");
        }
        if run.failed > 0 {
            tokio::time::sleep(RETRY).await;
        } else if !run.more {
            tokio::time::sleep(IDLE).await;
        }
    }
}

/// The relay of one host.
pub struct KafkaRelay {
    config: KafkaConfig,
    client: ClientConfig,
    producer: std::sync::Mutex<Option<FutureProducer>>,
    admin: Option<AdminClient<DefaultClientContext>>,
    topics: tokio::sync::Mutex<HashSet<String>>,
    leases: Leases,
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
            leases: Leases::new(SINK, owner.into(), config.lease),
            config,
            client,
            admin,
            topics: tokio::sync::Mutex::new(HashSet::new()),
        };
        Ok(relay)
    }

    /// The host's name in the cursors' leases.
    pub fn owner(&self) -> &str {
        self.leases.owner()
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
                    run.dead += round.dead;
                    run.held += round.held;
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
        self.leases.release(app, &tenants).await;
    }

    async fn relay_tenant(
        &self,
        app: &App,
        tenant: &str,
    ) -> Result<Option<Round>, crate::store::StoreError> {
        let Some((cursor, rows)) = self.leases.begin(app, tenant).await? else {
            return Ok(None);
        };
        let pass_dead = app
            .tenants()
            .get(tenant)
            .is_some_and(|t| t.events_pass_dead);
        let mut round = Round::default();
        let mut writes = Vec::new();
        // Strict order: a dead event holds its customer's later events.
        let mut blocked: HashSet<String> = rows
            .iter()
            .filter(|r| r.state == "DEAD" && !pass_dead)
            .map(|r| r.customer_id.clone())
            .collect();

        // 1. Replays, and held events whose customer is free again (its
        //    dead event replayed or skipped), one by one in feed order.
        let mut stopped = false;
        // At most a batch a round, so that a round stays inside the lease.
        for row in rows
            .iter()
            .filter(|r| r.state == "REPLAY" || r.state == "HELD")
            .take(self.config.batch as usize)
        {
            if row.state == "HELD" && blocked.contains(&row.customer_id) {
                continue;
            }
            let Some(event) = app.store().event_by_id(tenant, &row.event_id).await? else {
                // Pruned meanwhile: nothing left to publish.
                writes.push(Write::Drop(row.event_id.clone()));
                continue;
            };
            match self.publish_one(tenant, &event).await {
                Ok(()) => {
                    round.published += 1;
                    writes.push(Write::Drop(row.event_id.clone()));
                }
                Err(failure) if failure.permanent && row.state == "HELD" => {
                    // Refused for good itself: tried like any event, then
                    // dead-lettered; its customer's later ones wait behind.
                    if !pass_dead {
                        blocked.insert(row.customer_id.clone());
                    }
                    let mut next = row.clone();
                    next.attempts += 1;
                    next.last_error = Some(failure.error.clone());
                    next.updated_at = app.now();
                    if next.attempts >= self.config.max_attempts {
                        match self
                            .dead_letter(tenant, &event, &failure.error, next.attempts)
                            .await
                        {
                            Ok(()) => {
                                next.state = "DEAD".into();
                                round.dead += 1;
                            }
                            Err(error) => {
                                round.error = Some(error);
                                stopped = true;
                                break;
                            }
                        }
                    } else {
                        round.error = Some(failure.error);
                    }
                    writes.push(Write::Put(next));
                }
                Err(failure) if failure.permanent && row.state == "REPLAY" => {
                    let mut dead = row.clone();
                    dead.state = "DEAD".into();
                    dead.attempts += 1;
                    dead.last_error = Some(failure.error);
                    dead.updated_at = app.now();
                    if !pass_dead {
                        blocked.insert(row.customer_id.clone());
                    }
                    writes.push(Write::Put(dead));
                }
                Err(failure) => {
                    round.error = Some(failure.error);
                    stopped = true;
                    break;
                }
            }
        }

        // 2. The feed after the cursor.
        let mut acknowledged = cursor.position;
        if !stopped {
            let events = app
                .store()
                .events(tenant, cursor.position, self.config.batch)
                .await?;
            round.full = events.len() as i64 == self.config.batch;
            let failing: HashMap<&str, &RelayEventRecord> = rows
                .iter()
                .filter(|r| r.state == "FAILING")
                .map(|r| (r.event_id.as_str(), r))
                .collect();
            let to_send: Vec<&EventRecord> = events
                .iter()
                .filter(|e| !blocked.contains(&e.subject))
                .collect();
            let mut outcomes = self.publish(tenant, &to_send).await.into_iter();
            for event in &events {
                if blocked.contains(&event.subject) {
                    writes.push(Write::Put(pending_row(event, "HELD", 0, None, app.now())));
                    acknowledged = event.feed_seq;
                    round.held += 1;
                    continue;
                }
                match outcomes.next().flatten() {
                    Some(Ok(())) => {
                        acknowledged = event.feed_seq;
                        round.published += 1;
                        if failing.contains_key(event.event_id.as_str()) {
                            writes.push(Write::Drop(event.event_id.clone()));
                        }
                    }
                    Some(Err(failure)) if failure.permanent => {
                        let attempts = failing
                            .get(event.event_id.as_str())
                            .map_or(0, |r| r.attempts)
                            + 1;
                        if attempts < self.config.max_attempts {
                            writes.push(Write::Put(pending_row(
                                event,
                                "FAILING",
                                attempts,
                                Some(failure.error.clone()),
                                app.now(),
                            )));
                            round.error = Some(failure.error);
                        } else {
                            match self
                                .dead_letter(tenant, event, &failure.error, attempts)
                                .await
                            {
                                Ok(()) => {
                                    writes.push(Write::Put(pending_row(
                                        event,
                                        "DEAD",
                                        attempts,
                                        Some(failure.error.clone()),
                                        app.now(),
                                    )));
                                    acknowledged = event.feed_seq;
                                    round.dead += 1;
                                    tracing::warn!(
                                        tenant,
                                        event_id = %event.event_id,
                                        error = %failure.error,
                                        "relay.dead_lettered"
                                    );
                                }
                                Err(error) => round.error = Some(error),
                            }
                        }
                        // What this round sent after it is decided next
                        // round (its customer's events held, under strict
                        // order).
                        break;
                    }
                    Some(Err(failure)) => {
                        round.error = Some(failure.error);
                        break;
                    }
                    // Not sent: an earlier one failed at the producer.
                    None => break,
                }
            }
            if acknowledged > cursor.position {
                crate::crash_points::reached("relay.delivered", tenant);
            }
        }

        self.leases
            .finish(app, tenant, &writes, (cursor.position, acknowledged))
            .await?;
        if round.error.is_some() {
            round.full = false;
        }
        Ok(Some(round))
    }

    /// Produces `events` in order and waits for every delivery: one outcome
    /// per event (`None`: not sent, an earlier one failed at the producer).
    async fn publish(
        &self,
        tenant: &str,
        events: &[&EventRecord],
    ) -> Vec<Option<Result<(), Failure>>> {
        if events.is_empty() {
            return Vec::new();
        }
        let topics: Vec<String> = events
            .iter()
            .map(|e| self.config.topic(tenant, &e.event_type))
            .collect();
        if let Err(error) = self.ensure_topics(&topics).await {
            let mut outcomes = vec![Some(Err(Failure::transient(error)))];
            outcomes.resize_with(events.len(), || None);
            return outcomes;
        }
        let Some(producer) = self.producer() else {
            let mut outcomes = vec![Some(Err(Failure::transient(
                "the Kafka producer cannot be created".into(),
            )))];
            outcomes.resize_with(events.len(), || None);
            return outcomes;
        };
        let mut deliveries = Vec::with_capacity(events.len());
        let mut refused = None;
        for (event, topic) in events.iter().zip(&topics) {
            let record = kafka_record(tenant, event);
            match producer.send_result(
                FutureRecord::to(topic)
                    .key(&record.key)
                    .payload(&record.value)
                    .headers(headers(&record.headers, &[])),
            ) {
                Ok(delivery) => deliveries.push(delivery),
                Err((error, _)) => {
                    refused = Some(Failure::of(&error, &event.event_id));
                    break;
                }
            }
        }
        let mut outcomes = Vec::with_capacity(events.len());
        let mut failed = refused.is_some();
        for (event, delivery) in events.iter().zip(deliveries) {
            outcomes.push(Some(match delivery.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((error, _))) => {
                    failed = true;
                    Err(Failure::of(&error, &event.event_id))
                }
                Err(_) => {
                    failed = true;
                    Err(Failure::transient("the producer was dropped".into()))
                }
            }));
        }
        if let Some(failure) = refused {
            outcomes.push(Some(Err(failure)));
        }
        outcomes.resize_with(events.len(), || None);
        if failed {
            self.forget(&producer).await;
        }
        outcomes
    }

    /// Publishes one event and waits for it.
    async fn publish_one(&self, tenant: &str, event: &EventRecord) -> Result<(), Failure> {
        match self.publish(tenant, &[event]).await.pop().flatten() {
            Some(outcome) => outcome,
            None => Err(Failure::transient("not sent".into())),
        }
    }

    /// Sends `event` to its dead-letter topic with why (`fluxpay_error`,
    /// `fluxpay_attempts`, `fluxpay_topic`); when the record itself is what
    /// the broker refuses (too large), without its value
    /// (`fluxpay_value_omitted`): the feed and the replay API still have it.
    async fn dead_letter(
        &self,
        tenant: &str,
        event: &EventRecord,
        error: &str,
        attempts: i64,
    ) -> Result<(), String> {
        let topic = self.config.dlq_topic(tenant, &event.event_type);
        self.ensure_topics(std::slice::from_ref(&topic)).await?;
        let producer = self
            .producer()
            .ok_or_else(|| "the Kafka producer cannot be created".to_owned())?;
        let record = kafka_record(tenant, event);
        let original = self.config.topic(tenant, &event.event_type);
        let attempts = attempts.to_string();
        let why = [
            ("fluxpay_error", error),
            ("fluxpay_attempts", attempts.as_str()),
            ("fluxpay_topic", original.as_str()),
        ];
        for omit in [false, true] {
            let mut extra = why.to_vec();
            if omit {
                extra.push(("fluxpay_value_omitted", "true"));
            }
            let value = if omit { "" } else { record.value.as_str() };
            let sent = producer.send_result(
                FutureRecord::to(&topic)
                    .key(&record.key)
                    .payload(value)
                    .headers(headers(&record.headers, &extra)),
            );
            let outcome = match sent {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err((error, _))) => Failure::of(&error, &event.event_id),
                    Err(_) => Failure::transient("the producer was dropped".into()),
                },
                Err((error, _)) => Failure::of(&error, &event.event_id),
            };
            if !outcome.permanent || omit {
                self.forget(&producer).await;
                return Err(format!("dead-lettering: {}", outcome.error));
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// After a failure: the next round sends from the cursor with a new
    /// producer — a fatal error (gapless guarantee) forbids this one to send
    /// again, and after timeouts its idempotence state (producer id,
    /// sequence numbers) may not match a broker that restarted — and
    /// checks again that its topics exist.
    async fn forget(&self, producer: &FutureProducer) {
        self.topics.lock().await.clear();
        if let Some((code, reason)) = producer.client().fatal_error() {
            tracing::warn!(?code, %reason, "relay.producer_fatal");
        }
        *self.producer.lock().unwrap_or_else(|e| e.into_inner()) = None;
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

    /// Creates the topics this host has not seen yet, when `create_topics`
    /// is configured (one that exists already is fine).
    async fn ensure_topics(&self, topics: &[String]) -> Result<(), String> {
        let (Some(admin), Some(create)) = (&self.admin, self.config.create_topics) else {
            return Ok(());
        };
        let mut known = self.topics.lock().await;
        let missing: Vec<&String> = topics
            .iter()
            .filter(|topic| !known.contains(*topic))
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
#[derive(Default)]
struct Round {
    published: u64,
    held: u64,
    dead: u64,
    full: bool,
    error: Option<String>,
}

/// Why a record was not published, and whether sending it again can help.
#[derive(Debug)]
struct Failure {
    error: String,
    /// The broker or the producer refuses this record for good (too large,
    /// invalid): after `max_attempts` rounds it is dead-lettered.
    permanent: bool,
}

impl Failure {
    fn of(error: &KafkaError, event_id: &str) -> Failure {
        use RDKafkaErrorCode as C;
        Failure {
            error: format!("event {event_id}: {error}"),
            permanent: matches!(
                error.rdkafka_error_code(),
                Some(
                    C::MessageSizeTooLarge
                        | C::InvalidMessageSize
                        | C::InvalidMessage
                        | C::InvalidRecord
                        | C::PolicyViolation
                        | C::BadMessage
                        | C::InvalidTopic
                )
            ),
        }
    }

    fn transient(error: String) -> Failure {
        Failure {
            error,
            permanent: false,
        }
    }
}

/// A record's headers: the CloudEvents ones, then `extra`.
fn headers(ce: &[(&'static str, String)], extra: &[(&str, &str)]) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(ce.len() + extra.len());
    for (key, value) in ce {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_str()),
        });
    }
    for (key, value) in extra {
        headers = headers.insert(Header {
            key,
            value: Some(*value),
        });
    }
    headers
}

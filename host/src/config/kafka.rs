//! The top-level `kafka:` section: where the outbox relay publishes every
//! tenant's events (`crate::events`). Without it nothing is published to
//! Kafka (the event feed serves the events either way).
//!
//! ```yaml
//! kafka:
//!   brokers: 127.0.0.1:9092             # bootstrap.servers
//!   topic_template: fluxpay.{type}      # also {tenant}; the default
//!   batch: 500                          # events read and produced per round
//!   delivery_timeout_ms: 5000           # message.timeout.ms: then retried
//!   lease_ms: 15000                     # a dead host's tenants move on after this
//!   create_topics: { partitions: 6, replication: 3 }   # else they must exist
//!   dlq_topic_template: fluxpay.dlq.{type}  # where refused events go; the default
//!   max_attempts: 3                     # rounds an event may be refused first
//!   client: { compression.type: none }  # more librdkafka settings, no secrets
//!   client_secret_env: { sasl.password: KAFKA_PASSWORD }  # from the environment
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Where and how the relay publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The topic of an event: `{type}` and `{tenant}` replaced.
    pub topic_template: String,
    /// Events read and produced per round and tenant.
    pub batch: i64,
    /// How long librdkafka keeps trying to deliver a record before it
    /// reports a failure (the relay then sends again from its cursor).
    pub delivery_timeout: Duration,
    /// How long a host's hold on a tenant's publishing lasts without
    /// renewal.
    pub lease: Duration,
    /// Further librdkafka settings, as written.
    pub client: BTreeMap<String, String>,
    /// librdkafka settings read from environment variables at start-up
    /// (setting → variable).
    pub client_secret_env: BTreeMap<String, String>,
    /// Whether the relay creates missing topics, and how (`None`: they
    /// must exist, or the broker creates them).
    pub create_topics: Option<CreateTopics>,
    /// The dead-letter topic of an event: `{type}` and `{tenant}` replaced.
    pub dlq_topic_template: String,
    /// Rounds in which an event may be refused for good (too large,
    /// invalid) before it goes to its dead-letter topic.
    pub max_attempts: i64,
}

/// How the relay creates a topic it is about to publish to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopics {
    /// Partitions of each topic (a customer's events share one).
    pub partitions: i32,
    /// Copies of each partition.
    pub replication: i32,
}

/// Default topic template (the 1-pager's).
pub const DEFAULT_TOPIC_TEMPLATE: &str = "fluxpay.{type}";
/// Default dead-letter topic template (the 1-pager's).
pub const DEFAULT_DLQ_TOPIC_TEMPLATE: &str = "fluxpay.dlq.{type}";
/// Default `max_attempts` (the 1-pager's "after 3 failures").
pub const DEFAULT_MAX_ATTEMPTS: i64 = 3;
/// Default events per round.
pub const DEFAULT_BATCH: i64 = 500;
/// Most events per round: the producer's queue holds them all at once.
pub const MAX_BATCH: i64 = 10_000;
/// Default `delivery_timeout_ms`.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `lease_ms`: three delivery timeouts (see the check).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// Settings the relay owns: its delivery guarantees depend on them.
const OWNED: [&str; 8] = [
    "bootstrap.servers",
    "metadata.broker.list",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "acks",
    "request.required.acks",
    "message.timeout.ms",
    "delivery.timeout.ms",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKafka {
    pub brokers: String,
    pub topic_template: Option<String>,
    pub batch: Option<i64>,
    pub delivery_timeout_ms: Option<u64>,
    pub lease_ms: Option<u64>,
    #[serde(default)]
    pub client: BTreeMap<String, String>,
    #[serde(default)]
    pub client_secret_env: BTreeMap<String, String>,
    pub create_topics: Option<CreateTopics>,
    pub dlq_topic_template: Option<String>,
    pub max_attempts: Option<i64>,
}

/// Whether `name` is a legal Kafka topic name (what the broker accepts).
pub fn legal_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl RawKafka {
    /// The section's meaning, or every problem as (field, message).
    pub(super) fn resolve(self) -> Result<KafkaConfig, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut error = |field: &str, message: String| {
            errors.push((format!("kafka.{field}"), message));
        };
        if self.brokers.trim().is_empty() {
            error("brokers", "must name at least one host:port".into());
        }
        let topic_template = self
            .topic_template
            .unwrap_or_else(|| DEFAULT_TOPIC_TEMPLATE.to_owned());
        // Event types and tenant ids are made of legal characters; what the
        // template adds must be too.
        let sample = topic_template
            .replace("{type}", "credit.deducted")
            .replace("{tenant}", "acme");
        if !topic_template.contains("{type}") {
            error(
                "topic_template",
                format!("`{topic_template}` must contain {{type}}: one topic per event type"),
            );
        } else if !legal_topic(&sample) {
            error(
                "topic_template",
                format!(
                    "`{topic_template}` makes topics such as `{sample}`: a topic name is 1-249 \
                     of a-z A-Z 0-9 . _ -"
                ),
            );
        }
        let dlq_topic_template = self
            .dlq_topic_template
            .unwrap_or_else(|| DEFAULT_DLQ_TOPIC_TEMPLATE.to_owned());
        let dlq_sample = dlq_topic_template
            .replace("{type}", "credit.deducted")
            .replace("{tenant}", "acme");
        if !dlq_topic_template.contains("{type}") || !legal_topic(&dlq_sample) {
            error(
                "dlq_topic_template",
                format!(
                    "`{dlq_topic_template}` must contain {{type}} and make legal topic names \
                     (1-249 of a-z A-Z 0-9 . _ -)"
                ),
            );
        } else if dlq_sample == sample {
            error(
                "dlq_topic_template",
                "must differ from topic_template: dead letters need topics of their own".into(),
            );
        }
        let max_attempts = self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=10).contains(&max_attempts) {
            error(
                "max_attempts",
                format!("{max_attempts} must be within 1..=10"),
            );
        }
        let batch = self.batch.unwrap_or(DEFAULT_BATCH);
        if !(1..=MAX_BATCH).contains(&batch) {
            error("batch", format!("{batch} must be within 1..={MAX_BATCH}"));
        }
        let delivery_timeout = self
            .delivery_timeout_ms
            .map_or(DEFAULT_DELIVERY_TIMEOUT, Duration::from_millis);
        if !(Duration::from_millis(100)..=Duration::from_secs(900)).contains(&delivery_timeout) {
            error(
                "delivery_timeout_ms",
                "must be within 100..=900000 (15 minutes)".into(),
            );
        }
        let lease = self.lease_ms.map_or(DEFAULT_LEASE, Duration::from_millis);
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&lease) {
            error(
                "lease_ms",
                "must be within 1000..=300000 (5 minutes)".into(),
            );
        }
        // A round may wait for topic creation and then for deliveries, each
        // up to the delivery timeout: a lease shorter than that could lapse
        // mid-round and let another host produce the same events at once.
        if lease < delivery_timeout * 3 {
            error(
                "lease_ms",
                "must be at least three times delivery_timeout_ms: a round (topic creation, \
                 then deliveries) must end inside the lease"
                    .into(),
            );
        }
        for key in self.client.keys().chain(self.client_secret_env.keys()) {
            if OWNED.contains(&key.as_str()) {
                error(
                    &format!("client.{key}"),
                    "is set by the relay: its delivery guarantees (idempotent, acks=all, \
                     in order) depend on it"
                        .into(),
                );
            }
        }
        for key in self.client.keys() {
            if key.contains("password") || key.contains("secret") || key.ends_with(".key.pem") {
                error(
                    &format!("client.{key}"),
                    "looks like a secret: put it in client_secret_env (setting: ENV_VAR), so \
                     it is read from the environment, never the file"
                        .into(),
                );
            }
        }
        if let Some(create) = self.create_topics {
            if !(1..=10_000).contains(&create.partitions) {
                error(
                    "create_topics.partitions",
                    format!("{} must be within 1..=10000", create.partitions),
                );
            }
            if !(1..=16).contains(&create.replication) {
                error(
                    "create_topics.replication",
                    format!("{} must be within 1..=16", create.replication),
                );
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(KafkaConfig {
            brokers: self.brokers,
            topic_template,
            batch,
            delivery_timeout,
            lease,
            client: self.client,
            client_secret_env: self.client_secret_env,
            create_topics: self.create_topics,
            dlq_topic_template,
            max_attempts,
        })
    }
}

impl KafkaConfig {
    /// The topic of events of `event_type` of `tenant`.
    pub fn topic(&self, tenant: &str, event_type: &str) -> String {
        self.topic_template
            .replace("{type}", event_type)
            .replace("{tenant}", tenant)
    }

    /// The dead-letter topic of events of `event_type` of `tenant`.
    pub fn dlq_topic(&self, tenant: &str, event_type: &str) -> String {
        self.dlq_topic_template
            .replace("{type}", event_type)
            .replace("{tenant}", tenant)
    }
}

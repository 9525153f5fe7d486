//! Metered usage events: validation of single events and batches.
//!
//! Deduplication across requests (by tenant and event id, forever) needs the
//! store; here we only refuse what can never be a valid event, and
//! duplicates *within* one batch, which are a client bug: two different
//! events under one id would make "which one counted?" depend on row order.

use std::collections::HashMap;
use std::fmt;

use super::id::{CustomerId, MAX_ID_LEN, id_problem};
use super::time::Timestamp;

/// Most events in one request.
pub const MAX_BATCH_SIZE: usize = 1_000;
/// Longest event id, in bytes (the same bound as every other id).
pub const MAX_EVENT_ID_LEN: usize = MAX_ID_LEN;
/// Longest metric name, in bytes.
pub const MAX_METRIC_LEN: usize = 64;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// How far from `now` an event's timestamp may be. Data, so the tenant
/// configuration can override the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRules {
    /// Tolerance for client clocks running ahead: usage reports something
    /// that already happened, so anything further ahead is a bad clock or
    /// a bad field.
    pub max_future_ms: i64,
    /// Oldest event accepted: a monthly period plus a few days of late
    /// delivery. Older usage would land in a period that is already closed.
    pub max_age_ms: i64,
}

impl Default for UsageRules {
    fn default() -> Self {
        UsageRules {
            max_future_ms: 5 * MINUTE_MS,
            max_age_ms: 35 * DAY_MS,
        }
    }
}

/// An event as the API parsed it, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawUsageEvent {
    /// The tenant's id for the event (its deduplication key).
    pub event_id: String,
    /// The customer the usage belongs to.
    pub customer_id: String,
    /// The metric, e.g. `api-calls`.
    pub metric: String,
    /// How much was used; zero is allowed (a heartbeat that bills nothing).
    pub quantity: i64,
    /// When the usage happened.
    pub timestamp: Timestamp,
}

/// A validated usage event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    event_id: String,
    customer: CustomerId,
    metric: String,
    quantity: i64,
    timestamp: Timestamp,
}

impl UsageEvent {
    /// The tenant's id for the event.
    pub fn event_id(&self) -> &str {
        &self.event_id
    }

    /// The customer.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// The metric name.
    pub fn metric(&self) -> &str {
        &self.metric
    }

    /// The quantity (≥ 0).
    pub fn quantity(&self) -> i64 {
        self.quantity
    }

    /// When the usage happened.
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }
}

/// Why a usage event or batch was refused. All client errors (`REQ_001`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// The event id is empty, too long or has characters we refuse.
    #[error("invalid eventId: {reason}")]
    EventId {
        /// Why.
        reason: &'static str,
    },
    /// The customer id is not a valid id.
    #[error("invalid customerId: {reason}")]
    CustomerId {
        /// Why.
        reason: &'static str,
    },
    /// The metric name breaks the naming rule.
    #[error("invalid metric: {reason}")]
    Metric {
        /// Why.
        reason: &'static str,
    },
    /// A negative quantity: usage cannot be un-used (refunds exist for that).
    #[error("quantity must not be negative, got {quantity}")]
    NegativeQuantity {
        /// The quantity given.
        quantity: i64,
    },
    /// The timestamp is further ahead of `now` than the rules allow.
    #[error("timestamp {timestamp} is in the future (latest accepted: {latest})")]
    InFuture {
        /// The timestamp given.
        timestamp: Timestamp,
        /// The latest acceptable instant.
        latest: Timestamp,
    },
    /// The timestamp is older than the rules allow.
    #[error("timestamp {timestamp} is too old (earliest accepted: {earliest})")]
    TooOld {
        /// The timestamp given.
        timestamp: Timestamp,
        /// The earliest acceptable instant.
        earliest: Timestamp,
    },
    /// A batch with no events.
    #[error("the batch has no events")]
    EmptyBatch,
    /// A batch over [`MAX_BATCH_SIZE`].
    #[error("the batch has {len} events; at most {max} are allowed")]
    BatchTooLarge {
        /// Events sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The same event id twice in one batch.
    #[error("eventId `{event_id}` also appears at position {first}")]
    DuplicateEventId {
        /// The repeated id.
        event_id: String,
        /// Position of its first occurrence.
        first: usize,
    },
    /// Some events of a batch are invalid; all problems, in batch order.
    #[error("{} event(s) in the batch are invalid; the first: {}", problems.len(), first(problems))]
    InvalidEvents {
        /// One entry per problem.
        problems: Vec<EventProblem>,
    },
}

fn first(problems: &[EventProblem]) -> String {
    problems
        .first()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// One problem with one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventProblem {
    /// Position of the event in the batch (from 0).
    pub index: usize,
    /// What is wrong with it.
    pub error: UsageError,
}

impl fmt::Display for EventProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event at position {}: {}", self.index, self.error)
    }
}

impl UsageRules {
    /// Validates one event against `now`.
    pub fn validate(&self, raw: RawUsageEvent, now: Timestamp) -> Result<UsageEvent, UsageError> {
        if let Some(reason) = id_problem(&raw.event_id, MAX_EVENT_ID_LEN) {
            return Err(UsageError::EventId { reason });
        }
        let customer = CustomerId::new(raw.customer_id).map_err(|e| match e {
            super::DomainError::InvalidId { reason, .. } => UsageError::CustomerId { reason },
            _ => UsageError::CustomerId {
                reason: "is invalid",
            },
        })?;
        if let Some(reason) = metric_problem(&raw.metric) {
            return Err(UsageError::Metric { reason });
        }
        if raw.quantity < 0 {
            return Err(UsageError::NegativeQuantity {
                quantity: raw.quantity,
            });
        }
        self.check_timestamp(raw.timestamp, now)?;
        Ok(UsageEvent {
            event_id: raw.event_id,
            customer,
            metric: raw.metric,
            quantity: raw.quantity,
            timestamp: raw.timestamp,
        })
    }

    /// Validates a batch: 1 to [`MAX_BATCH_SIZE`] events, each valid, no
    /// event id twice. Reports every bad event at once so a client can fix
    /// a batch in one round trip.
    pub fn validate_batch(
        &self,
        raws: Vec<RawUsageEvent>,
        now: Timestamp,
    ) -> Result<Vec<UsageEvent>, UsageError> {
        if raws.is_empty() {
            return Err(UsageError::EmptyBatch);
        }
        if raws.len() > MAX_BATCH_SIZE {
            return Err(UsageError::BatchTooLarge {
                len: raws.len(),
                max: MAX_BATCH_SIZE,
            });
        }
        let mut seen: HashMap<String, usize> = HashMap::with_capacity(raws.len());
        let mut problems = Vec::new();
        let mut events = Vec::with_capacity(raws.len());
        for (index, raw) in raws.into_iter().enumerate() {
            if let Some(&first) = seen.get(&raw.event_id) {
                let error = UsageError::DuplicateEventId {
                    event_id: raw.event_id,
                    first,
                };
                problems.push(EventProblem { index, error });
                continue;
            }
            seen.insert(raw.event_id.clone(), index);
            match self.validate(raw, now) {
                Ok(event) => events.push(event),
                Err(error) => problems.push(EventProblem { index, error }),
            }
        }
        if problems.is_empty() {
            Ok(events)
        } else {
            Err(UsageError::InvalidEvents { problems })
        }
    }

    fn check_timestamp(&self, timestamp: Timestamp, now: Timestamp) -> Result<(), UsageError> {
        let latest = now
            .checked_add_millis(self.max_future_ms)
            .unwrap_or(Timestamp::from_unix_millis(i64::MAX));
        let earliest = now
            .checked_sub_millis(self.max_age_ms)
            .unwrap_or(Timestamp::from_unix_millis(i64::MIN));
        if timestamp > latest {
            return Err(UsageError::InFuture { timestamp, latest });
        }
        if timestamp < earliest {
            return Err(UsageError::TooOld {
                timestamp,
                earliest,
            });
        }
        Ok(())
    }
}

/// Metric names are lower-case ASCII: a letter, then letters, digits, `-`,
/// `_` or `.`. No `:`, because quotes build line codes like
/// `metric:api-calls:tier-2`; one case only, so `API-Calls` and `api-calls`
/// cannot become two meters of the same thing.
fn metric_problem(metric: &str) -> Option<&'static str> {
    let bytes = metric.as_bytes();
    match bytes.first() {
        None => Some("must not be empty"),
        Some(_) if bytes.len() > MAX_METRIC_LEN => Some("is longer than 64 characters"),
        Some(b) if !b.is_ascii_lowercase() => Some("must start with a lower-case letter"),
        Some(_)
            if !bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(b)) =>
        {
            Some("may only contain lower-case letters, digits, '-', '_' and '.'")
        }
        Some(_) => None,
    }
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;

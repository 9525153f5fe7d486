//! `POST /usage`: one event or a batch of up to 1,000, all-or-nothing.
//!
//! What each event becomes (its `status`):
//! - `accepted`: new; stored and counted.
//! - `duplicate`: its id is already stored with the same content, or it
//!   repeats an earlier event of the batch exactly: counted once, not twice.
//! - `conflict`: its id is already stored (or used earlier in the batch)
//!   with *different* content. Not stored, not counted; the first version
//!   stands, and the rest of the batch proceeds. A changed event is a
//!   client bug that silently replacing would hide.
//! - `late`: new, but its timestamp falls in a period already closed for
//!   its customer: the period's order is final, so it is not stored (the
//!   rest of the batch proceeds; a retry gets the same answer).
//!
//! Whereas an *invalid* event (domain rules: ids, metric name, negative
//! quantity, timestamp window; bad properties) makes the whole batch
//! `REQ_001`, an event the tenant's validation policies refuse makes it
//! `POL_001`, and an unknown customer `NOT_FOUND` — in each case nothing is
//! written and the answer names every offending event.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::super::credits::Render;
use super::super::customers::{Customer, not_found};
use super::super::error::{AppError, PolicyViolation, Result};
use super::super::idempotency::{Claimed, claim};
use super::super::policy::validate;
use super::super::{App, Reply, RequestCtx};
use super::check_properties;
use crate::domain::usage::{MAX_BATCH_SIZE, RawUsageEvent, UsageError, UsageRules};
use crate::domain::{DomainError, Timestamp};
use crate::policy::registry::{Binding, CallContext};
use crate::policy::types;
use crate::store::{Queries, Transactions, TxOps, UsageEventRecord, UsageTx};

/// Problems listed one by one in a `REQ_001` message; the rest are counted.
const MAX_LISTED_PROBLEMS: usize = 20;

/// `POST /usage`.
#[derive(Debug, Clone)]
pub struct IngestCommand {
    /// The events, in request order.
    pub events: Vec<EventInput>,
}

/// One event as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInput {
    /// The tenant's id for the event (its deduplication key, forever).
    pub event_id: String,
    /// Whose usage.
    pub customer_id: String,
    /// The metric, e.g. `api-calls`.
    pub metric: String,
    /// Units (≥ 0).
    pub quantity: i64,
    /// When it happened (ms since the epoch).
    pub timestamp: i64,
    /// Handed to the validation policies and stored with the event.
    pub properties: BTreeMap<String, String>,
}

/// What became of one event (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    /// Stored and counted.
    Accepted,
    /// Already counted.
    Duplicate,
    /// Same id, different content: not counted.
    Conflict,
    /// In a closed period: not counted.
    Late,
}

impl EventStatus {
    /// The API form.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Accepted => "accepted",
            EventStatus::Duplicate => "duplicate",
            EventStatus::Conflict => "conflict",
            EventStatus::Late => "late",
        }
    }
}

/// One event's outcome.
#[derive(Debug, Clone)]
pub struct EventOutcome {
    /// Position in the request (from 0).
    pub index: usize,
    /// Its id.
    pub event_id: String,
    /// What became of it.
    pub status: EventStatus,
    /// Why, for anything but `accepted`.
    pub reason: Option<String>,
}

/// What a batch did.
#[derive(Debug, Clone)]
pub struct UsageIngested {
    /// One per event, in request order.
    pub events: Vec<EventOutcome>,
}

impl UsageIngested {
    /// How many events have `status`.
    pub fn count(&self, status: EventStatus) -> usize {
        self.events.iter().filter(|e| e.status == status).count()
    }
}

/// The batch after the checks that need no database: each event's first
/// occurrence, and the repeats.
struct Checked {
    /// Positions of first occurrences.
    firsts: Vec<usize>,
    /// `(position, position of the first occurrence, identical?)`.
    repeats: Vec<(usize, usize, bool)>,
}

/// Validates the batch with the domain's rules (`REQ_001`, every problem
/// named). Repeated ids are not problems here (see the module docs): the
/// first occurrence is validated by `validate_batch`, a differing repeat on
/// its own, an identical one needs nothing.
fn check_batch(events: &[EventInput], now: Timestamp) -> Result<Checked> {
    if events.is_empty() {
        return Err(DomainError::from(UsageError::EmptyBatch).into());
    }
    if events.len() > MAX_BATCH_SIZE {
        return Err(DomainError::from(UsageError::BatchTooLarge {
            len: events.len(),
            max: MAX_BATCH_SIZE,
        })
        .into());
    }
    let rules = UsageRules::default();
    let mut first_at: HashMap<&str, usize> = HashMap::with_capacity(events.len());
    let mut firsts = Vec::with_capacity(events.len());
    let mut repeats = Vec::new();
    let mut problems: Vec<(usize, String)> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        match first_at.get(event.event_id.as_str()) {
            Some(&first) => {
                let identical = events[first] == *event;
                if !identical && let Err(err) = rules.validate(raw(event), now) {
                    problems.push((index, err.to_string()));
                }
                repeats.push((index, first, identical));
            }
            None => {
                first_at.insert(&event.event_id, index);
                firsts.push(index);
            }
        }
        if let Some(problem) = check_properties(&event.properties) {
            problems.push((index, format!("properties: {problem}")));
        }
    }
    let raws = firsts.iter().map(|&i| raw(&events[i])).collect();
    match rules.validate_batch(raws, now) {
        Ok(_) => {}
        Err(UsageError::InvalidEvents { problems: found }) => {
            problems.extend(
                found
                    .into_iter()
                    .map(|p| (firsts[p.index], p.error.to_string())),
            );
        }
        Err(other) => return Err(DomainError::from(other).into()),
    }
    if problems.is_empty() {
        return Ok(Checked { firsts, repeats });
    }
    problems.sort_by_key(|(index, _)| *index);
    let listed: Vec<String> = problems
        .iter()
        .take(MAX_LISTED_PROBLEMS)
        .map(|(index, problem)| {
            format!(
                "event {index} (eventId `{}`): {problem}",
                events[*index].event_id
            )
        })
        .collect();
    let more = problems.len().saturating_sub(MAX_LISTED_PROBLEMS);
    let tail = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    Err(AppError::Invalid(format!(
        "{} problem(s) in the batch, nothing was stored: {}{tail}",
        problems.len(),
        listed.join("; ")
    )))
}

fn raw(event: &EventInput) -> RawUsageEvent {
    RawUsageEvent {
        event_id: event.event_id.clone(),
        customer_id: event.customer_id.clone(),
        metric: event.metric.clone(),
        quantity: event.quantity,
        timestamp: Timestamp::from_unix_millis(event.timestamp),
    }
}

fn record(event: &EventInput) -> Result<UsageEventRecord> {
    Ok(UsageEventRecord {
        event_id: event.event_id.clone(),
        customer_id: event.customer_id.clone(),
        metric: event.metric.clone(),
        quantity: event.quantity,
        occurred_at: event.timestamp,
        // A BTreeMap serialises in key order: equal maps are equal text.
        properties: serde_json::to_string(&event.properties)
            .map_err(|err| AppError::Internal(err.to_string()))?,
    })
}

fn policy_event(event: &EventInput) -> types::UsageEvent {
    types::UsageEvent {
        event_id: event.event_id.clone(),
        metric: event.metric.clone(),
        quantity: event.quantity,
        timestamp_ms: event.timestamp,
        properties: event
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// An event's share of a policy call's input, as the sandbox counts it
/// (string bytes plus 8 per scalar).
fn policy_size(event: &types::UsageEvent) -> u64 {
    let properties: usize = event
        .properties
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    (event.event_id.len() + event.metric.len() + properties) as u64 + 24
}

/// Each customer of a batch: its attributes (as policies see them) and its
/// events (first occurrences only).
type ByCustomer = BTreeMap<String, (Vec<(String, String)>, Vec<types::UsageEvent>)>;

/// Runs the validation policies over each customer's events with that
/// customer's context, and collects every violation of the batch. A
/// customer's events go in one call, split only where they would pass half
/// the smallest input limit (the other half is left for the context).
fn check_policies(
    bindings: &[std::sync::Arc<Binding>],
    by_customer: &ByCustomer,
    now: i64,
) -> Result<()> {
    if bindings.is_empty() {
        return Ok(());
    }
    let budget = bindings
        .iter()
        .map(|b| b.limits().input_bytes / 2)
        .min()
        .unwrap_or(u64::MAX);
    let mut violations: Vec<PolicyViolation> = Vec::new();
    for (customer_id, (attributes, events)) in by_customer {
        let ctx = CallContext {
            customer_id: customer_id.clone(),
            customer_attributes: attributes.clone(),
            now_ms: now,
        };
        let mut chunk: Vec<types::UsageEvent> = Vec::new();
        let mut size = 0;
        let mut chunks = Vec::new();
        for event in events {
            let event_size = policy_size(event);
            if !chunk.is_empty() && size + event_size > budget {
                chunks.push(std::mem::take(&mut chunk));
                size = 0;
            }
            size += event_size;
            chunk.push(event.clone());
        }
        chunks.push(chunk);
        for chunk in chunks {
            match validate(bindings, &ctx, &types::ValidationSubject::Usage(chunk)) {
                Ok(()) => {}
                Err(AppError::Violations(found)) => violations.extend(found),
                Err(other) => return Err(other),
            }
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(AppError::Violations(violations))
    }
}

fn unknown_customers(missing: &[String]) -> AppError {
    match missing {
        [one] => not_found(one),
        many => AppError::NotFound(format!(
            "no customers {}",
            many.iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

impl App {
    /// Stores a batch of usage events, deduplicated by event id forever:
    /// every event is checked (domain rules, then the tenant's validation
    /// policies per customer) before anything is written, and the new ones
    /// go in with one statement per chunk, in one transaction.
    pub async fn ingest_usage(
        &self,
        ctx: &RequestCtx,
        cmd: IngestCommand,
        render: impl Render<UsageIngested>,
    ) -> Result<Reply> {
        let now = self.now();
        let events = cmd.events;
        let Checked { firsts, repeats } = check_batch(&events, Timestamp::from_unix_millis(now))?;
        let validation = self.usage_validation(&ctx.tenant)?;

        // 1. Customers and policies, outside any transaction: the rules see
        //    the events and the customer's attributes, not stored state.
        let mut by_customer = ByCustomer::new();
        for &index in &firsts {
            let event = &events[index];
            by_customer
                .entry(event.customer_id.clone())
                .or_default()
                .1
                .push(policy_event(event));
        }
        let mut missing = Vec::new();
        for (customer_id, (attributes, _)) in by_customer.iter_mut() {
            match self.store().customer(&ctx.tenant, customer_id).await? {
                Some(record) => *attributes = Customer::policy_attributes_of(&record.attributes)?,
                None => missing.push(customer_id.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(unknown_customers(&missing));
        }
        check_policies(&validation, &by_customer, now)?;
        let records = firsts
            .iter()
            .map(|&i| record(&events[i]))
            .collect::<Result<Vec<_>>>()?;
        let customers: Vec<String> = by_customer.into_keys().collect();

        // 2. One transaction: claim the key, lock the customers against a
        //    concurrent close, drop what is late, insert what is new.
        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(reply),
        };
        let found: BTreeSet<String> = tx
            .lock_usage_customers(&customers)
            .await?
            .into_iter()
            .collect();
        let missing: Vec<String> = customers
            .iter()
            .filter(|c| !found.contains(*c))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(unknown_customers(&missing));
        }
        let earliest = records.iter().map(|r| r.occurred_at).min().unwrap_or(now);
        let latest = records.iter().map(|r| r.occurred_at).max().unwrap_or(now);
        let closes = tx.closed_periods(&customers, earliest, latest).await?;
        let late_in = |r: &UsageEventRecord| {
            closes.iter().find(|c| {
                c.customer_id == r.customer_id
                    && c.period_start <= r.occurred_at
                    && r.occurred_at < c.period_end
            })
        };
        let fresh: Vec<UsageEventRecord> = records
            .iter()
            .filter(|r| late_in(r).is_none())
            .cloned()
            .collect();
        let inserted: HashSet<String> = tx
            .insert_usage_events(&fresh, now)
            .await?
            .into_iter()
            .collect();
        let others: Vec<String> = records
            .iter()
            .filter(|r| !inserted.contains(&r.event_id))
            .map(|r| r.event_id.clone())
            .collect();
        let stored: HashMap<String, UsageEventRecord> = if others.is_empty() {
            HashMap::new()
        } else {
            tx.stored_usage_events(&others)
                .await?
                .into_iter()
                .map(|r| (r.event_id.clone(), r))
                .collect()
        };

        let mut outcomes: Vec<Option<EventOutcome>> = vec![None; events.len()];
        for (&index, record) in firsts.iter().zip(&records) {
            let (status, reason) = if inserted.contains(&record.event_id) {
                (EventStatus::Accepted, None)
            } else if let Some(existing) = stored.get(&record.event_id) {
                if existing == record {
                    (
                        EventStatus::Duplicate,
                        Some("already stored: counted once".to_owned()),
                    )
                } else {
                    (
                        EventStatus::Conflict,
                        Some(
                            "this eventId is already stored with different content; \
                             the stored event stands"
                                .to_owned(),
                        ),
                    )
                }
            } else if let Some(close) = late_in(record) {
                (
                    EventStatus::Late,
                    Some(format!(
                        "the customer's period [{}, {}) is closed (close `{}`)",
                        close.period_start, close.period_end, close.close_id
                    )),
                )
            } else {
                return Err(AppError::Internal(format!(
                    "usage event `{}` was neither inserted nor found",
                    record.event_id
                )));
            };
            outcomes[index] = Some(EventOutcome {
                index,
                event_id: record.event_id.clone(),
                status,
                reason,
            });
        }
        for (index, first, identical) in repeats {
            let (status, reason) = if identical {
                (
                    EventStatus::Duplicate,
                    format!("repeats event {first} of this batch: counted once"),
                )
            } else {
                (
                    EventStatus::Conflict,
                    format!("event {first} of this batch has this eventId with different content"),
                )
            };
            outcomes[index] = Some(EventOutcome {
                index,
                event_id: events[index].event_id.clone(),
                status,
                reason: Some(reason),
            });
        }
        let ingested = UsageIngested {
            events: outcomes.into_iter().flatten().collect(),
        };
        let response = render(&ingested);
        tx.commit(Some(response.clone())).await?;
        Ok(Reply {
            response,
            replayed: false,
        })
    }
}

#[cfg(test)]
#[path = "ingest_tests.rs"]
mod tests;

//! The events feed: a tenant's outbox events in commit order, paged by a
//! cursor (the last feed position read). How positions follow commit order
//! on each backend is explained in `store::postgres` and `store::sqlite`.

use super::App;
use super::error::{AppError, Result};
use crate::store::{EventRecord, Queries};

/// Default page size.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest page size.
pub const MAX_LIMIT: i64 = 1000;

/// One page of the feed.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// Events after the cursor, in feed order.
    pub events: Vec<EventRecord>,
    /// Pass as `after` to continue; unchanged when the page is empty.
    pub next_cursor: String,
}

impl App {
    /// The tenant's events after `after` (a previous `nextCursor`; from
    /// the beginning when absent).
    pub async fn events(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: Option<i64>,
    ) -> Result<EventPage> {
        let after = match after {
            None | Some("") => 0,
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    AppError::Invalid("after must be a cursor returned as nextCursor".into())
                })?,
        };
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AppError::Invalid(format!(
                "limit must be within 1..={MAX_LIMIT}"
            )));
        }
        let events = self.store().events(tenant, after, limit).await?;
        let next_cursor = events
            .last()
            .map_or(after, |event| event.feed_seq)
            .to_string();
        Ok(EventPage {
            events,
            next_cursor,
        })
    }
}

/// Where a tenant's publishing to a sink stands (`GET /admin/v1/events/status`).
#[derive(Debug, Clone)]
pub struct RelayStatus {
    /// The tenant.
    pub tenant: String,
    /// The sink (`kafka`, `webhook`).
    pub sink: &'static str,
    /// The feed position last acknowledged (0: nothing yet).
    pub position: i64,
    /// The host holding the tenant's lease, while it lasts.
    pub owner: Option<String>,
    /// When that lease ends.
    pub lease_until: Option<i64>,
    /// Events waiting to be published.
    pub pending: i64,
    /// How long the oldest of them has waited (ms; 0 when none waits).
    pub oldest_pending_age_ms: i64,
    /// Per event type: published and waiting.
    pub by_type: Vec<crate::store::RelayTypeCounts>,
    /// Events passed by the cursor and being tried again (`FAILING`).
    pub failing: i64,
    /// Events passed by the cursor that wait behind an earlier one of
    /// their customer (`HELD`, `REPLAY`).
    pub held: i64,
    /// Events given up (`DEAD`).
    pub dead: i64,
}

impl App {
    /// Every tenant's publishing to `sink`, as of `now` (the webhook: of
    /// the tenants that have one).
    pub async fn relay_status(&self, sink: &'static str, now: i64) -> Result<Vec<RelayStatus>> {
        use crate::store::{Maintenance, RelayQueries};
        // PostgreSQL numbers committed events after commit: what committed
        // since the last pass counts as waiting too.
        self.store().sequence_feed().await?;
        let mut statuses = Vec::new();
        let tenants: Vec<String> = self
            .tenants()
            .iter()
            .filter(|t| sink != crate::events::webhook::SINK || t.webhook.is_some())
            .map(|t| t.id.clone())
            .collect();
        for tenant in tenants {
            let cursor = self.store().relay_cursor(&tenant, sink).await?;
            let rows = self.store().relay_events(&tenant, sink, None).await?;
            let count = |states: &[&str]| {
                rows.iter()
                    .filter(|r| states.contains(&r.state.as_str()))
                    .count() as i64
            };
            let position = cursor.as_ref().map_or(0, |c| c.position);
            let by_type = self.store().relay_counts(&tenant, position).await?;
            let oldest = by_type.iter().filter_map(|t| t.oldest_pending_at).min();
            statuses.push(RelayStatus {
                sink,
                failing: count(&["FAILING"]),
                held: count(&["HELD", "REPLAY"]),
                dead: count(&["DEAD"]),
                pending: by_type.iter().map(|t| t.pending).sum(),
                oldest_pending_age_ms: oldest.map_or(0, |at| (now - at).max(0)),
                owner: cursor
                    .as_ref()
                    .filter(|c| c.lease_until > now)
                    .and_then(|c| c.owner.clone()),
                lease_until: cursor.as_ref().map(|c| c.lease_until),
                tenant,
                position,
                by_type,
            });
        }
        Ok(statuses)
    }
}

/// Most events one replay may select.
pub const MAX_REPLAY: i64 = 10_000;

/// What `POST /admin/v1/events/replay` publishes again (with the events'
/// own ids): events by id, a range of feed positions, or every dead event
/// of a type. Only events the relay has passed are selected; later ones
/// are published anyway.
#[derive(Debug, Clone, Default)]
pub struct ReplaySelection {
    /// Events by id.
    pub event_ids: Vec<String>,
    /// Feed positions `from..=to`.
    pub positions: Option<(i64, i64)>,
    /// Every dead event of this type.
    pub dead_of_type: Option<String>,
}

impl App {
    /// The tenant's events the relay dead-lettered, by feed position, and
    /// how many of their customers' events wait behind them.
    pub async fn dead_events(
        &self,
        tenant: &str,
        sink: &str,
    ) -> Result<(Vec<crate::store::RelayEventRecord>, i64)> {
        use crate::store::RelayQueries;
        let rows = self.store().relay_events(tenant, sink, None).await?;
        let held = rows.iter().filter(|r| r.state == "HELD").count() as i64;
        Ok((
            rows.into_iter().filter(|r| r.state == "DEAD").collect(),
            held,
        ))
    }

    /// An operator gives up on dead event `event_id`: it stays in its
    /// dead-letter topic, and its customer's held events go out next round.
    pub async fn skip_event(&self, tenant: &str, sink: &str, event_id: &str) -> Result<()> {
        use crate::store::{RelayTx, Transactions, TxOps};
        let mut tx = self.store().begin(tenant).await?;
        let rows = tx.relay_events_in_tx(sink).await?;
        if !rows
            .iter()
            .any(|r| r.event_id == event_id && r.state == "DEAD")
        {
            return Err(AppError::NotFound(format!(
                "no dead event `{event_id}` of tenant `{tenant}`"
            )));
        }
        tx.drop_relay_event(sink, event_id).await?;
        tx.commit(None).await?;
        tracing::info!(tenant, event_id, "relay.event_skipped");
        Ok(())
    }

    /// Marks the selected events for publishing again (module docs of
    /// [`crate::events`]); how many were selected.
    pub async fn replay_events(
        &self,
        tenant: &str,
        sink: &str,
        selection: ReplaySelection,
    ) -> Result<i64> {
        use crate::store::{RelayQueries, RelayTx, Transactions, TxOps};
        let cursor = self
            .store()
            .relay_cursor(tenant, sink)
            .await?
            .map_or(0, |c| c.position);
        let mut chosen: Vec<EventRecord> = Vec::new();
        for id in &selection.event_ids {
            let event = self
                .store()
                .event_by_id(tenant, id)
                .await?
                .ok_or_else(|| AppError::NotFound(format!("no event `{id}` in the feed")))?;
            chosen.push(event);
        }
        if let Some((from, to)) = selection.positions {
            if from < 1 || to < from || to - from >= MAX_REPLAY {
                return Err(AppError::Invalid(format!(
                    "positions must be 1 <= fromPosition <= toPosition, at most {MAX_REPLAY} apart"
                )));
            }
            chosen.extend(
                self.store()
                    .events(tenant, from - 1, to - from + 1)
                    .await?
                    .into_iter()
                    .filter(|e| e.feed_seq <= to),
            );
        }
        let rows = self.store().relay_events(tenant, sink, None).await?;
        if let Some(kind) = &selection.dead_of_type {
            for row in rows
                .iter()
                .filter(|r| r.state == "DEAD" && &r.event_type == kind)
            {
                if let Some(event) = self.store().event_by_id(tenant, &row.event_id).await? {
                    chosen.push(event);
                }
            }
        }
        if chosen.len() as i64 > MAX_REPLAY {
            return Err(AppError::Invalid(format!(
                "at most {MAX_REPLAY} events per replay"
            )));
        }
        let now = self.now();
        let mut tx = self.store().begin(tenant).await?;
        // What the relay holds as of this transaction (it may have held or
        // dead-lettered one since the read above).
        let rows = tx.relay_events_in_tx(sink).await?;
        let mut replayed = 0;
        let mut seen = std::collections::HashSet::new();
        for event in chosen {
            if event.feed_seq > cursor || !seen.insert(event.event_id.clone()) {
                continue;
            }
            let existing = rows.iter().find(|r| r.event_id == event.event_id);
            // Held or still being tried: it goes out as it is.
            if existing.is_some_and(|r| r.state == "HELD" || r.state == "FAILING") {
                continue;
            }
            tx.put_relay_event(
                sink,
                &crate::store::RelayEventRecord {
                    event_id: event.event_id.clone(),
                    position: event.feed_seq,
                    customer_id: event.subject.clone(),
                    event_type: event.event_type.clone(),
                    state: "REPLAY".into(),
                    attempts: existing.map_or(0, |r| r.attempts),
                    last_error: existing.and_then(|r| r.last_error.clone()),
                    created_at: existing.map_or(now, |r| r.created_at),
                    updated_at: now,
                    next_attempt_at: None,
                },
            )
            .await?;
            replayed += 1;
        }
        tx.commit(None).await?;
        tracing::info!(tenant, replayed, "relay.events_replayed");
        Ok(replayed)
    }
}

/// Events one pruning statement removes at most.
const PRUNE_BATCH: i64 = 10_000;

/// The relay's sinks (`relay_cursors.sink`).
pub const KNOWN_SINKS: [&str; 2] = [crate::events::kafka::SINK, crate::events::webhook::SINK];

impl App {
    /// Outbox retention: per tenant, removes the events older than
    /// `retention_ms` before `now` that every sink in `sinks` has published
    /// (with no sink, all of them: the feed's window), in batches; how many
    /// went. The feed then starts after them (README: "Events feed").
    pub async fn prune_outbox(&self, now: i64, retention_ms: i64, sinks: &[&str]) -> Result<u64> {
        use crate::store::{Maintenance, RelayQueries};
        let before = now - retention_ms;
        let mut pruned = 0;
        let tenants: Vec<String> = self.tenants().iter().map(|t| t.id.clone()).collect();
        for tenant in tenants {
            let mut through = i64::MAX;
            // Every sink a relay ever published to counts, configured on
            // this host or not (another host's relay may still owe events);
            // a configured one that never started holds everything.
            for sink in KNOWN_SINKS {
                let cursor = self.store().relay_cursor(&tenant, sink).await?;
                match cursor {
                    Some(cursor) => through = through.min(cursor.position),
                    None if sinks.contains(&sink) => through = 0,
                    // A tenant's webhook is its own configuration.
                    None if sink == crate::events::webhook::SINK
                        && self
                            .tenants()
                            .get(&tenant)
                            .is_some_and(|t| t.webhook.is_some()) =>
                    {
                        through = 0
                    }
                    None => {}
                }
                // Events the relay still owes (held, dead, to replay,
                // failing) sit at or below the cursor: they stay.
                if let Some(first) = self
                    .store()
                    .relay_events(&tenant, sink, None)
                    .await?
                    .first()
                {
                    through = through.min(first.position - 1);
                }
            }
            loop {
                let n = self
                    .store()
                    .prune_outbox(&tenant, before, through, PRUNE_BATCH)
                    .await?;
                pruned += n;
                if n < PRUNE_BATCH as u64 {
                    break;
                }
            }
        }
        Ok(pruned)
    }
}

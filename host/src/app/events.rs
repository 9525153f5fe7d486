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
}

impl App {
    /// Every tenant's publishing to `sink`, as of `now`.
    pub async fn relay_status(&self, sink: &str, now: i64) -> Result<Vec<RelayStatus>> {
        use crate::store::{Maintenance, RelayQueries};
        // PostgreSQL numbers committed events after commit: what committed
        // since the last pass counts as waiting too.
        self.store().sequence_feed().await?;
        let mut statuses = Vec::new();
        let tenants: Vec<String> = self.tenants().iter().map(|t| t.id.clone()).collect();
        for tenant in tenants {
            let cursor = self.store().relay_cursor(&tenant, sink).await?;
            let position = cursor.as_ref().map_or(0, |c| c.position);
            let by_type = self.store().relay_counts(&tenant, position).await?;
            let oldest = by_type.iter().filter_map(|t| t.oldest_pending_at).min();
            statuses.push(RelayStatus {
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

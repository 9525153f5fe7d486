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

//! Where the outbox relay stands (`relay_cursors`, migration 0016): per
//! tenant and sink, the feed position last acknowledged and the lease of
//! the one host that publishes it.
//!
//! A host claims a cursor when no other host holds a live lease on it (or
//! it holds it already), and moves the position on only while it is still
//! the owner: a host that stalled past its lease can never move a cursor
//! another host took over. That the lease outlasts a round (the relay's
//! `lease_ms` is at least three delivery timeouts) keeps two publishers
//! from producing one tenant's events at once.
//!
//! The SQL is written once in `relay_queries!` and compiled for each
//! backend (see [`super::queries`] for why a macro).

use std::future::Future;

use super::error::Result;
use super::pg_pool::pg_read;
use super::postgres::PgTx;
use super::sqlite::SqliteTx;
use super::{PgStore, SqliteStore, Store, Tx};

/// A cursor as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RelayCursor {
    /// The sink (`kafka`, `webhook`).
    pub sink: String,
    /// Feed position of the last event the sink acknowledged.
    pub position: i64,
    /// The host holding the lease.
    pub owner: Option<String>,
    /// When the lease ends (ms since the epoch).
    pub lease_until: i64,
    /// Last changed.
    pub updated_at: i64,
}

/// An event the relay could not publish as it came (`relay_events`).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RelayEventRecord {
    /// The event's id (the CloudEvents id).
    pub event_id: String,
    /// Its feed position.
    pub position: i64,
    /// Its customer (the record key).
    pub customer_id: String,
    /// Its type.
    pub event_type: String,
    /// `FAILING`, `DEAD`, `HELD` or `REPLAY`.
    pub state: String,
    /// Rounds in which the broker refused it for good.
    pub attempts: i64,
    /// The last refusal.
    pub last_error: Option<String>,
    /// First recorded (ms since the epoch).
    pub created_at: i64,
    /// Last changed.
    pub updated_at: i64,
    /// When a `FAILING` webhook delivery is due again (ms since the
    /// epoch); `None` for Kafka rows (tried every round).
    pub next_attempt_at: Option<i64>,
}

/// Events of one type: published (at or before the cursor) and waiting.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RelayTypeCounts {
    /// The event type.
    #[sqlx(rename = "type")]
    pub event_type: String,
    /// Events at or before the cursor.
    pub published: i64,
    /// Events after it.
    pub pending: i64,
    /// When the oldest waiting one happened (ms since the epoch).
    pub oldest_pending_at: Option<i64>,
}

/// Reads outside a transaction.
pub trait RelayQueries: Send + Sync {
    /// The tenant's cursor of `sink`, if a relay ever claimed it.
    fn relay_cursor(
        &self,
        tenant: &str,
        sink: &str,
    ) -> impl Future<Output = Result<Option<RelayCursor>>> + Send;

    /// The tenant's numbered events by type, split at feed position
    /// `position` (a scan of the tenant's outbox: for operators, not for
    /// the request path).
    fn relay_counts(
        &self,
        tenant: &str,
        position: i64,
    ) -> impl Future<Output = Result<Vec<RelayTypeCounts>>> + Send;

    /// The tenant's events of `sink` in relay_events (`state`: all when
    /// `None`), by feed position.
    fn relay_events(
        &self,
        tenant: &str,
        sink: &str,
        state: Option<&str>,
    ) -> impl Future<Output = Result<Vec<RelayEventRecord>>> + Send;

    /// One of the tenant's numbered events, by id.
    fn event_by_id(
        &self,
        tenant: &str,
        event_id: &str,
    ) -> impl Future<Output = Result<Option<crate::store::EventRecord>>> + Send;
}

/// Writes inside the tenant's transaction.
pub trait RelayTx: Send {
    /// Takes (or renews) the lease of the tenant's `sink` cursor for
    /// `owner` until `lease_until`, creating the cursor at position 0 the
    /// first time; `None` while another owner's lease is live at `now`.
    fn claim_relay(
        &mut self,
        sink: &str,
        owner: &str,
        now_and_lease_until: (i64, i64),
    ) -> impl Future<Output = Result<Option<RelayCursor>>> + Send;

    /// Moves the cursor on to `position` (never back) and renews the lease,
    /// if `owner` is still the owner (no other host claimed it since);
    /// `false` when it lost it.
    fn advance_relay(
        &mut self,
        sink: &str,
        owner: &str,
        position: i64,
        now_and_lease_until: (i64, i64),
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The tenant's events of `sink` in relay_events, by feed position.
    fn relay_events_in_tx(
        &mut self,
        sink: &str,
    ) -> impl Future<Output = Result<Vec<RelayEventRecord>>> + Send;

    /// Stores (or replaces) the row of `event.event_id`.
    fn put_relay_event(
        &mut self,
        sink: &str,
        event: &RelayEventRecord,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes the row of `event_id` (published, or skipped); whether there
    /// was one.
    fn drop_relay_event(
        &mut self,
        sink: &str,
        event_id: &str,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Gives up `owner`'s lease (a host stopping), so another host takes
    /// over at once.
    fn release_relay(
        &mut self,
        sink: &str,
        owner: &str,
        now: i64,
    ) -> impl Future<Output = Result<()>> + Send;
}

macro_rules! relay_queries {
    (db = $db:ty) => {
        use super::*;

        type Db = $db;

        pub(super) async fn claim<'e, E>(
            ex: E,
            tenant: &str,
            sink: &str,
            owner: &str,
            (now, lease_until): (i64, i64),
        ) -> Result<Option<RelayCursor>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            // One statement: create the cursor unleased, or take it where
            // no other owner's lease is live.
            Ok(sqlx::query_as::<_, RelayCursor>(
                "INSERT INTO relay_cursors (tenant_id, sink, position, owner, lease_until, \
                   updated_at) VALUES ($1, $2, 0, $3, $5, $4) \
                 ON CONFLICT (tenant_id, sink) DO UPDATE \
                   SET owner = excluded.owner, lease_until = excluded.lease_until, \
                     updated_at = excluded.updated_at \
                   WHERE relay_cursors.owner = excluded.owner \
                     OR relay_cursors.owner IS NULL OR relay_cursors.lease_until <= $4 \
                 RETURNING sink, position, owner, lease_until, updated_at",
            )
            .bind(tenant)
            .bind(sink)
            .bind(owner)
            .bind(now)
            .bind(lease_until)
            .fetch_optional(ex)
            .await?)
        }

        pub(super) async fn advance<'e, E>(
            ex: E,
            tenant: &str,
            sink: &str,
            owner: &str,
            position: i64,
            (now, lease_until): (i64, i64),
        ) -> Result<bool>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let done = sqlx::query(
                "UPDATE relay_cursors \
                 SET position = CASE WHEN position < $4 THEN $4 ELSE position END, \
                   lease_until = $6, updated_at = $5 \
                 WHERE tenant_id = $1 AND sink = $2 AND owner = $3",
            )
            .bind(tenant)
            .bind(sink)
            .bind(owner)
            .bind(position)
            .bind(now)
            .bind(lease_until)
            .execute(ex)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        pub(super) async fn relay_events<'e, E>(
            ex: E,
            tenant: &str,
            sink: &str,
            state: Option<&str>,
        ) -> Result<Vec<RelayEventRecord>>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            Ok(sqlx::query_as::<_, RelayEventRecord>(
                "SELECT event_id, position, customer_id, event_type, state, attempts, last_error, \
                   created_at, updated_at, next_attempt_at FROM relay_events \
                 WHERE tenant_id = $1 AND sink = $2 AND ($3 IS NULL OR state = $3) \
                 ORDER BY position",
            )
            .bind(tenant)
            .bind(sink)
            .bind(state)
            .fetch_all(ex)
            .await?)
        }

        pub(super) async fn put_event<'e, E>(
            ex: E,
            tenant: &str,
            sink: &str,
            e: &RelayEventRecord,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "INSERT INTO relay_events (tenant_id, sink, event_id, position, customer_id, \
                   event_type, state, attempts, last_error, created_at, updated_at, \
                   next_attempt_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (tenant_id, sink, event_id) DO UPDATE \
                   SET state = excluded.state, attempts = excluded.attempts, \
                     last_error = excluded.last_error, updated_at = excluded.updated_at, \
                     next_attempt_at = excluded.next_attempt_at",
            )
            .bind(tenant)
            .bind(sink)
            .bind(&e.event_id)
            .bind(e.position)
            .bind(&e.customer_id)
            .bind(&e.event_type)
            .bind(&e.state)
            .bind(e.attempts)
            .bind(&e.last_error)
            .bind(e.created_at)
            .bind(e.updated_at)
            .bind(e.next_attempt_at)
            .execute(ex)
            .await?;
            Ok(())
        }

        pub(super) async fn drop_event<'e, E>(
            ex: E,
            tenant: &str,
            sink: &str,
            event_id: &str,
        ) -> Result<bool>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            let done = sqlx::query(
                "DELETE FROM relay_events WHERE tenant_id = $1 AND sink = $2 AND event_id = $3",
            )
            .bind(tenant)
            .bind(sink)
            .bind(event_id)
            .execute(ex)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        pub(super) async fn release<'e, E>(
            ex: E,
            tenant: &str,
            sink: &str,
            owner: &str,
            now: i64,
        ) -> Result<()>
        where
            E: sqlx::Executor<'e, Database = Db>,
        {
            sqlx::query(
                "UPDATE relay_cursors SET owner = NULL, lease_until = $4, updated_at = $4 \
                 WHERE tenant_id = $1 AND sink = $2 AND owner = $3",
            )
            .bind(tenant)
            .bind(sink)
            .bind(owner)
            .bind(now)
            .execute(ex)
            .await?;
            Ok(())
        }
    };
}

/// The per-type split, by where each backend keeps feed positions
/// (SQLite: on the outbox row; PostgreSQL: `outbox_feed`, numbered after
/// commit).
const SQLITE_COUNTS: &str = "SELECT type, \
       CAST(SUM(CASE WHEN feed_seq <= $2 THEN 1 ELSE 0 END) AS BIGINT) AS published, \
       CAST(SUM(CASE WHEN feed_seq > $2 THEN 1 ELSE 0 END) AS BIGINT) AS pending, \
       MIN(CASE WHEN feed_seq > $2 THEN time END) AS oldest_pending_at \
     FROM outbox_events WHERE tenant_id = $1 AND feed_seq IS NOT NULL \
     GROUP BY type ORDER BY type";
const PG_COUNTS: &str = "SELECT o.type, \
       CAST(SUM(CASE WHEN f.feed_seq <= $2 THEN 1 ELSE 0 END) AS BIGINT) AS published, \
       CAST(SUM(CASE WHEN f.feed_seq > $2 THEN 1 ELSE 0 END) AS BIGINT) AS pending, \
       MIN(CASE WHEN f.feed_seq > $2 THEN o.time END) AS oldest_pending_at \
     FROM outbox_feed f JOIN outbox_events o ON o.id = f.event_row \
     WHERE f.tenant_id = $1 GROUP BY o.type ORDER BY o.type";
const CURSOR: &str = "SELECT sink, position, owner, lease_until, updated_at FROM relay_cursors \
     WHERE tenant_id = $1 AND sink = $2";

const SQLITE_EVENT: &str = "SELECT feed_seq, event_id, type, source, subject, time, data, \
       transaction_id, request_id FROM outbox_events \
     WHERE tenant_id = $1 AND event_id = $2 AND feed_seq IS NOT NULL";
const PG_EVENT: &str = "SELECT f.feed_seq, o.event_id, o.type, o.source, o.subject, o.time, \
       o.data, o.transaction_id, o.request_id \
     FROM outbox_events o JOIN outbox_feed f ON f.event_row = o.id \
     WHERE o.tenant_id = $1 AND o.event_id = $2";

impl RelayQueries for SqliteStore {
    async fn relay_events(
        &self,
        tenant: &str,
        sink: &str,
        state: Option<&str>,
    ) -> Result<Vec<RelayEventRecord>> {
        sqlite_q::relay_events(&self.reader, tenant, sink, state).await
    }

    async fn event_by_id(
        &self,
        tenant: &str,
        event_id: &str,
    ) -> Result<Option<crate::store::EventRecord>> {
        Ok(sqlx::query_as::<_, crate::store::EventRecord>(SQLITE_EVENT)
            .bind(tenant)
            .bind(event_id)
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn relay_cursor(&self, tenant: &str, sink: &str) -> Result<Option<RelayCursor>> {
        Ok(sqlx::query_as::<_, RelayCursor>(CURSOR)
            .bind(tenant)
            .bind(sink)
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn relay_counts(&self, tenant: &str, position: i64) -> Result<Vec<RelayTypeCounts>> {
        Ok(sqlx::query_as::<_, RelayTypeCounts>(SQLITE_COUNTS)
            .bind(tenant)
            .bind(position)
            .fetch_all(&self.reader)
            .await?)
    }
}

impl RelayQueries for PgStore {
    async fn relay_events(
        &self,
        tenant: &str,
        sink: &str,
        state: Option<&str>,
    ) -> Result<Vec<RelayEventRecord>> {
        pg_read!(self.db, |conn| pg_q::relay_events(
            conn, tenant, sink, state
        ))
    }

    async fn event_by_id(
        &self,
        tenant: &str,
        event_id: &str,
    ) -> Result<Option<crate::store::EventRecord>> {
        pg_read!(self.db, |conn| {
            sqlx::query_as::<_, crate::store::EventRecord>(PG_EVENT)
                .bind(tenant)
                .bind(event_id)
                .fetch_optional(conn)
        })
    }

    async fn relay_cursor(&self, tenant: &str, sink: &str) -> Result<Option<RelayCursor>> {
        pg_read!(self.db, |conn| sqlx::query_as::<_, RelayCursor>(CURSOR)
            .bind(tenant)
            .bind(sink)
            .fetch_optional(conn))
    }

    async fn relay_counts(&self, tenant: &str, position: i64) -> Result<Vec<RelayTypeCounts>> {
        pg_read!(self.db, |conn| sqlx::query_as::<_, RelayTypeCounts>(
            PG_COUNTS
        )
        .bind(tenant)
        .bind(position)
        .fetch_all(conn))
    }
}

impl RelayQueries for Store {
    async fn relay_events(
        &self,
        tenant: &str,
        sink: &str,
        state: Option<&str>,
    ) -> Result<Vec<RelayEventRecord>> {
        dispatch!(self, s => s.relay_events(tenant, sink, state).await)
    }

    async fn event_by_id(
        &self,
        tenant: &str,
        event_id: &str,
    ) -> Result<Option<crate::store::EventRecord>> {
        dispatch!(self, s => s.event_by_id(tenant, event_id).await)
    }

    async fn relay_cursor(&self, tenant: &str, sink: &str) -> Result<Option<RelayCursor>> {
        dispatch!(self, s => s.relay_cursor(tenant, sink).await)
    }

    async fn relay_counts(&self, tenant: &str, position: i64) -> Result<Vec<RelayTypeCounts>> {
        dispatch!(self, s => s.relay_counts(tenant, position).await)
    }
}

mod sqlite_q {
    relay_queries!(db = sqlx::Sqlite);
}

mod pg_q {
    relay_queries!(db = sqlx::Postgres);
}

macro_rules! relay_tx {
    ($ty:ty, $q:ident) => {
        impl RelayTx for $ty {
            async fn claim_relay(
                &mut self,
                sink: &str,
                owner: &str,
                at: (i64, i64),
            ) -> Result<Option<RelayCursor>> {
                $q::claim(&mut *self.tx, &self.tenant, sink, owner, at).await
            }

            async fn advance_relay(
                &mut self,
                sink: &str,
                owner: &str,
                position: i64,
                at: (i64, i64),
            ) -> Result<bool> {
                $q::advance(&mut *self.tx, &self.tenant, sink, owner, position, at).await
            }

            async fn release_relay(&mut self, sink: &str, owner: &str, now: i64) -> Result<()> {
                $q::release(&mut *self.tx, &self.tenant, sink, owner, now).await
            }

            async fn relay_events_in_tx(&mut self, sink: &str) -> Result<Vec<RelayEventRecord>> {
                $q::relay_events(&mut *self.tx, &self.tenant, sink, None).await
            }

            async fn put_relay_event(
                &mut self,
                sink: &str,
                event: &RelayEventRecord,
            ) -> Result<()> {
                $q::put_event(&mut *self.tx, &self.tenant, sink, event).await
            }

            async fn drop_relay_event(&mut self, sink: &str, event_id: &str) -> Result<bool> {
                $q::drop_event(&mut *self.tx, &self.tenant, sink, event_id).await
            }
        }
    };
}

relay_tx!(SqliteTx, sqlite_q);
relay_tx!(PgTx, pg_q);

impl RelayTx for Tx {
    async fn claim_relay(
        &mut self,
        sink: &str,
        owner: &str,
        at: (i64, i64),
    ) -> Result<Option<RelayCursor>> {
        dispatch_tx!(self, t => t.claim_relay(sink, owner, at).await)
    }

    async fn advance_relay(
        &mut self,
        sink: &str,
        owner: &str,
        position: i64,
        at: (i64, i64),
    ) -> Result<bool> {
        dispatch_tx!(self, t => t.advance_relay(sink, owner, position, at).await)
    }

    async fn release_relay(&mut self, sink: &str, owner: &str, now: i64) -> Result<()> {
        dispatch_tx!(self, t => t.release_relay(sink, owner, now).await)
    }

    async fn relay_events_in_tx(&mut self, sink: &str) -> Result<Vec<RelayEventRecord>> {
        dispatch_tx!(self, t => t.relay_events_in_tx(sink).await)
    }

    async fn put_relay_event(&mut self, sink: &str, event: &RelayEventRecord) -> Result<()> {
        dispatch_tx!(self, t => t.put_relay_event(sink, event).await)
    }

    async fn drop_relay_event(&mut self, sink: &str, event_id: &str) -> Result<bool> {
        dispatch_tx!(self, t => t.drop_relay_event(sink, event_id).await)
    }
}

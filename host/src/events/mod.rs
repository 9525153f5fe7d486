//! Events out: the outbox relay and its sinks.
//!
//! Every effect writes its event to the outbox in the transaction that
//! makes it, and the feed numbers them in commit order per tenant
//! (`GET /api/v1/events`). The relay publishes the same events, by the same
//! positions, to Kafka ([`kafka`]), as CloudEvents in the Kafka binding's
//! binary mode ([`cloudevents`]), keyed by the customer so that one
//! customer's events stay in order.
//!
//! One host publishes a tenant at a time: it holds the tenant's lease on
//! the sink's cursor (`store::RelayTx`), produces a batch from the cursor,
//! waits until the broker acknowledged each record, and only then moves
//! the cursor past them. A host that stops anywhere leaves the cursor at
//! the last acknowledged event; whoever holds the lease next publishes
//! from there (at least once: a record acknowledged after the last move is
//! published again, with the same `ce_id`).

pub mod cloudevents;
pub mod kafka;
pub mod webhook;

use std::collections::HashMap;
use std::time::Duration;

use crate::app::App;
use crate::store::{
    EventRecord, RelayCursor, RelayEventRecord, RelayQueries, RelayTx, StoreError, Transactions,
    TxOps,
};

/// What one round over every tenant did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayRun {
    /// Tenants whose lease this host holds.
    pub tenants: u64,
    /// Events the sink acknowledged (the cursors moved past them).
    pub published: u64,
    /// Tenants whose round stopped at a failure (retried later).
    pub failed: u64,
    /// Events given up (dead-lettered).
    pub dead: u64,
    /// Events held behind an earlier event of their customer.
    pub held: u64,
    /// Whether some tenant had a full batch: the next round should start
    /// at once.
    pub more: bool,
}

/// A change to `relay_events`, written with the cursor's move.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    Put(RelayEventRecord),
    Drop(String),
}

/// A `relay_events` row for `event`.
pub(crate) fn pending_row(
    event: &EventRecord,
    state: &str,
    attempts: i64,
    last_error: Option<String>,
    now: i64,
) -> RelayEventRecord {
    RelayEventRecord {
        event_id: event.event_id.clone(),
        position: event.feed_seq,
        customer_id: event.subject.clone(),
        event_type: event.event_type.clone(),
        state: state.into(),
        attempts,
        last_error,
        created_at: now,
        updated_at: now,
        next_attempt_at: None,
    }
}

/// A time (ms since the epoch) per tenant, as this host last noted it.
#[derive(Default)]
pub(crate) struct TenantTimes(std::sync::Mutex<HashMap<String, i64>>);

impl TenantTimes {
    pub(crate) fn get(&self, tenant: &str) -> Option<i64> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .copied()
    }

    pub(crate) fn set(&self, tenant: &str, at: Option<i64>) {
        let mut times = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match at {
            Some(at) => times.insert(tenant.to_owned(), at),
            None => times.remove(tenant),
        };
    }
}

/// One host's hold on the tenants' cursors of one sink (`relay_cursors`).
///
/// It remembers until when it holds each tenant's lease, as it last wrote
/// it: while more than half of it is left a round reads instead of
/// claiming, and a round that moves nothing writes nothing (an idle tenant
/// costs no write transaction per round).
pub(crate) struct Leases {
    sink: &'static str,
    owner: String,
    lease: Duration,
    until: TenantTimes,
}

impl Leases {
    pub(crate) fn new(sink: &'static str, owner: String, lease: Duration) -> Leases {
        Leases {
            sink,
            owner,
            lease,
            until: TenantTimes::default(),
        }
    }

    /// The host's name in the cursors' leases.
    pub(crate) fn owner(&self) -> &str {
        &self.owner
    }

    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// The tenant's cursor and its `relay_events` rows, when this host
    /// holds (or now takes) the lease; `None` while another host holds it.
    pub(crate) async fn begin(
        &self,
        app: &App,
        tenant: &str,
    ) -> Result<Option<(RelayCursor, Vec<RelayEventRecord>)>, StoreError> {
        let lease = self.lease_ms();
        let now = app.now();
        // Still ours for more than half the lease (nobody can claim a live
        // lease): read where the cursor stands, no write.
        let ours = match self.until.get(tenant) {
            Some(until) if until - now > lease / 2 => app
                .store()
                .relay_cursor(tenant, self.sink)
                .await?
                .filter(|c| c.owner.as_deref() == Some(self.owner.as_str())),
            _ => None,
        };
        if let Some(cursor) = ours {
            let rows = app.store().relay_events(tenant, self.sink, None).await?;
            return Ok(Some((cursor, rows)));
        }
        let mut tx = app.store().begin(tenant).await?;
        let cursor = tx
            .claim_relay(self.sink, &self.owner, (now, now + lease))
            .await?;
        let rows = match cursor {
            Some(_) => tx.relay_events_in_tx(self.sink).await?,
            None => Vec::new(),
        };
        tx.commit(None).await?;
        match cursor {
            Some(cursor) => {
                self.until.set(tenant, Some(now + lease));
                Ok(Some((cursor, rows)))
            }
            None => {
                self.until.set(tenant, None);
                Ok(None)
            }
        }
    }

    /// Keeps this host's lease on a tenant it holds but has nothing to do
    /// for now (a resting webhook tenant), so that no other host takes it
    /// over meanwhile: renewed once half of it is gone, nothing read or
    /// written before. `false` when another host holds it.
    pub(crate) async fn keep(&self, app: &App, tenant: &str) -> Result<bool, StoreError> {
        let lease = self.lease_ms();
        let now = app.now();
        if self
            .until
            .get(tenant)
            .is_some_and(|until| until - now > lease / 2)
        {
            return Ok(true);
        }
        let mut tx = app.store().begin(tenant).await?;
        let cursor = tx
            .claim_relay(self.sink, &self.owner, (now, now + lease))
            .await?;
        tx.commit(None).await?;
        self.until
            .set(tenant, cursor.is_some().then_some(now + lease));
        Ok(cursor.is_some())
    }

    /// Writes `writes` and moves the cursor from `from` on to `to` in one
    /// transaction, if this host still holds the lease (renewing it);
    /// `false` when another host took the tenant over meanwhile (nothing
    /// is written: that host publishes from its own cursor). Nothing
    /// changed, nothing is written.
    pub(crate) async fn finish(
        &self,
        app: &App,
        tenant: &str,
        writes: &[Write],
        (from, to): (i64, i64),
    ) -> Result<bool, StoreError> {
        if writes.is_empty() && to == from {
            return Ok(true);
        }
        let lease = self.lease_ms();
        let now = app.now();
        let mut tx = app.store().begin(tenant).await?;
        for write in writes {
            match write {
                Write::Put(row) => tx.put_relay_event(self.sink, row).await?,
                Write::Drop(id) => {
                    tx.drop_relay_event(self.sink, id).await?;
                }
            }
        }
        let held = tx
            .advance_relay(self.sink, &self.owner, to, (now, now + lease))
            .await?;
        if held {
            tx.commit(None).await?;
            self.until.set(tenant, Some(now + lease));
        } else {
            self.until.set(tenant, None);
            tx.rollback().await?;
            tracing::warn!(tenant, sink = self.sink, owner = %self.owner, "relay.lease_lost");
        }
        Ok(held)
    }

    /// Gives up this host's leases of `tenants` (on shutdown), so another
    /// host takes them over at once.
    pub(crate) async fn release(&self, app: &App, tenants: &[String]) {
        for tenant in tenants {
            let released = async {
                let mut tx = app.store().begin(tenant).await?;
                tx.release_relay(self.sink, &self.owner, app.now()).await?;
                tx.commit(None).await
            };
            if let Err(error) = released.await {
                tracing::warn!(%tenant, sink = self.sink, %error, "relay.release_failed");
            }
            self.until.set(tenant, None);
        }
    }
}

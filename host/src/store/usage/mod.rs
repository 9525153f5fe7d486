//! Metered usage: the events (deduplicated by `(tenant, event id)` forever,
//! the primary key), their per-metric totals, and period closes.
//!
//! Batches are written with one multi-row `INSERT … ON CONFLICT DO NOTHING
//! RETURNING event_id` per chunk (SQLite: bound `VALUES`, chunked under its
//! 32766-parameter limit; PostgreSQL: one `UNNEST` of arrays), never a round
//! trip per event. Rows are inserted in event-id order, so two batches that
//! share ids lock them in the same order and cannot deadlock (PostgreSQL
//! makes the second wait for the first's commit, then skips the rows).
//!
//! Totals are summed in SQL as two 32-bit halves: each half's sum fits in
//! 64 bits for any realistic row count, and the host recombines them in
//! 128 bits. A plain `SUM` would make SQLite raise "integer overflow" and
//! PostgreSQL answer a NUMERIC, so a customer who reported more than
//! `i64::MAX` units gets a clear overflow error instead of a 500.

mod postgres;
mod sqlite;

use std::future::Future;

use super::error::{Result, StoreError};
use super::{Store, Tx};

// ── Records ────────────────────────────────────────────────────────────────

/// One usage event as stored (and as a batch writes it).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageEventRecord {
    /// The tenant's id for the event.
    pub event_id: String,
    /// Whose usage.
    pub customer_id: String,
    /// The metric.
    pub metric: String,
    /// Units (≥ 0).
    pub quantity: i64,
    /// When it happened (ms since the epoch).
    pub occurred_at: i64,
    /// JSON object of string → string, keys sorted (canonical, so equal
    /// properties are equal text).
    pub properties: String,
}

/// A customer's usage of one metric over a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricTotal {
    /// The metric.
    pub metric: String,
    /// Σ quantity.
    pub quantity: i64,
}

/// A closed period of one customer.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PeriodCloseRecord {
    /// The close's id.
    pub close_id: String,
    /// Whose.
    pub customer_id: String,
    /// Start (inclusive, ms).
    pub period_start: i64,
    /// End (exclusive, ms).
    pub period_end: i64,
}

/// A period close to insert.
#[derive(Debug, Clone)]
pub struct NewPeriodClose {
    /// The close's id (also its business transaction id).
    pub close_id: String,
    /// Whose usage.
    pub customer_id: String,
    /// Start (inclusive, ms).
    pub period_start: i64,
    /// End (exclusive, ms).
    pub period_end: i64,
    /// The order it created (`None`: nothing to bill).
    pub order_id: Option<String>,
    /// The metered quote (JSON).
    pub quote: String,
    /// The pricing binding's name.
    pub policy: String,
    /// Its content hash.
    pub policy_hash: String,
    /// When (ms since the epoch).
    pub now: i64,
}

// ── Traits ─────────────────────────────────────────────────────────────────

/// Usage reads outside a transaction.
pub trait UsageQueries: Send + Sync {
    /// A customer's usage per metric over `[from, to)`, by metric name.
    fn usage_totals(
        &self,
        tenant: &str,
        customer_id: &str,
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<MetricTotal>>> + Send;
}

/// Usage writes inside a tenant's transaction.
pub trait UsageTx: Send {
    /// Which of `customer_ids` exist, each locked against a concurrent
    /// period close until the transaction ends (PostgreSQL: `FOR SHARE`;
    /// SQLite's write transaction already excludes every other writer).
    fn lock_usage_customers(
        &mut self,
        customer_ids: &[String],
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// The closes of `customer_ids` that overlap `[from, to]`.
    fn closed_periods(
        &mut self,
        customer_ids: &[String],
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<PeriodCloseRecord>>> + Send;

    /// Inserts the events whose id is new; returns the ids inserted.
    fn insert_usage_events(
        &mut self,
        events: &[UsageEventRecord],
        now: i64,
    ) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// The stored events among `event_ids`.
    fn stored_usage_events(
        &mut self,
        event_ids: &[String],
    ) -> impl Future<Output = Result<Vec<UsageEventRecord>>> + Send;

    /// Locks the customer for a period close; `false`: no such customer.
    fn lock_customer_for_close(
        &mut self,
        customer_id: &str,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// A close of the customer that overlaps `[start, end)`, if any.
    fn overlapping_close(
        &mut self,
        customer_id: &str,
        start: i64,
        end: i64,
    ) -> impl Future<Output = Result<Option<PeriodCloseRecord>>> + Send;

    /// The customer's usage per metric over `[from, to)`, as this
    /// transaction sees it.
    fn usage_totals(
        &mut self,
        customer_id: &str,
        from: i64,
        to: i64,
    ) -> impl Future<Output = Result<Vec<MetricTotal>>> + Send;

    /// Records a period close.
    fn insert_period_close(
        &mut self,
        close: &NewPeriodClose,
    ) -> impl Future<Output = Result<()>> + Send;
}

// ── Dispatch ───────────────────────────────────────────────────────────────

impl UsageQueries for Store {
    async fn usage_totals(
        &self,
        tenant: &str,
        customer_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<MetricTotal>> {
        dispatch!(self, s => s.usage_totals(tenant, customer_id, from, to).await)
    }
}

impl UsageTx for Tx {
    async fn lock_usage_customers(&mut self, customer_ids: &[String]) -> Result<Vec<String>> {
        dispatch_tx!(self, t => t.lock_usage_customers(customer_ids).await)
    }

    async fn closed_periods(
        &mut self,
        customer_ids: &[String],
        from: i64,
        to: i64,
    ) -> Result<Vec<PeriodCloseRecord>> {
        dispatch_tx!(self, t => t.closed_periods(customer_ids, from, to).await)
    }

    async fn insert_usage_events(
        &mut self,
        events: &[UsageEventRecord],
        now: i64,
    ) -> Result<Vec<String>> {
        dispatch_tx!(self, t => t.insert_usage_events(events, now).await)
    }

    async fn stored_usage_events(&mut self, event_ids: &[String]) -> Result<Vec<UsageEventRecord>> {
        dispatch_tx!(self, t => t.stored_usage_events(event_ids).await)
    }

    async fn lock_customer_for_close(&mut self, customer_id: &str) -> Result<bool> {
        dispatch_tx!(self, t => t.lock_customer_for_close(customer_id).await)
    }

    async fn overlapping_close(
        &mut self,
        customer_id: &str,
        start: i64,
        end: i64,
    ) -> Result<Option<PeriodCloseRecord>> {
        dispatch_tx!(self, t => t.overlapping_close(customer_id, start, end).await)
    }

    async fn usage_totals(
        &mut self,
        customer_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<MetricTotal>> {
        dispatch_tx!(self, t => t.usage_totals(customer_id, from, to).await)
    }

    async fn insert_period_close(&mut self, close: &NewPeriodClose) -> Result<()> {
        dispatch_tx!(self, t => t.insert_period_close(close).await)
    }
}

// ── Statements both backends run verbatim ──────────────────────────────────

/// The per-metric sum as two halves (see the module docs).
pub(super) const TOTALS_SQL: &str = "SELECT metric, \
       CAST(SUM(quantity / 4294967296) AS BIGINT) AS high, \
       CAST(SUM(quantity % 4294967296) AS BIGINT) AS low \
     FROM usage_events \
     WHERE tenant_id = $1 AND customer_id = $2 AND occurred_at >= $3 AND occurred_at < $4 \
     GROUP BY metric ORDER BY metric";

pub(super) fn combine_totals(rows: Vec<(String, i64, i64)>) -> Result<Vec<MetricTotal>> {
    rows.into_iter()
        .map(|(metric, high, low)| {
            let sum = i128::from(high) * (1_i128 << 32) + i128::from(low);
            let quantity = i64::try_from(sum).map_err(|_| StoreError::OutOfRange)?;
            Ok(MetricTotal { metric, quantity })
        })
        .collect()
}

pub(super) const OVERLAP_SQL: &str = "SELECT close_id, customer_id, period_start, period_end \
     FROM period_closes \
     WHERE tenant_id = $1 AND customer_id = $2 AND period_start < $4 AND period_end > $3 \
     ORDER BY period_start LIMIT 1";

pub(super) const INSERT_CLOSE_SQL: &str = "INSERT INTO period_closes (tenant_id, close_id, customer_id, \
       period_start, period_end, order_id, quote, policy, policy_hash, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

pub(super) fn sorted_by_id(events: &[UsageEventRecord]) -> Vec<&UsageEventRecord> {
    let mut sorted: Vec<&UsageEventRecord> = events.iter().collect();
    sorted.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_recombine_their_halves_and_refuse_what_overflows() {
        let rows = vec![
            ("a".to_owned(), 0, 5),
            ("b".to_owned(), 1, 1),
            ("c".to_owned(), i64::from(u32::MAX) * 4, 0),
        ];
        assert!(combine_totals(rows).is_err());
        let ok = combine_totals(vec![("a".to_owned(), 0, 5), ("b".to_owned(), 1, 1)]).unwrap();
        assert_eq!(ok[0].quantity, 5);
        assert_eq!(ok[1].quantity, (1 << 32) + 1);
    }
}

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

use std::future::Future;

use sqlx::{QueryBuilder, Sqlite};

use super::error::{Result, StoreError};
use super::postgres::{PgStore, PgTx};
use super::sqlite::{SqliteStore, SqliteTx};
use super::{Store, Tx};

/// SQLite's limit on bound parameters in one statement.
const SQLITE_MAX_PARAMS: usize = 32_766;
/// Parameters per inserted event row.
const EVENT_PARAMS: usize = 8;

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
const TOTALS_SQL: &str = "SELECT metric, \
       CAST(SUM(quantity / 4294967296) AS BIGINT) AS high, \
       CAST(SUM(quantity % 4294967296) AS BIGINT) AS low \
     FROM usage_events \
     WHERE tenant_id = $1 AND customer_id = $2 AND occurred_at >= $3 AND occurred_at < $4 \
     GROUP BY metric ORDER BY metric";

fn combine_totals(rows: Vec<(String, i64, i64)>) -> Result<Vec<MetricTotal>> {
    rows.into_iter()
        .map(|(metric, high, low)| {
            let sum = i128::from(high) * (1_i128 << 32) + i128::from(low);
            let quantity = i64::try_from(sum).map_err(|_| StoreError::OutOfRange)?;
            Ok(MetricTotal { metric, quantity })
        })
        .collect()
}

const OVERLAP_SQL: &str = "SELECT close_id, customer_id, period_start, period_end \
     FROM period_closes \
     WHERE tenant_id = $1 AND customer_id = $2 AND period_start < $4 AND period_end > $3 \
     ORDER BY period_start LIMIT 1";

const INSERT_CLOSE_SQL: &str = "INSERT INTO period_closes (tenant_id, close_id, customer_id, \
       period_start, period_end, order_id, quote, policy, policy_hash, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

fn sorted_by_id(events: &[UsageEventRecord]) -> Vec<&UsageEventRecord> {
    let mut sorted: Vec<&UsageEventRecord> = events.iter().collect();
    sorted.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    sorted
}

// ── SQLite ─────────────────────────────────────────────────────────────────

impl UsageQueries for SqliteStore {
    async fn usage_totals(
        &self,
        tenant: &str,
        customer_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<MetricTotal>> {
        let rows = sqlx::query_as::<_, (String, i64, i64)>(TOTALS_SQL)
            .bind(tenant)
            .bind(customer_id)
            .bind(from)
            .bind(to)
            .fetch_all(&self.reader)
            .await?;
        combine_totals(rows)
    }
}

/// `… IN (?, ?, …)` over `values`, in chunks that stay under the parameter
/// limit; `head` ends where the list starts.
fn sqlite_in_list<'a>(
    head: &str,
    tenant: &'a str,
    values: &'a [String],
    tail: &str,
) -> QueryBuilder<'a, Sqlite> {
    let mut query = QueryBuilder::<Sqlite>::new(head);
    query.push_bind(tenant);
    query.push(" AND ");
    query.push(tail);
    query.push(" IN (");
    let mut list = query.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    list.push_unseparated(")");
    query
}

impl UsageTx for SqliteTx {
    async fn lock_usage_customers(&mut self, customer_ids: &[String]) -> Result<Vec<String>> {
        let mut found = Vec::with_capacity(customer_ids.len());
        for chunk in customer_ids.chunks(SQLITE_MAX_PARAMS - 1) {
            let mut query = sqlite_in_list(
                "SELECT customer_id FROM customers WHERE tenant_id = ",
                &self.tenant,
                chunk,
                "customer_id",
            );
            let rows: Vec<String> = query.build_query_scalar().fetch_all(&mut *self.tx).await?;
            found.extend(rows);
        }
        Ok(found)
    }

    async fn closed_periods(
        &mut self,
        customer_ids: &[String],
        from: i64,
        to: i64,
    ) -> Result<Vec<PeriodCloseRecord>> {
        let mut closes = Vec::new();
        for chunk in customer_ids.chunks(SQLITE_MAX_PARAMS - 3) {
            let mut query = sqlite_in_list(
                "SELECT close_id, customer_id, period_start, period_end FROM period_closes \
                 WHERE tenant_id = ",
                &self.tenant,
                chunk,
                "customer_id",
            );
            query.push(" AND period_end > ");
            query.push_bind(from);
            query.push(" AND period_start <= ");
            query.push_bind(to);
            let rows: Vec<PeriodCloseRecord> =
                query.build_query_as().fetch_all(&mut *self.tx).await?;
            closes.extend(rows);
        }
        Ok(closes)
    }

    async fn insert_usage_events(
        &mut self,
        events: &[UsageEventRecord],
        now: i64,
    ) -> Result<Vec<String>> {
        let sorted = sorted_by_id(events);
        let mut inserted = Vec::with_capacity(events.len());
        for chunk in sorted.chunks(SQLITE_MAX_PARAMS / EVENT_PARAMS) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO usage_events (tenant_id, event_id, customer_id, metric, quantity, \
                   occurred_at, properties, received_at) ",
            );
            query.push_values(chunk, |mut row, event| {
                row.push_bind(&self.tenant)
                    .push_bind(&event.event_id)
                    .push_bind(&event.customer_id)
                    .push_bind(&event.metric)
                    .push_bind(event.quantity)
                    .push_bind(event.occurred_at)
                    .push_bind(&event.properties)
                    .push_bind(now);
            });
            query.push(" ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING event_id");
            let ids: Vec<String> = query.build_query_scalar().fetch_all(&mut *self.tx).await?;
            inserted.extend(ids);
        }
        Ok(inserted)
    }

    async fn stored_usage_events(&mut self, event_ids: &[String]) -> Result<Vec<UsageEventRecord>> {
        let mut stored = Vec::new();
        for chunk in event_ids.chunks(SQLITE_MAX_PARAMS - 1) {
            let mut query = sqlite_in_list(
                "SELECT event_id, customer_id, metric, quantity, occurred_at, properties \
                 FROM usage_events WHERE tenant_id = ",
                &self.tenant,
                chunk,
                "event_id",
            );
            let rows: Vec<UsageEventRecord> =
                query.build_query_as().fetch_all(&mut *self.tx).await?;
            stored.extend(rows);
        }
        Ok(stored)
    }

    async fn lock_customer_for_close(&mut self, customer_id: &str) -> Result<bool> {
        let found = sqlx::query_scalar::<_, String>(
            "SELECT customer_id FROM customers WHERE tenant_id = $1 AND customer_id = $2",
        )
        .bind(&self.tenant)
        .bind(customer_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(found.is_some())
    }

    async fn overlapping_close(
        &mut self,
        customer_id: &str,
        start: i64,
        end: i64,
    ) -> Result<Option<PeriodCloseRecord>> {
        Ok(sqlx::query_as::<_, PeriodCloseRecord>(OVERLAP_SQL)
            .bind(&self.tenant)
            .bind(customer_id)
            .bind(start)
            .bind(end)
            .fetch_optional(&mut *self.tx)
            .await?)
    }

    async fn usage_totals(
        &mut self,
        customer_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<MetricTotal>> {
        let rows = sqlx::query_as::<_, (String, i64, i64)>(TOTALS_SQL)
            .bind(&self.tenant)
            .bind(customer_id)
            .bind(from)
            .bind(to)
            .fetch_all(&mut *self.tx)
            .await?;
        combine_totals(rows)
    }

    async fn insert_period_close(&mut self, close: &NewPeriodClose) -> Result<()> {
        sqlx::query(INSERT_CLOSE_SQL)
            .bind(&self.tenant)
            .bind(&close.close_id)
            .bind(&close.customer_id)
            .bind(close.period_start)
            .bind(close.period_end)
            .bind(&close.order_id)
            .bind(&close.quote)
            .bind(&close.policy)
            .bind(&close.policy_hash)
            .bind(close.now)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

// ── PostgreSQL ─────────────────────────────────────────────────────────────

impl UsageQueries for PgStore {
    async fn usage_totals(
        &self,
        tenant: &str,
        customer_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<MetricTotal>> {
        let rows = sqlx::query_as::<_, (String, i64, i64)>(TOTALS_SQL)
            .bind(tenant)
            .bind(customer_id)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?;
        combine_totals(rows)
    }
}

impl UsageTx for PgTx {
    async fn lock_usage_customers(&mut self, customer_ids: &[String]) -> Result<Vec<String>> {
        // In id order, so two batches lock shared customers in one order.
        Ok(sqlx::query_scalar::<_, String>(
            "SELECT customer_id FROM customers \
             WHERE tenant_id = $1 AND customer_id = ANY($2) \
             ORDER BY customer_id FOR SHARE",
        )
        .bind(&self.tenant)
        .bind(customer_ids)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    async fn closed_periods(
        &mut self,
        customer_ids: &[String],
        from: i64,
        to: i64,
    ) -> Result<Vec<PeriodCloseRecord>> {
        Ok(sqlx::query_as::<_, PeriodCloseRecord>(
            "SELECT close_id, customer_id, period_start, period_end FROM period_closes \
             WHERE tenant_id = $1 AND customer_id = ANY($2) \
               AND period_end > $3 AND period_start <= $4",
        )
        .bind(&self.tenant)
        .bind(customer_ids)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    async fn insert_usage_events(
        &mut self,
        events: &[UsageEventRecord],
        now: i64,
    ) -> Result<Vec<String>> {
        let sorted = sorted_by_id(events);
        let column = |f: fn(&UsageEventRecord) -> String| sorted.iter().map(|e| f(e)).collect();
        let ids: Vec<String> = column(|e| e.event_id.clone());
        let customers: Vec<String> = column(|e| e.customer_id.clone());
        let metrics: Vec<String> = column(|e| e.metric.clone());
        let properties: Vec<String> = column(|e| e.properties.clone());
        let quantities: Vec<i64> = sorted.iter().map(|e| e.quantity).collect();
        let occurred: Vec<i64> = sorted.iter().map(|e| e.occurred_at).collect();
        // WITH ORDINALITY + ORDER BY keeps the id order the rows lock in.
        Ok(sqlx::query_scalar::<_, String>(
            "INSERT INTO usage_events (tenant_id, event_id, customer_id, metric, quantity, \
               occurred_at, properties, received_at) \
             SELECT $1, e.id, e.customer, e.metric, e.quantity, e.occurred, e.properties, $8 \
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], \
               $7::text[]) WITH ORDINALITY \
               AS e(id, customer, metric, quantity, occurred, properties, n) \
             ORDER BY e.n \
             ON CONFLICT (tenant_id, event_id) DO NOTHING RETURNING event_id",
        )
        .bind(&self.tenant)
        .bind(ids)
        .bind(customers)
        .bind(metrics)
        .bind(quantities)
        .bind(occurred)
        .bind(properties)
        .bind(now)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    async fn stored_usage_events(&mut self, event_ids: &[String]) -> Result<Vec<UsageEventRecord>> {
        Ok(sqlx::query_as::<_, UsageEventRecord>(
            "SELECT event_id, customer_id, metric, quantity, occurred_at, properties \
             FROM usage_events WHERE tenant_id = $1 AND event_id = ANY($2)",
        )
        .bind(&self.tenant)
        .bind(event_ids)
        .fetch_all(&mut *self.tx)
        .await?)
    }

    async fn lock_customer_for_close(&mut self, customer_id: &str) -> Result<bool> {
        // FOR UPDATE: waits for batches holding the customer FOR SHARE and
        // keeps new ones out until the close commits, so no event can slip
        // into a period between its total and its close row.
        let found = sqlx::query_scalar::<_, String>(
            "SELECT customer_id FROM customers WHERE tenant_id = $1 AND customer_id = $2 \
             FOR UPDATE",
        )
        .bind(&self.tenant)
        .bind(customer_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(found.is_some())
    }

    async fn overlapping_close(
        &mut self,
        customer_id: &str,
        start: i64,
        end: i64,
    ) -> Result<Option<PeriodCloseRecord>> {
        Ok(sqlx::query_as::<_, PeriodCloseRecord>(OVERLAP_SQL)
            .bind(&self.tenant)
            .bind(customer_id)
            .bind(start)
            .bind(end)
            .fetch_optional(&mut *self.tx)
            .await?)
    }

    async fn usage_totals(
        &mut self,
        customer_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<MetricTotal>> {
        let rows = sqlx::query_as::<_, (String, i64, i64)>(TOTALS_SQL)
            .bind(&self.tenant)
            .bind(customer_id)
            .bind(from)
            .bind(to)
            .fetch_all(&mut *self.tx)
            .await?;
        combine_totals(rows)
    }

    async fn insert_period_close(&mut self, close: &NewPeriodClose) -> Result<()> {
        sqlx::query(INSERT_CLOSE_SQL)
            .bind(&self.tenant)
            .bind(&close.close_id)
            .bind(&close.customer_id)
            .bind(close.period_start)
            .bind(close.period_end)
            .bind(&close.order_id)
            .bind(&close.quote)
            .bind(&close.policy)
            .bind(&close.policy_hash)
            .bind(close.now)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
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

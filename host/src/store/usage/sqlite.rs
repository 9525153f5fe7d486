//! Usage statements on SQLite: bound `VALUES`/`IN` lists, chunked under
//! the 32766-parameter limit; the write transaction already excludes every
//! other writer, so no locking reads.

use sqlx::{QueryBuilder, Sqlite};

use super::{
    INSERT_CLOSE_SQL, MetricTotal, NewPeriodClose, OVERLAP_SQL, PeriodCloseRecord, TOTALS_SQL,
    UsageEventRecord, UsageQueries, UsageTx, combine_totals, sorted_by_id,
};
use crate::store::error::Result;
use crate::store::sqlite::{SqliteStore, SqliteTx};

/// SQLite's limit on bound parameters in one statement.
const SQLITE_MAX_PARAMS: usize = 32_766;
/// Parameters per inserted event row.
const EVENT_PARAMS: usize = 8;

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

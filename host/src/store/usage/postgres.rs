//! Usage statements on PostgreSQL: arrays (`UNNEST`, `= ANY`) instead of
//! bound lists, and locking reads (`FOR SHARE` / `FOR UPDATE`) that order
//! ingest and period close per customer.

use super::{
    INSERT_CLOSE_SQL, MetricTotal, NewPeriodClose, OVERLAP_SQL, PeriodCloseRecord, TOTALS_SQL,
    UsageEventRecord, UsageQueries, UsageTx, combine_totals, sorted_by_id,
};
use crate::store::error::Result;
use crate::store::pg_pool::pg_read;
use crate::store::postgres::{PgStore, PgTx};

impl UsageQueries for PgStore {
    async fn usage_totals(
        &self,
        tenant: &str,
        customer_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<MetricTotal>> {
        let rows = pg_read!(self.db, |conn| sqlx::query_as::<_, (String, i64, i64)>(
            TOTALS_SQL
        )
        .bind(tenant)
        .bind(customer_id)
        .bind(from)
        .bind(to)
        .fetch_all(conn))?;
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
        // FOR NO KEY UPDATE: waits for batches holding the customer FOR
        // SHARE and keeps new ones out until the close commits, so no event
        // can slip into a period between its total and its close row — yet
        // does not block inserts that merely reference the customer (their
        // foreign-key checks take FOR KEY SHARE), e.g. credit uses.
        let found = sqlx::query_scalar::<_, String>(
            "SELECT customer_id FROM customers WHERE tenant_id = $1 AND customer_id = $2 \
             FOR NO KEY UPDATE",
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

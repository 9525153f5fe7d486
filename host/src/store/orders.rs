//! Orders: the order row with what was asked for (`order_items`) and how the
//! policy priced it (`order_lines`), and the guarded status change.
//!
//! The SQL is written once in [`order_queries!`] and compiled for each
//! backend (see [`super::queries`] for why a macro).

use std::future::Future;

use super::error::Result;
use super::pg_pool::pg_read;
use super::postgres::PgTx;
use super::sqlite::SqliteTx;
use super::sqlite_inline as inline;
use super::{PgStore, SqliteStore, Store, Tx};

/// Where an order came from (`orders.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderSource {
    /// `POST /api/v1/orders`.
    Api,
    /// A subscription's charge (`source_id`: the subscription).
    Subscription,
    /// A metered-usage period close (`source_id`: the close).
    UsageClose,
}

impl OrderSource {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderSource::Api => "api",
            OrderSource::Subscription => "subscription",
            OrderSource::UsageClose => "usage_close",
        }
    }
}

/// A new `PENDING` order, checked by the domain.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// The order's id.
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// ISO-4217 code.
    pub currency: String,
    /// Σ lines, > 0.
    pub total: i64,
    /// JSON object of the request's metadata.
    pub metadata: String,
    /// The quote that priced it (JSON).
    pub quote: String,
    /// The pricing binding's name and content hash.
    pub policy: String,
    /// Its content hash.
    pub policy_hash: String,
    /// `(sku, quantity)` as asked for.
    pub items: Vec<(String, i64)>,
    /// Priced lines.
    pub lines: Vec<OrderLineRecord>,
    /// Where it came from.
    pub source: OrderSource,
    /// The subscription or usage close it belongs to.
    pub source_id: Option<String>,
    /// When (ms since the epoch).
    pub now: i64,
}

/// One priced line.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrderLineRecord {
    /// Machine-readable code.
    pub code: String,
    /// Text for invoices.
    pub description: String,
    /// Units the line covers.
    pub quantity: i64,
    /// Minor units in the order's currency (negative for discounts).
    pub amount: i64,
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    /// The order's id.
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// ISO-4217 code.
    pub currency: String,
    /// Σ lines.
    pub total: i64,
    /// `PENDING`, `PAID`, `COMPLETED` or `CANCELLED`.
    pub status: String,
    /// JSON object.
    pub metadata: String,
    /// Pricing binding name.
    pub policy: Option<String>,
    /// Its content hash.
    pub policy_hash: Option<String>,
    /// `api`, `subscription` or `usage_close`.
    pub source: String,
    /// The subscription or usage close it belongs to.
    pub source_id: Option<String>,
    /// +1 per status change.
    pub version: i64,
    /// Created (ms since the epoch).
    pub created_at: i64,
    /// Last changed.
    pub updated_at: i64,
    /// `(sku, quantity)` in request order.
    pub items: Vec<(String, i64)>,
    /// Priced lines in policy order.
    pub lines: Vec<OrderLineRecord>,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    order_id: String,
    customer_id: String,
    currency: String,
    total: i64,
    status: String,
    metadata: String,
    policy: Option<String>,
    policy_hash: Option<String>,
    source: String,
    source_id: Option<String>,
    version: i64,
    created_at: i64,
    updated_at: i64,
    /// `[[sku, quantity], …]` in line order (JSON, aggregated in the query).
    items: String,
    /// `[[code, description, quantity, amount], …]` in line order.
    lines: String,
}

impl OrderRow {
    /// The record, its items and lines decoded from the query's JSON.
    fn record(self) -> Result<OrderRecord> {
        let corrupt = |what: &str, err: serde_json::Error| {
            super::error::StoreError::Corrupt(format!(
                "order `{}`: its {what} as aggregated: {err}",
                self.order_id
            ))
        };
        let items: Vec<(String, i64)> =
            serde_json::from_str(&self.items).map_err(|e| corrupt("items", e))?;
        let lines: Vec<(String, String, i64, i64)> =
            serde_json::from_str(&self.lines).map_err(|e| corrupt("lines", e))?;
        let lines = lines
            .into_iter()
            .map(|(code, description, quantity, amount)| OrderLineRecord {
                code,
                description,
                quantity,
                amount,
            })
            .collect();
        Ok(OrderRecord {
            order_id: self.order_id,
            customer_id: self.customer_id,
            currency: self.currency,
            total: self.total,
            status: self.status,
            metadata: self.metadata,
            policy: self.policy,
            policy_hash: self.policy_hash,
            source: self.source,
            source_id: self.source_id,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            items,
            lines,
        })
    }
}

/// Order reads outside a transaction.
pub trait OrderQueries: Send + Sync {
    /// An order with its items and lines.
    fn order(
        &self,
        tenant: &str,
        order_id: &str,
    ) -> impl Future<Output = Result<Option<OrderRecord>>> + Send;
}

/// Order writes inside a transaction.
pub trait OrderTx: Send {
    /// Inserts a `PENDING` order with its items and lines.
    fn insert_order(&mut self, order: &NewOrder) -> impl Future<Output = Result<()>> + Send;

    /// An order, locked until the transaction ends.
    fn order_for_update(
        &mut self,
        order_id: &str,
    ) -> impl Future<Output = Result<Option<OrderRecord>>> + Send;

    /// Moves the order from `from` to `to` if it is still at `from` with
    /// `version`; the new version, or `None` when it moved meanwhile.
    fn set_order_status(
        &mut self,
        order_id: &str,
        from: (&str, i64),
        to: &str,
        now: i64,
    ) -> impl Future<Output = Result<Option<i64>>> + Send;
}

macro_rules! order_queries {
    (
        db = $db:ty,
        for_update = $for_update:literal,
        items = $items:literal,
        lines = $lines:literal
    ) => {
        use super::*;

        type Db = $db;

        /// The order with its items and lines, aggregated as JSON in line
        /// order: one statement (one round trip, one snapshot) per read,
        /// where three were; the writer is held for every statement of a
        /// transaction (BENCHMARKS.md, "The order saga end to end").
        pub(super) const ORDER_COLUMNS: &str = concat!(
            "SELECT order_id, customer_id, currency, total, status, metadata, policy, \
               policy_hash, source, source_id, version, created_at, updated_at, ",
            $items,
            " AS items, ",
            $lines,
            " AS lines FROM orders WHERE tenant_id = $1 AND order_id = $2"
        );

        pub(super) async fn order(
            conn: &mut <Db as sqlx::Database>::Connection,
            tenant: &str,
            order_id: &str,
            lock: bool,
        ) -> Result<Option<OrderRecord>> {
            let sql = if lock {
                format!("{ORDER_COLUMNS}{}", $for_update)
            } else {
                ORDER_COLUMNS.to_owned()
            };
            let row = sqlx::query_as::<_, OrderRow>(&sql)
                .bind(tenant)
                .bind(order_id)
                .fetch_optional(&mut *conn)
                .await?;
            row.map(OrderRow::record).transpose()
        }

        pub(super) async fn insert_order(
            conn: &mut <Db as sqlx::Database>::Connection,
            tenant: &str,
            order: &NewOrder,
        ) -> Result<()> {
            sqlx::query(
                "INSERT INTO orders (tenant_id, order_id, customer_id, currency, total, status, \
                   metadata, quote, policy, policy_hash, source, source_id, version, \
                   created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, 'PENDING', $6, $7, $8, $9, $10, $11, 1, $12, $12)",
            )
            .bind(tenant)
            .bind(&order.order_id)
            .bind(&order.customer_id)
            .bind(&order.currency)
            .bind(order.total)
            .bind(&order.metadata)
            .bind(&order.quote)
            .bind(&order.policy)
            .bind(&order.policy_hash)
            .bind(order.source.as_str())
            .bind(&order.source_id)
            .bind(order.now)
            .execute(&mut *conn)
            .await?;
            // One multi-row INSERT per table (≤ 100 items, ≤ 500 lines: far
            // below either backend's bound-parameter limit).
            let mut items = sqlx::QueryBuilder::<Db>::new(
                "INSERT INTO order_items (tenant_id, order_id, line, sku, quantity) ",
            );
            items.push_values(order.items.iter().enumerate(), |mut row, (i, (sku, qty))| {
                row.push_bind(tenant)
                    .push_bind(&order.order_id)
                    .push_bind(line_number(i))
                    .push_bind(sku)
                    .push_bind(*qty);
            });
            items.build().execute(&mut *conn).await?;
            let mut lines = sqlx::QueryBuilder::<Db>::new(
                "INSERT INTO order_lines \
                   (tenant_id, order_id, line, code, description, quantity, amount) ",
            );
            lines.push_values(order.lines.iter().enumerate(), |mut row, (i, line)| {
                row.push_bind(tenant)
                    .push_bind(&order.order_id)
                    .push_bind(line_number(i))
                    .push_bind(&line.code)
                    .push_bind(&line.description)
                    .push_bind(line.quantity)
                    .push_bind(line.amount);
            });
            lines.build().execute(&mut *conn).await?;
            Ok(())
        }

        pub(super) const SET_STATUS: &str = "UPDATE orders SET status = $5, \
             version = version + 1, updated_at = $6 \
             WHERE tenant_id = $1 AND order_id = $2 AND status = $3 AND version = $4 \
             RETURNING version";

        // SQLite runs it inline (`sqlite_inline`).
        #[allow(dead_code)]
        pub(super) async fn set_order_status(
            conn: &mut <Db as sqlx::Database>::Connection,
            tenant: &str,
            order_id: &str,
            from: (&str, i64),
            to: &str,
            now: i64,
        ) -> Result<Option<i64>> {
            Ok(sqlx::query_scalar::<_, i64>(SET_STATUS)
            .bind(tenant)
            .bind(order_id)
            .bind(from.0)
            .bind(from.1)
            .bind(to)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?)
        }

        /// The domain caps items and lines far below `i16::MAX`.
        fn line_number(index: usize) -> i16 {
            i16::try_from(index + 1).unwrap_or(i16::MAX)
        }
    };
}

// `ORDER BY` inside an aggregate: SQLite ≥ 3.44 (the bundled one is
// newer), PostgreSQL always. Neither backend promises an aggregate's order
// otherwise.
mod sqlite_q {
    order_queries!(
        db = sqlx::Sqlite,
        for_update = "",
        items = "(SELECT json_group_array(json_array(i.sku, i.quantity) ORDER BY i.line) \
                 FROM order_items i \
                 WHERE i.tenant_id = orders.tenant_id AND i.order_id = orders.order_id)",
        lines = "(SELECT json_group_array(json_array(l.code, l.description, l.quantity, \
                   l.amount) ORDER BY l.line) \
                 FROM order_lines l \
                 WHERE l.tenant_id = orders.tenant_id AND l.order_id = orders.order_id)"
    );
}

mod pg_q {
    order_queries!(
        db = sqlx::Postgres,
        for_update = " FOR UPDATE OF orders",
        items = "(SELECT COALESCE(json_agg(json_build_array(i.sku, i.quantity) ORDER BY i.line), \
                   '[]'::json)::text \
                 FROM order_items i \
                 WHERE i.tenant_id = orders.tenant_id AND i.order_id = orders.order_id)",
        lines = "(SELECT COALESCE(json_agg(json_build_array(l.code, l.description, l.quantity, \
                   l.amount) ORDER BY l.line), '[]'::json)::text \
                 FROM order_lines l \
                 WHERE l.tenant_id = orders.tenant_id AND l.order_id = orders.order_id)"
    );
}

impl OrderQueries for SqliteStore {
    async fn order(&self, tenant: &str, order_id: &str) -> Result<Option<OrderRecord>> {
        // One statement: the order, items and lines from one snapshot.
        let mut conn = self.reader.acquire().await?;
        sqlite_q::order(&mut conn, tenant, order_id, false).await
    }
}

impl OrderQueries for PgStore {
    async fn order(&self, tenant: &str, order_id: &str) -> Result<Option<OrderRecord>> {
        pg_read!(self.db, |conn| pg_q::order(conn, tenant, order_id, false))
    }
}

impl OrderQueries for Store {
    async fn order(&self, tenant: &str, order_id: &str) -> Result<Option<OrderRecord>> {
        dispatch!(self, s => s.order(tenant, order_id).await)
    }
}

impl OrderTx for SqliteTx {
    async fn insert_order(&mut self, order: &NewOrder) -> Result<()> {
        sqlite_q::insert_order(&mut self.tx, &self.tenant, order).await
    }

    // Inline on the writer (`sqlite_inline`): the saga's every step reads
    // and moves its order.
    async fn order_for_update(&mut self, order_id: &str) -> Result<Option<OrderRecord>> {
        let row = inline::optional(
            self.tx.raw(),
            sqlite_q::ORDER_COLUMNS,
            rusqlite::params![self.tenant, order_id],
            |row| {
                Ok(OrderRow {
                    order_id: row.get(0)?,
                    customer_id: row.get(1)?,
                    currency: row.get(2)?,
                    total: row.get(3)?,
                    status: row.get(4)?,
                    metadata: row.get(5)?,
                    policy: row.get(6)?,
                    policy_hash: row.get(7)?,
                    source: row.get(8)?,
                    source_id: row.get(9)?,
                    version: row.get(10)?,
                    created_at: row.get(11)?,
                    updated_at: row.get(12)?,
                    items: row.get(13)?,
                    lines: row.get(14)?,
                })
            },
        )?;
        row.map(OrderRow::record).transpose()
    }

    async fn set_order_status(
        &mut self,
        order_id: &str,
        (from, version): (&str, i64),
        to: &str,
        now: i64,
    ) -> Result<Option<i64>> {
        inline::optional(
            self.tx.raw(),
            sqlite_q::SET_STATUS,
            rusqlite::params![self.tenant, order_id, from, version, to, now],
            |row| row.get(0),
        )
    }
}

impl OrderTx for PgTx {
    async fn insert_order(&mut self, order: &NewOrder) -> Result<()> {
        pg_q::insert_order(&mut self.tx, &self.tenant, order).await
    }

    async fn order_for_update(&mut self, order_id: &str) -> Result<Option<OrderRecord>> {
        pg_q::order(&mut self.tx, &self.tenant, order_id, true).await
    }

    async fn set_order_status(
        &mut self,
        order_id: &str,
        from: (&str, i64),
        to: &str,
        now: i64,
    ) -> Result<Option<i64>> {
        pg_q::set_order_status(&mut self.tx, &self.tenant, order_id, from, to, now).await
    }
}

impl OrderTx for Tx {
    async fn insert_order(&mut self, order: &NewOrder) -> Result<()> {
        dispatch_tx!(self, t => t.insert_order(order).await)
    }

    async fn order_for_update(&mut self, order_id: &str) -> Result<Option<OrderRecord>> {
        dispatch_tx!(self, t => t.order_for_update(order_id).await)
    }

    async fn set_order_status(
        &mut self,
        order_id: &str,
        from: (&str, i64),
        to: &str,
        now: i64,
    ) -> Result<Option<i64>> {
        dispatch_tx!(self, t => t.set_order_status(order_id, from, to, now).await)
    }
}

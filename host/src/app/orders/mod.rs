//! Orders: create (priced by the tenant's `order` policy, checked by its
//! validation policies), read and cancel; and [`place_order`], which any
//! use case calls to leave a `PENDING` order inside its own transaction (a
//! subscription charge, a metered-usage period close).
//!
//! The client never sends an amount: the policy's quote is the order's
//! lines, and the total is their checked sum.

mod cancel;
mod create;

use std::collections::BTreeMap;

use serde::Serialize;

use super::customers::parse_attributes;
use super::error::{AppError, PolicyRef, Result};
use super::journal::{Recorder, event_type};
use super::policy::invalid_output;
use super::{App, RequestCtx, new_id};
use crate::domain::order::{Order, OrderChange, OrderItem, OrderLine, OrderStatus};
use crate::domain::{Currency, CustomerId, Money, OrderId};
use crate::policy::registry::Binding;
use crate::policy::types;
use crate::store::{NewOrder, OrderLineRecord, OrderQueries, OrderRecord, OrderSource, OrderTx};

pub use create::CreateOrderCommand;

/// An order as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderDetails {
    /// The order's id.
    pub order_id: String,
    /// Who ordered.
    pub customer_id: String,
    /// ISO-4217 code.
    pub currency: String,
    /// Σ lines, minor units.
    pub total: i64,
    /// `PENDING`, `PAID`, `COMPLETED` or `CANCELLED`.
    pub status: String,
    /// `(sku, quantity)` as asked for.
    pub items: Vec<(String, i64)>,
    /// How the policy priced it.
    pub lines: Vec<OrderLineRecord>,
    /// The request's metadata.
    pub metadata: BTreeMap<String, String>,
    /// The pricing binding that produced the lines.
    pub priced_by: Option<PricedBy>,
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
}

/// Which policy priced a stored order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PricedBy {
    /// The binding's name.
    pub policy: String,
    /// sha256 of its module.
    pub content_hash: String,
}

impl OrderDetails {
    pub(in crate::app) fn from_record(record: OrderRecord) -> Result<Self> {
        let metadata = parse_attributes(&record.metadata)?;
        let priced_by = match (record.policy, record.policy_hash) {
            (Some(policy), Some(content_hash)) => Some(PricedBy {
                policy,
                content_hash,
            }),
            _ => None,
        };
        Ok(OrderDetails {
            order_id: record.order_id,
            customer_id: record.customer_id,
            currency: record.currency,
            total: record.total,
            status: record.status,
            items: record.items,
            lines: record.lines,
            metadata,
            priced_by,
            source: record.source,
            source_id: record.source_id,
            version: record.version,
            created_at: record.created_at,
            updated_at: record.updated_at,
        })
    }
}

/// A `PENDING` order to place inside the caller's transaction: what was
/// asked for and the policy's quote for it, already checked by
/// [`order_lines`].
#[derive(Debug, Clone)]
pub struct PendingOrder {
    /// Who ordered.
    pub customer: CustomerId,
    /// The order's currency.
    pub currency: Currency,
    /// What was asked for (at least one).
    pub items: Vec<OrderItem>,
    /// The quote's lines (see [`order_lines`]).
    pub lines: Vec<OrderLine>,
    /// The quote, stored with the order.
    pub quote: types::Quote,
    /// Who priced it.
    pub priced_by: PolicyRef,
    /// The request's metadata.
    pub metadata: BTreeMap<String, String>,
    /// Where it comes from.
    pub source: OrderSource,
    /// The subscription or usage close it belongs to.
    pub source_id: Option<String>,
    /// Why, for the history row (e.g. "renewal of sub_…").
    pub reason: String,
}

/// Checks a pricing policy's quote for an order in `currency` and turns it
/// into order lines: the total and every line in money of that currency,
/// lines that add up to the total, codes and descriptions within bounds.
/// Anything else is the policy's fault (`POL_002`, invalid output).
pub fn order_lines(
    binding: &Binding,
    currency: Currency,
    quote: &types::Quote,
) -> Result<Vec<OrderLine>> {
    let in_currency = |amount: &types::Amount, what: &str| -> Result<Money> {
        match amount {
            types::Amount::Money(m) if m.currency == currency.code() => {
                Ok(Money::new(m.amount, currency))
            }
            types::Amount::Money(m) => Err(invalid_output(
                binding,
                format!("{what} is in {}, the order is in {currency}", m.currency),
            )),
            types::Amount::Credits(_) => Err(invalid_output(
                binding,
                format!("{what} is in credits, an order is priced in money"),
            )),
        }
    };
    let total = in_currency(&quote.total, "the quote's total")?;
    let mut lines = Vec::with_capacity(quote.line_items.len());
    for item in &quote.line_items {
        let amount = in_currency(&item.amount, &format!("line `{}`", item.code))?;
        let line = OrderLine::new(&item.code, &item.description, item.quantity, amount)
            .map_err(|err| invalid_output(binding, format!("line `{}`: {err}", item.code)))?;
        lines.push(line);
    }
    let sum = Money::checked_sum(currency, lines.iter().map(OrderLine::amount))
        .map_err(|err| invalid_output(binding, format!("the lines do not add up: {err}")))?;
    if sum != total {
        return Err(invalid_output(
            binding,
            format!(
                "the lines add up to {} but the total is {}",
                sum.minor, total.minor
            ),
        ));
    }
    Ok(lines)
}

/// Places a `PENDING` order inside the caller's transaction: the order,
/// its items and lines, the `order.created` ledger posting (Dr customer
/// receivable, Cr deferred revenue), its history row and its event — under
/// the order's own business transaction id, so the caller's own effect in
/// the same transaction keeps its journal apart. Nothing is written until
/// the caller commits.
pub async fn place_order<T: OrderTx + crate::store::TxOps>(
    tx: &mut T,
    ctx: &RequestCtx,
    now: i64,
    order: PendingOrder,
) -> Result<OrderDetails> {
    let order_id = OrderId::new(new_id("ord"))?;
    let items: Vec<(String, i64)> = order
        .items
        .iter()
        .map(|i| (i.sku().to_owned(), i.quantity()))
        .collect();
    let change = Order::create(
        order_id,
        order.customer.clone(),
        order.currency,
        order.items,
        order.lines,
        order.reason,
    )?;
    let created = &change.order;
    let lines: Vec<OrderLineRecord> = created
        .lines()
        .iter()
        .map(|l| OrderLineRecord {
            code: l.code().to_owned(),
            description: l.description().to_owned(),
            quantity: l.quantity(),
            amount: l.amount().minor,
        })
        .collect();
    let record = NewOrder {
        order_id: created.id().to_string(),
        customer_id: order.customer.to_string(),
        currency: order.currency.code().to_owned(),
        total: created.total().minor(),
        metadata: to_json(&order.metadata)?,
        quote: to_json(&order.quote)?,
        policy: order.priced_by.policy.clone(),
        policy_hash: order.priced_by.content_hash.clone(),
        items: items.clone(),
        lines: lines.clone(),
        source: order.source,
        source_id: order.source_id.clone(),
        now,
    };
    tx.insert_order(&record).await?;

    let mut journal = Recorder::new(ctx, new_id("tx"), now);
    if let Some(ledger) = change.ledger.clone() {
        journal.ledger(Some(order.customer.as_str()), ledger);
    }
    journal.transition(&change.transition);
    journal.event(
        event_type::ORDER_CREATED,
        order.customer.as_str(),
        &serde_json::json!({
            "orderId": &record.order_id,
            "customerId": &record.customer_id,
            "status": OrderStatus::Pending.as_str(),
            "currency": &record.currency,
            "total": record.total,
            "source": order.source.as_str(),
            "sourceId": &record.source_id,
            "items": items.iter().map(|(sku, quantity)| serde_json::json!({ "sku": sku, "quantity": quantity })).collect::<Vec<_>>(),
            "policy": &record.policy,
            "policyHash": &record.policy_hash,
        }),
    );
    tx.record(journal.finish());
    Ok(OrderDetails {
        order_id: record.order_id,
        customer_id: record.customer_id,
        currency: record.currency,
        total: record.total,
        status: OrderStatus::Pending.as_str().to_owned(),
        items,
        lines,
        metadata: order.metadata,
        priced_by: Some(PricedBy {
            policy: record.policy,
            content_hash: record.policy_hash,
        }),
        source: order.source.as_str().to_owned(),
        source_id: order.source_id,
        version: 1,
        created_at: now,
        updated_at: now,
    })
}

/// JSON for a text column.
pub(super) fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|err| AppError::Internal(err.to_string()))
}

impl App {
    /// An order of the tenant's.
    pub async fn order(&self, tenant: &str, order_id: &str) -> Result<OrderDetails> {
        let id = OrderId::new(order_id)?;
        let record = self
            .store()
            .order(tenant, id.as_str())
            .await?
            .ok_or_else(|| order_not_found(id.as_str()))?;
        OrderDetails::from_record(record)
    }
}

/// Applies a domain step of the locked order `record` in `tx`, as one
/// business transaction: the guarded status change, then its ledger
/// posting (if any), history row and `event` with `data`. The new
/// version; a status that moved meanwhile is `PAY_004`.
pub(super) async fn record_order_step<T: OrderTx + crate::store::TxOps>(
    tx: &mut T,
    ctx: &RequestCtx,
    record: &OrderRecord,
    change: OrderChange,
    event: &'static str,
    data: serde_json::Value,
    now: i64,
) -> Result<i64> {
    record_order_step_as(tx, ctx, record, change, (event, data), &new_id("tx"), now).await
}

/// [`record_order_step`] as business transaction `transaction_id` (which
/// other rows of the step, such as its saga's, join).
pub(super) async fn record_order_step_as<T: OrderTx + crate::store::TxOps>(
    tx: &mut T,
    ctx: &RequestCtx,
    record: &OrderRecord,
    change: OrderChange,
    (event, data): (&'static str, serde_json::Value),
    transaction_id: &str,
    now: i64,
) -> Result<i64> {
    let to = change.order.status().as_str();
    let version = tx
        .set_order_status(&record.order_id, (&record.status, record.version), to, now)
        .await?
        .ok_or_else(|| {
            AppError::StateConflict(format!(
                "order `{}` changed while its `{}` was applied",
                record.order_id, change.transition.event
            ))
        })?;
    let mut journal = Recorder::new(ctx, transaction_id, now);
    if let Some(ledger) = change.ledger {
        journal.ledger(Some(&record.customer_id), ledger);
    }
    journal.transition(&change.transition);
    journal.event(event, &record.customer_id, &data);
    tx.record(journal.finish());
    Ok(version)
}

/// Commits `tx` with the answer to a request that moved `record` to
/// status `to` (at `version`, `now`), rendered and kept for its
/// Idempotency-Key.
pub(super) async fn answer_order_step(
    tx: crate::store::Tx,
    record: OrderRecord,
    (to, version, now): (&str, i64, i64),
    render: impl super::credits::Render<OrderDetails>,
) -> Result<super::Reply> {
    use crate::store::TxOps;
    let mut details = OrderDetails::from_record(record)?;
    details.status = to.to_owned();
    details.version = version;
    details.updated_at = now;
    let response = render(&details);
    tx.commit(Some(response.clone())).await?;
    Ok(super::Reply {
        response,
        replayed: false,
    })
}

/// `order.cancelled`'s data for `record` cancelled by `change`.
pub(super) fn cancelled_event(record: &OrderRecord, change: &OrderChange) -> serde_json::Value {
    serde_json::json!({
        "orderId": &record.order_id,
        "customerId": &record.customer_id,
        "from": &record.status,
        "status": change.order.status().as_str(),
        "currency": &record.currency,
        "total": record.total,
        "reason": &change.transition.reason,
    })
}

fn order_not_found(order_id: &str) -> AppError {
    AppError::NotFound(format!("order `{order_id}` not found"))
}

/// A stored order as the domain's [`Order`], whose state table decides
/// what may happen next.
pub(super) fn restore_order(record: &OrderRecord) -> Result<Order> {
    let corrupt = |what: String| AppError::Internal(format!("order {}: {what}", record.order_id));
    let currency = Currency::parse(&record.currency).map_err(|e| corrupt(e.to_string()))?;
    let items = record
        .items
        .iter()
        .map(|(sku, qty)| OrderItem::new(sku, *qty))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| corrupt(e.to_string()))?;
    let lines = record
        .lines
        .iter()
        .map(|l| {
            OrderLine::new(
                &l.code,
                &l.description,
                l.quantity,
                Money::new(l.amount, currency),
            )
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| corrupt(e.to_string()))?;
    let status: OrderStatus = record
        .status
        .parse()
        .map_err(|e: crate::domain::DomainError| corrupt(e.to_string()))?;
    Order::restore(
        OrderId::new(&record.order_id).map_err(|e| corrupt(e.to_string()))?,
        CustomerId::new(&record.customer_id).map_err(|e| corrupt(e.to_string()))?,
        currency,
        items,
        lines,
        status,
    )
    .map_err(|e| corrupt(e.to_string()))
}

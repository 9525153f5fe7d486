//! `POST /usage/close`: closes a customer's usage period, once. The usage
//! is totalled and rated by the metered policy outside any transaction;
//! then, in one transaction: lock the customer (no event can land in the
//! period while it closes), refuse a period that overlaps an earlier close
//! (`PAY_004`), check that the totals are still the rated ones (else rate
//! the new ones and try again), leave a `PENDING` order for a total above
//! zero, record the close, its history row and its `usage.period_closed`
//! event. Events for the period that arrive later are answered `late` by
//! ingest.

use super::super::credits::Render;
use std::collections::BTreeMap;

use super::super::customers::{Customer, not_found};
use super::super::error::{AppError, PolicyRef, Result};
use super::super::idempotency::{Claimed, claim, stored_answer};
use super::super::journal::{Recorder, USAGE_PERIOD_CLOSED, entity, event_type};
use super::super::orders::{PendingOrder, order_lines, place_order};
use super::super::policy::invalid_output;
use super::super::{App, Reply, RequestCtx, new_id};
use super::{check_range, rate};
use crate::domain::order::{MAX_ORDER_ITEMS, OrderItem};
use crate::domain::{Currency, CustomerId};
use crate::policy::registry::{Binding, CallContext};
use crate::policy::types;
use crate::store::{
    MetricTotal, NewPeriodClose, OrderSource, Queries, Transactions, Tx, TxOps, UsageQueries,
    UsageTx,
};

/// `POST /usage/close`.
#[derive(Debug, Clone)]
pub struct CloseCommand {
    /// Whose usage.
    pub customer_id: String,
    /// Start (inclusive, ms).
    pub period_start: i64,
    /// End (exclusive, ms); not after now.
    pub period_end: i64,
}

/// What a close did.
#[derive(Debug, Clone)]
pub struct PeriodClosed {
    /// The close's id.
    pub close_id: String,
    /// The customer.
    pub customer_id: String,
    /// Start (inclusive, ms).
    pub period_start: i64,
    /// End (exclusive, ms).
    pub period_end: i64,
    /// Σ quantity per metric.
    pub usage: Vec<MetricTotal>,
    /// How the total is made up.
    pub line_items: Vec<types::LineItem>,
    /// Minor units.
    pub total: i64,
    /// ISO-4217.
    pub currency: String,
    /// The `PENDING` order to pay; `None` when the total is zero.
    pub order_id: Option<String>,
    /// Who rated it.
    pub priced_by: PolicyRef,
    /// When (ms since the epoch).
    pub created_at: i64,
}

impl App {
    /// Closes `[period_start, period_end)` for the customer: its usage is
    /// rated and billed as one `PENDING` order, and the period accepts no
    /// more events.
    pub async fn close_usage_period(
        &self,
        ctx: &RequestCtx,
        cmd: CloseCommand,
        render: impl Render<PeriodClosed>,
    ) -> Result<Reply> {
        let (customer, period) = check_range(&cmd.customer_id, cmd.period_start, cmd.period_end)?;
        let now = self.now();
        if cmd.period_end > now {
            return Err(AppError::Invalid(format!(
                "periodEnd ({}) is in the future: a period can be closed once it has ended",
                cmd.period_end
            )));
        }
        let (pricing, _) = self.metered_policies(&ctx.tenant)?;
        let record = self
            .store()
            .customer(&ctx.tenant, customer.as_str())
            .await?
            .ok_or_else(|| not_found(customer.as_str()))?;
        let call_ctx = CallContext {
            customer_id: customer.to_string(),
            customer_attributes: Customer::policy_attributes_of(&record.attributes)?,
            now_ms: now,
        };

        // A replay answers as stored, without rating anything again (the
        // transaction's claim still decides for requests that race).
        if let Some(answer) = stored_answer(self.store(), ctx).await? {
            return answer;
        }
        // Rate the totals as last committed, outside any transaction; the
        // close's transaction then checks, with the customer locked, that
        // they are still the totals (an event may have landed since). If
        // not, it leaves, and the new totals are rated and tried again.
        let mut usage = self
            .store()
            .usage_totals(
                &ctx.tenant,
                customer.as_str(),
                cmd.period_start,
                cmd.period_end,
            )
            .await?;
        let mut render = render;
        for _ in 0..CLOSE_ATTEMPTS {
            let rated = rate(&pricing, call_ctx.clone(), period, &usage)?;
            let rated = Rating {
                pricing: &pricing,
                usage,
                rated,
            };
            match self
                .close_rated(ctx, &cmd, &customer, now, rated, render)
                .await?
            {
                CloseAttempt::Done(reply) => return Ok(reply),
                CloseAttempt::Changed(found, back) => (usage, render) = (found, back),
            }
        }
        Err(AppError::Stale(format!(
            "usage of customer `{customer}` kept arriving in the period while it was \
             rated ({CLOSE_ATTEMPTS} attempts); nothing was closed, retry"
        )))
    }

    /// One attempt at a close rated beforehand: in one transaction, claim
    /// the key, lock the customer (no event can land in the period while
    /// it closes), refuse an overlapping period, and check that the
    /// period's totals are the ones rated.
    async fn close_rated<R: Render<PeriodClosed>>(
        &self,
        ctx: &RequestCtx,
        cmd: &CloseCommand,
        customer: &CustomerId,
        now: i64,
        rating: Rating<'_>,
        render: R,
    ) -> Result<CloseAttempt<R>> {
        let Rating {
            pricing,
            usage,
            rated,
        } = rating;
        let tx = self.store().begin(&ctx.tenant).await?;
        let mut tx = match claim(tx, ctx, now).await? {
            Claimed::Proceed(tx) => tx,
            Claimed::Replay(reply) => return Ok(CloseAttempt::Done(reply)),
        };
        if !tx.lock_customer_for_close(customer.as_str()).await? {
            return Err(not_found(customer.as_str()));
        }
        if let Some(earlier) = tx
            .overlapping_close(customer.as_str(), cmd.period_start, cmd.period_end)
            .await?
        {
            return Err(AppError::StateConflict(format!(
                "the customer's period [{}, {}) is already closed (close `{}`): \
                 closed periods cannot be closed again or overlap",
                earlier.period_start, earlier.period_end, earlier.close_id
            )));
        }
        // The customer is locked: these totals are exactly what the close
        // bills, and ingest answers `late` for the period from now on.
        let found = tx
            .usage_totals(customer.as_str(), cmd.period_start, cmd.period_end)
            .await?;
        if found != usage {
            tx.rollback().await?;
            return Ok(CloseAttempt::Changed(found, render));
        }

        let close_id = new_id("uclose");
        let order_id = if rated.total > 0 {
            Some(
                place_close_order(
                    &mut tx,
                    ctx,
                    now,
                    pricing,
                    CloseBill {
                        customer,
                        close_id: &close_id,
                        usage: &usage,
                        rated: &rated,
                    },
                )
                .await?,
            )
        } else {
            None
        };
        tx.insert_period_close(&NewPeriodClose {
            close_id: close_id.clone(),
            customer_id: customer.to_string(),
            period_start: cmd.period_start,
            period_end: cmd.period_end,
            order_id: order_id.clone(),
            quote: serde_json::to_string(&rated.quote)
                .map_err(|err| AppError::Internal(err.to_string()))?,
            policy: rated.priced_by.policy.clone(),
            policy_hash: rated.priced_by.content_hash.clone(),
            now,
        })
        .await?;

        let mut journal = Recorder::new(ctx, &close_id, now);
        journal.history(
            entity::USAGE_PERIOD,
            &close_id,
            None,
            USAGE_PERIOD_CLOSED.to_owned(),
            "close",
            &format!(
                "usage [{}, {}) closed at {} {}",
                cmd.period_start, cmd.period_end, rated.total, rated.currency
            ),
        );
        journal.event(
            event_type::USAGE_PERIOD_CLOSED,
            customer.as_str(),
            &serde_json::json!({
                "closeId": &close_id,
                "customerId": customer.as_str(),
                "periodStart": cmd.period_start,
                "periodEnd": cmd.period_end,
                "usage": usage
                    .iter()
                    .map(|t| serde_json::json!({ "metric": &t.metric, "quantity": t.quantity }))
                    .collect::<Vec<_>>(),
                "total": { "amount": rated.total, "currency": &rated.currency },
                "orderId": &order_id,
                "policy": &rated.priced_by.policy,
                "policyHash": &rated.priced_by.content_hash,
            }),
        );
        tx.record(journal.finish());
        let response = render(&PeriodClosed {
            close_id,
            customer_id: customer.to_string(),
            period_start: cmd.period_start,
            period_end: cmd.period_end,
            usage,
            line_items: rated.line_items,
            total: rated.total,
            currency: rated.currency,
            order_id,
            priced_by: rated.priced_by,
            created_at: now,
        });
        tx.commit(Some(response.clone())).await?;
        Ok(CloseAttempt::Done(Reply {
            response,
            replayed: false,
        }))
    }
}

/// How often a close rates and tries totals that keep changing before it
/// gives up with a retryable error (`SYS_006`).
const CLOSE_ATTEMPTS: usize = 4;

/// Totals and what the metered policy made of them.
struct Rating<'a> {
    pricing: &'a Binding,
    usage: Vec<MetricTotal>,
    rated: super::Rated,
}

/// What one close attempt came to.
enum CloseAttempt<R> {
    /// Answered (closed, or a replay).
    Done(Reply),
    /// The period's totals are no longer the rated ones: these are the
    /// totals now; the render comes back for the next attempt.
    Changed(Vec<MetricTotal>, R),
}

/// What a close bills.
struct CloseBill<'a> {
    customer: &'a CustomerId,
    close_id: &'a str,
    usage: &'a [MetricTotal],
    rated: &'a super::Rated,
}

/// The close's bill: a `PENDING` order with one item per metric used
/// (`metric:<name>`, or a single `usage-period` item when they do not fit)
/// and the metered quote's lines, placed inside the
/// close's transaction by [`place_order`] (its own business transaction:
/// ledger posting, history row, `order.created`).
async fn place_close_order(
    tx: &mut Tx,
    ctx: &RequestCtx,
    now: i64,
    pricing: &Binding,
    bill: CloseBill<'_>,
) -> Result<String> {
    let CloseBill {
        customer,
        close_id,
        usage,
        rated,
    } = bill;
    let currency = Currency::parse(&rated.currency)
        .map_err(|err| invalid_output(pricing, format!("the metered quote's currency: {err}")))?;
    let mut items = usage
        .iter()
        .filter(|t| t.quantity > 0)
        .map(|t| OrderItem::new(format!("metric:{}", t.metric), t.quantity))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // An order holds 1 to MAX_ORDER_ITEMS items, and the bill's detail is
    // in its lines anyway: a period whose usage cannot be listed item by
    // item (a policy's fee on zero usage, more metrics than an order holds)
    // is one `usage-period` item.
    if items.is_empty() || items.len() > MAX_ORDER_ITEMS {
        items = vec![OrderItem::new("usage-period", 1)?];
    }
    let order = PendingOrder {
        customer: customer.clone(),
        currency,
        items,
        lines: order_lines(pricing, currency, &rated.quote)?,
        quote: rated.quote.clone(),
        priced_by: rated.priced_by.clone(),
        metadata: BTreeMap::from([("usageCloseId".to_owned(), close_id.to_owned())]),
        source: OrderSource::UsageClose,
        source_id: Some(close_id.to_owned()),
        reason: format!("usage period close {close_id}"),
    };
    Ok(place_order(tx, ctx, now, order).await?.order_id)
}

//! Metered usage: ingest (deduplicated), summary, period close.
//!
//! - `POST /api/v1/usage`: one event, or `{"events": [...]}` (1-1,000).
//!   Idempotency-Key optional (the event ids already deduplicate).
//! - `GET /api/v1/usage/summary?customerId=&from=&to=`: usage per metric
//!   over `[from, to)`, rated by the tenant's metered policy.
//! - `POST /api/v1/usage/close`: closes a period into a `PENDING` order.
//!   Idempotency-Key required (it creates an order).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Caller;
use super::command::{Command, Key};
use super::views::LineItemView;
use super::{render, respond};
use crate::api::envelope::ApiOk;
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::AppQuery;
use crate::app::usage::{
    CloseCommand, EventInput, EventStatus, IngestCommand, PeriodClosed, UsageIngested, UsageSummary,
};
use crate::app::{App, PolicyRef};
use crate::store::MetricTotal;

/// The routes of this module; [`super::router`] puts them behind auth.
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/usage", post(ingest))
        .route("/api/v1/usage/summary", get(summary))
        .route("/api/v1/usage/close", post(close))
}

// ── Requests ───────────────────────────────────────────────────────────────

/// One usage event.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventBody {
    /// The tenant's id for the event (deduplication key, forever).
    pub event_id: String,
    /// Whose usage.
    pub customer_id: String,
    /// The metric, e.g. `api-calls`.
    pub metric: String,
    /// Units (≥ 0).
    pub quantity: i64,
    /// When it happened (ms since the epoch).
    pub timestamp: i64,
    /// String → string; handed to the validation policies.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// A batch.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchBody {
    /// 1-1,000 events.
    pub events: Vec<EventBody>,
}

/// `GET /api/v1/usage/summary`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SummaryQuery {
    /// The customer.
    pub customer_id: String,
    /// Start (inclusive, ms since the epoch).
    pub from: i64,
    /// End (exclusive, ms since the epoch).
    pub to: i64,
}

/// `POST /api/v1/usage/close`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloseBody {
    /// Whose usage.
    pub customer_id: String,
    /// Start (inclusive, ms since the epoch).
    pub period_start: i64,
    /// End (exclusive, ms since the epoch); not after now.
    pub period_end: i64,
}

impl From<EventBody> for EventInput {
    fn from(body: EventBody) -> Self {
        EventInput {
            event_id: body.event_id,
            customer_id: body.customer_id,
            metric: body.metric,
            quantity: body.quantity,
            timestamp: body.timestamp,
            properties: body.properties,
        }
    }
}

/// A batch when the object has `events`, else one event; errors name the
/// field as `Command::json`'s do.
fn events_of(value: Value) -> Result<Vec<EventBody>, ApiError> {
    let batch = value.as_object().is_some_and(|o| o.contains_key("events"));
    let shape = |err: serde_path_to_error::Error<serde_json::Error>| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." {
            ApiError::InvalidBody(inner.to_string())
        } else {
            ApiError::InvalidBody(format!("{path}: {inner}"))
        }
    };
    if batch {
        let body: BatchBody = serde_path_to_error::deserialize(value).map_err(shape)?;
        Ok(body.events)
    } else {
        let body: EventBody = serde_path_to_error::deserialize(value).map_err(shape)?;
        Ok(vec![body])
    }
}

// ── Responses ──────────────────────────────────────────────────────────────

/// Minor units and currency.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TotalView {
    amount: i64,
    currency: String,
}

/// One metric's usage.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MetricView {
    metric: String,
    quantity: i64,
}

fn metric_views(usage: &[MetricTotal]) -> Vec<MetricView> {
    usage
        .iter()
        .map(|t| MetricView {
            metric: t.metric.clone(),
            quantity: t.quantity,
        })
        .collect()
}

/// One event's outcome.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EventOutcomeView {
    index: usize,
    event_id: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// `POST /usage`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct IngestView {
    received: usize,
    accepted: usize,
    duplicates: usize,
    conflicts: usize,
    late: usize,
    events: Vec<EventOutcomeView>,
}

impl From<&UsageIngested> for IngestView {
    fn from(ingested: &UsageIngested) -> Self {
        IngestView {
            received: ingested.events.len(),
            accepted: ingested.count(EventStatus::Accepted),
            duplicates: ingested.count(EventStatus::Duplicate),
            conflicts: ingested.count(EventStatus::Conflict),
            late: ingested.count(EventStatus::Late),
            events: ingested
                .events
                .iter()
                .map(|e| EventOutcomeView {
                    index: e.index,
                    event_id: e.event_id.clone(),
                    status: e.status.as_str(),
                    reason: e.reason.clone(),
                })
                .collect(),
        }
    }
}

/// `GET /usage/summary`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryView {
    customer_id: String,
    from: i64,
    to: i64,
    usage: Vec<MetricView>,
    line_items: Vec<LineItemView>,
    total: TotalView,
    priced_by: PolicyRef,
}

impl From<UsageSummary> for SummaryView {
    fn from(s: UsageSummary) -> Self {
        SummaryView {
            customer_id: s.customer_id,
            from: s.from,
            to: s.to,
            usage: metric_views(&s.usage),
            line_items: s.rated.line_items.iter().map(LineItemView::from).collect(),
            total: TotalView {
                amount: s.rated.total,
                currency: s.rated.currency,
            },
            priced_by: s.rated.priced_by,
        }
    }
}

/// `POST /usage/close`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CloseView {
    close_id: String,
    customer_id: String,
    period_start: i64,
    period_end: i64,
    usage: Vec<MetricView>,
    line_items: Vec<LineItemView>,
    total: TotalView,
    order_id: Option<String>,
    priced_by: PolicyRef,
    created_at: i64,
}

impl From<&PeriodClosed> for CloseView {
    fn from(c: &PeriodClosed) -> Self {
        CloseView {
            close_id: c.close_id.clone(),
            customer_id: c.customer_id.clone(),
            period_start: c.period_start,
            period_end: c.period_end,
            usage: metric_views(&c.usage),
            line_items: c.line_items.iter().map(LineItemView::from).collect(),
            total: TotalView {
                amount: c.total,
                currency: c.currency.clone(),
            },
            order_id: c.order_id.clone(),
            priced_by: c.priced_by.clone(),
            created_at: c.created_at,
        }
    }
}

// ── Handlers ───────────────────────────────────────────────────────────────

async fn ingest(State(app): State<App>, command: Command) -> Result<Response, ApiError> {
    let value: Value = command.json()?;
    let events = events_of(value)?;
    let ctx = command.ctx(Key::Optional)?;
    let command = IngestCommand {
        events: events.into_iter().map(EventInput::from).collect(),
    };
    let reply = app
        .ingest_usage(&ctx, command, |ingested| {
            render(
                StatusCode::OK,
                "usage ingested",
                &IngestView::from(ingested),
            )
        })
        .await?;
    Ok(respond(reply))
}

async fn summary(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    AppQuery(query): AppQuery<SummaryQuery>,
) -> ApiResult<SummaryView> {
    let summary = app
        .usage_summary(&caller.tenant, &query.customer_id, query.from, query.to)
        .await?;
    Ok(ApiOk::new("usage summary", SummaryView::from(summary)))
}

async fn close(State(app): State<App>, command: Command) -> Result<Response, ApiError> {
    let request: CloseBody = command.json()?;
    let ctx = command.ctx(Key::Required)?;
    let command = CloseCommand {
        customer_id: request.customer_id,
        period_start: request.period_start,
        period_end: request.period_end,
    };
    let reply = app
        .close_usage_period(&ctx, command, |closed| {
            render(
                StatusCode::CREATED,
                "usage period closed",
                &CloseView::from(closed),
            )
        })
        .await?;
    Ok(respond(reply))
}

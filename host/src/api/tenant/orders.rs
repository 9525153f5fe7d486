//! Orders: create (priced by the tenant's order policy), read, cancel.
//!
//! - `POST /api/v1/orders` — `{customerId, currency?, items: [{sku, quantity}], metadata?}`;
//!   the client never sends an amount. `Idempotency-Key` required.
//! - `GET /api/v1/orders/{orderId}`
//! - `POST /api/v1/orders/{orderId}/cancel` — `{reason?}` (body optional);
//!   `Idempotency-Key` accepted.
//! - `POST /api/v1/service-callbacks/completed` — `{orderId}`: the tenant's
//!   service fulfilled a `PAID` order; its payment is captured at the PG
//!   and the order `COMPLETED` (200). A capture the PG refuses compensates
//!   the order: `402 PAY_002` with the order (`CANCELLED`, or `PAID` while
//!   the void is retried) in `result`; a capture whose answer was lost is
//!   resolved by the orchestrator: `202 PAY_006`. A repeat answers with
//!   the order as it stands; any other status is `PAY_004`.
//!   `Idempotency-Key` accepted.
//! - `POST /api/v1/service-callbacks/failed` — `{orderId, reason?}`: the
//!   tenant's service could not fulfil it; its saga compensates (payment
//!   voided, order cancelled). A repeat answers with the order and saga as
//!   they stand.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::command::{Command, Key};
use super::{render, respond};
use crate::api::envelope::{ApiOk, Envelope};
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::AppPath;
use crate::app::App;
use crate::app::orders::{CreateOrderCommand, OrderDetails, PricedBy};
use crate::store::StoredResponse;

/// The routes of this module; [`super::router`] puts them behind auth.
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/orders", post(create))
        .route("/api/v1/orders/{order_id}", get(read))
        .route("/api/v1/orders/{order_id}/cancel", post(cancel))
        .route("/api/v1/service-callbacks/completed", post(completed))
        .route("/api/v1/service-callbacks/failed", post(failed))
}

/// `POST /api/v1/service-callbacks/failed`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FailedBody {
    order_id: String,
    #[serde(default)]
    reason: Option<String>,
}

/// An order's saga.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaView {
    state: String,
    payment_id: Option<String>,
    steps_done: Vec<String>,
    service_deadline_at: Option<i64>,
    next_run_at: Option<i64>,
    capture_attempts: i64,
    compensation_attempts: i64,
    last_error: Option<String>,
    version: i64,
    updated_at: i64,
}

impl From<&crate::store::SagaRecord> for SagaView {
    fn from(s: &crate::store::SagaRecord) -> Self {
        SagaView {
            state: s.state.clone(),
            payment_id: s.payment_id.clone(),
            steps_done: s
                .steps_done
                .split(',')
                .filter(|step| !step.is_empty())
                .map(str::to_owned)
                .collect(),
            service_deadline_at: s.service_deadline_at,
            next_run_at: s.next_run_at,
            capture_attempts: s.attempts_by_phase().0,
            compensation_attempts: s.attempts_by_phase().1,
            last_error: s.last_error.clone(),
            version: s.version,
            updated_at: s.updated_at,
        }
    }
}

/// Credits an order's saga reserved, and what became of them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationView {
    reservation_id: String,
    credits: i64,
    /// What they settle of the order, in minor units of its currency.
    value: i64,
    /// `HELD`, `CAPTURED` (deducted: `transactionId` is the credit use) or
    /// `RELEASED`.
    status: String,
    transaction_id: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<&crate::store::ReservationRecord> for ReservationView {
    fn from(r: &crate::store::ReservationRecord) -> Self {
        ReservationView {
            reservation_id: r.reservation_id.clone(),
            credits: r.credits,
            value: r.value,
            status: r.status.clone(),
            transaction_id: r.use_id.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// `POST /api/v1/service-callbacks/completed`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CallbackBody {
    order_id: String,
}

/// `POST /api/v1/orders`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateOrderBody {
    customer_id: String,
    #[serde(default)]
    currency: Option<String>,
    items: Vec<ItemBody>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ItemBody {
    sku: String,
    quantity: i64,
}

/// `POST /api/v1/orders/{orderId}/cancel`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
}

/// An order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    order_id: String,
    customer_id: String,
    status: String,
    currency: String,
    total: i64,
    items: Vec<ItemView>,
    line_items: Vec<OrderLineView>,
    metadata: BTreeMap<String, String>,
    priced_by: Option<PricedBy>,
    /// Its saga, when it is paid through the confirm API (reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    saga: Option<SagaView>,
    /// Credits its sagas reserved, oldest first (reads only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    credits: Vec<ReservationView>,
    source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_id: Option<String>,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

#[derive(Debug, Serialize)]
struct ItemView {
    sku: String,
    quantity: i64,
}

/// A priced line; `amount` in minor units of the order's currency.
#[derive(Debug, Serialize)]
struct OrderLineView {
    code: String,
    description: String,
    quantity: i64,
    amount: i64,
}

impl From<&OrderDetails> for OrderView {
    fn from(o: &OrderDetails) -> Self {
        OrderView {
            order_id: o.order_id.clone(),
            customer_id: o.customer_id.clone(),
            status: o.status.clone(),
            currency: o.currency.clone(),
            total: o.total,
            items: o
                .items
                .iter()
                .map(|(sku, quantity)| ItemView {
                    sku: sku.clone(),
                    quantity: *quantity,
                })
                .collect(),
            line_items: o
                .lines
                .iter()
                .map(|l| OrderLineView {
                    code: l.code.clone(),
                    description: l.description.clone(),
                    quantity: l.quantity,
                    amount: l.amount,
                })
                .collect(),
            metadata: o.metadata.clone(),
            priced_by: o.priced_by.clone(),
            saga: None,
            credits: Vec::new(),
            source: o.source.clone(),
            source_id: o.source_id.clone(),
            version: o.version,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

async fn create(State(app): State<App>, command: Command) -> Result<Response, ApiError> {
    let request: CreateOrderBody = command.json()?;
    let ctx = command.ctx(Key::Required)?;
    let command = CreateOrderCommand {
        customer_id: request.customer_id,
        currency: request.currency,
        items: request
            .items
            .into_iter()
            .map(|i| (i.sku, i.quantity))
            .collect(),
        metadata: request.metadata,
    };
    let reply = app
        .create_order(&ctx, command, |order| {
            render(
                StatusCode::CREATED,
                "order created",
                &OrderView::from(order),
            )
        })
        .await?;
    Ok(respond(reply))
}

async fn read(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    AppPath(order_id): AppPath<String>,
) -> ApiResult<OrderView> {
    let order = app.order(&caller.tenant, &order_id).await?;
    let mut view = OrderView::from(&order);
    view.saga = app
        .saga(&caller.tenant, &order_id)
        .await?
        .as_ref()
        .map(SagaView::from);
    view.credits = app
        .order_reservations(&caller.tenant, &order_id)
        .await?
        .iter()
        .map(ReservationView::from)
        .collect();
    Ok(ApiOk::new("order", view))
}

async fn cancel(
    State(app): State<App>,
    command: Command,
    AppPath(order_id): AppPath<String>,
) -> Result<Response, ApiError> {
    // The body is optional: an empty POST cancels without a reason.
    let request: CancelBody = command.json_or_default()?;
    let ctx = command.ctx(Key::Optional)?;
    let reply = app
        .cancel_order(&ctx, &order_id, request.reason, |order| {
            render(StatusCode::OK, "order cancelled", &OrderView::from(order))
        })
        .await?;
    Ok(respond(reply))
}

async fn completed(State(app): State<App>, command: Command) -> Result<Response, ApiError> {
    let request: CallbackBody = command.json()?;
    let ctx = command.ctx(Key::Optional)?;
    let reply = app
        .complete_order(&ctx, &request.order_id, render_completion)
        .await?;
    Ok(respond(reply))
}

/// The answer to `completed`: the completed order, or `402 PAY_002` with
/// the order its refused capture compensated.
fn render_completion(order: &OrderDetails) -> StoredResponse {
    let view = OrderView::from(order);
    if order.status == "COMPLETED" {
        return render(StatusCode::OK, "order completed", &view);
    }
    let envelope = Envelope {
        is_success: false,
        code: "PAY_002",
        message: format!(
            "the payment gateway refused to capture the payment of order `{}`: the order is \
             compensated (its payment voided, the order cancelled, its credits released)",
            order.order_id
        ),
        result: Some(&view),
    };
    StoredResponse {
        status: StatusCode::PAYMENT_REQUIRED.as_u16(),
        body: serde_json::to_vec(&envelope).unwrap_or_default(),
    }
}

async fn failed(State(app): State<App>, command: Command) -> ApiResult<OrderView> {
    let request: FailedBody = command.json()?;
    let ctx = command.ctx(Key::Ignored)?;
    let (order, saga) = app
        .fail_order(&ctx, &request.order_id, request.reason)
        .await?;
    let mut view = OrderView::from(&order);
    view.saga = saga.as_ref().map(SagaView::from);
    Ok(ApiOk::new("order compensated", view))
}

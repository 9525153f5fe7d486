//! The tenant REST API, `/api/v1`: customers, credits, orders, subscriptions,
//! metered usage and the events feed (one route module each beside this one).
//! Every route is behind [`auth`] (API key, signature, body limit); every
//! answer is the envelope; bodies and queries are camelCase JSON
//! ([`views`]). Handlers only translate: the use cases live in `app`.
//!
//! POSTs accept an `Idempotency-Key`; the ones that move money require it
//! (`REQ_001` without). A replayed answer carries `Idempotent-Replayed: true`.

pub mod auth;
mod command;
mod orders;
pub(crate) mod payments;
mod subscriptions;
mod usage;
pub mod views;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use self::auth::{Caller, MAX_BODY_BYTES};
use self::command::{Command, Key};
use self::views::*;
use super::envelope::{ApiOk, Envelope, OK};
use super::error::{ApiError, ApiResult};
use super::extract::{AppPath, AppQuery};
use crate::app::credits::{GrantCommand, RefundCommand, UseCommand};
use crate::app::{App, Reply};
use crate::store::StoredResponse;

/// The header that makes a POST idempotent.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Set on answers replayed from an earlier request with the same key.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The tenant routes.
pub fn router(app: App) -> Router {
    Router::new()
        .route(
            "/api/v1/customers/{customer_id}",
            get(get_customer).put(put_customer),
        )
        .route("/api/v1/credits/balance", get(balance))
        .route("/api/v1/credits/charge", post(charge))
        .route("/api/v1/credits/use", post(use_credits))
        .route("/api/v1/credits/refund", post(refund))
        .route("/api/v1/credits/transactions", get(transactions))
        .route("/api/v1/events", get(events))
        .merge(orders::routes())
        .merge(payments::routes())
        .merge(subscriptions::routes())
        .merge(usage::routes())
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            auth::authenticate,
        ))
        // Outside the auth layer, so the limit is set before it reads.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

// ── Customers ──────────────────────────────────────────────────────────────

async fn put_customer(
    State(app): State<App>,
    command: Command,
    AppPath(customer_id): AppPath<String>,
) -> ApiResult<CustomerView> {
    let request: PutCustomerBody = command.json()?;
    let ctx = command.ctx(Key::Ignored)?;
    let saved = app
        .put_customer(&ctx, &customer_id, request.attributes)
        .await?;
    let (status, message) = if saved.created {
        (StatusCode::CREATED, "customer created")
    } else {
        (StatusCode::OK, "customer saved")
    };
    Ok(ApiOk::new(message, CustomerView::from(saved.customer)).with_status(status))
}

async fn get_customer(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    AppPath(customer_id): AppPath<String>,
) -> ApiResult<CustomerView> {
    let customer = app.customer(&caller.tenant, &customer_id).await?;
    Ok(ApiOk::new("customer", CustomerView::from(customer)))
}

// ── Credits ────────────────────────────────────────────────────────────────

async fn balance(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    AppQuery(query): AppQuery<BalanceQuery>,
) -> ApiResult<BalanceResponse> {
    let balance = app
        .credit_balance(&caller.tenant, &query.customer_id)
        .await?;
    Ok(ApiOk::new("balance", BalanceResponse::from(balance)))
}

async fn charge(State(app): State<App>, command: Command) -> Result<Response, ApiError> {
    let request: ChargeBody = command.json()?;
    let ctx = command.ctx(Key::Required)?;
    let command = GrantCommand {
        customer_id: request.customer_id,
        credits: request.credits,
        reason: request.reason,
        expires_at: request.expires_at,
    };
    let reply = app
        .grant_credits(&ctx, command, |granted| {
            render(
                StatusCode::CREATED,
                "credits granted",
                &GrantView::from(granted),
            )
        })
        .await?;
    Ok(respond(reply))
}

async fn use_credits(State(app): State<App>, command: Command) -> Result<Response, ApiError> {
    let request: UseBody = command.json()?;
    let ctx = command.ctx(Key::Required)?;
    let command = UseCommand {
        customer_id: request.customer_id,
        feature: request.feature,
        units: request.units,
        metadata: request.metadata,
    };
    let reply = app
        .use_credits(&ctx, command, |used| {
            render(StatusCode::CREATED, "credits used", &UseView::from(used))
        })
        .await?;
    Ok(respond(reply))
}

async fn refund(State(app): State<App>, command: Command) -> Result<Response, ApiError> {
    let request: RefundBody = command.json()?;
    let ctx = command.ctx(Key::Required)?;
    let command = RefundCommand {
        transaction_id: request.transaction_id,
        credits: request.credits,
        reason: request.reason,
    };
    let reply = app
        .refund_credits(&ctx, command, |refunded| {
            render(
                StatusCode::CREATED,
                "credits refunded",
                &RefundView::from(refunded),
            )
        })
        .await?;
    Ok(respond(reply))
}

async fn transactions(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    AppQuery(query): AppQuery<TransactionsQuery>,
) -> ApiResult<StatementView> {
    let statement = app
        .credit_statement(
            &caller.tenant,
            &query.customer_id,
            query.cursor.as_deref(),
            query.limit,
        )
        .await?;
    Ok(ApiOk::new(
        "credit transactions",
        StatementView::from(statement),
    ))
}

// ── Events ─────────────────────────────────────────────────────────────────

async fn events(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    AppQuery(query): AppQuery<EventsQuery>,
) -> ApiResult<EventsView> {
    let page = app
        .events(&caller.tenant, query.after.as_deref(), query.limit)
        .await?;
    Ok(ApiOk::new("events", EventsView::from(page)))
}

// ── Helpers ────────────────────────────────────────────────────────────────

/// The envelope bytes a command stores with its effect.
pub(super) fn render<T: Serialize>(
    status: StatusCode,
    message: &str,
    result: &T,
) -> StoredResponse {
    let envelope = Envelope {
        is_success: true,
        code: OK,
        message: message.to_owned(),
        result: Some(result),
    };
    // Views are plain structs of strings and numbers: serialising cannot fail.
    let body = serde_json::to_vec(&envelope).unwrap_or_default();
    StoredResponse {
        status: status.as_u16(),
        body,
    }
}

/// A stored (or just stored) answer, byte for byte.
pub(super) fn respond(reply: Reply) -> Response {
    let status =
        StatusCode::from_u16(reply.response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Body::from(reply.response.body)).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if reply.replayed {
        headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

//! Payments through the tenant's payment gateway.
//!
//! - `POST /api/v1/payments/confirm` — `{orderId, paymentKey, amount,
//!   credits?, metadata?}` (metadata: what the tenant's validation policies
//!   see): `paymentKey` is what the PG's checkout returned, `amount` must
//!   equal what the order owes less what `credits` are worth (at the
//!   tenant's `credits_per_major_unit`; they are reserved first, and too
//!   few is `INSUFFICIENT_BALANCE` with nothing sent to the PG).
//!   `Idempotency-Key` required. 201 with the payment (`APPROVED`, the
//!   order `PAID`); with `amount` 0 and no `paymentKey` the credits pay it
//!   all: 201 with the order, `PAID`. A decline is `402 PAY_002` with the
//!   PG's code and message (kept for the key like an approval); a PG that
//!   certainly did not take it is `503 PAY_005`; a lost answer is `202
//!   PAY_006` — send the request again to learn what the PG did.
//! - `POST /api/v1/payments/{paymentId}/cancel` — `{reason?, amount?}`:
//!   voids an `APPROVED` payment at the PG (in full) and cancels its order
//!   (one transaction); refunds `amount` (default: all still refundable) of
//!   a `CONFIRMED` or `PARTIALLY_REFUNDED` one. More than is refundable is
//!   `PAY_004` with nothing sent to the PG. `Idempotency-Key` required.
//! - `GET /api/v1/payments/{paymentId}` — the payment and its PG calls.
//! - `GET /api/v1/payments/{paymentId}/history` — its transitions, oldest
//!   first: from, to, event, reason (the PG's code and message for its
//!   answers), actor, request id, time.
//! - `GET /api/v1/payments?orderId=` — an order's payments.
//! - `POST /api/v1/customers/{customerId}/payment-methods` — `{billingKey,
//!   customerKey?, label?}`: stores a card the PG tokenised (its billing
//!   key; never card data). With `subscriptions.charge_card`, renewals are
//!   charged to the customer's newest card. `GET` lists them (removed ones
//!   with `removedAt`); `DELETE …/payment-methods/{methodId}` removes one.

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
use crate::api::extract::{AppPath, AppQuery};
use crate::app::App;
use crate::app::payments::{ConfirmCommand, PaymentDetails};
use crate::store::{PaymentAttemptRecord, PaymentRecord, PaymentTransitionRecord, StoredResponse};

/// The routes of this module; [`super::router`] puts them behind auth.
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/payments/confirm", post(confirm))
        .route("/api/v1/payments", get(list))
        .route("/api/v1/payments/{payment_id}", get(read))
        .route("/api/v1/payments/{payment_id}/cancel", post(cancel))
        .route("/api/v1/payments/{payment_id}/history", get(history))
        .route(
            "/api/v1/customers/{customer_id}/payment-methods",
            post(add_method).get(list_methods),
        )
        .route(
            "/api/v1/customers/{customer_id}/payment-methods/{method_id}",
            axum::routing::delete(remove_method),
        )
}

/// `POST /api/v1/payments/{paymentId}/cancel`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CancelBody {
    #[serde(default)]
    reason: Option<String>,
    /// Minor units to refund (refunds only); absent: all that is left.
    #[serde(default)]
    amount: Option<i64>,
}

async fn cancel(
    State(app): State<App>,
    command: Command,
    AppPath(payment_id): AppPath<String>,
) -> Result<Response, ApiError> {
    let request: CancelBody = command.json_or_default()?;
    let ctx = command.ctx(Key::Required)?;
    let reply = app
        .cancel_payment(
            &ctx,
            &payment_id,
            request.reason,
            request.amount,
            |details| {
                let message = match details.payment.status.as_str() {
                    "CANCELLED" => "payment voided",
                    _ => "payment refunded",
                };
                render(
                    StatusCode::OK,
                    message,
                    &PaymentView::of(&details.payment, Some(&details.attempts)),
                )
            },
        )
        .await?;
    Ok(respond(reply))
}

/// `POST /api/v1/payments/confirm`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfirmBody {
    order_id: String,
    #[serde(default)]
    payment_key: Option<String>,
    amount: i64,
    #[serde(default)]
    credits: Option<i64>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
}

/// `GET /api/v1/payments?orderId=`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListQuery {
    order_id: String,
}

/// A payment as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentView {
    payment_id: String,
    order_id: String,
    customer_id: String,
    amount: MoneyView,
    status: String,
    pg_payment_key: Option<String>,
    /// `manual` (the approval authorizes, the order's fulfilment captures)
    /// or `automatic` (the approval captures), fixed when it was opened;
    /// absent for a payment opened before it was recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    capture_mode: Option<String>,
    refunded: i64,
    failure: Option<FailureView>,
    version: i64,
    created_at: i64,
    updated_at: i64,
    /// Its calls to the PG (the single-payment reads and answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<Vec<AttemptView>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MoneyView {
    amount: i64,
    currency: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FailureView {
    code: String,
    message: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AttemptView {
    attempt: i64,
    kind: String,
    idempotency_key: Option<String>,
    outcome: String,
    pg_code: Option<String>,
    latency_ms: i64,
    created_at: i64,
}

impl PaymentView {
    pub(crate) fn of(p: &PaymentRecord, attempts: Option<&[PaymentAttemptRecord]>) -> Self {
        PaymentView {
            payment_id: p.payment_id.clone(),
            order_id: p.order_id.clone(),
            customer_id: p.customer_id.clone(),
            amount: MoneyView {
                amount: p.amount,
                currency: p.currency.clone(),
            },
            status: p.status.clone(),
            pg_payment_key: p.pg_payment_key.clone(),
            capture_mode: p.capture_mode.clone(),
            refunded: p.refunded,
            failure: p.failure_code.clone().map(|code| FailureView {
                code,
                message: p.failure_message.clone().unwrap_or_default(),
            }),
            version: p.version,
            created_at: p.created_at,
            updated_at: p.updated_at,
            attempts: attempts.map(|list| {
                list.iter()
                    .map(|a| AttemptView {
                        attempt: a.attempt,
                        kind: a.kind.clone(),
                        idempotency_key: a.idempotency_key.clone(),
                        outcome: a.outcome.clone(),
                        pg_code: a.pg_code.clone(),
                        latency_ms: a.latency_ms,
                        created_at: a.created_at,
                    })
                    .collect()
            }),
        }
    }
}

/// The answer kept for a confirm's Idempotency-Key: the approval, or the
/// decline as `402 PAY_002` with the payment (and the PG's code) in
/// `result`.
fn render_outcome(details: &PaymentDetails) -> StoredResponse {
    let view = PaymentView::of(&details.payment, Some(&details.attempts));
    if details.payment.status == "FAILED" {
        let failure = view.failure.as_ref();
        let envelope = Envelope {
            is_success: false,
            code: "PAY_002",
            message: format!(
                "the payment gateway declined the payment: {}",
                failure.map_or("", |f| f.message.as_str())
            ),
            result: Some(&view),
        };
        return StoredResponse {
            status: StatusCode::PAYMENT_REQUIRED.as_u16(),
            body: serde_json::to_vec(&envelope).unwrap_or_default(),
        };
    }
    render(StatusCode::CREATED, "payment approved", &view)
}

async fn confirm(State(app): State<App>, command: Command) -> Result<Response, ApiError> {
    let request: ConfirmBody = command.json()?;
    let ctx = command.ctx(Key::Required)?;
    let command = ConfirmCommand {
        order_id: request.order_id,
        payment_key: request.payment_key,
        amount: request.amount,
        credits: request.credits,
        metadata: request.metadata,
    };
    let reply = if command.amount == 0 && command.credits.is_some() {
        // Credits pay it all: nothing goes to the PG; the answer is the
        // order, PAID.
        app.pay_with_credits(&ctx, command, |order| {
            render(
                StatusCode::CREATED,
                "order paid with credits",
                &super::orders::OrderView::from(order),
            )
        })
        .await?
    } else {
        app.confirm_payment(&ctx, command, render_outcome).await?
    };
    Ok(respond(reply))
}

async fn read(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    AppPath(payment_id): AppPath<String>,
) -> ApiResult<PaymentView> {
    let details = app.payment(&caller.tenant, &payment_id).await?;
    Ok(ApiOk::new(
        "payment",
        PaymentView::of(&details.payment, Some(&details.attempts)),
    ))
}

async fn list(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    AppQuery(query): AppQuery<ListQuery>,
) -> ApiResult<Vec<PaymentView>> {
    let payments = app
        .payments_of_order(&caller.tenant, &query.order_id)
        .await?;
    Ok(ApiOk::new(
        "payments",
        payments.iter().map(|p| PaymentView::of(p, None)).collect(),
    ))
}

/// One transition of a payment.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TransitionView {
    from: Option<String>,
    to: String,
    event: String,
    reason: String,
    actor: String,
    request_id: Option<String>,
    transaction_id: String,
    at: i64,
}

impl From<PaymentTransitionRecord> for TransitionView {
    fn from(t: PaymentTransitionRecord) -> Self {
        TransitionView {
            from: t.from_state,
            to: t.to_state,
            event: t.event,
            reason: t.reason,
            actor: t.actor,
            request_id: t.request_id,
            transaction_id: t.transaction_id,
            at: t.at,
        }
    }
}

async fn history(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    AppPath(payment_id): AppPath<String>,
) -> ApiResult<Vec<TransitionView>> {
    let history = app.payment_history(&caller.tenant, &payment_id).await?;
    Ok(ApiOk::new(
        "payment history",
        history.into_iter().map(TransitionView::from).collect(),
    ))
}

/// `POST /api/v1/customers/{customerId}/payment-methods`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AddMethodBody {
    billing_key: String,
    #[serde(default)]
    customer_key: Option<String>,
    #[serde(default)]
    label: Option<String>,
}

/// A stored card. The billing key is not shown back: it charges the card.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MethodView {
    method_id: String,
    customer_id: String,
    customer_key: String,
    label: Option<String>,
    created_at: i64,
    removed_at: Option<i64>,
}

impl From<&crate::store::PaymentMethodRecord> for MethodView {
    fn from(m: &crate::store::PaymentMethodRecord) -> Self {
        MethodView {
            method_id: m.method_id.clone(),
            customer_id: m.customer_id.clone(),
            customer_key: m.customer_key.clone(),
            label: m.label.clone(),
            created_at: m.created_at,
            removed_at: m.removed_at,
        }
    }
}

async fn add_method(
    State(app): State<App>,
    command: Command,
    AppPath(customer_id): AppPath<String>,
) -> Result<Response, ApiError> {
    let request: AddMethodBody = command.json()?;
    let ctx = command.ctx(Key::Optional)?;
    let reply = app
        .add_payment_method(
            &ctx,
            &customer_id,
            crate::app::payments::AddPaymentMethod {
                billing_key: request.billing_key,
                customer_key: request.customer_key,
                label: request.label,
            },
            |method| {
                render(
                    StatusCode::CREATED,
                    "payment method stored",
                    &MethodView::from(method),
                )
            },
        )
        .await?;
    Ok(respond(reply))
}

async fn list_methods(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    AppPath(customer_id): AppPath<String>,
) -> ApiResult<Vec<MethodView>> {
    let methods = app.payment_methods(&caller.tenant, &customer_id).await?;
    Ok(ApiOk::new(
        "payment methods",
        methods.iter().map(MethodView::from).collect(),
    ))
}

async fn remove_method(
    State(app): State<App>,
    command: Command,
    AppPath((customer_id, method_id)): AppPath<(String, String)>,
) -> Result<Response, ApiError> {
    // A DELETE is idempotent by itself: a repeat finds nothing (404).
    let ctx = command.ctx(Key::Ignored)?;
    app.remove_payment_method(&ctx, &customer_id, &method_id)
        .await?;
    let stored = render(
        StatusCode::OK,
        "payment method removed",
        &serde_json::json!({ "methodId": method_id, "customerId": customer_id }),
    );
    Ok(respond(crate::app::Reply {
        response: stored,
        replayed: false,
    }))
}

//! `POST /pg/v1/notifications/{tenant}`: the PG's status-change webhook
//! (Toss: `{"eventType": "PAYMENT_STATUS_CHANGED", "createdAt", "data":
//! payment}`), registered with the PG per tenant.
//!
//! Not authenticated, so its body is only a hint: FluxPay never adopts what
//! it says, it asks the PG about the order's payment in flight (the same
//! resolution as the recovery scheduler's) and adopts the PG's answer. A
//! duplicate, a late notification (of a payment already settled) or one
//! about an order FluxPay does not know changes nothing and is answered
//! 200, so the PG does not send it again.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use serde::Deserialize;

use super::envelope::ApiOk;
use super::error::ApiResult;
use super::extract::{AppJson, AppPath};
use crate::app::App;

/// Largest notification body: a payment with its cancellations.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The routes, outside the tenant API's key check.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/pg/v1/notifications/{tenant}", post(notified))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    event_type: String,
    data: NotifiedPayment,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotifiedPayment {
    order_id: String,
}

async fn notified(
    State(app): State<App>,
    AppPath(tenant): AppPath<String>,
    AppJson(notification): AppJson<Notification>,
) -> ApiResult<serde_json::Value> {
    if notification.event_type != "PAYMENT_STATUS_CHANGED" {
        return Ok(ApiOk::new(
            "ignored",
            serde_json::json!({ "resolved": 0, "eventType": notification.event_type }),
        ));
    }
    let resolved = app
        .pg_notified(&tenant, &notification.data.order_id)
        .await?;
    Ok(ApiOk::new(
        "notification received",
        serde_json::json!({ "resolved": resolved }),
    ))
}

//! HTTP API: the response envelope, error mapping and routers.
//!
//! Every answer, errors and unknown routes included, is the envelope of
//! [`envelope`]; [`error::ApiError`] is the one place codes and statuses are
//! decided. [`tenant`] is the tenant REST API (`/api/v1`), [`admin`] the
//! operator's (`/admin/v1`).

pub mod admin;
pub mod envelope;
pub mod error;
pub mod extract;
pub mod health;
pub mod pg_notifications;
pub mod tenant;

use axum::Router;
use axum::http::Uri;

use self::admin::AdminState;
use self::error::ApiError;
use crate::app::App;

/// Health probes and the admin API (no database).
pub fn router(admin: AdminState) -> Router {
    Router::new()
        .merge(health::router(admin.registry().clone(), None))
        .merge(admin::router(admin))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// The whole HTTP surface: health probes (readiness includes the
/// database), the admin API and the tenant API.
pub fn service(admin: AdminState, app: App) -> Router {
    Router::new()
        .merge(health::router(
            admin.registry().clone(),
            Some(app.store().clone()),
        ))
        .merge(admin::router(admin.with_app(app.clone())))
        .merge(pg_notifications::router(app.clone()))
        .merge(tenant::router(app))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

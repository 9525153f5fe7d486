//! Metered usage: ingest (deduplicated), summary, period close.

use axum::Router;

use crate::app::App;

/// The routes of this module; [`super::router`] puts them behind auth.
pub(super) fn routes() -> Router<App> {
    Router::new()
}

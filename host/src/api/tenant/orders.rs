//! Orders: create (priced by the tenant's order policy), read, cancel.

use axum::Router;

use crate::app::App;

/// The routes of this module; [`super::router`] puts them behind auth.
pub(super) fn routes() -> Router<App> {
    Router::new()
}

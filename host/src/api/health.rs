//! `GET /health/live` (the process answers) and `GET /health/ready`
//! (policies are loaded — the first snapshot has been published — and the
//! database answers, when the host has one).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use super::envelope::ApiOk;
use super::error::{ApiError, ApiResult};
use crate::policy::registry::Registry;
use crate::store::{Queries, Store};

#[derive(Clone)]
struct Health {
    registry: Arc<Registry>,
    store: Option<Store>,
}

/// The health routes; no authentication (load balancers call them).
pub fn router(registry: Arc<Registry>, store: Option<Store>) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(Health { registry, store })
}

async fn live() -> ApiResult<Value> {
    Ok(ApiOk::new("live", json!({ "status": "live" })))
}

async fn ready(State(health): State<Health>) -> ApiResult<Value> {
    let snapshot = health.registry.snapshot();
    if snapshot.version() == 0 {
        return Err(ApiError::NotReady);
    }
    let database = match &health.store {
        Some(store) => {
            store.ping().await.map_err(ApiError::StoreUnavailable)?;
            Some(store.backend())
        }
        None => None,
    };
    let bindings: usize = snapshot.tenants().map(|(_, t)| t.bindings().count()).sum();
    Ok(ApiOk::new(
        "ready",
        json!({
            "status": "ready",
            "snapshotVersion": snapshot.version(),
            "tenants": snapshot.tenants().count(),
            "bindings": bindings,
            "database": database,
        }),
    ))
}

//! The admin API: list bound policies, reload the configuration, roll a
//! binding back, and evaluate a deployed policy exactly as production calls it.
//!
//! Every route needs `Authorization: Bearer $FLUXPAY_ADMIN_TOKEN`.

mod auth;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::middleware;
use axum::routing::{get, post};

pub use auth::{ADMIN_TOKEN_ENV, AdminToken};
pub use views::{EvaluateBody, EvaluateContext};

use self::views::{AnsweredBy, CallStatsView, EvaluateView, PoliciesView};
use super::envelope::ApiOk;
use super::error::{ApiError, ApiResult};
use super::extract::{AppJson, AppPath};
use crate::api::tenant::payments::PaymentView;
use crate::config::BindingRole;
use crate::policy::registry::{
    CommitReport, Registry, RollbackError, RollbackReport, now_ms, pricing_kind_of,
};
use crate::policy::reload::{ReloadReport, Reloader, Trigger};
use crate::policy::{Call, CallError};

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    reloader: Arc<Reloader>,
    token: Option<AdminToken>,
    /// The use cases, for the routes about money (payments' health).
    app: Option<crate::app::App>,
}

impl AdminState {
    /// `token: None` disables the admin API (every route answers 503).
    pub fn new(reloader: Arc<Reloader>, token: Option<AdminToken>) -> Self {
        AdminState {
            reloader,
            token,
            app: None,
        }
    }

    /// Gives the routes about money the use cases ([`crate::api::service`]
    /// does).
    pub fn with_app(mut self, app: crate::app::App) -> Self {
        self.app = Some(app);
        self
    }

    /// The registry the reloader publishes to.
    pub fn registry(&self) -> &Arc<Registry> {
        self.reloader.registry()
    }
}

/// The admin routes, behind the bearer-token check.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/v1/policies", get(list))
        .route("/admin/v1/policies/reload", post(reload))
        .route(
            "/admin/v1/policies/{tenant}/{policy}/rollback",
            post(rollback),
        )
        .route(
            "/admin/v1/policies/{tenant}/{policy}/evaluate",
            post(evaluate),
        )
        .route("/admin/v1/payments/health", get(payments_health))
        .route("/admin/v1/payments/flagged", get(flagged_payments))
        .route("/admin/v1/sagas", get(sagas))
        .route("/admin/v1/events/status", get(events_status))
        .route("/admin/v1/events/dead", get(dead_events))
        .route("/admin/v1/events/replay", post(replay_events))
        .route(
            "/admin/v1/events/{tenant}/{event_id}/skip",
            post(skip_event),
        )
        .route(
            "/admin/v1/sagas/{tenant}/{order_id}/retry",
            post(retry_saga),
        )
        .route(
            "/admin/v1/payments/{tenant}/{payment_id}/resolve",
            post(resolve_payment),
        )
        .route_layer(middleware::from_fn_with_state(
            state.token.clone(),
            auth::require_admin,
        ))
        .with_state(state)
}

/// `GET /admin/v1/events/status`: per tenant and sink (Kafka for every
/// tenant, the webhook for those that have one), where the relay stands —
/// the cursor (last acknowledged feed position), the host holding the
/// lease, events after the cursor and how long the oldest has waited,
/// events failing, held and dead, and per event type what is published and
/// waiting.
async fn events_status(State(state): State<AdminState>) -> ApiResult<serde_json::Value> {
    let Some(app) = &state.app else {
        return Err(ApiError::NotReady);
    };
    let now = app.now();
    let mut statuses = Vec::new();
    for sink in crate::app::events::KNOWN_SINKS {
        statuses.extend(app.relay_status(sink, now).await?);
    }
    let tenants = statuses
        .iter()
        .map(|s| {
            serde_json::json!({
                "tenant": &s.tenant,
                "sink": s.sink,
                "position": s.position,
                "owner": &s.owner,
                "leaseUntil": s.lease_until,
                "pending": s.pending,
                "oldestPendingAgeMs": s.oldest_pending_age_ms,
                "failing": s.failing,
                "held": s.held,
                "dead": s.dead,
                "byType": s.by_type.iter().map(|t| serde_json::json!({
                    "type": &t.event_type,
                    "published": t.published,
                    "pending": t.pending,
                })).collect::<Vec<_>>(),
            })
        })
        .collect::<Vec<_>>();
    Ok(ApiOk::new(
        "events status",
        serde_json::json!({ "now": now, "tenants": tenants }),
    ))
}

/// `GET /admin/v1/events/dead?tenant=&sink=`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadQuery {
    tenant: String,
    sink: Option<String>,
}

/// The sink an admin request names: `kafka` (the default) or `webhook`.
fn sink_named(sink: Option<&str>) -> Result<&'static str, ApiError> {
    let name = sink.unwrap_or(crate::events::kafka::SINK);
    crate::app::events::KNOWN_SINKS
        .into_iter()
        .find(|known| *known == name)
        .ok_or_else(|| {
            crate::app::AppError::Invalid(format!(
                "sink `{name}` is not one of {:?}",
                crate::app::events::KNOWN_SINKS
            ))
            .into()
        })
}

/// `GET /admin/v1/events/dead?tenant=&sink=`: the tenant's events a sink
/// (`kafka` by default, or `webhook`) gave up on (refused `max_attempts`
/// times; Kafka's went to their dead-letter topics), and how many of their
/// customers' events wait behind them.
async fn dead_events(
    State(state): State<AdminState>,
    super::extract::AppQuery(query): super::extract::AppQuery<DeadQuery>,
) -> ApiResult<serde_json::Value> {
    let Some(app) = &state.app else {
        return Err(ApiError::NotReady);
    };
    let (dead, held) = app
        .dead_events(&query.tenant, sink_named(query.sink.as_deref())?)
        .await?;
    let dead = dead
        .iter()
        .map(|e| {
            serde_json::json!({
                "eventId": &e.event_id,
                "position": e.position,
                "customerId": &e.customer_id,
                "type": &e.event_type,
                "attempts": e.attempts,
                "lastError": &e.last_error,
                "deadAt": e.updated_at,
            })
        })
        .collect::<Vec<_>>();
    Ok(ApiOk::new(
        "dead events",
        serde_json::json!({ "dead": dead, "held": held }),
    ))
}

/// `?sink=` of a skip.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkQuery {
    sink: Option<String>,
}

/// `POST /admin/v1/events/{tenant}/{eventId}/skip?sink=`: a dead event is
/// given up (Kafka's stays in its dead-letter topic); its customer's held
/// events are published by the next round.
async fn skip_event(
    State(state): State<AdminState>,
    AppPath((tenant, event_id)): AppPath<(String, String)>,
    super::extract::AppQuery(query): super::extract::AppQuery<SinkQuery>,
) -> ApiResult<serde_json::Value> {
    let Some(app) = &state.app else {
        return Err(ApiError::NotReady);
    };
    app.skip_event(&tenant, sink_named(query.sink.as_deref())?, &event_id)
        .await?;
    Ok(ApiOk::new(
        "event skipped",
        serde_json::json!({ "eventId": event_id }),
    ))
}

/// `POST /admin/v1/events/replay`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ReplayBody {
    tenant: String,
    sink: Option<String>,
    #[serde(default)]
    event_ids: Vec<String>,
    from_position: Option<i64>,
    to_position: Option<i64>,
    dead_of_type: Option<String>,
}

/// `POST /admin/v1/events/replay`: `{tenant, sink?, eventIds?,
/// fromPosition?, toPosition?, deadOfType?}` (sink: `kafka` by default, or
/// `webhook`) — the selected events (already passed by the
/// relay) are published again with their own ids by the next rounds, dead
/// ones first in line for their customers.
async fn replay_events(
    State(state): State<AdminState>,
    AppJson(body): AppJson<ReplayBody>,
) -> ApiResult<serde_json::Value> {
    use crate::app::AppError;
    let Some(app) = &state.app else {
        return Err(ApiError::NotReady);
    };
    let positions = match (body.from_position, body.to_position) {
        (None, None) => None,
        (Some(from), Some(to)) => Some((from, to)),
        _ => {
            return Err(AppError::Invalid("fromPosition and toPosition go together".into()).into());
        }
    };
    if body.event_ids.is_empty() && positions.is_none() && body.dead_of_type.is_none() {
        return Err(AppError::Invalid(
            "name eventIds, fromPosition/toPosition or deadOfType".into(),
        )
        .into());
    }
    let replayed = app
        .replay_events(
            &body.tenant,
            sink_named(body.sink.as_deref())?,
            crate::app::events::ReplaySelection {
                event_ids: body.event_ids,
                positions,
                dead_of_type: body.dead_of_type,
            },
        )
        .await?;
    Ok(ApiOk::new(
        "events replayed",
        serde_json::json!({ "replayed": replayed }),
    ))
}

/// Payments stuck `READY`/`UNKNOWN` longer than this are counted as stuck.
const STUCK_AFTER_MS: i64 = 5 * 60_000;

/// `GET /admin/v1/payments/health`: per gateway tenant, payments `READY`,
/// `UNKNOWN`, stuck past 5 minutes, flagged for an operator (their retry
/// budget used up) and waiting for their void, and the breaker's state.
async fn payments_health(State(state): State<AdminState>) -> ApiResult<serde_json::Value> {
    let Some(app) = &state.app else {
        return Err(ApiError::NotReady);
    };
    let tenants = app
        .payments_health(STUCK_AFTER_MS)
        .await?
        .into_iter()
        .map(|t| {
            serde_json::json!({
                "tenant": t.tenant,
                "ready": t.payments.ready,
                "unknown": t.payments.unknown,
                "stuck": t.payments.stuck,
                "flagged": t.payments.flagged,
                "voiding": t.payments.voiding,
                "capturing": t.payments.capturing,
                "sagasParked": t.sagas_parked,
                "breaker": t.breaker,
            })
        })
        .collect::<Vec<_>>();
    Ok(ApiOk::new(
        "payments health",
        serde_json::json!({ "stuckAfterMs": STUCK_AFTER_MS, "tenants": tenants }),
    ))
}

/// `GET /admin/v1/payments/flagged`: payments the recovery scheduler gave
/// up on, and captures unknown for too long, per tenant, oldest flag first,
/// each with what it is stuck on.
async fn flagged_payments(State(state): State<AdminState>) -> ApiResult<serde_json::Value> {
    let Some(app) = &state.app else {
        return Err(ApiError::NotReady);
    };
    let flagged = app
        .flagged_payments()
        .await?
        .into_iter()
        .map(|(tenant, payment)| {
            serde_json::json!({
                "tenant": tenant,
                "flaggedAt": payment.flagged_at,
                "checks": payment.checks,
                "stuckOn": crate::app::payments::stuck_on(&payment),
                "payment": PaymentView::of(&payment, None),
            })
        })
        .collect::<Vec<_>>();
    Ok(ApiOk::new(
        "flagged payments",
        serde_json::json!({ "payments": flagged }),
    ))
}

/// `GET /admin/v1/sagas?tenant=&state=`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SagasQuery {
    tenant: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

/// `GET /admin/v1/sagas?tenant=&state=&limit=`: a tenant's order sagas
/// (e.g. `COMPENSATION_FAILED` ones, parked for an operator), most
/// recently changed first.
async fn sagas(
    State(state): State<AdminState>,
    super::extract::AppQuery(query): super::extract::AppQuery<SagasQuery>,
) -> ApiResult<serde_json::Value> {
    let Some(app) = &state.app else {
        return Err(ApiError::NotReady);
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let sagas = app
        .sagas(&query.tenant, query.state.as_deref(), limit)
        .await?
        .iter()
        .map(|s| {
            serde_json::json!({
                "orderId": &s.order_id,
                "customerId": &s.customer_id,
                "state": &s.state,
                "paymentId": &s.payment_id,
                "stepsDone": &s.steps_done,
                "serviceDeadlineAt": s.service_deadline_at,
                "nextRunAt": s.next_run_at,
                "captureAttempts": s.attempts_by_phase().0,
                "compensationAttempts": s.attempts_by_phase().1,
                "lastError": &s.last_error,
                "updatedAt": s.updated_at,
            })
        })
        .collect::<Vec<_>>();
    Ok(ApiOk::new("sagas", serde_json::json!({ "sagas": sagas })))
}

/// `POST /admin/v1/sagas/{tenant}/{orderId}/retry`: a parked saga goes
/// back to compensating (`PAY_004` in any other state).
async fn retry_saga(
    State(state): State<AdminState>,
    AppPath((tenant, order_id)): AppPath<(String, String)>,
) -> ApiResult<serde_json::Value> {
    let Some(app) = &state.app else {
        return Err(ApiError::NotReady);
    };
    let saga = app.retry_saga(&tenant, &order_id).await?;
    Ok(ApiOk::new(
        "saga compensating again",
        serde_json::json!({
            "orderId": saga.order_id,
            "state": saga.state,
            "nextRunAt": saga.next_run_at,
        }),
    ))
}

/// `POST /admin/v1/payments/{tenant}/{paymentId}/resolve`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ResolveBody {
    /// `adopt`, `fail` or `retry`.
    action: String,
    /// Why (kept in the history; required to fail a payment).
    #[serde(default)]
    reason: Option<String>,
}

/// Resolves a flagged payment: `adopt` the PG's answer now, `fail` it on
/// the operator's word, or `retry` its schedule from the start.
async fn resolve_payment(
    State(state): State<AdminState>,
    AppPath((tenant, payment_id)): AppPath<(String, String)>,
    AppJson(body): AppJson<ResolveBody>,
) -> ApiResult<PaymentView> {
    use crate::app::AppError;
    use crate::app::payments::OperatorAction;
    let Some(app) = &state.app else {
        return Err(ApiError::NotReady);
    };
    let action = match body.action.as_str() {
        "adopt" => OperatorAction::Adopt,
        "fail" => OperatorAction::Fail,
        "retry" => OperatorAction::Retry,
        other => {
            return Err(AppError::Invalid(format!(
                "action `{other}` is not `adopt`, `fail` or `retry`"
            ))
            .into());
        }
    };
    let reason = body.reason.unwrap_or_default();
    if action == OperatorAction::Fail && reason.trim().is_empty() {
        return Err(AppError::Invalid("a reason is required to fail a payment".into()).into());
    }
    if reason.len() > 200 {
        return Err(AppError::Invalid("reason must be at most 200 bytes".into()).into());
    }
    let details = app
        .resolve_payment(&tenant, &payment_id, action, &reason, "admin")
        .await?;
    Ok(ApiOk::new(
        "payment resolved",
        PaymentView::of(&details.payment, Some(&details.attempts)),
    ))
}

async fn list(State(state): State<AdminState>) -> ApiResult<PoliciesView> {
    let snapshot = state.registry().snapshot();
    let view = PoliciesView::new(
        &snapshot,
        state.reloader.config_path().to_owned(),
        state.reloader.last_status(),
    );
    Ok(ApiOk::new(
        format!("snapshot {} serving", snapshot.version()),
        view,
    ))
}

async fn reload(State(state): State<AdminState>) -> ApiResult<ReloadReport> {
    let reloader = state.reloader.clone();
    let outcome = blocking(move || reloader.reload(Trigger::Admin)).await?;
    match outcome {
        Ok(report) => {
            let message = reload_message(&report.commit);
            Ok(ApiOk::new(message, report))
        }
        Err(failure) => Err(ApiError::ConfigInvalid {
            message: format!(
                "configuration refused ({} problem{}); snapshot {} keeps serving",
                failure.errors.0.len(),
                if failure.errors.0.len() == 1 { "" } else { "s" },
                failure.serving_version
            ),
            errors: failure.errors,
            serving_version: failure.serving_version,
        }),
    }
}

fn reload_message(commit: &CommitReport) -> String {
    if commit.swapped {
        format!(
            "reloaded: snapshot {} replaces {}",
            commit.snapshot_version, commit.previous_version
        )
    } else {
        format!(
            "nothing changed: snapshot {} keeps serving",
            commit.snapshot_version
        )
    }
}

async fn rollback(
    State(state): State<AdminState>,
    AppPath((tenant, policy)): AppPath<(String, String)>,
) -> ApiResult<RollbackReport> {
    let registry = state.registry().clone();
    if registry.snapshot().version() == 0 {
        return Err(ApiError::NotReady);
    }
    let outcome = blocking(move || registry.writer().rollback(&tenant, &policy)).await?;
    match outcome {
        Ok(report) => {
            tracing::info!(
                tenant = %report.tenant,
                policy = %report.policy,
                from_version = report.from_version,
                to_version = report.to_version,
                snapshot_version = report.snapshot_version,
                "policy.rollback"
            );
            let message = format!(
                "policy `{}` of tenant `{}` rolled back from version {} to {}",
                report.policy, report.tenant, report.from_version, report.to_version
            );
            Ok(ApiOk::new(message, report))
        }
        Err(RollbackError::UnknownTenant(tenant)) => Err(ApiError::TenantNotFound(tenant)),
        Err(RollbackError::UnknownPolicy { tenant, policy }) => {
            Err(ApiError::PolicyNotFound { tenant, policy })
        }
        Err(err @ RollbackError::NoEarlierVersion { .. }) => {
            Err(ApiError::NoEarlierVersion(err.to_string()))
        }
    }
}

async fn evaluate(
    State(state): State<AdminState>,
    AppPath((tenant, policy)): AppPath<(String, String)>,
    AppJson(body): AppJson<EvaluateBody>,
) -> ApiResult<EvaluateView> {
    // One snapshot for the whole call: a concurrent reload does not change
    // which version answers.
    let snapshot = state.registry().snapshot();
    if snapshot.version() == 0 {
        return Err(ApiError::NotReady);
    }
    let tenant_policies = snapshot
        .tenant(&tenant)
        .ok_or_else(|| ApiError::TenantNotFound(tenant.clone()))?;
    let binding = tenant_policies
        .get(&policy)
        .ok_or_else(|| ApiError::PolicyNotFound {
            tenant: tenant.clone(),
            policy: policy.clone(),
        })?
        .clone();
    let answered_by = AnsweredBy {
        tenant,
        policy,
        kind: binding.role().as_str(),
        content_hash: binding.content_hash().to_owned(),
        version: binding.version(),
        snapshot_version: snapshot.version(),
    };
    let ctx = body.context.into_call_context(now_ms());
    match (binding.role(), body.request, body.subject) {
        (BindingRole::Pricing(kind), Some(request), None) => {
            let asked = pricing_kind_of(&request);
            if asked != kind {
                return Err(ApiError::InvalidRequest(format!(
                    "policy `{kind}` prices {kind} requests; this is a {asked} request"
                )));
            }
            let call = blocking(move || binding.price(ctx, &request)).await?;
            answer(answered_by, call, |view, quote| view.quote = Some(quote))
        }
        (BindingRole::Validation, None, Some(subject)) => {
            let call = blocking(move || binding.validate(ctx, &subject)).await?;
            answer(answered_by, call, |view, violations| {
                view.violations = Some(violations)
            })
        }
        (BindingRole::Pricing(kind), _, _) => Err(ApiError::InvalidRequest(format!(
            "policy `{kind}` is a pricing policy: send `request` (a pricing request) and no `subject`"
        ))),
        (BindingRole::Validation, _, _) => Err(ApiError::InvalidRequest(format!(
            "policy `{}` is a validation policy: send `subject` (a validation subject) and no `request`",
            answered_by.policy
        ))),
    }
}

/// Turn a call into the evaluate answer: the result on success; on a policy
/// error or failure, the error with who answered and the call stats.
fn answer<T>(
    answered_by: AnsweredBy,
    call: Call<T>,
    fill: impl FnOnce(&mut EvaluateView, T),
) -> ApiResult<EvaluateView> {
    let stats = CallStatsView::from(&call.stats);
    match call.result {
        Ok(value) => {
            let mut view = EvaluateView {
                answered_by,
                quote: None,
                violations: None,
                stats,
            };
            fill(&mut view, value);
            let message = format!(
                "answered by `{}` version {}",
                view.answered_by.policy, view.answered_by.version
            );
            Ok(ApiOk::new(message, view))
        }
        Err(err) => Err(call_error(answered_by, stats, err)),
    }
}

fn call_error(answered_by: AnsweredBy, stats: CallStatsView, err: CallError) -> ApiError {
    let who = serde_json::to_value(&answered_by).unwrap_or(serde_json::Value::Null);
    let stats = serde_json::to_value(&stats).unwrap_or(serde_json::Value::Null);
    ApiError::from_policy_call(who, stats, err)
}

/// Run blocking work (policy calls, reloads that compile, the writer lock)
/// off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|err| ApiError::Internal(anyhow::Error::new(err).context("blocking task")))
}

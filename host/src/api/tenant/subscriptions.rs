//! Subscriptions: create, read, change plan, cancel, resume — and their
//! views.
//!
//! Create and change-plan move money and require an `Idempotency-Key`;
//! cancel and resume accept one.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::command::{Command, Key};
use super::views::LineItemView;
use super::{render, respond};
use crate::api::envelope::ApiOk;
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::AppPath;
use crate::app::subscriptions::{
    CancelCommand, ChangePlanCommand, ChargeInfo, CreateCommand, ResumeCommand,
    SubscriptionOutcome, SubscriptionView, Timing,
};
use crate::app::{App, PolicyRef};
use crate::policy::types;

/// The routes of this module; [`super::router`] puts them behind auth.
pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/api/v1/subscriptions", post(create))
        .route("/api/v1/subscriptions/{subscription_id}", get(read))
        .route(
            "/api/v1/subscriptions/{subscription_id}/change-plan",
            post(change_plan),
        )
        .route(
            "/api/v1/subscriptions/{subscription_id}/cancel",
            post(cancel),
        )
        .route(
            "/api/v1/subscriptions/{subscription_id}/resume",
            post(resume),
        )
}

async fn create(State(app): State<App>, command: Command) -> Result<Response, ApiError> {
    let request: CreateBody = command.json()?;
    let ctx = command.ctx(Key::Required)?;
    let command = CreateCommand {
        customer_id: request.customer_id,
        plan_id: request.plan_id,
        metadata: request.metadata,
    };
    let reply = app
        .create_subscription(&ctx, command, |outcome| {
            render(
                StatusCode::CREATED,
                "subscription created",
                &OutcomeView::from(outcome),
            )
        })
        .await?;
    Ok(respond(reply))
}

async fn read(
    State(app): State<App>,
    Extension(caller): Extension<Caller>,
    AppPath(subscription_id): AppPath<String>,
) -> ApiResult<SubscriptionBody> {
    let view = app.subscription(&caller.tenant, &subscription_id).await?;
    Ok(ApiOk::new("subscription", SubscriptionBody::from(&view)))
}

async fn change_plan(
    State(app): State<App>,
    command: Command,
    AppPath(subscription_id): AppPath<String>,
) -> Result<Response, ApiError> {
    let request: ChangePlanBody = command.json()?;
    let ctx = command.ctx(Key::Required)?;
    let command = ChangePlanCommand {
        subscription_id,
        plan_id: request.plan_id,
        timing: match request.timing {
            TimingBody::Immediate => Timing::Immediate,
            TimingBody::PeriodEnd => Timing::PeriodEnd,
        },
    };
    let reply = app
        .change_subscription_plan(&ctx, command, |outcome| {
            render(StatusCode::OK, "plan changed", &OutcomeView::from(outcome))
        })
        .await?;
    Ok(respond(reply))
}

async fn cancel(
    State(app): State<App>,
    command: Command,
    AppPath(subscription_id): AppPath<String>,
) -> Result<Response, ApiError> {
    // Everything is optional: an empty body cancels at period end.
    let request: CancelBody = command.json_or_default()?;
    let ctx = command.ctx(Key::Optional)?;
    let command = CancelCommand {
        subscription_id,
        at_period_end: request.at_period_end.unwrap_or(true),
        reason: request.reason,
    };
    let reply = app
        .cancel_subscription(&ctx, command, |outcome| {
            let message = if outcome.subscription.cancel_at_period_end {
                "subscription will end at period end"
            } else {
                "subscription cancelled"
            };
            render(StatusCode::OK, message, &OutcomeView::from(outcome))
        })
        .await?;
    Ok(respond(reply))
}

async fn resume(
    State(app): State<App>,
    command: Command,
    AppPath(subscription_id): AppPath<String>,
) -> Result<Response, ApiError> {
    let request: ResumeBody = command.json_or_default()?;
    let ctx = command.ctx(Key::Optional)?;
    let command = ResumeCommand {
        subscription_id,
        reason: request.reason,
    };
    let reply = app
        .resume_subscription(&ctx, command, |outcome| {
            render(
                StatusCode::OK,
                "subscription resumed",
                &OutcomeView::from(outcome),
            )
        })
        .await?;
    Ok(respond(reply))
}

// ── Request bodies ─────────────────────────────────────────────────────────

/// `POST /api/v1/subscriptions`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    customer_id: String,
    plan_id: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// `POST /api/v1/subscriptions/{id}/change-plan`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChangePlanBody {
    plan_id: String,
    timing: TimingBody,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TimingBody {
    Immediate,
    PeriodEnd,
}

/// `POST /api/v1/subscriptions/{id}/cancel`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CancelBody {
    at_period_end: Option<bool>,
    reason: Option<String>,
}

/// `POST /api/v1/subscriptions/{id}/resume`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ResumeBody {
    reason: Option<String>,
}

// ── Views ──────────────────────────────────────────────────────────────────

/// A subscription.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionBody {
    subscription_id: String,
    customer_id: String,
    plan_id: String,
    pending_plan_id: Option<String>,
    status: String,
    current_period_start: i64,
    current_period_end: i64,
    trial_end: Option<i64>,
    billing_anchor: Option<i64>,
    cancel_at_period_end: bool,
    metadata: BTreeMap<String, String>,
    version: i64,
    created_at: i64,
    updated_at: i64,
}

impl From<&SubscriptionView> for SubscriptionBody {
    fn from(v: &SubscriptionView) -> Self {
        SubscriptionBody {
            subscription_id: v.subscription_id.clone(),
            customer_id: v.customer_id.clone(),
            plan_id: v.plan_id.clone(),
            pending_plan_id: v.pending_plan_id.clone(),
            status: v.status.clone(),
            current_period_start: v.current_period_start,
            current_period_end: v.current_period_end,
            trial_end: v.trial_end,
            billing_anchor: v.anchor,
            cancel_at_period_end: v.cancel_at_period_end,
            metadata: v.metadata.clone(),
            version: v.version,
            created_at: v.created_at,
            updated_at: v.updated_at,
        }
    }
}

/// A command's answer: the subscription, and what was charged.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OutcomeView {
    #[serde(flatten)]
    subscription: SubscriptionBody,
    transaction_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    charge: Option<ChargeView>,
}

impl From<&SubscriptionOutcome> for OutcomeView {
    fn from(outcome: &SubscriptionOutcome) -> Self {
        OutcomeView {
            subscription: SubscriptionBody::from(&outcome.subscription),
            transaction_id: outcome.transaction_id.clone(),
            charge: outcome.charge.as_ref().map(ChargeView::from),
        }
    }
}

/// Money as minor units and currency.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct MoneyBody {
    amount: i64,
    currency: String,
}

/// What a command charged (or credited).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ChargeView {
    /// `credits`, `order` or `none`.
    method: &'static str,
    /// The quoted total in money (negative: a credit owed).
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<MoneyBody>,
    /// The quoted total when the policy priced in credits.
    #[serde(skip_serializing_if = "Option::is_none")]
    total_credits: Option<i64>,
    credits_charged: i64,
    credits_granted: i64,
    credit_owed: Option<MoneyBody>,
    transaction_id: Option<String>,
    order_id: Option<String>,
    line_items: Vec<LineItemView>,
    priced_by: PolicyRef,
}

impl From<&ChargeInfo> for ChargeView {
    fn from(c: &ChargeInfo) -> Self {
        let (total, total_credits) = match &c.total {
            types::Amount::Money(m) => (
                Some(MoneyBody {
                    amount: m.amount,
                    currency: m.currency.clone(),
                }),
                None,
            ),
            types::Amount::Credits(n) => (None, Some(*n)),
        };
        ChargeView {
            method: c.method.as_str(),
            total,
            total_credits,
            credits_charged: c.credits_charged,
            credits_granted: c.credits_granted,
            credit_owed: c.credit_owed.as_ref().map(|m| MoneyBody {
                amount: m.amount,
                currency: m.currency.clone(),
            }),
            transaction_id: c.transaction_id.clone(),
            order_id: c.order_id.clone(),
            line_items: c.line_items.iter().map(LineItemView::from).collect(),
            priced_by: c.priced_by.clone(),
        }
    }
}

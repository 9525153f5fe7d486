//! The one API error type: every variant has a stable code and one HTTP
//! status, mapped here and nowhere else. Internals are logged once and never
//! shown to the client.
//!
//! Every code means one thing across the whole API (tenant and admin):
//!
//! | code | status | meaning |
//! |---|---|---|
//! | `REQ_001` | 400 | malformed or invalid request (JSON, shape, values, ids, amounts, currencies, missing `Idempotency-Key`) |
//! | `REQ_002` | 415 | the body is not declared as JSON |
//! | `REQ_003` | 413 | the body is over the size limit |
//! | `REQ_004` | 405 | the route exists, not with this method |
//! | `AUTH_001` | 401 | missing or unknown credentials (API key, admin token) |
//! | `AUTH_002` | 401 | missing or bad request signature |
//! | `AUTH_003` | 401 | signature timestamp more than 300 s from now |
//! | `NOT_FOUND` | 404 | no such route, tenant, policy, customer or transaction (for this tenant) |
//! | `PAY_001` | 402 | insufficient balance |
//! | `PAY_003` | 409 | Idempotency-Key reused for a different request |
//! | `PAY_002` | 402 | the payment gateway declined the payment (its code and message in `result.failure`) |
//! | `PAY_004` | 409 | the entity's state does not allow it |
//! | `PAY_005` | 503 | the payment gateway is unavailable; the call did not take effect there |
//! | `PAY_006` | 202 | the payment gateway's answer was lost; the payment is being resolved (send the request again) |
//! | `PAY_007` | 422 | the tenant has no payment gateway configured |
//! | `POL_001` | 422 | rejected by a validation policy (violations in `result`) |
//! | `POL_002` | 500 | policy failed: fuel, deadline, memory, trap, bad output (kind in `result`) |
//! | `POL_003` | 422 | a pricing policy rejected the request (its code in `result`) |
//! | `POL_004` | 422 | the policy does not handle this kind of request |
//! | `POL_005` | 500 | the policy reports its config invalid at call time |
//! | `POL_006` | 503 | every policy instance is busy |
//! | `POL_007` | 413 | the request is too large to hand to the policy |
//! | `POL_008` | 422 | the tenant has no policy bound for this request |
//! | `POL_009` | 409 | rollback: no earlier policy version is kept |
//! | `CFG_001` | 422 | a configuration was refused (the old one keeps serving) |
//! | `ADM_001` | 503 | the admin API is disabled (no `FLUXPAY_ADMIN_TOKEN`) |
//! | `SYS_001` | 500 | internal error |
//! | `SYS_002` | 503 | not ready (policies loading) |
//! | `SYS_003` | 503 | the database is unavailable (unreachable, pool exhausted, connection broken mid-request) |
//! | `SYS_004` | 503 | the database was busy (SQLite BUSY/LOCKED, PostgreSQL serialization failure or deadlock) |
//! | `SYS_005` | 503 | the database could not store the write (disk or size limit full, I/O error) |
//! | `SYS_006` | 503 | what a policy decided on kept changing while the request ran |
//!
//! Every 503 carries `Retry-After` (seconds) and may be sent again with
//! the same `Idempotency-Key`. Most never wrote anything; one whose
//! connection broke during its commit may have, and the key makes the
//! retry answer with what was stored instead of doing it twice.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::envelope::Envelope;
use crate::app::{AppError, PolicyFault};
use crate::config::ConfigErrors;
use crate::domain::error::codes;
use crate::policy::{CallError, FailureKind, types};
use crate::store::StoreError;

/// Result of a handler.
pub type ApiResult<T> = Result<super::envelope::ApiOk<T>, ApiError>;

/// Everything an endpoint can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// The body is JSON but not the expected shape.
    #[error("the request body does not have the expected shape: {0}")]
    InvalidBody(String),
    /// The body is not declared as JSON.
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// The body is over the size limit.
    #[error("the request body is too large (limit {limit} bytes)")]
    BodyTooLarge {
        /// The limit.
        limit: usize,
    },
    /// The request is well formed but does not make sense here.
    #[error("{0}")]
    InvalidRequest(String),
    /// No route matches the path.
    #[error("no endpoint at {0}")]
    RouteNotFound(String),
    /// The route exists but not with this method.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// No credentials (`Authorization: Bearer …`).
    #[error("{0}")]
    MissingCredentials(&'static str),
    /// Credentials that authenticate no one.
    #[error("{0}")]
    InvalidCredentials(&'static str),
    /// A signature that is missing, malformed or wrong.
    #[error("{0}")]
    BadSignature(String),
    /// A signature timestamp too far from now (a replay or a bad clock).
    #[error("the X-FluxPay-Timestamp is more than {tolerance_s} s from the server's clock")]
    StaleTimestamp {
        /// The tolerance.
        tolerance_s: i64,
    },
    /// The admin API has no token configured, so it serves nothing.
    #[error("the admin API is disabled: set FLUXPAY_ADMIN_TOKEN and restart the host")]
    AdminDisabled,
    /// No such tenant in the running configuration.
    #[error("unknown tenant `{0}`")]
    TenantNotFound(String),
    /// The tenant has no policy of that name.
    #[error("tenant `{tenant}` has no policy named `{policy}`")]
    PolicyNotFound {
        /// The tenant.
        tenant: String,
        /// The name asked for.
        policy: String,
    },
    /// No such customer, transaction, … for the calling tenant.
    #[error("{0}")]
    NotFound(String),
    /// The available balance does not cover the request.
    #[error("{message}")]
    InsufficientBalance {
        /// What was requested and available.
        message: String,
    },
    /// The Idempotency-Key belongs to another request.
    #[error("{0}")]
    IdempotencyConflict(String),
    /// The entity's state does not allow the request.
    #[error("{0}")]
    StateConflict(String),
    /// Rollback asked for a version that is not kept.
    #[error("{0}")]
    NoEarlierVersion(String),
    /// A configuration was refused; the previous one keeps serving.
    #[error("{message}")]
    ConfigInvalid {
        /// Summary sentence.
        message: String,
        /// Every problem, with file and field.
        errors: ConfigErrors,
        /// The snapshot version that keeps serving.
        serving_version: u64,
    },
    /// The tenant's validation policies refused the request.
    #[error("{message}")]
    PolicyViolations {
        /// Summary sentence.
        message: String,
        /// `{"violations": [...]}`.
        details: Value,
    },
    /// The policy refused the request with its own code.
    #[error("{message}")]
    PolicyRejected {
        /// The policy's message.
        message: String,
        /// Who answered and the rejection's details.
        details: Value,
    },
    /// The policy does not handle this kind of request.
    #[error("{message}")]
    PolicyUnsupported {
        /// The policy's message.
        message: String,
        /// Who answered.
        details: Value,
    },
    /// The policy said its configuration is invalid at call time (it passed
    /// `check_config` at load, so this is a bug in the policy).
    #[error("{message}")]
    PolicyInvalidConfig {
        /// The policy's message.
        message: String,
        /// Who answered.
        details: Value,
    },
    /// The sandbox stopped the policy (trap, fuel, deadline, memory, output).
    #[error("{message}")]
    PolicyFailed {
        /// What happened.
        message: String,
        /// Who failed and how.
        details: Value,
    },
    /// Every policy instance slot is busy.
    #[error("{message}")]
    PolicyOverloaded {
        /// What happened.
        message: String,
        /// Who was called.
        details: Value,
    },
    /// The request is too large to hand to the policy.
    #[error("{message}")]
    PolicyInputTooLarge {
        /// What happened.
        message: String,
        /// Who was called.
        details: Value,
    },
    /// The tenant has no policy bound for this kind of request.
    #[error("{0}")]
    PolicyNotBound(String),
    /// Policies are not loaded yet.
    #[error("not ready: policies are still loading")]
    NotReady,
    /// The database cannot be reached.
    #[error("the database is unavailable; retry later with the same Idempotency-Key")]
    StoreUnavailable(#[source] StoreError),
    /// The database was busy with other transactions.
    #[error("the database was busy; retry with the same Idempotency-Key")]
    StoreBusy(#[source] StoreError),
    /// The database could not store the write.
    #[error("the database could not store the write; retry later with the same Idempotency-Key")]
    StoreFull(#[source] StoreError),
    /// The state a policy decided on kept changing under the request.
    #[error("{0}")]
    Stale(String),
    /// The payment gateway certainly did not take the payment, for now.
    #[error("{0}")]
    GatewayUnavailable(String),
    /// The payment gateway's answer was lost; the payment is being resolved.
    #[error("{message}")]
    PaymentPending {
        /// What happened.
        message: String,
        /// `{"paymentId": …}`.
        details: Value,
    },
    /// The tenant takes no payments.
    #[error("{0}")]
    NoGateway(String),
    /// Anything else. The cause is logged, never sent.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// The stable code clients match on (see the table in the module docs).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) | ApiError::InvalidBody(_) | ApiError::InvalidRequest(_) => {
                "REQ_001"
            }
            ApiError::UnsupportedMediaType => "REQ_002",
            ApiError::BodyTooLarge { .. } => "REQ_003",
            ApiError::MethodNotAllowed => "REQ_004",
            ApiError::MissingCredentials(_) | ApiError::InvalidCredentials(_) => "AUTH_001",
            ApiError::BadSignature(_) => "AUTH_002",
            ApiError::StaleTimestamp { .. } => "AUTH_003",
            ApiError::RouteNotFound(_)
            | ApiError::TenantNotFound(_)
            | ApiError::PolicyNotFound { .. }
            | ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::InsufficientBalance { .. } => "PAY_001",
            ApiError::IdempotencyConflict(_) => "PAY_003",
            ApiError::StateConflict(_) => "PAY_004",
            ApiError::PolicyViolations { .. } => "POL_001",
            ApiError::PolicyFailed { .. } => "POL_002",
            ApiError::PolicyRejected { .. } => "POL_003",
            ApiError::PolicyUnsupported { .. } => "POL_004",
            ApiError::PolicyInvalidConfig { .. } => "POL_005",
            ApiError::PolicyOverloaded { .. } => "POL_006",
            ApiError::PolicyInputTooLarge { .. } => "POL_007",
            ApiError::PolicyNotBound(_) => "POL_008",
            ApiError::NoEarlierVersion(_) => "POL_009",
            ApiError::ConfigInvalid { .. } => "CFG_001",
            ApiError::AdminDisabled => "ADM_001",
            ApiError::Internal(_) => "SYS_001",
            ApiError::NotReady => "SYS_002",
            ApiError::StoreUnavailable(_) => "SYS_003",
            ApiError::StoreBusy(_) => "SYS_004",
            ApiError::StoreFull(_) => "SYS_005",
            ApiError::Stale(_) => "SYS_006",
            ApiError::GatewayUnavailable(_) => "PAY_005",
            ApiError::PaymentPending { .. } => "PAY_006",
            ApiError::NoGateway(_) => "PAY_007",
        }
    }

    /// The HTTP status: one per code.
    pub fn status(&self) -> StatusCode {
        match self.code() {
            "REQ_001" => StatusCode::BAD_REQUEST,
            "REQ_002" => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "REQ_003" | "POL_007" => StatusCode::PAYLOAD_TOO_LARGE,
            "REQ_004" => StatusCode::METHOD_NOT_ALLOWED,
            "AUTH_001" | "AUTH_002" | "AUTH_003" => StatusCode::UNAUTHORIZED,
            "NOT_FOUND" => StatusCode::NOT_FOUND,
            "PAY_001" | "PAY_002" => StatusCode::PAYMENT_REQUIRED,
            "PAY_006" => StatusCode::ACCEPTED,
            "PAY_003" | "PAY_004" | "POL_009" => StatusCode::CONFLICT,
            "POL_001" | "POL_003" | "POL_004" | "POL_008" | "CFG_001" | "PAY_007" => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            "POL_006" | "ADM_001" | "SYS_002" | "SYS_003" | "SYS_004" | "SYS_005" | "SYS_006"
            | "PAY_005" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Seconds a client should wait before sending the same request again
    /// (`Retry-After`), for the answers that say "retry".
    pub fn retry_after(&self) -> Option<u32> {
        match self.code() {
            "POL_006" | "SYS_002" | "SYS_003" | "SYS_004" | "SYS_006" | "PAY_006" => Some(1),
            "PAY_005" => Some(5),
            // A full disk needs an operator: no point in coming back at once.
            "SYS_005" => Some(30),
            _ => None,
        }
    }

    /// The envelope's `result` for errors that carry details.
    fn result(self) -> Option<Value> {
        match self {
            ApiError::ConfigInvalid {
                errors,
                serving_version,
                ..
            } => Some(json!({
                "servingVersion": serving_version,
                "errors": errors.0,
            })),
            ApiError::PolicyViolations { details, .. }
            | ApiError::PolicyRejected { details, .. }
            | ApiError::PolicyUnsupported { details, .. }
            | ApiError::PolicyInvalidConfig { details, .. }
            | ApiError::PolicyFailed { details, .. }
            | ApiError::PolicyOverloaded { details, .. }
            | ApiError::PolicyInputTooLarge { details, .. }
            | ApiError::PaymentPending { details, .. } => Some(details),
            _ => None,
        }
    }

    /// A policy call that gave no answer. `who` names the binding (policy,
    /// kind, contentHash, version…) and is merged into the details.
    pub fn from_policy_call(who: Value, stats: Value, err: CallError) -> ApiError {
        let mut details = json!({ "stats": stats });
        if let (Some(map), Value::Object(who)) = (details.as_object_mut(), who) {
            map.extend(who);
        }
        let policy = details["policy"].as_str().unwrap_or("?").to_owned();
        match err {
            CallError::Policy(types::PolicyError::Rejected(rejection)) => {
                details["rejection"] = json!({
                    "code": rejection.code,
                    "message": rejection.message,
                });
                ApiError::PolicyRejected {
                    message: format!(
                        "policy `{policy}` rejected the request: {}",
                        rejection.message
                    ),
                    details,
                }
            }
            CallError::Policy(types::PolicyError::Unsupported(message)) => {
                ApiError::PolicyUnsupported {
                    message: format!("policy `{policy}` does not handle this request: {message}"),
                    details,
                }
            }
            CallError::Policy(types::PolicyError::InvalidConfig(message)) => {
                ApiError::PolicyInvalidConfig {
                    message: format!("policy `{policy}` reports an invalid config: {message}"),
                    details,
                }
            }
            CallError::Failed(failure) => {
                details["failure"] = json!({
                    "kind": failure.kind.as_str(),
                    "message": failure.message,
                });
                let message = format!("policy `{policy}` {failure}");
                match failure.kind {
                    FailureKind::Overloaded => ApiError::PolicyOverloaded { message, details },
                    FailureKind::InputTooLarge => {
                        ApiError::PolicyInputTooLarge { message, details }
                    }
                    _ => ApiError::PolicyFailed { message, details },
                }
            }
        }
    }
}

impl From<AppError> for ApiError {
    fn from(err: AppError) -> Self {
        match err {
            AppError::Invalid(message) => ApiError::InvalidRequest(message),
            AppError::Domain(err) => match err.code() {
                codes::INVALID_REQUEST => ApiError::InvalidRequest(err.to_string()),
                codes::INSUFFICIENT_BALANCE => ApiError::InsufficientBalance {
                    message: err.to_string(),
                },
                codes::STATE_CONFLICT => ApiError::StateConflict(err.to_string()),
                _ => ApiError::Internal(anyhow::Error::new(err)),
            },
            AppError::NotFound(message) => ApiError::NotFound(message),
            AppError::IdempotencyConflict(message) => ApiError::IdempotencyConflict(message),
            AppError::StateConflict(message) => ApiError::StateConflict(message),
            AppError::Violations(violations) => ApiError::PolicyViolations {
                message: format!(
                    "rejected by the tenant's validation policies: {}",
                    violations
                        .iter()
                        .map(|v| v.message.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
                details: json!({ "violations": violations }),
            },
            AppError::Policy(fault) => {
                let PolicyFault {
                    policy,
                    error,
                    stats,
                } = *fault;
                let who = serde_json::to_value(&policy).unwrap_or(Value::Null);
                let stats = json!({
                    "fuelUsed": stats.fuel_used,
                    "peakMemoryBytes": stats.peak_memory_bytes,
                    "durationUs": stats.duration.as_micros() as u64,
                });
                ApiError::from_policy_call(who, stats, error)
            }
            AppError::NoPolicy { .. } => ApiError::PolicyNotBound(err.to_string()),
            AppError::NotReady => ApiError::NotReady,
            AppError::Store(err @ StoreError::Unavailable(_)) => ApiError::StoreUnavailable(err),
            AppError::Store(err @ StoreError::Contention(_)) => ApiError::StoreBusy(err),
            AppError::Store(err @ StoreError::Storage(_)) => ApiError::StoreFull(err),
            AppError::Stale(message) => ApiError::Stale(message),
            AppError::GatewayUnavailable(_) => ApiError::GatewayUnavailable(err.to_string()),
            AppError::PaymentPending { ref payment_id } => ApiError::PaymentPending {
                details: json!({ "paymentId": payment_id }),
                message: err.to_string(),
            },
            AppError::NoGateway(_) => ApiError::NoGateway(err.to_string()),
            AppError::Store(err) => ApiError::Internal(anyhow::Error::new(err)),
            AppError::Internal(message) => ApiError::Internal(anyhow::anyhow!(message)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        match &self {
            ApiError::Internal(err) => {
                // Logged here, once; the client only sees the code.
                tracing::error!(code, error = format!("{err:#}"), "api.internal_error");
            }
            ApiError::StoreUnavailable(err)
            | ApiError::StoreBusy(err)
            | ApiError::StoreFull(err) => {
                tracing::error!(code, error = %err, "api.store_unavailable");
            }
            // Readiness polls and a disabled admin API (warned about at
            // start-up) would flood the log at warn.
            ApiError::NotReady | ApiError::AdminDisabled => {
                tracing::debug!(code, error = %self, "api.error");
            }
            _ if status.is_server_error() => tracing::warn!(code, error = %self, "api.error"),
            _ => tracing::debug!(code, error = %self, "api.error"),
        }
        let message = self.to_string();
        let retry_after = self.retry_after();
        let body = Envelope {
            is_success: false,
            code,
            message,
            result: self.result(),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        ApiError::Internal(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One status per code, and codes never shared by different statuses.
    #[test]
    fn every_code_has_exactly_one_status() {
        let samples = [
            ApiError::MalformedJson(String::new()),
            ApiError::InvalidBody(String::new()),
            ApiError::InvalidRequest(String::new()),
            ApiError::UnsupportedMediaType,
            ApiError::BodyTooLarge { limit: 1 },
            ApiError::MethodNotAllowed,
            ApiError::MissingCredentials(""),
            ApiError::InvalidCredentials(""),
            ApiError::BadSignature(String::new()),
            ApiError::StaleTimestamp { tolerance_s: 300 },
            ApiError::RouteNotFound(String::new()),
            ApiError::TenantNotFound(String::new()),
            ApiError::NotFound(String::new()),
            ApiError::InsufficientBalance {
                message: String::new(),
            },
            ApiError::IdempotencyConflict(String::new()),
            ApiError::StateConflict(String::new()),
            ApiError::NoEarlierVersion(String::new()),
            ApiError::PolicyNotBound(String::new()),
            ApiError::AdminDisabled,
            ApiError::NotReady,
            ApiError::StoreUnavailable(StoreError::Unavailable(String::new())),
            ApiError::StoreBusy(StoreError::Contention(String::new())),
            ApiError::StoreFull(StoreError::Storage(String::new())),
            ApiError::Stale(String::new()),
            ApiError::GatewayUnavailable(String::new()),
            ApiError::PaymentPending {
                message: String::new(),
                details: Value::Null,
            },
            ApiError::NoGateway(String::new()),
            ApiError::Internal(anyhow::anyhow!("x")),
        ];
        let mut seen = std::collections::BTreeMap::new();
        for error in samples {
            let status = error.status();
            if let Some(previous) = seen.insert(error.code(), status) {
                assert_eq!(previous, status, "{}", error.code());
            }
        }
        assert_eq!(seen["REQ_001"], StatusCode::BAD_REQUEST);
        assert_eq!(seen["PAY_001"], StatusCode::PAYMENT_REQUIRED);
        assert_eq!(seen["PAY_003"], StatusCode::CONFLICT);
        assert_eq!(seen["NOT_FOUND"], StatusCode::NOT_FOUND);
        assert_eq!(seen["AUTH_003"], StatusCode::UNAUTHORIZED);
        for code in ["SYS_003", "SYS_004", "SYS_005", "SYS_006"] {
            assert_eq!(seen[code], StatusCode::SERVICE_UNAVAILABLE, "{code}");
        }
    }

    /// A retryable store failure is a 503 with its own code and a
    /// `Retry-After`, never the internal error's 500.
    #[test]
    fn retryable_store_errors_answer_503_with_retry_after() {
        let cases = [
            (StoreError::Unavailable("gone".into()), "SYS_003"),
            (
                StoreError::Contention("database is locked".into()),
                "SYS_004",
            ),
            (
                StoreError::Storage("database or disk is full".into()),
                "SYS_005",
            ),
        ];
        for (err, code) in cases {
            assert!(err.is_retryable());
            let response = ApiError::from(AppError::Store(err)).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{code}");
            assert!(response.headers().contains_key("retry-after"), "{code}");
        }
        let response =
            ApiError::from(AppError::Store(StoreError::Database("syntax".into()))).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!response.headers().contains_key("retry-after"));
    }
}

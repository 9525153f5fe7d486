//! The payment gateway (PG): the one outside system that moves real money.
//!
//! [`PaymentGateway`] is what the rest of the host sees; every backend
//! speaks HTTP:
//! - [`toss::TossGateway`], a connector for a Toss-Payments-style API
//!   (`POST /v1/payments/confirm`, `…/{paymentKey}/capture`,
//!   `…/{paymentKey}/cancel`, `GET /v1/payments/{paymentKey}` and
//!   `/v1/payments/orders/{orderId}`, `POST /v1/billing/{billingKey}`);
//! - [`simulator`], a PG that serves that same API on 127.0.0.1 for the
//!   embedded default and the tests, with test cards and failure injection
//!   (it stands in for the card network, which cannot exist here).
//!
//! The boundary's rules (`shared/NOTES-payments.md`): every mutating call
//! carries the caller's idempotency key, one per payment attempt, so a
//! retry can never take money twice; a timeout or a lost answer is
//! [`GatewayError::Unknown`] — the PG may have acted — and is resolved by
//! asking the PG, never by calling it again with a new key; declines are
//! final; only [`GatewayError::Transient`] may be retried (with the same
//! key).
//!
//! **Authorization and capture.** A checkout's approval (`confirm`) is an
//! authorization: the PG holds the money on the card. The order's saga
//! captures it once the tenant's service fulfilled the order, or voids the
//! authorization (`cancel` before capture) when it compensates; a captured
//! payment can only be refunded. Toss Payments itself captures with the
//! approval; this is the separate capture that card PGs offer (Stripe's
//! `capture_method=manual`, Adyen's captures), in the same API's style. A
//! billing-key charge (a renewal, no customer present) is captured at once.

pub mod resilient;
pub mod simulator;
pub mod toss;

use std::future::Future;

use serde::{Deserialize, Serialize};

/// The PG's status of a payment (Toss Payments' names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PgStatus {
    /// Checkout done, not confirmed yet.
    Ready,
    /// Being approved.
    InProgress,
    /// Waiting for a bank transfer.
    WaitingForDeposit,
    /// Approved: the money is taken.
    Done,
    /// Cancelled in full (voided or refunded).
    Canceled,
    /// Cancelled in part.
    PartialCanceled,
    /// Approval failed.
    Aborted,
    /// Not confirmed in time.
    Expired,
}

impl PgStatus {
    /// Whether the PG took the money (and has not given all of it back).
    pub fn holds_money(self) -> bool {
        matches!(self, PgStatus::Done | PgStatus::PartialCanceled)
    }

    /// Whether the PG will not approve it any more.
    pub fn failed(self) -> bool {
        matches!(self, PgStatus::Aborted | PgStatus::Expired)
    }
}

/// One cancellation (void or refund) of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PgCancel {
    /// Minor units given back.
    pub cancel_amount: i64,
    /// Why.
    pub cancel_reason: String,
    /// What can still be given back after it.
    pub refundable_amount: i64,
    /// When (RFC 3339).
    pub canceled_at: String,
    /// The idempotency key it was made with.
    #[serde(default)]
    pub transaction_key: String,
}

/// A payment as the PG reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PgPayment {
    /// The PG's key for the payment.
    pub payment_key: String,
    /// The merchant's order id (FluxPay's payment id, one per attempt).
    pub order_id: String,
    /// Its status.
    pub status: PgStatus,
    /// ISO-4217.
    pub currency: String,
    /// Minor units asked for.
    pub total_amount: i64,
    /// Minor units still taken (total − cancelled).
    pub balance_amount: i64,
    /// When it was approved (RFC 3339), once it was.
    #[serde(default)]
    pub approved_at: Option<String>,
    /// When the approved amount was captured (RFC 3339): until then the
    /// approval is an authorization, held on the card.
    #[serde(default)]
    pub captured_at: Option<String>,
    /// Its cancellations, oldest first.
    #[serde(default)]
    pub cancels: Vec<PgCancel>,
}

/// `POST /v1/payments/confirm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmRequest {
    /// What the checkout returned.
    pub payment_key: String,
    /// The merchant's order id.
    pub order_id: String,
    /// Minor units: must equal what the checkout was opened for.
    pub amount: i64,
}

/// `POST /v1/payments/{paymentKey}/capture`: takes an authorized payment
/// in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaptureRequest {
    /// Minor units: must equal what was authorized.
    pub amount: i64,
}

/// `POST /v1/payments/{paymentKey}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    /// Why (shown to the customer).
    pub cancel_reason: String,
    /// Minor units; `None`: everything still refundable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_amount: Option<i64>,
}

/// `POST /v1/billing/{billingKey}`: a charge of a stored card, for a
/// payment the customer is not present for (a renewal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingChargeRequest {
    /// The merchant's key of the customer the billing key was issued to.
    pub customer_key: String,
    /// Minor units.
    pub amount: i64,
    /// ISO-4217.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The merchant's order id (FluxPay's order id).
    pub order_id: String,
    /// What is paid for (shown to the customer).
    pub order_name: String,
}

/// The PG's error body: `{"code": …, "message": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgErrorBody {
    /// Its stable code (`REJECT_CARD_PAYMENT`, `PROVIDER_ERROR`, …).
    pub code: String,
    /// For people.
    pub message: String,
}

/// Well-known PG error codes.
pub mod codes {
    /// The payment was approved before (a repeat confirm with another key):
    /// query it and adopt its state.
    pub const ALREADY_PROCESSED_PAYMENT: &str = "ALREADY_PROCESSED_PAYMENT";
    /// A request with this idempotency key is still being processed.
    pub const ALREADY_PROCESSING_REQUEST: &str = "ALREADY_PROCESSING_REQUEST";
    /// A temporary fault on the PG's side: retry later with the same key.
    pub const PROVIDER_ERROR: &str = "PROVIDER_ERROR";
    /// The PG failed internally; the request did not take effect.
    pub const FAILED_INTERNAL_SYSTEM_PROCESSING: &str = "FAILED_INTERNAL_SYSTEM_PROCESSING";
    /// No such payment.
    pub const NOT_FOUND_PAYMENT: &str = "NOT_FOUND_PAYMENT";
    /// More than is refundable.
    pub const NOT_CANCELABLE_AMOUNT: &str = "NOT_CANCELABLE_AMOUNT";
    /// The payment cannot be cancelled (already cancelled, never approved).
    pub const NOT_CANCELABLE_PAYMENT: &str = "NOT_CANCELABLE_PAYMENT";
    /// The payment cannot be captured (not approved, voided, or captured
    /// before under another key).
    pub const NOT_CAPTURABLE_PAYMENT: &str = "NOT_CAPTURABLE_PAYMENT";
    /// The card issuer refused.
    pub const REJECT_CARD_PAYMENT: &str = "REJECT_CARD_PAYMENT";
    /// The request does not fit the payment (amount, order id).
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    /// No such billing key (or it was deleted).
    pub const INVALID_BILLING_KEY: &str = "INVALID_BILLING_KEY";
    /// The secret key is wrong.
    pub const UNAUTHORIZED_KEY: &str = "UNAUTHORIZED_KEY";
}

/// Why a PG call did not give an answer to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The PG refused for good (a decline, a bad request, a payment that
    /// cannot be cancelled): do not retry.
    #[error("the PG refused: {code}: {message}")]
    Refused {
        /// The PG's code.
        code: String,
        /// The PG's message.
        message: String,
    },
    /// The PG failed and says (or its status says) that nothing happened:
    /// may be retried later with the same idempotency key.
    #[error("the PG failed for now: {code}: {message}")]
    Transient {
        /// The PG's code (or the HTTP status when it sent none).
        code: String,
        /// What it said.
        message: String,
    },
    /// The request may have taken effect: a timeout after sending, a
    /// connection closed before the answer, a 5xx without a code. Resolve
    /// by querying; never by sending the request with a new key.
    #[error("the PG's answer was lost: {0}")]
    Unknown(String),
    /// The request never reached the PG (connection refused, DNS): it did
    /// not take effect.
    #[error("the PG cannot be reached: {0}")]
    Unreachable(String),
    /// The circuit breaker is open: the call was not sent
    /// ([`resilient::ResilientGateway`]).
    #[error("the PG is failing and calls to it are paused; retry later")]
    CircuitOpen,
}

impl GatewayError {
    /// The PG's code, when it gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            GatewayError::Refused { code, .. } | GatewayError::Transient { code, .. } => Some(code),
            GatewayError::Unknown(_) | GatewayError::Unreachable(_) | GatewayError::CircuitOpen => {
                None
            }
        }
    }
}

/// Result of a PG call.
pub type GatewayResult<T> = std::result::Result<T, GatewayError>;

/// A payment gateway. A connector's methods are one HTTP request each;
/// [`resilient::ResilientGateway`] adds the breaker and the retries, once.
pub trait PaymentGateway: Send + Sync {
    /// Approves a checked-out payment (Toss: "confirm").
    fn confirm(
        &self,
        request: &ConfirmRequest,
        idempotency_key: &str,
    ) -> impl Future<Output = GatewayResult<PgPayment>> + Send;

    /// Captures an authorized payment in full (see the module docs).
    fn capture(
        &self,
        payment_key: &str,
        request: &CaptureRequest,
        idempotency_key: &str,
    ) -> impl Future<Output = GatewayResult<PgPayment>> + Send;

    /// Voids or refunds a payment, in full or in part.
    fn cancel(
        &self,
        payment_key: &str,
        request: &CancelRequest,
        idempotency_key: &str,
    ) -> impl Future<Output = GatewayResult<PgPayment>> + Send;

    /// Charges a stored card (a billing key): a payment approved at once,
    /// with no checkout.
    fn charge_billing_key(
        &self,
        billing_key: &str,
        request: &BillingChargeRequest,
        idempotency_key: &str,
    ) -> impl Future<Output = GatewayResult<PgPayment>> + Send;

    /// A payment by the PG's key.
    fn payment(&self, payment_key: &str) -> impl Future<Output = GatewayResult<PgPayment>> + Send;

    /// A payment by the merchant's order id.
    fn payment_by_order(
        &self,
        order_id: &str,
    ) -> impl Future<Output = GatewayResult<PgPayment>> + Send;
}

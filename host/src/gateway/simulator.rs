//! The bundled PG simulator: the Toss-Payments-style API of
//! [`super::toss`], served over real HTTP, for the embedded default and
//! the tests. It stands in for the card network, so it keeps its own books
//! (what it approved and gave back: [`SimLedger`]) for tests to compare
//! with FluxPay's.
//!
//! - `POST /v1/checkout` `{orderId, amount, currency?, cardNumber?,
//!   captureMethod?}` plays the checkout window: it issues the `paymentKey`
//!   a confirm needs (again for an order whose last payment failed).
//!   `captureMethod`: `MANUAL` (the default: the confirm authorizes, a
//!   capture takes the money) or `AUTOMATIC` (the confirm captures too, as
//!   Toss Payments does).
//! - `POST /v1/payments/confirm` (an authorization: the money is held on
//!   the card), `POST /v1/payments/{paymentKey}/capture` (`{amount}`, the
//!   whole authorization), `POST /v1/payments/{paymentKey}/cancel` (a void
//!   before capture, a refund after), `GET /v1/payments/{paymentKey}`,
//!   `GET /v1/payments/orders/{orderId}`: as the real API, with `Authorization: Basic` and its own idempotency
//!   (a repeated `Idempotency-Key` on the same method and path gets the
//!   first answer, unless that was a transient failure, which changed
//!   nothing and is processed anew; one still being processed gets 409
//!   `ALREADY_PROCESSING_REQUEST`).
//! - `GET /sim/v1/ledger`: its books. `GET`/`PUT /sim/v1/faults`: failure
//!   injection at run time ([`Faults`]).
//!
//! Test cards pick a behaviour per payment (see [`cards`]); any other
//! card is approved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{CancelRequest, ConfirmRequest, PgCancel, PgPayment, PgStatus, codes};

/// Test card numbers and what the simulator does with them.
pub mod cards {
    /// Approved.
    pub const APPROVE: &str = "4242424242424242";
    /// Declined by the issuer: `REJECT_CARD_PAYMENT`, the payment aborted.
    pub const DECLINE: &str = "4000000000000002";
    /// `PROVIDER_ERROR` (500) for the first two confirm calls, then
    /// approved: a transient fault that a retry with the same key clears.
    pub const TRANSIENT_TWICE: &str = "4000000000000119";
    /// Approved, but the answer comes only after [`super::Faults::slow_answer_ms`]:
    /// a client with a shorter timeout loses an approval that happened.
    pub const APPROVE_THEN_TIMEOUT: &str = "4000000000000259";
    /// Not approved (the payment is aborted), and the answer, a 504, comes
    /// only after `slow_answer_ms`: a timeout where nothing happened.
    pub const TIMEOUT_NOT_APPROVED: &str = "4000000000000267";
    /// `FAILED_INTERNAL_SYSTEM_PROCESSING` (500) on every confirm, nothing
    /// happens.
    pub const ALWAYS_FAILS: &str = "4000000000000500";
    /// Approved (authorized), but the issuer refuses the capture:
    /// `REJECT_CARD_PAYMENT`, the authorization left for the merchant to
    /// void.
    pub const CAPTURE_REFUSED: &str = "4000000000000341";
}

/// Failure injection, changed at run time through `PUT /sim/v1/faults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Faults {
    /// Each answer waits a uniform random time in `[min, max]` ms.
    pub latency_ms: [u64; 2],
    /// Every `/v1` request answers 503 `PROVIDER_ERROR`, doing nothing.
    pub outage: bool,
    /// How late the slow test cards answer, in ms.
    pub slow_answer_ms: u64,
    /// How long after a status change its notification is sent, in ms.
    #[serde(default)]
    pub notification_delay_ms: u64,
    /// Every notification is sent twice.
    #[serde(default)]
    pub duplicate_notifications: bool,
    /// Status queries (`GET /v1/payments/…`) answer 503 `PROVIDER_ERROR`
    /// while payments are still processed: a PG whose lookup is down.
    #[serde(default)]
    pub queries_fail: bool,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency_ms: [0, 0],
            outage: false,
            slow_answer_ms: 3_000,
            notification_delay_ms: 0,
            duplicate_notifications: false,
            queries_fail: false,
        }
    }
}

/// What the simulated PG has done, for tests to compare with FluxPay's
/// books.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimLedger {
    /// Payments approved.
    pub approvals: u64,
    /// Minor units approved.
    pub approved_amount: i64,
    /// Minor units given back (voids and refunds).
    pub cancelled_amount: i64,
    /// Payments captured (billing-key charges with their approval).
    #[serde(default)]
    pub captures: u64,
    /// Minor units captured.
    #[serde(default)]
    pub captured_amount: i64,
    /// Minor units authorized and still held on cards: approved, neither
    /// captured nor voided.
    #[serde(default)]
    pub held_amount: i64,
    /// Confirm requests received (repeats of a stored answer included).
    pub confirm_calls: u64,
    /// Status-change notifications delivered (answered by the merchant).
    pub notifications: u64,
}

struct SimPayment {
    payment: PgPayment,
    card: String,
    confirm_calls: u32,
    /// `captureMethod: AUTOMATIC`: captured with the approval.
    capture_with_approval: bool,
}

/// A stored answer of a mutating request, or one being made.
enum Idem {
    InFlight,
    Done(StatusCode, serde_json::Value),
}

#[derive(Default)]
struct SimState {
    payments: HashMap<String, SimPayment>,
    by_order: HashMap<String, String>,
    /// Billing key → (customer key, card number).
    billing_keys: HashMap<String, (String, String)>,
    /// Where status changes are notified (the merchant's webhook URL).
    notify_url: Option<String>,
    /// Status changes not notified yet.
    changed: Vec<PgPayment>,
    idempotency: HashMap<(String, String), Idem>,
    ledger: SimLedger,
    faults: Faults,
    next: u64,
    /// splitmix64 state for latencies: a sequence that does not change
    /// with a dependency's version, so a seeded run repeats.
    rng: u64,
}

/// A simulator: shared state behind its router.
#[derive(Clone)]
pub struct Simulator {
    state: Arc<Mutex<SimState>>,
    secret_key: Arc<str>,
    /// For notifications.
    client: reqwest::Client,
}

impl Simulator {
    /// A simulator that accepts `secret_key` and draws latencies from
    /// `seed`.
    pub fn new(secret_key: &str, seed: u64) -> Self {
        Simulator {
            state: Arc::new(Mutex::new(SimState {
                rng: seed,
                ..SimState::default()
            })),
            secret_key: Arc::from(secret_key),
            client: reqwest::Client::new(),
        }
    }

    /// Its HTTP API.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/checkout", post(checkout))
            .route("/v1/payments/confirm", post(confirm))
            .route("/v1/payments/{payment_key}/capture", post(capture))
            .route("/v1/payments/{payment_key}/cancel", post(cancel))
            .route("/v1/payments/{payment_key}", get(payment))
            .route("/v1/payments/orders/{order_id}", get(payment_by_order))
            .route("/v1/billing/authorizations/card", post(issue_billing_key))
            .route("/v1/billing/{billing_key}", post(charge_billing_key))
            .route("/sim/v1/ledger", get(ledger))
            .route("/sim/v1/faults", get(faults).put(set_faults))
            .with_state(self.clone())
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// Binds `addr` (port 0: a free one) and serves there in a task of its
    /// own; its base URL (`http://ip:port`).
    pub async fn spawn(&self, addr: std::net::SocketAddr) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let simulator = self.clone();
        tokio::spawn(async move {
            if let Err(err) = simulator.serve(listener).await {
                tracing::error!(error = %err, "gateway.simulator_stopped");
            }
        });
        Ok(url)
    }

    /// Its books.
    pub fn ledger(&self) -> SimLedger {
        let state = self.lock();
        let mut ledger = state.ledger;
        ledger.held_amount = state
            .payments
            .values()
            .filter(|p| p.payment.status.holds_money() && p.payment.captured_at.is_none())
            .map(|p| p.payment.balance_amount)
            .sum();
        ledger
    }

    /// Mutating requests being processed now (their keys in flight).
    pub fn in_flight(&self) -> usize {
        self.lock()
            .idempotency
            .values()
            .filter(|idem| matches!(idem, Idem::InFlight))
            .count()
    }

    /// Notifies status changes to `url` (`POST`, Toss's
    /// `{"eventType": "PAYMENT_STATUS_CHANGED", "createdAt", "data":
    /// payment}`), or stops.
    pub fn set_notify_url(&self, url: Option<String>) {
        self.lock().notify_url = url;
    }

    /// Sends the notifications of the status changes made so far, each in
    /// a task of its own: after `notification_delay_ms`, twice with
    /// `duplicate_notifications`.
    fn notify(&self) {
        let (url, changed, faults) = {
            let mut state = self.lock();
            let changed = std::mem::take(&mut state.changed);
            match state.notify_url.clone() {
                Some(url) => (url, changed, state.faults),
                None => return,
            }
        };
        for payment in changed {
            let sim = self.clone();
            let url = url.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(faults.notification_delay_ms)).await;
                let body = json!({
                    "eventType": "PAYMENT_STATUS_CHANGED",
                    "createdAt": now_rfc3339(),
                    "data": payment,
                });
                let times = if faults.duplicate_notifications { 2 } else { 1 };
                for _ in 0..times {
                    let sent = sim
                        .client
                        .post(&url)
                        .json(&body)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    match sent {
                        Ok(_) => sim.lock().ledger.notifications += 1,
                        Err(err) => {
                            tracing::warn!(error = %err, "gateway.simulator_notify_failed")
                        }
                    }
                }
            });
        }
    }

    /// Changes the failure injection.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latency to add to an answer, and whether the PG is down.
    fn weather(&self) -> (Duration, bool) {
        let mut state = self.lock();
        let [min, max] = state.faults.latency_ms;
        let spread = max.saturating_sub(min);
        let wait = if spread == 0 {
            min
        } else {
            min + splitmix(&mut state.rng) % (spread + 1)
        };
        (Duration::from_millis(wait), state.faults.outage)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        use base64::Engine as _;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:", self.secret_key))
        );
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == expected)
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn pg_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "code": code, "message": message.into() })),
    )
        .into_response()
}

fn now_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    crate::api::tenant::views::rfc3339_millis(ms)
}

/// `POST /v1/checkout`: the checkout window.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Checkout {
    order_id: String,
    amount: i64,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    card_number: Option<String>,
    #[serde(default)]
    capture_method: Option<String>,
}

async fn checkout(State(sim): State<Simulator>, Json(body): Json<Checkout>) -> Response {
    if body.amount <= 0 {
        return pg_error(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            "amount must be > 0",
        );
    }
    let capture_with_approval = match body.capture_method.as_deref() {
        None | Some("MANUAL") => false,
        Some("AUTOMATIC") => true,
        Some(_) => {
            return pg_error(
                StatusCode::BAD_REQUEST,
                codes::INVALID_REQUEST,
                "captureMethod must be MANUAL or AUTOMATIC",
            );
        }
    };
    let mut state = sim.lock();
    // An order may be checked out again once its last payment failed (a
    // decline, an abort): the customer tries another card.
    let earlier = state
        .by_order
        .get(&body.order_id)
        .and_then(|key| state.payments.get(key))
        .map(|p| p.payment.status);
    if earlier.is_some_and(|status| !status.failed()) {
        return pg_error(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            "a payment for this orderId was checked out before",
        );
    }
    state.next += 1;
    let payment_key = format!("tsim_{:012}", state.next);
    let payment = PgPayment {
        payment_key: payment_key.clone(),
        order_id: body.order_id.clone(),
        status: PgStatus::Ready,
        currency: body.currency.unwrap_or_else(|| "KRW".into()),
        total_amount: body.amount,
        balance_amount: body.amount,
        approved_at: None,
        captured_at: None,
        cancels: Vec::new(),
    };
    state.by_order.insert(body.order_id, payment_key.clone());
    state.payments.insert(
        payment_key,
        SimPayment {
            payment: payment.clone(),
            card: body.card_number.unwrap_or_else(|| cards::APPROVE.into()),
            confirm_calls: 0,
            capture_with_approval,
        },
    );
    Json(payment).into_response()
}

/// Runs a mutating request once per idempotency key: a repeat gets the
/// stored answer, one that arrives while the first is being processed (its
/// latency) gets 409 `ALREADY_PROCESSING_REQUEST`.
async fn once(
    sim: &Simulator,
    headers: &HeaderMap,
    scope: String,
    run: impl FnOnce(&mut SimState) -> (StatusCode, serde_json::Value, Option<Duration>)
    + Send
    + 'static,
) -> Response {
    let (latency, outage) = sim.weather();
    if !sim.authorized(headers) {
        tokio::time::sleep(latency).await;
        return pg_error(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED_KEY,
            "bad secret key",
        );
    }
    if outage {
        tokio::time::sleep(latency).await;
        return pg_error(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::PROVIDER_ERROR,
            "PG outage",
        );
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|key| (scope, key.to_owned()));
    if let Some(key) = &key {
        let mut state = sim.lock();
        match state.idempotency.get(key) {
            Some(Idem::Done(status, body)) => {
                let mut response = (*status, Json(body.clone())).into_response();
                response.headers_mut().insert(
                    "idempotent-replayed",
                    "true".parse().expect("a header value"),
                );
                return response;
            }
            Some(Idem::InFlight) => {
                return pg_error(
                    StatusCode::CONFLICT,
                    codes::ALREADY_PROCESSING_REQUEST,
                    "a request with this Idempotency-Key is being processed",
                );
            }
            None => {
                state.idempotency.insert(key.clone(), Idem::InFlight);
            }
        }
    }
    // Processed in a task of its own, as a real PG goes on with a request
    // whose client hung up (timed out): the outcome happens either way.
    let processing = {
        let sim = sim.clone();
        tokio::spawn(async move {
            // The processing time, during which a repeat finds the key in
            // flight.
            tokio::time::sleep(latency).await;
            let mut state = sim.lock();
            let (status, body, delay) = run(&mut state);
            if let Some(key) = key {
                // A transient failure changed nothing and is not kept: the
                // retry with the same key is processed anew (which is what
                // makes retrying with one key safe and useful).
                let transient = status.is_server_error()
                    && matches!(
                        body["code"].as_str(),
                        Some(codes::PROVIDER_ERROR | codes::FAILED_INTERNAL_SYSTEM_PROCESSING)
                    );
                if transient {
                    state.idempotency.remove(&key);
                } else {
                    state
                        .idempotency
                        .insert(key, Idem::Done(status, body.clone()));
                }
            }
            (status, body, delay)
        })
    };
    let processed = processing.await;
    sim.notify();
    let Ok((status, body, delay)) = processed else {
        return pg_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::FAILED_INTERNAL_SYSTEM_PROCESSING,
            "the simulator failed",
        );
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    (status, Json(body)).into_response()
}

fn error_body(code: &str, message: &str) -> serde_json::Value {
    json!({ "code": code, "message": message })
}

/// The answer to a request for a payment the simulator does not know.
fn no_such_payment() -> (StatusCode, serde_json::Value, Option<Duration>) {
    (
        StatusCode::NOT_FOUND,
        error_body(codes::NOT_FOUND_PAYMENT, "no such payment"),
        None,
    )
}

async fn confirm(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    Json(request): Json<ConfirmRequest>,
) -> Response {
    sim.lock().ledger.confirm_calls += 1;
    once(&sim, &headers, "confirm".into(), move |state| {
        let slow = Duration::from_millis(state.faults.slow_answer_ms);
        let Some(sim_payment) = state.payments.get_mut(&request.payment_key) else {
            return no_such_payment();
        };
        let payment = &mut sim_payment.payment;
        if payment.order_id != request.order_id || payment.total_amount != request.amount {
            return (
                StatusCode::BAD_REQUEST,
                error_body(
                    codes::INVALID_REQUEST,
                    "orderId or amount differ from the checkout",
                ),
                None,
            );
        }
        match payment.status {
            PgStatus::Ready => {}
            PgStatus::Done | PgStatus::PartialCanceled | PgStatus::Canceled => {
                return (
                    StatusCode::BAD_REQUEST,
                    error_body(codes::ALREADY_PROCESSED_PAYMENT, "already approved"),
                    None,
                );
            }
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    error_body(codes::REJECT_CARD_PAYMENT, "the payment was aborted"),
                    None,
                );
            }
        }
        let key = request.payment_key.clone();
        let capture = sim_payment_captures(state, &key);
        approve(state, &key, slow, capture)
    })
    .await
}

/// Whether payment `key` is captured with its approval.
fn sim_payment_captures(state: &SimState, key: &str) -> bool {
    state
        .payments
        .get(key)
        .is_some_and(|p| p.capture_with_approval)
}

/// Approves (or not, as its test card says) the `READY` payment `key`,
/// capturing it at once with `capture`.
fn approve(
    state: &mut SimState,
    key: &str,
    slow: Duration,
    capture: bool,
) -> (StatusCode, serde_json::Value, Option<Duration>) {
    let sim_payment = state.payments.get_mut(key).expect("the caller found it");
    let payment = &mut sim_payment.payment;
    sim_payment.confirm_calls += 1;
    let card = sim_payment.card.as_str();
    let delay = match card {
        cards::DECLINE => {
            payment.status = PgStatus::Aborted;
            let aborted = payment.clone();
            state.changed.push(aborted);
            return (
                StatusCode::BAD_REQUEST,
                error_body(codes::REJECT_CARD_PAYMENT, "declined by the card issuer"),
                None,
            );
        }
        cards::TRANSIENT_TWICE if sim_payment.confirm_calls <= 2 => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                error_body(codes::PROVIDER_ERROR, "temporary fault, try again"),
                None,
            );
        }
        cards::ALWAYS_FAILS => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                error_body(codes::FAILED_INTERNAL_SYSTEM_PROCESSING, "internal failure"),
                None,
            );
        }
        cards::TIMEOUT_NOT_APPROVED => {
            payment.status = PgStatus::Aborted;
            let aborted = payment.clone();
            state.changed.push(aborted);
            return (
                StatusCode::GATEWAY_TIMEOUT,
                json!({ "message": "upstream timeout" }),
                Some(slow),
            );
        }
        cards::APPROVE_THEN_TIMEOUT => Some(slow),
        _ => None,
    };
    payment.status = PgStatus::Done;
    payment.approved_at = Some(now_rfc3339());
    if capture {
        payment.captured_at = payment.approved_at.clone();
    }
    let answer = serde_json::to_value(&*payment).expect("a payment serialises");
    let amount = payment.total_amount;
    let approved = payment.clone();
    state.changed.push(approved);
    state.ledger.approvals += 1;
    state.ledger.approved_amount += amount;
    if capture {
        state.ledger.captures += 1;
        state.ledger.captured_amount += amount;
    }
    (StatusCode::OK, answer, delay)
}

/// `POST /v1/payments/{paymentKey}/capture`: takes an authorization in
/// full. A second capture under another key, or of a payment not held
/// (voided, aborted), is `NOT_CAPTURABLE_PAYMENT`; a
/// [`cards::CAPTURE_REFUSED`] card is refused by its issuer, and stays
/// authorized.
async fn capture(
    State(sim): State<Simulator>,
    Path(payment_key): Path<String>,
    headers: HeaderMap,
    Json(request): Json<super::CaptureRequest>,
) -> Response {
    let scope = format!("capture:{payment_key}");
    once(&sim, &headers, scope, move |state| {
        let Some(sim_payment) = state.payments.get_mut(&payment_key) else {
            return no_such_payment();
        };
        let payment = &mut sim_payment.payment;
        if payment.status != PgStatus::Done || payment.captured_at.is_some() {
            return (
                StatusCode::BAD_REQUEST,
                error_body(
                    codes::NOT_CAPTURABLE_PAYMENT,
                    "only an approved, uncaptured payment can be captured",
                ),
                None,
            );
        }
        if request.amount != payment.total_amount {
            return (
                StatusCode::BAD_REQUEST,
                error_body(
                    codes::INVALID_REQUEST,
                    "amount differs from the authorized amount",
                ),
                None,
            );
        }
        if sim_payment.card == cards::CAPTURE_REFUSED {
            return (
                StatusCode::BAD_REQUEST,
                error_body(
                    codes::REJECT_CARD_PAYMENT,
                    "the card issuer refused the capture",
                ),
                None,
            );
        }
        payment.captured_at = Some(now_rfc3339());
        let answer = serde_json::to_value(&*payment).expect("a payment serialises");
        let amount = payment.total_amount;
        state.ledger.captures += 1;
        state.ledger.captured_amount += amount;
        (StatusCode::OK, answer, None)
    })
    .await
}

/// `POST /v1/billing/authorizations/card`: a card registered for charges
/// the customer is not present for (the PG keeps the card; the merchant
/// gets the billing key).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssueBillingKey {
    customer_key: String,
    card_number: String,
}

async fn issue_billing_key(
    State(sim): State<Simulator>,
    Json(body): Json<IssueBillingKey>,
) -> Response {
    if body.customer_key.is_empty() || body.card_number.len() < 12 {
        return pg_error(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            "customerKey and a card number are required",
        );
    }
    let mut state = sim.lock();
    state.next += 1;
    let billing_key = format!("bsim_{:012}", state.next);
    let masked = format!(
        "{}******{}",
        &body.card_number[..6],
        &body.card_number[body.card_number.len() - 4..]
    );
    state.billing_keys.insert(
        billing_key.clone(),
        (body.customer_key.clone(), body.card_number),
    );
    Json(json!({
        "billingKey": billing_key,
        "customerKey": body.customer_key,
        "card": { "number": masked },
        "authenticatedAt": now_rfc3339(),
    }))
    .into_response()
}

async fn charge_billing_key(
    State(sim): State<Simulator>,
    Path(billing_key): Path<String>,
    headers: HeaderMap,
    Json(request): Json<super::BillingChargeRequest>,
) -> Response {
    sim.lock().ledger.confirm_calls += 1;
    once(&sim, &headers, "billing".into(), move |state| {
        let slow = Duration::from_millis(state.faults.slow_answer_ms);
        let Some((customer_key, card)) = state.billing_keys.get(&billing_key).cloned() else {
            return (
                StatusCode::NOT_FOUND,
                error_body(codes::INVALID_BILLING_KEY, "no such billing key"),
                None,
            );
        };
        if customer_key != request.customer_key || request.amount <= 0 {
            return (
                StatusCode::BAD_REQUEST,
                error_body(
                    codes::INVALID_REQUEST,
                    "customerKey differs from the billing key's, or amount is not positive",
                ),
                None,
            );
        }
        let earlier = state
            .by_order
            .get(&request.order_id)
            .and_then(|key| state.payments.get(key))
            .map(|p| p.payment.status);
        if earlier.is_some_and(|status| !status.failed()) {
            return (
                StatusCode::BAD_REQUEST,
                error_body(
                    codes::ALREADY_PROCESSED_PAYMENT,
                    "this orderId was paid before",
                ),
                None,
            );
        }
        state.next += 1;
        let payment_key = format!("tsim_{:012}", state.next);
        state
            .by_order
            .insert(request.order_id.clone(), payment_key.clone());
        state.payments.insert(
            payment_key.clone(),
            SimPayment {
                payment: PgPayment {
                    payment_key: payment_key.clone(),
                    order_id: request.order_id.clone(),
                    status: PgStatus::Ready,
                    currency: request.currency.clone().unwrap_or_else(|| "KRW".into()),
                    total_amount: request.amount,
                    balance_amount: request.amount,
                    approved_at: None,
                    captured_at: None,
                    cancels: Vec::new(),
                },
                card,
                confirm_calls: 0,
                capture_with_approval: true,
            },
        );
        // A charge of a stored card is a sale: captured with its approval.
        approve(
            state,
            &payment_key,
            slow,
            sim_payment_captures(state, &payment_key),
        )
    })
    .await
}

async fn cancel(
    State(sim): State<Simulator>,
    Path(payment_key): Path<String>,
    headers: HeaderMap,
    Json(request): Json<CancelRequest>,
) -> Response {
    let scope = format!("cancel:{payment_key}");
    once(&sim, &headers, scope, move |state| {
        let Some(sim_payment) = state.payments.get_mut(&payment_key) else {
            return no_such_payment();
        };
        let payment = &mut sim_payment.payment;
        if !payment.status.holds_money() {
            return (
                StatusCode::BAD_REQUEST,
                error_body(codes::NOT_CANCELABLE_PAYMENT, "nothing to cancel"),
                None,
            );
        }
        let amount = request.cancel_amount.unwrap_or(payment.balance_amount);
        if amount <= 0 || amount > payment.balance_amount {
            return (
                StatusCode::BAD_REQUEST,
                error_body(codes::NOT_CANCELABLE_AMOUNT, "more than is refundable"),
                None,
            );
        }
        payment.balance_amount -= amount;
        payment.status = if payment.balance_amount == 0 {
            PgStatus::Canceled
        } else {
            PgStatus::PartialCanceled
        };
        payment.cancels.push(PgCancel {
            cancel_amount: amount,
            cancel_reason: request.cancel_reason.clone(),
            refundable_amount: payment.balance_amount,
            canceled_at: now_rfc3339(),
            transaction_key: format!("tcan_{}", payment.cancels.len() + 1),
        });
        let answer = serde_json::to_value(&*payment).expect("a payment serialises");
        let cancelled = payment.clone();
        state.changed.push(cancelled);
        state.ledger.cancelled_amount += amount;
        (StatusCode::OK, answer, None)
    })
    .await
}

async fn read(sim: &Simulator, headers: &HeaderMap, key: Option<String>) -> Response {
    let (latency, outage) = sim.weather();
    tokio::time::sleep(latency).await;
    if !sim.authorized(headers) {
        return pg_error(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED_KEY,
            "bad secret key",
        );
    }
    if outage || sim.lock().faults.queries_fail {
        return pg_error(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::PROVIDER_ERROR,
            "PG outage",
        );
    }
    let state = sim.lock();
    match key.and_then(|key| state.payments.get(&key)) {
        Some(found) => Json(found.payment.clone()).into_response(),
        None => pg_error(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND_PAYMENT,
            "no such payment",
        ),
    }
}

async fn payment(
    State(sim): State<Simulator>,
    Path(payment_key): Path<String>,
    headers: HeaderMap,
) -> Response {
    read(&sim, &headers, Some(payment_key)).await
}

async fn payment_by_order(
    State(sim): State<Simulator>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let key = sim.lock().by_order.get(&order_id).cloned();
    read(&sim, &headers, key).await
}

async fn ledger(State(sim): State<Simulator>) -> Json<SimLedger> {
    Json(sim.ledger())
}

async fn faults(State(sim): State<Simulator>) -> Json<Faults> {
    Json(sim.lock().faults)
}

async fn set_faults(State(sim): State<Simulator>, Json(faults): Json<Faults>) -> Response {
    if faults.latency_ms[0] > faults.latency_ms[1] {
        return pg_error(
            StatusCode::BAD_REQUEST,
            codes::INVALID_REQUEST,
            "latencyMs must be [min, max] with min <= max",
        );
    }
    sim.set_faults(faults);
    Json(faults).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_stay_within_the_range_and_repeat_with_the_seed() {
        let draw = |seed| {
            let sim = Simulator::new("k", seed);
            sim.set_faults(Faults {
                latency_ms: [10, 20],
                ..Faults::default()
            });
            (0..200).map(|_| sim.weather().0).collect::<Vec<_>>()
        };
        let first = draw(7);
        assert!(
            first
                .iter()
                .all(|d| (10..=20).contains(&(d.as_millis() as u64)))
        );
        assert_eq!(first, draw(7));
        assert_ne!(first, draw(8));
        assert!(first.iter().any(|d| d.as_millis() == 10));
        assert!(first.iter().any(|d| d.as_millis() == 20));
    }
}

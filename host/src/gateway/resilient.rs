//! The gateway boundary's resilience, in one layer (and nowhere above it:
//! one layer retries, or 3 × 3 = 9 calls): a circuit breaker per gateway
//! and bounded retries.
//!
//! - **Breaker** (`tower-resilience-circuitbreaker`: a time window with a
//!   minimum of calls, a failure-rate and a slow-call threshold, an open
//!   wait and half-open probes, as Resilience4j's): a failure is a PG
//!   that did not work —
//!   [`GatewayError::Transient`], [`GatewayError::Unknown`],
//!   [`GatewayError::Unreachable`]. A refusal (a decline) is the PG
//!   working. While open, calls fail at once with
//!   [`GatewayError::CircuitOpen`] and reach nothing.
//! - **Retries** (`backon`, exponential with jitter): a mutating call
//!   (approve, cancel) is retried only when it certainly did not take
//!   effect — `Transient` (the PG says so) or `Unreachable` (never sent) —
//!   with the same idempotency key; never on `Unknown` (resolve by
//!   querying), never on a refusal. A query is retried on every failure.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};
use tower_resilience_circuitbreaker::{
    CircuitBreakerError, CircuitBreakerHandle, CircuitBreakerLayer, CircuitState, SlidingWindowType,
};

use super::{
    BillingChargeRequest, CancelRequest, CaptureRequest, ConfirmRequest, GatewayError,
    GatewayResult, PaymentGateway, PgPayment,
};

/// The breaker and retry settings of one gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Resilience {
    /// How far back the breaker looks when it judges the failure rate.
    pub window: Duration,
    /// Calls needed in the window before it may open.
    pub minimum_calls: usize,
    /// Failure rate (0–1] that opens it.
    pub failure_rate: f64,
    /// A call slower than this counts as slow…
    pub slow_call: Duration,
    /// …and this rate (0–1] of slow calls opens it too.
    pub slow_call_rate: f64,
    /// How long it stays open before it lets probes through.
    pub open_wait: Duration,
    /// Probes allowed half-open; all must succeed to close it.
    pub half_open_calls: usize,
    /// Retries after the first attempt (mutating calls: transient only).
    pub retries: usize,
    /// First retry delay; it doubles up to `retry_max_delay`.
    pub retry_min_delay: Duration,
    /// Longest retry delay.
    pub retry_max_delay: Duration,
}

impl Default for Resilience {
    /// Resilience4j's defaults never open before 100 calls; a PG outage
    /// should show within seconds at a few payments a second.
    fn default() -> Self {
        Resilience {
            window: Duration::from_secs(30),
            minimum_calls: 10,
            failure_rate: 0.5,
            slow_call: Duration::from_secs(10),
            slow_call_rate: 0.8,
            open_wait: Duration::from_secs(30),
            half_open_calls: 3,
            retries: 3,
            retry_min_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(2),
        }
    }
}

/// One call through the breaker.
#[derive(Debug, Clone)]
enum Call {
    Confirm(ConfirmRequest, String),
    Capture(String, CaptureRequest, String),
    Cancel(String, CancelRequest, String),
    ChargeBillingKey(String, BillingChargeRequest, String),
    Payment(String),
    PaymentByOrder(String),
}

type Breaker = BoxCloneSyncService<Call, PgPayment, CircuitBreakerError<GatewayError>>;

/// A gateway behind a breaker and a retry policy.
#[derive(Clone)]
pub struct ResilientGateway {
    breaker: Breaker,
    handle: Arc<CircuitBreakerHandle<BreakerClassifier>>,
    retry: ExponentialBuilder,
}

type BreakerClassifier =
    tower_resilience_circuitbreaker::FnClassifier<fn(&Result<PgPayment, GatewayError>) -> bool>;

/// Whether a call's outcome counts against the PG.
fn failed(result: &Result<PgPayment, GatewayError>) -> bool {
    match result {
        Ok(_) | Err(GatewayError::Refused { .. }) | Err(GatewayError::CircuitOpen) => false,
        Err(GatewayError::Transient { .. })
        | Err(GatewayError::Unknown(_))
        | Err(GatewayError::Unreachable(_)) => true,
    }
}

impl ResilientGateway {
    /// Puts `inner` behind the breaker and retries of `settings`.
    pub fn new<G: PaymentGateway + 'static>(
        inner: G,
        name: &str,
        settings: &Resilience,
    ) -> Result<Self, String> {
        let inner = Arc::new(inner);
        let (layer, handle): (CircuitBreakerLayer<BreakerClassifier>, _) =
            CircuitBreakerLayer::builder()
                .name(name.to_owned())
                .sliding_window_type(SlidingWindowType::TimeBased)
                .sliding_window_duration(settings.window)
                .minimum_number_of_calls(settings.minimum_calls)
                .failure_rate_threshold(settings.failure_rate)
                .slow_call_duration_threshold(settings.slow_call)
                .slow_call_rate_threshold(settings.slow_call_rate)
                .wait_duration_in_open(settings.open_wait)
                .permitted_calls_in_half_open(settings.half_open_calls)
                .failure_classifier(failed as fn(&Result<PgPayment, GatewayError>) -> bool)
                .build_with_handle()
                .map_err(|err| format!("circuit breaker settings: {err}"))?;
        let service = tower::service_fn(move |call: Call| {
            let inner = inner.clone();
            async move {
                match call {
                    Call::Confirm(request, key) => inner.confirm(&request, &key).await,
                    Call::Capture(payment_key, request, key) => {
                        inner.capture(&payment_key, &request, &key).await
                    }
                    Call::Cancel(payment_key, request, key) => {
                        inner.cancel(&payment_key, &request, &key).await
                    }
                    Call::ChargeBillingKey(billing_key, request, key) => {
                        inner.charge_billing_key(&billing_key, &request, &key).await
                    }
                    Call::Payment(key) => inner.payment(&key).await,
                    Call::PaymentByOrder(order) => inner.payment_by_order(&order).await,
                }
            }
        });
        let breaker = BoxCloneSyncService::new(layer.layer_fn(service));
        let retry = ExponentialBuilder::default()
            .with_min_delay(settings.retry_min_delay)
            .with_max_delay(settings.retry_max_delay)
            .with_max_times(settings.retries)
            .with_jitter();
        Ok(ResilientGateway {
            breaker,
            handle: Arc::new(handle),
            retry,
        })
    }

    /// The breaker's state (for the health gauges).
    pub fn state(&self) -> CircuitState {
        self.handle.state()
    }

    async fn once(&self, call: Call) -> GatewayResult<PgPayment> {
        let mut breaker = self.breaker.clone();
        let ready = breaker.ready().await.map_err(open_or_inner)?;
        ready.call(call).await.map_err(open_or_inner)
    }

    /// A mutating call: retried only when it certainly did not happen.
    async fn mutate(&self, call: Call) -> GatewayResult<PgPayment> {
        (|| self.once(call.clone()))
            .retry(self.retry)
            .sleep(tokio::time::sleep)
            .when(|err| {
                matches!(
                    err,
                    GatewayError::Transient { .. } | GatewayError::Unreachable(_)
                )
            })
            .notify(|err, after| {
                tracing::warn!(error = %err, retry_in_ms = after.as_millis() as u64, "gateway.retry");
            })
            .await
    }

    /// A query: retried on every failure of the PG.
    async fn query(&self, call: Call) -> GatewayResult<PgPayment> {
        (|| self.once(call.clone()))
            .retry(self.retry)
            .sleep(tokio::time::sleep)
            .when(|err| {
                !matches!(
                    err,
                    GatewayError::Refused { .. } | GatewayError::CircuitOpen
                )
            })
            .await
    }
}

fn open_or_inner(err: CircuitBreakerError<GatewayError>) -> GatewayError {
    match err {
        CircuitBreakerError::OpenCircuit => GatewayError::CircuitOpen,
        CircuitBreakerError::Inner(err) => err,
    }
}

impl PaymentGateway for ResilientGateway {
    async fn confirm(
        &self,
        request: &ConfirmRequest,
        idempotency_key: &str,
    ) -> GatewayResult<PgPayment> {
        self.mutate(Call::Confirm(request.clone(), idempotency_key.to_owned()))
            .await
    }

    async fn capture(
        &self,
        payment_key: &str,
        request: &CaptureRequest,
        idempotency_key: &str,
    ) -> GatewayResult<PgPayment> {
        self.mutate(Call::Capture(
            payment_key.to_owned(),
            request.clone(),
            idempotency_key.to_owned(),
        ))
        .await
    }

    async fn cancel(
        &self,
        payment_key: &str,
        request: &CancelRequest,
        idempotency_key: &str,
    ) -> GatewayResult<PgPayment> {
        self.mutate(Call::Cancel(
            payment_key.to_owned(),
            request.clone(),
            idempotency_key.to_owned(),
        ))
        .await
    }

    async fn charge_billing_key(
        &self,
        billing_key: &str,
        request: &BillingChargeRequest,
        idempotency_key: &str,
    ) -> GatewayResult<PgPayment> {
        self.mutate(Call::ChargeBillingKey(
            billing_key.to_owned(),
            request.clone(),
            idempotency_key.to_owned(),
        ))
        .await
    }

    async fn payment(&self, payment_key: &str) -> GatewayResult<PgPayment> {
        self.query(Call::Payment(payment_key.to_owned())).await
    }

    async fn payment_by_order(&self, order_id: &str) -> GatewayResult<PgPayment> {
        self.query(Call::PaymentByOrder(order_id.to_owned())).await
    }
}

//! `tenants.<id>.gateway:` (how a tenant's payments reach its payment
//! gateway) and the top-level `pg_simulator:` (the bundled simulator that
//! `serve` runs on loopback for tenants of kind `simulator`).
//!
//! ```yaml
//! pg_simulator: { listen: 127.0.0.1:8090 }
//! tenants:
//!   acme:
//!     gateway:
//!       kind: toss                      # or: simulator
//!       base_url: https://api.example-pg.com
//!       secret_env: ACME_PG_SECRET_KEY  # the secret key, from the environment
//!       connect_timeout_ms: 2000
//!       request_timeout_ms: 10000
//!       breaker: { window_s: 30, minimum_calls: 10, failure_rate: 0.5,
//!                  slow_call_ms: 10000, slow_call_rate: 0.8, open_wait_s: 30,
//!                  half_open_calls: 3 }
//!       retries: { max: 3, min_delay_ms: 200, max_delay_ms: 2000 }
//!       void_unconfirmed_after_s: 3600  # an approval never confirmed is voided
//!       service_timeout_s: 30           # the order saga's wait for the service
//!       capture: automatic              # or: manual (the saga captures at fulfilment)
//! ```
//!
//! `capture`: with `manual` the PG's approval is an authorization and the
//! order saga captures it once the tenant's service fulfilled the order
//! (`POST /v1/payments/{key}/capture`); with `automatic` the PG captures
//! with the approval, as Toss Payments does, and the fulfilment only
//! confirms the payment in FluxPay's books. The default follows the kind:
//! `automatic` for `toss` (what Toss Payments does), `manual` for the
//! bundled `simulator` (which authorizes unless a checkout asks for
//! `captureMethod: AUTOMATIC`).
//! Each payment keeps the mode it was opened under, so the setting may
//! change with orders between approval and fulfilment (payments opened
//! before migration 0022 stored none and follow the current setting).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::gateway::resilient::Resilience;

/// How one tenant's payments reach a PG.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Which PG.
    pub kind: GatewayKind,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for an answer; past it the outcome is unknown.
    pub request_timeout: Duration,
    /// The breaker and retries at the boundary.
    pub resilience: Resilience,
    /// How long an approved payment may wait for its order's fulfilment
    /// before the recovery scheduler voids it (and cancels the order).
    pub void_unconfirmed_after: Duration,
    /// How long an order's saga waits for the tenant's service after the
    /// approval before it compensates.
    pub service_timeout: Duration,
    /// Whether the PG captures with the approval (`capture: automatic`,
    /// the default for `toss`), or the saga captures at fulfilment
    /// (`manual`, the default for `simulator`).
    pub capture_with_approval: bool,
}

/// Default of `void_unconfirmed_after_s`: one hour.
pub const DEFAULT_VOID_UNCONFIRMED_AFTER: Duration = Duration::from_secs(3600);
/// Longest `void_unconfirmed_after_s`: 30 days.
const MAX_VOID_UNCONFIRMED_AFTER_S: u64 = 30 * 86_400;

/// Which PG a tenant uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayKind {
    /// A Toss-Payments-style API at `base_url`, with the secret key read
    /// from the environment variable `secret_env` at start-up.
    Toss {
        /// Scheme, host and port.
        base_url: String,
        /// The environment variable holding the secret key.
        secret_env: String,
    },
    /// The bundled simulator `serve` runs (`pg_simulator:`).
    Simulator,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    pub kind: String,
    pub base_url: Option<String>,
    pub secret_env: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    #[serde(default)]
    pub breaker: RawBreaker,
    #[serde(default)]
    pub retries: RawRetries,
    pub void_unconfirmed_after_s: Option<u64>,
    pub service_timeout_s: Option<u64>,
    pub capture: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    pub window_s: Option<u64>,
    pub minimum_calls: Option<usize>,
    pub failure_rate: Option<f64>,
    pub slow_call_ms: Option<u64>,
    pub slow_call_rate: Option<f64>,
    pub open_wait_s: Option<u64>,
    pub half_open_calls: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetries {
    pub max: Option<usize>,
    pub min_delay_ms: Option<u64>,
    pub max_delay_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPgSimulator {
    pub listen: String,
}

/// Longest timeout or wait a gateway setting may name: 10 minutes.
const MAX_MS: u64 = 600_000;

impl RawGateway {
    /// The checked config, or every problem as `(key, message)`.
    pub(super) fn resolve(
        &self,
        has_simulator: bool,
    ) -> (GatewayConfig, Vec<(&'static str, String)>) {
        let mut problems = Vec::new();
        let kind = match self.kind.as_str() {
            "toss" => {
                let base_url = self.base_url.clone().unwrap_or_default();
                if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
                    problems.push((
                        "base_url",
                        format!("`{base_url}` must be an http:// or https:// URL"),
                    ));
                }
                let secret_env = self.secret_env.clone().unwrap_or_default();
                if secret_env.is_empty() {
                    problems.push((
                        "secret_env",
                        "required: the environment variable holding the PG's secret key".into(),
                    ));
                }
                GatewayKind::Toss {
                    base_url,
                    secret_env,
                }
            }
            "simulator" => {
                if self.base_url.is_some() || self.secret_env.is_some() {
                    problems.push((
                        "kind",
                        "a simulator gateway takes no base_url or secret_env".into(),
                    ));
                }
                if !has_simulator {
                    problems.push((
                        "kind",
                        "`simulator` needs the top-level `pg_simulator: { listen: … }`".into(),
                    ));
                }
                GatewayKind::Simulator
            }
            other => {
                problems.push(("kind", format!("`{other}` is not `toss` or `simulator`")));
                GatewayKind::Simulator
            }
        };
        let defaults = Resilience::default();
        let mut ms = |key: &'static str, value: Option<u64>, default: Duration| match value {
            None => default,
            Some(v) if (1..=MAX_MS).contains(&v) => Duration::from_millis(v),
            Some(v) => {
                problems.push((key, format!("{v} is outside 1..={MAX_MS} ms")));
                default
            }
        };
        let connect_timeout = ms(
            "connect_timeout_ms",
            self.connect_timeout_ms,
            Duration::from_secs(2),
        );
        let request_timeout = ms(
            "request_timeout_ms",
            self.request_timeout_ms,
            Duration::from_secs(10),
        );
        let b = &self.breaker;
        let r = &self.retries;
        let resilience = Resilience {
            window: ms(
                "breaker.window_s",
                b.window_s.map(|s| s.saturating_mul(1000)),
                defaults.window,
            ),
            slow_call: ms("breaker.slow_call_ms", b.slow_call_ms, defaults.slow_call),
            open_wait: ms(
                "breaker.open_wait_s",
                b.open_wait_s.map(|s| s.saturating_mul(1000)),
                defaults.open_wait,
            ),
            retry_min_delay: ms(
                "retries.min_delay_ms",
                r.min_delay_ms,
                defaults.retry_min_delay,
            ),
            retry_max_delay: ms(
                "retries.max_delay_ms",
                r.max_delay_ms,
                defaults.retry_max_delay,
            ),
            minimum_calls: b.minimum_calls.unwrap_or(defaults.minimum_calls),
            failure_rate: b.failure_rate.unwrap_or(defaults.failure_rate),
            slow_call_rate: b.slow_call_rate.unwrap_or(defaults.slow_call_rate),
            half_open_calls: b.half_open_calls.unwrap_or(defaults.half_open_calls),
            retries: r.max.unwrap_or(defaults.retries),
        };
        for (key, rate) in [
            ("breaker.failure_rate", resilience.failure_rate),
            ("breaker.slow_call_rate", resilience.slow_call_rate),
        ] {
            if !(rate > 0.0 && rate <= 1.0) {
                problems.push((key, format!("{rate} is outside (0, 1]")));
            }
        }
        if resilience.minimum_calls == 0 {
            problems.push(("breaker.minimum_calls", "must be at least 1".into()));
        }
        if resilience.half_open_calls == 0 {
            problems.push(("breaker.half_open_calls", "must be at least 1".into()));
        }
        if resilience.retries > 10 {
            problems.push((
                "retries.max",
                format!("{} retries is more than 10", resilience.retries),
            ));
        }
        if resilience.retry_min_delay > resilience.retry_max_delay {
            problems.push((
                "retries.min_delay_ms",
                "must not be above retries.max_delay_ms".into(),
            ));
        }
        let void_unconfirmed_after = match self.void_unconfirmed_after_s {
            None => DEFAULT_VOID_UNCONFIRMED_AFTER,
            Some(s) if (1..=MAX_VOID_UNCONFIRMED_AFTER_S).contains(&s) => Duration::from_secs(s),
            Some(s) => {
                problems.push((
                    "void_unconfirmed_after_s",
                    format!("{s} is outside 1..={MAX_VOID_UNCONFIRMED_AFTER_S} s"),
                ));
                DEFAULT_VOID_UNCONFIRMED_AFTER
            }
        };
        let service_timeout = match self.service_timeout_s {
            None => Duration::from_secs(30),
            Some(s) if (1..=86_400).contains(&s) => Duration::from_secs(s),
            Some(s) => {
                problems.push(("service_timeout_s", format!("{s} is outside 1..=86400 s")));
                Duration::from_secs(30)
            }
        };
        if void_unconfirmed_after <= service_timeout {
            problems.push((
                "void_unconfirmed_after_s",
                format!(
                    "{} s must be longer than service_timeout_s ({} s): an approval would be \
                     voided while the tenant's service may still fulfil its order",
                    void_unconfirmed_after.as_secs(),
                    service_timeout.as_secs()
                ),
            ));
        }
        let capture_with_approval = match self.capture.as_deref() {
            None => matches!(kind, GatewayKind::Toss { .. }),
            Some("manual") => false,
            Some("automatic") => true,
            Some(other) => {
                problems.push((
                    "capture",
                    format!("`{other}` is not `manual` or `automatic`"),
                ));
                false
            }
        };
        let config = GatewayConfig {
            kind,
            connect_timeout,
            request_timeout,
            resilience,
            void_unconfirmed_after,
            service_timeout,
            capture_with_approval,
        };
        (config, problems)
    }
}

impl RawPgSimulator {
    /// The loopback address to listen on.
    pub(super) fn resolve(&self) -> Result<SocketAddr, String> {
        let addr: SocketAddr = self
            .listen
            .parse()
            .map_err(|err| format!("`{}` is not an ip:port address: {err}", self.listen))?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "`{addr}` is not a loopback address: the simulator serves 127.0.0.1 or ::1 only"
            ));
        }
        Ok(addr)
    }
}

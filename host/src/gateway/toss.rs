//! A connector for a Toss-Payments-style PG API over HTTP.
//!
//! - `Authorization: Basic base64("<secret key>:")`;
//! - `Idempotency-Key` on every mutating call (the caller's: one per
//!   payment attempt, kept with the payment before the call);
//! - answers classified once, here ([`classify`]): a body with a code is
//!   the PG's word: transient only where it documents that nothing
//!   happened (`PROVIDER_ERROR`, `FAILED_INTERNAL_SYSTEM_PROCESSING`, a
//!   429), refused for a 4xx; a timeout, a connection that closed after
//!   the request went out, a 5xx with any other code, a key still being
//!   processed, an answer without the PG's error body, or a 2xx whose body
//!   cannot be read are [`GatewayError::Unknown`]; a connection that never
//!   opened is [`GatewayError::Unreachable`].

use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::{
    BillingChargeRequest, CancelRequest, CaptureRequest, ConfirmRequest, GatewayError,
    GatewayResult, PaymentGateway, PgErrorBody, PgPayment, codes,
};
use crate::config::Secret;

/// How the connector reaches its PG.
#[derive(Clone)]
pub struct TossConfig {
    /// Scheme, host and port, e.g. `https://api.tosspayments.com`.
    pub base_url: String,
    /// The secret key (`test_sk_…` / `live_sk_…`).
    pub secret_key: Secret,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for a whole answer; past it the outcome is unknown.
    pub request_timeout: Duration,
}

/// The connector.
#[derive(Clone)]
pub struct TossGateway {
    client: reqwest::Client,
    base_url: String,
    secret_key: Secret,
}

impl std::fmt::Debug for TossGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret key.
        f.debug_struct("TossGateway")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl TossGateway {
    /// A connector with its own connection pool.
    pub fn new(config: TossConfig) -> Result<Self, GatewayError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(|err| GatewayError::Unreachable(format!("HTTP client: {err}")))?;
        Ok(TossGateway {
            client,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            secret_key: config.secret_key,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base_url))
            .basic_auth(self.secret_key.expose(), Some(""))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> GatewayResult<T> {
        match request.send().await {
            Err(err) => Err(transport(&err)),
            Ok(response) => {
                let status = response.status();
                match response.bytes().await {
                    Ok(body) => classify(status, &body),
                    // The PG answered, then the body broke off: it acted
                    // or not as its status says, but we cannot read it.
                    Err(err) => Err(GatewayError::Unknown(format!(
                        "the answer ({status}) broke off: {err}"
                    ))),
                }
            }
        }
    }
}

/// A transport failure: before the request went out, or after.
fn transport(err: &reqwest::Error) -> GatewayError {
    if err.is_connect() {
        GatewayError::Unreachable(err.to_string())
    } else if err.is_timeout() {
        GatewayError::Unknown(format!("no answer in time: {err}"))
    } else {
        GatewayError::Unknown(err.to_string())
    }
}

/// What an answer means (see the module docs).
pub fn classify<T: DeserializeOwned>(status: StatusCode, body: &[u8]) -> GatewayResult<T> {
    if status.is_success() {
        return serde_json::from_slice(body).map_err(|err| {
            GatewayError::Unknown(format!(
                "the PG answered {status} with an unreadable body: {err}"
            ))
        });
    }
    let Ok(PgErrorBody { code, message }) = serde_json::from_slice::<PgErrorBody>(body) else {
        // Not the PG's own word (a proxy, a load balancer): a 429 was not
        // processed; anything else may have been.
        return Err(if status == StatusCode::TOO_MANY_REQUESTS {
            GatewayError::Transient {
                code: status.as_u16().to_string(),
                message: "rate limited".into(),
            }
        } else {
            GatewayError::Unknown(format!(
                "the PG answered {status} without its error body: {}",
                String::from_utf8_lossy(body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))
        });
    };
    match code.as_str() {
        // The PG says it did nothing.
        codes::PROVIDER_ERROR | codes::FAILED_INTERNAL_SYSTEM_PROCESSING => {
            Err(GatewayError::Transient { code, message })
        }
        _ if status == StatusCode::TOO_MANY_REQUESTS => {
            Err(GatewayError::Transient { code, message })
        }
        // The first request with this key is still being processed: its
        // outcome is not known yet.
        codes::ALREADY_PROCESSING_REQUEST => {
            Err(GatewayError::Unknown(format!("{code}: {message}")))
        }
        // A 5xx with a code the PG does not document as "nothing happened".
        _ if status.is_server_error() => Err(GatewayError::Unknown(format!("{code}: {message}"))),
        _ => Err(GatewayError::Refused { code, message }),
    }
}

impl PaymentGateway for TossGateway {
    async fn confirm(
        &self,
        request: &ConfirmRequest,
        idempotency_key: &str,
    ) -> GatewayResult<PgPayment> {
        self.send(
            self.request(reqwest::Method::POST, "/v1/payments/confirm")
                .header("Idempotency-Key", idempotency_key)
                .json(request),
        )
        .await
    }

    async fn capture(
        &self,
        payment_key: &str,
        request: &CaptureRequest,
        idempotency_key: &str,
    ) -> GatewayResult<PgPayment> {
        self.send(
            self.request(
                reqwest::Method::POST,
                &format!("/v1/payments/{}/capture", path_segment(payment_key)?),
            )
            .header("Idempotency-Key", idempotency_key)
            .json(request),
        )
        .await
    }

    async fn cancel(
        &self,
        payment_key: &str,
        request: &CancelRequest,
        idempotency_key: &str,
    ) -> GatewayResult<PgPayment> {
        self.send(
            self.request(
                reqwest::Method::POST,
                &format!("/v1/payments/{}/cancel", path_segment(payment_key)?),
            )
            .header("Idempotency-Key", idempotency_key)
            .json(request),
        )
        .await
    }

    async fn charge_billing_key(
        &self,
        billing_key: &str,
        request: &BillingChargeRequest,
        idempotency_key: &str,
    ) -> GatewayResult<PgPayment> {
        self.send(
            self.request(
                reqwest::Method::POST,
                &format!("/v1/billing/{}", path_segment(billing_key)?),
            )
            .header("Idempotency-Key", idempotency_key)
            .json(request),
        )
        .await
    }

    async fn payment(&self, payment_key: &str) -> GatewayResult<PgPayment> {
        self.send(self.request(
            reqwest::Method::GET,
            &format!("/v1/payments/{}", path_segment(payment_key)?),
        ))
        .await
    }

    async fn payment_by_order(&self, order_id: &str) -> GatewayResult<PgPayment> {
        self.send(self.request(
            reqwest::Method::GET,
            &format!("/v1/payments/orders/{}", path_segment(order_id)?),
        ))
        .await
    }
}

/// A key or id placed in a URL path: refused rather than escaped when it
/// holds anything but unreserved characters (ours never do; a PG's key
/// that did would be a PG fault to look at, not to paper over).
fn path_segment(value: &str) -> GatewayResult<&str> {
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if ok {
        Ok(value)
    } else {
        Err(GatewayError::Refused {
            code: codes::INVALID_REQUEST.into(),
            message: format!("`{value}` cannot be sent in a URL path"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(status: u16, body: &str) -> GatewayError {
        classify::<PgPayment>(StatusCode::from_u16(status).unwrap(), body.as_bytes()).unwrap_err()
    }

    #[test]
    fn the_pgs_word_decides_refused_and_transient() {
        let refused = error(400, r#"{"code":"REJECT_CARD_PAYMENT","message":"limit"}"#);
        assert_eq!(
            refused,
            GatewayError::Refused {
                code: "REJECT_CARD_PAYMENT".into(),
                message: "limit".into()
            }
        );
        for (status, code) in [
            (500, "PROVIDER_ERROR"),
            (500, "FAILED_INTERNAL_SYSTEM_PROCESSING"),
            (429, "TOO_MANY_REQUESTS"),
        ] {
            let body = format!(r#"{{"code":"{code}","message":"m"}}"#);
            assert!(
                matches!(error(status, &body), GatewayError::Transient { .. }),
                "{status} {code}"
            );
        }
        assert_eq!(
            error(400, r#"{"code":"ALREADY_PROCESSED_PAYMENT","message":"m"}"#).code(),
            Some("ALREADY_PROCESSED_PAYMENT")
        );
    }

    #[test]
    fn anything_but_the_pgs_own_word_leaves_the_outcome_unknown() {
        for (status, body) in [
            (502, "<html>bad gateway</html>"),
            (504, ""),
            (200, "{\"paymentKey\":"),
            // A proxy's 4xx is not the PG turning the request down.
            (408, "timeout"),
            // A 5xx with an undocumented code, and a key still in flight.
            (500, r#"{"code":"UNKNOWN_PAYMENT_ERROR","message":"m"}"#),
            (
                409,
                r#"{"code":"ALREADY_PROCESSING_REQUEST","message":"m"}"#,
            ),
        ] {
            assert!(
                matches!(error(status, body), GatewayError::Unknown(_)),
                "{status} {body}"
            );
        }
    }

    #[test]
    fn path_segments_are_refused_rather_than_escaped() {
        assert!(path_segment("tgen_2026-12.x~1").is_ok());
        for bad in ["", "a/b", "a b", "a?b", "../x", "é"] {
            assert!(path_segment(bad).is_err(), "{bad}");
        }
    }
}

//! Tenant authentication, in front of every `/api/v1` route:
//!
//! 1. `Authorization: Bearer <api key>` → the tenant (`AUTH_001` if missing
//!    or unknown). Keys are compared as sha256 digests in constant time.
//! 2. The body is read, up to [`MAX_BODY_BYTES`] ([`MAX_USAGE_BODY_BYTES`]
//!    for usage batches) (`REQ_003`, 413, beyond).
//! 3. Signed tenants (every non-dev tenant) need
//!    `X-FluxPay-Timestamp: <unix seconds>` and
//!    `X-FluxPay-Signature: v1=<hex HMAC-SHA256(secret, "<ts>.<METHOD>.<path?query>.<body>")>`:
//!    a missing, malformed or wrong signature is `AUTH_002`; a correct one
//!    whose timestamp is more than [`TOLERANCE_S`] from now is `AUTH_003`
//!    (checked after the signature, so a forged request learns nothing about
//!    the clock). A dev tenant may send unsigned requests; a signature it
//!    does send is checked.
//! 4. The request continues with a [`Caller`] and its [`RawBody`] in its
//!    extensions, and every answer carries `X-Request-Id`.
//!
//! A replay inside the 300 s window of a signed request is harmless by
//! design: every POST that moves money needs an Idempotency-Key, which
//! returns the stored answer instead of a second effect.

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tracing::Instrument as _;

use crate::api::error::ApiError;
use crate::app::{App, new_id};

/// Largest request body of the tenant API.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest body of `POST /api/v1/usage`: a batch of 1,000 events with a
/// few properties each does not fit in [`MAX_BODY_BYTES`].
pub const MAX_USAGE_BODY_BYTES: usize = 1024 * 1024;
/// How far a signature timestamp may be from the server's clock.
pub const TOLERANCE_S: i64 = 300;
/// The timestamp header.
pub const TIMESTAMP_HEADER: &str = "x-fluxpay-timestamp";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-fluxpay-signature";
/// The request id header (accepted from the client, always answered).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The tenant.
    pub tenant: String,
    /// The API key's id.
    pub key_id: String,
    /// The request's id.
    pub request_id: String,
}

/// The request body as received (what was signed and fingerprinted).
#[derive(Debug, Clone)]
pub struct RawBody(pub Bytes);

/// The middleware.
pub(super) async fn authenticate(State(app): State<App>, request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| new_id("req"), str::to_owned);
    let mut response = match check(&app, request, &request_id).await {
        Ok((request, caller)) => {
            let span = tracing::info_span!(
                "api.request",
                tenant = %caller.tenant,
                key = %caller.key_id,
                request_id = %caller.request_id,
            );
            next.run(request).instrument(span).await
        }
        Err(err) => err.into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

async fn check(
    app: &App,
    request: Request,
    request_id: &str,
) -> Result<(Request, Caller), ApiError> {
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .ok_or(ApiError::MissingCredentials(
            "missing API key: send `Authorization: Bearer <api key>`",
        ))?;
    let who = app.tenants().authenticate(presented).ok_or_else(|| {
        tracing::warn!(path = %request.uri().path(), "api.auth unknown API key");
        ApiError::InvalidCredentials("unknown API key")
    })?;
    let caller = Caller {
        tenant: who.tenant.id.clone(),
        key_id: who.key_id.to_owned(),
        request_id: request_id.to_owned(),
    };

    // Hook: per-tenant rate limiting (a later issue) goes here, after the
    // tenant is known and before the body is read.

    let (parts, body) = request.into_parts();
    let limit = body_limit(parts.uri.path());
    let mut whole = Request::from_parts(parts.clone(), body);
    DefaultBodyLimit::max(limit).apply(&mut whole);
    let body = Bytes::from_request(whole, &()).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::InvalidRequest(rejection.body_text())
        }
    })?;

    let signed = parts.headers.contains_key(SIGNATURE_HEADER)
        || parts.headers.contains_key(TIMESTAMP_HEADER);
    match &who.tenant.signing {
        Some(secret) if signed || who.tenant.requires_signature() => {
            let path = parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
            verify(
                secret.expose().as_bytes(),
                &parts.headers,
                parts.method.as_str(),
                path,
                &body,
                app.now() / 1000,
            )?;
        }
        None if who.tenant.requires_signature() => {
            // The directory refuses to start without the secret; belt and braces.
            return Err(ApiError::BadSignature(
                "this tenant requires signed requests but has no signing secret".into(),
            ));
        }
        _ => {}
    }

    let mut request = Request::from_parts(parts, Body::from(body.clone()));
    request.extensions_mut().insert(caller.clone());
    request.extensions_mut().insert(RawBody(body));
    Ok((request, caller))
}

/// The body limit of a path.
fn body_limit(path: &str) -> usize {
    if path == "/api/v1/usage" {
        MAX_USAGE_BODY_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The string a request's signature covers.
pub fn signing_payload(
    timestamp: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut payload =
        Vec::with_capacity(timestamp.len() + method.len() + path_and_query.len() + body.len() + 3);
    payload.extend_from_slice(timestamp.as_bytes());
    payload.push(b'.');
    payload.extend_from_slice(method.as_bytes());
    payload.push(b'.');
    payload.extend_from_slice(path_and_query.as_bytes());
    payload.push(b'.');
    payload.extend_from_slice(body);
    payload
}

/// `v1=<hex>` for a request: what a client sends in `X-FluxPay-Signature`.
pub fn sign(
    secret: &[u8],
    timestamp: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&signing_payload(timestamp, method, path_and_query, body));
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn verify(
    secret: &[u8],
    headers: &HeaderMap,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    now_s: i64,
) -> Result<(), ApiError> {
    let timestamp = headers
        .get(TIMESTAMP_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or_else(|| ApiError::BadSignature("missing X-FluxPay-Timestamp header".into()))?;
    let seconds: i64 = timestamp
        .parse()
        .ok()
        .filter(|_| timestamp.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| ApiError::BadSignature("X-FluxPay-Timestamp must be unix seconds".into()))?;
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadSignature("missing X-FluxPay-Signature header".into()))?;
    let digest = signature
        .trim()
        .strip_prefix("v1=")
        .and_then(|hex_text| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(hex_text, &mut out).ok().map(|()| out)
        })
        .ok_or_else(|| {
            ApiError::BadSignature(
                "X-FluxPay-Signature must be v1=<64 hex digits of HMAC-SHA256>".into(),
            )
        })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&signing_payload(timestamp, method, path_and_query, body));
    // verify_slice compares in constant time.
    mac.verify_slice(&digest).map_err(|_| {
        ApiError::BadSignature(
            "the signature does not match: sign \"<timestamp>.<METHOD>.<path with query>.<raw body>\" with HMAC-SHA256".into(),
        )
    })?;
    if (now_s - seconds).abs() > TOLERANCE_S {
        return Err(ApiError::StaleTimestamp {
            tolerance_s: TOLERANCE_S,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TIMESTAMP_HEADER, HeaderValue::from_str(ts).unwrap());
        h.insert(SIGNATURE_HEADER, HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn a_correct_signature_within_the_window_verifies() {
        let sig = sign(b"k", "1000", "POST", "/api/v1/x?a=1", b"{}");
        assert!(
            verify(
                b"k",
                &headers("1000", &sig),
                "POST",
                "/api/v1/x?a=1",
                b"{}",
                1200
            )
            .is_ok()
        );
    }

    #[test]
    fn any_change_to_what_was_signed_is_a_bad_signature() {
        let sig = sign(b"k", "1000", "POST", "/api/v1/x", b"{}");
        let code = |r: Result<(), ApiError>| r.unwrap_err().code();
        let h = headers("1000", &sig);
        assert_eq!(
            code(verify(b"other", &h, "POST", "/api/v1/x", b"{}", 1000)),
            "AUTH_002"
        );
        assert_eq!(
            code(verify(b"k", &h, "PUT", "/api/v1/x", b"{}", 1000)),
            "AUTH_002"
        );
        assert_eq!(
            code(verify(b"k", &h, "POST", "/api/v1/y", b"{}", 1000)),
            "AUTH_002"
        );
        assert_eq!(
            code(verify(b"k", &h, "POST", "/api/v1/x", b"{ }", 1000)),
            "AUTH_002"
        );
        let h = headers("1001", &sig);
        assert_eq!(
            code(verify(b"k", &h, "POST", "/api/v1/x", b"{}", 1000)),
            "AUTH_002"
        );
        for bad in ["", "v1=", "v2=00", "v1=zz", &sig.to_uppercase()] {
            let h = headers("1000", bad);
            assert_eq!(
                code(verify(b"k", &h, "POST", "/api/v1/x", b"{}", 1000)),
                "AUTH_002",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_correct_signature_outside_the_window_is_stale() {
        let sig = sign(b"k", "1000", "GET", "/", b"");
        let h = headers("1000", &sig);
        assert!(verify(b"k", &h, "GET", "/", b"", 1000 + TOLERANCE_S).is_ok());
        assert_eq!(
            verify(b"k", &h, "GET", "/", b"", 1001 + TOLERANCE_S)
                .unwrap_err()
                .code(),
            "AUTH_003"
        );
        assert_eq!(
            verify(b"k", &h, "GET", "/", b"", 999 - TOLERANCE_S)
                .unwrap_err()
                .code(),
            "AUTH_003"
        );
    }

    #[test]
    fn timestamps_must_be_plain_unix_seconds() {
        for ts in ["-5", "+5", "1e3", "abc", " "] {
            let sig = sign(b"k", ts.trim(), "GET", "/", b"");
            let h = headers(ts, &sig);
            assert_eq!(
                verify(b"k", &h, "GET", "/", b"", 5).unwrap_err().code(),
                "AUTH_002",
                "{ts:?}"
            );
        }
    }
}

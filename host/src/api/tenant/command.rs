//! [`Command`]: what every write handler takes from its request — the
//! authenticated caller, the body exactly as signed (parsed on demand into
//! the handler's camelCase type), and the idempotency key with the
//! fingerprint of the request it was sent with.

use axum::extract::FromRequestParts;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method};
use serde::de::DeserializeOwned;

use super::IDEMPOTENCY_KEY_HEADER;
use super::auth::{Caller, RawBody};
use crate::api::error::ApiError;
use crate::app::RequestCtx;
use crate::app::idempotency::Idempotency;

/// Whether a request must, may or does not take an `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Key {
    /// A POST that moves money: `REQ_001` without one.
    Required,
    /// Any other POST: honoured when sent.
    Optional,
    /// Not a POST (a PUT is idempotent by itself): not looked at.
    Ignored,
}

/// A write request, taken apart by the extractor.
pub(super) struct Command {
    caller: Caller,
    body: RawBody,
    json: bool,
    key: Option<HeaderValue>,
    method: Method,
    path: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Command {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Both are set by the auth middleware in front of every tenant route.
        let missing = |what: &str| {
            ApiError::Internal(anyhow::anyhow!(
                "{what} missing: route outside the auth layer"
            ))
        };
        let caller = parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| missing("caller"))?;
        let body = parts
            .extensions
            .get::<RawBody>()
            .cloned()
            .ok_or_else(|| missing("body"))?;
        let json = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |pq| pq.as_str())
            .to_owned();
        Ok(Command {
            caller,
            body,
            json,
            key: parts.headers.get(IDEMPOTENCY_KEY_HEADER).cloned(),
            method: parts.method.clone(),
            path,
        })
    }
}

impl Command {
    /// The body as `T`: declared as JSON, one JSON value, the expected
    /// shape (the error names the field that is wrong).
    pub(super) fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if !self.json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&self.body.0);
        let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data if path != "." => {
                    ApiError::InvalidBody(format!("{path}: {inner}"))
                }
                serde_json::error::Category::Data => ApiError::InvalidBody(inner.to_string()),
                _ => ApiError::MalformedJson(inner.to_string()),
            }
        })?;
        deserializer
            .end()
            .map_err(|err| ApiError::MalformedJson(err.to_string()))?;
        Ok(value)
    }

    /// The body as `T`, or `T::default()` when there is none (a POST whose
    /// fields are all optional).
    pub(super) fn json_or_default<T: DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        if self.body.0.is_empty() {
            Ok(T::default())
        } else {
            self.json()
        }
    }

    /// Who asks, on which request, with which idempotency key.
    pub(super) fn ctx(&self, key: Key) -> Result<RequestCtx, ApiError> {
        let idempotency = match (key, &self.key) {
            (Key::Ignored, _) | (Key::Optional, None) => None,
            (Key::Required, None) => {
                return Err(ApiError::InvalidRequest(
                    "this request moves money: send an Idempotency-Key header (e.g. a UUID) and reuse it when you retry".into(),
                ));
            }
            (_, Some(value)) => {
                let key = value.to_str().map_err(|_| {
                    ApiError::InvalidRequest("Idempotency-Key must be visible ASCII".into())
                })?;
                Some(Idempotency::new(
                    key,
                    self.method.as_str(),
                    &self.path,
                    &self.body.0,
                )?)
            }
        };
        Ok(RequestCtx {
            tenant: self.caller.tenant.clone(),
            actor: format!("api_key:{}", self.caller.key_id),
            request_id: self.caller.request_id.clone(),
            idempotency,
        })
    }
}

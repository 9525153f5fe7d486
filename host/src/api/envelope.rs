//! The response envelope every FluxPay endpoint answers in:
//! `{"isSuccess": bool, "code": "OK" | <ERROR_CODE>, "message": string, "result": object|null}`.
//!
//! Success goes through [`ApiOk`], failure through [`super::error::ApiError`];
//! both serialise the same [`Envelope`], so a client parses one shape.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The code of every successful answer.
pub const OK: &str = "OK";

/// The JSON body of every response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    /// `true` exactly when `code` is `OK`.
    pub is_success: bool,
    /// `OK`, or a stable error code such as `CFG_001`.
    pub code: &'static str,
    /// A sentence for humans; never parsed by clients.
    pub message: String,
    /// The payload; `null` when there is none.
    pub result: Option<T>,
}

/// A successful answer: status (200 unless set), message and result.
#[derive(Debug)]
pub struct ApiOk<T> {
    status: StatusCode,
    message: String,
    result: T,
}

impl<T: Serialize> ApiOk<T> {
    /// 200 with `result`.
    pub fn new(message: impl Into<String>, result: T) -> Self {
        ApiOk {
            status: StatusCode::OK,
            message: message.into(),
            result,
        }
    }

    /// Another 2xx status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
}

impl<T: Serialize> IntoResponse for ApiOk<T> {
    fn into_response(self) -> Response {
        let body = Envelope {
            is_success: true,
            code: OK,
            message: self.message,
            result: Some(self.result),
        };
        (self.status, Json(body)).into_response()
    }
}

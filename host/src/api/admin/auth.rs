//! Admin authentication: a bearer token from `FLUXPAY_ADMIN_TOKEN`, compared
//! in constant time. Without a token the admin API serves nothing (503), so
//! a forgotten variable never leaves it open.

use std::fmt;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::error::ApiError;
use crate::config::Secret;

/// The environment variable holding the admin token.
pub const ADMIN_TOKEN_ENV: &str = "FLUXPAY_ADMIN_TOKEN";

/// The admin token, kept only as its sha256: comparing equal-length digests
/// in constant time leaks neither the token nor its length.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// A token with this value.
    pub fn new(secret: &Secret) -> Self {
        AdminToken {
            digest: Sha256::digest(secret.expose().as_bytes()).into(),
        }
    }

    /// The token from [`ADMIN_TOKEN_ENV`]; `None` when unset or empty.
    pub fn from_env() -> Option<Self> {
        Secret::from_env(ADMIN_TOKEN_ENV).map(|s| AdminToken::new(&s))
    }

    /// Whether `presented` is the token.
    pub fn verify(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.digest).into()
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// Middleware: let the request through only with the right bearer token.
pub(super) async fn require_admin(
    State(token): State<Option<AdminToken>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return ApiError::AdminDisabled.into_response();
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    match presented {
        None => ApiError::MissingCredentials(
            "missing bearer token: send `Authorization: Bearer <FLUXPAY_ADMIN_TOKEN>`",
        )
        .into_response(),
        Some(presented) if token.verify(presented) => next.run(request).await,
        Some(_) => {
            tracing::warn!(path = %request.uri().path(), "admin.auth invalid token");
            ApiError::InvalidCredentials("invalid bearer token").into_response()
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_verifies() {
        let token = AdminToken::new(&Secret::new("s3cret-token"));
        assert!(token.verify("s3cret-token"));
        assert!(!token.verify("s3cret-toke"));
        assert!(!token.verify("s3cret-token "));
        assert!(!token.verify(""));
        assert_eq!(format!("{token:?}"), "AdminToken(***)");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_requires_a_token() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }
}

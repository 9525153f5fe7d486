//! A tenant's API settings: keys, request signing, default currency and
//! subscription payment.
//!
//! ```yaml
//! tenants:
//!   acme:
//!     currency: USD
//!     api_keys:
//!       - { id: acme-live-1, sha256: <hex sha256 of the key> }
//!     signing: { secret_env: ACME_SIGNING_SECRET }
//!     subscriptions: { pay_from_credits: true, credits_per_major_unit: 100 }
//!   globex:
//!     subscriptions: { charge_card: true, dunning_days: [1, 3, 5] }  # needs gateway:
//!   sandbox:
//!     dev: true          # unsigned requests allowed
//!     api_keys: [{ id: sandbox-1, sha256: … }]
//! ```
//!
//! The file holds only the sha256 of each key, and the *name* of the
//! environment variable holding the signing secret: no secret is ever in the
//! file. The secret is read when the service starts
//! ([`SigningConfig::resolve`]), not when the file is parsed, so a policy
//! reload never depends on the environment.
//!
//! These settings are read at start-up only: a reload applies policy
//! changes, and API key or signing changes need a restart (documented in
//! examples/tenants.yaml).

use crate::domain::Currency;

use super::Secret;

/// One tenant's API settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenantApiConfig {
    /// Development tenant: requests need no signature (a signature that is
    /// sent is still checked).
    pub dev: bool,
    /// The tenant's default currency, if set.
    pub currency: Option<Currency>,
    /// Keys that authenticate as this tenant.
    pub api_keys: Vec<ApiKeyConfig>,
    /// Request signing; required for non-dev tenants that have keys.
    pub signing: Option<SigningConfig>,
    /// How subscription renewals are paid.
    pub subscriptions: SubscriptionsConfig,
    /// Its payment gateway, if it takes payments.
    pub gateway: Option<super::GatewayConfig>,
    /// `events: { order: strict | available }`: whether an event the relay
    /// dead-letters holds back its customer's later events until an
    /// operator replays or skips it (strict, the default: `false`) or lets
    /// them pass (`available`: `true`).
    pub events_pass_dead: bool,
    /// `events: { webhook: … }`: where its events are POSTed, if anywhere.
    pub webhook: Option<super::WebhookConfig>,
}

/// An API key, kept as the sha256 of its value.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    /// Names the key in logs and history rows (`actor`), never the key itself.
    pub id: String,
    /// sha256 of the key.
    pub sha256: [u8; 32],
}

impl std::fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("id", &self.id)
            .field("sha256", &"…")
            .finish()
    }
}

/// Where the signing secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningConfig {
    /// The environment variable holding the HMAC secret.
    pub secret_env: String,
}

impl SigningConfig {
    /// The secret, read through `env` (the process environment in
    /// production, a map in tests).
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret, String> {
        match env(&self.secret_env) {
            Some(value) if !value.is_empty() => Ok(Secret::new(value)),
            _ => Err(format!(
                "environment variable {} is not set (it holds the tenant's signing secret)",
                self.secret_env
            )),
        }
    }
}

/// `subscriptions:` of a tenant (used by the renewal scheduler).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscriptionsConfig {
    /// Renewals are paid from the customer's credits when true; otherwise a
    /// PENDING order is left for the payment step.
    pub pay_from_credits: bool,
    /// Credits per major unit of the plan's currency (100 → 1 USD costs 100
    /// credits): policies quote subscriptions in money, so paying them in
    /// credits needs a rate. Required (and > 0) when `pay_from_credits`.
    pub credits_per_major_unit: Option<i64>,
    /// Renewal orders are charged to the customer's stored card (billing
    /// key) through the tenant's gateway; needs `gateway:` and not
    /// `pay_from_credits`.
    pub charge_card: bool,
    /// After a failed renewal charge (the subscription `PAST_DUE`), the
    /// charge is tried again this many days after the failure, in turn;
    /// when the last one fails too the subscription is cancelled.
    pub dunning_days: Vec<u32>,
}

/// Default `dunning_days`: 1, 3 and 5 days after a failed renewal charge.
pub const DEFAULT_DUNNING_DAYS: [u32; 3] = [1, 3, 5];

/// Whether `name` is a plausible environment variable name.
pub(super) fn valid_env_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// 64 hex digits → 32 bytes.
pub(super) fn parse_sha256(hex_text: &str) -> Option<[u8; 32]> {
    let text = hex_text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

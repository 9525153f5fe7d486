//! Helpers for native unit tests of a policy (`cargo test`, no host needed).
//!
//! ```
//! use fluxpay_policy_sdk::testing;
//! use serde_json::json;
//!
//! let ctx = testing::context()
//!     .customer("cus_1")
//!     .attribute("tier", "gold")
//!     .config_json(json!({ "rate": 5 }))
//!     .build();
//! assert_eq!(ctx.attribute("tier"), Some("gold"));
//! assert_eq!(ctx.config, r#"{"rate":5}"#);
//! ```
//!
//! [`price`] and [`validate`] call a policy function the way the component
//! does, parsing `ctx.config` first, so a test also covers the config format.

use serde::Serialize;

use crate::export::{self, PolicyConfig, PricingFn, ValidationFn};
use crate::{Context, PolicyError, PricingRequest, Quote, ValidationSubject, Violation};

/// The instant [`context`] uses unless told otherwise: 2024-01-01T00:00:00Z.
pub const DEFAULT_NOW_MS: i64 = 1_704_067_200_000;

/// A [`ContextBuilder`] with tenant `"tenant-test"`, customer
/// `"customer-test"`, no attributes, `now` at [`DEFAULT_NOW_MS`] and config `{}`.
pub fn context() -> ContextBuilder {
    ContextBuilder {
        context: Context {
            tenant_id: "tenant-test".to_string(),
            config: "{}".to_string(),
            customer_id: "customer-test".to_string(),
            customer_attributes: Vec::new(),
            now_ms: DEFAULT_NOW_MS,
        },
    }
}

/// Builds a [`Context`] for a test; start from [`context`].
#[derive(Debug, Clone)]
pub struct ContextBuilder {
    context: Context,
}

impl ContextBuilder {
    /// Sets the tenant id.
    pub fn tenant(mut self, tenant_id: impl Into<String>) -> Self {
        self.context.tenant_id = tenant_id.into();
        self
    }

    /// Sets the customer id.
    pub fn customer(mut self, customer_id: impl Into<String>) -> Self {
        self.context.customer_id = customer_id.into();
        self
    }

    /// Appends a customer attribute (appending the same key again adds a
    /// second occurrence, which policies ignore, as in production).
    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context
            .customer_attributes
            .push((key.into(), value.into()));
        self
    }

    /// Sets the request instant, in epoch milliseconds.
    pub fn now_ms(mut self, now_ms: i64) -> Self {
        self.context.now_ms = now_ms;
        self
    }

    /// Sets the config from a JSON value, as the host would pass the YAML
    /// `config:` block.
    pub fn config_json(mut self, config: serde_json::Value) -> Self {
        self.context.config = config.to_string();
        self
    }

    /// Sets the config by serialising `config` (e.g. your config type, if it
    /// also derives `Serialize`).
    ///
    /// # Panics
    /// If `config` cannot be serialised to JSON (a map with non-string keys).
    pub fn config<T: Serialize>(mut self, config: &T) -> Self {
        self.context.config = serde_json::to_string(config).expect("config serialises to JSON");
        self
    }

    /// Sets the config JSON text verbatim (to test a malformed config).
    pub fn config_text(mut self, config: impl Into<String>) -> Self {
        self.context.config = config.into();
        self
    }

    /// The context.
    pub fn build(self) -> Context {
        self.context
    }
}

impl From<ContextBuilder> for Context {
    fn from(builder: ContextBuilder) -> Self {
        builder.build()
    }
}

/// Calls a `#[pricing]` function as the component's `price` export does: an
/// unparsable `ctx.config` is `PolicyError::InvalidConfig`.
pub fn price<C: PolicyConfig, M, F: PricingFn<C, M>>(
    function: F,
    ctx: &Context,
    request: PricingRequest,
) -> Result<Quote, PolicyError> {
    export::run_pricing(function, ctx.clone(), request)
}

/// Calls a `#[validation]` function as the component's `validate` export
/// does: an unparsable `ctx.config` is `PolicyError::InvalidConfig`.
pub fn validate<C: PolicyConfig, M, F: ValidationFn<C, M>>(
    function: F,
    ctx: &Context,
    subject: ValidationSubject,
) -> Result<Vec<Violation>, PolicyError> {
    export::run_validation(function, ctx.clone(), subject)
}

/// What the component's `check-config` export answers for a `#[pricing]`
/// function and the JSON `config`.
pub fn check_pricing_config<C: PolicyConfig, M, F: PricingFn<C, M>>(
    function: F,
    config: &str,
) -> Result<(), String> {
    export::check_pricing_config(function, config)
}

/// What the component's `check-config` export answers for a `#[validation]`
/// function and the JSON `config`.
pub fn check_validation_config<C: PolicyConfig, M, F: ValidationFn<C, M>>(
    function: F,
    config: &str,
) -> Result<(), String> {
    export::check_validation_config(function, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Amount, CreditUsage};

    #[derive(serde::Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        per_unit: i64,
    }

    fn price_fn(
        _ctx: &Context,
        config: &Config,
        request: PricingRequest,
    ) -> Result<Quote, PolicyError> {
        let PricingRequest::CreditUsage(usage) = request else {
            return Err(PolicyError::unsupported("credit-usage"));
        };
        let total = crate::Credits(config.per_unit).checked_mul(usage.units)?;
        Ok(Quote {
            total: total.into(),
            line_items: vec![],
            metadata: vec![],
            subscription: None,
        })
    }

    fn usage(units: i64) -> PricingRequest {
        PricingRequest::CreditUsage(CreditUsage {
            feature: "f".into(),
            units,
            metadata: vec![],
        })
    }

    #[test]
    fn price_parses_the_config_then_calls_the_function() {
        let ctx = context().config(&Config { per_unit: 3 }).build();
        let quote = price(price_fn, &ctx, usage(4)).unwrap();
        assert_eq!(quote.total, Amount::credits(12));
    }

    #[test]
    fn a_bad_config_is_invalid_config_naming_the_field() {
        let ctx = context().config_text(r#"{"per_unit":"x"}"#).build();
        match price(price_fn, &ctx, usage(1)) {
            Err(PolicyError::InvalidConfig(message)) => {
                assert!(message.starts_with("per_unit:"), "{message}")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(check_pricing_config(price_fn, "{}").is_err());
        assert!(check_pricing_config(price_fn, r#"{"per_unit":1}"#).is_ok());
    }

    #[test]
    fn the_builder_sets_every_field() {
        let ctx = context()
            .tenant("t")
            .customer("c")
            .attribute("tier", "gold")
            .now_ms(5)
            .build();
        assert_eq!(ctx.tenant_id, "t");
        assert_eq!(ctx.customer_id, "c");
        assert_eq!(ctx.attribute("tier"), Some("gold"));
        assert_eq!(ctx.now_ms, 5);
        assert_eq!(ctx.config, "{}");
    }
}

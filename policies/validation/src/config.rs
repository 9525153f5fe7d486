//! The `config:` block, validated once by `check-config`. Every rule is off
//! unless configured, so `config: {}` accepts everything.

use std::collections::{BTreeMap, BTreeSet};

use fluxpay_policy_sdk::money::check_currency;
use serde::Deserialize;

/// The validated config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct Config {
    /// The customer attribute that selects a tier limit.
    pub tier_attribute: String,
    /// Currencies orders and payments may use; `None` allows any.
    pub allowed_currencies: Option<BTreeSet<String>>,
    /// Largest order total by currency, per tier.
    pub max_order_amount: BTreeMap<String, TierLimit>,
    /// Metadata keys that must be present with a non-empty value.
    pub required_metadata: RequiredMetadata,
    /// Most credits a customer may spend per UTC day, per tier.
    pub daily_credit_cap: Option<TierLimit>,
    /// Checks on usage batches.
    pub usage: UsageRules,
    /// Payment methods allowed; `None` allows any.
    pub allowed_payment_methods: Option<BTreeSet<String>>,
}

/// A limit that depends on the customer's tier.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierLimit {
    /// The limit for customers without a tier or with an unlisted one; no
    /// limit when absent.
    #[serde(default)]
    pub default: Option<i64>,
    /// Limits by tier value.
    #[serde(default)]
    pub by_tier: BTreeMap<String, i64>,
}

impl TierLimit {
    /// The limit for `tier`, if any.
    pub fn for_tier(&self, tier: Option<&str>) -> Option<i64> {
        tier.and_then(|tier| self.by_tier.get(tier).copied())
            .or(self.default)
    }

    fn check(&self, at: &str) -> Result<(), String> {
        if self.default.is_some_and(|limit| limit < 0) {
            return Err(format!("{at}.default: must not be negative"));
        }
        match self.by_tier.iter().find(|(_, limit)| **limit < 0) {
            Some((tier, _)) => Err(format!("{at}.by_tier.{tier}: must not be negative")),
            None => Ok(()),
        }
    }
}

/// Required metadata keys per subject kind.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequiredMetadata {
    /// Keys every order must carry.
    #[serde(default)]
    pub order: Vec<String>,
    /// Keys every credit use must carry.
    #[serde(default)]
    pub credit_use: Vec<String>,
    /// Keys every payment must carry.
    #[serde(default)]
    pub payment: Vec<String>,
}

/// Checks on usage batches.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRules {
    /// The metrics events may report; `None` allows any.
    #[serde(default)]
    pub known_metrics: Option<BTreeSet<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_tier_attribute")]
    tier_attribute: String,
    #[serde(default)]
    allowed_currencies: Option<BTreeSet<String>>,
    #[serde(default)]
    max_order_amount: BTreeMap<String, TierLimit>,
    #[serde(default)]
    required_metadata: RequiredMetadata,
    #[serde(default)]
    daily_credit_cap: Option<TierLimit>,
    #[serde(default)]
    usage: UsageRules,
    #[serde(default)]
    allowed_payment_methods: Option<BTreeSet<String>>,
}

fn default_tier_attribute() -> String {
    "tier".to_string()
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, String> {
        for code in raw.allowed_currencies.iter().flatten() {
            check_currency(code).map_err(|e| format!("allowed_currencies: {e}"))?;
        }
        for (currency, limit) in &raw.max_order_amount {
            check_currency(currency).map_err(|e| format!("max_order_amount: {e}"))?;
            limit.check(&format!("max_order_amount.{currency}"))?;
        }
        if let Some(cap) = &raw.daily_credit_cap {
            cap.check("daily_credit_cap")?;
        }
        Ok(Config {
            tier_attribute: raw.tier_attribute,
            allowed_currencies: raw.allowed_currencies,
            max_order_amount: raw.max_order_amount,
            required_metadata: raw.required_metadata,
            daily_credit_cap: raw.daily_credit_cap,
            usage: raw.usage,
            allowed_payment_methods: raw.allowed_payment_methods,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxpay_policy_sdk::config::parse;

    #[test]
    fn an_empty_config_turns_every_rule_off() {
        let config: Config = parse("{}").unwrap();
        assert_eq!(config.tier_attribute, "tier");
        assert_eq!(config.allowed_currencies, None);
        assert!(config.max_order_amount.is_empty());
        assert_eq!(config.daily_credit_cap, None);
    }

    #[test]
    fn a_tier_limit_falls_back_to_the_default() {
        let limit = TierLimit {
            default: Some(10),
            by_tier: [("gold".to_string(), 100)].into(),
        };
        assert_eq!(limit.for_tier(Some("gold")), Some(100));
        assert_eq!(limit.for_tier(Some("silver")), Some(10));
        assert_eq!(limit.for_tier(None), Some(10));
        assert_eq!(TierLimit::default().for_tier(Some("gold")), None);
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let cases = [
            (r#"{"allowed_currencies":["usd"]}"#, "allowed_currencies:"),
            (
                r#"{"max_order_amount":{"US":{"default":1}}}"#,
                "max_order_amount:",
            ),
            (
                r#"{"max_order_amount":{"USD":{"default":-1}}}"#,
                "max_order_amount.USD.default",
            ),
            (
                r#"{"daily_credit_cap":{"by_tier":{"gold":-1}}}"#,
                "daily_credit_cap.by_tier.gold",
            ),
            (
                r#"{"required_metadata":{"orders":[]}}"#,
                "unknown field `orders`",
            ),
            (
                r#"{"usage":{"known_metrics":"api"}}"#,
                "usage.known_metrics",
            ),
            (r#"{"max_order":{}}"#, "unknown field `max_order`"),
        ];
        for (config, expected) in cases {
            let err = parse::<Config>(config).unwrap_err();
            assert!(err.contains(expected), "{config}: {err}");
        }
    }
}

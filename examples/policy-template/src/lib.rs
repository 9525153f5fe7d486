//! My first FluxPay policy: a flat credit price per feature.
//!
//! "Customer used `units` of `feature`: how many credits does it cost?"
//! Each feature has a price in credits per unit (from the tenant's config),
//! and every use costs at least `minimum` credits.
//!
//! Start here: change `Config` to the knobs your tenant needs, change
//! `price` to your rule, and keep the tests at the bottom passing. The
//! walkthrough in README.md takes it from here to a running module.

use std::collections::BTreeMap;

// The prelude brings the contract's types (`Context`, `PricingRequest`,
// `Quote`, …), the `#[pricing]` macro, checked money/credit helpers, `log`
// and `testing`.
use fluxpay_policy_sdk::prelude::*;
use serde::Deserialize;

/// The `config:` block of the tenant's binding (see `config.yaml`).
///
/// The host hands it to the policy as JSON. The SDK parses it into this type
/// when the binding loads (the `check-config` export: a bad config is
/// refused before it serves) and again on every call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
// `try_from`: serde parses `RawConfig`, then our checks below run. Their
// error message is what `check-config` reports to the operator.
#[serde(try_from = "RawConfig")]
pub struct Config {
    /// Credits per unit, by feature name.
    pub features: BTreeMap<String, i64>,
    /// The least one use costs, in credits.
    pub minimum: i64,
}

/// The config exactly as written in YAML.
#[derive(Debug, Deserialize)]
// A misspelt key (`minimun:`) is an error instead of being silently ignored.
#[serde(deny_unknown_fields)]
struct RawConfig {
    features: BTreeMap<String, i64>,
    // Optional in YAML; 0 when absent.
    #[serde(default)]
    minimum: i64,
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    /// Rules serde cannot express. Name the field in the message.
    fn try_from(raw: RawConfig) -> Result<Self, String> {
        if let Some((feature, _)) = raw.features.iter().find(|(_, price)| **price < 0) {
            return Err(format!("features.{feature}: must not be negative"));
        }
        if raw.minimum < 0 {
            return Err("minimum: must not be negative".into());
        }
        Ok(Config {
            features: raw.features,
            minimum: raw.minimum,
        })
    }
}

/// The policy. `#[pricing]` exports it as the component's
/// `fluxpay:policy/pricer` (only when compiled to Wasm); natively it stays a
/// plain function your tests call.
///
/// The signature is fixed: a context, your config, the request; a quote or
/// a `PolicyError`. A wrong signature is a compile error that says so.
#[pricing]
pub fn price(
    ctx: &Context,
    config: &Config,
    request: PricingRequest,
) -> Result<Quote, PolicyError> {
    // 1. Answer only the request kinds this policy is for. A tenant binds it
    //    as its `credit` pricing policy, so credit-usage is all it sees, but
    //    say clearly what it handles if it is ever bound elsewhere.
    let PricingRequest::CreditUsage(usage) = request else {
        return Err(PolicyError::unsupported(
            "my-policy prices credit-usage requests only",
        ));
    };

    // 2. Refuse what the rules do not cover, with a stable code the caller
    //    can act on and a sentence a person can read.
    let Some(&per_unit) = config.features.get(&usage.feature) else {
        return Err(PolicyError::rejected(
            "unknown-feature",
            format!("no price is configured for feature `{}`", usage.feature),
        ));
    };
    if usage.units < 1 {
        return Err(PolicyError::rejected(
            "invalid-units",
            format!("units must be at least 1, got {}", usage.units),
        ));
    }

    // 3. Compute with checked arithmetic: `Credits` is its own unit (it cannot
    //    be added to money by mistake) and an overflow is an error
    //    (`amount-overflow`, via `?`), never a wrapped number.
    let cost = Credits(per_unit).checked_mul(usage.units)?;
    let total = cost.max(Credits(config.minimum));

    // 4. Explain the total with line items; `Quote::from_line_items` adds
    //    them up (checked), so the lines always match the total.
    let mut lines = vec![LineItem::new(
        format!("feature:{}", usage.feature),
        format!("{} × {} at {per_unit} credits", usage.units, usage.feature),
        usage.units,
        cost,
    )];
    if total > cost {
        lines.push(LineItem::new(
            "minimum-charge",
            format!("minimum charge of {} credits per use", config.minimum),
            1,
            total.checked_sub(cost)?,
        ));
    }

    // 5. Logs go to the host's log, tagged with tenant, policy and request
    //    (to stderr in native tests). Keep them short: the host caps them.
    log::debug(format!(
        "{} pays {} credits for {}",
        ctx.customer_id, total.0, usage.feature
    ));

    Ok(Quote::from_line_items(Amount::credits(0), lines)?)
}

// Native unit tests: `cargo test -p my-policy`. No host, no Wasm.
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A context carrying the same config as `config.yaml`.
    fn ctx() -> Context {
        testing::context()
            .customer("cust-1")
            .config_json(json!({
                "features": { "image-render": 5, "pdf-export": 2 },
                "minimum": 4
            }))
            .build()
    }

    fn usage(feature: &str, units: i64) -> PricingRequest {
        PricingRequest::CreditUsage(CreditUsage {
            feature: feature.into(),
            units,
            metadata: vec![],
        })
    }

    #[test]
    fn a_use_costs_the_feature_price_times_the_units() {
        // `testing::price` calls `price` as the component would: it parses
        // the context's config first, so the config format is tested too.
        let quote = testing::price(price, &ctx(), usage("image-render", 3)).unwrap();
        assert_eq!(quote.total, Amount::credits(15));
        assert_eq!(quote.line_items.len(), 1);
        assert_eq!(quote.line_items[0].code, "feature:image-render");
        assert_eq!(
            quote.line_items[0].description,
            "3 × image-render at 5 credits"
        );
    }

    #[test]
    fn a_small_use_is_topped_up_to_the_minimum() {
        let quote = testing::price(price, &ctx(), usage("pdf-export", 1)).unwrap();
        assert_eq!(quote.total, Amount::credits(4));
        assert_eq!(quote.line_items[1].code, "minimum-charge");
        assert_eq!(quote.line_items[1].amount, Amount::credits(2));
    }

    #[test]
    fn an_unknown_feature_is_rejected() {
        let err = testing::price(price, &ctx(), usage("video", 1)).unwrap_err();
        assert_eq!(err.rejection_code(), Some("unknown-feature"));
    }

    #[test]
    fn zero_units_are_rejected() {
        let err = testing::price(price, &ctx(), usage("image-render", 0)).unwrap_err();
        assert_eq!(err.rejection_code(), Some("invalid-units"));
    }

    #[test]
    fn an_overflowing_cost_is_rejected_not_wrapped() {
        let err = testing::price(price, &ctx(), usage("image-render", i64::MAX)).unwrap_err();
        assert_eq!(err.rejection_code(), Some("amount-overflow"));
    }

    #[test]
    fn other_request_kinds_are_unsupported() {
        let request = PricingRequest::Order(OrderRequest {
            currency: "USD".into(),
            items: vec![],
            metadata: vec![],
        });
        let err = testing::price(price, &ctx(), request).unwrap_err();
        assert!(matches!(err, PolicyError::Unsupported(_)));
    }

    #[test]
    fn check_config_refuses_a_negative_price_naming_the_field() {
        // What the host's load (and `fluxpay-host policy run`) reports.
        let err = testing::check_pricing_config(price, r#"{"features":{"x":-1}}"#).unwrap_err();
        assert!(err.contains("features.x: must not be negative"), "{err}");
        let err = testing::check_pricing_config(price, r#"{"feature":{}}"#).unwrap_err();
        assert!(err.contains("unknown field `feature`"), "{err}");
    }

    #[test]
    fn the_sample_config_and_input_work_together() {
        // Keeps config.yaml and input.json (used by the walkthrough) honest.
        let config: serde_json::Value =
            serde_yaml::from_str(include_str!("../config.yaml")).unwrap();
        let input: serde_json::Value = serde_json::from_str(include_str!("../input.json")).unwrap();
        let request: PricingRequest = serde_json::from_value(input["request"].clone()).unwrap();
        let ctx = testing::context().config_json(config).build();
        let quote = testing::price(price, &ctx, request).unwrap();
        assert_eq!(quote.total, Amount::credits(15));
    }
}

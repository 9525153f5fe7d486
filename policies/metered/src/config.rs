//! The `config:` block, validated once by `check-config`: tiers ascending and
//! open-ended, no negative prices, a positive package size.

use std::collections::BTreeMap;

use fluxpay_policy_sdk::money::check_currency;
use serde::Deserialize;

/// The validated config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct Config {
    /// The currency of every price and of the quote.
    pub currency: String,
    /// What to do with usage of a metric that is not configured.
    pub unknown_metrics: UnknownMetrics,
    /// Pricing by metric name.
    pub metrics: BTreeMap<String, Metric>,
}

/// What to do with usage of a metric that has no pricing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownMetrics {
    /// Refuse the whole request with `unknown-metric` (the default: a metric
    /// nobody priced is more likely a mistake than free usage).
    #[default]
    Reject,
    /// Leave it out of the quote (it is listed in the `ignored_metrics`
    /// metadata).
    Ignore,
}

/// How one metric is priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// Units that are free, deducted before any pricing.
    pub free: i64,
    /// The pricing model.
    pub model: Model,
}

/// A pricing model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Model {
    /// Each tier's units at that tier's price.
    Graduated(Vec<Tier>),
    /// All units at the price of the tier the quantity falls in.
    Volume(Vec<Tier>),
    /// A price per started package of `size` units.
    Package(Package),
}

/// One tier. Bounds count billable units (after the free allowance).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// The last unit (inclusive) this tier covers; `None` on the last tier.
    #[serde(default)]
    pub up_to: Option<i64>,
    /// Minor units per `per` units.
    pub price: i64,
    /// How many units `price` is for (default 1), for sub-minor-unit prices:
    /// `price: 5, per: 1000` is 0.005 minor units per unit.
    #[serde(default = "one")]
    pub per: i64,
}

/// Package pricing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// Units per package, ≥ 1.
    pub size: i64,
    /// Minor units per package.
    pub price: i64,
}

fn one() -> i64 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    currency: String,
    #[serde(default)]
    unknown_metrics: UnknownMetrics,
    metrics: BTreeMap<String, RawMetric>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    #[serde(default)]
    free: i64,
    #[serde(default)]
    graduated: Option<Vec<Tier>>,
    #[serde(default)]
    volume: Option<Vec<Tier>>,
    #[serde(default)]
    package: Option<Package>,
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, String> {
        check_currency(&raw.currency).map_err(|e| format!("currency: {e}"))?;
        let mut metrics = BTreeMap::new();
        for (name, metric) in raw.metrics {
            let metric = metric_from(metric).map_err(|e| format!("metrics.{name}.{e}"))?;
            metrics.insert(name, metric);
        }
        Ok(Config {
            currency: raw.currency,
            unknown_metrics: raw.unknown_metrics,
            metrics,
        })
    }
}

fn metric_from(raw: RawMetric) -> Result<Metric, String> {
    if raw.free < 0 {
        return Err("free: must not be negative".into());
    }
    let model = match (raw.graduated, raw.volume, raw.package) {
        (Some(tiers), None, None) => Model::Graduated(checked_tiers(tiers, "graduated")?),
        (None, Some(tiers), None) => Model::Volume(checked_tiers(tiers, "volume")?),
        (None, None, Some(package)) => {
            if package.size < 1 {
                return Err("package.size: must be at least 1".into());
            }
            if package.price < 0 {
                return Err("package.price: must not be negative".into());
            }
            Model::Package(package)
        }
        _ => return Err("model: set exactly one of `graduated`, `volume` or `package`".into()),
    };
    Ok(Metric {
        free: raw.free,
        model,
    })
}

fn checked_tiers(tiers: Vec<Tier>, model: &str) -> Result<Vec<Tier>, String> {
    if tiers.is_empty() {
        return Err(format!("{model}: needs at least one tier"));
    }
    let last = tiers.len() - 1;
    let mut previous = 0;
    for (index, tier) in tiers.iter().enumerate() {
        let at = format!("{model}[{index}]");
        if tier.price < 0 {
            return Err(format!("{at}.price: must not be negative"));
        }
        if tier.per < 1 {
            return Err(format!("{at}.per: must be at least 1"));
        }
        match (tier.up_to, index == last) {
            (Some(_), true) => {
                return Err(format!(
                    "{at}.up_to: the last tier must be open-ended (no up_to)"
                ));
            }
            (None, false) => return Err(format!("{at}.up_to: only the last tier may omit it")),
            (Some(up_to), false) if up_to <= previous => {
                return Err(format!(
                    "{at}.up_to: must be greater than the previous tier's ({previous})"
                ));
            }
            (Some(up_to), false) => previous = up_to,
            (None, true) => {}
        }
    }
    Ok(tiers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxpay_policy_sdk::config::parse;

    fn error_for(metric: &str) -> String {
        parse::<Config>(&format!(
            r#"{{"currency":"USD","metrics":{{"m":{metric}}}}}"#
        ))
        .unwrap_err()
    }

    #[test]
    fn a_valid_config_parses_with_defaults() {
        let config: Config = parse(
            r#"{"currency":"USD","metrics":{"m":{"graduated":[{"up_to":10,"price":1},{"price":0}]}}}"#,
        )
        .unwrap();
        assert_eq!(config.unknown_metrics, UnknownMetrics::Reject);
        assert_eq!(config.metrics["m"].free, 0);
        let Model::Graduated(tiers) = &config.metrics["m"].model else {
            panic!("graduated expected");
        };
        assert_eq!(tiers[0].per, 1);
    }

    #[test]
    fn tier_mistakes_are_refused_naming_the_tier() {
        let cases = [
            (
                r#"{"graduated":[]}"#,
                "metrics.m.graduated: needs at least one tier",
            ),
            (
                r#"{"volume":[{"up_to":5,"price":1}]}"#,
                "metrics.m.volume[0].up_to: the last tier",
            ),
            (
                r#"{"volume":[{"price":1},{"price":2}]}"#,
                "metrics.m.volume[0].up_to: only the last",
            ),
            (
                r#"{"graduated":[{"up_to":5,"price":1},{"up_to":5,"price":1},{"price":1}]}"#,
                "metrics.m.graduated[1].up_to: must be greater",
            ),
            (
                r#"{"graduated":[{"up_to":0,"price":1},{"price":1}]}"#,
                "graduated[0].up_to",
            ),
            (
                r#"{"graduated":[{"price":-1}]}"#,
                "metrics.m.graduated[0].price",
            ),
            (
                r#"{"graduated":[{"price":1,"per":0}]}"#,
                "metrics.m.graduated[0].per",
            ),
            (
                r#"{"package":{"size":0,"price":1}}"#,
                "metrics.m.package.size",
            ),
            (
                r#"{"package":{"size":1,"price":-1}}"#,
                "metrics.m.package.price",
            ),
            (
                r#"{"free":-1,"package":{"size":1,"price":1}}"#,
                "metrics.m.free",
            ),
            (r#"{}"#, "metrics.m.model: set exactly one"),
            (
                r#"{"package":{"size":1,"price":1},"volume":[{"price":1}]}"#,
                "exactly one",
            ),
            (r#"{"tiers":[]}"#, "unknown field `tiers`"),
        ];
        for (metric, expected) in cases {
            let err = error_for(metric);
            assert!(err.contains(expected), "{metric}: {err}");
        }
    }

    #[test]
    fn the_currency_and_policy_for_unknown_metrics_are_checked() {
        let err = parse::<Config>(r#"{"currency":"usd","metrics":{}}"#).unwrap_err();
        assert!(err.contains("currency:"), "{err}");
        let err = parse::<Config>(r#"{"currency":"USD","metrics":{},"unknown_metrics":"drop"}"#)
            .unwrap_err();
        assert!(err.contains("unknown_metrics"), "{err}");
    }
}

//! The `config:` block, validated once: `check-config` refuses anything
//! `Config::try_from` refuses, so pricing never sees a negative cost.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Per-mille factor meaning "×1": `multipliers` are written in thousandths.
pub const PER_MILLE: i64 = 1000;

/// The validated config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct Config {
    /// Cost per feature.
    pub features: BTreeMap<String, Feature>,
    /// The customer attribute that selects a multiplier.
    pub multiplier_attribute: String,
    /// Multiplier (per mille) by attribute value.
    pub multipliers: BTreeMap<String, i64>,
    /// Multiplier (per mille) when the attribute is missing or not listed.
    pub default_multiplier: i64,
}

/// What one feature costs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// Credits per unit used.
    pub credits_per_unit: i64,
    /// The least one use costs, after the multiplier; falls back to the
    /// top-level `minimum_per_use`.
    #[serde(default)]
    pub minimum: Option<i64>,
}

/// The config as written in YAML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    features: BTreeMap<String, Feature>,
    #[serde(default)]
    minimum_per_use: i64,
    #[serde(default = "default_attribute")]
    multiplier_attribute: String,
    #[serde(default)]
    multipliers: BTreeMap<String, i64>,
    #[serde(default = "default_multiplier")]
    default_multiplier: i64,
}

fn default_attribute() -> String {
    "tier".to_string()
}

fn default_multiplier() -> i64 {
    PER_MILLE
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, String> {
        if raw.minimum_per_use < 0 {
            return Err("minimum_per_use: must not be negative".into());
        }
        if raw.default_multiplier < 0 {
            return Err("default_multiplier: must not be negative".into());
        }
        if let Some((value, _)) = raw.multipliers.iter().find(|(_, m)| **m < 0) {
            return Err(format!("multipliers.{value}: must not be negative"));
        }
        let mut features = raw.features;
        for (name, feature) in &mut features {
            if feature.credits_per_unit < 0 {
                return Err(format!(
                    "features.{name}.credits_per_unit: must not be negative"
                ));
            }
            match feature.minimum {
                Some(minimum) if minimum < 0 => {
                    return Err(format!("features.{name}.minimum: must not be negative"));
                }
                Some(_) => {}
                None => feature.minimum = Some(raw.minimum_per_use),
            }
        }
        Ok(Config {
            features,
            multiplier_attribute: raw.multiplier_attribute,
            multipliers: raw.multipliers,
            default_multiplier: raw.default_multiplier,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxpay_policy_sdk::config::parse;

    #[test]
    fn defaults_fill_in_attribute_multiplier_and_minimum() {
        let config: Config =
            parse(r#"{"features":{"render":{"credits_per_unit":5}},"minimum_per_use":2}"#).unwrap();
        assert_eq!(config.multiplier_attribute, "tier");
        assert_eq!(config.default_multiplier, 1000);
        assert_eq!(config.features["render"].minimum, Some(2));
    }

    #[test]
    fn negative_numbers_are_refused_naming_the_field() {
        let err =
            parse::<Config>(r#"{"features":{"render":{"credits_per_unit":-1}}}"#).unwrap_err();
        assert!(err.contains("features.render.credits_per_unit"), "{err}");
        let err = parse::<Config>(r#"{"features":{},"multipliers":{"gold":-5}}"#).unwrap_err();
        assert!(err.contains("multipliers.gold"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse::<Config>(r#"{"features":{},"multiplier":{}}"#).unwrap_err();
        assert!(err.contains("unknown field `multiplier`"), "{err}");
        let err =
            parse::<Config>(r#"{"features":{"r":{"credits_per_unit":1,"min":1}}}"#).unwrap_err();
        assert!(err.contains("unknown field `min`"), "{err}");
    }
}

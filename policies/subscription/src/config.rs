//! The `config:` block, validated once by `check-config`.

use std::collections::BTreeMap;

use fluxpay_policy_sdk::calendar::{self, MS_PER_DAY};
use fluxpay_policy_sdk::money::check_currency;
use serde::Deserialize;

/// The longest free trial a plan may have (ten years), so `trial_days × a day`
/// always fits.
pub const MAX_TRIAL_DAYS: i64 = 3650;

/// How often a plan renews.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    /// Same day next month (clamped to the month's last day).
    Monthly,
    /// Same day next year (Feb 29 → Feb 28).
    Yearly,
}

impl Interval {
    /// The end of one interval that starts at `start_ms`.
    pub fn end_of_period(self, start_ms: i64) -> Option<i64> {
        match self {
            Interval::Monthly => calendar::add_months(start_ms, 1),
            Interval::Yearly => calendar::add_years(start_ms, 1),
        }
    }

    /// The interval in calendar months: 1 or 12.
    pub fn months(self) -> i64 {
        match self {
            Interval::Monthly => 1,
            Interval::Yearly => 12,
        }
    }

    /// "monthly" / "yearly".
    pub fn name(self) -> &'static str {
        match self {
            Interval::Monthly => "monthly",
            Interval::Yearly => "yearly",
        }
    }
}

/// One plan.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The plan id requests refer to.
    pub id: String,
    /// A readable name for line items; the id when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// How often it renews.
    pub interval: Interval,
    /// The price of one interval, in minor units.
    pub price: i64,
    /// ISO-4217 code of the price.
    pub currency: String,
    /// Free days at the start of a subscription.
    #[serde(default)]
    pub trial_days: i64,
}

impl Plan {
    /// The name to show on invoices.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// The trial length in milliseconds (0 without a trial).
    pub fn trial_ms(&self) -> i64 {
        // Bounded by MAX_TRIAL_DAYS at load, so this cannot overflow.
        self.trial_days * MS_PER_DAY
    }
}

/// The validated config: plans by id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct Config {
    /// The plans, by id.
    pub plans: BTreeMap<String, Plan>,
}

/// Longest plan id: the longest line code this policy builds from one,
/// `proration:credit:<id>`, must fit the host's 128-byte line codes.
pub const MAX_PLAN_ID_LEN: usize = 128 - "proration:credit:".len();

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    plans: Vec<Plan>,
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, String> {
        let mut plans = BTreeMap::new();
        for (index, plan) in raw.plans.into_iter().enumerate() {
            let at = format!("plans[{index}]");
            if plan.id.is_empty() {
                return Err(format!("{at}.id: must not be empty"));
            }
            if plan.id.len() > MAX_PLAN_ID_LEN || !plan.id.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "{at}.id: must be 1-{MAX_PLAN_ID_LEN} visible ASCII characters, so that \
                     line codes such as `proration:credit:<id>` stay within the host's \
                     128-byte limit"
                ));
            }
            if plan.price < 0 {
                return Err(format!("{at}.price: must not be negative"));
            }
            check_currency(&plan.currency).map_err(|e| format!("{at}.currency: {e}"))?;
            if !(0..=MAX_TRIAL_DAYS).contains(&plan.trial_days) {
                return Err(format!(
                    "{at}.trial_days: must be between 0 and {MAX_TRIAL_DAYS}"
                ));
            }
            if let Some(previous) = plans.insert(plan.id.clone(), plan) {
                return Err(format!("{at}.id: plan `{}` is defined twice", previous.id));
            }
        }
        Ok(Config { plans })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxpay_policy_sdk::config::parse;

    #[test]
    fn plans_are_indexed_by_id() {
        let config: Config = parse(
            r#"{"plans":[{"id":"basic","interval":"monthly","price":1000,"currency":"USD"}]}"#,
        )
        .unwrap();
        assert_eq!(config.plans["basic"].trial_days, 0);
        assert_eq!(config.plans["basic"].display_name(), "basic");
    }

    #[test]
    fn invalid_plans_are_refused_naming_the_field() {
        let cases = [
            (
                r#"{"id":"a","interval":"weekly","price":1,"currency":"USD"}"#,
                "plans[0].interval",
            ),
            (
                r#"{"id":"a","interval":"monthly","price":-1,"currency":"USD"}"#,
                "plans[0].price",
            ),
            (
                r#"{"id":"a","interval":"monthly","price":1,"currency":"usd"}"#,
                "plans[0].currency",
            ),
            (
                r#"{"id":"a","interval":"monthly","price":1,"currency":"USD","trial_days":-1}"#,
                "plans[0].trial_days",
            ),
            (
                r#"{"id":"","interval":"monthly","price":1,"currency":"USD"}"#,
                "plans[0].id",
            ),
            (
                r#"{"id":"a","interval":"monthly","price":1,"currency":"USD","x":1}"#,
                "unknown field `x`",
            ),
        ];
        for (plan, expected) in cases {
            let err = parse::<Config>(&format!(r#"{{"plans":[{plan}]}}"#)).unwrap_err();
            assert!(err.contains(expected), "{plan}: {err}");
        }
    }

    #[test]
    fn a_plan_id_too_long_for_its_line_codes_is_refused() {
        let plan = |id: &str| {
            format!(
                r#"{{"plans":[{{"id":"{id}","interval":"monthly","price":1,"currency":"USD"}}]}}"#
            )
        };
        let longest = "p".repeat(MAX_PLAN_ID_LEN);
        assert!(parse::<Config>(&plan(&longest)).is_ok());
        let err = parse::<Config>(&plan(&format!("{longest}p"))).unwrap_err();
        assert!(
            err.contains("plans[0].id: must be 1-111 visible ASCII"),
            "{err}"
        );
        let err = parse::<Config>(&plan("two words")).unwrap_err();
        assert!(err.contains("plans[0].id"), "{err}");
    }

    #[test]
    fn a_duplicate_plan_id_is_refused() {
        let plan = r#"{"id":"a","interval":"monthly","price":1,"currency":"USD"}"#;
        let err = parse::<Config>(&format!(r#"{{"plans":[{plan},{plan}]}}"#)).unwrap_err();
        assert!(
            err.contains("plans[1].id: plan `a` is defined twice"),
            "{err}"
        );
    }
}

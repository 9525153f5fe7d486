//! Reference credit pricing policy: how many credits does a feature use cost?
//!
//! `cost = ceil(units × credits_per_unit × multiplier ÷ 1000)`, then raised to
//! the feature's minimum charge. The multiplier (per mille) is chosen by a
//! customer attribute (`tier` by default). Fractions of a credit are rounded
//! up, so a discount never makes a use free. Only `credit-usage` requests are
//! priced; see README.md for the config.

use fluxpay_policy_sdk::prelude::*;

mod config;

pub use config::{Config, Feature, PER_MILLE};

/// Prices a `credit-usage` request in credits.
#[pricing]
pub fn price(
    ctx: &Context,
    config: &Config,
    request: PricingRequest,
) -> Result<Quote, PolicyError> {
    let PricingRequest::CreditUsage(usage) = request else {
        return Err(PolicyError::unsupported(
            "the credit policy prices credit-usage requests only",
        ));
    };
    price_usage(ctx, config, &usage)
}

fn price_usage(ctx: &Context, config: &Config, usage: &CreditUsage) -> Result<Quote, PolicyError> {
    let Some(feature) = config.features.get(&usage.feature) else {
        return Err(PolicyError::rejected(
            "unknown-feature",
            format!(
                "no credit cost is configured for feature `{}`",
                usage.feature
            ),
        ));
    };
    if usage.units <= 0 {
        return Err(PolicyError::rejected(
            "invalid-units",
            format!("units must be positive, got {}", usage.units),
        ));
    }
    let (attribute_value, multiplier) = multiplier_for(ctx, config);

    let base = Credits(feature.credits_per_unit).checked_mul(usage.units)?;
    let multiplied = base.mul_ratio(multiplier, PER_MILLE, Rounding::Ceiling)?;
    let minimum = Credits(feature.minimum.unwrap_or(0));
    let total = multiplied.max(minimum);

    let mut lines = vec![LineItem::new(
        format!("feature:{}", usage.feature),
        format!(
            "{} × {} at {} credits per unit",
            usage.units, usage.feature, feature.credits_per_unit
        ),
        usage.units,
        base,
    )];
    if multiplied != base {
        let label = attribute_value.unwrap_or("default");
        lines.push(LineItem::new(
            format!("multiplier:{}:{label}", config.multiplier_attribute),
            format!(
                "{} {label}: ×{} (fractions of a credit rounded up)",
                config.multiplier_attribute,
                per_mille_text(multiplier)
            ),
            1,
            multiplied.checked_sub(base)?,
        ));
    }
    if total != multiplied {
        lines.push(LineItem::new(
            "minimum-charge",
            format!("minimum charge of {} credits per use", minimum.0),
            1,
            total.checked_sub(multiplied)?,
        ));
    }
    let quote = Quote::from_line_items(Amount::credits(0), lines)?
        .with_metadata("feature", usage.feature.clone())
        .with_metadata("multiplier_per_mille", multiplier.to_string());
    debug_assert_eq!(quote.total, Amount::from(total));
    Ok(quote)
}

/// The attribute value that chose the multiplier (if it is listed) and the
/// multiplier in per mille.
fn multiplier_for<'a>(ctx: &'a Context, config: &Config) -> (Option<&'a str>, i64) {
    match ctx.attribute(&config.multiplier_attribute) {
        Some(value) => match config.multipliers.get(value) {
            Some(&multiplier) => (Some(value), multiplier),
            None => (None, config.default_multiplier),
        },
        None => (None, config.default_multiplier),
    }
}

/// `1500` → `"1.5"`, `800` → `"0.8"`, `1000` → `"1"`.
fn per_mille_text(per_mille: i64) -> String {
    let whole = per_mille / PER_MILLE;
    let fraction = per_mille % PER_MILLE;
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:03}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests;

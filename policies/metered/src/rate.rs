//! Rating one metric's quantity into line items. Every line is rounded on
//! its own (half away from zero, in minor units), and the quote's total is
//! the sum of the lines, so the lines always add up.

use fluxpay_policy_sdk::prelude::*;

use crate::config::{Metric, Model, Package, Tier};

/// The line items for `quantity` units of `name` (≥ 0), in `currency`.
pub fn rate_metric(
    name: &str,
    metric: &Metric,
    quantity: i64,
    currency: &str,
) -> Result<Vec<LineItem>, MoneyError> {
    let free = quantity.min(metric.free);
    let billable = quantity - free;
    let mut lines = Vec::new();
    if free > 0 {
        lines.push(LineItem::new(
            format!("metric:{name}:free"),
            format!("{name}: {free} free units"),
            free,
            Money::zero(currency),
        ));
    }
    if billable > 0 {
        match &metric.model {
            Model::Graduated(tiers) => graduated(name, tiers, billable, currency, &mut lines)?,
            Model::Volume(tiers) => lines.push(volume(name, tiers, billable, currency)?),
            Model::Package(package) => lines.push(package_line(name, package, billable, currency)?),
        }
    }
    Ok(lines)
}

fn tier_amount(tier: &Tier, units: i64, currency: &str) -> Result<Money, MoneyError> {
    Money::new(tier.price, currency).mul_ratio(units, tier.per, Rounding::HalfAwayFromZero)
}

fn rate_text(tier: &Tier) -> String {
    if tier.per == 1 {
        format!("{} per unit", tier.price)
    } else {
        format!("{} per {} units", tier.price, tier.per)
    }
}

/// Units `lower+1 ..= upper` of each tier at that tier's price.
fn graduated(
    name: &str,
    tiers: &[Tier],
    billable: i64,
    currency: &str,
    lines: &mut Vec<LineItem>,
) -> Result<(), MoneyError> {
    let mut lower = 0;
    for (index, tier) in tiers.iter().enumerate() {
        let upper = tier.up_to.unwrap_or(i64::MAX).min(billable);
        let units = upper - lower;
        if units <= 0 {
            break;
        }
        lines.push(LineItem::new(
            format!("metric:{name}:tier-{}", index + 1),
            format!("{name}: units {}–{upper} at {}", lower + 1, rate_text(tier)),
            units,
            tier_amount(tier, units, currency)?,
        ));
        lower = upper;
    }
    Ok(())
}

/// All billable units at the price of the first tier whose `up_to` covers
/// them (the open-ended last tier covers everything).
fn volume(
    name: &str,
    tiers: &[Tier],
    billable: i64,
    currency: &str,
) -> Result<LineItem, MoneyError> {
    let (index, tier) = tiers
        .iter()
        .enumerate()
        .find(|(_, tier)| tier.up_to.is_none_or(|up_to| billable <= up_to))
        .expect("validated config: the last tier is open-ended");
    Ok(LineItem::new(
        format!("metric:{name}:tier-{}", index + 1),
        format!(
            "{name}: {billable} units, all at tier {} ({})",
            index + 1,
            rate_text(tier)
        ),
        billable,
        tier_amount(tier, billable, currency)?,
    ))
}

/// Started packages, rounded up.
fn package_line(
    name: &str,
    package: &Package,
    billable: i64,
    currency: &str,
) -> Result<LineItem, MoneyError> {
    let packages = billable / package.size + i64::from(billable % package.size != 0);
    Ok(LineItem::new(
        format!("metric:{name}:package"),
        format!(
            "{name}: {billable} units in {packages} package(s) of {} at {} each",
            package.size, package.price
        ),
        packages,
        Money::new(package.price, currency).checked_mul(packages)?,
    ))
}

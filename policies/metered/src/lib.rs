//! Reference metered pricing policy: rates a period's aggregated usage per
//! metric with graduated, volume or package pricing and a free allowance.
//!
//! Only `metered` requests are priced; see README.md for the config and the
//! exact rules.

use fluxpay_policy_sdk::prelude::*;

mod config;
mod rate;

pub use config::{Config, Metric, Model, Package, Tier, UnknownMetrics};

/// Prices a `metered` request in the configured currency.
#[pricing]
pub fn price(
    _ctx: &Context,
    config: &Config,
    request: PricingRequest,
) -> Result<Quote, PolicyError> {
    let PricingRequest::Metered(period) = request else {
        return Err(PolicyError::unsupported(
            "the metered policy prices metered requests only",
        ));
    };
    rate_period(config, &period)
}

fn rate_period(config: &Config, period: &MeteredPeriod) -> Result<Quote, PolicyError> {
    let mut lines = Vec::new();
    let mut ignored = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for usage in &period.usage {
        if !seen.insert(usage.metric.as_str()) {
            return Err(PolicyError::rejected(
                "duplicate-metric",
                format!("metric `{}` appears more than once", usage.metric),
            ));
        }
        if usage.quantity < 0 {
            return Err(PolicyError::rejected(
                "invalid-quantity",
                format!("metric `{}` has a negative quantity", usage.metric),
            ));
        }
        let Some(metric) = config.metrics.get(&usage.metric) else {
            match config.unknown_metrics {
                UnknownMetrics::Reject => {
                    return Err(PolicyError::rejected(
                        "unknown-metric",
                        format!("metric `{}` has no pricing", usage.metric),
                    ));
                }
                UnknownMetrics::Ignore => {
                    ignored.push(usage.metric.as_str());
                    continue;
                }
            }
        };
        lines.extend(rate::rate_metric(
            &usage.metric,
            metric,
            usage.quantity,
            &config.currency,
        )?);
    }
    let mut quote = Quote::from_line_items(Amount::money(0, config.currency.clone()), lines)?;
    if !ignored.is_empty() {
        quote = quote.with_metadata("ignored_metrics", ignored.join(","));
    }
    Ok(quote)
}

#[cfg(test)]
mod tests;

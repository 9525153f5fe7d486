//! Reference validation policy: order limits by customer tier, allowed
//! currencies and payment methods, required metadata, a daily credit cap and
//! usage batch checks. Each violation has a stable `rule_id` (see
//! [`rules::id`]); see README.md for the config.

use fluxpay_policy_sdk::prelude::*;

mod config;
pub mod rules;

pub use config::{Config, RequiredMetadata, TierLimit, UsageRules};

/// Checks a subject against every configured rule; an empty list passes.
#[validation]
pub fn validate(
    ctx: &Context,
    config: &Config,
    subject: ValidationSubject,
) -> Result<Vec<Violation>, PolicyError> {
    let violations = match &subject {
        ValidationSubject::Order(order) => rules::order(ctx, config, order),
        ValidationSubject::CreditUse(use_) => rules::credit_use(ctx, config, use_),
        ValidationSubject::Usage(events) => rules::usage(config, events),
        ValidationSubject::Payment(payment) => rules::payment(config, payment),
    };
    if !violations.is_empty() {
        log::debug(format!("{} rule(s) broken", violations.len()));
    }
    Ok(violations)
}

#[cfg(test)]
mod tests;

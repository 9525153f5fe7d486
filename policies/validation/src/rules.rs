//! One function per subject kind; each returns every broken rule, in a fixed
//! order, so the answer is deterministic.

use std::collections::BTreeSet;

use fluxpay_policy_sdk::prelude::*;

use crate::config::Config;

/// The stable rule ids this policy reports.
pub mod id {
    /// An order total above the customer's tier limit for its currency.
    pub const MAX_ORDER_AMOUNT: &str = "max-order-amount";
    /// An order or payment in a currency not in `allowed_currencies`.
    pub const CURRENCY_NOT_ALLOWED: &str = "currency-not-allowed";
    /// An order whose quoted total is in another currency than the order.
    pub const ORDER_TOTAL_CURRENCY: &str = "order-total-currency";
    /// An order item with a quantity of zero or less.
    pub const ORDER_ITEM_QUANTITY: &str = "order-item-quantity";
    /// A required metadata key that is missing or empty.
    pub const REQUIRED_METADATA: &str = "required-metadata";
    /// A credit use that would take today's spend above the daily cap.
    pub const DAILY_CREDIT_CAP: &str = "daily-credit-cap";
    /// A usage event with a negative quantity.
    pub const USAGE_NEGATIVE_QUANTITY: &str = "usage-negative-quantity";
    /// A usage event for a metric not in `usage.known_metrics`.
    pub const USAGE_UNKNOWN_METRIC: &str = "usage-unknown-metric";
    /// A usage event id that appears twice in one batch.
    pub const USAGE_DUPLICATE_EVENT: &str = "usage-duplicate-event";
    /// A payment with a method not in `allowed_payment_methods`.
    pub const PAYMENT_METHOD_NOT_ALLOWED: &str = "payment-method-not-allowed";
    /// A payment of zero or less.
    pub const PAYMENT_AMOUNT: &str = "payment-amount";
}

/// Checks an order.
pub fn order(ctx: &Context, config: &Config, order: &OrderSubject) -> Vec<Violation> {
    let mut violations = Vec::new();
    currency_allowed(config, &order.currency, "order", &mut violations);
    if order.total.currency != order.currency {
        violations.push(Violation::new(
            id::ORDER_TOTAL_CURRENCY,
            format!(
                "The order is in {} but its total is in {}.",
                order.currency, order.total.currency
            ),
        ));
    }
    for item in order.items.iter().filter(|item| item.quantity <= 0) {
        violations.push(Violation::new(
            id::ORDER_ITEM_QUANTITY,
            format!(
                "Item `{}` has a quantity of {}; it must be at least 1.",
                item.sku, item.quantity
            ),
        ));
    }
    let tier = ctx.attribute(&config.tier_attribute);
    let limit = config
        .max_order_amount
        .get(&order.total.currency)
        .and_then(|limit| limit.for_tier(tier));
    if let Some(limit) = limit.filter(|limit| order.total.amount > *limit) {
        violations.push(Violation::new(
            id::MAX_ORDER_AMOUNT,
            format!(
                "The order total of {} {} minor units is above the limit of {limit} for {}.",
                order.total.amount,
                order.total.currency,
                tier_text(tier)
            ),
        ));
    }
    required_metadata(
        &config.required_metadata.order,
        &order.metadata,
        "order",
        &mut violations,
    );
    violations
}

/// Checks a credit use.
pub fn credit_use(ctx: &Context, config: &Config, use_: &CreditUseSubject) -> Vec<Violation> {
    let mut violations = Vec::new();
    let tier = ctx.attribute(&config.tier_attribute);
    if let Some(cap) = config
        .daily_credit_cap
        .as_ref()
        .and_then(|cap| cap.for_tier(tier))
    {
        // An overflowing sum is certainly above any cap.
        let after = use_.spent_today.checked_add(use_.credits);
        if after.is_none_or(|after| after > cap) {
            violations.push(Violation::new(
                id::DAILY_CREDIT_CAP,
                format!(
                    "This use costs {} credits; with {} already spent today it exceeds the daily cap of {cap} credits for {}.",
                    use_.credits,
                    use_.spent_today,
                    tier_text(tier)
                ),
            ));
        }
    }
    required_metadata(
        &config.required_metadata.credit_use,
        &use_.metadata,
        "credit use",
        &mut violations,
    );
    violations
}

/// Checks a usage batch: one violation per offending event.
pub fn usage(config: &Config, events: &[UsageEvent]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut seen = BTreeSet::new();
    for event in events {
        if event.quantity < 0 {
            violations.push(Violation::new(
                id::USAGE_NEGATIVE_QUANTITY,
                format!(
                    "Event `{}` has a negative quantity ({}).",
                    event.event_id, event.quantity
                ),
            ));
        }
        let known = config.usage.known_metrics.as_ref();
        if known.is_some_and(|known| !known.contains(&event.metric)) {
            violations.push(Violation::new(
                id::USAGE_UNKNOWN_METRIC,
                format!(
                    "Event `{}` reports unknown metric `{}`.",
                    event.event_id, event.metric
                ),
            ));
        }
        if !seen.insert(event.event_id.as_str()) {
            violations.push(Violation::new(
                id::USAGE_DUPLICATE_EVENT,
                format!(
                    "Event id `{}` appears more than once in the batch.",
                    event.event_id
                ),
            ));
        }
    }
    violations
}

/// Checks a payment.
pub fn payment(config: &Config, payment: &PaymentSubject) -> Vec<Violation> {
    let mut violations = Vec::new();
    if payment.amount.amount <= 0 {
        violations.push(Violation::new(
            id::PAYMENT_AMOUNT,
            format!("A payment must be positive; got {}.", payment.amount.amount),
        ));
    }
    currency_allowed(config, &payment.amount.currency, "payment", &mut violations);
    let methods = config.allowed_payment_methods.as_ref();
    if methods.is_some_and(|methods| !methods.contains(&payment.method)) {
        violations.push(Violation::new(
            id::PAYMENT_METHOD_NOT_ALLOWED,
            format!("Payment method `{}` is not accepted.", payment.method),
        ));
    }
    required_metadata(
        &config.required_metadata.payment,
        &payment.metadata,
        "payment",
        &mut violations,
    );
    violations
}

fn currency_allowed(config: &Config, currency: &str, what: &str, violations: &mut Vec<Violation>) {
    let allowed = config.allowed_currencies.as_ref();
    if allowed.is_some_and(|allowed| !allowed.contains(currency)) {
        violations.push(Violation::new(
            id::CURRENCY_NOT_ALLOWED,
            format!("This {what} is in {currency}, which is not accepted."),
        ));
    }
}

/// One violation per required key that is missing or has an empty value.
fn required_metadata(
    required: &[String],
    metadata: &[(String, String)],
    what: &str,
    violations: &mut Vec<Violation>,
) {
    for key in required {
        if metadata.value(key).is_none_or(str::is_empty) {
            violations.push(Violation::new(
                id::REQUIRED_METADATA,
                format!("The {what} must carry the metadata `{key}`."),
            ));
        }
    }
}

fn tier_text(tier: Option<&str>) -> String {
    match tier {
        Some(tier) => format!("tier `{tier}`"),
        None => "customers without a tier".to_string(),
    }
}

//! Reference subscription pricing policy: plan start (with an optional free
//! trial), renewal, and plan change with proration by remaining time.
//!
//! Periods follow the calendar in UTC and keep the billing anchor's day of
//! month: a monthly subscription anchored on Jan 31 renews on Feb 29 (or 28),
//! then on Mar 31. A plan change during a free trial credits nothing (nothing
//! was paid). Only `subscription` requests are priced; see README.md for the
//! rules and the config.

use fluxpay_policy_sdk::calendar::DateTime;
use fluxpay_policy_sdk::prelude::*;

mod config;
mod period;

pub use config::{Config, Interval, MAX_TRIAL_DAYS, Plan};

/// Quote metadata naming the billing anchor the host must send on later
/// renewals (`subscription-renewal.anchor-ms`); set on every quote that
/// starts the first paid period or a trial.
pub const BILLING_ANCHOR_KEY: &str = "billing_anchor_ms";

/// Prices a `subscription` request (start, renewal or plan change) in money.
#[pricing]
pub fn price(
    _ctx: &Context,
    config: &Config,
    request: PricingRequest,
) -> Result<Quote, PolicyError> {
    let PricingRequest::Subscription(request) = request else {
        return Err(PolicyError::unsupported(
            "the subscription policy prices subscription requests only",
        ));
    };
    match request {
        SubscriptionRequest::Start(start) => start_quote(config, &start),
        SubscriptionRequest::Renewal(renewal) => renewal_quote(config, &renewal),
        SubscriptionRequest::PlanChange(change) => plan_change_quote(config, &change),
    }
}

fn plan<'a>(config: &'a Config, id: &str) -> Result<&'a Plan, PolicyError> {
    config
        .plans
        .get(id)
        .ok_or_else(|| PolicyError::rejected("unknown-plan", format!("there is no plan `{id}`")))
}

/// The first period: a free trial when the plan has one, else a paid period.
fn start_quote(config: &Config, start: &SubscriptionStart) -> Result<Quote, PolicyError> {
    let plan = plan(config, &start.plan_id)?;
    if plan.trial_days == 0 {
        return first_paid_period_quote(plan, start.start_ms);
    }
    let trial_end = start
        .start_ms
        .checked_add(plan.trial_ms())
        .ok_or_else(out_of_range)?;
    let description = format!(
        "{}-day free trial of {} ({})",
        plan.trial_days,
        plan.display_name(),
        span(start.start_ms, trial_end)
    );
    trial_quote(plan, start.start_ms, trial_end, description)
}

/// A free trial of `plan` over `[start_ms, trial_end)`. The first paid
/// period starts at the trial end, which becomes the billing anchor.
fn trial_quote(
    plan: &Plan,
    start_ms: i64,
    trial_end: i64,
    description: String,
) -> Result<Quote, PolicyError> {
    let line = LineItem::new(
        format!("plan:{}:trial", plan.id),
        description,
        1,
        Money::zero(plan.currency.clone()),
    );
    let terms = SubscriptionTerms {
        plan_id: plan.id.clone(),
        period_start_ms: start_ms,
        period_end_ms: trial_end,
        trial_end_ms: Some(trial_end),
    };
    Ok(
        Quote::from_line_items(Amount::money(0, plan.currency.clone()), vec![line])?
            .with_metadata(BILLING_ANCHOR_KEY, trial_end.to_string())
            .with_subscription(terms),
    )
}

/// The first paid period, which anchors every later renewal at its start.
fn first_paid_period_quote(plan: &Plan, start_ms: i64) -> Result<Quote, PolicyError> {
    let end = plan
        .interval
        .end_of_period(start_ms)
        .ok_or_else(out_of_range)?;
    Ok(period_quote(plan, start_ms, end)?.with_metadata(BILLING_ANCHOR_KEY, start_ms.to_string()))
}

/// The next paid period: from the period start to the anchor's day one
/// interval later.
fn renewal_quote(config: &Config, renewal: &SubscriptionRenewal) -> Result<Quote, PolicyError> {
    let plan = plan(config, &renewal.plan_id)?;
    let end = period::renewal_end(plan.interval, renewal.anchor_ms, renewal.period_start_ms)?;
    period_quote(plan, renewal.period_start_ms, end)
}

/// One full paid period of `plan` over `[start_ms, end)`.
fn period_quote(plan: &Plan, start_ms: i64, end: i64) -> Result<Quote, PolicyError> {
    let line = LineItem::new(
        format!("plan:{}", plan.id),
        format!(
            "{}, {} ({})",
            plan.display_name(),
            plan.interval.name(),
            span(start_ms, end)
        ),
        1,
        Money::new(plan.price, plan.currency.clone()),
    );
    let terms = SubscriptionTerms {
        plan_id: plan.id.clone(),
        period_start_ms: start_ms,
        period_end_ms: end,
        trial_end_ms: None,
    };
    Ok(
        Quote::from_line_items(Amount::money(0, plan.currency.clone()), vec![line])?
            .with_subscription(terms),
    )
}

/// A plan change: prorated by remaining time, or, during a free trial,
/// without any credit.
fn plan_change_quote(config: &Config, change: &PlanChange) -> Result<Quote, PolicyError> {
    let from = plan(config, &change.from_plan_id)?;
    let to = plan(config, &change.to_plan_id)?;
    if from.currency != to.currency {
        return Err(PolicyError::rejected(
            "currency-mismatch",
            format!(
                "plan `{}` is priced in {} and plan `{}` in {}",
                from.id, from.currency, to.id, to.currency
            ),
        ));
    }
    let (start, end, at) = (
        change.period_start_ms,
        change.period_end_ms,
        change.change_at_ms,
    );
    if start >= end || at < start || at > end {
        return Err(PolicyError::rejected(
            "invalid-period",
            "the change must fall within a non-empty period (start ≤ change ≤ end)",
        ));
    }
    match change.trial_end_ms {
        // A trial that ended at or before the change is over: the change
        // falls in paid time.
        Some(trial_end) if trial_end > at => {
            if trial_end > end {
                return Err(PolicyError::rejected(
                    "invalid-period",
                    "the trial must end within the current period",
                ));
            }
            trial_change_quote(to, change, trial_end)
        }
        _ => prorated_change_quote(from, to, change),
    }
}

/// A change during a free trial. Nothing was paid, so nothing is credited;
/// the customer is treated as if they had started on the new plan when the
/// trial began. While the new plan's own trial (counted from that start, and
/// never past the current trial's end) lasts, the trial goes on, free, on
/// the new plan. When the new plan has no trial, or a shorter one that is
/// already over, the trial ends now and the new plan's first paid period
/// starts at the change, at its full price.
fn trial_change_quote(
    to: &Plan,
    change: &PlanChange,
    trial_end: i64,
) -> Result<Quote, PolicyError> {
    let at = change.change_at_ms;
    let new_trial_end = change
        .period_start_ms
        .checked_add(to.trial_ms())
        .ok_or_else(out_of_range)?
        .min(trial_end);
    let quote = if new_trial_end > at {
        let description = format!(
            "Free trial continues on {} ({})",
            to.display_name(),
            span(at, new_trial_end)
        );
        trial_quote(to, at, new_trial_end, description)?
    } else {
        first_paid_period_quote(to, at)?
    };
    Ok(quote.with_metadata("plan_change", "during-trial"))
}

/// Credit the unused part of the old plan, charge the remaining part of the
/// new one. Both shares are rounded half away from zero.
///
/// The old plan's share is `remaining ÷ current period`. The new plan's is
/// the same when both plans renew at the same interval; otherwise it is
/// `remaining ÷ one new-plan interval starting at the period start` (so a
/// switch from yearly to monthly mid-year charges the monthly price for each
/// remaining month).
fn prorated_change_quote(
    from: &Plan,
    to: &Plan,
    change: &PlanChange,
) -> Result<Quote, PolicyError> {
    let (start, end, at) = (
        change.period_start_ms,
        change.period_end_ms,
        change.change_at_ms,
    );
    let remaining = end.checked_sub(at).ok_or_else(out_of_range)?;
    let period = end.checked_sub(start).ok_or_else(out_of_range)?;
    let to_period = if to.interval == from.interval {
        period
    } else {
        let to_end = to.interval.end_of_period(start).ok_or_else(out_of_range)?;
        to_end.checked_sub(start).ok_or_else(out_of_range)?
    };

    let credit = Money::new(from.price, from.currency.clone())
        .prorate(remaining, period)?
        .checked_neg()?;
    let charge = Money::new(to.price, to.currency.clone()).mul_ratio(
        remaining,
        to_period,
        Rounding::HalfAwayFromZero,
    )?;
    let lines = vec![
        LineItem::new(
            format!("proration:credit:{}", from.id),
            format!("Unused time on {} ({})", from.display_name(), span(at, end)),
            1,
            credit,
        ),
        LineItem::new(
            format!("proration:charge:{}", to.id),
            format!(
                "Remaining time on {} ({})",
                to.display_name(),
                span(at, end)
            ),
            1,
            charge,
        ),
    ];
    let terms = SubscriptionTerms {
        plan_id: to.id.clone(),
        period_start_ms: at,
        period_end_ms: end,
        trial_end_ms: None,
    };
    Ok(
        Quote::from_line_items(Amount::money(0, to.currency.clone()), lines)?
            .with_metadata("proration_remaining_ms", remaining.to_string())
            .with_metadata("proration_period_ms", period.to_string())
            .with_subscription(terms),
    )
}

pub(crate) fn out_of_range() -> PolicyError {
    PolicyError::rejected(
        "invalid-period",
        "the period is outside the supported date range",
    )
}

/// `2024-01-31 to 2024-02-29` (UTC dates; the end is exclusive).
fn span(start_ms: i64, end_ms: i64) -> String {
    format!("{} to {}", date(start_ms), date(end_ms))
}

/// `2024-01-31` (the UTC date of an instant).
pub(crate) fn date(ms: i64) -> String {
    let d = DateTime::from_ms(ms);
    format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
}

#[cfg(test)]
mod tests;

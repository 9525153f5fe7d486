use super::*;
use fluxpay_policy_sdk::calendar::{MS_PER_DAY, utc_ms};
use serde_json::json;

fn config() -> serde_json::Value {
    json!({
        "plans": [
            { "id": "basic", "name": "Basic", "interval": "monthly", "price": 1000, "currency": "USD" },
            { "id": "pro", "name": "Pro", "interval": "monthly", "price": 3000, "currency": "USD", "trial_days": 14 },
            { "id": "pro-yearly", "interval": "yearly", "price": 30000, "currency": "USD" },
            { "id": "odd", "interval": "monthly", "price": 999, "currency": "USD" },
            { "id": "euro", "interval": "monthly", "price": 900, "currency": "EUR" },
            { "id": "team", "interval": "monthly", "price": 5000, "currency": "USD", "trial_days": 30 },
            { "id": "lite", "interval": "monthly", "price": 500, "currency": "USD", "trial_days": 7 }
        ]
    })
}

fn at(year: i64, month: u32, day: u32) -> i64 {
    utc_ms(year, month, day).unwrap()
}

fn quote(request: SubscriptionRequest) -> Result<Quote, PolicyError> {
    let ctx = testing::context().config_json(config()).build();
    testing::price(price, &ctx, PricingRequest::Subscription(request))
}

fn start(plan: &str, start_ms: i64) -> Result<Quote, PolicyError> {
    quote(SubscriptionRequest::Start(SubscriptionStart {
        plan_id: plan.into(),
        start_ms,
    }))
}

/// A renewal of a subscription whose anchor is this very period start.
fn renewal(plan: &str, period_start_ms: i64) -> Result<Quote, PolicyError> {
    anchored_renewal(plan, period_start_ms, period_start_ms)
}

fn anchored_renewal(
    plan: &str,
    anchor_ms: i64,
    period_start_ms: i64,
) -> Result<Quote, PolicyError> {
    quote(SubscriptionRequest::Renewal(SubscriptionRenewal {
        plan_id: plan.into(),
        period_start_ms,
        anchor_ms,
    }))
}

fn change(from: &str, to: &str, start: i64, end: i64, at: i64) -> Result<Quote, PolicyError> {
    change_with_trial(from, to, (start, end), at, None)
}

fn change_with_trial(
    from: &str,
    to: &str,
    (start, end): (i64, i64),
    at: i64,
    trial_end_ms: Option<i64>,
) -> Result<Quote, PolicyError> {
    quote(SubscriptionRequest::PlanChange(PlanChange {
        from_plan_id: from.into(),
        to_plan_id: to.into(),
        period_start_ms: start,
        period_end_ms: end,
        change_at_ms: at,
        trial_end_ms,
    }))
}

fn plan_price(plan: &str) -> i64 {
    let config: Config = fluxpay_policy_sdk::config::parse(&config().to_string()).unwrap();
    config.plans[plan].price
}

fn metadata<'a>(quote: &'a Quote, key: &str) -> Option<&'a str> {
    quote.metadata.value(key)
}

/// Renews `plan` `count` times from the quote of its first period, each
/// renewal starting where the previous period ended; the period ends in order.
fn renew_repeatedly(plan: &str, first: &Quote, count: usize) -> Vec<i64> {
    let anchor: i64 = metadata(first, BILLING_ANCHOR_KEY)
        .expect("the first period names the anchor")
        .parse()
        .unwrap();
    let mut ends = vec![terms(first).period_end_ms];
    for _ in 0..count {
        let start = *ends.last().unwrap();
        let q = anchored_renewal(plan, anchor, start).unwrap();
        assert_eq!(terms(&q).period_start_ms, start);
        assert_eq!(
            total(&q).amount,
            plan_price(plan),
            "every renewal is a full period"
        );
        ends.push(terms(&q).period_end_ms);
    }
    ends
}

fn total(quote: &Quote) -> &Money {
    quote.total.as_money().expect("a money total")
}

fn terms(quote: &Quote) -> &SubscriptionTerms {
    quote.subscription.as_ref().expect("subscription terms")
}

fn assert_lines_add_up(quote: &Quote) {
    let zero = quote.total.zero_like();
    assert_eq!(
        LineItem::total(zero, &quote.line_items).unwrap(),
        quote.total
    );
}

#[test]
fn a_start_without_trial_charges_the_first_month() {
    let q = start("basic", at(2024, 1, 15)).unwrap();
    assert_eq!(total(&q), &Money::new(1000, "USD"));
    assert_eq!(
        terms(&q),
        &SubscriptionTerms {
            plan_id: "basic".into(),
            period_start_ms: at(2024, 1, 15),
            period_end_ms: at(2024, 2, 15),
            trial_end_ms: None,
        }
    );
    assert_eq!(q.line_items[0].code, "plan:basic");
    assert_eq!(
        q.line_items[0].description,
        "Basic, monthly (2024-01-15 to 2024-02-15)"
    );
    assert_lines_add_up(&q);
}

#[test]
fn a_start_with_trial_costs_nothing_and_ends_at_the_trial_end() {
    let begin = at(2024, 1, 20) + 3_600_000;
    let q = start("pro", begin).unwrap();
    assert_eq!(total(&q), &Money::new(0, "USD"));
    let trial_end = begin + 14 * MS_PER_DAY;
    assert_eq!(
        terms(&q),
        &SubscriptionTerms {
            plan_id: "pro".into(),
            period_start_ms: begin,
            period_end_ms: trial_end,
            trial_end_ms: Some(trial_end),
        }
    );
    assert_eq!(q.line_items[0].code, "plan:pro:trial");
    assert!(
        q.line_items[0]
            .description
            .starts_with("14-day free trial of Pro")
    );
}

#[test]
fn renewal_after_a_trial_charges_a_full_period_from_the_trial_end() {
    let trial_end = at(2024, 2, 3);
    let q = renewal("pro", trial_end).unwrap();
    assert_eq!(total(&q), &Money::new(3000, "USD"));
    assert_eq!(terms(&q).period_end_ms, at(2024, 3, 3));
    assert_eq!(terms(&q).trial_end_ms, None);
}

#[test]
fn a_month_end_start_is_clamped_in_leap_and_common_years() {
    assert_eq!(
        terms(&renewal("basic", at(2024, 1, 31)).unwrap()).period_end_ms,
        at(2024, 2, 29)
    );
    assert_eq!(
        terms(&renewal("basic", at(2023, 1, 31)).unwrap()).period_end_ms,
        at(2023, 2, 28)
    );
    assert_eq!(
        terms(&renewal("basic", at(2100, 1, 31)).unwrap()).period_end_ms,
        at(2100, 2, 28)
    );
    assert_eq!(
        terms(&renewal("basic", at(2024, 3, 31)).unwrap()).period_end_ms,
        at(2024, 4, 30)
    );
    assert_eq!(
        terms(&renewal("basic", at(2024, 12, 31)).unwrap()).period_end_ms,
        at(2025, 1, 31)
    );
}

#[test]
fn a_renewal_keeps_the_time_of_day() {
    let begin = at(2024, 5, 31) + 23 * 3_600_000 + 59 * 60_000;
    let q = renewal("basic", begin).unwrap();
    assert_eq!(
        terms(&q).period_end_ms,
        at(2024, 6, 30) + 23 * 3_600_000 + 59 * 60_000
    );
}

#[test]
fn a_yearly_plan_renews_on_the_same_day_next_year() {
    let q = renewal("pro-yearly", at(2024, 2, 29)).unwrap();
    assert_eq!(total(&q), &Money::new(30000, "USD"));
    assert_eq!(terms(&q).period_end_ms, at(2025, 2, 28));
    assert_eq!(
        terms(&renewal("pro-yearly", at(2023, 3, 1)).unwrap()).period_end_ms,
        at(2024, 3, 1)
    );
}

#[test]
fn an_unknown_plan_is_rejected_everywhere() {
    let jan = at(2024, 1, 1);
    let feb = at(2024, 2, 1);
    for result in [
        start("gold", jan),
        renewal("gold", jan),
        change("gold", "basic", jan, feb, jan),
        change("basic", "gold", jan, feb, jan),
    ] {
        assert_eq!(result.unwrap_err().rejection_code(), Some("unknown-plan"));
    }
}

#[test]
fn an_upgrade_at_the_period_start_credits_and_charges_in_full() {
    let (s, e) = (at(2024, 4, 1), at(2024, 5, 1));
    let q = change("basic", "odd", s, e, s).unwrap();
    assert_eq!(q.line_items[0].amount, Amount::money(-1000, "USD"));
    assert_eq!(q.line_items[1].amount, Amount::money(999, "USD"));
    assert_eq!(total(&q), &Money::new(-1, "USD"));
    assert_lines_add_up(&q);
}

#[test]
fn a_change_at_the_period_end_costs_nothing() {
    let (s, e) = (at(2024, 4, 1), at(2024, 5, 1));
    let q = change("basic", "pro", s, e, e).unwrap();
    assert_eq!(total(&q), &Money::new(0, "USD"));
    assert_eq!(q.line_items[0].amount, Amount::money(0, "USD"));
    assert_eq!(terms(&q).period_start_ms, e);
}

#[test]
fn an_upgrade_mid_period_charges_the_difference_for_the_remaining_time() {
    // 30-day April; change after 12 days: 18/30 of the period remains.
    let (s, e) = (at(2024, 4, 1), at(2024, 5, 1));
    let q = change("basic", "pro", s, e, at(2024, 4, 13)).unwrap();
    assert_eq!(q.line_items[0].code, "proration:credit:basic");
    assert_eq!(q.line_items[0].amount, Amount::money(-600, "USD"));
    assert_eq!(q.line_items[1].code, "proration:charge:pro");
    assert_eq!(q.line_items[1].amount, Amount::money(1800, "USD"));
    assert_eq!(total(&q), &Money::new(1200, "USD"));
    assert_eq!(
        terms(&q),
        &SubscriptionTerms {
            plan_id: "pro".into(),
            period_start_ms: at(2024, 4, 13),
            period_end_ms: e,
            trial_end_ms: None,
        }
    );
    assert_eq!(
        q.line_items[0].description,
        "Unused time on Basic (2024-04-13 to 2024-05-01)"
    );
    assert_lines_add_up(&q);
}

#[test]
fn a_downgrade_gives_a_credit_as_a_negative_total() {
    let (s, e) = (at(2024, 4, 1), at(2024, 5, 1));
    let q = change("pro", "basic", s, e, at(2024, 4, 16)).unwrap();
    // 15/30 remain: credit 1500, charge 500.
    assert_eq!(total(&q), &Money::new(-1000, "USD"));
    assert!(total(&q).is_negative());
}

#[test]
fn proration_rounds_half_away_from_zero() {
    // 999 × 1/2 = 499.5 → 500 on the charge; 1000 × 1/2 = 500 on the credit.
    let (s, e) = (0, 2 * MS_PER_DAY);
    let q = renewal("basic", s).unwrap(); // sanity: the plan exists
    assert_eq!(total(&q).amount, 1000);
    let q = change("basic", "odd", s, e, MS_PER_DAY).unwrap();
    assert_eq!(q.line_items[0].amount, Amount::money(-500, "USD"));
    assert_eq!(q.line_items[1].amount, Amount::money(500, "USD"));
    // Downgrade the other way: the credit rounds to -500 too.
    let q = change("odd", "basic", s, e, MS_PER_DAY).unwrap();
    assert_eq!(q.line_items[0].amount, Amount::money(-500, "USD"));
}

#[test]
fn a_switch_to_another_interval_prorates_the_new_plan_over_its_own_interval() {
    // Yearly period 2024-01-01..2025-01-01 (366 days); change on 2024-12-01,
    // 31 days remain. Monthly "basic" measured from Jan 1 is a 31-day month:
    // the charge is one full month.
    let (s, e) = (at(2024, 1, 1), at(2025, 1, 1));
    let q = change("pro-yearly", "basic", s, e, at(2024, 12, 1)).unwrap();
    assert_eq!(q.line_items[1].amount, Amount::money(1000, "USD"));
    // 30000 × 31/366 = 2540.98 → 2541.
    assert_eq!(q.line_items[0].amount, Amount::money(-2541, "USD"));
    assert_lines_add_up(&q);
}

#[test]
fn plans_in_different_currencies_cannot_be_swapped() {
    let (s, e) = (at(2024, 4, 1), at(2024, 5, 1));
    let err = change("basic", "euro", s, e, s).unwrap_err();
    assert_eq!(err.rejection_code(), Some("currency-mismatch"));
}

#[test]
fn a_change_outside_the_period_is_rejected() {
    let (s, e) = (at(2024, 4, 1), at(2024, 5, 1));
    for (start, end, at) in [(s, e, s - 1), (s, e, e + 1), (e, s, s), (s, s, s)] {
        let err = change("basic", "pro", start, end, at).unwrap_err();
        assert_eq!(err.rejection_code(), Some("invalid-period"));
    }
}

#[test]
fn instants_at_the_edge_of_the_range_are_rejected_not_panicking() {
    assert_eq!(
        renewal("basic", i64::MAX).unwrap_err().rejection_code(),
        Some("invalid-period")
    );
    assert_eq!(
        start("pro", i64::MAX).unwrap_err().rejection_code(),
        Some("invalid-period")
    );
    let err = change("basic", "pro", i64::MIN, i64::MAX, 0).unwrap_err();
    assert_eq!(err.rejection_code(), Some("invalid-period"));
}

#[test]
fn other_request_kinds_are_unsupported() {
    let ctx = testing::context().config_json(config()).build();
    let request = PricingRequest::CreditUsage(CreditUsage {
        feature: "x".into(),
        units: 1,
        metadata: vec![],
    });
    assert!(matches!(
        testing::price(price, &ctx, request),
        Err(PolicyError::Unsupported(_))
    ));
}

#[test]
fn an_empty_config_is_refused_by_check_config() {
    let err = testing::check_pricing_config(price, "{}").unwrap_err();
    assert!(err.contains("missing field `plans`"), "{err}");
}

mod anchor;
mod trial_change;

use super::*;
use serde_json::json;

fn config() -> serde_json::Value {
    json!({
        "features": {
            "image-render": { "credits_per_unit": 5, "minimum": 10 },
            "api-call": { "credits_per_unit": 1 },
            "free-thing": { "credits_per_unit": 0 }
        },
        "minimum_per_use": 1,
        "multipliers": { "gold": 800, "free": 1500, "vip": 0 }
    })
}

fn usage(feature: &str, units: i64) -> PricingRequest {
    PricingRequest::CreditUsage(CreditUsage {
        feature: feature.into(),
        units,
        metadata: vec![],
    })
}

fn quote_for(tier: Option<&str>, feature: &str, units: i64) -> Result<Quote, PolicyError> {
    let mut ctx = testing::context().config_json(config());
    if let Some(tier) = tier {
        ctx = ctx.attribute("tier", tier);
    }
    testing::price(price, &ctx.build(), usage(feature, units))
}

fn total(quote: &Quote) -> i64 {
    quote.total.as_credits().expect("a credit total").0
}

fn assert_lines_add_up(quote: &Quote) {
    let sum = LineItem::total(Amount::credits(0), &quote.line_items).unwrap();
    assert_eq!(sum, quote.total);
}

#[test]
fn cost_is_units_times_cost_per_unit_without_a_tier() {
    let quote = quote_for(None, "api-call", 7).unwrap();
    assert_eq!(total(&quote), 7);
    assert_eq!(quote.line_items.len(), 1);
    assert_eq!(quote.line_items[0].code, "feature:api-call");
    assert_eq!(quote.line_items[0].quantity, 7);
    assert_lines_add_up(&quote);
}

#[test]
fn a_tier_multiplier_discounts_and_explains_itself() {
    let quote = quote_for(Some("gold"), "image-render", 10).unwrap();
    // 10 × 5 = 50, × 0.8 = 40.
    assert_eq!(total(&quote), 40);
    assert_eq!(quote.line_items[1].code, "multiplier:tier:gold");
    assert_eq!(quote.line_items[1].amount, Amount::credits(-10));
    assert!(quote.line_items[1].description.contains("×0.8"));
    assert_lines_add_up(&quote);
}

#[test]
fn a_tier_multiplier_can_surcharge() {
    let quote = quote_for(Some("free"), "image-render", 3).unwrap();
    // 3 × 5 = 15, × 1.5 = 22.5 → 23 (rounded up).
    assert_eq!(total(&quote), 23);
    assert_lines_add_up(&quote);
}

#[test]
fn fractions_of_a_credit_are_rounded_up() {
    // 1 × 1 × 0.8 = 0.8 → 1: the multiplier changes nothing, so no line.
    let quote = quote_for(Some("gold"), "api-call", 1).unwrap();
    assert_eq!(total(&quote), 1);
    assert_eq!(quote.line_items.len(), 1);
    // 3 × 1 × 0.8 = 2.4 → 3, not 2.
    let quote = quote_for(Some("gold"), "api-call", 3).unwrap();
    assert_eq!(total(&quote), 3);
    assert_lines_add_up(&quote);
}

#[test]
fn an_unlisted_tier_uses_the_default_multiplier() {
    let quote = quote_for(Some("bronze"), "api-call", 4).unwrap();
    assert_eq!(total(&quote), 4);
    assert_eq!(quote.line_items.len(), 1);
}

#[test]
fn the_minimum_charge_tops_up_a_small_use() {
    let quote = quote_for(None, "image-render", 1).unwrap();
    // 1 × 5 = 5 < minimum 10.
    assert_eq!(total(&quote), 10);
    let minimum = quote.line_items.last().unwrap();
    assert_eq!(minimum.code, "minimum-charge");
    assert_eq!(minimum.amount, Amount::credits(5));
    assert_lines_add_up(&quote);
}

#[test]
fn the_minimum_is_exactly_met_at_the_boundary() {
    let quote = quote_for(None, "image-render", 2).unwrap();
    assert_eq!(total(&quote), 10);
    assert_eq!(quote.line_items.len(), 1);
}

#[test]
fn the_top_level_minimum_applies_to_features_without_their_own() {
    // vip multiplier is 0: 0 credits, topped up to minimum_per_use = 1.
    let quote = quote_for(Some("vip"), "api-call", 100).unwrap();
    assert_eq!(total(&quote), 1);
    assert_lines_add_up(&quote);
}

#[test]
fn a_free_feature_costs_the_minimum() {
    let quote = quote_for(None, "free-thing", 5).unwrap();
    assert_eq!(total(&quote), 1);
}

#[test]
fn an_unknown_feature_is_rejected() {
    let error = quote_for(None, "teleport", 1).unwrap_err();
    assert_eq!(error.rejection_code(), Some("unknown-feature"));
}

#[test]
fn zero_or_negative_units_are_rejected() {
    assert_eq!(
        quote_for(None, "api-call", 0).unwrap_err().rejection_code(),
        Some("invalid-units")
    );
    assert_eq!(
        quote_for(None, "api-call", -3)
            .unwrap_err()
            .rejection_code(),
        Some("invalid-units")
    );
}

#[test]
fn an_overflowing_cost_is_rejected_not_wrapped() {
    let error = quote_for(None, "image-render", i64::MAX / 2).unwrap_err();
    assert_eq!(error.rejection_code(), Some("amount-overflow"));
}

#[test]
fn a_multiplier_that_would_overflow_is_rejected() {
    let ctx = testing::context()
        .attribute("tier", "huge")
        .config_json(json!({
            "features": { "x": { "credits_per_unit": i64::MAX } },
            "multipliers": { "huge": 2000 }
        }))
        .build();
    let error = testing::price(price, &ctx, usage("x", 1)).unwrap_err();
    assert_eq!(error.rejection_code(), Some("amount-overflow"));
}

#[test]
fn other_request_kinds_are_unsupported() {
    let ctx = testing::context().config_json(config()).build();
    let request = PricingRequest::Metered(MeteredPeriod {
        period_start_ms: 0,
        period_end_ms: 1,
        usage: vec![],
    });
    assert!(matches!(
        testing::price(price, &ctx, request),
        Err(PolicyError::Unsupported(_))
    ));
}

#[test]
fn a_bad_config_is_invalid_config() {
    let ctx = testing::context().config_text(r#"{"features": 3}"#).build();
    match testing::price(price, &ctx, usage("api-call", 1)) {
        Err(PolicyError::InvalidConfig(message)) => assert!(message.contains("features")),
        other => panic!("unexpected {other:?}"),
    }
    assert!(testing::check_pricing_config(price, &config().to_string()).is_ok());
}

#[test]
fn a_custom_attribute_selects_the_multiplier() {
    let ctx = testing::context()
        .attribute("tier", "gold")
        .attribute("plan", "startup")
        .config_json(json!({
            "features": { "x": { "credits_per_unit": 10 } },
            "multiplier_attribute": "plan",
            "multipliers": { "startup": 500, "gold": 100 }
        }))
        .build();
    let quote = testing::price(price, &ctx, usage("x", 1)).unwrap();
    assert_eq!(total(&quote), 5);
    assert_eq!(quote.line_items[1].code, "multiplier:plan:startup");
}

#[test]
fn per_mille_is_written_as_a_decimal() {
    assert_eq!(per_mille_text(1000), "1");
    assert_eq!(per_mille_text(1500), "1.5");
    assert_eq!(per_mille_text(800), "0.8");
    assert_eq!(per_mille_text(1234), "1.234");
    assert_eq!(per_mille_text(5), "0.005");
}

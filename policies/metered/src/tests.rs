use super::*;
use serde_json::json;

fn config() -> serde_json::Value {
    json!({
        "currency": "USD",
        "metrics": {
            "api-calls": {
                "free": 1000,
                "graduated": [
                    { "up_to": 10000, "price": 10, "per": 1000 },
                    { "up_to": 50000, "price": 5, "per": 1000 },
                    { "price": 2, "per": 1000 }
                ]
            },
            "seats": {
                "graduated": [
                    { "up_to": 5, "price": 1000 },
                    { "price": 800 }
                ]
            },
            "storage-gb": {
                "volume": [
                    { "up_to": 100, "price": 200 },
                    { "up_to": 1000, "price": 150 },
                    { "price": 100 }
                ]
            },
            "emails": {
                "free": 100,
                "package": { "size": 1000, "price": 500 }
            }
        }
    })
}

fn rate_with(config: serde_json::Value, usage: &[(&str, i64)]) -> Result<Quote, PolicyError> {
    let ctx = testing::context().config_json(config).build();
    let period = MeteredPeriod {
        period_start_ms: 0,
        period_end_ms: 1,
        usage: usage
            .iter()
            .map(|(metric, quantity)| MetricUsage {
                metric: metric.to_string(),
                quantity: *quantity,
            })
            .collect(),
    };
    testing::price(price, &ctx, PricingRequest::Metered(period))
}

fn rate(usage: &[(&str, i64)]) -> Result<Quote, PolicyError> {
    rate_with(config(), usage)
}

fn total(quote: &Quote) -> i64 {
    let zero = quote.total.zero_like();
    assert_eq!(
        LineItem::total(zero, &quote.line_items).unwrap(),
        quote.total
    );
    quote.total.as_money().expect("money").amount
}

fn line<'a>(quote: &'a Quote, code: &str) -> &'a LineItem {
    quote
        .line_items
        .iter()
        .find(|line| line.code == code)
        .unwrap_or_else(|| panic!("no line {code} in {:?}", quote.line_items))
}

fn amount(line: &LineItem) -> i64 {
    line.amount.as_money().unwrap().amount
}

#[test]
fn graduated_prices_each_tier_at_its_own_rate() {
    // 61,000 calls: 1,000 free, then 10,000 × 0.01 + 40,000 × 0.005 + 10,000 × 0.002.
    let q = rate(&[("api-calls", 61_000)]).unwrap();
    assert_eq!(line(&q, "metric:api-calls:free").quantity, 1000);
    assert_eq!(amount(line(&q, "metric:api-calls:tier-1")), 100);
    assert_eq!(amount(line(&q, "metric:api-calls:tier-2")), 200);
    assert_eq!(line(&q, "metric:api-calls:tier-3").quantity, 10_000);
    assert_eq!(amount(line(&q, "metric:api-calls:tier-3")), 20);
    assert_eq!(total(&q), 320);
    assert_eq!(q.total, Amount::money(320, "USD"));
}

#[test]
fn graduated_tier_edges_are_inclusive() {
    let q = rate(&[("seats", 5)]).unwrap();
    assert_eq!(total(&q), 5000);
    assert_eq!(q.line_items.len(), 1);
    assert_eq!(
        q.line_items[0].description,
        "seats: units 1–5 at 1000 per unit"
    );
    let q = rate(&[("seats", 6)]).unwrap();
    assert_eq!(total(&q), 5800);
    assert_eq!(line(&q, "metric:seats:tier-2").quantity, 1);
    assert_eq!(
        line(&q, "metric:seats:tier-2").description,
        "seats: units 6–6 at 800 per unit"
    );
}

#[test]
fn the_free_allowance_is_deducted_before_the_tiers() {
    let q = rate(&[("api-calls", 1000)]).unwrap();
    assert_eq!(total(&q), 0);
    assert_eq!(q.line_items.len(), 1);
    let q = rate(&[("api-calls", 1001)]).unwrap();
    // One billable call at 10 per 1000 = 0.01 → rounds to 0.
    assert_eq!(line(&q, "metric:api-calls:tier-1").quantity, 1);
    assert_eq!(total(&q), 0);
    let q = rate(&[("api-calls", 11_000)]).unwrap();
    assert_eq!(total(&q), 100);
    assert!(
        q.line_items
            .iter()
            .all(|l| l.code != "metric:api-calls:tier-2")
    );
}

#[test]
fn sub_unit_prices_round_half_away_from_zero_per_line() {
    // 1,050 billable calls at 10 per 1000 = 10.5 → 11.
    let q = rate(&[("api-calls", 2050)]).unwrap();
    assert_eq!(total(&q), 11);
}

#[test]
fn zero_usage_produces_no_charge() {
    let q = rate(&[
        ("api-calls", 0),
        ("seats", 0),
        ("storage-gb", 0),
        ("emails", 0),
    ])
    .unwrap();
    assert_eq!(total(&q), 0);
    assert!(q.line_items.is_empty());
    let q = rate(&[]).unwrap();
    assert_eq!(q.total, Amount::money(0, "USD"));
}

#[test]
fn volume_prices_everything_at_the_tier_the_quantity_falls_in() {
    let q = rate(&[("storage-gb", 100)]).unwrap();
    assert_eq!(total(&q), 20_000);
    assert_eq!(q.line_items[0].code, "metric:storage-gb:tier-1");
    let q = rate(&[("storage-gb", 101)]).unwrap();
    assert_eq!(total(&q), 101 * 150);
    assert_eq!(q.line_items[0].code, "metric:storage-gb:tier-2");
    let q = rate(&[("storage-gb", 1000)]).unwrap();
    assert_eq!(total(&q), 150_000);
    let q = rate(&[("storage-gb", 1001)]).unwrap();
    assert_eq!(total(&q), 100_100);
    assert_eq!(q.line_items[0].code, "metric:storage-gb:tier-3");
}

#[test]
fn packages_are_rounded_up() {
    // 100 free, then 1 → 1 package, 1000 → 1, 1001 → 2.
    assert_eq!(total(&rate(&[("emails", 100)]).unwrap()), 0);
    let q = rate(&[("emails", 101)]).unwrap();
    assert_eq!(line(&q, "metric:emails:package").quantity, 1);
    assert_eq!(total(&q), 500);
    assert_eq!(total(&rate(&[("emails", 1100)]).unwrap()), 500);
    assert_eq!(total(&rate(&[("emails", 1101)]).unwrap()), 1000);
}

#[test]
fn several_metrics_are_summed_in_request_order() {
    let q = rate(&[("seats", 2), ("storage-gb", 1)]).unwrap();
    assert_eq!(q.line_items[0].code, "metric:seats:tier-1");
    assert_eq!(q.line_items[1].code, "metric:storage-gb:tier-1");
    assert_eq!(total(&q), 2200);
}

#[test]
fn an_unknown_metric_is_rejected_by_default() {
    let err = rate(&[("seats", 1), ("gpu-hours", 3)]).unwrap_err();
    assert_eq!(err.rejection_code(), Some("unknown-metric"));
}

#[test]
fn an_unknown_metric_can_be_ignored_and_is_reported_in_metadata() {
    let mut config = config();
    config["unknown_metrics"] = json!("ignore");
    let q = rate_with(config, &[("gpu-hours", 3), ("seats", 1), ("tpu", 1)]).unwrap();
    assert_eq!(total(&q), 1000);
    assert_eq!(
        q.metadata,
        vec![("ignored_metrics".to_string(), "gpu-hours,tpu".to_string())]
    );
}

#[test]
fn a_negative_quantity_is_rejected() {
    let err = rate(&[("seats", -1)]).unwrap_err();
    assert_eq!(err.rejection_code(), Some("invalid-quantity"));
}

#[test]
fn a_metric_reported_twice_is_rejected() {
    let err = rate(&[("seats", 1), ("seats", 2)]).unwrap_err();
    assert_eq!(err.rejection_code(), Some("duplicate-metric"));
}

#[test]
fn overflow_is_rejected_not_wrapped() {
    let err = rate(&[("seats", i64::MAX)]).unwrap_err();
    assert_eq!(err.rejection_code(), Some("amount-overflow"));
    let err = rate(&[("storage-gb", i64::MAX)]).unwrap_err();
    assert_eq!(err.rejection_code(), Some("amount-overflow"));
    // A huge quantity at a tiny per-unit price still fits.
    let q = rate(&[("api-calls", i64::MAX)]).unwrap();
    assert!(total(&q) > 0);
    // Package count × price overflows.
    let big = json!({"currency":"USD","metrics":{"p":{"package":{"size":1,"price":i64::MAX}}}});
    let err = rate_with(big.clone(), &[("p", 2)]).unwrap_err();
    assert_eq!(err.rejection_code(), Some("amount-overflow"));
    assert_eq!(total(&rate_with(big, &[("p", 1)]).unwrap()), i64::MAX);
}

#[test]
fn lines_summing_past_the_range_are_rejected() {
    let config = json!({"currency":"USD","metrics":{
        "a":{"package":{"size":1,"price":i64::MAX}},
        "b":{"package":{"size":1,"price":1}}
    }});
    let err = rate_with(config, &[("a", 1), ("b", 1)]).unwrap_err();
    assert_eq!(err.rejection_code(), Some("amount-overflow"));
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
fn the_example_config_passes_check_config() {
    assert_eq!(
        testing::check_pricing_config(price, &config().to_string()),
        Ok(())
    );
}

use super::*;
use serde_json::json;

fn config() -> serde_json::Value {
    json!({
        "products": {
            "widget": {
                "name": "Widget",
                "prices": { "USD": 1000, "EUR": 900 },
                "quantity_breaks": [
                    { "min_quantity": 10, "prices": { "USD": 800, "EUR": 700 } },
                    { "min_quantity": 100, "prices": { "USD": 500, "EUR": 450 } }
                ]
            },
            "gadget": { "prices": { "USD": 2550 }, "max_quantity": 5 },
            "sticker": { "prices": { "USD": 5, "JPY": 10 } },
            "free-sample": { "prices": { "USD": 0 } }
        },
        "max_quantity_per_line": 1000,
        "discount": { "attribute": "tier", "per_mille": { "gold": 100, "partner": 125, "staff": 1000, "none": 0 } }
    })
}

fn order_in(currency: &str, items: &[(&str, i64)]) -> PricingRequest {
    PricingRequest::Order(OrderRequest {
        currency: currency.into(),
        items: items
            .iter()
            .map(|(sku, quantity)| OrderItem {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        metadata: vec![],
    })
}

fn quote_for(ctx: &Context, currency: &str, items: &[(&str, i64)]) -> Result<Quote, PolicyError> {
    testing::price(price, ctx, order_in(currency, items))
}

/// An order in USD from a customer without attributes.
fn quote(items: &[(&str, i64)]) -> Result<Quote, PolicyError> {
    quote_in("USD", items)
}

fn quote_in(currency: &str, items: &[(&str, i64)]) -> Result<Quote, PolicyError> {
    let ctx = testing::context().config_json(config()).build();
    quote_for(&ctx, currency, items)
}

fn quote_as(tier: &str, items: &[(&str, i64)]) -> Result<Quote, PolicyError> {
    let ctx = testing::context()
        .attribute("tier", tier)
        .config_json(config())
        .build();
    quote_for(&ctx, "USD", items)
}

fn rejection(result: Result<Quote, PolicyError>) -> String {
    result
        .expect_err("a rejection")
        .rejection_code()
        .expect("a rejection code")
        .to_owned()
}

fn amounts(quote: &Quote) -> Vec<(&str, i64, i64)> {
    quote
        .line_items
        .iter()
        .map(|l| {
            let money = l.amount.as_money().expect("money lines");
            (l.code.as_str(), l.quantity, money.amount)
        })
        .collect()
}

fn assert_lines_add_up(quote: &Quote) {
    let zero = quote.total.zero_like();
    assert_eq!(
        LineItem::total(zero, &quote.line_items).unwrap(),
        quote.total
    );
}

// ── Lines and prices ─────────────────────────────────────────────────────────

#[test]
fn one_item_is_priced_at_its_unit_price() {
    let q = quote(&[("widget", 3)]).unwrap();
    assert_eq!(q.total, Amount::money(3000, "USD"));
    assert_eq!(amounts(&q), [("sku:widget", 3, 3000)]);
    assert_eq!(
        q.line_items[0].description,
        "3 × Widget at 1000 USD minor units each"
    );
    assert!(q.subscription.is_none());
}

#[test]
fn each_sku_gets_a_line_in_the_order_it_first_appears() {
    let q = quote(&[("gadget", 2), ("widget", 1), ("sticker", 7)]).unwrap();
    assert_eq!(
        amounts(&q),
        [
            ("sku:gadget", 2, 5100),
            ("sku:widget", 1, 1000),
            ("sku:sticker", 7, 35)
        ]
    );
    assert_eq!(q.total, Amount::money(6135, "USD"));
    assert_lines_add_up(&q);
}

#[test]
fn a_product_without_a_name_is_described_by_its_sku() {
    let q = quote(&[("gadget", 1)]).unwrap();
    assert_eq!(
        q.line_items[0].description,
        "1 × gadget at 2550 USD minor units each"
    );
}

#[test]
fn the_order_currency_picks_the_price() {
    let q = quote_in("EUR", &[("widget", 2)]).unwrap();
    assert_eq!(q.total, Amount::money(1800, "EUR"));
    let q = quote_in("JPY", &[("sticker", 3)]).unwrap();
    assert_eq!(q.total, Amount::money(30, "JPY"));
}

#[test]
fn a_free_product_is_a_zero_line() {
    let q = quote(&[("free-sample", 4)]).unwrap();
    assert_eq!(amounts(&q), [("sku:free-sample", 4, 0)]);
    assert_eq!(q.total, Amount::money(0, "USD"));
}

#[test]
fn items_for_the_same_sku_are_merged_into_one_line() {
    let q = quote(&[("widget", 2), ("sticker", 1), ("widget", 3)]).unwrap();
    assert_eq!(
        amounts(&q),
        [("sku:widget", 5, 5000), ("sku:sticker", 1, 5)]
    );
}

// ── Quantity breaks ──────────────────────────────────────────────────────────

#[test]
fn a_quantity_break_prices_every_unit_from_its_threshold_on() {
    assert_eq!(
        quote(&[("widget", 9)]).unwrap().total,
        Amount::money(9000, "USD")
    );
    let q = quote(&[("widget", 10)]).unwrap();
    assert_eq!(q.total, Amount::money(8000, "USD"));
    assert_eq!(
        q.line_items[0].description,
        "10 × Widget at 800 USD minor units each (price from 10 units)"
    );
    assert_eq!(
        quote(&[("widget", 99)]).unwrap().total,
        Amount::money(79_200, "USD")
    );
}

#[test]
fn the_highest_break_reached_wins() {
    assert_eq!(
        quote(&[("widget", 100)]).unwrap().total,
        Amount::money(50_000, "USD")
    );
    assert_eq!(
        quote_in("EUR", &[("widget", 250)]).unwrap().total,
        Amount::money(112_500, "EUR")
    );
}

#[test]
fn a_split_order_reaches_the_break_like_a_single_line() {
    let split = quote(&[("widget", 6), ("widget", 4)]).unwrap();
    let single = quote(&[("widget", 10)]).unwrap();
    assert_eq!(split, single);
}

// ── Rejections ───────────────────────────────────────────────────────────────

#[test]
fn an_unknown_sku_is_rejected() {
    let err = quote(&[("widget", 1), ("gizmo", 1)]).unwrap_err();
    assert_eq!(err.rejection_code(), Some("unknown-sku"));
    assert!(format!("{err:?}").contains("`gizmo`"), "{err:?}");
}

#[test]
fn a_sku_without_a_price_in_the_order_currency_is_rejected() {
    // gadget is priced in USD only.
    assert_eq!(
        rejection(quote_in("EUR", &[("widget", 1), ("gadget", 1)])),
        "currency-not-priced"
    );
    // A currency nothing is priced in, or not a currency code at all.
    assert_eq!(
        rejection(quote_in("GBP", &[("widget", 1)])),
        "currency-not-priced"
    );
    assert_eq!(
        rejection(quote_in("usd", &[("widget", 1)])),
        "currency-not-priced"
    );
}

#[test]
fn a_quantity_below_one_is_rejected() {
    assert_eq!(rejection(quote(&[("widget", 0)])), "invalid-quantity");
    assert_eq!(rejection(quote(&[("widget", -3)])), "invalid-quantity");
}

#[test]
fn an_empty_order_is_rejected() {
    assert_eq!(rejection(quote(&[])), "empty-order");
}

#[test]
fn a_line_above_its_products_limit_is_rejected() {
    assert!(quote(&[("gadget", 5)]).is_ok());
    assert_eq!(rejection(quote(&[("gadget", 6)])), "max-quantity-exceeded");
    // The limit counts the merged line, not each item.
    assert_eq!(
        rejection(quote(&[("gadget", 3), ("gadget", 3)])),
        "max-quantity-exceeded"
    );
}

#[test]
fn a_product_without_its_own_limit_takes_the_line_limit() {
    assert!(quote(&[("sticker", 1000)]).is_ok());
    assert_eq!(
        rejection(quote(&[("sticker", 1001)])),
        "max-quantity-exceeded"
    );
}

#[test]
fn without_any_limit_a_large_quantity_is_priced() {
    let mut config = config();
    config
        .as_object_mut()
        .unwrap()
        .remove("max_quantity_per_line");
    let ctx = testing::context().config_json(config).build();
    let q = quote_for(&ctx, "USD", &[("sticker", 1_000_000)]).unwrap();
    assert_eq!(q.total, Amount::money(5_000_000, "USD"));
}

// ── Checked arithmetic ───────────────────────────────────────────────────────

fn big_config() -> serde_json::Value {
    json!({ "products": {
        "max": { "prices": { "USD": i64::MAX } },
        "half": { "prices": { "USD": i64::MAX / 2 + 1 } }
    }})
}

fn quote_big(items: &[(&str, i64)]) -> Result<Quote, PolicyError> {
    let ctx = testing::context().config_json(big_config()).build();
    quote_for(&ctx, "USD", items)
}

#[test]
fn a_line_amount_that_overflows_is_rejected_not_wrapped() {
    assert_eq!(rejection(quote_big(&[("max", 2)])), "amount-overflow");
    assert!(quote_big(&[("max", 1)]).is_ok());
}

#[test]
fn a_total_that_overflows_is_rejected_not_wrapped() {
    assert_eq!(
        rejection(quote_big(&[("half", 1), ("max", 1)])),
        "amount-overflow"
    );
}

#[test]
fn a_merged_quantity_that_overflows_is_rejected_not_wrapped() {
    assert_eq!(
        rejection(quote_big(&[("max", i64::MAX), ("max", 1)])),
        "amount-overflow"
    );
}

#[test]
fn a_discount_on_the_largest_subtotal_does_not_overflow() {
    let mut config = big_config();
    config["discount"] = json!({ "per_mille": { "gold": 1000 } });
    let ctx = testing::context()
        .attribute("tier", "gold")
        .config_json(config)
        .build();
    let q = quote_for(&ctx, "USD", &[("max", 1)]).unwrap();
    assert_eq!(q.total, Amount::money(0, "USD"));
}

// ── Discounts ────────────────────────────────────────────────────────────────

#[test]
fn a_customer_attribute_value_discounts_the_subtotal() {
    let q = quote_as("gold", &[("widget", 2), ("gadget", 1)]).unwrap();
    // Subtotal 2000 + 2550 = 4550; 10 % off is 455.
    assert_eq!(
        amounts(&q),
        [
            ("sku:widget", 2, 2000),
            ("sku:gadget", 1, 2550),
            ("discount:tier:gold", 1, -455)
        ]
    );
    assert_eq!(q.total, Amount::money(4095, "USD"));
    assert_eq!(
        q.line_items[2].description,
        "tier gold: 10% off the subtotal"
    );
    assert_lines_add_up(&q);
}

#[test]
fn the_discount_applies_after_quantity_breaks() {
    // 10 widgets at the 800 break = 8000; 12.5 % off = 1000.
    let q = quote_as("partner", &[("widget", 10)]).unwrap();
    assert_eq!(q.total, Amount::money(7000, "USD"));
    assert_eq!(
        q.line_items[1].description,
        "tier partner: 12.5% off the subtotal"
    );
}

#[test]
fn the_discount_rounds_half_away_from_zero() {
    // 5 × 10 % = 0.5 → 1 off; 45 × 12.5 % = 5.625 → 6 off.
    let q = quote_as("gold", &[("sticker", 1)]).unwrap();
    assert_eq!(q.total, Amount::money(4, "USD"));
    let q = quote_as("partner", &[("sticker", 9)]).unwrap();
    assert_eq!(q.total, Amount::money(39, "USD"));
}

#[test]
fn a_full_discount_makes_the_order_free() {
    let q = quote_as("staff", &[("gadget", 2)]).unwrap();
    assert_eq!(q.total, Amount::money(0, "USD"));
    assert_eq!(
        q.line_items[1].description,
        "tier staff: 100% off the subtotal"
    );
}

#[test]
fn no_discount_line_without_a_listed_value_or_when_it_rounds_to_nothing() {
    for tier in ["silver", "none"] {
        let q = quote_as(tier, &[("widget", 1)]).unwrap();
        assert_eq!(q.line_items.len(), 1, "{tier}");
        assert_eq!(q.total, Amount::money(1000, "USD"));
    }
    // No attribute at all.
    assert_eq!(quote(&[("widget", 1)]).unwrap().line_items.len(), 1);
    // 10 % of a free sample is nothing.
    let q = quote_as("gold", &[("free-sample", 1)]).unwrap();
    assert_eq!(q.line_items.len(), 1);
}

#[test]
fn the_first_occurrence_of_the_attribute_chooses_the_discount() {
    let ctx = testing::context()
        .attribute("tier", "gold")
        .attribute("tier", "staff")
        .config_json(config())
        .build();
    let q = quote_for(&ctx, "USD", &[("widget", 1)]).unwrap();
    assert_eq!(q.total, Amount::money(900, "USD"));
}

#[test]
fn the_discount_can_be_chosen_by_another_attribute() {
    let mut config = config();
    config["discount"] = json!({ "attribute": "plan", "per_mille": { "enterprise": 200 } });
    let ctx = testing::context()
        .attribute("tier", "gold")
        .attribute("plan", "enterprise")
        .config_json(config)
        .build();
    let q = quote_for(&ctx, "USD", &[("widget", 1)]).unwrap();
    assert_eq!(q.line_items[1].code, "discount:plan:enterprise");
    assert_eq!(q.total, Amount::money(800, "USD"));
}

#[test]
fn percent_text_shows_tenths_only_when_needed() {
    assert_eq!(percent(100), "10%");
    assert_eq!(percent(125), "12.5%");
    assert_eq!(percent(5), "0.5%");
    assert_eq!(percent(1000), "100%");
}

// ── The contract around the function ─────────────────────────────────────────

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
fn check_config_accepts_the_example_and_refuses_an_empty_block() {
    assert_eq!(
        testing::check_pricing_config(price, &config().to_string()),
        Ok(())
    );
    let err = testing::check_pricing_config(price, "{}").unwrap_err();
    assert!(err.contains("missing field `products`"), "{err}");
}

#[test]
fn a_config_refused_at_call_time_is_invalid_config() {
    let ctx = testing::context()
        .config_text(r#"{"products":{"a":{"prices":{"USD":-1}}}}"#)
        .build();
    match quote_for(&ctx, "USD", &[("a", 1)]) {
        Err(PolicyError::InvalidConfig(message)) => {
            assert!(message.contains("products.a.prices.USD"), "{message}")
        }
        other => panic!("unexpected {other:?}"),
    }
}

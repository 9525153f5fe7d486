use super::*;
use rules::id;
use serde_json::json;

fn config() -> serde_json::Value {
    json!({
        "allowed_currencies": ["USD", "EUR"],
        "max_order_amount": {
            "USD": { "default": 10000, "by_tier": { "gold": 100000 } }
        },
        "required_metadata": {
            "order": ["order-ref"],
            "credit_use": ["request-id"],
            "payment": ["invoice"]
        },
        "daily_credit_cap": { "default": 100, "by_tier": { "gold": 1000 } },
        "usage": { "known_metrics": ["api-calls", "storage-gb"] },
        "allowed_payment_methods": ["card", "credits"]
    })
}

fn check(tier: Option<&str>, subject: ValidationSubject) -> Vec<Violation> {
    check_with(config(), tier, subject)
}

fn check_with(
    config: serde_json::Value,
    tier: Option<&str>,
    subject: ValidationSubject,
) -> Vec<Violation> {
    let mut ctx = testing::context().config_json(config);
    if let Some(tier) = tier {
        ctx = ctx.attribute("tier", tier);
    }
    testing::validate(validate, &ctx.build(), subject).expect("validation answers")
}

fn rule_ids(violations: &[Violation]) -> Vec<&str> {
    violations.iter().map(|v| v.rule_id.as_str()).collect()
}

fn meta(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn order(currency: &str, total: i64) -> OrderSubject {
    OrderSubject {
        currency: currency.into(),
        items: vec![OrderItem {
            sku: "sku-1".into(),
            quantity: 1,
        }],
        total: Money::new(total, currency),
        metadata: meta(&[("order-ref", "o-1")]),
    }
}

fn credit_use(credits: i64, spent_today: i64) -> CreditUseSubject {
    CreditUseSubject {
        feature: "render".into(),
        units: 1,
        credits,
        balance: 1_000_000,
        spent_today,
        metadata: meta(&[("request-id", "r-1")]),
    }
}

fn event(id: &str, metric: &str, quantity: i64) -> UsageEvent {
    UsageEvent {
        event_id: id.into(),
        metric: metric.into(),
        quantity,
        timestamp_ms: 0,
        properties: vec![],
    }
}

fn payment(amount: i64, currency: &str, method: &str) -> PaymentSubject {
    PaymentSubject {
        order_id: "o-1".into(),
        amount: Money::new(amount, currency),
        method: method.into(),
        metadata: meta(&[("invoice", "inv-1")]),
    }
}

#[test]
fn a_compliant_order_passes() {
    assert!(check(None, ValidationSubject::Order(order("USD", 10000))).is_empty());
}

#[test]
fn the_order_limit_is_inclusive_and_depends_on_the_tier() {
    let over = ValidationSubject::Order(order("USD", 10001));
    let violations = check(None, over.clone());
    assert_eq!(rule_ids(&violations), [id::MAX_ORDER_AMOUNT]);
    assert!(violations[0].message.contains("customers without a tier"));
    assert!(check(Some("gold"), over.clone()).is_empty());
    // An unlisted tier uses the default.
    assert_eq!(
        rule_ids(&check(Some("silver"), over)),
        [id::MAX_ORDER_AMOUNT]
    );
    let gold_over = ValidationSubject::Order(order("USD", 100001));
    let violations = check(Some("gold"), gold_over);
    assert!(violations[0].message.contains("tier `gold`"));
}

#[test]
fn a_currency_without_a_limit_is_not_limited() {
    assert!(check(None, ValidationSubject::Order(order("EUR", i64::MAX))).is_empty());
}

#[test]
fn an_order_in_a_currency_not_allowed_is_refused() {
    let violations = check(None, ValidationSubject::Order(order("GBP", 1)));
    assert_eq!(rule_ids(&violations), [id::CURRENCY_NOT_ALLOWED]);
}

#[test]
fn an_order_total_in_another_currency_is_refused() {
    let mut subject = order("USD", 100);
    subject.total.currency = "EUR".into();
    let violations = check(None, ValidationSubject::Order(subject));
    assert_eq!(rule_ids(&violations), [id::ORDER_TOTAL_CURRENCY]);
}

#[test]
fn an_order_item_with_zero_quantity_is_refused() {
    let mut subject = order("USD", 100);
    subject.items.push(OrderItem {
        sku: "free".into(),
        quantity: 0,
    });
    let violations = check(None, ValidationSubject::Order(subject));
    assert_eq!(rule_ids(&violations), [id::ORDER_ITEM_QUANTITY]);
}

#[test]
fn missing_or_empty_required_metadata_is_one_violation_per_key() {
    let mut subject = order("USD", 100);
    subject.metadata = meta(&[("other", "x")]);
    let violations = check(None, ValidationSubject::Order(subject.clone()));
    assert_eq!(rule_ids(&violations), [id::REQUIRED_METADATA]);
    assert!(violations[0].message.contains("`order-ref`"));
    subject.metadata = meta(&[("order-ref", "")]);
    assert_eq!(
        rule_ids(&check(None, ValidationSubject::Order(subject))),
        [id::REQUIRED_METADATA]
    );
}

#[test]
fn every_broken_rule_is_reported_in_a_fixed_order() {
    let mut subject = order("GBP", 100);
    subject.total.currency = "USD".into();
    subject.total.amount = 20000;
    subject.metadata.clear();
    let violations = check(None, ValidationSubject::Order(subject));
    assert_eq!(
        rule_ids(&violations),
        [
            id::CURRENCY_NOT_ALLOWED,
            id::ORDER_TOTAL_CURRENCY,
            id::MAX_ORDER_AMOUNT,
            id::REQUIRED_METADATA
        ]
    );
}

#[test]
fn the_daily_credit_cap_allows_reaching_it_but_not_passing_it() {
    assert!(check(None, ValidationSubject::CreditUse(credit_use(40, 60))).is_empty());
    let violations = check(None, ValidationSubject::CreditUse(credit_use(41, 60)));
    assert_eq!(rule_ids(&violations), [id::DAILY_CREDIT_CAP]);
    assert!(
        check(
            Some("gold"),
            ValidationSubject::CreditUse(credit_use(41, 60))
        )
        .is_empty()
    );
    assert_eq!(
        rule_ids(&check(
            Some("gold"),
            ValidationSubject::CreditUse(credit_use(1, 1000))
        )),
        [id::DAILY_CREDIT_CAP]
    );
}

#[test]
fn an_overflowing_daily_spend_is_over_the_cap() {
    let violations = check(
        Some("gold"),
        ValidationSubject::CreditUse(credit_use(i64::MAX, 1)),
    );
    assert_eq!(rule_ids(&violations), [id::DAILY_CREDIT_CAP]);
}

#[test]
fn a_credit_use_needs_its_metadata() {
    let mut subject = credit_use(1, 0);
    subject.metadata.clear();
    assert_eq!(
        rule_ids(&check(None, ValidationSubject::CreditUse(subject))),
        [id::REQUIRED_METADATA]
    );
}

#[test]
fn without_a_cap_any_spend_passes() {
    let subject = ValidationSubject::CreditUse(credit_use(1_000_000, 1_000_000));
    assert!(check_with(json!({}), None, subject).is_empty());
}

#[test]
fn a_clean_usage_batch_passes() {
    let events = vec![event("e1", "api-calls", 5), event("e2", "storage-gb", 0)];
    assert!(check(None, ValidationSubject::Usage(events)).is_empty());
    assert!(check(None, ValidationSubject::Usage(vec![])).is_empty());
}

#[test]
fn usage_batch_problems_are_reported_per_event() {
    let events = vec![
        event("e1", "api-calls", -1),
        event("e2", "gpu-hours", 1),
        event("e1", "api-calls", 1),
    ];
    let violations = check(None, ValidationSubject::Usage(events));
    assert_eq!(
        rule_ids(&violations),
        [
            id::USAGE_NEGATIVE_QUANTITY,
            id::USAGE_UNKNOWN_METRIC,
            id::USAGE_DUPLICATE_EVENT
        ]
    );
    assert!(violations[1].message.contains("gpu-hours"));
}

#[test]
fn any_metric_is_known_when_none_are_configured() {
    let events = vec![event("e1", "anything", 1)];
    assert!(check_with(json!({}), None, ValidationSubject::Usage(events)).is_empty());
}

#[test]
fn a_payment_is_checked_for_amount_currency_method_and_metadata() {
    assert!(
        check(
            None,
            ValidationSubject::Payment(payment(100, "EUR", "card"))
        )
        .is_empty()
    );
    let mut bad = payment(0, "JPY", "cash");
    bad.metadata.clear();
    assert_eq!(
        rule_ids(&check(None, ValidationSubject::Payment(bad))),
        [
            id::PAYMENT_AMOUNT,
            id::CURRENCY_NOT_ALLOWED,
            id::PAYMENT_METHOD_NOT_ALLOWED,
            id::REQUIRED_METADATA
        ]
    );
}

#[test]
fn an_empty_config_accepts_everything() {
    let mut subject = order("XYZ", i64::MAX);
    subject.metadata.clear();
    assert!(check_with(json!({}), None, ValidationSubject::Order(subject)).is_empty());
    assert!(
        check_with(
            json!({}),
            None,
            ValidationSubject::Payment(payment(5, "XYZ", "cash"))
        )
        .is_empty()
    );
}

#[test]
fn a_custom_tier_attribute_is_used() {
    let mut config = config();
    config["tier_attribute"] = json!("segment");
    let ctx = testing::context()
        .attribute("tier", "bronze")
        .attribute("segment", "gold")
        .config_json(config)
        .build();
    let violations = testing::validate(
        validate,
        &ctx,
        ValidationSubject::Order(order("USD", 50000)),
    )
    .unwrap();
    assert!(violations.is_empty());
}

#[test]
fn a_bad_config_is_invalid_config() {
    let ctx = testing::context()
        .config_text(r#"{"allowed_currencies":"USD"}"#)
        .build();
    let result = testing::validate(validate, &ctx, ValidationSubject::Usage(vec![]));
    assert!(
        matches!(result, Err(PolicyError::InvalidConfig(m)) if m.contains("allowed_currencies"))
    );
    assert_eq!(
        testing::check_validation_config(validate, &config().to_string()),
        Ok(())
    );
}

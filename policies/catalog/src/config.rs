//! The `config:` block, validated once: `check-config` refuses anything
//! `Config::try_from` refuses, so pricing never meets a negative price, an
//! unordered break list or a discount above 100 %.

use std::collections::BTreeMap;

use fluxpay_policy_sdk::money::check_currency;
use serde::Deserialize;

/// Per-mille factor meaning "all of it": discounts are written in thousandths.
pub const PER_MILLE: i64 = 1000;

/// The validated config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct Config {
    /// The price list, by SKU.
    pub products: BTreeMap<String, Product>,
    /// The discount chosen by a customer attribute, if any.
    pub discount: Option<Discount>,
}

/// One SKU of the price list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    /// A readable name for line items; the SKU when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Unit price in minor units, by ISO-4217 currency.
    pub prices: BTreeMap<String, i64>,
    /// Unit prices from a quantity on, ascending by `min_quantity`.
    #[serde(default)]
    pub quantity_breaks: Vec<QuantityBreak>,
    /// The most one order may hold of this SKU; after validation, the
    /// product's own limit or else the top-level `max_quantity_per_line`.
    #[serde(default)]
    pub max_quantity: Option<i64>,
}

/// "From `min_quantity` units on, every unit costs `prices`."
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantityBreak {
    /// The quantity from which the break applies (at least 2).
    pub min_quantity: i64,
    /// Unit price in minor units, for every currency the product has.
    pub prices: BTreeMap<String, i64>,
}

/// A discount on the order's subtotal by the value of a customer attribute.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discount {
    /// The customer attribute that selects the discount (default `tier`).
    #[serde(default = "default_attribute")]
    pub attribute: String,
    /// Discount in thousandths of the subtotal (100 = 10 %), by attribute value.
    pub per_mille: BTreeMap<String, i64>,
}

fn default_attribute() -> String {
    "tier".to_string()
}

impl Product {
    /// The name to show on invoices.
    pub fn display_name<'a>(&'a self, sku: &'a str) -> &'a str {
        self.name.as_deref().unwrap_or(sku)
    }

    /// The unit price in `currency` for `quantity` units, and the break that
    /// set it (`None` for the base price); `None` if the product has no price
    /// in `currency`.
    pub fn unit_price(
        &self,
        currency: &str,
        quantity: i64,
    ) -> Option<(i64, Option<&QuantityBreak>)> {
        let base = *self.prices.get(currency)?;
        // Validation guarantees every break prices every currency the
        // product has, so the lookup below only fails for an unknown one.
        let best = self
            .quantity_breaks
            .iter()
            .rev()
            .find(|b| quantity >= b.min_quantity);
        match best {
            Some(b) => Some((*b.prices.get(currency)?, Some(b))),
            None => Some((base, None)),
        }
    }
}

impl Discount {
    /// The attribute value and its discount (per mille) for a customer.
    pub fn for_value<'a>(&'a self, value: Option<&'a str>) -> Option<(&'a str, i64)> {
        let value = value?;
        self.per_mille.get(value).map(|pm| (value, *pm))
    }
}

/// The config as written in YAML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    products: BTreeMap<String, Product>,
    #[serde(default)]
    max_quantity_per_line: Option<i64>,
    #[serde(default)]
    discount: Option<Discount>,
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, String> {
        if let Some(max) = raw.max_quantity_per_line
            && max < 1
        {
            return Err("max_quantity_per_line: must be at least 1".into());
        }
        let mut products = raw.products;
        for (sku, product) in &mut products {
            if sku.is_empty() {
                return Err("products: a SKU must not be empty".into());
            }
            check_product(product).map_err(|e| format!("products.{sku}.{e}"))?;
            product.max_quantity = product.max_quantity.or(raw.max_quantity_per_line);
        }
        if let Some(discount) = &raw.discount {
            check_discount(discount).map_err(|e| format!("discount.{e}"))?;
        }
        Ok(Config {
            products,
            discount: raw.discount,
        })
    }
}

/// Errors are relative to the product: `prices.USD: …`.
fn check_product(product: &Product) -> Result<(), String> {
    if product.prices.is_empty() {
        return Err("prices: needs at least one currency".into());
    }
    check_prices(&product.prices).map_err(|e| format!("prices.{e}"))?;
    let mut previous = 1;
    for (index, b) in product.quantity_breaks.iter().enumerate() {
        let at = format!("quantity_breaks[{index}]");
        if b.min_quantity <= previous {
            return Err(format!(
                "{at}.min_quantity: must be greater than {previous} \
                 (breaks ascend, and quantity 1 is the base price)"
            ));
        }
        previous = b.min_quantity;
        check_prices(&b.prices).map_err(|e| format!("{at}.prices.{e}"))?;
        if !b.prices.keys().eq(product.prices.keys()) {
            let expected: Vec<_> = product.prices.keys().map(String::as_str).collect();
            return Err(format!(
                "{at}.prices: must price exactly the product's currencies ({})",
                expected.join(", ")
            ));
        }
    }
    if let Some(max) = product.max_quantity
        && max < 1
    {
        return Err("max_quantity: must be at least 1".into());
    }
    Ok(())
}

fn check_prices(prices: &BTreeMap<String, i64>) -> Result<(), String> {
    for (currency, price) in prices {
        check_currency(currency).map_err(|e| format!("{currency}: {e}"))?;
        if *price < 0 {
            return Err(format!("{currency}: must not be negative"));
        }
    }
    Ok(())
}

fn check_discount(discount: &Discount) -> Result<(), String> {
    if discount.attribute.is_empty() {
        return Err("attribute: must not be empty".into());
    }
    for (value, pm) in &discount.per_mille {
        if !(0..=PER_MILLE).contains(pm) {
            return Err(format!(
                "per_mille.{value}: must be between 0 and {PER_MILLE}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxpay_policy_sdk::config::parse;

    fn refused(json: &str) -> String {
        parse::<Config>(json).expect_err(json)
    }

    #[test]
    fn the_line_limit_falls_back_to_the_top_level_one() {
        let config: Config = parse(
            r#"{"products":{"a":{"prices":{"USD":1}},"b":{"prices":{"USD":1},"max_quantity":3}},
                "max_quantity_per_line":10}"#,
        )
        .unwrap();
        assert_eq!(config.products["a"].max_quantity, Some(10));
        assert_eq!(config.products["b"].max_quantity, Some(3));
        assert_eq!(config.products["a"].display_name("a"), "a");
        assert_eq!(config.discount, None);
    }

    #[test]
    fn the_discount_attribute_defaults_to_tier() {
        let config: Config =
            parse(r#"{"products":{},"discount":{"per_mille":{"gold":100}}}"#).unwrap();
        let discount = config.discount.unwrap();
        assert_eq!(discount.attribute, "tier");
        assert_eq!(discount.for_value(Some("gold")), Some(("gold", 100)));
        assert_eq!(discount.for_value(Some("silver")), None);
        assert_eq!(discount.for_value(None), None);
    }

    #[test]
    fn the_highest_break_reached_sets_the_unit_price() {
        let config: Config = parse(
            r#"{"products":{"a":{"prices":{"USD":100,"EUR":90},"quantity_breaks":[
                {"min_quantity":10,"prices":{"USD":80,"EUR":70}},
                {"min_quantity":50,"prices":{"USD":60,"EUR":50}}]}}}"#,
        )
        .unwrap();
        let a = &config.products["a"];
        assert_eq!(a.unit_price("USD", 9).map(|p| p.0), Some(100));
        assert_eq!(a.unit_price("USD", 10).map(|p| p.0), Some(80));
        assert_eq!(a.unit_price("EUR", 49).map(|p| p.0), Some(70));
        assert_eq!(a.unit_price("EUR", 50).map(|p| p.0), Some(50));
        assert_eq!(a.unit_price("GBP", 50), None);
    }

    #[test]
    fn invalid_configs_are_refused_naming_the_field() {
        let cases = [
            (r#"{"products":{"a":{"prices":{}}}}"#, "products.a.prices"),
            (
                r#"{"products":{"a":{"prices":{"USD":-1}}}}"#,
                "products.a.prices.USD: must not be negative",
            ),
            (
                r#"{"products":{"a":{"prices":{"usd":1}}}}"#,
                "products.a.prices.usd",
            ),
            (
                r#"{"products":{"a":{"prices":{"USD":1},"max_quantity":0}}}"#,
                "products.a.max_quantity",
            ),
            (
                r#"{"products":{"a":{"prices":{"USD":1}}},"max_quantity_per_line":0}"#,
                "max_quantity_per_line",
            ),
            (
                r#"{"products":{"a":{"prices":{"USD":1},"quantity_breaks":[
                    {"min_quantity":1,"prices":{"USD":1}}]}}}"#,
                "products.a.quantity_breaks[0].min_quantity",
            ),
            (
                r#"{"products":{"a":{"prices":{"USD":1},"quantity_breaks":[
                    {"min_quantity":10,"prices":{"USD":1}},
                    {"min_quantity":10,"prices":{"USD":1}}]}}}"#,
                "products.a.quantity_breaks[1].min_quantity",
            ),
            (
                r#"{"products":{"a":{"prices":{"USD":1,"EUR":1},"quantity_breaks":[
                    {"min_quantity":10,"prices":{"USD":1}}]}}}"#,
                "products.a.quantity_breaks[0].prices: must price exactly the product's currencies (EUR, USD)",
            ),
            (
                r#"{"products":{"a":{"prices":{"USD":1},"quantity_breaks":[
                    {"min_quantity":10,"prices":{"USD":-5}}]}}}"#,
                "products.a.quantity_breaks[0].prices.USD",
            ),
            (r#"{"products":{"":{"prices":{"USD":1}}}}"#, "products:"),
            (
                r#"{"products":{},"discount":{"per_mille":{"gold":1001}}}"#,
                "discount.per_mille.gold",
            ),
            (
                r#"{"products":{},"discount":{"per_mille":{"gold":-1}}}"#,
                "discount.per_mille.gold",
            ),
            (
                r#"{"products":{},"discount":{"attribute":"","per_mille":{}}}"#,
                "discount.attribute",
            ),
            (
                r#"{"products":{"a":{"prices":{"USD":1},"price":1}}}"#,
                "unknown field `price`",
            ),
            (
                r#"{"products":{},"discounts":{}}"#,
                "unknown field `discounts`",
            ),
            ("{}", "missing field `products`"),
        ];
        for (json, expected) in cases {
            let err = refused(json);
            assert!(err.contains(expected), "{json}: {err}");
        }
    }
}

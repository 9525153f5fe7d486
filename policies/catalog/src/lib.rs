//! Reference order pricing policy: a price list per SKU and currency, with
//! quantity breaks, a per-line quantity limit and a discount chosen by a
//! customer attribute.
//!
//! The client never sends amounts: every unit price comes from the config.
//! Items for the same SKU are merged into one line first, so how a client
//! splits an order cannot change its price. Only `order` requests are
//! priced; see README.md for the rules and the config.

use std::collections::BTreeMap;

use fluxpay_policy_sdk::prelude::*;

mod config;

pub use config::{Config, Discount, PER_MILLE, Product, QuantityBreak};

/// Prices an `order` request in the order's currency.
#[pricing]
pub fn price(
    ctx: &Context,
    config: &Config,
    request: PricingRequest,
) -> Result<Quote, PolicyError> {
    let PricingRequest::Order(order) = request else {
        return Err(PolicyError::unsupported(
            "the catalog policy prices order requests only",
        ));
    };
    price_order(ctx, config, &order)
}

fn price_order(ctx: &Context, config: &Config, order: &OrderRequest) -> Result<Quote, PolicyError> {
    let currency = &order.currency;
    let mut lines = Vec::new();
    let mut subtotal = Money::zero(currency.clone());
    for line in merge_items(config, &order.items)? {
        let (amount, item) = price_line(&line, currency)?;
        subtotal = subtotal.checked_add(&amount)?;
        lines.push(item);
    }
    if let Some(discount) = discount_line(ctx, config, &subtotal)? {
        lines.push(discount);
    }
    Ok(Quote::from_line_items(
        Amount::money(0, currency.clone()),
        lines,
    )?)
}

/// The order's SKUs, each with its total quantity, in the order they first
/// appear.
struct Line<'a> {
    sku: &'a str,
    product: &'a Product,
    quantity: i64,
}

/// Merges the items per SKU; rejects an empty order, a quantity below 1 and
/// an unknown SKU.
fn merge_items<'a>(
    config: &'a Config,
    items: &'a [OrderItem],
) -> Result<Vec<Line<'a>>, PolicyError> {
    if items.is_empty() {
        return Err(PolicyError::rejected(
            "empty-order",
            "an order needs at least one item",
        ));
    }
    let mut lines: Vec<Line<'a>> = Vec::new();
    // Index by SKU so a long order does not cost a quadratic scan of fuel.
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for item in items {
        if item.quantity < 1 {
            return Err(PolicyError::rejected(
                "invalid-quantity",
                format!(
                    "the quantity of `{}` must be at least 1, got {}",
                    item.sku, item.quantity
                ),
            ));
        }
        let Some(product) = config.products.get(&item.sku) else {
            return Err(PolicyError::rejected(
                "unknown-sku",
                format!("`{}` is not in the price list", item.sku),
            ));
        };
        match index.get(item.sku.as_str()) {
            Some(&at) => {
                let line = &mut lines[at];
                line.quantity = line
                    .quantity
                    .checked_add(item.quantity)
                    .ok_or(MoneyError::Overflow)?;
            }
            None => {
                index.insert(&item.sku, lines.len());
                lines.push(Line {
                    sku: &item.sku,
                    product,
                    quantity: item.quantity,
                });
            }
        }
    }
    Ok(lines)
}

/// `quantity × unit price` for one SKU, at the break its quantity reaches:
/// the amount and its line item.
fn price_line(line: &Line<'_>, currency: &str) -> Result<(Money, LineItem), PolicyError> {
    let name = line.product.display_name(line.sku);
    let Some((unit, quantity_break)) = line.product.unit_price(currency, line.quantity) else {
        return Err(PolicyError::rejected(
            "currency-not-priced",
            format!("`{}` has no price in {currency}", line.sku),
        ));
    };
    if let Some(max) = line.product.max_quantity
        && line.quantity > max
    {
        return Err(PolicyError::rejected(
            "max-quantity-exceeded",
            format!(
                "at most {max} of `{}` per order, got {}",
                line.sku, line.quantity
            ),
        ));
    }
    let amount = Money::new(unit, currency).checked_mul(line.quantity)?;
    let mut description = format!(
        "{} × {name} at {unit} {currency} minor units each",
        line.quantity
    );
    if let Some(b) = quantity_break {
        description.push_str(&format!(" (price from {} units)", b.min_quantity));
    }
    let item = LineItem::new(
        format!("sku:{}", line.sku),
        description,
        line.quantity,
        amount.clone(),
    );
    Ok((amount, item))
}

/// The customer's discount on the subtotal as a negative line, rounded half
/// away from zero; none when no discount applies or it rounds to nothing.
fn discount_line(
    ctx: &Context,
    config: &Config,
    subtotal: &Money,
) -> Result<Option<LineItem>, PolicyError> {
    let Some(discount) = &config.discount else {
        return Ok(None);
    };
    let Some((value, per_mille)) = discount.for_value(ctx.attribute(&discount.attribute)) else {
        return Ok(None);
    };
    let off = subtotal
        .mul_ratio(per_mille, PER_MILLE, Rounding::HalfAwayFromZero)?
        .checked_neg()?;
    if off.amount == 0 {
        return Ok(None);
    }
    Ok(Some(LineItem::new(
        format!("discount:{}:{value}", discount.attribute),
        format!(
            "{} {value}: {} off the subtotal",
            discount.attribute,
            percent(per_mille)
        ),
        1,
        off,
    )))
}

/// `125` per mille → `12.5%`; `100` → `10%`.
fn percent(per_mille: i64) -> String {
    match per_mille % 10 {
        0 => format!("{}%", per_mille / 10),
        tenth => format!("{}.{tenth}%", per_mille / 10),
    }
}

#[cfg(test)]
mod tests;

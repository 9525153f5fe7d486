//! Builders for line items and quotes whose totals are checked sums.

use crate::money::MoneyError;
use crate::{Amount, LineItem, Quote, SubscriptionTerms};

impl LineItem {
    /// A line: a stable `code` (e.g. `"feature:image-render"`), a readable
    /// `description`, the `quantity` it covers and its total `amount`.
    pub fn new(
        code: impl Into<String>,
        description: impl Into<String>,
        quantity: i64,
        amount: impl Into<Amount>,
    ) -> LineItem {
        LineItem {
            code: code.into(),
            description: description.into(),
            quantity,
            amount: amount.into(),
        }
    }

    /// The checked sum of the lines' amounts, starting from `zero` (which fixes
    /// the unit, and the currency, of an empty list).
    pub fn total(zero: Amount, items: &[LineItem]) -> Result<Amount, MoneyError> {
        items
            .iter()
            .try_fold(zero, |total, item| total.checked_add(&item.amount))
    }
}

impl Quote {
    /// A quote whose total is the checked sum of `line_items` (`zero` fixes the
    /// unit and currency when there are none), with no metadata and no
    /// subscription terms.
    ///
    /// ```
    /// use fluxpay_policy_sdk::{Amount, LineItem, Quote};
    /// let quote = Quote::from_line_items(
    ///     Amount::credits(0),
    ///     vec![
    ///         LineItem::new("feature:render", "3 renders × 5 credits", 3, Amount::credits(15)),
    ///         LineItem::new("minimum", "minimum charge top-up", 1, Amount::credits(5)),
    ///     ],
    /// )?;
    /// assert_eq!(quote.total, Amount::credits(20));
    /// # Ok::<(), fluxpay_policy_sdk::money::MoneyError>(())
    /// ```
    pub fn from_line_items(zero: Amount, line_items: Vec<LineItem>) -> Result<Quote, MoneyError> {
        let total = LineItem::total(zero, &line_items)?;
        Ok(Quote {
            total,
            line_items,
            metadata: Vec::new(),
            subscription: None,
        })
    }

    /// Adds a `key`/`value` fact to record with the charge.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Quote {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Sets the billing period the quote pays for.
    pub fn with_subscription(mut self, terms: SubscriptionTerms) -> Quote {
        self.subscription = Some(terms);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Money;

    #[test]
    fn line_items_total_matches_their_sum() {
        let items = [
            LineItem::new("a", "a", 1, Money::new(100, "USD")),
            LineItem::new("b", "b", 1, Money::new(-30, "USD")),
        ];
        assert_eq!(
            LineItem::total(Amount::money(0, "USD"), &items),
            Ok(Amount::money(70, "USD"))
        );
    }
}

//! `Credits`, and the `Amount` helpers that join money and credits.

use super::{MoneyError, Rounding, mul_div};
use crate::{Amount, Money};

/// A whole number of prepaid credits, kept apart from money so the two cannot
/// be added by mistake. Converts into [`Amount::Credits`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Credits(pub i64);

impl Credits {
    /// No credits.
    pub const ZERO: Credits = Credits(0);

    /// `self + other`.
    pub fn checked_add(self, other: Credits) -> Result<Credits, MoneyError> {
        self.0
            .checked_add(other.0)
            .map(Credits)
            .ok_or(MoneyError::Overflow)
    }

    /// `self - other`.
    pub fn checked_sub(self, other: Credits) -> Result<Credits, MoneyError> {
        self.0
            .checked_sub(other.0)
            .map(Credits)
            .ok_or(MoneyError::Overflow)
    }

    /// `self × factor` (a per-unit cost times a number of units).
    pub fn checked_mul(self, factor: i64) -> Result<Credits, MoneyError> {
        self.0
            .checked_mul(factor)
            .map(Credits)
            .ok_or(MoneyError::Overflow)
    }

    /// `self × numerator ÷ denominator`, rounded by `rounding` (e.g. a tier
    /// multiplier of 1.5 is `mul_ratio(3, 2, ..)` or `mul_ratio(1500, 1000, ..)`).
    pub fn mul_ratio(
        self,
        numerator: i64,
        denominator: i64,
        rounding: Rounding,
    ) -> Result<Credits, MoneyError> {
        mul_div(self.0, numerator, denominator, rounding).map(Credits)
    }

    /// The sum of `credits` (zero when empty).
    pub fn sum(credits: impl IntoIterator<Item = Credits>) -> Result<Credits, MoneyError> {
        credits
            .into_iter()
            .try_fold(Credits::ZERO, |total, next| total.checked_add(next))
    }
}

impl From<Credits> for Amount {
    fn from(credits: Credits) -> Self {
        Amount::Credits(credits.0)
    }
}

impl From<Money> for Amount {
    fn from(money: Money) -> Self {
        Amount::Money(money)
    }
}

impl Amount {
    /// `Amount::Money(Money::new(amount, currency))`.
    pub fn money(amount: i64, currency: impl Into<String>) -> Amount {
        Amount::Money(Money::new(amount, currency))
    }

    /// `Amount::Credits(credits)`.
    pub fn credits(credits: i64) -> Amount {
        Amount::Credits(credits)
    }

    /// The money, if this is a money amount.
    pub fn as_money(&self) -> Option<&Money> {
        match self {
            Amount::Money(money) => Some(money),
            Amount::Credits(_) => None,
        }
    }

    /// The credits, if this is a credit amount.
    pub fn as_credits(&self) -> Option<Credits> {
        match self {
            Amount::Money(_) => None,
            Amount::Credits(credits) => Some(Credits(*credits)),
        }
    }

    /// Zero in the same unit (and currency) as `self`.
    pub fn zero_like(&self) -> Amount {
        match self {
            Amount::Money(money) => Amount::Money(Money::zero(money.currency.clone())),
            Amount::Credits(_) => Amount::Credits(0),
        }
    }

    /// `self + other`: money with money of the same currency, or credits with
    /// credits.
    pub fn checked_add(&self, other: &Amount) -> Result<Amount, MoneyError> {
        match (self, other) {
            (Amount::Money(a), Amount::Money(b)) => a.checked_add(b).map(Amount::Money),
            (Amount::Credits(a), Amount::Credits(b)) => {
                Credits(*a).checked_add(Credits(*b)).map(Amount::from)
            }
            _ => Err(MoneyError::UnitMismatch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_and_money_cannot_be_added() {
        let err = Amount::credits(1).checked_add(&Amount::money(1, "USD"));
        assert_eq!(err, Err(MoneyError::UnitMismatch));
        assert_eq!(
            Amount::credits(2).checked_add(&Amount::credits(3)),
            Ok(Amount::credits(5))
        );
    }

    #[test]
    fn credits_arithmetic_is_checked() {
        assert_eq!(
            Credits(i64::MAX).checked_add(Credits(1)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(Credits(5).checked_sub(Credits(7)), Ok(Credits(-2)));
        assert_eq!(Credits(3).checked_mul(4), Ok(Credits(12)));
        assert_eq!(
            Credits(10).mul_ratio(1500, 1000, Rounding::Ceiling),
            Ok(Credits(15))
        );
        assert_eq!(Credits::sum([Credits(1), Credits(2)]), Ok(Credits(3)));
    }
}

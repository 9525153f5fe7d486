//! Checked money and credit arithmetic.
//!
//! Every operation returns a [`Result`]: an overflow of the 64-bit minor-unit
//! range, a currency mismatch or a zero denominator is an error, never a wrap
//! and never a float. A [`MoneyError`] converts into a
//! [`PolicyError::Rejected`] with a stable code, so
//! `?` works inside a policy function.
//!
//! # Rounding
//!
//! Fractions (proration, per-mille multipliers) are computed exactly with `i128`
//! intermediates and rounded once, at the end, by an explicit [`Rounding`] rule.
//! [`Money::prorate`] and [`prorate`] use [`Rounding::HalfAwayFromZero`]
//! ("commercial" rounding): 0.5 cent becomes 1 cent and -0.5 cent becomes
//! -1 cent, so a proration credit and the matching charge round symmetrically.
//!
//! [`Credits`] is the unit type for prepaid credits; `Amount` joins the two.

use crate::{Money, PolicyError, Rejection};

mod credits;

pub use credits::Credits;

/// Why a money or credit computation has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The exact result does not fit in a signed 64-bit number of minor units
    /// (or credits).
    #[error("the amount is out of range (more than 64-bit minor units)")]
    Overflow,
    /// Two amounts in different currencies were combined.
    #[error("cannot combine {left} with {right}")]
    CurrencyMismatch {
        /// The currency of the left operand.
        left: String,
        /// The currency of the right operand.
        right: String,
    },
    /// Money was combined with credits.
    #[error("cannot combine money with credits")]
    UnitMismatch,
    /// A ratio had a zero denominator.
    #[error("a ratio has a zero denominator")]
    ZeroDenominator,
    /// A proration fraction was outside `0..=1` (`numerator` must be between 0
    /// and `denominator`).
    #[error("proration fraction {numerator}/{denominator} is not between 0 and 1")]
    InvalidFraction {
        /// The numerator given.
        numerator: i64,
        /// The denominator given.
        denominator: i64,
    },
    /// A currency code was not three upper-case ASCII letters.
    #[error("`{0}` is not an ISO-4217 currency code (three upper-case letters)")]
    InvalidCurrency(String),
}

impl MoneyError {
    /// The stable machine-readable code used when this error becomes a
    /// [`Rejection`]: `amount-overflow`, `currency-mismatch`, `unit-mismatch`,
    /// `zero-denominator`, `invalid-fraction` or `invalid-currency`.
    pub fn code(&self) -> &'static str {
        match self {
            MoneyError::Overflow => "amount-overflow",
            MoneyError::CurrencyMismatch { .. } => "currency-mismatch",
            MoneyError::UnitMismatch => "unit-mismatch",
            MoneyError::ZeroDenominator => "zero-denominator",
            MoneyError::InvalidFraction { .. } => "invalid-fraction",
            MoneyError::InvalidCurrency(_) => "invalid-currency",
        }
    }
}

impl From<MoneyError> for Rejection {
    fn from(error: MoneyError) -> Self {
        Rejection {
            code: error.code().to_string(),
            message: error.to_string(),
        }
    }
}

impl From<MoneyError> for PolicyError {
    fn from(error: MoneyError) -> Self {
        PolicyError::Rejected(error.into())
    }
}

/// How an exact fraction is turned into a whole number of minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rounding {
    /// To the nearest; a tie goes away from zero (2.5 → 3, -2.5 → -3).
    #[default]
    HalfAwayFromZero,
    /// To the nearest; a tie goes to the even neighbour (2.5 → 2, 3.5 → 4),
    /// "banker's rounding".
    HalfEven,
    /// Towards positive infinity (2.1 → 3, -2.9 → -2).
    Ceiling,
    /// Towards negative infinity (2.9 → 2, -2.1 → -3).
    Floor,
}

/// `value × numerator ÷ denominator`, computed exactly in `i128` and rounded
/// once by `rounding`.
///
/// ```
/// use fluxpay_policy_sdk::money::{mul_div, Rounding};
/// assert_eq!(mul_div(1000, 1, 3, Rounding::HalfAwayFromZero), Ok(333));
/// assert_eq!(mul_div(5, 1, 2, Rounding::HalfEven), Ok(2));
/// assert_eq!(mul_div(i64::MAX, 2, 1, Rounding::Floor).is_err(), true);
/// ```
pub fn mul_div(
    value: i64,
    numerator: i64,
    denominator: i64,
    rounding: Rounding,
) -> Result<i64, MoneyError> {
    if denominator == 0 {
        return Err(MoneyError::ZeroDenominator);
    }
    // i64 × i64 always fits in i128, and so does negating an i64.
    let mut n = i128::from(value) * i128::from(numerator);
    let mut d = i128::from(denominator);
    if d < 0 {
        n = -n;
        d = -d;
    }
    let floor = n.div_euclid(d);
    let rest = n.rem_euclid(d); // 0 <= rest < d
    let up = match rounding {
        Rounding::Floor => false,
        Rounding::Ceiling => rest != 0,
        Rounding::HalfAwayFromZero => match (2 * rest).cmp(&d) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => true,
            // floor(n/d) is already "away from zero" for a negative n.
            std::cmp::Ordering::Equal => n >= 0,
        },
        Rounding::HalfEven => match (2 * rest).cmp(&d) {
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => floor % 2 != 0,
        },
    };
    let rounded = if up { floor + 1 } else { floor };
    i64::try_from(rounded).map_err(|_| MoneyError::Overflow)
}

/// The share `numerator / denominator` (a fraction between 0 and 1) of
/// `amount`, rounded half away from zero.
///
/// Typical use: the unused part of a period, `prorate(price, remaining_ms,
/// period_ms)`.
///
/// ```
/// use fluxpay_policy_sdk::money::prorate;
/// assert_eq!(prorate(1000, 1, 3), Ok(333));
/// assert_eq!(prorate(1000, 2, 3), Ok(667));
/// assert_eq!(prorate(-5, 1, 2), Ok(-3));
/// ```
pub fn prorate(amount: i64, numerator: i64, denominator: i64) -> Result<i64, MoneyError> {
    if denominator <= 0 || numerator < 0 || numerator > denominator {
        return Err(if denominator == 0 {
            MoneyError::ZeroDenominator
        } else {
            MoneyError::InvalidFraction {
                numerator,
                denominator,
            }
        });
    }
    mul_div(amount, numerator, denominator, Rounding::HalfAwayFromZero)
}

/// Checks that `code` looks like an ISO-4217 code: three upper-case ASCII
/// letters. (Whether the currency exists is the tenant's business.)
pub fn check_currency(code: &str) -> Result<(), MoneyError> {
    if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(MoneyError::InvalidCurrency(code.to_string()))
    }
}

fn same_currency(left: &Money, right: &Money) -> Result<(), MoneyError> {
    if left.currency == right.currency {
        Ok(())
    } else {
        Err(MoneyError::CurrencyMismatch {
            left: left.currency.clone(),
            right: right.currency.clone(),
        })
    }
}

impl Money {
    /// `amount` minor units of `currency` (e.g. `Money::new(1999, "USD")` is
    /// 19.99 USD). The currency is not checked; see [`check_currency`].
    pub fn new(amount: i64, currency: impl Into<String>) -> Money {
        Money {
            amount,
            currency: currency.into(),
        }
    }

    /// Zero in `currency`; the starting point of a sum.
    pub fn zero(currency: impl Into<String>) -> Money {
        Money::new(0, currency)
    }

    /// `self + other`; both must be in the same currency.
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        same_currency(self, other)?;
        let amount = self
            .amount
            .checked_add(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency.clone()))
    }

    /// `self - other`; both must be in the same currency.
    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        same_currency(self, other)?;
        let amount = self
            .amount
            .checked_sub(other.amount)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency.clone()))
    }

    /// `self × factor` (a unit price times a quantity).
    pub fn checked_mul(&self, factor: i64) -> Result<Money, MoneyError> {
        let amount = self
            .amount
            .checked_mul(factor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency.clone()))
    }

    /// `-self` (a charge turned into a credit).
    pub fn checked_neg(&self) -> Result<Money, MoneyError> {
        let amount = self.amount.checked_neg().ok_or(MoneyError::Overflow)?;
        Ok(Money::new(amount, self.currency.clone()))
    }

    /// `self × numerator ÷ denominator`, rounded by `rounding`; see [`mul_div`].
    pub fn mul_ratio(
        &self,
        numerator: i64,
        denominator: i64,
        rounding: Rounding,
    ) -> Result<Money, MoneyError> {
        let amount = mul_div(self.amount, numerator, denominator, rounding)?;
        Ok(Money::new(amount, self.currency.clone()))
    }

    /// The share `numerator / denominator` (between 0 and 1) of `self`, rounded
    /// half away from zero; see [`prorate`].
    pub fn prorate(&self, numerator: i64, denominator: i64) -> Result<Money, MoneyError> {
        let amount = prorate(self.amount, numerator, denominator)?;
        Ok(Money::new(amount, self.currency.clone()))
    }

    /// The sum of `amounts`, all in `currency` (zero when empty).
    pub fn sum<'a>(
        currency: &str,
        amounts: impl IntoIterator<Item = &'a Money>,
    ) -> Result<Money, MoneyError> {
        amounts
            .into_iter()
            .try_fold(Money::zero(currency), |total, next| total.checked_add(next))
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.amount == 0
    }

    /// Whether the amount is below zero (a credit owed to the customer).
    pub fn is_negative(&self) -> bool {
        self.amount < 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_away_from_zero_rounds_ties_outwards_on_both_sides() {
        let r = Rounding::HalfAwayFromZero;
        assert_eq!(mul_div(5, 1, 2, r), Ok(3));
        assert_eq!(mul_div(-5, 1, 2, r), Ok(-3));
        assert_eq!(mul_div(7, 1, 2, r), Ok(4));
        assert_eq!(mul_div(-7, 1, 2, r), Ok(-4));
        assert_eq!(mul_div(4, 1, 3, r), Ok(1));
        assert_eq!(mul_div(5, 1, 3, r), Ok(2));
        assert_eq!(mul_div(-5, 1, 3, r), Ok(-2));
    }

    #[test]
    fn half_even_rounds_ties_to_the_even_neighbour() {
        let r = Rounding::HalfEven;
        assert_eq!(mul_div(5, 1, 2, r), Ok(2));
        assert_eq!(mul_div(7, 1, 2, r), Ok(4));
        assert_eq!(mul_div(-5, 1, 2, r), Ok(-2));
        assert_eq!(mul_div(-7, 1, 2, r), Ok(-4));
        assert_eq!(mul_div(5, 1, 3, r), Ok(2));
    }

    #[test]
    fn ceiling_and_floor_round_towards_their_infinity() {
        assert_eq!(mul_div(21, 1, 10, Rounding::Ceiling), Ok(3));
        assert_eq!(mul_div(-29, 1, 10, Rounding::Ceiling), Ok(-2));
        assert_eq!(mul_div(29, 1, 10, Rounding::Floor), Ok(2));
        assert_eq!(mul_div(-21, 1, 10, Rounding::Floor), Ok(-3));
        assert_eq!(mul_div(20, 1, 10, Rounding::Ceiling), Ok(2));
    }

    #[test]
    fn a_negative_denominator_flips_the_sign() {
        assert_eq!(mul_div(10, 1, -4, Rounding::HalfAwayFromZero), Ok(-3));
        assert_eq!(mul_div(10, -1, -4, Rounding::HalfAwayFromZero), Ok(3));
    }

    #[test]
    fn mul_div_uses_wide_intermediates_and_reports_only_real_overflow() {
        // The product overflows i64 but the result does not.
        assert_eq!(
            mul_div(i64::MAX, i64::MAX, i64::MAX, Rounding::Floor),
            Ok(i64::MAX)
        );
        assert_eq!(
            mul_div(i64::MIN, 1, -1, Rounding::Floor),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            mul_div(i64::MAX, 2, 1, Rounding::Floor),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            mul_div(1, 1, 0, Rounding::Floor),
            Err(MoneyError::ZeroDenominator)
        );
    }

    #[test]
    fn prorate_accepts_only_fractions_between_zero_and_one() {
        assert_eq!(prorate(1000, 0, 30), Ok(0));
        assert_eq!(prorate(1000, 30, 30), Ok(1000));
        assert_eq!(prorate(1000, 15, 30), Ok(500));
        assert_eq!(prorate(1999, 1, 2), Ok(1000));
        assert_eq!(
            prorate(1000, 31, 30),
            Err(MoneyError::InvalidFraction {
                numerator: 31,
                denominator: 30
            })
        );
        assert!(prorate(1000, -1, 30).is_err());
        assert_eq!(prorate(1000, 0, 0), Err(MoneyError::ZeroDenominator));
    }

    #[test]
    fn adding_money_in_different_currencies_is_an_error() {
        let err = Money::new(1, "USD").checked_add(&Money::new(1, "EUR"));
        assert_eq!(
            err,
            Err(MoneyError::CurrencyMismatch {
                left: "USD".into(),
                right: "EUR".into()
            })
        );
    }

    #[test]
    fn money_arithmetic_overflows_into_an_error_not_a_wrap() {
        let max = Money::new(i64::MAX, "USD");
        assert_eq!(
            max.checked_add(&Money::new(1, "USD")),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Money::new(i64::MIN, "USD").checked_sub(&Money::new(1, "USD")),
            Err(MoneyError::Overflow)
        );
        assert_eq!(max.checked_mul(2), Err(MoneyError::Overflow));
        assert_eq!(
            Money::new(i64::MIN, "USD").checked_neg(),
            Err(MoneyError::Overflow)
        );
        assert_eq!(max.checked_mul(1), Ok(max.clone()));
    }

    #[test]
    fn money_sum_of_nothing_is_zero_in_the_given_currency() {
        assert_eq!(Money::sum("EUR", []), Ok(Money::zero("EUR")));
        let parts = [Money::new(150, "EUR"), Money::new(-50, "EUR")];
        assert_eq!(Money::sum("EUR", &parts), Ok(Money::new(100, "EUR")));
        assert!(Money::sum("USD", &parts).is_err());
    }

    #[test]
    fn money_errors_become_rejections_with_stable_codes() {
        let error: PolicyError = MoneyError::Overflow.into();
        match error {
            PolicyError::Rejected(rejection) => assert_eq!(rejection.code, "amount-overflow"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn currency_codes_are_three_upper_case_letters() {
        assert!(check_currency("USD").is_ok());
        assert!(check_currency("usd").is_err());
        assert!(check_currency("US").is_err());
        assert!(check_currency("EURO").is_err());
    }
}

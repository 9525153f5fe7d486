//! Money and credits: integer minor units with checked arithmetic.
//!
//! Never `f64`: binary fractions cannot hold 0.10 exactly, and a ledger that
//! is off by a rounding error does not balance. Overflow is an error, never a
//! wrap: a wrapped balance is a silent gift of 18 quintillion cents.

mod credits;
mod currency;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use credits::{Credits, PositiveCredits};
pub use currency::{Currency, CurrencyError};

/// Why an arithmetic step or an amount was refused. Client errors
/// (`REQ_001`): amounts come from requests and policies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// The result does not fit in an `i64`.
    #[error("amount overflow: the {operation} does not fit in a 64-bit integer")]
    Overflow {
        /// "add", "subtract", "negate", "multiply" or "sum".
        operation: &'static str,
    },
    /// Two amounts in different currencies were combined.
    #[error("currency mismatch: cannot combine {left} with {right}")]
    CurrencyMismatch {
        /// Currency of the left operand.
        left: Currency,
        /// Currency of the right operand.
        right: Currency,
    },
    /// Zero or negative where only a positive amount makes sense.
    #[error("{what} must be positive, got {value}")]
    NotPositive {
        /// What the amount is, e.g. "credits", "order total".
        what: &'static str,
        /// The amount given.
        value: i64,
    },
    /// Negative where zero or more is required.
    #[error("{what} must not be negative, got {value}")]
    Negative {
        /// What the amount is, e.g. "unit price".
        what: &'static str,
        /// The amount given.
        value: i64,
    },
}

/// An amount of money: integer minor units of one currency (1999 USD is
/// 19.99 dollars; 500 JPY is 500 yen).
///
/// The fields are public because every `(i64, Currency)` pair is a valid
/// amount; what needs guarding is arithmetic, which is checked here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    /// Amount in the currency's minor unit.
    pub minor: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// `minor` units of `currency`.
    pub const fn new(minor: i64, currency: Currency) -> Self {
        Money { minor, currency }
    }

    /// Zero of `currency`.
    pub const fn zero(currency: Currency) -> Self {
        Money { minor: 0, currency }
    }

    /// An amount as it arrives from a request or a policy: minor units and a
    /// code that must be an active ISO-4217 currency.
    pub fn parse(minor: i64, currency: &str) -> Result<Self, CurrencyError> {
        Ok(Money::new(minor, Currency::parse(currency)?))
    }

    /// `self + other`, same currency only; overflow is an error.
    pub fn checked_add(self, other: Money) -> Result<Money, AmountError> {
        self.same_currency(other)?;
        self.with(self.minor.checked_add(other.minor), "add")
    }

    /// `self - other`, same currency only; overflow is an error.
    pub fn checked_sub(self, other: Money) -> Result<Money, AmountError> {
        self.same_currency(other)?;
        self.with(self.minor.checked_sub(other.minor), "subtract")
    }

    /// `-self`; fails only for `i64::MIN` minor units.
    pub fn checked_neg(self) -> Result<Money, AmountError> {
        self.with(self.minor.checked_neg(), "negate")
    }

    /// `self × factor` (a quantity); overflow is an error.
    pub fn checked_mul(self, factor: i64) -> Result<Money, AmountError> {
        self.with(self.minor.checked_mul(factor), "multiply")
    }

    /// The sum of `amounts`, all in `currency` (zero when empty).
    pub fn checked_sum(
        currency: Currency,
        amounts: impl IntoIterator<Item = Money>,
    ) -> Result<Money, AmountError> {
        amounts
            .into_iter()
            .try_fold(Money::zero(currency), Money::checked_add)
    }

    /// Whether strictly above zero.
    pub const fn is_positive(self) -> bool {
        self.minor > 0
    }

    /// Whether below zero.
    pub const fn is_negative(self) -> bool {
        self.minor < 0
    }

    /// Whether zero.
    pub const fn is_zero(self) -> bool {
        self.minor == 0
    }

    fn same_currency(self, other: Money) -> Result<(), AmountError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(AmountError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }

    fn with(self, minor: Option<i64>, operation: &'static str) -> Result<Money, AmountError> {
        minor
            .map(|minor| Money::new(minor, self.currency))
            .ok_or(AmountError::Overflow { operation })
    }
}

impl fmt::Display for Money {
    /// `1999 USD`: minor units, not a formatted decimal, so logs and error
    /// messages show exactly what is stored.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.minor, self.currency)
    }
}

/// Money known to be > 0: order totals and payments, where zero or a
/// negative amount would be a request to move nothing or to pay the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PositiveMoney(Money);

impl PositiveMoney {
    /// `money` if it is above zero; `NotPositive` otherwise.
    pub fn new(money: Money, what: &'static str) -> Result<Self, AmountError> {
        if money.is_positive() {
            Ok(PositiveMoney(money))
        } else {
            Err(AmountError::NotPositive {
                what,
                value: money.minor,
            })
        }
    }

    /// The amount.
    pub const fn get(self) -> Money {
        self.0
    }

    /// Its currency.
    pub const fn currency(self) -> Currency {
        self.0.currency
    }

    /// Minor units (always > 0).
    pub const fn minor(self) -> i64 {
        self.0.minor
    }
}

impl From<PositiveMoney> for Money {
    fn from(money: PositiveMoney) -> Money {
        money.0
    }
}

impl fmt::Display for PositiveMoney {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::USD)
    }

    fn overflow(operation: &'static str) -> Result<Money, AmountError> {
        Err(AmountError::Overflow { operation })
    }

    #[test]
    fn money_parses_from_minor_units_and_a_known_code() {
        assert_eq!(Money::parse(1999, "USD"), Ok(usd(1999)));
        assert_eq!(Money::parse(500, "JPY"), Ok(Money::new(500, Currency::JPY)));
        assert_eq!(Money::parse(-5, "EUR").unwrap().minor, -5);
    }

    #[test]
    fn money_parsing_rejects_every_kind_of_bad_currency() {
        assert!(matches!(
            Money::parse(1, "usd"),
            Err(CurrencyError::Malformed { .. })
        ));
        assert!(matches!(
            Money::parse(1, "ABC"),
            Err(CurrencyError::Unknown { .. })
        ));
        assert_eq!(Money::parse(1, "XXX"), Err(CurrencyError::NoCurrency));
    }

    #[test]
    fn money_arithmetic_is_exact_within_range() {
        assert_eq!(usd(150).checked_add(usd(50)), Ok(usd(200)));
        assert_eq!(usd(150).checked_sub(usd(200)), Ok(usd(-50)));
        assert_eq!(usd(150).checked_neg(), Ok(usd(-150)));
        assert_eq!(usd(150).checked_mul(3), Ok(usd(450)));
        assert_eq!(usd(150).checked_mul(0), Ok(usd(0)));
    }

    #[test]
    fn money_overflow_at_i64_bounds_is_an_error_never_a_wrap() {
        assert_eq!(usd(i64::MAX).checked_add(usd(1)), overflow("add"));
        assert_eq!(usd(i64::MIN).checked_add(usd(-1)), overflow("add"));
        assert_eq!(usd(i64::MIN).checked_sub(usd(1)), overflow("subtract"));
        assert_eq!(usd(i64::MAX).checked_sub(usd(-1)), overflow("subtract"));
        assert_eq!(usd(i64::MIN).checked_neg(), overflow("negate"));
        assert_eq!(usd(i64::MAX).checked_mul(2), overflow("multiply"));
        assert_eq!(usd(i64::MIN).checked_mul(-1), overflow("multiply"));
        assert_eq!(usd(i64::MAX).checked_add(usd(0)), Ok(usd(i64::MAX)));
        assert_eq!(usd(i64::MAX).checked_neg(), Ok(usd(-i64::MAX)));
    }

    #[test]
    fn money_in_different_currencies_never_combines() {
        let eur = Money::new(1, Currency::EUR);
        let mismatch = Err(AmountError::CurrencyMismatch {
            left: Currency::USD,
            right: Currency::EUR,
        });
        assert_eq!(usd(1).checked_add(eur), mismatch);
        assert_eq!(usd(1).checked_sub(eur), mismatch);
    }

    #[test]
    fn sums_are_checked_for_currency_and_overflow() {
        assert_eq!(
            Money::checked_sum(Currency::USD, [usd(1), usd(2), usd(3)]),
            Ok(usd(6))
        );
        assert_eq!(Money::checked_sum(Currency::USD, []), Ok(usd(0)));
        assert_eq!(
            Money::checked_sum(Currency::USD, [usd(i64::MAX), usd(1)]),
            overflow("add")
        );
        assert!(Money::checked_sum(Currency::EUR, [usd(1)]).is_err());
    }

    #[test]
    fn positive_money_rejects_zero_and_negative_amounts() {
        assert_eq!(PositiveMoney::new(usd(1), "total").unwrap().minor(), 1);
        for bad in [0, -1, i64::MIN] {
            assert_eq!(
                PositiveMoney::new(usd(bad), "total"),
                Err(AmountError::NotPositive {
                    what: "total",
                    value: bad
                })
            );
        }
    }

    #[test]
    fn money_displays_minor_units_and_code() {
        assert_eq!(usd(1999).to_string(), "1999 USD");
    }
}

//! Prepaid credits: a unit of their own, never mixed with money.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::AmountError;

/// A whole number of prepaid credits. Signed, because ledger postings and
/// differences are; balances are kept non-negative by
/// [`CreditAccount`](crate::domain::credit::CreditAccount), not by the type.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Credits(pub i64);

impl Credits {
    /// No credits.
    pub const ZERO: Credits = Credits(0);

    /// `self + other`; overflow is an error, never a wrap.
    pub fn checked_add(self, other: Credits) -> Result<Credits, AmountError> {
        self.0
            .checked_add(other.0)
            .map(Credits)
            .ok_or(AmountError::Overflow { operation: "add" })
    }

    /// `self - other`; overflow is an error, never a wrap.
    pub fn checked_sub(self, other: Credits) -> Result<Credits, AmountError> {
        self.0
            .checked_sub(other.0)
            .map(Credits)
            .ok_or(AmountError::Overflow {
                operation: "subtract",
            })
    }

    /// `-self`; fails only for `i64::MIN`.
    pub fn checked_neg(self) -> Result<Credits, AmountError> {
        self.0
            .checked_neg()
            .map(Credits)
            .ok_or(AmountError::Overflow {
                operation: "negate",
            })
    }

    /// `self × factor`; overflow is an error, never a wrap.
    pub fn checked_mul(self, factor: i64) -> Result<Credits, AmountError> {
        self.0
            .checked_mul(factor)
            .map(Credits)
            .ok_or(AmountError::Overflow {
                operation: "multiply",
            })
    }

    /// The raw count.
    pub const fn value(self) -> i64 {
        self.0
    }

    /// Whether strictly above zero.
    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// Whether below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Credits that are known to be > 0: what every grant, debit, refund and
/// reservation takes, so "zero or negative where positive is required" is
/// rejected once, at the edge, and cannot reach the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct PositiveCredits(Credits);

impl PositiveCredits {
    /// `credits` if it is above zero; `NotPositive` otherwise.
    pub fn new(credits: i64) -> Result<Self, AmountError> {
        if credits > 0 {
            Ok(PositiveCredits(Credits(credits)))
        } else {
            Err(AmountError::NotPositive {
                what: "credits",
                value: credits,
            })
        }
    }

    /// The amount as plain credits.
    pub const fn get(self) -> Credits {
        self.0
    }

    /// The raw count (always > 0).
    pub const fn value(self) -> i64 {
        self.0.0
    }
}

impl TryFrom<Credits> for PositiveCredits {
    type Error = AmountError;
    fn try_from(credits: Credits) -> Result<Self, AmountError> {
        PositiveCredits::new(credits.0)
    }
}

impl TryFrom<i64> for PositiveCredits {
    type Error = AmountError;
    fn try_from(credits: i64) -> Result<Self, AmountError> {
        PositiveCredits::new(credits)
    }
}

impl From<PositiveCredits> for i64 {
    fn from(credits: PositiveCredits) -> i64 {
        credits.value()
    }
}

impl From<PositiveCredits> for Credits {
    fn from(credits: PositiveCredits) -> Credits {
        credits.0
    }
}

impl fmt::Display for PositiveCredits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_arithmetic_is_exact_within_range() {
        assert_eq!(Credits(2).checked_add(Credits(3)), Ok(Credits(5)));
        assert_eq!(Credits(2).checked_sub(Credits(3)), Ok(Credits(-1)));
        assert_eq!(Credits(2).checked_neg(), Ok(Credits(-2)));
        assert_eq!(Credits(2).checked_mul(-4), Ok(Credits(-8)));
    }

    #[test]
    fn credit_arithmetic_overflow_at_i64_bounds_is_an_error() {
        let overflow = |operation| Err(AmountError::Overflow { operation });
        assert_eq!(Credits(i64::MAX).checked_add(Credits(1)), overflow("add"));
        assert_eq!(Credits(i64::MIN).checked_add(Credits(-1)), overflow("add"));
        assert_eq!(
            Credits(i64::MIN).checked_sub(Credits(1)),
            overflow("subtract")
        );
        assert_eq!(
            Credits(i64::MAX).checked_sub(Credits(-1)),
            overflow("subtract")
        );
        assert_eq!(Credits(i64::MIN).checked_neg(), overflow("negate"));
        assert_eq!(Credits(i64::MAX).checked_mul(2), overflow("multiply"));
        assert_eq!(Credits(i64::MIN).checked_mul(-1), overflow("multiply"));
        assert_eq!(Credits(i64::MAX).checked_neg(), Ok(Credits(-i64::MAX)));
    }

    #[test]
    fn positive_credits_reject_zero_and_negative_amounts() {
        assert_eq!(PositiveCredits::new(1).unwrap().value(), 1);
        assert_eq!(PositiveCredits::new(i64::MAX).unwrap().value(), i64::MAX);
        for bad in [0, -1, i64::MIN] {
            let error = PositiveCredits::new(bad).unwrap_err();
            assert_eq!(
                error,
                AmountError::NotPositive {
                    what: "credits",
                    value: bad
                }
            );
        }
    }

    #[test]
    fn positive_credits_validate_when_deserialised() {
        assert_eq!(
            serde_json::from_str::<PositiveCredits>("30")
                .unwrap()
                .value(),
            30
        );
        assert!(serde_json::from_str::<PositiveCredits>("0").is_err());
        assert!(serde_json::from_str::<PositiveCredits>("-5").is_err());
    }
}

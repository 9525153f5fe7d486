//! Instants and periods as plain values.
//!
//! The domain never reads a clock: callers pass `now` in, so every rule that
//! depends on time is deterministic and testable without sleeping.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::{DomainError, Result};

/// An instant in milliseconds since the Unix epoch, UTC — the same unit the
/// policy contract (`now-ms`, `period-start-ms`, …) and the database use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `millis` milliseconds after the epoch.
    pub const fn from_unix_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// `self + millis`, or `None` past the representable range.
    pub fn checked_add_millis(self, millis: i64) -> Option<Self> {
        self.0.checked_add(millis).map(Timestamp)
    }

    /// `self - millis`, or `None` past the representable range.
    pub fn checked_sub_millis(self, millis: i64) -> Option<Self> {
        self.0.checked_sub(millis).map(Timestamp)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// A half-open interval `[start, end)`: a billing period or a trial.
///
/// Half-open so consecutive periods share their boundary instant without
/// overlapping (`next.start == previous.end`), which is how the policy
/// contract describes renewals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Period {
    start: Timestamp,
    end: Timestamp,
}

impl Period {
    /// A period; `end` must be after `start` (an empty period bills nothing
    /// and would make "is the renewal due?" ambiguous).
    pub fn new(start: Timestamp, end: Timestamp) -> Result<Self> {
        if end <= start {
            return Err(DomainError::invalid(
                "period",
                format!("end ({end}) must be after start ({start})"),
            ));
        }
        Ok(Period { start, end })
    }

    /// First instant of the period (inclusive).
    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// First instant after the period (exclusive).
    pub fn end(&self) -> Timestamp {
        self.end
    }

    /// Whether `at` falls inside the period.
    pub fn contains(&self, at: Timestamp) -> bool {
        self.start <= at && at < self.end
    }

    /// Checks that `next` starts exactly where `self` ends, so no time is
    /// billed twice or left unbilled.
    pub fn check_followed_by(&self, next: &Period) -> Result<()> {
        if next.start != self.end {
            return Err(DomainError::invalid(
                "period",
                format!(
                    "the next period must start where the current one ends ({}), not at {}",
                    self.end, next.start
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms)
    }

    #[test]
    fn a_period_must_end_after_it_starts() {
        assert!(Period::new(at(1), at(2)).is_ok());
        assert_eq!(Period::new(at(2), at(2)).unwrap_err().code(), "REQ_001");
        assert_eq!(Period::new(at(3), at(2)).unwrap_err().code(), "REQ_001");
    }

    #[test]
    fn a_period_contains_its_start_but_not_its_end() {
        let period = Period::new(at(10), at(20)).unwrap();
        assert!(!period.contains(at(9)));
        assert!(period.contains(at(10)));
        assert!(period.contains(at(19)));
        assert!(!period.contains(at(20)));
    }

    #[test]
    fn only_a_contiguous_period_may_follow() {
        let current = Period::new(at(10), at(20)).unwrap();
        assert!(
            current
                .check_followed_by(&Period::new(at(20), at(30)).unwrap())
                .is_ok()
        );
        assert!(
            current
                .check_followed_by(&Period::new(at(21), at(30)).unwrap())
                .is_err()
        );
        assert!(
            current
                .check_followed_by(&Period::new(at(19), at(30)).unwrap())
                .is_err()
        );
    }

    #[test]
    fn timestamp_arithmetic_is_checked() {
        assert_eq!(at(5).checked_add_millis(5), Some(at(10)));
        assert_eq!(at(i64::MAX).checked_add_millis(1), None);
        assert_eq!(at(i64::MIN).checked_sub_millis(1), None);
    }
}

//! Where a billing period ends, given the subscription's billing anchor.
//!
//! A period that starts at `s` ends `interval` calendar months later, on the
//! anchor's day of month and time of day, clamped to the month's last day. The
//! day comes from the anchor, not from `s`: after Feb 29 (a clamped Jan 31)
//! the next period still ends on Mar 31. Only the day and the time of day of
//! the anchor matter, so the anchor stays valid when a plan change moves a
//! subscription from a monthly to a yearly plan.

use fluxpay_policy_sdk::calendar::{self, DateTime, days_in_month};
use fluxpay_policy_sdk::prelude::*;

use crate::config::Interval;
use crate::{date, out_of_range};

/// The end of the paid period of `interval` that starts at `start_ms` on a
/// subscription anchored at `anchor_ms`.
///
/// Rejected `invalid-period` when the anchor is after the start, or when the
/// start is not itself on the anchor's day and time (a period start the
/// host did not get from a previous period's end).
pub fn renewal_end(interval: Interval, anchor_ms: i64, start_ms: i64) -> Result<i64, PolicyError> {
    if anchor_ms > start_ms {
        return Err(PolicyError::rejected(
            "invalid-period",
            format!(
                "the billing anchor {} is after the period start {}",
                date(anchor_ms),
                date(start_ms)
            ),
        ));
    }
    let anchor = DateTime::from_ms(anchor_ms);
    if on_anchor_day(anchor, start_ms, 0).ok_or_else(out_of_range)? != start_ms {
        return Err(PolicyError::rejected(
            "invalid-period",
            format!(
                "the period start {} is not a renewal date of the billing anchor {} \
                 (day {} of the month, at the anchor's time of day)",
                date(start_ms),
                date(anchor_ms),
                anchor.day
            ),
        ));
    }
    on_anchor_day(anchor, start_ms, interval.months()).ok_or_else(out_of_range)
}

/// The anchor's day (clamped) and time of day in the month `months` after the
/// month of `instant_ms`; `None` out of range.
fn on_anchor_day(anchor: DateTime, instant_ms: i64, months: i64) -> Option<i64> {
    // add_months lands somewhere in the target month; only its year and
    // month are kept.
    let month = DateTime::from_ms(calendar::add_months(instant_ms, months)?);
    DateTime {
        year: month.year,
        month: month.month,
        day: anchor.day.min(days_in_month(month.year, month.month)),
        ms_of_day: anchor.ms_of_day,
    }
    .to_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxpay_policy_sdk::calendar::utc_ms;

    fn at(year: i64, month: u32, day: u32) -> i64 {
        utc_ms(year, month, day).unwrap()
    }

    #[test]
    fn a_period_on_the_anchor_ends_one_interval_later() {
        let anchor = at(2024, 1, 15);
        assert_eq!(
            renewal_end(Interval::Monthly, anchor, anchor),
            Ok(at(2024, 2, 15))
        );
        assert_eq!(
            renewal_end(Interval::Yearly, anchor, anchor),
            Ok(at(2025, 1, 15))
        );
    }

    #[test]
    fn the_day_comes_back_after_a_clamped_month() {
        let anchor = at(2024, 1, 31);
        assert_eq!(
            renewal_end(Interval::Monthly, anchor, at(2024, 2, 29)),
            Ok(at(2024, 3, 31))
        );
        assert_eq!(
            renewal_end(Interval::Monthly, anchor, at(2024, 4, 30)),
            Ok(at(2024, 5, 31))
        );
    }

    #[test]
    fn a_start_off_the_anchor_day_is_rejected() {
        let anchor = at(2024, 1, 31);
        let err = renewal_end(Interval::Monthly, anchor, at(2024, 3, 29)).unwrap_err();
        assert_eq!(err.rejection_code(), Some("invalid-period"));
        // The same day at another time of day is off the anchor too.
        let err = renewal_end(Interval::Monthly, anchor + 1, at(2024, 2, 29)).unwrap_err();
        assert_eq!(err.rejection_code(), Some("invalid-period"));
    }

    #[test]
    fn an_anchor_after_the_start_is_rejected() {
        let err = renewal_end(Interval::Monthly, at(2024, 2, 1), at(2024, 1, 1)).unwrap_err();
        assert_eq!(err.rejection_code(), Some("invalid-period"));
    }
}

//! UTC calendar arithmetic on epoch milliseconds, without a date crate.
//!
//! A policy has no clock and no time zone: every instant is milliseconds since
//! the Unix epoch, UTC (proleptic Gregorian calendar). Billing periods need
//! "the same day next month", which is what [`add_months`] does, clamping the
//! day to the target month's length (Jan 31 + 1 month = Feb 28, or Feb 29 in a
//! leap year) and keeping the time of day.
//!
//! The day/civil conversions are Howard Hinnant's `days_from_civil` /
//! `civil_from_days` algorithms, exact for every `i64` day count in range.

/// Milliseconds in a UTC day (no leap seconds, as in Unix time).
pub const MS_PER_DAY: i64 = 86_400_000;

/// A UTC calendar date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateTime {
    /// The year, e.g. 2024 (astronomical numbering: 0 is 1 BC).
    pub year: i64,
    /// The month, 1 (January) to 12 (December).
    pub month: u32,
    /// The day of the month, from 1.
    pub day: u32,
    /// Milliseconds since midnight, `0..MS_PER_DAY`.
    pub ms_of_day: i64,
}

impl DateTime {
    /// The calendar date and time of `instant_ms`.
    pub fn from_ms(instant_ms: i64) -> DateTime {
        let days = instant_ms.div_euclid(MS_PER_DAY);
        let ms_of_day = instant_ms.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            ms_of_day,
        }
    }

    /// The instant in epoch milliseconds; `None` if the fields are not a valid
    /// date or the instant does not fit in an `i64`.
    pub fn to_ms(&self) -> Option<i64> {
        if !(1..=12).contains(&self.month)
            || self.day == 0
            || self.day > days_in_month(self.year, self.month)
            || !(0..MS_PER_DAY).contains(&self.ms_of_day)
        {
            return None;
        }
        days_from_civil(self.year, self.month, self.day)?
            .checked_mul(MS_PER_DAY)?
            .checked_add(self.ms_of_day)
    }
}

/// Whether `year` has a February 29.
pub fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// The number of days in `month` (1–12) of `year`; 0 for an invalid month.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Midnight UTC of `year-month-day` in epoch milliseconds; `None` for an
/// invalid date.
///
/// ```
/// use fluxpay_policy_sdk::calendar::utc_ms;
/// assert_eq!(utc_ms(1970, 1, 1), Some(0));
/// assert_eq!(utc_ms(2024, 2, 30), None);
/// ```
pub fn utc_ms(year: i64, month: u32, day: u32) -> Option<i64> {
    DateTime {
        year,
        month,
        day,
        ms_of_day: 0,
    }
    .to_ms()
}

/// `instant_ms` moved by `months` calendar months (negative goes back): same
/// time of day, same day of month clamped to the target month's last day.
/// `None` if the result is out of range.
///
/// ```
/// use fluxpay_policy_sdk::calendar::{add_months, utc_ms};
/// let jan_31 = utc_ms(2024, 1, 31).unwrap();
/// assert_eq!(add_months(jan_31, 1), utc_ms(2024, 2, 29)); // leap year
/// assert_eq!(add_months(jan_31, 13), utc_ms(2025, 2, 28));
/// ```
pub fn add_months(instant_ms: i64, months: i64) -> Option<i64> {
    let start = DateTime::from_ms(instant_ms);
    // Months counted from year 0, so the division below handles negatives.
    let index = start
        .year
        .checked_mul(12)?
        .checked_add(i64::from(start.month) - 1)?
        .checked_add(months)?;
    let year = index.div_euclid(12);
    let month = u32::try_from(index.rem_euclid(12)).ok()? + 1;
    let day = start.day.min(days_in_month(year, month));
    DateTime {
        year,
        month,
        day,
        ms_of_day: start.ms_of_day,
    }
    .to_ms()
}

/// `instant_ms` moved by `years` calendar years; Feb 29 becomes Feb 28 in a
/// common year. `None` if the result is out of range.
pub fn add_years(instant_ms: i64, years: i64) -> Option<i64> {
    add_months(instant_ms, years.checked_mul(12)?)
}

/// Days since 1970-01-01 of a valid civil date; `None` on overflow.
fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    let year = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400); // [0, 399]
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era.checked_mul(146_097)?
        .checked_add(day_of_era)?
        .checked_sub(719_468)
}

/// The civil date of a day count since 1970-01-01. Total for every day count
/// that comes from an `i64` millisecond instant.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // days = ms / MS_PER_DAY is at most ~1.07e11, so the shift cannot overflow.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153; // [0, 11], March-based
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(year: i64, month: u32, day: u32) -> i64 {
        utc_ms(year, month, day).expect("valid date")
    }

    #[test]
    fn known_instants_convert_both_ways() {
        assert_eq!(at(1970, 1, 1), 0);
        assert_eq!(at(2000, 3, 1), 951_868_800_000);
        assert_eq!(at(2024, 2, 29), 1_709_164_800_000);
        assert_eq!(at(1969, 12, 31), -MS_PER_DAY);
        let instant = at(2024, 2, 29) + 3_600_000 + 1;
        assert_eq!(
            DateTime::from_ms(instant),
            DateTime {
                year: 2024,
                month: 2,
                day: 29,
                ms_of_day: 3_600_001
            }
        );
    }

    #[test]
    fn every_day_for_eight_centuries_round_trips() {
        let mut expected = at(1600, 1, 1);
        for year in 1600..2400 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    assert_eq!(at(year, month, day), expected, "{year}-{month}-{day}");
                    let back = DateTime::from_ms(expected);
                    assert_eq!((back.year, back.month, back.day), (year, month, day));
                    expected += MS_PER_DAY;
                }
            }
        }
    }

    #[test]
    fn leap_years_follow_the_gregorian_rule() {
        assert!(is_leap_year(2024));
        assert!(is_leap_year(2000));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2023));
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2024, 13), 0);
    }

    #[test]
    fn invalid_dates_have_no_instant() {
        assert_eq!(utc_ms(2023, 2, 29), None);
        assert_eq!(utc_ms(2024, 0, 1), None);
        assert_eq!(utc_ms(2024, 4, 31), None);
        assert_eq!(utc_ms(2024, 1, 0), None);
    }

    #[test]
    fn month_end_is_clamped_to_the_shorter_month() {
        assert_eq!(add_months(at(2024, 1, 31), 1), Some(at(2024, 2, 29)));
        assert_eq!(add_months(at(2023, 1, 31), 1), Some(at(2023, 2, 28)));
        assert_eq!(add_months(at(2100, 1, 31), 1), Some(at(2100, 2, 28)));
        assert_eq!(add_months(at(2024, 3, 31), 1), Some(at(2024, 4, 30)));
        assert_eq!(add_months(at(2024, 8, 31), 1), Some(at(2024, 9, 30)));
        assert_eq!(add_months(at(2024, 1, 30), 1), Some(at(2024, 2, 29)));
    }

    #[test]
    fn adding_months_crosses_years_both_ways_and_keeps_the_time_of_day() {
        let time = 13 * 3_600_000 + 5;
        assert_eq!(
            add_months(at(2024, 12, 15) + time, 1),
            Some(at(2025, 1, 15) + time)
        );
        assert_eq!(add_months(at(2024, 1, 15), -1), Some(at(2023, 12, 15)));
        assert_eq!(add_months(at(2024, 3, 31), -1), Some(at(2024, 2, 29)));
        assert_eq!(add_months(at(2024, 5, 10), 0), Some(at(2024, 5, 10)));
        assert_eq!(
            add_months(at(1969, 12, 31) + time, 2),
            Some(at(1970, 2, 28) + time)
        );
    }

    #[test]
    fn adding_years_moves_feb_29_to_feb_28_in_a_common_year() {
        assert_eq!(add_years(at(2024, 2, 29), 1), Some(at(2025, 2, 28)));
        assert_eq!(add_years(at(2024, 2, 29), 4), Some(at(2028, 2, 29)));
        assert_eq!(add_years(at(2023, 6, 1), 1), Some(at(2024, 6, 1)));
    }

    #[test]
    fn out_of_range_results_are_none_not_a_panic() {
        assert_eq!(add_months(i64::MAX, 1), None);
        assert_eq!(add_months(i64::MIN, -1), None);
        assert_eq!(add_months(0, i64::MAX), None);
        assert_eq!(add_years(0, i64::MAX), None);
        // The extremes themselves still convert.
        let _ = DateTime::from_ms(i64::MAX);
        let _ = DateTime::from_ms(i64::MIN);
    }
}

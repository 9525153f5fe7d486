//! Renewals keep the billing anchor's day of month and time of day.

use super::*;

#[test]
fn a_start_names_its_billing_anchor() {
    let begin = at(2024, 1, 31);
    let q = start("basic", begin).unwrap();
    assert_eq!(
        metadata(&q, BILLING_ANCHOR_KEY),
        Some(begin.to_string().as_str())
    );
    // With a trial, the first paid period (and so the anchor) starts at its end.
    let q = start("pro", begin).unwrap();
    let trial_end = begin + 14 * MS_PER_DAY;
    assert_eq!(
        metadata(&q, BILLING_ANCHOR_KEY),
        Some(trial_end.to_string().as_str())
    );
}

#[test]
fn a_jan_31_anchor_renews_on_the_31st_or_the_month_end_through_a_leap_year() {
    let first = start("basic", at(2024, 1, 31)).unwrap();
    let ends = renew_repeatedly("basic", &first, 13);
    let expected = [
        at(2024, 2, 29),
        at(2024, 3, 31),
        at(2024, 4, 30),
        at(2024, 5, 31),
        at(2024, 6, 30),
        at(2024, 7, 31),
        at(2024, 8, 31),
        at(2024, 9, 30),
        at(2024, 10, 31),
        at(2024, 11, 30),
        at(2024, 12, 31),
        at(2025, 1, 31),
        at(2025, 2, 28),
        at(2025, 3, 31),
    ];
    assert_eq!(ends, expected);
}

#[test]
fn a_jan_31_anchor_in_a_common_year_reaches_feb_29_of_the_next_leap_year() {
    let first = start("basic", at(2023, 1, 31)).unwrap();
    let ends = renew_repeatedly("basic", &first, 13);
    assert_eq!(ends[0], at(2023, 2, 28));
    assert_eq!(
        ends[1],
        at(2023, 3, 31),
        "the 31st comes back after February"
    );
    assert_eq!(ends[12], at(2024, 2, 29));
    assert_eq!(ends[13], at(2024, 3, 31));
}

#[test]
fn the_anchor_time_of_day_is_kept_by_every_renewal() {
    let time = 23 * 3_600_000 + 30 * 60_000;
    let first = start("basic", at(2024, 1, 31) + time).unwrap();
    let ends = renew_repeatedly("basic", &first, 3);
    assert_eq!(
        ends,
        [
            at(2024, 2, 29) + time,
            at(2024, 3, 31) + time,
            at(2024, 4, 30) + time,
            at(2024, 5, 31) + time,
        ]
    );
}

#[test]
fn a_feb_29_yearly_anchor_comes_back_in_the_next_leap_year() {
    let first = start("pro-yearly", at(2024, 2, 29)).unwrap();
    let ends = renew_repeatedly("pro-yearly", &first, 4);
    assert_eq!(
        ends,
        [
            at(2025, 2, 28),
            at(2026, 2, 28),
            at(2027, 2, 28),
            at(2028, 2, 29),
            at(2029, 2, 28),
        ]
    );
}

#[test]
fn renewals_after_a_trial_keep_the_trial_end_as_anchor() {
    // 14-day trial from Jan 17 ends on Jan 31: the anchor is the 31st.
    let first = start("pro", at(2024, 1, 17)).unwrap();
    assert_eq!(terms(&first).trial_end_ms, Some(at(2024, 1, 31)));
    let ends = renew_repeatedly("pro", &first, 3);
    assert_eq!(
        ends,
        [
            at(2024, 1, 31),
            at(2024, 2, 29),
            at(2024, 3, 31),
            at(2024, 4, 30)
        ]
    );
}

#[test]
fn a_renewal_off_the_anchor_day_is_rejected() {
    // Mar 29 is where an anchorless renewal would have drifted to.
    let err = anchored_renewal("basic", at(2024, 1, 31), at(2024, 3, 29)).unwrap_err();
    assert_eq!(err.rejection_code(), Some("invalid-period"));
}

#[test]
fn a_renewal_anchored_after_its_start_is_rejected() {
    let err = anchored_renewal("basic", at(2024, 3, 1), at(2024, 2, 1)).unwrap_err();
    assert_eq!(err.rejection_code(), Some("invalid-period"));
}

#[test]
fn a_monthly_anchor_carries_over_to_a_yearly_plan() {
    // Anchored on Jan 31, switched to yearly during the Mar 31 period: the
    // yearly periods keep the 31st.
    let q = anchored_renewal("pro-yearly", at(2024, 1, 31), at(2024, 4, 30)).unwrap();
    assert_eq!(terms(&q).period_end_ms, at(2025, 4, 30));
    let q = anchored_renewal("pro-yearly", at(2024, 1, 31), at(2025, 3, 31)).unwrap();
    assert_eq!(terms(&q).period_end_ms, at(2026, 3, 31));
}

//! A plan change during a free trial credits nothing.

use super::*;

/// The 14-day trial of `pro` that started on 2024-04-01.
fn pro_trial() -> (i64, i64) {
    (at(2024, 4, 1), at(2024, 4, 15))
}

#[test]
fn a_change_during_a_trial_to_a_plan_without_trial_credits_nothing_and_starts_paying_now() {
    let (s, trial_end) = pro_trial();
    let change_at = at(2024, 4, 5);
    let q = change_with_trial("pro", "basic", (s, trial_end), change_at, Some(trial_end)).unwrap();
    assert!(
        q.line_items
            .iter()
            .all(|line| !line.code.starts_with("proration:")),
        "{:?}",
        q.line_items
    );
    assert_eq!(total(&q), &Money::new(1000, "USD"));
    assert_eq!(q.line_items[0].code, "plan:basic");
    assert_eq!(
        terms(&q),
        &SubscriptionTerms {
            plan_id: "basic".into(),
            period_start_ms: change_at,
            period_end_ms: at(2024, 5, 5),
            trial_end_ms: None,
        }
    );
    assert_eq!(
        metadata(&q, BILLING_ANCHOR_KEY),
        Some(change_at.to_string().as_str())
    );
    assert_eq!(metadata(&q, "plan_change"), Some("during-trial"));
    assert_lines_add_up(&q);
}

#[test]
fn a_change_during_a_trial_to_a_plan_with_a_longer_trial_keeps_the_current_trial_end() {
    let (s, trial_end) = pro_trial();
    let change_at = at(2024, 4, 5);
    let q = change_with_trial("pro", "team", (s, trial_end), change_at, Some(trial_end)).unwrap();
    assert_eq!(total(&q), &Money::new(0, "USD"));
    assert_eq!(q.line_items.len(), 1);
    assert_eq!(q.line_items[0].code, "plan:team:trial");
    assert_eq!(
        terms(&q),
        &SubscriptionTerms {
            plan_id: "team".into(),
            period_start_ms: change_at,
            period_end_ms: trial_end,
            trial_end_ms: Some(trial_end),
        }
    );
    assert_eq!(
        metadata(&q, BILLING_ANCHOR_KEY),
        Some(trial_end.to_string().as_str())
    );
}

#[test]
fn a_change_during_a_trial_to_a_plan_with_a_shorter_trial_ends_it_at_that_plans_length() {
    // `lite` has a 7-day trial: counted from the trial start, it ends Apr 8.
    let (s, trial_end) = pro_trial();
    let q = change_with_trial(
        "pro",
        "lite",
        (s, trial_end),
        at(2024, 4, 3),
        Some(trial_end),
    )
    .unwrap();
    assert_eq!(total(&q), &Money::new(0, "USD"));
    assert_eq!(terms(&q).period_end_ms, at(2024, 4, 8));
    assert_eq!(terms(&q).trial_end_ms, Some(at(2024, 4, 8)));

    // After day 7 the `lite` trial would be over: paying starts at the change.
    let q = change_with_trial(
        "pro",
        "lite",
        (s, trial_end),
        at(2024, 4, 10),
        Some(trial_end),
    )
    .unwrap();
    assert_eq!(total(&q), &Money::new(500, "USD"));
    assert_eq!(terms(&q).period_start_ms, at(2024, 4, 10));
    assert_eq!(terms(&q).trial_end_ms, None);
}

#[test]
fn a_change_after_the_trial_is_prorated_as_usual() {
    // Trial Apr 1–15, first paid period Apr 15–May 15 (30 days); change on
    // Apr 27: 18/30 remain. A trial end at or before the change is over and
    // changes nothing.
    let (_, trial_end) = pro_trial();
    let period = (trial_end, at(2024, 5, 15));
    let without = change_with_trial("pro", "basic", period, at(2024, 4, 27), None).unwrap();
    let with_past_trial =
        change_with_trial("pro", "basic", period, at(2024, 4, 27), Some(trial_end)).unwrap();
    assert_eq!(without, with_past_trial);
    assert_eq!(without.line_items[0].code, "proration:credit:pro");
    assert_eq!(without.line_items[0].amount, Amount::money(-1800, "USD"));
    assert_eq!(without.line_items[1].amount, Amount::money(600, "USD"));
    assert_eq!(total(&without), &Money::new(-1200, "USD"));
}

#[test]
fn a_trial_ending_after_the_current_period_is_rejected() {
    let (s, e) = pro_trial();
    let err = change_with_trial("pro", "basic", (s, e), s, Some(e + 1)).unwrap_err();
    assert_eq!(err.rejection_code(), Some("invalid-period"));
}

#[test]
fn a_change_during_a_trial_between_currencies_is_still_refused() {
    let (s, e) = pro_trial();
    let err = change_with_trial("pro", "euro", (s, e), s, Some(e)).unwrap_err();
    assert_eq!(err.rejection_code(), Some("currency-mismatch"));
}

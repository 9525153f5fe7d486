use super::*;

use SubscriptionEvent as E;
use SubscriptionStatus as S;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn period(start: i64, end: i64) -> Period {
    Period::new(at(start), at(end)).unwrap()
}

fn plan(id: &str) -> PlanId {
    PlanId::new(id).unwrap()
}

/// A subscription in `status` over [100, 200), with the flag as given.
fn subscription(status: S, cancel_at_period_end: bool) -> Subscription {
    Subscription::restore(SubscriptionParts {
        id: SubscriptionId::new("s_1").unwrap(),
        customer: CustomerId::new("c_1").unwrap(),
        plan: plan("basic"),
        pending_plan: None,
        status,
        period: period(100, 200),
        anchor: (status != S::Trialing).then_some(at(0)),
        cancel_at_period_end,
    })
    .unwrap()
}

/// Applies `event` with arguments that satisfy every date rule: now is past
/// the period end and the next period is contiguous.
fn apply(sub: &Subscription, event: E) -> Result<SubscriptionChange> {
    let now = at(250);
    let next = period(200, 300);
    match event {
        E::EndTrial => sub.end_trial(next, now, "t"),
        E::Renew => sub.renew(next, now, "t"),
        E::PaymentFailed => sub.payment_failed(now, "t"),
        E::PaymentRecovered => sub.payment_recovered(next, "t"),
        E::CancelNow => sub.cancel_now("t"),
        E::CancelAtPeriodEnd => sub.cancel_at_period_end("t"),
        E::Resume => sub.resume("t"),
        E::Expire => sub.expire(now, "t"),
        E::ChangePlanNow => sub.change_plan_now(plan("pro"), "t"),
        E::ChangePlanAtPeriodEnd => sub.change_plan_at_period_end(plan("pro"), "t"),
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    To(S),
    Illegal,
    NotAllowed,
}

/// The full table, written independently of the implementation: status
/// table plus the cancel-at-period-end flag rules.
fn expected(from: S, flagged: bool, event: E) -> Outcome {
    use Outcome::*;
    let live = matches!(from, S::Trialing | S::Active);
    let unless_flagged = |to| if flagged { NotAllowed } else { To(to) };
    let only_if_flagged = |to| if flagged { To(to) } else { NotAllowed };
    match event {
        E::EndTrial if from == S::Trialing => unless_flagged(S::Active),
        E::Renew if from == S::Active => unless_flagged(S::Active),
        E::PaymentFailed if live => unless_flagged(S::PastDue),
        E::PaymentRecovered if from == S::PastDue => To(S::Active),
        E::CancelNow if live || from == S::PastDue => To(S::Cancelled),
        E::CancelAtPeriodEnd if live => unless_flagged(from),
        E::Resume if live => only_if_flagged(from),
        E::Expire if live => only_if_flagged(S::Expired),
        E::Expire if from == S::PastDue => To(S::Expired),
        E::ChangePlanNow if live => To(from),
        E::ChangePlanAtPeriodEnd if live => unless_flagged(from),
        _ => Illegal,
    }
}

fn states() -> Vec<(S, bool)> {
    let mut states = Vec::new();
    for status in S::ALL {
        states.push((status, false));
        if matches!(status, S::Trialing | S::Active) {
            states.push((status, true));
        }
    }
    states
}

#[test]
fn every_status_flag_and_event_combination_follows_the_table() {
    for (from, flagged) in states() {
        let sub = subscription(from, flagged);
        for event in E::ALL {
            let result = apply(&sub, event);
            let case = format!("{from} flagged={flagged} {event:?}");
            match (expected(from, flagged, event), result) {
                (Outcome::To(to), Ok(change)) => {
                    assert_eq!(change.subscription.status(), to, "{case}");
                    assert_eq!(change.transition.from, Some(from.as_str()), "{case}");
                    assert_eq!(change.transition.to, to.as_str(), "{case}");
                    assert_eq!(change.transition.event, event.as_str(), "{case}");
                    assert_eq!(change.transition.entity_id, "s_1", "{case}");
                    Subscription::restore(change.subscription.to_parts())
                        .unwrap_or_else(|e| panic!("{case}: result is not restorable: {e}"));
                }
                (Outcome::Illegal, Err(error)) => {
                    assert_eq!(
                        error,
                        DomainError::IllegalTransition {
                            entity: EntityKind::Subscription,
                            action: event.as_str(),
                            from: from.as_str(),
                            to: event.target().map(S::as_str),
                        },
                        "{case}"
                    );
                    assert_eq!(error.code(), "PAY_004");
                }
                (Outcome::NotAllowed, Err(error)) => {
                    assert!(
                        matches!(error, DomainError::ActionNotAllowed { .. }),
                        "{case}: {error}"
                    );
                    assert_eq!(error.code(), "PAY_004");
                }
                (want, got) => panic!("{case}: expected {want:?}, got {got:?}"),
            }
        }
    }
}

#[test]
fn the_status_table_alone_matches_the_documented_table() {
    let legal: Vec<(S, E, S)> = S::ALL
        .into_iter()
        .flat_map(|from| E::ALL.into_iter().map(move |event| (from, event)))
        .filter_map(|(from, event)| from.on(event).ok().map(|to| (from, event, to)))
        .collect();
    assert_eq!(legal.len(), 19);
    for status in [S::Cancelled, S::Expired] {
        assert!(E::ALL.into_iter().all(|event| status.on(event).is_err()));
        assert!(status.is_terminal());
    }
}

#[test]
fn a_trial_starts_without_an_anchor_and_its_end_sets_one() {
    let created = Subscription::start_trial(
        SubscriptionId::new("s").unwrap(),
        CustomerId::new("c").unwrap(),
        plan("basic"),
        period(0, 100),
        "api",
    );
    assert_eq!(created.subscription.status(), S::Trialing);
    assert_eq!(created.subscription.anchor(), None);
    assert_eq!(
        (created.transition.from, created.transition.to),
        (None, "TRIALING")
    );
    let ended = created
        .subscription
        .end_trial(period(100, 200), at(100), "trial over")
        .unwrap();
    assert_eq!(ended.subscription.status(), S::Active);
    assert_eq!(ended.subscription.anchor(), Some(at(100)));
    assert_eq!(ended.subscription.period(), period(100, 200));
}

#[test]
fn a_paid_start_anchors_at_the_period_start() {
    let created = Subscription::start(
        SubscriptionId::new("s").unwrap(),
        CustomerId::new("c").unwrap(),
        plan("basic"),
        period(50, 150),
        "api",
    );
    assert_eq!(created.subscription.status(), S::Active);
    assert_eq!(created.subscription.anchor(), Some(at(50)));
    assert_eq!(created.transition.to, "ACTIVE");
}

#[test]
fn renewal_moves_to_the_next_period_and_keeps_the_anchor() {
    let renewed = subscription(S::Active, false)
        .renew(period(200, 300), at(200), "renewal")
        .unwrap();
    assert_eq!(renewed.subscription.period(), period(200, 300));
    assert_eq!(renewed.subscription.anchor(), Some(at(0)));
    assert!(!renewed.transition.changes_status());
}

#[test]
fn renewing_or_failing_before_the_period_ends_is_not_yet_due() {
    let active = subscription(S::Active, false);
    let error = active.renew(period(200, 300), at(199), "").unwrap_err();
    assert_eq!(
        error,
        DomainError::NotYetDue {
            entity: EntityKind::Subscription,
            action: "renew",
            due_at: at(200),
            now: at(199)
        }
    );
    assert_eq!(error.code(), "PAY_004");
    assert!(active.payment_failed(at(199), "").is_err());
    assert!(
        subscription(S::Trialing, false)
            .end_trial(period(200, 300), at(199), "")
            .is_err()
    );
}

#[test]
fn a_next_period_that_is_not_contiguous_is_rejected() {
    let active = subscription(S::Active, false);
    for next in [period(201, 300), period(150, 300)] {
        assert_eq!(
            active.renew(next, at(250), "").unwrap_err().code(),
            "REQ_001"
        );
    }
    let past_due = subscription(S::PastDue, false);
    assert!(past_due.payment_recovered(period(250, 300), "").is_err());
}

#[test]
fn a_failed_renewal_keeps_the_last_paid_period_and_recovery_continues_from_it() {
    let failed = subscription(S::Active, false)
        .payment_failed(at(200), "card declined")
        .unwrap();
    assert_eq!(failed.subscription.status(), S::PastDue);
    assert_eq!(failed.subscription.period(), period(100, 200));
    let recovered = failed
        .subscription
        .payment_recovered(period(200, 300), "paid")
        .unwrap();
    assert_eq!(recovered.subscription.status(), S::Active);
    assert_eq!(recovered.subscription.period(), period(200, 300));
}

#[test]
fn a_trial_whose_first_charge_failed_gets_its_anchor_on_recovery() {
    let failed = subscription(S::Trialing, false)
        .payment_failed(at(200), "")
        .unwrap();
    assert_eq!(failed.subscription.anchor(), None);
    let recovered = failed
        .subscription
        .payment_recovered(period(200, 300), "")
        .unwrap();
    assert_eq!(recovered.subscription.anchor(), Some(at(200)));
}

#[test]
fn cancel_at_period_end_flags_then_expires_at_the_period_end() {
    let flagged = subscription(S::Active, false)
        .cancel_at_period_end("customer")
        .unwrap();
    assert!(flagged.subscription.cancels_at_period_end());
    assert_eq!(flagged.subscription.status(), S::Active);
    let early = flagged.subscription.expire(at(199), "").unwrap_err();
    assert!(matches!(early, DomainError::NotYetDue { .. }));
    let expired = flagged.subscription.expire(at(200), "period over").unwrap();
    assert_eq!(expired.subscription.status(), S::Expired);
    assert!(!expired.subscription.cancels_at_period_end());
}

#[test]
fn a_past_due_subscription_may_expire_at_any_time() {
    let expired = subscription(S::PastDue, false)
        .expire(at(0), "dunning exhausted")
        .unwrap();
    assert_eq!(expired.subscription.status(), S::Expired);
}

#[test]
fn resuming_clears_a_scheduled_cancellation_so_it_renews_again() {
    let resumed = subscription(S::Active, true)
        .resume("changed mind")
        .unwrap();
    assert!(!resumed.subscription.cancels_at_period_end());
    assert!(
        resumed
            .subscription
            .renew(period(200, 300), at(200), "")
            .is_ok()
    );
}

#[test]
fn an_immediate_plan_change_replaces_the_plan_and_drops_a_pending_one() {
    let scheduled = subscription(S::Active, false)
        .change_plan_at_period_end(plan("team"), "")
        .unwrap();
    let changed = scheduled
        .subscription
        .change_plan_now(plan("pro"), "upgrade")
        .unwrap();
    assert_eq!(changed.subscription.plan(), &plan("pro"));
    assert_eq!(changed.subscription.pending_plan(), None);
    assert_eq!(changed.subscription.period(), period(100, 200));
}

#[test]
fn a_plan_change_at_period_end_applies_at_the_next_renewal() {
    let scheduled = subscription(S::Active, false)
        .change_plan_at_period_end(plan("pro"), "downgrade")
        .unwrap();
    assert_eq!(scheduled.subscription.plan(), &plan("basic"));
    assert_eq!(scheduled.subscription.pending_plan(), Some(&plan("pro")));
    let renewed = scheduled
        .subscription
        .renew(period(200, 300), at(200), "")
        .unwrap();
    assert_eq!(renewed.subscription.plan(), &plan("pro"));
    assert_eq!(renewed.subscription.pending_plan(), None);
}

#[test]
fn a_pending_plan_survives_a_failed_payment_and_applies_on_recovery() {
    let scheduled = subscription(S::Active, false)
        .change_plan_at_period_end(plan("pro"), "")
        .unwrap();
    let failed = scheduled.subscription.payment_failed(at(200), "").unwrap();
    assert_eq!(failed.subscription.pending_plan(), Some(&plan("pro")));
    let recovered = failed
        .subscription
        .payment_recovered(period(200, 300), "")
        .unwrap();
    assert_eq!(recovered.subscription.plan(), &plan("pro"));
}

#[test]
fn scheduling_a_cancellation_drops_a_pending_plan_change() {
    let scheduled = subscription(S::Active, false)
        .change_plan_at_period_end(plan("pro"), "")
        .unwrap();
    let flagged = scheduled.subscription.cancel_at_period_end("").unwrap();
    assert_eq!(flagged.subscription.pending_plan(), None);
}

#[test]
fn changing_to_the_current_plan_is_an_invalid_request() {
    let active = subscription(S::Active, false);
    assert_eq!(
        active
            .change_plan_now(plan("basic"), "")
            .unwrap_err()
            .code(),
        "REQ_001"
    );
    assert_eq!(
        active
            .change_plan_at_period_end(plan("basic"), "")
            .unwrap_err()
            .code(),
        "REQ_001"
    );
}

#[test]
fn stored_state_no_event_sequence_can_produce_is_refused() {
    let base = subscription(S::Active, false).to_parts();
    let cases = [
        SubscriptionParts {
            pending_plan: Some(plan("basic")),
            ..base.clone()
        },
        SubscriptionParts {
            status: S::Cancelled,
            cancel_at_period_end: true,
            ..base.clone()
        },
        SubscriptionParts {
            status: S::Expired,
            pending_plan: Some(plan("pro")),
            ..base.clone()
        },
        SubscriptionParts {
            status: S::PastDue,
            cancel_at_period_end: true,
            ..base.clone()
        },
        SubscriptionParts {
            status: S::Trialing,
            anchor: Some(at(0)),
            ..base.clone()
        },
        SubscriptionParts {
            status: S::Active,
            anchor: None,
            ..base.clone()
        },
    ];
    for parts in cases {
        let error = Subscription::restore(parts.clone()).unwrap_err();
        assert_eq!(error.code(), "SYS_001", "{parts:?}");
    }
}

#[test]
fn statuses_round_trip_through_their_stored_form() {
    for status in S::ALL {
        assert_eq!(status.as_str().parse::<S>().unwrap(), status);
    }
    assert!("PAUSED".parse::<S>().is_err());
}

#[test]
fn a_plan_change_during_a_trial_can_shorten_the_trial_but_keeps_its_start() {
    let sub = subscription(S::Trialing, false);
    let trial = sub.period();
    let shorter = at(trial.end().unix_millis() - 50);
    let changed = sub
        .change_plan_in_trial(plan("pro"), shorter, trial.start(), "upgrade")
        .unwrap();
    assert_eq!(changed.subscription.status(), S::Trialing);
    assert_eq!(changed.subscription.plan(), &plan("pro"));
    assert_eq!(changed.subscription.period().start(), trial.start());
    assert_eq!(changed.subscription.period().end(), shorter);
    assert_eq!(changed.transition.event, "change_plan");

    let longer = at(trial.end().unix_millis() + 1);
    assert!(
        sub.change_plan_in_trial(plan("pro"), longer, trial.start(), "x")
            .is_err()
    );
    let active = subscription(S::Active, false);
    assert!(
        active
            .change_plan_in_trial(plan("pro"), shorter, trial.start(), "x")
            .is_err()
    );
}

#[test]
fn a_plan_change_can_end_a_trial_early_into_a_first_paid_period() {
    let sub = subscription(S::Trialing, false);
    let trial = sub.period();
    let change_at = trial.start().unix_millis() + 10;
    let next = period(change_at, change_at + 30_000);
    let ended = sub.end_trial_early(next, "paid plan").unwrap();
    assert_eq!(ended.subscription.status(), S::Active);
    assert_eq!(ended.subscription.period(), next);
    assert_eq!(ended.subscription.anchor(), Some(next.start()));
    assert_eq!(ended.transition.from, Some("TRIALING"));
    assert_eq!(ended.transition.event, "end_trial");

    let outside = period(trial.end().unix_millis() + 1, trial.end().unix_millis() + 9);
    assert!(sub.end_trial_early(outside, "x").is_err());
    assert!(
        subscription(S::Trialing, true)
            .end_trial_early(next, "x")
            .is_err()
    );
    assert!(
        subscription(S::Active, false)
            .end_trial_early(next, "x")
            .is_err()
    );
}

use super::*;
use crate::domain::DomainError;

const NOW: i64 = 1_700_000_000_000;

fn now() -> Timestamp {
    Timestamp::from_unix_millis(NOW)
}

fn raw(event_id: &str) -> RawUsageEvent {
    RawUsageEvent {
        event_id: event_id.to_string(),
        customer_id: "c_1".into(),
        metric: "api-calls".into(),
        quantity: 1,
        timestamp: now(),
    }
}

fn validate(raw: RawUsageEvent) -> Result<UsageEvent, UsageError> {
    UsageRules::default().validate(raw, now())
}

#[test]
fn a_well_formed_event_is_accepted() {
    let event = validate(raw("evt_1")).unwrap();
    assert_eq!(event.event_id(), "evt_1");
    assert_eq!(event.customer().as_str(), "c_1");
    assert_eq!(event.metric(), "api-calls");
    assert_eq!(event.quantity(), 1);
    assert_eq!(event.timestamp(), now());
}

#[test]
fn event_ids_must_be_non_empty_bounded_visible_ascii() {
    assert!(validate(raw(&"e".repeat(MAX_EVENT_ID_LEN))).is_ok());
    for bad in [
        String::new(),
        "e".repeat(MAX_EVENT_ID_LEN + 1),
        "a b".into(),
        "é".into(),
    ] {
        assert!(
            matches!(validate(raw(&bad)), Err(UsageError::EventId { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn the_customer_id_must_be_valid() {
    let event = RawUsageEvent {
        customer_id: String::new(),
        ..raw("e")
    };
    assert_eq!(
        validate(event),
        Err(UsageError::CustomerId {
            reason: "must not be empty"
        })
    );
}

#[test]
fn metric_names_follow_the_naming_rule() {
    let with = |metric: &str| {
        validate(RawUsageEvent {
            metric: metric.into(),
            ..raw("e")
        })
    };
    for ok in [
        "a",
        "api-calls",
        "gpu_seconds.v2",
        "m1",
        &format!("a{}", "b".repeat(MAX_METRIC_LEN - 1)),
    ] {
        assert!(with(ok).is_ok(), "{ok:?}");
    }
    for bad in [
        "",
        "API-Calls",
        "1calls",
        "-calls",
        "api calls",
        "api:calls",
        "api/calls",
        "café",
        &"a".repeat(MAX_METRIC_LEN + 1),
    ] {
        assert!(
            matches!(with(bad), Err(UsageError::Metric { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn quantity_may_be_zero_but_not_negative() {
    let with = |quantity| {
        validate(RawUsageEvent {
            quantity,
            ..raw("e")
        })
    };
    assert!(with(0).is_ok());
    assert!(with(i64::MAX).is_ok());
    assert_eq!(with(-1), Err(UsageError::NegativeQuantity { quantity: -1 }));
    assert_eq!(
        with(i64::MIN),
        Err(UsageError::NegativeQuantity { quantity: i64::MIN })
    );
}

#[test]
fn timestamps_are_accepted_exactly_up_to_both_bounds() {
    let rules = UsageRules::default();
    let with = |ms: i64| {
        validate(RawUsageEvent {
            timestamp: Timestamp::from_unix_millis(ms),
            ..raw("e")
        })
    };
    assert!(with(NOW + rules.max_future_ms).is_ok());
    assert!(with(NOW - rules.max_age_ms).is_ok());
    assert_eq!(
        with(NOW + rules.max_future_ms + 1),
        Err(UsageError::InFuture {
            timestamp: Timestamp::from_unix_millis(NOW + rules.max_future_ms + 1),
            latest: Timestamp::from_unix_millis(NOW + rules.max_future_ms),
        })
    );
    assert!(matches!(
        with(NOW - rules.max_age_ms - 1),
        Err(UsageError::TooOld { .. })
    ));
    assert!(matches!(with(i64::MAX), Err(UsageError::InFuture { .. })));
    assert!(matches!(with(i64::MIN), Err(UsageError::TooOld { .. })));
}

#[test]
fn timestamp_bounds_do_not_overflow_near_the_ends_of_time() {
    let rules = UsageRules::default();
    let end_of_time = Timestamp::from_unix_millis(i64::MAX);
    let event = RawUsageEvent {
        timestamp: end_of_time,
        ..raw("e")
    };
    assert!(rules.validate(event, end_of_time).is_ok());
    let start_of_time = Timestamp::from_unix_millis(i64::MIN);
    let event = RawUsageEvent {
        timestamp: start_of_time,
        ..raw("e")
    };
    assert!(rules.validate(event, start_of_time).is_ok());
}

#[test]
fn a_batch_of_up_to_1000_events_is_accepted() {
    let batch: Vec<_> = (0..MAX_BATCH_SIZE).map(|i| raw(&format!("e{i}"))).collect();
    let events = UsageRules::default().validate_batch(batch, now()).unwrap();
    assert_eq!(events.len(), MAX_BATCH_SIZE);
    assert_eq!(events[999].event_id(), "e999");
}

#[test]
fn an_empty_or_oversized_batch_is_rejected() {
    let rules = UsageRules::default();
    assert_eq!(
        rules.validate_batch(vec![], now()),
        Err(UsageError::EmptyBatch)
    );
    let batch: Vec<_> = (0..=MAX_BATCH_SIZE)
        .map(|i| raw(&format!("e{i}")))
        .collect();
    assert_eq!(
        rules.validate_batch(batch, now()),
        Err(UsageError::BatchTooLarge {
            len: 1_001,
            max: 1_000
        })
    );
}

#[test]
fn a_duplicate_event_id_within_a_batch_is_reported_with_both_positions() {
    let batch = vec![raw("a"), raw("b"), raw("a"), raw("a")];
    let error = UsageRules::default()
        .validate_batch(batch, now())
        .unwrap_err();
    let dup = |index| EventProblem {
        index,
        error: UsageError::DuplicateEventId {
            event_id: "a".into(),
            first: 0,
        },
    };
    assert_eq!(
        error,
        UsageError::InvalidEvents {
            problems: vec![dup(2), dup(3)]
        }
    );
}

#[test]
fn every_bad_event_of_a_batch_is_reported_at_once() {
    let batch = vec![
        raw("ok"),
        RawUsageEvent {
            quantity: -5,
            ..raw("neg")
        },
        RawUsageEvent {
            metric: "Bad".into(),
            ..raw("metric")
        },
    ];
    let error = UsageRules::default()
        .validate_batch(batch, now())
        .unwrap_err();
    let UsageError::InvalidEvents { problems } = &error else {
        panic!("{error:?}");
    };
    let indexes: Vec<usize> = problems.iter().map(|p| p.index).collect();
    assert_eq!(indexes, [1, 2]);
    assert_eq!(
        error.to_string(),
        "2 event(s) in the batch are invalid; the first: event at position 1: quantity must not be negative, got -5"
    );
    assert_eq!(DomainError::from(error).code(), "REQ_001");
}

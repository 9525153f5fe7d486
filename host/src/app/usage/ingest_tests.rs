use super::*;

const NOW: i64 = 1_763_700_000_000;

fn event(id: &str, quantity: i64) -> EventInput {
    EventInput {
        event_id: id.to_owned(),
        customer_id: "c1".to_owned(),
        metric: "api-calls".to_owned(),
        quantity,
        timestamp: NOW - 1_000,
        properties: BTreeMap::new(),
    }
}

fn check(events: &[EventInput]) -> Result<Checked> {
    check_batch(events, Timestamp::from_unix_millis(NOW))
}

#[test]
fn repeated_ids_are_split_into_identical_and_conflicting_repeats() {
    let events = [event("a", 1), event("b", 2), event("a", 1), event("b", 3)];
    let checked = check(&events).unwrap();
    assert_eq!(checked.firsts, [0, 1]);
    assert_eq!(checked.repeats, [(2, 0, true), (3, 1, false)]);
}

#[test]
fn every_invalid_event_is_named_by_position_and_id() {
    let mut future = event("f", 1);
    future.timestamp = NOW + 3_600_000;
    let events = [event("n", -1), event("ok", 1), future, event("n", -5)];
    let AppError::Invalid(message) = check(&events).err().unwrap() else {
        panic!("expected REQ_001");
    };
    assert!(message.starts_with("3 problem(s)"), "{message}");
    for named in ["event 0 (eventId `n`)", "event 2 (eventId `f`)", "event 3"] {
        assert!(message.contains(named), "{named}: {message}");
    }
}

#[test]
fn batch_size_and_properties_are_bounded() {
    assert!(check(&[]).is_err());
    let many: Vec<EventInput> = (0..=MAX_BATCH_SIZE)
        .map(|i| event(&format!("e{i}"), 1))
        .collect();
    assert!(check(&many).is_err());
    assert!(check(&many[..MAX_BATCH_SIZE]).is_ok());
    let mut props = event("p", 1);
    props.properties = (0..=super::super::MAX_PROPERTIES)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    assert!(check(&[props]).is_err());
    let mut blank = event("b", 1);
    blank.properties.insert(" ".to_owned(), "v".to_owned());
    assert!(check(&[blank]).is_err());
}

#[test]
fn stored_content_is_canonical_so_equal_events_compare_equal() {
    let mut a = event("a", 1);
    a.properties.insert("z".into(), "1".into());
    a.properties.insert("a".into(), "2".into());
    let record = record(&a).unwrap();
    assert_eq!(record.properties, r#"{"a":"2","z":"1"}"#);
    assert_eq!(record, super::record(&a.clone()).unwrap());
}

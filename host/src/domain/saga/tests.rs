use super::*;

/// The whole table (module docs): `Some(to)` where legal, `None` where not.
fn expected(from: SagaState, event: SagaEvent) -> Option<SagaState> {
    use SagaEvent as E;
    use SagaState as S;
    match (from, event) {
        (S::Compensated, E::Started) => Some(S::Running),
        (S::Running, E::Approved) => Some(S::WaitingForService),
        (S::Running, E::Declined) => Some(S::Compensating),
        (S::WaitingForService, E::ServiceCompleted) => Some(S::Completing),
        (S::WaitingForService, E::ServiceFailed) => Some(S::Compensating),
        (S::Completing, E::Captured) => Some(S::Completed),
        (S::Completing, E::CaptureRefused) => Some(S::Compensating),
        (S::Compensating, E::Compensated) => Some(S::Compensated),
        (S::Compensating, E::Parked) => Some(S::CompensationFailed),
        (S::CompensationFailed, E::Retry) => Some(S::Compensating),
        (S::CompensationFailed, E::Resolve) => Some(S::Compensated),
        _ => None,
    }
}

#[test]
fn every_state_and_event_follows_the_table() {
    for from in SagaState::ALL {
        for event in SagaEvent::ALL {
            match (from.on(event), expected(from, event)) {
                (Ok(to), Some(want)) => {
                    assert_eq!(to, want, "{from} --{}-->", event.as_str());
                    assert_eq!(to, event.target());
                    let row = from.transition("ord_1", event, "test").unwrap();
                    assert_eq!(
                        (row.from, row.to, row.event),
                        (Some(from.as_str()), to.as_str(), event.as_str())
                    );
                    assert_eq!(row.entity, EntityKind::Saga);
                }
                (Err(err), None) => {
                    assert_eq!(
                        err.code(),
                        "PAY_004",
                        "{from} --{}--> {err}",
                        event.as_str()
                    );
                    assert!(from.transition("ord_1", event, "test").is_err());
                }
                (got, want) => panic!("{from} --{}-->: got {got:?}, want {want:?}", event.as_str()),
            }
        }
    }
}

#[test]
fn terminal_states_take_nothing_but_a_restart_of_an_open_order() {
    for event in SagaEvent::ALL {
        assert!(
            SagaState::Completed.on(event).is_err(),
            "{}",
            event.as_str()
        );
        let restart = SagaState::Compensated.on(event);
        assert_eq!(restart.is_ok(), event == SagaEvent::Started);
    }
    for state in SagaState::ALL {
        assert!(
            !(state.is_terminal() && state.is_resumable()),
            "{state} is both"
        );
    }
    // Parked sagas wait for an operator, not the orchestrator.
    assert!(!SagaState::CompensationFailed.is_resumable());
    assert!(!SagaState::CompensationFailed.is_terminal());
}

#[test]
fn callbacks_after_compensation_began_or_twice_find_no_transition() {
    for from in [
        SagaState::Compensating,
        SagaState::Compensated,
        SagaState::CompensationFailed,
        SagaState::Completing,
        SagaState::Completed,
    ] {
        for event in [SagaEvent::ServiceCompleted, SagaEvent::ServiceFailed] {
            assert!(from.on(event).is_err(), "{from} {}", event.as_str());
        }
    }
}

#[test]
fn compensations_run_in_reverse_of_what_was_done() {
    use SagaStep as S;
    assert_eq!(
        S::compensations(&[S::PayOrder, S::ReserveCredits, S::ApprovePayment]),
        [S::PayOrder, S::ApprovePayment, S::ReserveCredits]
    );
    assert_eq!(S::compensations(&[S::ReserveCredits]), [S::ReserveCredits]);
    assert_eq!(
        S::compensations(&[S::ApprovePayment, S::PayOrder]),
        [S::PayOrder, S::ApprovePayment]
    );
    assert!(S::compensations(&[]).is_empty());
}

#[test]
fn states_round_trip_through_their_names() {
    for state in SagaState::ALL {
        assert_eq!(state.as_str().parse::<SagaState>().unwrap(), state);
    }
    assert!("DONE".parse::<SagaState>().is_err());
}

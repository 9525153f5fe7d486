use super::*;
use crate::domain::ledger::TransactionKind;
use crate::domain::money::Currency;

fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::USD)
}

fn positive(minor: i64) -> PositiveMoney {
    PositiveMoney::new(usd(minor), "amount").unwrap()
}

/// A payment of 1,000 USD minor units in `status`, 300 refunded when the
/// status says some were.
fn payment_in(status: PaymentStatus) -> Payment {
    let refunded = match status {
        PaymentStatus::PartiallyRefunded => 300,
        PaymentStatus::Refunded => 1_000,
        _ => 0,
    };
    let has_key = !matches!(status, PaymentStatus::Ready | PaymentStatus::Unknown);
    Payment::restore(StoredPayment {
        id: PaymentId::new("pay_1").unwrap(),
        order: OrderId::new("o_1").unwrap(),
        customer: CustomerId::new("c_1").unwrap(),
        amount: positive(1_000),
        approval_key: "pay_1-approve".into(),
        pg_payment_key: has_key.then(|| "pg_key_1".into()),
        refunded: usd(refunded),
        status,
    })
    .unwrap()
}

/// Each event as the aggregate's own command.
fn apply(payment: &Payment, event: PaymentEvent) -> Result<PaymentChange> {
    match event {
        PaymentEvent::Approve => payment.approve("pg_key_1", "test"),
        PaymentEvent::Decline => payment.decline("test"),
        PaymentEvent::Lose => payment.lose("test"),
        PaymentEvent::Confirm => payment.confirm("test"),
        PaymentEvent::Void => payment.void("test"),
        // 100 always leaves some of what is refundable in these tests.
        PaymentEvent::RefundPart => payment.refund(positive(100), "test"),
        PaymentEvent::RefundRest => {
            let rest = payment.refundable().minor.max(1);
            payment.refund(positive(rest), "test")
        }
    }
}

/// The whole table (module docs): `Some(to)` where legal, `None` where not.
fn expected(from: PaymentStatus, event: PaymentEvent) -> Option<PaymentStatus> {
    use PaymentEvent as E;
    use PaymentStatus as S;
    match (from, event) {
        (S::Ready, E::Approve) | (S::Unknown, E::Approve) => Some(S::Approved),
        (S::Ready, E::Decline) | (S::Unknown, E::Decline) => Some(S::Failed),
        (S::Ready, E::Lose) => Some(S::Unknown),
        (S::Approved, E::Confirm) => Some(S::Confirmed),
        (S::Approved, E::Void) => Some(S::Cancelled),
        (S::Confirmed, E::RefundPart) | (S::PartiallyRefunded, E::RefundPart) => {
            Some(S::PartiallyRefunded)
        }
        (S::Confirmed, E::RefundRest) | (S::PartiallyRefunded, E::RefundRest) => Some(S::Refunded),
        _ => None,
    }
}

#[test]
fn every_status_and_event_follows_the_table() {
    for from in PaymentStatus::ALL {
        for event in PaymentEvent::ALL {
            let result = apply(&payment_in(from), event);
            match expected(from, event) {
                Some(to) => {
                    let change = result.unwrap_or_else(|e| panic!("{from} + {event:?}: {e}"));
                    assert_eq!(change.payment.status(), to, "{from} + {event:?}");
                    assert_eq!(change.transition.from, Some(from.as_str()));
                    assert_eq!(change.transition.to, to.as_str());
                    assert_eq!(change.transition.event, event.as_str());
                    assert_eq!(change.transition.entity, EntityKind::Payment);
                    // The status table and the aggregate agree.
                    assert_eq!(from.on(event).unwrap(), to);
                }
                None => {
                    let err = result.expect_err(&format!("{from} + {event:?} must be refused"));
                    assert!(
                        matches!(err, DomainError::IllegalTransition { .. }),
                        "{from} + {event:?}: {err}"
                    );
                    assert_eq!(err.code(), crate::domain::error::codes::STATE_CONFLICT);
                    assert!(from.on(event).is_err());
                }
            }
        }
    }
}

#[test]
fn terminal_statuses_take_no_event_and_in_flight_ones_are_ready_and_unknown() {
    for status in PaymentStatus::ALL {
        let takes_some = PaymentEvent::ALL.iter().any(|&e| status.on(e).is_ok());
        assert_eq!(status.is_terminal(), !takes_some, "{status}");
    }
    let in_flight: Vec<_> = PaymentStatus::ALL
        .into_iter()
        .filter(|s| s.is_in_flight())
        .collect();
    assert_eq!(in_flight, [PaymentStatus::Ready, PaymentStatus::Unknown]);
}

#[test]
fn statuses_read_back_from_their_stable_names() {
    for status in PaymentStatus::ALL {
        assert_eq!(status.as_str().parse::<PaymentStatus>().unwrap(), status);
        assert_eq!(
            serde_json::to_value(status).unwrap(),
            serde_json::json!(status.as_str())
        );
    }
    assert!("DONE".parse::<PaymentStatus>().is_err());
}

#[test]
fn a_new_payment_is_ready_with_its_approval_key_and_moves_no_money() {
    let change = Payment::create(
        PaymentId::new("pay_1").unwrap(),
        OrderId::new("o_1").unwrap(),
        CustomerId::new("c_1").unwrap(),
        positive(1_000),
        "pay_1-approve",
        "api",
    )
    .unwrap();
    assert_eq!(change.payment.status(), PaymentStatus::Ready);
    assert_eq!(change.payment.approval_key(), "pay_1-approve");
    assert_eq!(change.payment.pg_payment_key(), None);
    assert_eq!(change.transition.from, None);
    assert_eq!(change.transition.to, "READY");
    assert_eq!(change.ledger, None);
}

#[test]
fn keys_for_the_pg_are_checked() {
    let make = |key: &str| {
        Payment::create(
            PaymentId::new("pay_1").unwrap(),
            OrderId::new("o_1").unwrap(),
            CustomerId::new("c_1").unwrap(),
            positive(1_000),
            key,
            "api",
        )
    };
    assert!(make("").is_err());
    assert!(make("has space").is_err());
    assert!(make(&"k".repeat(MAX_PG_IDEMPOTENCY_KEY_LEN)).is_ok());
    assert!(make(&"k".repeat(MAX_PG_IDEMPOTENCY_KEY_LEN + 1)).is_err());
    let ready = payment_in(PaymentStatus::Ready);
    assert!(ready.approve("", "pg").is_err());
    assert!(
        ready
            .approve("k".repeat(MAX_PG_PAYMENT_KEY_LEN + 1), "pg")
            .is_err()
    );
}

#[test]
fn an_approval_records_the_pg_key_and_settles_the_bill() {
    for from in [PaymentStatus::Ready, PaymentStatus::Unknown] {
        let change = payment_in(from).approve("tgen_20261206_x", "pg").unwrap();
        assert_eq!(change.payment.pg_payment_key(), Some("tgen_20261206_x"));
        let ledger = change.ledger.unwrap();
        assert_eq!(ledger.kind(), TransactionKind::PaymentApproved);
        let keys: Vec<_> = ledger
            .postings()
            .iter()
            .map(|p| (p.account.key(), p.amount))
            .collect();
        assert_eq!(
            keys,
            [
                ("tenant:payments_clearing".to_string(), 1_000),
                ("customer:c_1:receivable".to_string(), -1_000),
            ]
        );
    }
}

#[test]
fn only_the_approval_void_and_refunds_move_money() {
    for from in PaymentStatus::ALL {
        for event in PaymentEvent::ALL {
            let Ok(change) = apply(&payment_in(from), event) else {
                continue;
            };
            let kind = change.ledger.as_ref().map(LedgerTransaction::kind);
            let expected = match (from, event) {
                (_, PaymentEvent::Approve) => Some(TransactionKind::PaymentApproved),
                (_, PaymentEvent::Void) => Some(TransactionKind::PaymentVoided),
                (_, PaymentEvent::RefundPart | PaymentEvent::RefundRest) => {
                    Some(TransactionKind::PaymentRefunded)
                }
                _ => None,
            };
            assert_eq!(kind, expected, "{from} + {event:?}");
        }
    }
}

#[test]
fn refunds_add_up_and_never_pass_the_confirmed_amount() {
    let confirmed = payment_in(PaymentStatus::Confirmed);
    assert_eq!(confirmed.refundable(), usd(1_000));
    let first = confirmed.refund(positive(400), "customer").unwrap().payment;
    assert_eq!(first.status(), PaymentStatus::PartiallyRefunded);
    assert_eq!(first.refunded(), usd(400));
    assert_eq!(first.refundable(), usd(600));

    // One minor unit too many is refused, and nothing changes.
    let err = first.refund(positive(601), "customer").unwrap_err();
    assert!(matches!(err, DomainError::ActionNotAllowed { .. }), "{err}");
    assert_eq!(err.code(), crate::domain::error::codes::STATE_CONFLICT);
    assert!(
        err.to_string().contains("600 USD still refundable"),
        "{err}"
    );

    let rest = first.refund(positive(600), "customer").unwrap();
    assert_eq!(rest.payment.status(), PaymentStatus::Refunded);
    assert_eq!(rest.payment.refunded(), usd(1_000));
    assert_eq!(rest.payment.refundable(), usd(0));
    assert_eq!(
        rest.ledger.unwrap().postings()[0].amount,
        600,
        "the refund posts what it gave back"
    );
    // Nothing is left to give back.
    assert!(rest.payment.refund(positive(1), "customer").is_err());
}

#[test]
fn a_refund_in_another_currency_is_an_invalid_request() {
    let eur = PositiveMoney::new(Money::new(100, Currency::EUR), "amount").unwrap();
    let err = payment_in(PaymentStatus::Confirmed)
        .refund(eur, "customer")
        .unwrap_err();
    assert_eq!(
        err.code(),
        crate::domain::error::codes::INVALID_REQUEST,
        "{err}"
    );
}

#[test]
fn nothing_is_refundable_before_confirmation() {
    for status in [
        PaymentStatus::Ready,
        PaymentStatus::Unknown,
        PaymentStatus::Approved,
        PaymentStatus::Failed,
        PaymentStatus::Cancelled,
        PaymentStatus::Refunded,
    ] {
        assert_eq!(payment_in(status).refundable(), usd(0), "{status}");
    }
}

#[test]
fn a_late_or_contradictory_pg_answer_never_moves_a_settled_payment_back() {
    // A `DONE` after an `ABORTED`, an `ABORTED` after a `DONE`, a repeated
    // notification: each finds no transition.
    let failed = payment_in(PaymentStatus::Failed);
    assert!(failed.approve("pg_key_1", "late DONE").is_err());
    let approved = payment_in(PaymentStatus::Approved);
    assert!(approved.decline("late ABORTED").is_err());
    assert!(approved.approve("pg_key_1", "repeat").is_err());
    assert!(approved.lose("timeout after success").is_err());
    // An unknown outcome is never approved anew: only resolved; nor is a
    // payment whose approval may be in flight voided.
    assert!(payment_in(PaymentStatus::Unknown).lose("again").is_err());
    assert!(payment_in(PaymentStatus::Unknown).void("x").is_err());
    assert!(payment_in(PaymentStatus::Ready).void("x").is_err());
}

#[test]
fn stored_payments_that_break_the_rules_are_refused() {
    let stored = |status, refunded: i64, key: Option<&str>| StoredPayment {
        id: PaymentId::new("pay_1").unwrap(),
        order: OrderId::new("o_1").unwrap(),
        customer: CustomerId::new("c_1").unwrap(),
        amount: positive(1_000),
        approval_key: "k".into(),
        pg_payment_key: key.map(str::to_owned),
        refunded: usd(refunded),
        status,
    };
    use PaymentStatus as S;
    for (status, refunded, key) in [
        (S::Confirmed, 10, Some("pg")),
        (S::PartiallyRefunded, 0, Some("pg")),
        (S::PartiallyRefunded, 1_000, Some("pg")),
        (S::Refunded, 999, Some("pg")),
        (S::Approved, 0, None),
        (S::Ready, 5, None),
    ] {
        let err = Payment::restore(stored(status, refunded, key)).unwrap_err();
        assert!(matches!(err, DomainError::Invariant(_)), "{status}: {err}");
    }
    let mut eur_refunds = stored(S::Confirmed, 0, Some("pg"));
    eur_refunds.refunded = Money::zero(Currency::EUR);
    assert!(Payment::restore(eur_refunds).is_err());
    assert!(Payment::restore(stored(S::Cancelled, 0, Some("pg"))).is_ok());
}

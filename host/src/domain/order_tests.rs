use super::*;
use crate::domain::ledger::TransactionKind;

fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::USD)
}

fn line(code: &str, amount: Money) -> OrderLine {
    OrderLine::new(code, "", 1, amount).unwrap()
}

fn order_in(status: OrderStatus) -> Order {
    Order::restore(
        OrderId::new("o_1").unwrap(),
        CustomerId::new("c_1").unwrap(),
        Currency::USD,
        vec![OrderItem::new("pro-seat", 2).unwrap()],
        vec![
            line("sku:pro-seat", usd(2_000)),
            line("discount", usd(-500)),
        ],
        status,
    )
    .unwrap()
}

fn apply(order: &Order, event: OrderEvent) -> Result<OrderChange> {
    match event {
        OrderEvent::Pay => order.pay("test"),
        OrderEvent::Complete => order.complete("test"),
        OrderEvent::Cancel => order.cancel("test"),
    }
}

/// The whole table: `Some(to)` where legal, `None` where not.
fn expected(from: OrderStatus, event: OrderEvent) -> Option<OrderStatus> {
    use OrderEvent as E;
    use OrderStatus as S;
    match (from, event) {
        (S::Pending, E::Pay) => Some(S::Paid),
        (S::Pending, E::Cancel) => Some(S::Cancelled),
        (S::Paid, E::Complete) => Some(S::Completed),
        (S::Paid, E::Cancel) => Some(S::Cancelled),
        _ => None,
    }
}

#[test]
fn every_status_and_event_pair_follows_the_table() {
    let mut legal = 0;
    for from in OrderStatus::ALL {
        for event in OrderEvent::ALL {
            let result = apply(&order_in(from), event);
            match expected(from, event) {
                Some(to) => {
                    legal += 1;
                    let change = result.unwrap();
                    assert_eq!(change.order.status(), to);
                    assert_eq!(change.transition.from, Some(from.as_str()));
                    assert_eq!(change.transition.to, to.as_str());
                    assert_eq!(change.transition.event, event.as_str());
                    assert_eq!(change.transition.entity, EntityKind::Order);
                    assert_eq!(change.transition.entity_id, "o_1");
                    assert_eq!(change.transition.reason, "test");
                }
                None => {
                    let error = result.unwrap_err();
                    assert_eq!(
                        error,
                        DomainError::IllegalTransition {
                            entity: EntityKind::Order,
                            action: event.as_str(),
                            from: from.as_str(),
                            to: Some(event.target().as_str()),
                        },
                        "{from} {event:?}"
                    );
                    assert_eq!(error.code(), "PAY_004");
                }
            }
        }
    }
    assert_eq!(legal, 4);
}

#[test]
fn terminal_statuses_accept_no_event() {
    for status in OrderStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
        for event in OrderEvent::ALL {
            assert!(status.on(event).is_err());
        }
    }
}

#[test]
fn cancelling_a_completed_order_names_both_statuses() {
    let error = order_in(OrderStatus::Completed).cancel("x").unwrap_err();
    assert_eq!(
        error.to_string(),
        "cannot cancel order in status COMPLETED: COMPLETED → CANCELLED is not a legal transition"
    );
}

#[test]
fn each_step_posts_its_own_ledger_movement_and_paying_posts_none() {
    // Paying moves no money of its own: the payment's approval does.
    assert_eq!(
        order_in(OrderStatus::Pending).pay("x").unwrap().ledger,
        None
    );
    let cases = [
        (
            OrderStatus::Paid,
            OrderEvent::Complete,
            TransactionKind::OrderCompleted,
            ("tenant:deferred_revenue", "tenant:revenue"),
        ),
        // Cancelling withdraws the bill from either status: a paid order's
        // payment is voided first, which opens the bill again.
        (
            OrderStatus::Pending,
            OrderEvent::Cancel,
            TransactionKind::OrderCancelled,
            ("tenant:deferred_revenue", "customer:c_1:receivable"),
        ),
        (
            OrderStatus::Paid,
            OrderEvent::Cancel,
            TransactionKind::OrderCancelled,
            ("tenant:deferred_revenue", "customer:c_1:receivable"),
        ),
    ];
    for (from, event, kind, (debited, credited)) in cases {
        let ledger = apply(&order_in(from), event).unwrap().ledger.unwrap();
        assert_eq!(ledger.kind(), kind);
        let postings = ledger.postings();
        assert_eq!(
            (
                postings[0].account.key().as_str(),
                postings[0].amount,
                postings[1].account.key().as_str(),
                postings[1].amount
            ),
            (debited, 1_500, credited, -1_500),
            "{from:?} {event:?}"
        );
    }
}

#[test]
fn creating_an_order_totals_its_lines_and_bills_the_customer() {
    let change = Order::create(
        OrderId::new("o_1").unwrap(),
        CustomerId::new("c_1").unwrap(),
        Currency::USD,
        vec![OrderItem::new("pro-seat", 2).unwrap()],
        vec![
            line("sku:pro-seat", usd(2_000)),
            line("discount", usd(-500)),
        ],
        "api",
    )
    .unwrap();
    assert_eq!(change.order.status(), OrderStatus::Pending);
    assert_eq!(change.order.total().get(), usd(1_500));
    assert_eq!(change.transition.from, None);
    assert_eq!(change.transition.to, "PENDING");
    assert_eq!(change.transition.event, "create");
    assert_eq!(
        change.ledger.map(|l| l.kind()),
        Some(TransactionKind::OrderCreated)
    );
}

fn create(items: Vec<OrderItem>, lines: Vec<OrderLine>) -> Result<OrderChange> {
    Order::create(
        OrderId::new("o").unwrap(),
        CustomerId::new("c").unwrap(),
        Currency::USD,
        items,
        lines,
        "",
    )
}

fn one_item() -> Vec<OrderItem> {
    vec![OrderItem::new("a", 1).unwrap()]
}

#[test]
fn an_order_without_items_or_lines_is_rejected() {
    assert_eq!(
        create(vec![], vec![line("a", usd(1))]).unwrap_err().code(),
        "REQ_001"
    );
    assert_eq!(create(one_item(), vec![]).unwrap_err().code(), "REQ_001");
}

#[test]
fn an_order_with_too_many_items_or_lines_is_rejected() {
    let items = vec![OrderItem::new("a", 1).unwrap(); MAX_ORDER_ITEMS + 1];
    assert!(create(items, vec![line("a", usd(1))]).is_err());
    let items = vec![OrderItem::new("a", 1).unwrap(); MAX_ORDER_ITEMS];
    assert!(create(items, vec![line("a", usd(1))]).is_ok());
    let lines = vec![line("a", usd(1)); MAX_ORDER_LINES + 1];
    assert!(create(one_item(), lines).is_err());
}

#[test]
fn an_order_total_of_zero_or_less_is_rejected() {
    for lines in [
        vec![line("a", usd(0))],
        vec![line("a", usd(100)), line("d", usd(-100))],
        vec![line("a", usd(-1))],
    ] {
        let error = create(one_item(), lines).unwrap_err();
        assert!(matches!(
            error,
            DomainError::Amount(crate::domain::money::AmountError::NotPositive {
                what: "order total",
                ..
            })
        ));
        assert_eq!(error.code(), "REQ_001");
    }
}

#[test]
fn an_order_total_that_overflows_is_rejected() {
    let error = create(
        one_item(),
        vec![line("a", usd(i64::MAX)), line("b", usd(1))],
    )
    .unwrap_err();
    assert_eq!(
        error,
        DomainError::Amount(crate::domain::money::AmountError::Overflow { operation: "add" })
    );
}

#[test]
fn lines_in_another_currency_are_rejected() {
    let eur = Money::new(1, Currency::EUR);
    assert_eq!(
        create(one_item(), vec![line("a", eur)]).unwrap_err().code(),
        "REQ_001"
    );
}

#[test]
fn items_need_a_sku_and_a_positive_quantity() {
    assert!(OrderItem::new("", 1).is_err());
    assert!(OrderItem::new("has space", 1).is_err());
    assert!(OrderItem::new("a".repeat(MAX_CODE_LEN + 1), 1).is_err());
    assert!(OrderItem::new("a", 0).is_err());
    assert!(OrderItem::new("a", -1).is_err());
    assert!(OrderItem::new("a".repeat(MAX_CODE_LEN), 1).is_ok());
}

#[test]
fn lines_need_a_code_a_bounded_description_and_no_negative_quantity() {
    assert!(OrderLine::new("", "", 1, usd(1)).is_err());
    assert!(OrderLine::new("a", "d".repeat(MAX_DESCRIPTION_LEN + 1), 1, usd(1)).is_err());
    assert!(OrderLine::new("a", "", -1, usd(1)).is_err());
    assert!(OrderLine::new("a", "", 0, usd(-5)).is_ok());
}

#[test]
fn statuses_round_trip_through_their_stored_form() {
    for status in OrderStatus::ALL {
        assert_eq!(status.as_str().parse::<OrderStatus>().unwrap(), status);
    }
    assert!("SHIPPED".parse::<OrderStatus>().is_err());
}

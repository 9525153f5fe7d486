use super::*;
use crate::domain::money::{Currency, Money};

fn customer() -> CustomerId {
    CustomerId::new("c_1").unwrap()
}

fn wallet() -> LedgerAccount {
    LedgerAccount::CustomerCredits(customer())
}

fn credits(n: i64) -> PositiveCredits {
    PositiveCredits::new(n).unwrap()
}

fn usd(minor: i64) -> PositiveMoney {
    PositiveMoney::new(Money::new(minor, Currency::USD), "total").unwrap()
}

fn posting(account: LedgerAccount, unit: Unit, amount: i64) -> Posting {
    Posting {
        account,
        unit,
        amount,
    }
}

/// Re-validates a constructed transaction from scratch and returns its
/// postings as (account key, unit, amount) for readable assertions.
fn checked(tx: &LedgerTransaction) -> Vec<(String, String, i64)> {
    let again = LedgerTransaction::new(tx.kind(), tx.postings().to_vec())
        .unwrap_or_else(|e| panic!("{:?} does not balance: {e}", tx.kind()));
    assert_eq!(&again, tx);
    tx.postings()
        .iter()
        .map(|p| (p.account.key(), p.unit.to_string(), p.amount))
        .collect()
}

fn rows(rows: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    rows.iter()
        .map(|(a, u, n)| (a.to_string(), u.to_string(), *n))
        .collect()
}

#[test]
fn credit_grant_balances_issued_against_the_customer_wallet() {
    let tx = LedgerTransaction::credit_grant(&customer(), credits(100));
    assert_eq!(tx.kind(), TransactionKind::CreditGrant);
    assert_eq!(
        checked(&tx),
        rows(&[
            ("tenant:credits_issued", "CREDITS", 100),
            ("customer:c_1:credits", "CREDITS", -100),
        ])
    );
}

#[test]
fn credit_use_balances_the_wallet_against_consumed() {
    let tx = LedgerTransaction::credit_use(&customer(), credits(30));
    assert_eq!(
        checked(&tx),
        rows(&[
            ("customer:c_1:credits", "CREDITS", 30),
            ("tenant:credits_consumed", "CREDITS", -30),
        ])
    );
}

#[test]
fn credit_refund_balances_refunded_against_the_wallet() {
    let tx = LedgerTransaction::credit_refund(&customer(), credits(10));
    assert_eq!(
        checked(&tx),
        rows(&[
            ("tenant:credits_refunded", "CREDITS", 10),
            ("customer:c_1:credits", "CREDITS", -10),
        ])
    );
}

#[test]
fn credit_expiry_balances_the_wallet_against_expired() {
    let tx = LedgerTransaction::credit_expiry(&customer(), credits(5));
    assert_eq!(
        checked(&tx),
        rows(&[
            ("customer:c_1:credits", "CREDITS", 5),
            ("tenant:credits_expired", "CREDITS", -5),
        ])
    );
}

#[test]
fn reserve_release_and_capture_each_balance() {
    let c = customer();
    assert_eq!(
        checked(&LedgerTransaction::credit_reserve(&c, credits(7))),
        rows(&[
            ("customer:c_1:credits", "CREDITS", 7),
            ("customer:c_1:credits_reserved", "CREDITS", -7),
        ])
    );
    assert_eq!(
        checked(&LedgerTransaction::credit_release(&c, credits(7))),
        rows(&[
            ("customer:c_1:credits_reserved", "CREDITS", 7),
            ("customer:c_1:credits", "CREDITS", -7),
        ])
    );
    assert_eq!(
        checked(&LedgerTransaction::credit_capture(&c, credits(7))),
        rows(&[
            ("customer:c_1:credits_reserved", "CREDITS", 7),
            ("tenant:credits_consumed", "CREDITS", -7),
        ])
    );
}

#[test]
fn subscription_charge_balances_the_wallet_against_consumed() {
    let tx = LedgerTransaction::subscription_charge(&customer(), credits(500));
    assert_eq!(tx.kind(), TransactionKind::SubscriptionCharge);
    assert_eq!(
        checked(&tx),
        rows(&[
            ("customer:c_1:credits", "CREDITS", 500),
            ("tenant:credits_consumed", "CREDITS", -500),
        ])
    );
}

#[test]
fn order_movements_each_balance_in_the_order_currency() {
    let c = customer();
    let cases = [
        (
            LedgerTransaction::order_created(&c, usd(1999)),
            ("customer:c_1:receivable", "tenant:deferred_revenue"),
        ),
        (
            LedgerTransaction::order_completed(usd(1999)),
            ("tenant:deferred_revenue", "tenant:revenue"),
        ),
        (
            LedgerTransaction::order_cancelled(&c, usd(1999)),
            ("tenant:deferred_revenue", "customer:c_1:receivable"),
        ),
        (
            LedgerTransaction::payment_approved(&c, usd(1999)),
            ("tenant:payments_clearing", "customer:c_1:receivable"),
        ),
        (
            LedgerTransaction::payment_voided(&c, usd(1999)),
            ("customer:c_1:receivable", "tenant:payments_clearing"),
        ),
        (
            LedgerTransaction::payment_refunded(usd(1999)),
            ("tenant:refunds", "tenant:payments_clearing"),
        ),
    ];
    for (tx, (debit, credit)) in cases {
        assert_eq!(
            checked(&tx),
            rows(&[(debit, "USD", 1999), (credit, "USD", -1999)]),
            "{:?}",
            tx.kind()
        );
    }
}

#[test]
fn a_full_order_lifecycle_leaves_only_revenue_and_clearing() {
    let c = customer();
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for tx in [
        LedgerTransaction::order_created(&c, usd(500)),
        LedgerTransaction::payment_approved(&c, usd(500)),
        LedgerTransaction::order_completed(usd(500)),
    ] {
        for p in tx.postings() {
            *sums.entry(p.account.key()).or_default() += p.amount;
        }
    }
    sums.retain(|_, sum| *sum != 0);
    assert_eq!(
        sums,
        BTreeMap::from([
            ("tenant:payments_clearing".to_string(), 500),
            ("tenant:revenue".to_string(), -500),
        ])
    );
}

/// Σ postings per account over `txs`, zero balances left out.
fn net(txs: &[LedgerTransaction]) -> BTreeMap<String, i64> {
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for p in txs.iter().flat_map(|tx| tx.postings()) {
        *sums.entry(p.account.key()).or_default() += p.amount;
    }
    sums.retain(|_, v| *v != 0);
    sums
}

#[test]
fn a_voided_payment_and_a_cancelled_order_leave_nothing_behind() {
    let c = customer();
    let books = net(&[
        LedgerTransaction::order_created(&c, usd(500)),
        LedgerTransaction::payment_approved(&c, usd(500)),
        LedgerTransaction::payment_voided(&c, usd(500)),
        LedgerTransaction::order_cancelled(&c, usd(500)),
    ]);
    assert_eq!(books, BTreeMap::new());
}

#[test]
fn credits_reserved_for_an_order_settle_its_bill_in_money_and_balance_per_unit() {
    let c = customer();
    assert_eq!(
        checked(&LedgerTransaction::order_credits_reserved(
            &c,
            credits(250),
            usd(250)
        )),
        rows(&[
            ("customer:c_1:credits", "CREDITS", 250),
            ("customer:c_1:credits_reserved", "CREDITS", -250),
            ("tenant:credit_redemptions", "USD", 250),
            ("customer:c_1:receivable", "USD", -250),
        ])
    );
    let released = LedgerTransaction::order_credits_released(&c, credits(250), usd(250));
    assert_eq!(released.kind(), TransactionKind::CreditRelease);
    assert_eq!(
        checked(&released),
        rows(&[
            ("customer:c_1:credits_reserved", "CREDITS", 250),
            ("customer:c_1:credits", "CREDITS", -250),
            ("customer:c_1:receivable", "USD", 250),
            ("tenant:credit_redemptions", "USD", -250),
        ])
    );
}

#[test]
fn a_split_order_completed_leaves_revenue_against_clearing_and_redemptions() {
    let c = customer();
    let books = net(&[
        LedgerTransaction::order_created(&c, usd(500)),
        LedgerTransaction::order_credits_reserved(&c, credits(200), usd(200)),
        LedgerTransaction::payment_approved(&c, usd(300)),
        LedgerTransaction::credit_capture(&c, credits(200)),
        LedgerTransaction::order_completed(usd(500)),
    ]);
    assert_eq!(
        books,
        BTreeMap::from([
            ("customer:c_1:credits".to_string(), 200),
            ("tenant:credit_redemptions".to_string(), 200),
            ("tenant:credits_consumed".to_string(), -200),
            ("tenant:payments_clearing".to_string(), 300),
            ("tenant:revenue".to_string(), -500),
        ])
    );
}

#[test]
fn a_compensated_split_order_gives_the_credits_back_and_leaves_no_money() {
    let c = customer();
    let books = net(&[
        LedgerTransaction::order_created(&c, usd(500)),
        LedgerTransaction::order_credits_reserved(&c, credits(200), usd(200)),
        LedgerTransaction::payment_approved(&c, usd(300)),
        LedgerTransaction::payment_voided(&c, usd(300)),
        LedgerTransaction::order_credits_released(&c, credits(200), usd(200)),
        LedgerTransaction::order_cancelled(&c, usd(500)),
    ]);
    assert_eq!(books, BTreeMap::new());
}

#[test]
fn a_refund_after_completion_leaves_net_revenue_and_what_the_gateway_still_holds() {
    let c = customer();
    let books = net(&[
        LedgerTransaction::order_created(&c, usd(500)),
        LedgerTransaction::payment_approved(&c, usd(500)),
        LedgerTransaction::order_completed(usd(500)),
        LedgerTransaction::payment_refunded(usd(120)),
    ]);
    assert_eq!(
        books,
        BTreeMap::from([
            ("tenant:payments_clearing".to_string(), 380),
            ("tenant:refunds".to_string(), 120),
            ("tenant:revenue".to_string(), -500),
        ])
    );
}

#[test]
fn a_transaction_needs_at_least_two_postings() {
    assert_eq!(
        LedgerTransaction::new(TransactionKind::CreditUse, vec![]),
        Err(LedgerError::TooFewPostings { count: 0 })
    );
    assert_eq!(
        LedgerTransaction::new(
            TransactionKind::CreditUse,
            vec![posting(wallet(), Unit::Credits, 1)]
        ),
        Err(LedgerError::TooFewPostings { count: 1 })
    );
}

#[test]
fn zero_postings_are_rejected() {
    let result = LedgerTransaction::new(
        TransactionKind::CreditUse,
        vec![
            posting(wallet(), Unit::Credits, 0),
            posting(LedgerAccount::CreditsConsumed, Unit::Credits, 0),
        ],
    );
    assert_eq!(
        result,
        Err(LedgerError::ZeroAmount {
            account: "customer:c_1:credits".into()
        })
    );
}

#[test]
fn unbalanced_postings_are_rejected_with_the_offending_sum() {
    let result = LedgerTransaction::new(
        TransactionKind::CreditUse,
        vec![
            posting(wallet(), Unit::Credits, 30),
            posting(LedgerAccount::CreditsConsumed, Unit::Credits, -29),
        ],
    );
    assert_eq!(
        result,
        Err(LedgerError::Unbalanced {
            unit: Unit::Credits,
            sum: 1
        })
    );
}

#[test]
fn balance_is_checked_per_unit_not_across_units() {
    let usd = Unit::Money(Currency::USD);
    let eur = Unit::Money(Currency::EUR);
    // +10 USD and -10 EUR sum to zero as numbers but not per currency.
    let result = LedgerTransaction::new(
        TransactionKind::PaymentApproved,
        vec![
            posting(LedgerAccount::PaymentsClearing, usd, 10),
            posting(LedgerAccount::Revenue, eur, -10),
        ],
    );
    assert!(matches!(result, Err(LedgerError::Unbalanced { .. })));
    // Two units each balanced on their own is fine.
    let mixed = LedgerTransaction::new(
        TransactionKind::PaymentApproved,
        vec![
            posting(LedgerAccount::PaymentsClearing, usd, 10),
            posting(LedgerAccount::Revenue, usd, -10),
            posting(LedgerAccount::PaymentsClearing, eur, 7),
            posting(LedgerAccount::Revenue, eur, -7),
        ],
    );
    assert!(mixed.is_ok());
}

#[test]
fn sums_at_the_i64_bounds_are_judged_exactly_not_wrapped() {
    // In i64 these would wrap to a false zero: MAX + MAX + 2 = 0 (mod 2^64).
    let result = LedgerTransaction::new(
        TransactionKind::CreditUse,
        vec![
            posting(wallet(), Unit::Credits, i64::MAX),
            posting(wallet(), Unit::Credits, i64::MAX),
            posting(LedgerAccount::CreditsConsumed, Unit::Credits, 2),
        ],
    );
    assert_eq!(
        result,
        Err(LedgerError::Unbalanced {
            unit: Unit::Credits,
            sum: 2 * i128::from(i64::MAX) + 2
        })
    );
    let extreme = LedgerTransaction::new(
        TransactionKind::CreditUse,
        vec![
            posting(wallet(), Unit::Credits, i64::MAX),
            posting(LedgerAccount::CreditsConsumed, Unit::Credits, i64::MIN),
            posting(LedgerAccount::CreditsConsumed, Unit::Credits, 1),
        ],
    );
    assert!(extreme.is_ok());
}

#[test]
fn postings_in_a_unit_the_account_does_not_hold_are_rejected() {
    let usd = Unit::Money(Currency::USD);
    let result = LedgerTransaction::new(
        TransactionKind::CreditUse,
        vec![
            posting(wallet(), usd, 1),
            posting(LedgerAccount::Revenue, usd, -1),
        ],
    );
    assert_eq!(
        result,
        Err(LedgerError::UnitNotHeld {
            account: "customer:c_1:credits".into(),
            unit: usd
        })
    );
}

#[test]
fn transaction_kinds_round_trip_through_their_database_form() {
    for kind in TransactionKind::ALL {
        assert_eq!(TransactionKind::parse(kind.as_str()), Ok(kind));
    }
    let mut names: Vec<_> = TransactionKind::ALL.iter().map(|k| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), TransactionKind::ALL.len(), "names are unique");
    assert!(TransactionKind::parse("credit.steal").is_err());
}

#[test]
fn ledger_errors_are_internal_errors() {
    let error = crate::domain::DomainError::from(LedgerError::TooFewPostings { count: 1 });
    assert_eq!(error.code(), "SYS_001");
}

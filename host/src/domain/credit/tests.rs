use std::collections::BTreeMap;

use super::*;
use crate::domain::ledger::{LedgerAccount, TransactionKind, Unit};

fn customer() -> CustomerId {
    CustomerId::new("c_1").unwrap()
}

fn n(credits: i64) -> PositiveCredits {
    PositiveCredits::new(credits).unwrap()
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

fn use_id(id: &str) -> CreditUseId {
    CreditUseId::new(id).unwrap()
}

fn grant_id(id: &str) -> CreditGrantId {
    CreditGrantId::new(id).unwrap()
}

fn reservation_id(id: &str) -> ReservationId {
    ReservationId::new(id).unwrap()
}

fn account(balance: i64, reserved: i64) -> CreditAccount {
    CreditAccount::restore(customer(), Credits(balance), Credits(reserved)).unwrap()
}

/// The ledger as the auditor sees it: balances per account key.
#[derive(Default)]
struct Books(BTreeMap<String, i128>);

impl Books {
    fn post(&mut self, tx: &LedgerTransaction) {
        for p in tx.postings() {
            assert_eq!(p.unit, Unit::Credits);
            *self.0.entry(p.account.key()).or_default() += i128::from(p.amount);
        }
    }

    fn balance(&self, account: LedgerAccount) -> i128 {
        account.balance_of(self.0.get(&account.key()).copied().unwrap_or(0))
    }

    /// The materialised account agrees with the ledger.
    fn assert_matches(&self, account: &CreditAccount) {
        let c = account.customer().clone();
        assert_eq!(
            self.balance(LedgerAccount::CustomerCredits(c.clone())),
            i128::from(account.available().value()),
            "available"
        );
        assert_eq!(
            self.balance(LedgerAccount::CustomerReservedCredits(c)),
            i128::from(account.reserved().value()),
            "reserved"
        );
        assert_eq!(self.0.values().sum::<i128>(), 0, "the books balance");
    }
}

#[test]
fn a_new_account_is_empty() {
    let account = CreditAccount::open(customer());
    assert_eq!(
        (account.balance(), account.reserved(), account.available()),
        (Credits(0), Credits(0), Credits(0))
    );
}

#[test]
fn granting_adds_to_the_balance_and_posts_a_grant() {
    let change = CreditAccount::open(customer())
        .grant(grant_id("g"), n(100), None, at(0))
        .unwrap();
    assert_eq!(change.account.balance(), Credits(100));
    assert_eq!(change.record.remaining(), Credits(100));
    assert_eq!(change.ledger.kind(), TransactionKind::CreditGrant);
}

#[test]
fn granting_past_the_i64_limit_is_an_overflow_error() {
    let error = account(i64::MAX, 0)
        .grant(grant_id("g"), n(1), None, at(0))
        .unwrap_err();
    assert_eq!(error.code(), "REQ_001");
}

#[test]
fn a_grant_must_expire_after_now() {
    let empty = CreditAccount::open(customer());
    for expires in [at(9), at(10)] {
        let error = empty
            .grant(grant_id("g"), n(1), Some(expires), at(10))
            .unwrap_err();
        assert_eq!(
            error,
            CreditError::ExpiryNotInFuture {
                expires_at: expires,
                now: at(10)
            }
            .into()
        );
        assert_eq!(error.code(), "REQ_001");
    }
    assert!(
        empty
            .grant(grant_id("g"), n(1), Some(at(11)), at(10))
            .is_ok()
    );
}

#[test]
fn debiting_within_the_available_balance_succeeds() {
    let change = account(100, 0).debit(use_id("u"), n(100)).unwrap();
    assert_eq!(change.account.balance(), Credits(0));
    assert_eq!(change.record.charged(), n(100));
    assert_eq!(change.record.refunded(), Credits(0));
    assert_eq!(change.record.kind(), CreditUseKind::Use);
    assert_eq!(change.ledger.kind(), TransactionKind::CreditUse);
}

#[test]
fn credits_use_is_rejected_when_balance_is_insufficient() {
    let error = account(29, 0).debit(use_id("u"), n(30)).unwrap_err();
    assert_eq!(
        error,
        DomainError::InsufficientCredits {
            available: Credits(29),
            requested: Credits(30)
        }
    );
    assert_eq!(error.code(), "PAY_001");
}

#[test]
fn reserved_credits_cannot_be_spent_by_other_uses() {
    let account = account(100, 80);
    assert_eq!(account.available(), Credits(20));
    assert_eq!(
        account.debit(use_id("u"), n(21)).unwrap_err(),
        DomainError::InsufficientCredits {
            available: Credits(20),
            requested: Credits(21)
        }
    );
    assert!(account.debit(use_id("u"), n(20)).is_ok());
    assert!(account.reserve(reservation_id("r"), n(21)).is_err());
}

#[test]
fn subscription_charges_follow_the_debit_rules_with_their_own_ledger_kind() {
    let change = account(50, 0)
        .charge_subscription(use_id("s"), n(50))
        .unwrap();
    assert_eq!(change.account.balance(), Credits(0));
    assert_eq!(change.record.kind(), CreditUseKind::SubscriptionCharge);
    assert_eq!(change.ledger.kind(), TransactionKind::SubscriptionCharge);
    assert_eq!(
        account(49, 0)
            .charge_subscription(use_id("s"), n(50))
            .unwrap_err()
            .code(),
        "PAY_001"
    );
}

#[test]
fn a_use_can_be_refunded_in_full() {
    let used = account(100, 0).debit(use_id("u"), n(30)).unwrap();
    let refund = used.account.refund(&used.record, n(30)).unwrap();
    assert_eq!(refund.account.balance(), Credits(100));
    assert_eq!(refund.record.refunded(), Credits(30));
    assert_eq!(refund.record.refundable(), Credits(0));
    assert_eq!(refund.ledger.kind(), TransactionKind::CreditRefund);
}

#[test]
fn multiple_partial_refunds_add_up_to_at_most_the_charge() {
    let used = account(100, 0).debit(use_id("u"), n(30)).unwrap();
    let first = used.account.refund(&used.record, n(10)).unwrap();
    let second = first.account.refund(&first.record, n(15)).unwrap();
    assert_eq!(second.record.refunded(), Credits(25));
    assert_eq!(second.account.balance(), Credits(95));
    let over = second.account.refund(&second.record, n(6)).unwrap_err();
    assert_eq!(
        over,
        CreditError::RefundExceedsRemaining {
            use_id: use_id("u"),
            remaining: Credits(5),
            requested: Credits(6)
        }
        .into()
    );
    assert_eq!(over.code(), "REQ_001");
    let last = second.account.refund(&second.record, n(5)).unwrap();
    assert_eq!(last.record.refundable(), Credits(0));
}

#[test]
fn a_fully_refunded_use_cannot_be_refunded_again() {
    let used = account(10, 0).debit(use_id("u"), n(10)).unwrap();
    let refunded = used.account.refund(&used.record, n(10)).unwrap();
    assert!(matches!(
        refunded.account.refund(&refunded.record, n(1)),
        Err(DomainError::Credit(
            CreditError::RefundExceedsRemaining { .. }
        ))
    ));
}

#[test]
fn an_over_refund_in_one_step_is_rejected() {
    let used = account(100, 0).debit(use_id("u"), n(30)).unwrap();
    assert!(used.account.refund(&used.record, n(31)).is_err());
}

#[test]
fn a_use_of_another_customer_cannot_be_refunded_here() {
    let other = CreditAccount::restore(CustomerId::new("c_2").unwrap(), Credits(10), Credits(0))
        .unwrap()
        .debit(use_id("u"), n(5))
        .unwrap();
    let error = account(0, 0).refund(&other.record, n(5)).unwrap_err();
    assert_eq!(error.code(), "SYS_001");
}

#[test]
fn a_reservation_holds_credits_until_captured_or_released() {
    let reserved = account(100, 0).reserve(reservation_id("r"), n(40)).unwrap();
    assert_eq!(reserved.account.balance(), Credits(100));
    assert_eq!(reserved.account.reserved(), Credits(40));
    assert_eq!(reserved.account.available(), Credits(60));
    assert_eq!(reserved.record.held(), Credits(40));
    assert_eq!(reserved.ledger.kind(), TransactionKind::CreditReserve);

    let released = reserved.account.release(&reserved.record).unwrap();
    assert_eq!(released.account, account(100, 0));
    assert!(released.record.is_settled());
    assert_eq!(released.ledger.kind(), TransactionKind::CreditRelease);
}

#[test]
fn a_partial_capture_spends_part_and_the_rest_can_be_released() {
    let reserved = account(100, 0).reserve(reservation_id("r"), n(40)).unwrap();
    let captured = reserved
        .account
        .capture(&reserved.record, n(30), use_id("u"))
        .unwrap();
    assert_eq!(captured.account.balance(), Credits(70));
    assert_eq!(captured.account.reserved(), Credits(10));
    assert_eq!(captured.account.available(), Credits(60));
    assert_eq!(captured.record.reservation.held(), Credits(10));
    assert_eq!(captured.record.credit_use.charged(), n(30));
    assert_eq!(captured.ledger.kind(), TransactionKind::CreditCapture);

    let released = captured
        .account
        .release(&captured.record.reservation)
        .unwrap();
    assert_eq!(released.account, account(70, 0));
}

#[test]
fn capturing_more_than_held_is_a_state_conflict() {
    let reserved = account(100, 0).reserve(reservation_id("r"), n(40)).unwrap();
    let error = reserved
        .account
        .capture(&reserved.record, n(41), use_id("u"))
        .unwrap_err();
    assert_eq!(error.code(), "PAY_004");
}

#[test]
fn a_settled_reservation_cannot_be_released_or_captured_again() {
    let reserved = account(100, 0).reserve(reservation_id("r"), n(40)).unwrap();
    let released = reserved.account.release(&reserved.record).unwrap();
    let again = released.account.release(&released.record).unwrap_err();
    assert_eq!(
        again,
        CreditError::NothingToRelease {
            reservation_id: reservation_id("r")
        }
        .into()
    );
    assert_eq!(again.code(), "PAY_004");
    assert_eq!(
        released
            .account
            .capture(&released.record, n(1), use_id("u"))
            .unwrap_err()
            .code(),
        "PAY_004"
    );
}

#[test]
fn a_reservation_larger_than_the_account_reserve_is_corrupt_data() {
    let reserved = account(100, 0).reserve(reservation_id("r"), n(40)).unwrap();
    let error = account(100, 0).release(&reserved.record).unwrap_err();
    assert_eq!(error.code(), "SYS_001");
}

#[test]
fn a_captured_use_can_be_refunded() {
    let reserved = account(100, 0).reserve(reservation_id("r"), n(40)).unwrap();
    let captured = reserved
        .account
        .capture(&reserved.record, n(40), use_id("u"))
        .unwrap();
    let refund = captured
        .account
        .refund(&captured.record.credit_use, n(40))
        .unwrap();
    assert_eq!(refund.account.balance(), Credits(100));
}

#[test]
fn an_expired_grant_removes_what_is_left_of_it() {
    let granted = CreditAccount::open(customer())
        .grant(grant_id("g"), n(100), Some(at(50)), at(0))
        .unwrap();
    let used = granted.account.debit(use_id("u"), n(30)).unwrap();
    let grant = CreditGrant::allocate(&[granted.record], Credits(30))
        .pop()
        .unwrap();
    assert_eq!(grant.remaining(), Credits(70));
    let expiry = used.account.expire(&grant, at(50)).unwrap();
    assert_eq!(expiry.expired, Credits(70));
    assert_eq!(expiry.account.balance(), Credits(0));
    assert_eq!(expiry.grant.remaining(), Credits(0));
    assert_eq!(
        expiry.ledger.map(|tx| tx.kind()),
        Some(TransactionKind::CreditExpiry)
    );
}

#[test]
fn expiry_never_takes_credits_a_saga_has_reserved() {
    let granted = CreditAccount::open(customer())
        .grant(grant_id("g"), n(100), Some(at(50)), at(0))
        .unwrap();
    let reserved = granted.account.reserve(reservation_id("r"), n(90)).unwrap();
    let expiry = reserved.account.expire(&granted.record, at(60)).unwrap();
    assert_eq!(expiry.expired, Credits(10));
    assert_eq!(expiry.account.balance(), Credits(90));
    assert_eq!(expiry.account.reserved(), Credits(90));
    assert_eq!(
        expiry.grant.remaining(),
        Credits(90),
        "the reserved credits stay on the grant, to expire once released"
    );
}

#[test]
fn expiring_a_grant_with_nothing_left_posts_nothing() {
    let granted = CreditAccount::open(customer())
        .grant(grant_id("g"), n(10), Some(at(50)), at(0))
        .unwrap();
    let first = granted.account.expire(&granted.record, at(50)).unwrap();
    let second = first.account.expire(&first.grant, at(51)).unwrap();
    assert_eq!(second.expired, Credits(0));
    assert_eq!(second.ledger, None);
    assert_eq!(second.account, first.account);
}

#[test]
fn a_grant_cannot_expire_early_or_without_an_expiry() {
    let dated = CreditAccount::open(customer())
        .grant(grant_id("g"), n(10), Some(at(50)), at(0))
        .unwrap();
    let early = dated.account.expire(&dated.record, at(49)).unwrap_err();
    assert_eq!(early.code(), "PAY_004");
    let forever = CreditAccount::open(customer())
        .grant(grant_id("f"), n(10), None, at(0))
        .unwrap();
    assert!(matches!(
        forever.account.expire(&forever.record, at(i64::MAX)),
        Err(DomainError::Credit(CreditError::GrantNotExpired {
            expires_at: None,
            ..
        }))
    ));
}

#[test]
fn spends_come_out_of_the_soonest_expiring_grants_first() {
    let c = customer();
    let grant = |id: &str, amount, expires: Option<i64>| {
        CreditGrant::restore(
            grant_id(id),
            c.clone(),
            n(amount),
            Credits(amount),
            expires.map(at),
        )
        .unwrap()
    };
    let grants = [
        grant("forever", 100, None),
        grant("late", 50, Some(300)),
        grant("soon", 20, Some(200)),
        grant("lapsed", 70, Some(100)),
    ];
    // The lapsed grant (not expired yet, so still in the balance) goes
    // first, then the soonest, and never-expiring credits last.
    let changed = CreditGrant::allocate(&grants, Credits(100));
    let summary: Vec<(&str, i64)> = changed
        .iter()
        .map(|g| (g.id().as_str(), g.remaining().value()))
        .collect();
    assert_eq!(summary, [("lapsed", 0), ("soon", 0), ("late", 40)]);

    let all = CreditGrant::allocate(&grants, Credits(1_000));
    assert!(all.iter().all(|g| g.remaining() == Credits(0)));
    assert_eq!(all.len(), 4);
    assert!(CreditGrant::allocate(&grants, Credits(0)).is_empty());
}

#[test]
fn stored_state_that_breaks_invariants_is_refused() {
    let c = customer();
    assert!(CreditAccount::restore(c.clone(), Credits(10), Credits(11)).is_err());
    assert!(CreditAccount::restore(c.clone(), Credits(10), Credits(-1)).is_err());
    assert!(CreditAccount::restore(c.clone(), Credits(-1), Credits(0)).is_err());
    assert!(
        CreditUse::restore(use_id("u"), c.clone(), CreditUseKind::Use, n(5), Credits(6)).is_err()
    );
    assert!(
        CreditUse::restore(
            use_id("u"),
            c.clone(),
            CreditUseKind::Use,
            n(5),
            Credits(-1)
        )
        .is_err()
    );
    assert!(CreditReservation::restore(reservation_id("r"), c.clone(), Credits(-1)).is_err());
    assert!(CreditGrant::restore(grant_id("g"), c, n(5), Credits(6), None).is_err());
}

#[test]
fn the_materialised_account_always_equals_the_ledger() {
    let mut books = Books::default();
    fn step(books: &mut Books, ledger: &LedgerTransaction, account: &CreditAccount) {
        books.post(ledger);
        books.assert_matches(account);
    }
    let g = CreditAccount::open(customer())
        .grant(grant_id("g"), n(100), Some(at(1_000)), at(0))
        .unwrap();
    step(&mut books, &g.ledger, &g.account);
    let u = g.account.debit(use_id("u1"), n(30)).unwrap();
    step(&mut books, &u.ledger, &u.account);
    let r = u.account.refund(&u.record, n(10)).unwrap();
    step(&mut books, &r.ledger, &r.account);
    let h = r.account.reserve(reservation_id("r"), n(50)).unwrap();
    step(&mut books, &h.ledger, &h.account);
    let c = h.account.capture(&h.record, n(20), use_id("u2")).unwrap();
    step(&mut books, &c.ledger, &c.account);
    let s = c.account.charge_subscription(use_id("s1"), n(5)).unwrap();
    step(&mut books, &s.ledger, &s.account);
    let x = s
        .account
        .expire(&g.record.with_remaining(Credits(40)), at(1_000))
        .unwrap();
    step(&mut books, x.ledger.as_ref().unwrap(), &x.account);
    let l = x.account.release(&c.record.reservation).unwrap();
    step(&mut books, &l.ledger, &l.account);

    // The expiry took only what was available (25 of the 40 left), not the
    // 30 still reserved.
    assert_eq!(x.expired, Credits(25));
    assert_eq!(l.account, account(30, 0));
    // issued = wallet + reserved + consumed + expired − refunded
    assert_eq!(books.balance(LedgerAccount::CreditsIssued), 100);
    assert_eq!(books.balance(LedgerAccount::CreditsConsumed), 55);
    assert_eq!(books.balance(LedgerAccount::CreditsRefunded), 10);
    assert_eq!(books.balance(LedgerAccount::CreditsExpired), 25);
}

//! The auditor's checks on hand-made data: each kind of discrepancy is
//! reported, and consistent data is clean.

use super::*;
use crate::store::{AccountSum, CreditAccountRecord};

fn account(customer: &str, balance: i64) -> CreditAccountRecord {
    CreditAccountRecord {
        customer_id: customer.into(),
        balance,
        reserved: 0,
        expiring: 0,
        spent_day: 0,
        spent_today: 0,
        version: 1,
        updated_at: 0,
    }
}

fn history(
    id: i64,
    entity_type: &str,
    entity_id: &str,
    from: Option<&str>,
    to: &str,
    event: &str,
) -> HistoryRecord {
    HistoryRecord {
        id,
        entity_type: entity_type.into(),
        entity_id: entity_id.into(),
        from_state: from.map(str::to_owned),
        to_state: to.into(),
        event: event.into(),
        transaction_id: format!("tx{id}"),
    }
}

fn run(data: &AuditData) -> Vec<&'static str> {
    let mut report = AuditReport::default();
    check_tenant("t", data, &mut report);
    report.discrepancies.iter().map(|d| d.check).collect()
}

fn granted(balance: i64) -> AuditData {
    AuditData {
        account_sums: vec![
            AccountSum {
                account: "customer:c1:credits".into(),
                unit: "CREDITS".into(),
                sum: -i128::from(balance),
            },
            AccountSum {
                account: "tenant:credits_issued".into(),
                unit: "CREDITS".into(),
                sum: i128::from(balance),
            },
        ],
        credit_accounts: vec![account("c1", balance)],
        entities: vec![EntityState {
            entity_type: "credit_account".into(),
            entity_id: "c1".into(),
            state: credit_account_state(balance, 0),
            version: 1,
        }],
        history: vec![history(
            1,
            "credit_account",
            "c1",
            Some("balance=0 reserved=0"),
            &credit_account_state(balance, 0),
            "grant",
        )],
        ..AuditData::default()
    }
}

#[test]
fn a_consistent_tenant_is_clean() {
    assert!(run(&granted(100)).is_empty());
}

#[test]
fn a_materialised_balance_that_disagrees_with_the_ledger_is_reported() {
    let mut data = granted(100);
    data.credit_accounts[0].balance = 90;
    data.entities[0].state = credit_account_state(90, 0);
    let checks = run(&data);
    assert!(checks.contains(&"credit.balance"), "{checks:?}");
    assert!(checks.contains(&"history.chain"), "{checks:?}");
}

#[test]
fn a_unit_that_does_not_sum_to_zero_is_reported() {
    let mut data = granted(100);
    data.account_sums[1].sum = 99;
    assert!(run(&data).contains(&"ledger.totals"));
}

#[test]
fn a_missing_history_row_is_reported() {
    let mut data = granted(100);
    data.entities[0].version = 2;
    assert!(run(&data).contains(&"history.count"));
}

#[test]
fn illegal_order_transitions_are_reported() {
    let data = AuditData {
        entities: vec![EntityState {
            entity_type: "order".into(),
            entity_id: "o1".into(),
            state: "PENDING".into(),
            version: 2,
        }],
        history: vec![
            history(1, "order", "o1", None, "COMPLETED", "create"),
            history(2, "order", "o1", Some("COMPLETED"), "PENDING", "pay"),
        ],
        ..AuditData::default()
    };
    let checks = run(&data);
    assert_eq!(checks, ["state.machine", "state.machine"], "{checks:?}");
}

#[test]
fn unknown_statuses_are_reported() {
    let data = AuditData {
        entities: vec![EntityState {
            entity_type: "subscription".into(),
            entity_id: "s1".into(),
            state: "PAUSED".into(),
            version: 0,
        }],
        ..AuditData::default()
    };
    assert_eq!(run(&data), ["state.machine"]);
}

//! The auditor: re-derives what must hold from the rows themselves and
//! reports every discrepancy. `fluxpay-host audit` runs it; tests run it
//! after every scenario.
//!
//! Per tenant:
//! - **ledger**: every transaction has ≥ 2 non-zero postings that sum to
//!   zero per unit; every account key and unit parses and the account holds
//!   the unit; each unit's postings sum to zero over the whole tenant;
//! - **balances**: each credit account's available balance equals the
//!   ledger balance of `customer:{id}:credits`, its reserved credits equal
//!   `customer:{id}:credits_reserved`, `0 ≤ reserved ≤ balance`, and
//!   `expiring` equals the remaining credits of its expiring grants; every
//!   customer credits account in the ledger has a materialised row;
//! - **credit records**: each grant, use, refund and expiry row matches its ledger
//!   transaction's kind and amount; each use's `refunded` equals its refunds;
//! - **journal links**: every ledger transaction has a state-history row and
//!   exactly one outbox event; every history row has an event and every
//!   event a history row;
//! - **feed positions**: every event has exactly one position in the events
//!   feed (on PostgreSQL: or waits in `outbox_unsequenced` for the
//!   sequencer), and every position has its event;
//! - **state machines**: every entity's history is a chain (each row starts
//!   where the previous ended, the last ends at the current state, one row
//!   per version), order and subscription statuses are known, and every
//!   recorded transition is legal in the domain's state table. Entities:
//!   customers, credit accounts and uses, orders, subscriptions, and closed
//!   usage periods (`usage_period`: one row, `CLOSED`, version 1).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::journal::{credit_account_state, credit_use_state, entity};
use crate::domain::credit::CreditAccount;
use crate::domain::history::EntityKind;
use crate::domain::ledger::{LedgerAccount, Unit};
use crate::domain::order::{OrderEvent, OrderStatus};
use crate::domain::payment::{PaymentEvent, PaymentStatus};
use crate::domain::saga::{SagaEvent, SagaState};
use crate::domain::subscription::{SubscriptionEvent, SubscriptionStatus};
use crate::domain::{Credits, CustomerId};
use crate::store::{AuditData, EntityState, HistoryRecord, Maintenance, Store, StoreError};

/// One thing that does not add up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Discrepancy {
    /// The tenant.
    pub tenant: String,
    /// Which check, e.g. `credit.balance`.
    pub check: &'static str,
    /// What it concerns (a transaction, account or entity).
    pub subject: String,
    /// What was expected and found.
    pub detail: String,
}

impl fmt::Display for Discrepancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} {}: {}",
            self.tenant, self.check, self.subject, self.detail
        )
    }
}

/// How much was looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    /// Ledger (account, unit) balances.
    pub ledger_balances: usize,
    /// Credit accounts.
    pub credit_accounts: usize,
    /// Entities whose history was followed.
    pub entities: usize,
    /// State-history rows.
    pub history_rows: usize,
}

/// The auditor's findings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    /// Tenants audited.
    pub tenants: Vec<String>,
    /// What was looked at.
    pub checked: Checked,
    /// Everything that does not add up; empty when clean.
    pub discrepancies: Vec<Discrepancy>,
}

impl AuditReport {
    /// No discrepancy.
    pub fn is_clean(&self) -> bool {
        self.discrepancies.is_empty()
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "audited {} tenant(s): {} ledger balances, {} credit accounts, {} entities, {} history rows",
            self.tenants.len(),
            self.checked.ledger_balances,
            self.checked.credit_accounts,
            self.checked.entities,
            self.checked.history_rows
        )?;
        if self.is_clean() {
            return writeln!(f, "clean: no discrepancies");
        }
        writeln!(f, "{} discrepancies:", self.discrepancies.len())?;
        for discrepancy in &self.discrepancies {
            writeln!(f, "  {discrepancy}")?;
        }
        Ok(())
    }
}

/// Audits `tenants` (every tenant with data when empty).
pub async fn audit(store: &Store, tenants: &[String]) -> Result<AuditReport, StoreError> {
    let tenants = if tenants.is_empty() {
        store.tenants().await?
    } else {
        tenants.to_vec()
    };
    let mut report = AuditReport::default();
    for tenant in &tenants {
        let data = store.audit_data(tenant).await?;
        check_tenant(tenant, &data, &mut report);
        report.tenants.push(tenant.clone());
    }
    Ok(report)
}

/// Audits one tenant.
pub async fn audit_tenant(store: &Store, tenant: &str) -> Result<AuditReport, StoreError> {
    audit(store, &[tenant.to_owned()]).await
}

struct Findings<'a> {
    tenant: &'a str,
    report: &'a mut AuditReport,
}

impl Findings<'_> {
    fn add(&mut self, check: &'static str, subject: impl Into<String>, detail: impl Into<String>) {
        self.report.discrepancies.push(Discrepancy {
            tenant: self.tenant.to_owned(),
            check,
            subject: subject.into(),
            detail: detail.into(),
        });
    }
}

/// Every check of one tenant's data.
pub fn check_tenant(tenant: &str, data: &AuditData, report: &mut AuditReport) {
    report.checked.ledger_balances += data.account_sums.len();
    report.checked.credit_accounts += data.credit_accounts.len();
    report.checked.entities += data.entities.len();
    report.checked.history_rows += data.history.len();
    let mut findings = Findings { tenant, report };
    for problem in &data.transaction_problems {
        findings.add(
            "ledger.transaction",
            &problem.transaction_id,
            &problem.problem,
        );
    }
    let customer_sums = check_ledger_accounts(data, &mut findings);
    check_credit_accounts(data, &customer_sums, &mut findings);
    for problem in &data.credit_problems {
        findings.add("credit.records", &problem.transaction_id, &problem.problem);
    }
    for problem in &data.link_problems {
        findings.add("journal.links", &problem.transaction_id, &problem.problem);
    }
    for problem in &data.feed_problems {
        findings.add("feed.positions", &problem.transaction_id, &problem.problem);
    }
    for problem in &data.saga_problems {
        findings.add(
            "order.money",
            format!("order:{}", problem.transaction_id),
            &problem.problem,
        );
    }
    check_histories(data, &mut findings);
}

/// Posted sums of each customer's credits and reserved credits.
#[derive(Default)]
struct CustomerSums {
    credits: i128,
    reserved: i128,
}

fn check_ledger_accounts(
    data: &AuditData,
    findings: &mut Findings<'_>,
) -> BTreeMap<String, CustomerSums> {
    let mut totals: BTreeMap<String, i128> = BTreeMap::new();
    let mut customers: BTreeMap<String, CustomerSums> = BTreeMap::new();
    for sum in &data.account_sums {
        *totals.entry(sum.unit.clone()).or_default() += sum.sum;
        let account = match LedgerAccount::parse(&sum.account) {
            Ok(account) => account,
            Err(err) => {
                findings.add("ledger.account", &sum.account, err.to_string());
                continue;
            }
        };
        let unit = match Unit::parse(&sum.unit) {
            Ok(unit) => unit,
            Err(err) => {
                findings.add("ledger.account", &sum.account, err.to_string());
                continue;
            }
        };
        if !account.holds(unit) {
            findings.add(
                "ledger.account",
                &sum.account,
                format!("holds postings in {unit}, which it may not hold"),
            );
        }
        match &account {
            LedgerAccount::CustomerCredits(id) => {
                customers.entry(id.to_string()).or_default().credits += sum.sum;
            }
            LedgerAccount::CustomerReservedCredits(id) => {
                customers.entry(id.to_string()).or_default().reserved += sum.sum;
            }
            _ => {}
        }
    }
    for (unit, total) in totals {
        if total != 0 {
            findings.add(
                "ledger.totals",
                &unit,
                format!("all postings in {unit} sum to {total}, not zero"),
            );
        }
    }
    customers
}

fn check_credit_accounts(
    data: &AuditData,
    sums: &BTreeMap<String, CustomerSums>,
    findings: &mut Findings<'_>,
) {
    let expiring: HashMap<&str, i64> = data
        .expiring_sums
        .iter()
        .map(|(customer, sum)| (customer.as_str(), *sum))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for account in &data.credit_accounts {
        let subject = format!("customer:{}", account.customer_id);
        seen.insert(account.customer_id.as_str());
        if let Ok(customer) = CustomerId::new(&account.customer_id)
            && let Err(err) = CreditAccount::restore(
                customer,
                Credits(account.balance),
                Credits(account.reserved),
            )
        {
            findings.add("credit.invariant", &subject, err.to_string());
        }
        let posted = sums.get(&account.customer_id);
        // Both accounts are credit-normal: their balance is the negated sum.
        let ledger_available = posted.map_or(0, |s| -s.credits);
        let ledger_reserved = posted.map_or(0, |s| -s.reserved);
        let available = i128::from(account.balance) - i128::from(account.reserved);
        if available != ledger_available {
            findings.add(
                "credit.balance",
                &subject,
                format!(
                    "materialised available balance is {available} but the ledger says {ledger_available}"
                ),
            );
        }
        if i128::from(account.reserved) != ledger_reserved {
            findings.add(
                "credit.reserved",
                &subject,
                format!(
                    "materialised reserved credits are {} but the ledger says {ledger_reserved}",
                    account.reserved
                ),
            );
        }
        let grants = expiring
            .get(account.customer_id.as_str())
            .copied()
            .unwrap_or(0);
        if account.expiring != grants {
            findings.add(
                "credit.expiring",
                &subject,
                format!(
                    "account counts {} expiring credits but its grants have {grants} remaining",
                    account.expiring
                ),
            );
        }
    }
    for (customer, posted) in sums {
        if !seen.contains(customer.as_str()) && (posted.credits != 0 || posted.reserved != 0) {
            findings.add(
                "credit.balance",
                format!("customer:{customer}"),
                "the ledger holds credits for a customer without a credit account",
            );
        }
    }
}

/// The state an entity's history starts from.
fn initial_state(entity_type: &str) -> Option<String> {
    match entity_type {
        entity::CREDIT_ACCOUNT => Some(credit_account_state(0, 0)),
        entity::CREDIT_USE => Some(credit_use_state(0)),
        _ => None,
    }
}

fn check_histories(data: &AuditData, findings: &mut Findings<'_>) {
    let mut histories: BTreeMap<(&str, &str), Vec<&HistoryRecord>> = BTreeMap::new();
    for row in &data.history {
        histories
            .entry((row.entity_type.as_str(), row.entity_id.as_str()))
            .or_default()
            .push(row);
    }
    let mut known = std::collections::HashSet::new();
    for state in &data.entities {
        known.insert((state.entity_type.as_str(), state.entity_id.as_str()));
        let rows = histories
            .get(&(state.entity_type.as_str(), state.entity_id.as_str()))
            .map_or(&[][..], Vec::as_slice);
        check_chain(state, rows, findings);
        check_status(state, rows, findings);
    }
    for ((entity_type, entity_id), rows) in &histories {
        if !known.contains(&(*entity_type, *entity_id)) {
            findings.add(
                "history.orphan",
                format!("{entity_type}:{entity_id}"),
                format!(
                    "{} history row(s) for an entity that does not exist",
                    rows.len()
                ),
            );
        }
    }
}

fn check_chain(state: &EntityState, rows: &[&HistoryRecord], findings: &mut Findings<'_>) {
    let subject = format!("{}:{}", state.entity_type, state.entity_id);
    if rows.len() as i64 != state.version {
        findings.add(
            "history.count",
            &subject,
            format!(
                "{} history row(s) for {} change(s): every state change needs its row",
                rows.len(),
                state.version
            ),
        );
    }
    let mut expected_from = initial_state(&state.entity_type);
    for row in rows {
        if row.from_state != expected_from {
            findings.add(
                "history.chain",
                &subject,
                format!(
                    "row {} starts from {:?} but the previous state was {:?}",
                    row.id, row.from_state, expected_from
                ),
            );
        }
        expected_from = Some(row.to_state.clone());
    }
    let last = expected_from.unwrap_or_default();
    // An entity without history must still be at its initial state (a
    // customer, order or subscription always has at least its creation).
    let has_start = !rows.is_empty() || initial_state(&state.entity_type).is_some();
    if has_start && last != state.state {
        findings.add(
            "history.chain",
            &subject,
            format!(
                "history ends at {last:?} but the entity is at {:?}",
                state.state
            ),
        );
    }
}

/// Orders, subscriptions, payments and sagas: known statuses, legal
/// transitions only (and no saga parked for an operator).
fn check_status(state: &EntityState, rows: &[&HistoryRecord], findings: &mut Findings<'_>) {
    type Legal = fn(Option<&str>, &str, &str) -> Result<(), String>;
    let subject = format!("{}:{}", state.entity_type, state.entity_id);
    let (known, legal): (Result<(), String>, Legal) =
        if state.entity_type == EntityKind::Order.as_str() {
            (
                parse_status::<OrderStatus>(&state.state).map(drop),
                order_transition,
            )
        } else if state.entity_type == EntityKind::Subscription.as_str() {
            (
                parse_status::<SubscriptionStatus>(&state.state).map(drop),
                subscription_transition,
            )
        } else if state.entity_type == EntityKind::Payment.as_str() {
            (
                parse_status::<PaymentStatus>(&state.state).map(drop),
                payment_transition,
            )
        } else if state.entity_type == EntityKind::Saga.as_str() {
            let known = parse_status::<SagaState>(&state.state);
            // Neither finished nor moved on by the host: an operator must.
            if known
                .as_ref()
                .is_ok_and(|s| !s.is_terminal() && !s.is_resumable())
            {
                findings.add(
                    "saga.parked",
                    &subject,
                    format!("{}: waits for an operator", state.state),
                );
            }
            (known.map(drop), saga_transition)
        } else {
            return;
        };
    if let Err(problem) = known {
        findings.add("state.machine", &subject, problem);
    }
    for row in rows {
        if let Err(problem) = legal(row.from_state.as_deref(), &row.event, &row.to_state) {
            findings.add(
                "state.machine",
                &subject,
                format!("row {}: {problem}", row.id),
            );
        }
    }
}

fn parse_status<S: FromStr>(status: &str) -> Result<S, String> {
    S::from_str(status).map_err(|_| format!("unknown status `{status}`"))
}

fn order_transition(from: Option<&str>, event: &str, to: &str) -> Result<(), String> {
    let to: OrderStatus = parse_status(to)?;
    let Some(from) = from else {
        return if to == OrderStatus::Pending {
            Ok(())
        } else {
            Err(format!("an order is created PENDING, not {to}"))
        };
    };
    let from: OrderStatus = parse_status(from)?;
    let event = OrderEvent::ALL
        .into_iter()
        .find(|e| e.as_str() == event)
        .ok_or_else(|| format!("unknown order event `{event}`"))?;
    match from.on(event) {
        Ok(next) if next == to => Ok(()),
        Ok(next) => Err(format!("{event:?} leads {from} to {next}, not {to}")),
        Err(err) => Err(err.to_string()),
    }
}

fn payment_transition(from: Option<&str>, event: &str, to: &str) -> Result<(), String> {
    let to: PaymentStatus = parse_status(to)?;
    let Some(from) = from else {
        return if to == PaymentStatus::Ready {
            Ok(())
        } else {
            Err(format!("a payment is created READY, not {to}"))
        };
    };
    let from: PaymentStatus = parse_status(from)?;
    // `refund` names two events (in part, the rest): either may lead there.
    let mut named = PaymentEvent::ALL
        .into_iter()
        .filter(|e| e.as_str() == event)
        .peekable();
    if named.peek().is_none() {
        return Err(format!("unknown payment event `{event}`"));
    }
    if named.any(|e| from.on(e).is_ok_and(|next| next == to)) {
        Ok(())
    } else {
        Err(format!("`{event}` does not lead {from} to {to}"))
    }
}

fn saga_transition(from: Option<&str>, event: &str, to: &str) -> Result<(), String> {
    let to: SagaState = parse_status(to)?;
    let Some(from) = from else {
        return if to == SagaState::Running {
            Ok(())
        } else {
            Err(format!("a saga is created RUNNING, not {to}"))
        };
    };
    let from: SagaState = parse_status(from)?;
    let event = SagaEvent::ALL
        .into_iter()
        .find(|e| e.as_str() == event)
        .ok_or_else(|| format!("unknown saga event `{event}`"))?;
    match from.on(event) {
        Ok(next) if next == to => Ok(()),
        Ok(next) => Err(format!("{event:?} leads {from} to {next}, not {to}")),
        Err(err) => Err(err.to_string()),
    }
}

fn subscription_transition(from: Option<&str>, event: &str, to: &str) -> Result<(), String> {
    let to: SubscriptionStatus = parse_status(to)?;
    let Some(from) = from else {
        return if matches!(
            to,
            SubscriptionStatus::Trialing | SubscriptionStatus::Active
        ) {
            Ok(())
        } else {
            Err(format!(
                "a subscription starts TRIALING or ACTIVE, not {to}"
            ))
        };
    };
    let from: SubscriptionStatus = parse_status(from)?;
    let event = SubscriptionEvent::ALL
        .into_iter()
        .find(|e| e.as_str() == event)
        .ok_or_else(|| format!("unknown subscription event `{event}`"))?;
    match from.on(event) {
        Ok(next) if next == to => Ok(()),
        Ok(next) => Err(format!(
            "{} leads {from} to {next}, not {to}",
            event.as_str()
        )),
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;

//! Building what every effect writes besides its state change: the ledger
//! transaction, the state-history rows and the outbox events, all tagged
//! with the same business transaction id so the auditor can check that
//! each effect has all three.
//!
//! The state strings written here are the ones the auditor compares with
//! the current rows (`store::queries`' `audit_data` builds the same forms).

use serde::Serialize;

use super::RequestCtx;
use crate::domain::Transition;
use crate::domain::ledger::LedgerTransaction;
use crate::store::{HistoryEntry, Journal, LedgerEntry, OutboxEntry};

/// Entity types in `state_history` besides the domain's order/subscription.
pub mod entity {
    /// A customer (state: [`super::CUSTOMER_STATE`]).
    pub const CUSTOMER: &str = "customer";
    /// A customer's credit account (state: [`super::credit_account_state`]).
    pub const CREDIT_ACCOUNT: &str = "credit_account";
    /// A credit use (state: [`super::credit_use_state`]).
    pub const CREDIT_USE: &str = "credit_use";
    /// A customer's closed usage period (state: [`super::USAGE_PERIOD_CLOSED`],
    /// one version: a close is final).
    pub const USAGE_PERIOD: &str = "usage_period";
    /// A stored card (state `ACTIVE`, then `REMOVED`).
    pub const PAYMENT_METHOD: &str = "payment_method";
}

/// CloudEvents `type`s emitted by the host.
pub mod event_type {
    /// A customer was created.
    pub const CUSTOMER_CREATED: &str = "customer.created";
    /// A customer's attributes changed.
    pub const CUSTOMER_UPDATED: &str = "customer.updated";
    /// Credits were granted.
    pub const CREDIT_GRANTED: &str = "credit.granted";
    /// Credits were spent on a feature use.
    pub const CREDIT_DEDUCTED: &str = "credit.deducted";
    /// Credits of a use were given back.
    pub const CREDIT_REFUNDED: &str = "credit.refunded";
    /// Unspent credits of a grant lapsed.
    pub const CREDIT_EXPIRED: &str = "credit.expired";
    /// Credits were held for an order's saga.
    pub const CREDIT_RESERVED: &str = "credit.reserved";
    /// Credits an order's saga held were given back (it compensated).
    pub const CREDIT_RELEASED: &str = "credit.released";
    /// An order was created (`PENDING`).
    pub const ORDER_CREATED: &str = "order.created";
    /// An order was cancelled.
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    /// An order's payment was approved: it is paid.
    pub const ORDER_PAID: &str = "order.paid";
    /// A paid order was fulfilled by the tenant's service.
    pub const ORDER_COMPLETED: &str = "order.completed";
    /// A payment was asked of the PG.
    pub const PAYMENT_CREATED: &str = "payment.created";
    /// The PG approved a payment.
    pub const PAYMENT_APPROVED: &str = "payment.approved";
    /// The PG declined a payment, or it failed without taking money.
    pub const PAYMENT_FAILED: &str = "payment.failed";
    /// The PG's answer was lost: the payment's outcome is being resolved.
    pub const PAYMENT_UNKNOWN: &str = "payment.unknown";
    /// An approved payment was voided at the PG.
    pub const PAYMENT_CANCELLED: &str = "payment.cancelled";
    /// The tenant's service fulfilled an order: its saga is capturing the
    /// payment.
    pub const SAGA_COMPLETING: &str = "saga.completing";
    /// An order's saga began undoing what it had done (the service failed
    /// or missed its deadline, or the PG refused the capture).
    pub const SAGA_COMPENSATING: &str = "saga.compensating";
    /// An order's saga undid everything it had done.
    pub const SAGA_COMPENSATED: &str = "saga.compensated";
    /// An order's saga could not undo what it had done: an operator must.
    pub const SAGA_COMPENSATION_FAILED: &str = "saga.compensation_failed";
    /// A customer's card (a PG billing key) was stored.
    pub const PAYMENT_METHOD_ADDED: &str = "payment_method.added";
    /// A stored card was removed.
    pub const PAYMENT_METHOD_REMOVED: &str = "payment_method.removed";
    /// An approved payment was confirmed: its order was fulfilled.
    pub const PAYMENT_CONFIRMED: &str = "payment.confirmed";
    /// Part or all of a confirmed payment was refunded at the PG.
    pub const PAYMENT_REFUNDED: &str = "payment.refunded";
    /// A subscription was created (trialing or active).
    pub const SUBSCRIPTION_CREATED: &str = "subscription.created";
    /// A subscription's trial ended or it recovered: it is active and paid.
    pub const SUBSCRIPTION_ACTIVATED: &str = "subscription.activated";
    /// A subscription moved into its next paid period.
    pub const SUBSCRIPTION_RENEWED: &str = "subscription.renewed";
    /// A renewal could not be paid from credits; the subscription is past due.
    pub const SUBSCRIPTION_PAST_DUE: &str = "subscription.past_due";
    /// A subscription's plan changed (now) or a change was scheduled.
    pub const SUBSCRIPTION_PLAN_CHANGED: &str = "subscription.plan_changed";
    /// A subscription was cancelled now or scheduled to end at period end.
    pub const SUBSCRIPTION_CANCELLED: &str = "subscription.cancelled";
    /// A cancellation scheduled for period end was withdrawn.
    pub const SUBSCRIPTION_RESUMED: &str = "subscription.resumed";
    /// A subscription ran to the end of its last period.
    pub const SUBSCRIPTION_EXPIRED: &str = "subscription.expired";
    /// A customer's metered usage over a period was closed into an order.
    pub const USAGE_PERIOD_CLOSED: &str = "usage.period_closed";
}

/// A customer has no status of its own: every version is `ACTIVE`.
pub const CUSTOMER_STATE: &str = "ACTIVE";

/// A closed usage period's only state.
pub const USAGE_PERIOD_CLOSED: &str = "CLOSED";

/// A credit account's state as history records it.
pub fn credit_account_state(balance: i64, reserved: i64) -> String {
    format!("balance={balance} reserved={reserved}")
}

/// A credit use's state as history records it.
pub fn credit_use_state(refunded: i64) -> String {
    format!("refunded={refunded}")
}

/// CloudEvents `source` of a tenant's events.
pub fn source(tenant: &str) -> String {
    format!("/fluxpay/tenants/{tenant}")
}

/// Collects one effect's journal.
pub struct Recorder<'a> {
    ctx: &'a RequestCtx,
    transaction_id: String,
    now: i64,
    journal: Journal,
}

impl<'a> Recorder<'a> {
    /// A journal for business transaction `transaction_id`.
    pub fn new(ctx: &'a RequestCtx, transaction_id: impl Into<String>, now: i64) -> Self {
        Recorder {
            ctx,
            transaction_id: transaction_id.into(),
            now,
            journal: Journal::default(),
        }
    }

    /// Posts a balanced transaction (built by the domain).
    pub fn ledger(&mut self, customer_id: Option<&str>, transaction: LedgerTransaction) {
        self.journal.ledger.push(LedgerEntry {
            transaction_id: self.transaction_id.clone(),
            customer_id: customer_id.map(str::to_owned),
            request_id: Some(self.ctx.request_id.clone()),
            created_at: self.now,
            transaction,
        });
    }

    /// Records a state change.
    pub fn history(
        &mut self,
        entity_type: &'static str,
        entity_id: &str,
        from_state: Option<String>,
        to_state: String,
        event: &str,
        reason: &str,
    ) {
        self.journal.history.push(HistoryEntry {
            entity_type,
            entity_id: entity_id.to_owned(),
            from_state,
            to_state,
            event: event.to_owned(),
            reason: reason.to_owned(),
            actor: self.ctx.actor.clone(),
            request_id: Some(self.ctx.request_id.clone()),
            transaction_id: self.transaction_id.clone(),
            at: self.now,
        });
    }

    /// Records a domain state-machine step (order, subscription).
    pub fn transition(&mut self, transition: &Transition) {
        self.history(
            transition.entity.as_str(),
            &transition.entity_id,
            transition.from.map(str::to_owned),
            transition.to.to_owned(),
            transition.event,
            &transition.reason,
        );
    }

    /// Records a credit account's balance moving from `balance_before` to
    /// `balance_after`, its reservations unchanged: what every grant, use and
    /// refund writes to history.
    pub fn credit_balance_change(
        &mut self,
        customer_id: &str,
        balance_before: i64,
        balance_after: i64,
        reserved: i64,
        event: &str,
        reason: &str,
    ) {
        self.history(
            entity::CREDIT_ACCOUNT,
            customer_id,
            Some(credit_account_state(balance_before, reserved)),
            credit_account_state(balance_after, reserved),
            event,
            reason,
        );
    }

    /// Emits an event about `subject` (the customer id).
    pub fn event(&mut self, event_type: &'static str, subject: &str, data: &impl Serialize) {
        // Serialising plain structs of strings and integers cannot fail.
        let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".to_owned());
        self.journal.events.push(OutboxEntry {
            event_id: super::new_id("evt"),
            event_type,
            source: source(&self.ctx.tenant),
            subject: subject.to_owned(),
            time: self.now,
            data,
            transaction_id: self.transaction_id.clone(),
            request_id: Some(self.ctx.request_id.clone()),
        });
    }

    /// The collected journal.
    pub fn finish(self) -> Journal {
        self.journal
    }
}

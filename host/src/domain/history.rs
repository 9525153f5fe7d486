//! State-history records: what the store writes as one history row per change.
//!
//! Every state-machine method returns a [`Transition`] next to the new state,
//! so the caller cannot apply a change and forget its history row: the row is
//! part of the return value, written in the same database transaction.

use std::fmt;

/// The kinds of entity that have a state machine (and so a history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// An [`Order`](crate::domain::order::Order).
    Order,
    /// A [`Subscription`](crate::domain::subscription::Subscription).
    Subscription,
    /// A [`Payment`](crate::domain::payment::Payment).
    Payment,
    /// An order's saga ([`crate::domain::saga`]), keyed by the order id.
    Saga,
}

impl EntityKind {
    /// The stable database form.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Order => "order",
            EntityKind::Subscription => "subscription",
            EntityKind::Payment => "payment",
            EntityKind::Saga => "saga",
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change of one entity: the history row minus what only the caller
/// knows (tenant, actor, request id, time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// What kind of entity changed.
    pub entity: EntityKind,
    /// Its id.
    pub entity_id: String,
    /// The status before; `None` when the entity was just created.
    pub from: Option<&'static str>,
    /// The status after. Equal to `from` for changes that keep the status
    /// (a renewal, a plan change, a scheduled cancellation): they are state
    /// changes too, and the history must explain every one.
    pub to: &'static str,
    /// The event that caused it, stable and machine-readable, e.g. `"cancel"`.
    pub event: &'static str,
    /// Why, in the caller's words (e.g. "customer request", "saga timeout").
    pub reason: String,
}

impl Transition {
    /// Whether the status actually changed (creation counts as a change).
    pub fn changes_status(&self) -> bool {
        self.from != Some(self.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transition(from: Option<&'static str>, to: &'static str) -> Transition {
        Transition {
            entity: EntityKind::Order,
            entity_id: "o_1".into(),
            from,
            to,
            event: "x",
            reason: String::new(),
        }
    }

    #[test]
    fn creation_and_status_moves_change_status_but_self_loops_do_not() {
        assert!(transition(None, "PENDING").changes_status());
        assert!(transition(Some("PENDING"), "PAID").changes_status());
        assert!(!transition(Some("ACTIVE"), "ACTIVE").changes_status());
    }

    #[test]
    fn entity_kinds_have_stable_names() {
        assert_eq!(EntityKind::Order.as_str(), "order");
        assert_eq!(EntityKind::Subscription.as_str(), "subscription");
        assert_eq!(EntityKind::Payment.as_str(), "payment");
    }
}

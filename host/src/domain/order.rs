//! Orders: `PENDING → PAID → COMPLETED`, and `PENDING | PAID → CANCELLED`.
//!
//! | from \ event | pay  | complete  | cancel    |
//! |--------------|------|-----------|-----------|
//! | PENDING      | PAID | —         | CANCELLED |
//! | PAID         | —    | COMPLETED | CANCELLED |
//! | COMPLETED    | —    | —         | —         |
//! | CANCELLED    | —    | —         | —         |
//!
//! Every "—" is [`DomainError::IllegalTransition`] (`PAY_004`). Each legal
//! step returns the ledger transaction it implies (see
//! [`LedgerTransaction`]'s order constructors) and the history row.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::{DomainError, Result};
use super::history::{EntityKind, Transition};
use super::id::{CustomerId, OrderId, id_problem};
use super::ledger::LedgerTransaction;
use super::money::{Currency, Money, PositiveMoney};

/// Most items one order may have; bounds request size and policy work.
pub const MAX_ORDER_ITEMS: usize = 100;
/// Most priced lines one order may have (items plus discounts, taxes, …).
pub const MAX_ORDER_LINES: usize = 500;
/// Longest SKU or line code, in bytes.
pub const MAX_CODE_LEN: usize = 128;
/// Longest line description, in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 1_000;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Created, awaiting payment.
    Pending,
    /// Paid, awaiting fulfilment.
    Paid,
    /// Fulfilled. Terminal.
    Completed,
    /// Cancelled before completion. Terminal.
    Cancelled,
}

/// What can happen to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderEvent {
    /// Its payment was taken.
    Pay,
    /// The tenant fulfilled it.
    Complete,
    /// It was called off.
    Cancel,
}

impl OrderStatus {
    /// Every status, for exhaustive checks.
    pub const ALL: [OrderStatus; 4] = [
        OrderStatus::Pending,
        OrderStatus::Paid,
        OrderStatus::Completed,
        OrderStatus::Cancelled,
    ];

    /// The stable database and API form, e.g. `"PENDING"`.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Paid => "PAID",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    /// Whether no event applies any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, OrderStatus::Completed | OrderStatus::Cancelled)
    }

    /// The transition table: the status `event` leads to from `self`.
    pub fn on(self, event: OrderEvent) -> Result<OrderStatus> {
        use OrderEvent as E;
        use OrderStatus as S;
        match (self, event) {
            (S::Pending, E::Pay) => Ok(S::Paid),
            (S::Paid, E::Complete) => Ok(S::Completed),
            (S::Pending | S::Paid, E::Cancel) => Ok(S::Cancelled),
            _ => Err(DomainError::IllegalTransition {
                entity: EntityKind::Order,
                action: event.as_str(),
                from: self.as_str(),
                to: Some(event.target().as_str()),
            }),
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = DomainError;
    fn from_str(value: &str) -> Result<Self> {
        OrderStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or_else(|| DomainError::Invariant(format!("`{value}` is not an order status")))
    }
}

impl OrderEvent {
    /// Every event, for exhaustive checks.
    pub const ALL: [OrderEvent; 3] = [OrderEvent::Pay, OrderEvent::Complete, OrderEvent::Cancel];

    /// The event's stable name, used in errors and history rows.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderEvent::Pay => "pay",
            OrderEvent::Complete => "complete",
            OrderEvent::Cancel => "cancel",
        }
    }

    /// The status the event leads to when it is legal.
    pub fn target(self) -> OrderStatus {
        match self {
            OrderEvent::Pay => OrderStatus::Paid,
            OrderEvent::Complete => OrderStatus::Completed,
            OrderEvent::Cancel => OrderStatus::Cancelled,
        }
    }
}

/// One item as the customer asked for it (the client never sends prices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderItem {
    sku: String,
    quantity: i64,
}

impl OrderItem {
    /// An item: a non-empty SKU of visible ASCII and a positive quantity.
    pub fn new(sku: impl Into<String>, quantity: i64) -> Result<Self> {
        let sku = sku.into();
        if let Some(reason) = id_problem(&sku, MAX_CODE_LEN) {
            return Err(DomainError::invalid("sku", reason));
        }
        if quantity <= 0 {
            return Err(DomainError::invalid(
                "quantity",
                format!("must be positive, got {quantity}"),
            ));
        }
        Ok(OrderItem { sku, quantity })
    }

    /// The tenant's product code.
    pub fn sku(&self) -> &str {
        &self.sku
    }

    /// How many.
    pub fn quantity(&self) -> i64 {
        self.quantity
    }
}

/// One priced line from the tenant's pricing policy. `amount` is the line
/// total and may be negative (a discount); only the order total must be
/// positive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLine {
    code: String,
    description: String,
    quantity: i64,
    amount: Money,
}

impl OrderLine {
    /// A line as the policy quoted it.
    pub fn new(
        code: impl Into<String>,
        description: impl Into<String>,
        quantity: i64,
        amount: Money,
    ) -> Result<Self> {
        let code = code.into();
        let description = description.into();
        if let Some(reason) = id_problem(&code, MAX_CODE_LEN) {
            return Err(DomainError::invalid("line code", reason));
        }
        if description.len() > MAX_DESCRIPTION_LEN {
            return Err(DomainError::invalid("line description", "is too long"));
        }
        if quantity < 0 {
            return Err(DomainError::invalid(
                "line quantity",
                format!("must not be negative, got {quantity}"),
            ));
        }
        Ok(OrderLine {
            code,
            description,
            quantity,
            amount,
        })
    }

    /// Machine-readable code, e.g. `"sku:pro-seat"`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Text for invoices.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Units the line covers.
    pub fn quantity(&self) -> i64 {
        self.quantity
    }

    /// The line total.
    pub fn amount(&self) -> Money {
        self.amount
    }
}

/// The result of creating or moving an order: the new state, its history
/// row and what to post — written together or not at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderChange {
    /// The order after the change.
    pub order: Order,
    /// The history row.
    pub transition: Transition,
    /// The ledger transaction, when the step moves money: paying an order
    /// moves none of its own (the payment's approval and the credits
    /// applied to it settle the bill).
    pub ledger: Option<LedgerTransaction>,
}

/// An order: what was asked for, how the policy priced it, and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    id: OrderId,
    customer: CustomerId,
    items: Vec<OrderItem>,
    lines: Vec<OrderLine>,
    total: PositiveMoney,
    status: OrderStatus,
}

impl Order {
    /// Creates a `PENDING` order. The total is the checked sum of the lines,
    /// all in `currency`, and must be positive: an order that charges
    /// nothing has no payment to wait for.
    pub fn create(
        id: OrderId,
        customer: CustomerId,
        currency: Currency,
        items: Vec<OrderItem>,
        lines: Vec<OrderLine>,
        reason: impl Into<String>,
    ) -> Result<OrderChange> {
        let order = Order::restore(id, customer, currency, items, lines, OrderStatus::Pending)?;
        let transition = order.transition(None, "create", reason.into());
        let ledger = Some(LedgerTransaction::order_created(
            &order.customer,
            order.total,
        ));
        Ok(OrderChange {
            order,
            transition,
            ledger,
        })
    }

    /// Rebuilds an order from stored values, re-checking what `create` checks.
    pub fn restore(
        id: OrderId,
        customer: CustomerId,
        currency: Currency,
        items: Vec<OrderItem>,
        lines: Vec<OrderLine>,
        status: OrderStatus,
    ) -> Result<Self> {
        check_count("items", items.len(), MAX_ORDER_ITEMS)?;
        check_count("line items", lines.len(), MAX_ORDER_LINES)?;
        if let Some(line) = lines.iter().find(|l| l.amount.currency != currency) {
            return Err(DomainError::invalid(
                "line items",
                format!(
                    "line `{}` is in {}, the order is in {currency}",
                    line.code, line.amount.currency
                ),
            ));
        }
        let total = Money::checked_sum(currency, lines.iter().map(|l| l.amount))?;
        let total = PositiveMoney::new(total, "order total")?;
        Ok(Order {
            id,
            customer,
            items,
            lines,
            total,
            status,
        })
    }

    /// Records that the order is paid for: `PENDING → PAID`. The money
    /// moves with the payment ([`LedgerTransaction::payment_approved`]).
    pub fn pay(&self, reason: impl Into<String>) -> Result<OrderChange> {
        self.apply(OrderEvent::Pay, None, reason.into())
    }

    /// Records fulfilment: `PAID → COMPLETED`; the revenue is earned.
    pub fn complete(&self, reason: impl Into<String>) -> Result<OrderChange> {
        let ledger = LedgerTransaction::order_completed(self.total);
        self.apply(OrderEvent::Complete, Some(ledger), reason.into())
    }

    /// Calls the order off: `PENDING | PAID → CANCELLED`; the bill is
    /// withdrawn. A paid order's payment is voided first (the saga's job),
    /// which opens the bill again ([`LedgerTransaction::payment_voided`]).
    pub fn cancel(&self, reason: impl Into<String>) -> Result<OrderChange> {
        let ledger = LedgerTransaction::order_cancelled(&self.customer, self.total);
        self.apply(OrderEvent::Cancel, Some(ledger), reason.into())
    }

    fn apply(
        &self,
        event: OrderEvent,
        ledger: Option<LedgerTransaction>,
        reason: String,
    ) -> Result<OrderChange> {
        let to = self.status.on(event)?;
        let order = Order {
            status: to,
            ..self.clone()
        };
        let transition = order.transition(Some(self.status), event.as_str(), reason);
        Ok(OrderChange {
            order,
            transition,
            ledger,
        })
    }

    fn transition(
        &self,
        from: Option<OrderStatus>,
        event: &'static str,
        reason: String,
    ) -> Transition {
        Transition {
            entity: EntityKind::Order,
            entity_id: self.id.to_string(),
            from: from.map(OrderStatus::as_str),
            to: self.status.as_str(),
            event,
            reason,
        }
    }

    /// The order's id.
    pub fn id(&self) -> &OrderId {
        &self.id
    }

    /// Who ordered.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }

    /// What was asked for.
    pub fn items(&self) -> &[OrderItem] {
        &self.items
    }

    /// How the policy priced it.
    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }

    /// The sum of the lines (always positive).
    pub fn total(&self) -> PositiveMoney {
        self.total
    }

    /// The order's currency.
    pub fn currency(&self) -> Currency {
        self.total.currency()
    }

    /// Where the order is in its life.
    pub fn status(&self) -> OrderStatus {
        self.status
    }
}

fn check_count(field: &'static str, count: usize, max: usize) -> Result<()> {
    if count == 0 {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if count > max {
        return Err(DomainError::invalid(
            field,
            format!("at most {max} allowed, got {count}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "order_tests.rs"]
mod tests;

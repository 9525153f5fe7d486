//! Balanced ledger transactions and one constructor per business movement.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::{LedgerAccount, LedgerError, Unit};
use crate::domain::id::CustomerId;
use crate::domain::money::{PositiveCredits, PositiveMoney};

/// One line of a transaction. `amount` is signed: **positive = debit,
/// negative = credit** (see the module docs of [`super`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Posting {
    /// The account moved.
    pub account: LedgerAccount,
    /// What is counted.
    pub unit: Unit,
    /// Debit (> 0) or credit (< 0); never zero.
    pub amount: i64,
}

impl Posting {
    /// A debit of `amount` (> 0) to `account`.
    fn debit(account: LedgerAccount, unit: Unit, amount: i64) -> Self {
        Posting {
            account,
            unit,
            amount,
        }
    }

    /// A credit of `amount` (> 0) to `account`, stored negated.
    fn credit(account: LedgerAccount, unit: Unit, amount: i64) -> Self {
        Posting {
            account,
            unit,
            amount: -amount,
        }
    }
}

/// Why money or credits moved. Stored with the transaction so the ledger
/// reads as a history of business events, not just numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionKind {
    /// Credits granted to a customer.
    CreditGrant,
    /// Credits spent on a feature use.
    CreditUse,
    /// Credits given back for (part of) an earlier use.
    CreditRefund,
    /// Unused credits of a grant lapsed.
    CreditExpiry,
    /// Credits put on hold for a saga.
    CreditReserve,
    /// A hold let go: credits available again.
    CreditRelease,
    /// A hold turned into a spend.
    CreditCapture,
    /// A subscription period paid from credits.
    SubscriptionCharge,
    /// An order billed to the customer.
    OrderCreated,
    /// A payment approved by the gateway: the customer's bill is paid.
    PaymentApproved,
    /// An approved payment voided before its order completed: the bill is
    /// open again.
    PaymentVoided,
    /// Money given back through the gateway after the order completed.
    PaymentRefunded,
    /// An order fulfilled: its revenue is earned.
    OrderCompleted,
    /// An order cancelled: its billing (and payment, if any) reversed.
    OrderCancelled,
}

impl TransactionKind {
    /// Every kind, for exhaustive checks and parsing.
    pub const ALL: [TransactionKind; 14] = [
        TransactionKind::CreditGrant,
        TransactionKind::CreditUse,
        TransactionKind::CreditRefund,
        TransactionKind::CreditExpiry,
        TransactionKind::CreditReserve,
        TransactionKind::CreditRelease,
        TransactionKind::CreditCapture,
        TransactionKind::SubscriptionCharge,
        TransactionKind::OrderCreated,
        TransactionKind::OrderCompleted,
        TransactionKind::OrderCancelled,
        TransactionKind::PaymentApproved,
        TransactionKind::PaymentVoided,
        TransactionKind::PaymentRefunded,
    ];

    /// The stable database form, e.g. `"credit.use"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionKind::CreditGrant => "credit.grant",
            TransactionKind::CreditUse => "credit.use",
            TransactionKind::CreditRefund => "credit.refund",
            TransactionKind::CreditExpiry => "credit.expire",
            TransactionKind::CreditReserve => "credit.reserve",
            TransactionKind::CreditRelease => "credit.release",
            TransactionKind::CreditCapture => "credit.capture",
            TransactionKind::SubscriptionCharge => "subscription.charge",
            TransactionKind::OrderCreated => "order.created",

            TransactionKind::OrderCompleted => "order.completed",
            TransactionKind::OrderCancelled => "order.cancelled",
            TransactionKind::PaymentApproved => "payment.approved",
            TransactionKind::PaymentVoided => "payment.voided",
            TransactionKind::PaymentRefunded => "payment.refunded",
        }
    }

    /// Reads the database form back.
    pub fn parse(value: &str) -> Result<Self, LedgerError> {
        TransactionKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == value)
            .ok_or_else(|| LedgerError::UnknownKind {
                value: value.to_string(),
            })
    }
}

impl fmt::Display for TransactionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransactionKind {
    type Err = LedgerError;
    fn from_str(value: &str) -> Result<Self, LedgerError> {
        TransactionKind::parse(value)
    }
}

/// A set of postings that balances: at least two, none zero, each in a unit
/// its account holds, and summing to zero per unit. Fields are private so
/// an unbalanced transaction cannot exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerTransaction {
    kind: TransactionKind,
    postings: Vec<Posting>,
}

impl LedgerTransaction {
    /// Validates `postings` as one balanced transaction. The sum is taken in
    /// `i128` with checked adds, so even postings at the `i64` bounds are
    /// judged exactly rather than wrapping into a false balance.
    pub fn new(kind: TransactionKind, postings: Vec<Posting>) -> Result<Self, LedgerError> {
        if postings.len() < 2 {
            return Err(LedgerError::TooFewPostings {
                count: postings.len(),
            });
        }
        let mut sums: BTreeMap<Unit, i128> = BTreeMap::new();
        for posting in &postings {
            if posting.amount == 0 {
                return Err(LedgerError::ZeroAmount {
                    account: posting.account.key(),
                });
            }
            if !posting.account.holds(posting.unit) {
                return Err(LedgerError::UnitNotHeld {
                    account: posting.account.key(),
                    unit: posting.unit,
                });
            }
            let sum = sums.entry(posting.unit).or_default();
            // i128 holds 2^64 postings of i64::MAX; overflow here means a
            // vector larger than memory, but the check costs nothing.
            *sum = sum
                .checked_add(i128::from(posting.amount))
                .ok_or(LedgerError::Unbalanced {
                    unit: posting.unit,
                    sum: i128::MAX,
                })?;
        }
        if let Some((unit, sum)) = sums.into_iter().find(|(_, sum)| *sum != 0) {
            return Err(LedgerError::Unbalanced { unit, sum });
        }
        Ok(LedgerTransaction { kind, postings })
    }

    /// Why the transaction happened.
    pub fn kind(&self) -> TransactionKind {
        self.kind
    }

    /// The postings, in the order the constructor wrote them.
    pub fn postings(&self) -> &[Posting] {
        &self.postings
    }

    /// The postings, for the store to write.
    pub fn into_postings(self) -> Vec<Posting> {
        self.postings
    }

    /// Debit one account and credit another by the same positive amount.
    /// Every movement constructor below is one of these: with `amount > 0`
    /// and both accounts holding `unit`, the result balances by
    /// construction, which each constructor's test re-checks through
    /// [`LedgerTransaction::new`].
    fn transfer(
        kind: TransactionKind,
        debit: LedgerAccount,
        credit: LedgerAccount,
        unit: Unit,
        amount: i64,
    ) -> Self {
        debug_assert!(amount > 0 && debit.holds(unit) && credit.holds(unit));
        LedgerTransaction {
            kind,
            postings: vec![
                Posting::debit(debit, unit, amount),
                Posting::credit(credit, unit, amount),
            ],
        }
    }

    fn credits(
        kind: TransactionKind,
        debit: LedgerAccount,
        credit: LedgerAccount,
        amount: PositiveCredits,
    ) -> Self {
        Self::transfer(kind, debit, credit, Unit::Credits, amount.value())
    }

    fn money(
        kind: TransactionKind,
        debit: LedgerAccount,
        credit: LedgerAccount,
        amount: PositiveMoney,
    ) -> Self {
        Self::transfer(
            kind,
            debit,
            credit,
            Unit::Money(amount.currency()),
            amount.minor(),
        )
    }

    /// Grant: Dr `tenant:credits_issued`, Cr `customer:{id}:credits`.
    pub fn credit_grant(customer: &CustomerId, credits: PositiveCredits) -> Self {
        Self::credits(
            TransactionKind::CreditGrant,
            LedgerAccount::CreditsIssued,
            LedgerAccount::CustomerCredits(customer.clone()),
            credits,
        )
    }

    /// Use: Dr `customer:{id}:credits`, Cr `tenant:credits_consumed`.
    pub fn credit_use(customer: &CustomerId, credits: PositiveCredits) -> Self {
        Self::credits(
            TransactionKind::CreditUse,
            LedgerAccount::CustomerCredits(customer.clone()),
            LedgerAccount::CreditsConsumed,
            credits,
        )
    }

    /// Refund of (part of) a use: Dr `tenant:credits_refunded`, Cr
    /// `customer:{id}:credits`. A contra account rather than a reversal of
    /// `credits_consumed`, so consumption and refunds stay visible apart.
    pub fn credit_refund(customer: &CustomerId, credits: PositiveCredits) -> Self {
        Self::credits(
            TransactionKind::CreditRefund,
            LedgerAccount::CreditsRefunded,
            LedgerAccount::CustomerCredits(customer.clone()),
            credits,
        )
    }

    /// Expiry: Dr `customer:{id}:credits`, Cr `tenant:credits_expired`.
    pub fn credit_expiry(customer: &CustomerId, credits: PositiveCredits) -> Self {
        Self::credits(
            TransactionKind::CreditExpiry,
            LedgerAccount::CustomerCredits(customer.clone()),
            LedgerAccount::CreditsExpired,
            credits,
        )
    }

    /// Reserve: Dr `customer:{id}:credits`, Cr `customer:{id}:credits_reserved`.
    pub fn credit_reserve(customer: &CustomerId, credits: PositiveCredits) -> Self {
        Self::credits(
            TransactionKind::CreditReserve,
            LedgerAccount::CustomerCredits(customer.clone()),
            LedgerAccount::CustomerReservedCredits(customer.clone()),
            credits,
        )
    }

    /// Release: Dr `customer:{id}:credits_reserved`, Cr `customer:{id}:credits`.
    pub fn credit_release(customer: &CustomerId, credits: PositiveCredits) -> Self {
        Self::credits(
            TransactionKind::CreditRelease,
            LedgerAccount::CustomerReservedCredits(customer.clone()),
            LedgerAccount::CustomerCredits(customer.clone()),
            credits,
        )
    }

    /// Capture: Dr `customer:{id}:credits_reserved`, Cr `tenant:credits_consumed`.
    pub fn credit_capture(customer: &CustomerId, credits: PositiveCredits) -> Self {
        Self::credits(
            TransactionKind::CreditCapture,
            LedgerAccount::CustomerReservedCredits(customer.clone()),
            LedgerAccount::CreditsConsumed,
            credits,
        )
    }

    /// Credits reserved to pay (part of) an order's bill: the credits held
    /// (Dr `customer:{id}:credits`, Cr `customer:{id}:credits_reserved`)
    /// and the bill settled by their money value (Dr
    /// `tenant:credit_redemptions`, Cr `customer:{id}:receivable`), one
    /// transaction balanced per unit. Captured by [`Self::credit_capture`]
    /// (the money side stays: the bill was paid in credits).
    pub fn order_credits_reserved(
        customer: &CustomerId,
        credits: PositiveCredits,
        value: PositiveMoney,
    ) -> Self {
        let mut tx = Self::credit_reserve(customer, credits);
        tx.postings.extend(
            Self::money(
                TransactionKind::CreditReserve,
                LedgerAccount::CreditRedemptions,
                LedgerAccount::CustomerReceivable(customer.clone()),
                value,
            )
            .postings,
        );
        tx
    }

    /// An order's reserved credits released (its saga compensated): the
    /// exact reverse of [`Self::order_credits_reserved`], so the bill is
    /// open again for the order's cancellation or another payment.
    pub fn order_credits_released(
        customer: &CustomerId,
        credits: PositiveCredits,
        value: PositiveMoney,
    ) -> Self {
        let mut tx = Self::credit_release(customer, credits);
        tx.postings.extend(
            Self::money(
                TransactionKind::CreditRelease,
                LedgerAccount::CustomerReceivable(customer.clone()),
                LedgerAccount::CreditRedemptions,
                value,
            )
            .postings,
        );
        tx
    }

    /// Subscription period paid from credits: Dr `customer:{id}:credits`,
    /// Cr `tenant:credits_consumed` (the kind tells it apart from a use).
    pub fn subscription_charge(customer: &CustomerId, credits: PositiveCredits) -> Self {
        Self::credits(
            TransactionKind::SubscriptionCharge,
            LedgerAccount::CustomerCredits(customer.clone()),
            LedgerAccount::CreditsConsumed,
            credits,
        )
    }

    /// Order created: Dr `customer:{id}:receivable`, Cr `tenant:deferred_revenue`.
    pub fn order_created(customer: &CustomerId, total: PositiveMoney) -> Self {
        Self::money(
            TransactionKind::OrderCreated,
            LedgerAccount::CustomerReceivable(customer.clone()),
            LedgerAccount::DeferredRevenue,
            total,
        )
    }

    /// Order completed: Dr `tenant:deferred_revenue`, Cr `tenant:revenue`.
    pub fn order_completed(total: PositiveMoney) -> Self {
        Self::money(
            TransactionKind::OrderCompleted,
            LedgerAccount::DeferredRevenue,
            LedgerAccount::Revenue,
            total,
        )
    }

    /// Order cancelled — the bill is withdrawn: Dr
    /// `tenant:deferred_revenue`, Cr `customer:{id}:receivable`. A paid
    /// order's payments are voided first ([`Self::payment_voided`]), which
    /// opens the bill again, so this one posting fits every cancellation.
    pub fn order_cancelled(customer: &CustomerId, total: PositiveMoney) -> Self {
        Self::money(
            TransactionKind::OrderCancelled,
            LedgerAccount::DeferredRevenue,
            LedgerAccount::CustomerReceivable(customer.clone()),
            total,
        )
    }

    /// Payment approved by the gateway — the customer's bill is paid and
    /// the gateway owes the money: Dr `tenant:payments_clearing`, Cr
    /// `customer:{id}:receivable`.
    pub fn payment_approved(customer: &CustomerId, amount: PositiveMoney) -> Self {
        Self::money(
            TransactionKind::PaymentApproved,
            LedgerAccount::PaymentsClearing,
            LedgerAccount::CustomerReceivable(customer.clone()),
            amount,
        )
    }

    /// Approved payment voided — the gateway releases the money and the
    /// bill is open again: Dr `customer:{id}:receivable`, Cr
    /// `tenant:payments_clearing`.
    pub fn payment_voided(customer: &CustomerId, amount: PositiveMoney) -> Self {
        Self::money(
            TransactionKind::PaymentVoided,
            LedgerAccount::CustomerReceivable(customer.clone()),
            LedgerAccount::PaymentsClearing,
            amount,
        )
    }

    /// Confirmed payment refunded (in part or whole) after its order
    /// completed: Dr `tenant:refunds`, Cr `tenant:payments_clearing`.
    pub fn payment_refunded(amount: PositiveMoney) -> Self {
        Self::money(
            TransactionKind::PaymentRefunded,
            LedgerAccount::Refunds,
            LedgerAccount::PaymentsClearing,
            amount,
        )
    }
}

#[cfg(test)]
#[path = "transaction_tests.rs"]
mod tests;

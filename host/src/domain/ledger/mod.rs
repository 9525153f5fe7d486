//! Double-entry ledger: the chart of accounts and balanced transactions.
//!
//! # Sign convention
//! A [`Posting`]'s `amount` is signed: **positive = debit, negative =
//! credit**. Every transaction's postings sum to zero per [`Unit`], which is
//! "debits equal credits" in one check. An account's *balance* is the sum of
//! its postings seen from its normal side ([`NormalBalance`]): debit-normal
//! accounts (assets, the credits-issued counter, refunds) show the sum as is;
//! credit-normal accounts (what the tenant owes customers, revenue) show its
//! negation. So a customer holding 70 credits has postings summing to −70 on
//! `customer:{id}:credits`, and [`LedgerAccount::balance_of`] turns that into 70.
//!
//! Accounts carry no tenant: every ledger row has a `tenant_id` column, so
//! each tenant has its own copy of the chart. Money accounts carry no
//! currency: balances are per (account, unit), so `tenant:revenue` in USD and
//! in EUR are separate balances of the same account.

mod account;
mod transaction;

pub use account::{AccountUnit, LedgerAccount, NormalBalance, Unit};
pub use transaction::{LedgerTransaction, Posting, TransactionKind};

/// A ledger rule broken, or ledger data that does not parse. The host builds
/// every transaction and writes every row, so all of these are our bugs or
/// corrupt data (`SYS_001`), never the client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// Fewer than two postings: nothing moves from one account to another.
    #[error("a ledger transaction needs at least two postings, got {count}")]
    TooFewPostings {
        /// Postings given.
        count: usize,
    },
    /// A zero posting records nothing and hides mistakes.
    #[error("posting to {account} has a zero amount")]
    ZeroAmount {
        /// The account's key.
        account: String,
    },
    /// Credits posted to a money account or money to a credits account.
    #[error("account {account} does not hold {unit}")]
    UnitNotHeld {
        /// The account's key.
        account: String,
        /// The unit posted.
        unit: Unit,
    },
    /// Debits and credits differ for a unit.
    #[error("postings in {unit} sum to {sum}, not zero")]
    Unbalanced {
        /// The unit that does not balance.
        unit: Unit,
        /// The signed sum of its postings.
        sum: i128,
    },
    /// An account key read back from storage that names no account.
    #[error("`{key}` is not a ledger account")]
    UnknownAccount {
        /// The key as stored.
        key: String,
    },
    /// A unit read back from storage that is neither `CREDITS` nor a currency.
    #[error("`{value}` is not a ledger unit")]
    UnknownUnit {
        /// The value as stored.
        value: String,
    },
    /// A transaction kind read back from storage that we do not know.
    #[error("`{value}` is not a ledger transaction kind")]
    UnknownKind {
        /// The value as stored.
        value: String,
    },
}

//! What crosses the store boundary: plain Rust records (no sqlx types), the
//! inputs of each write, and the [`Journal`] every effect writes with it.
//!
//! Ids and amounts are plain `String`/`i64` here: the app layer validated
//! them through the domain before they got this far, and rows read back are
//! turned into domain types by whoever needs the rules.

use crate::domain::ledger::LedgerTransaction;

// ── Records read back ──────────────────────────────────────────────────────

/// A customer row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CustomerRecord {
    /// The tenant's id for the customer.
    pub customer_id: String,
    /// JSON object of string → string, as written.
    pub attributes: String,
    /// +1 per change.
    pub version: i64,
    /// Created (ms since the epoch).
    pub created_at: i64,
    /// Last changed (ms since the epoch).
    pub updated_at: i64,
}

/// A customer's credit account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CreditAccountRecord {
    /// Whose account.
    pub customer_id: String,
    /// All credits held, reserved ones included.
    pub balance: i64,
    /// Credits on hold for sagas.
    pub reserved: i64,
    /// Σ remaining of the grants that expire.
    pub expiring: i64,
    /// UTC day (days since the epoch) `spent_today` counts.
    pub spent_day: i64,
    /// Credits used on `spent_day`.
    pub spent_today: i64,
    /// +1 per change.
    pub version: i64,
    /// Last changed (ms since the epoch).
    pub updated_at: i64,
}

impl CreditAccountRecord {
    /// Credits spendable now.
    pub fn available(&self) -> i64 {
        self.balance - self.reserved
    }

    /// Credits used on UTC day `day` (0 when the counter is for another day).
    pub fn spent_on(&self, day: i64) -> i64 {
        if self.spent_day == day {
            self.spent_today
        } else {
            0
        }
    }
}

/// A debit of credits, as refunds need it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CreditUseRecord {
    /// The use's id (its ledger transaction id).
    pub use_id: String,
    /// Whose credits were spent.
    pub customer_id: String,
    /// `use` or `subscription_charge`.
    pub kind: String,
    /// Credits charged.
    pub charged: i64,
    /// Credits refunded so far.
    pub refunded: i64,
}

/// One line of a customer's credit statement (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditTransactionRecord {
    /// Position, for the cursor.
    pub seq: i64,
    /// The ledger transaction id.
    pub transaction_id: String,
    /// What happened.
    pub entry: CreditEntry,
    /// The customer's balance right after it.
    pub balance_after: i64,
    /// When (ms since the epoch).
    pub created_at: i64,
}

/// The kind-specific part of a [`CreditTransactionRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditEntry {
    /// Credits granted.
    Grant {
        /// Credits added.
        credits: i64,
        /// Why.
        reason: String,
        /// When they lapse.
        expires_at: Option<i64>,
    },
    /// Credits spent.
    Use {
        /// Credits charged.
        charged: i64,
        /// Credits refunded since.
        refunded: i64,
        /// The feature used.
        feature: Option<String>,
        /// Units used.
        units: Option<i64>,
    },
    /// Credits given back.
    Refund {
        /// Credits added back.
        credits: i64,
        /// The use refunded.
        use_id: String,
        /// Why.
        reason: String,
    },
    /// Unspent credits of a grant lapsed.
    Expiry {
        /// Credits that left the balance.
        credits: i64,
        /// The grant that expired.
        grant_id: String,
    },
}

/// One outbox event as the feed serves it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventRecord {
    /// The event's position in the tenant feed (the cursor).
    pub feed_seq: i64,
    /// CloudEvents `id`.
    pub event_id: String,
    /// CloudEvents `type`, e.g. `credit.deducted`.
    #[sqlx(rename = "type")]
    pub event_type: String,
    /// CloudEvents `source`.
    pub source: String,
    /// CloudEvents `subject` (the customer id).
    pub subject: String,
    /// CloudEvents `time` (ms since the epoch).
    pub time: i64,
    /// The `data` JSON, as written.
    pub data: String,
    /// The business transaction that emitted it.
    pub transaction_id: String,
    /// The request that caused it (`None` for events stored before the
    /// request id was).
    pub request_id: Option<String>,
}

/// A stored idempotent response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

// ── Inputs of writes ───────────────────────────────────────────────────────

/// The first statement of an idempotent command's transaction.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// sha256 of method, path and body (hex).
    pub fingerprint: String,
    /// When (ms since the epoch).
    pub now: i64,
}

/// What [`super::TxOps::claim_idempotency`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is ours: go on and complete it in this transaction.
    Claimed,
    /// The key was used before (by a transaction that has committed).
    Taken {
        /// The fingerprint of the request that used it.
        fingerprint: String,
        /// Its response; `None` only if a row was left incomplete (which
        /// the write path never does).
        response: Option<StoredResponse>,
    },
}

impl Claim {
    /// A key found taken, from its stored row (the status and body are
    /// both set once the row is completed).
    pub(crate) fn taken(fingerprint: String, status: Option<i32>, body: Option<Vec<u8>>) -> Claim {
        Claim::Taken {
            fingerprint,
            response: match (status, body) {
                (Some(status), Some(body)) => Some(StoredResponse {
                    status: u16::try_from(status).unwrap_or(500),
                    body,
                }),
                _ => None,
            },
        }
    }
}

/// What an upsert of a customer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerUpsert {
    /// A new customer (and its empty credit account).
    Created(CustomerRecord),
    /// Attributes changed.
    Updated(CustomerRecord),
    /// Same attributes: nothing written.
    Unchanged(CustomerRecord),
}

/// Credits to grant.
#[derive(Debug, Clone)]
pub struct GrantCredits {
    /// The grant's id = its ledger transaction id.
    pub grant_id: String,
    /// The customer.
    pub customer_id: String,
    /// Credits (> 0).
    pub credits: i64,
    /// When they lapse, if ever.
    pub expires_at: Option<i64>,
    /// Why.
    pub reason: String,
    /// When (ms since the epoch).
    pub now: i64,
}

/// Credits to debit for a feature use.
#[derive(Debug, Clone)]
pub struct DebitCredits {
    /// The use's id = its ledger transaction id.
    pub use_id: String,
    /// The customer.
    pub customer_id: String,
    /// Credits (> 0).
    pub credits: i64,
    /// A feature use, or a subscription's charge paid from credits.
    pub kind: crate::domain::credit::CreditUseKind,
    /// The feature used (a subscription charge: `subscription:<plan>`).
    pub feature: String,
    /// Units used.
    pub units: i64,
    /// The request's metadata (JSON object).
    pub metadata: String,
    /// The quote that priced it (JSON).
    pub quote: String,
    /// Policy name that priced it.
    pub policy: String,
    /// Its content hash.
    pub policy_hash: String,
    /// When (ms since the epoch); also picks the UTC day of `spent_today`.
    pub now: i64,
    /// How many of `credits` come out of the customer's reserved credits:
    /// all of them for a saga's capture of its reservation, none for a use
    /// (which may spend only what is available).
    pub from_reserved: i64,
}

/// A refund of (part of) a use.
#[derive(Debug, Clone)]
pub struct RefundCredits {
    /// The refund's id = its ledger transaction id.
    pub refund_id: String,
    /// The use refunded.
    pub use_id: String,
    /// The customer.
    pub customer_id: String,
    /// Credits (> 0).
    pub credits: i64,
    /// Why.
    pub reason: String,
    /// When (ms since the epoch).
    pub now: i64,
}

/// A credit account right after a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountAfter {
    /// Balance after.
    pub balance: i64,
    /// Reserved after.
    pub reserved: i64,
    /// Credits used today after (debits only; otherwise unchanged).
    pub spent_today: i64,
    /// Version after.
    pub version: i64,
}

/// What a guarded debit did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DebitOutcome {
    /// Debited; the row stays locked until the transaction ends.
    Debited(AccountAfter),
    /// Available credits do not cover it; nothing changed.
    Insufficient(CreditAccountRecord),
    /// No such customer.
    NoAccount,
}

/// What a refund did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// Refunded.
    Refunded {
        /// The account after.
        account: AccountAfter,
        /// Total refunded on the use after this refund.
        refunded: i64,
    },
    /// The use has less than that left to refund (a concurrent refund won).
    ExceedsRemaining {
        /// What is left.
        remaining: i64,
    },
    /// Adding the credits back would overflow the balance.
    Overflow,
}

/// What a grant did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantOutcome {
    /// Granted.
    Granted(AccountAfter),
    /// No such customer.
    NoAccount,
    /// The balance would not fit in 64 bits.
    Overflow,
}

// ── The journal: what every effect writes with its state change ───────────

/// The rows every effect writes in its transaction besides the state change
/// itself: ledger transactions, state-history rows and outbox events. A
/// transaction buffers them and writes them at commit in as few round trips
/// as the backend allows (one statement on PostgreSQL).
#[derive(Debug, Clone, Default)]
pub struct Journal {
    /// Balanced ledger transactions.
    pub ledger: Vec<LedgerEntry>,
    /// State changes.
    pub history: Vec<HistoryEntry>,
    /// Events for the outbox.
    pub events: Vec<OutboxEntry>,
}

impl Journal {
    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.ledger.is_empty() && self.history.is_empty() && self.events.is_empty()
    }

    /// Appends `other`.
    pub fn extend(&mut self, other: Journal) {
        self.ledger.extend(other.ledger);
        self.history.extend(other.history);
        self.events.extend(other.events);
    }
}

/// A ledger transaction and what identifies it.
#[derive(Debug, Clone)]
pub struct LedgerEntry {
    /// The business transaction id.
    pub transaction_id: String,
    /// The customer it concerns, if one.
    pub customer_id: Option<String>,
    /// The API request that caused it.
    pub request_id: Option<String>,
    /// When (ms since the epoch).
    pub created_at: i64,
    /// The balanced postings (built by the domain).
    pub transaction: LedgerTransaction,
}

/// A state-history row.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// `customer`, `credit_account`, `credit_use`, `order`, `subscription`.
    pub entity_type: &'static str,
    /// The entity's id.
    pub entity_id: String,
    /// State before (`None` when created).
    pub from_state: Option<String>,
    /// State after.
    pub to_state: String,
    /// What happened, e.g. `use`, `grant`, `cancel`.
    pub event: String,
    /// Why, in the caller's words.
    pub reason: String,
    /// Who: `api_key:<id>`, `scheduler`, …
    pub actor: String,
    /// The API request, if any.
    pub request_id: Option<String>,
    /// The business transaction it belongs to.
    pub transaction_id: String,
    /// When (ms since the epoch).
    pub at: i64,
}

/// An outbox row (CloudEvents 1.0 attributes).
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    /// `id`: unique per tenant, stable for consumer dedup.
    pub event_id: String,
    /// `type`, e.g. `credit.deducted`.
    pub event_type: &'static str,
    /// `source`.
    pub source: String,
    /// `subject`: the customer id (also the partition key).
    pub subject: String,
    /// `time` (ms since the epoch).
    pub time: i64,
    /// `data` as JSON text.
    pub data: String,
    /// The business transaction it belongs to.
    pub transaction_id: String,
    /// The request that caused it.
    pub request_id: Option<String>,
}

// ── Audit ──────────────────────────────────────────────────────────────────

/// The balance of one ledger account in one unit: Σ of its postings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSum {
    /// The account key as stored.
    pub account: String,
    /// The unit as stored.
    pub unit: String,
    /// Σ amount (debit-positive), exact.
    pub sum: i128,
}

/// A ledger transaction that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionProblem {
    /// The transaction.
    pub transaction_id: String,
    /// What is wrong.
    pub problem: String,
}

impl TransactionProblem {
    /// Rows of (transaction id, problem), as a check query returns them.
    pub fn from_rows(rows: Vec<(String, String)>) -> Vec<TransactionProblem> {
        rows.into_iter()
            .map(|(transaction_id, problem)| TransactionProblem {
                transaction_id,
                problem,
            })
            .collect()
    }
}

/// One state-history row, for the chain checks.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HistoryRecord {
    /// Row id (history order).
    pub id: i64,
    /// Entity type.
    pub entity_type: String,
    /// Entity id.
    pub entity_id: String,
    /// State before.
    pub from_state: Option<String>,
    /// State after.
    pub to_state: String,
    /// Event name.
    pub event: String,
    /// Business transaction.
    pub transaction_id: String,
}

/// An entity's current state, for the chain checks.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EntityState {
    /// Entity type.
    pub entity_type: String,
    /// Entity id.
    pub entity_id: String,
    /// Current state as history writes it.
    pub state: String,
    /// Number of changes so far.
    pub version: i64,
}

/// Everything the auditor reads about one tenant, gathered by aggregate
/// queries (no full copy of the ledger).
#[derive(Debug, Clone, Default)]
pub struct AuditData {
    /// Σ postings per (account, unit).
    pub account_sums: Vec<AccountSum>,
    /// Transactions with < 2 postings, a zero posting, or a unit that does
    /// not sum to zero.
    pub transaction_problems: Vec<TransactionProblem>,
    /// Every credit account.
    pub credit_accounts: Vec<CreditAccountRecord>,
    /// Σ remaining of expiring grants, per customer.
    pub expiring_sums: Vec<(String, i64)>,
    /// Credit detail rows that disagree with their ledger transaction, or
    /// uses whose refunded total disagrees with their refunds.
    pub credit_problems: Vec<TransactionProblem>,
    /// Ledger transactions without a history row or without exactly one
    /// outbox event; history without events; events without history.
    pub link_problems: Vec<TransactionProblem>,
    /// Events the feed would not serve exactly once: without a position
    /// (and, on PostgreSQL, not queued for one), with two positions, or
    /// positions without their event.
    pub feed_problems: Vec<TransactionProblem>,
    /// Orders whose money or saga disagree with their status (by order id).
    pub saga_problems: Vec<TransactionProblem>,
    /// Current state of every entity that has a history.
    pub entities: Vec<EntityState>,
    /// State history, ordered by entity then row id.
    pub history: Vec<HistoryRecord>,
}

//! Use cases: one function per command. Each opens its transaction, calls
//! the tenant's policies, applies the domain's rules and writes the state
//! change with its ledger postings, history rows, outbox events and
//! idempotent response — or nothing.
//!
//! The pattern every money-moving command follows (see [`credits`] for the
//! reference implementation):
//!
//! 1. validate the input into domain types (`REQ_001`, nothing written);
//! 2. price and validate with the tenant's policies, outside any
//!    transaction;
//! 3. `store.begin(tenant)`, then [`idempotency::claim`] as the first
//!    statement (a duplicate replays or conflicts here);
//! 4. the guarded state change (`UPDATE … WHERE <rule> RETURNING`), which
//!    also locks the row;
//! 5. no policy runs here: a verdict that depends on stored state
//!    (balance, spend, usage totals) is reached before the transaction on
//!    a snapshot, and the transaction checks that the locked values are
//!    still the snapshot's; if not, it is left, the policy runs on the new
//!    values and the command tries again, a bounded number of times
//!    (`SYS_006` after that). Debug builds fail any policy call made while
//!    a write transaction is open (`store::write_transaction_open`);
//! 6. `tx.record(journal)` — ledger postings from the domain's constructors,
//!    history rows and outbox events from [`journal`];
//! 7. render the response *inside* the transaction and `tx.commit(response)`,
//!    so a retry gets exactly those bytes.
//!
//! Any error before the commit drops the transaction: nothing is written.
//!
//! `credits/use`, the hot path, runs steps 3–7 as a write job instead
//! ([`crate::store::Store::write`]): a closure given the transaction, which
//! ends with [`crate::store::Finish`] (commit with the response, or discard
//! for a replay) or an error that undoes it. On SQLite the job runs on the
//! writer's own thread with the rest of its group, and every answer, an
//! error included, waits for the group's `COMMIT`.

pub mod audit;
pub mod credits;
mod customer_locks;
pub mod customers;
mod error;
pub mod events;
pub mod idempotency;
pub mod journal;
pub mod orders;
pub mod payments;
mod policy;
pub mod saga;
mod saga_credits;
pub mod subscriptions;
mod tenants;
pub mod usage;

use std::sync::Arc;

pub use error::{AppError, PolicyFault, PolicyRef, PolicyViolation, Result};
pub use tenants::{Authenticated, TenantDirectory, TenantSettings};

use crate::policy::registry::Registry;
use crate::store::{Store, StoredResponse};

/// Milliseconds since the epoch; replaceable in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    })
}

/// What every use case shares: the store, the policy registry, the tenants
/// and the clock. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    registry: Arc<Registry>,
    tenants: TenantDirectory,
    clock: Clock,
    customer_locks: customer_locks::CustomerLocks,
    /// The tenants' payment gateways ([`payments`]).
    gateways: arc_swap::ArcSwap<payments::Gateways>,
    /// Their payment settings.
    payment_settings:
        arc_swap::ArcSwap<std::collections::BTreeMap<String, payments::PaymentSettings>>,
}

impl App {
    /// Assembles the use cases.
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        tenants: TenantDirectory,
        clock: Clock,
    ) -> Self {
        App {
            inner: Arc::new(Inner {
                store,
                registry,
                tenants,
                clock,
                customer_locks: Default::default(),
                gateways: Default::default(),
                payment_settings: Default::default(),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The policy registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// The tenants the API serves.
    pub fn tenants(&self) -> &TenantDirectory {
        &self.inner.tenants
    }

    /// Per-customer locks for decisions taken on a snapshot
    /// ([`customer_locks`]).
    fn customer_locks(&self) -> &customer_locks::CustomerLocks {
        &self.inner.customer_locks
    }

    /// Now, in ms since the epoch.
    pub fn now(&self) -> i64 {
        (self.inner.clock)()
    }
}

/// Who is asking, and on which request: what every command records.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// The authenticated tenant.
    pub tenant: String,
    /// Who acts, as history records it: `api_key:<key id>`.
    pub actor: String,
    /// The request's id (`X-Request-Id`, or generated).
    pub request_id: String,
    /// The request's idempotency key and fingerprint, when it sent one.
    pub idempotency: Option<idempotency::Idempotency>,
}

impl RequestCtx {
    /// The context of work the host does by itself (schedulers, recovery):
    /// `actor` as history records it, a fresh request id, no idempotency
    /// key.
    pub fn system(tenant: &str, actor: &str) -> Self {
        RequestCtx {
            tenant: tenant.to_owned(),
            actor: actor.to_owned(),
            request_id: new_id("req"),
            idempotency: None,
        }
    }
}

/// The render of a command no client waits for: the host's own work keeps
/// no answer.
pub(crate) fn unanswered<T>(_: &T) -> StoredResponse {
    StoredResponse {
        status: 200,
        body: Vec::new(),
    }
}

/// A command's answer: the response as it was (or is now) stored.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status and body bytes.
    pub response: StoredResponse,
    /// Whether this is the stored answer of an earlier request.
    pub replayed: bool,
}

/// A fresh id: `<prefix>_<uuid v7>`. Time-ordered, so ids inserted together
/// sit together in indexes.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

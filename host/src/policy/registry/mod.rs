//! The tenant → policy registry: an immutable [`Snapshot`] behind an
//! `ArcSwap`. Readers take [`Registry::snapshot`] (one atomic load) and
//! finish on that version even if a reload swaps in another meanwhile.
//! Writers (reload, rollback) are serialised by [`Registry::writer`] and
//! publish a whole new snapshot at once.
//!
//! Every binding carries a per-binding version that moves only when what the
//! binding does changes (module hash, config, limits), and the snapshot keeps
//! the last [`KEPT_VERSIONS`] versions of each binding in memory for rollback
//! and audit.
//!
//! Rollback rule: rolling a binding back records the definition the file
//! had at that moment (its *pin*). A later reload keeps the rolled-back
//! version as long as the file still defines the binding exactly as pinned
//! (same module hash, config and limits); once the file's definition of that
//! binding changes, the reload loads the new definition and the pin is gone.

mod binding;
mod writer;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

pub use binding::{Binding, BindingStats, CallContext, StatsSnapshot};
pub use writer::{
    BindingChange, Change, CommitReport, Decision, Entry, EntryAction, RegistryWriter,
    RollbackError, RollbackReport,
};

use super::{Limits, types};
use crate::config::PricingKind;

/// How many versions of each binding stay in memory.
pub const KEPT_VERSIONS: usize = 10;

/// Identifies a binding across versions: tenant id and policy name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BindingKey {
    /// The tenant.
    pub tenant: String,
    /// The pricing kind or validation name.
    pub name: String,
}

impl BindingKey {
    /// Key of `name` under `tenant`.
    pub fn new(tenant: impl Into<String>, name: impl Into<String>) -> Self {
        BindingKey {
            tenant: tenant.into(),
            name: name.into(),
        }
    }
}

/// What a binding does: two bindings with the same definition answer the
/// same way, whatever file path the module was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// sha256 of the module bytes.
    pub content_hash: String,
    /// The `config:` block as JSON.
    pub config_json: String,
    /// Effective limits.
    pub limits: Limits,
}

/// The registry: the current snapshot and the lock that serialises writers.
pub struct Registry {
    current: ArcSwap<Snapshot>,
    write_lock: Mutex<()>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// An empty registry (version 0: nothing loaded yet).
    pub fn new() -> Self {
        Registry {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            write_lock: Mutex::new(()),
        }
    }

    /// The version to serve a request from. Hold it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Exclusive access for a reload or rollback. Blocks while another
    /// writer works (reloads can take seconds: they compile).
    pub fn writer(&self) -> RegistryWriter<'_> {
        // A writer that panicked left no half-built state behind (snapshots
        // are immutable), so a poisoned lock is safe to take over.
        let guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        RegistryWriter {
            registry: self,
            _guard: guard,
            base: self.current.load_full(),
        }
    }
}

/// One consistent version of every tenant's policies. Immutable.
#[derive(Debug)]
pub struct Snapshot {
    version: u64,
    created_at_ms: i64,
    tenants: BTreeMap<String, TenantPolicies>,
    histories: BTreeMap<BindingKey, Arc<History>>,
}

impl Snapshot {
    fn empty() -> Self {
        Snapshot {
            version: 0,
            created_at_ms: now_ms(),
            tenants: BTreeMap::new(),
            histories: BTreeMap::new(),
        }
    }

    /// Increases by one with every swap; 0 until the first load.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When this snapshot was published (ms since the epoch).
    pub fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }

    /// A tenant's policies.
    pub fn tenant(&self, tenant: &str) -> Option<&TenantPolicies> {
        self.tenants.get(tenant)
    }

    /// All tenants, by id.
    pub fn tenants(&self) -> impl Iterator<Item = (&str, &TenantPolicies)> {
        self.tenants.iter().map(|(id, t)| (id.as_str(), t))
    }

    /// The binding serving `name` for `tenant`.
    pub fn binding(&self, tenant: &str, name: &str) -> Option<&Arc<Binding>> {
        self.tenant(tenant)?.get(name)
    }

    /// The kept versions of a binding (oldest first), whether or not it is
    /// still bound.
    pub fn history(&self, tenant: &str, name: &str) -> &[Arc<Binding>] {
        self.histories
            .get(&BindingKey::new(tenant, name))
            .map_or(&[], |h| h.versions.as_slice())
    }

    /// Whether the binding serves a rolled-back version the file does not
    /// define any more.
    pub fn is_rolled_back(&self, tenant: &str, name: &str) -> bool {
        self.histories
            .get(&BindingKey::new(tenant, name))
            .is_some_and(|h| h.pin.is_some())
    }
}

/// A tenant's bound policies.
#[derive(Debug, Clone, Default)]
pub struct TenantPolicies {
    pricing: BTreeMap<PricingKind, Arc<Binding>>,
    validation: Vec<Arc<Binding>>,
}

impl TenantPolicies {
    /// The pricing policy for one kind of request.
    pub fn pricing(&self, kind: PricingKind) -> Option<&Arc<Binding>> {
        self.pricing.get(&kind)
    }

    /// The pricing policy that prices `request`.
    pub fn pricing_for(&self, request: &types::PricingRequest) -> Option<&Arc<Binding>> {
        self.pricing(pricing_kind_of(request))
    }

    /// Pricing policies, by kind.
    pub fn pricing_bindings(&self) -> impl Iterator<Item = &Arc<Binding>> {
        self.pricing.values()
    }

    /// Validation policies, in the order they run.
    pub fn validation(&self) -> &[Arc<Binding>] {
        &self.validation
    }

    /// A binding by name (pricing kind or validation name).
    pub fn get(&self, name: &str) -> Option<&Arc<Binding>> {
        self.bindings().find(|b| b.name == name)
    }

    /// Pricing bindings, then validation bindings.
    pub fn bindings(&self) -> impl Iterator<Item = &Arc<Binding>> {
        self.pricing.values().chain(self.validation.iter())
    }
}

/// The kind of pricing binding that prices a request.
pub fn pricing_kind_of(request: &types::PricingRequest) -> PricingKind {
    match request {
        types::PricingRequest::CreditUsage(_) => PricingKind::Credit,
        types::PricingRequest::Subscription(_) => PricingKind::Subscription,
        types::PricingRequest::Metered(_) => PricingKind::Metered,
        types::PricingRequest::Order(_) => PricingKind::Order,
    }
}

/// The kept versions of one binding and its rollback pin.
#[derive(Debug, Clone, Default)]
struct History {
    /// Oldest first, at most [`KEPT_VERSIONS`].
    versions: Vec<Arc<Binding>>,
    /// The number the next new version gets.
    next_version: u64,
    /// Set by a rollback: the file's definition at that moment.
    pin: Option<Definition>,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

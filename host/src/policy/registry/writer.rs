//! Writing the registry: reload commits and rollbacks, one at a time.

use std::collections::BTreeMap;
use std::sync::{Arc, MutexGuard};

use serde::Serialize;

use super::{
    Binding, BindingKey, Definition, History, KEPT_VERSIONS, Registry, Snapshot, TenantPolicies,
    now_ms,
};
use crate::config::{BindingConfig, BindingRole};
use crate::policy::{LoadedPolicy, PolicyKind};

/// What the writer decided for one binding of a new configuration.
#[derive(Debug)]
pub enum Decision {
    /// Serve this existing binding (unchanged, or kept rolled back).
    Keep(Arc<Binding>),
    /// The definition is new: load the module and self-check it.
    Load,
}

/// One binding of the configuration being committed.
#[derive(Debug)]
pub struct Entry {
    /// The binding as the file defines it.
    pub config: BindingConfig,
    /// The file's definition (module hash as read now).
    pub definition: Definition,
    /// What to serve.
    pub action: EntryAction,
}

/// What to serve for an [`Entry`].
#[derive(Debug)]
pub enum EntryAction {
    /// An existing binding, from [`Decision::Keep`].
    Keep(Arc<Binding>),
    /// A freshly loaded module for a new version.
    New(LoadedPolicy),
}

/// How a commit changed one binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    /// Newly bound.
    Added,
    /// New version (module, config or limits changed).
    Changed,
    /// Same version as before.
    Unchanged,
    /// Same rolled-back version: the file still defines what was rolled back from.
    KeptRolledBack,
    /// No longer bound.
    Removed,
}

/// One binding in a commit report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BindingChange {
    /// The tenant.
    pub tenant: String,
    /// The policy name.
    pub policy: String,
    /// What happened to it.
    pub change: Change,
    /// The version now serving (the last one, for a removed binding).
    pub version: u64,
    /// The version served before, if any.
    pub previous_version: Option<u64>,
    /// The module hash now serving.
    pub content_hash: String,
}

/// The outcome of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitReport {
    /// The snapshot version serving after the commit.
    pub snapshot_version: u64,
    /// The snapshot version that served before.
    pub previous_version: u64,
    /// Whether a new snapshot was published (false when nothing changed).
    pub swapped: bool,
    /// Every binding of the new configuration plus removed ones.
    pub bindings: Vec<BindingChange>,
}

/// Why a rollback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// No such tenant.
    #[error("unknown tenant `{0}`")]
    UnknownTenant(String),
    /// The tenant has no binding of that name.
    #[error("tenant `{tenant}` has no policy named `{policy}`")]
    UnknownPolicy {
        /// The tenant.
        tenant: String,
        /// The name asked for.
        policy: String,
    },
    /// The serving version is the oldest one kept.
    #[error(
        "policy `{policy}` of tenant `{tenant}` serves version {version}, the oldest kept; there is nothing to roll back to"
    )]
    NoEarlierVersion {
        /// The tenant.
        tenant: String,
        /// The policy.
        policy: String,
        /// The serving version.
        version: u64,
    },
}

/// The outcome of a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackReport {
    /// The snapshot now serving.
    pub snapshot_version: u64,
    /// The tenant.
    pub tenant: String,
    /// The policy.
    pub policy: String,
    /// The version that served before the rollback.
    pub from_version: u64,
    /// The version serving now.
    pub to_version: u64,
    /// Its module hash.
    pub content_hash: String,
}

/// Exclusive write access; see [`Registry::writer`].
pub struct RegistryWriter<'a> {
    pub(super) registry: &'a Registry,
    pub(super) _guard: MutexGuard<'a, ()>,
    pub(super) base: Arc<Snapshot>,
}

impl RegistryWriter<'_> {
    /// The snapshot this writer builds on (the latest: writers are serialised).
    pub fn current(&self) -> &Arc<Snapshot> {
        &self.base
    }

    /// Whether a binding with `definition` needs loading. Kept: the serving
    /// binding when the definition is unchanged, or when the binding is
    /// rolled back and the file still defines it exactly as pinned.
    pub fn decide(&self, key: &BindingKey, definition: &Definition) -> Decision {
        let Some(serving) = self.base.binding(&key.tenant, &key.name) else {
            return Decision::Load;
        };
        let pin = self.base.histories.get(key).and_then(|h| h.pin.as_ref());
        if pin == Some(definition) || serving.definition == *definition {
            Decision::Keep(serving.clone())
        } else {
            Decision::Load
        }
    }

    /// A module already loaded (serving or kept) with this hash and world,
    /// so an unchanged module is never compiled twice.
    pub fn loaded_module(&self, content_hash: &str, kind: PolicyKind) -> Option<LoadedPolicy> {
        self.base
            .histories
            .values()
            .flat_map(|h| h.versions.iter())
            .find(|b| b.policy.content_hash() == content_hash && b.policy.kind() == kind)
            .map(|b| b.policy.clone())
    }

    /// Publish a configuration: every tenant of `tenant_ids` (including
    /// those without policies) and every binding of `entries`, in order.
    /// Bindings of the current snapshot that are not in `entries` are
    /// removed (their history is kept). Publishes nothing when nothing changed.
    pub fn commit(
        self,
        tenant_ids: impl IntoIterator<Item = String>,
        entries: Vec<Entry>,
    ) -> CommitReport {
        let now = now_ms();
        let mut histories = self.base.histories.clone();
        let mut tenants: BTreeMap<String, TenantPolicies> = tenant_ids
            .into_iter()
            .map(|id| (id, TenantPolicies::default()))
            .collect();
        let mut changes = Vec::new();
        let mut pins_changed = false;

        for Entry {
            config,
            definition,
            action,
        } in entries
        {
            let key = BindingKey::new(&config.tenant, &config.name);
            let previous = self.base.binding(&key.tenant, &key.name).cloned();
            let mut history = histories
                .get(&key)
                .map(|h| (**h).clone())
                .unwrap_or_default();
            let had_pin = history.pin.is_some();
            let (binding, change) = match action {
                EntryAction::Keep(binding) => keep(&mut history, binding, &config, &definition),
                EntryAction::New(policy) => {
                    let binding = new_version(&mut history, &key, config, definition, policy, now);
                    let change = if previous.is_some() {
                        Change::Changed
                    } else {
                        Change::Added
                    };
                    (binding, change)
                }
            };
            pins_changed |= had_pin != history.pin.is_some();
            changes.push(BindingChange {
                tenant: key.tenant.clone(),
                policy: key.name.clone(),
                change,
                version: binding.version,
                previous_version: previous.as_ref().map(|b| b.version),
                content_hash: binding.content_hash().to_owned(),
            });
            histories.insert(key.clone(), Arc::new(history));
            let tenant = tenants.entry(key.tenant.clone()).or_default();
            match binding.role {
                BindingRole::Pricing(kind) => {
                    tenant.pricing.insert(kind, binding);
                }
                BindingRole::Validation => tenant.validation.push(binding),
            }
        }
        pins_changed |= self.record_removals(&tenants, &mut histories, &mut changes);
        let changed = pins_changed || !same_bindings(&self.base.tenants, &tenants);
        self.publish(changed, tenants, histories, changes)
    }

    /// Report every binding that was served and is not in `tenants`, and drop
    /// its rollback pin; returns whether a pin was dropped.
    fn record_removals(
        &self,
        tenants: &BTreeMap<String, TenantPolicies>,
        histories: &mut BTreeMap<BindingKey, Arc<History>>,
        changes: &mut Vec<BindingChange>,
    ) -> bool {
        let mut pin_dropped = false;
        for (tenant, policies) in &self.base.tenants {
            for binding in policies.bindings() {
                if tenants
                    .get(tenant)
                    .and_then(|t| t.get(&binding.name))
                    .is_some()
                {
                    continue;
                }
                let key = BindingKey::new(tenant, &binding.name);
                if let Some(history) = histories.get_mut(&key) {
                    pin_dropped |= Arc::make_mut(history).pin.take().is_some();
                }
                changes.push(BindingChange {
                    tenant: tenant.clone(),
                    policy: binding.name.clone(),
                    change: Change::Removed,
                    version: binding.version,
                    previous_version: Some(binding.version),
                    content_hash: binding.content_hash().to_owned(),
                });
            }
        }
        pin_dropped
    }

    /// Store the new snapshot unless nothing changed (the very first commit
    /// always publishes: it turns "not loaded" into "loaded").
    fn publish(
        self,
        changed: bool,
        tenants: BTreeMap<String, TenantPolicies>,
        histories: BTreeMap<BindingKey, Arc<History>>,
        bindings: Vec<BindingChange>,
    ) -> CommitReport {
        let previous_version = self.base.version;
        if !changed && previous_version > 0 {
            return CommitReport {
                snapshot_version: previous_version,
                previous_version,
                swapped: false,
                bindings,
            };
        }
        let snapshot = Snapshot {
            version: previous_version + 1,
            created_at_ms: now_ms(),
            tenants,
            histories,
        };
        let snapshot_version = snapshot.version;
        self.registry.current.store(Arc::new(snapshot));
        CommitReport {
            snapshot_version,
            previous_version,
            swapped: true,
            bindings,
        }
    }

    /// Serve the version before the one `tenant`/`policy` serves now.
    pub fn rollback(self, tenant: &str, policy: &str) -> Result<RollbackReport, RollbackError> {
        let policies = self
            .base
            .tenant(tenant)
            .ok_or_else(|| RollbackError::UnknownTenant(tenant.to_owned()))?;
        let serving = policies
            .get(policy)
            .ok_or_else(|| RollbackError::UnknownPolicy {
                tenant: tenant.to_owned(),
                policy: policy.to_owned(),
            })?
            .clone();
        let key = BindingKey::new(tenant, policy);
        let mut history = self
            .base
            .histories
            .get(&key)
            .map(|h| (**h).clone())
            .unwrap_or_default();
        let target = history
            .versions
            .iter()
            .rev()
            .find(|b| b.version < serving.version)
            .cloned()
            .ok_or_else(|| RollbackError::NoEarlierVersion {
                tenant: tenant.to_owned(),
                policy: policy.to_owned(),
                version: serving.version,
            })?;
        // The file still defines what served before any rollback.
        if history.pin.is_none() {
            history.pin = Some(serving.definition.clone());
        }
        let mut tenants = self.base.tenants.clone();
        let policies = tenants.get_mut(tenant).expect("tenant checked above");
        match target.role {
            BindingRole::Pricing(kind) => {
                policies.pricing.insert(kind, target.clone());
            }
            BindingRole::Validation => {
                for slot in &mut policies.validation {
                    if slot.name == policy {
                        *slot = target.clone();
                    }
                }
            }
        }
        let mut histories = self.base.histories.clone();
        histories.insert(key, Arc::new(history));
        let report = self.publish(true, tenants, histories, Vec::new());
        Ok(RollbackReport {
            snapshot_version: report.snapshot_version,
            tenant: tenant.to_owned(),
            policy: policy.to_owned(),
            from_version: serving.version,
            to_version: target.version,
            content_hash: target.content_hash().to_owned(),
        })
    }
}

/// Serve an existing binding again. Its rollback pin survives only while the
/// file still defines what was rolled back from; a module that moved to
/// another path (same bytes) keeps its version and counters.
fn keep(
    history: &mut History,
    binding: Arc<Binding>,
    config: &BindingConfig,
    definition: &Definition,
) -> (Arc<Binding>, Change) {
    let still_pinned =
        history.pin.as_ref() == Some(definition) && binding.definition != *definition;
    if !still_pinned {
        history.pin = None;
    }
    let binding = if binding.module == config.module {
        binding
    } else {
        let moved = Arc::new(Binding {
            module: config.module.clone(),
            policy: binding.policy.clone(),
            definition: binding.definition.clone(),
            tenant: binding.tenant.clone(),
            name: binding.name.clone(),
            stats: binding.stats.clone(),
            ..*binding
        });
        replace_in_history(history, &moved);
        moved
    };
    let change = if still_pinned {
        Change::KeptRolledBack
    } else {
        Change::Unchanged
    };
    (binding, change)
}

/// A new version of a binding, numbered after every earlier one; the oldest
/// kept version goes once more than [`KEPT_VERSIONS`] are kept.
fn new_version(
    history: &mut History,
    key: &BindingKey,
    config: BindingConfig,
    definition: Definition,
    policy: LoadedPolicy,
    now: i64,
) -> Arc<Binding> {
    history.pin = None;
    history.next_version = history.next_version.max(1);
    let binding = Arc::new(Binding {
        tenant: key.tenant.clone(),
        name: key.name.clone(),
        role: config.role,
        module: config.module,
        policy,
        definition,
        version: history.next_version,
        loaded_at_ms: now,
        stats: Arc::default(),
    });
    history.next_version += 1;
    history.versions.push(binding.clone());
    if history.versions.len() > KEPT_VERSIONS {
        let excess = history.versions.len() - KEPT_VERSIONS;
        history.versions.drain(..excess);
    }
    binding
}

/// Whether two tenant maps serve exactly the same bindings in the same order.
fn same_bindings(
    a: &BTreeMap<String, TenantPolicies>,
    b: &BTreeMap<String, TenantPolicies>,
) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((id_a, ta), (id_b, tb))| {
            id_a == id_b
                && ta.pricing.len() == tb.pricing.len()
                && ta
                    .pricing
                    .iter()
                    .zip(&tb.pricing)
                    .all(|((ka, ba), (kb, bb))| ka == kb && Arc::ptr_eq(ba, bb))
                && ta.validation.len() == tb.validation.len()
                && ta
                    .validation
                    .iter()
                    .zip(&tb.validation)
                    .all(|(x, y)| Arc::ptr_eq(x, y))
        })
}

fn replace_in_history(history: &mut History, binding: &Arc<Binding>) {
    for slot in &mut history.versions {
        if slot.version == binding.version {
            *slot = binding.clone();
        }
    }
}

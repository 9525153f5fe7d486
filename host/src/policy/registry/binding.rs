//! One bound policy version and its call counters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::Definition;
use crate::config::BindingRole;
use crate::policy::{Call, CallError, FailureKind, Limits, LoadedPolicy, types};

/// The caller's side of a policy call: everything but the tenant and the
/// binding's config, which the binding fills in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallContext {
    /// The customer the call concerns.
    pub customer_id: String,
    /// The customer's attributes, in order (first occurrence wins).
    #[serde(default)]
    pub customer_attributes: Vec<(String, String)>,
    /// The instant of the request (ms since the epoch).
    pub now_ms: i64,
}

/// One version of one policy bound to one tenant. Immutable; shared by every
/// snapshot that serves it.
#[derive(Debug)]
pub struct Binding {
    pub(super) tenant: String,
    pub(super) name: String,
    pub(super) role: BindingRole,
    pub(super) module: PathBuf,
    pub(super) policy: LoadedPolicy,
    pub(super) definition: Definition,
    pub(super) version: u64,
    pub(super) loaded_at_ms: i64,
    pub(super) stats: Arc<BindingStats>,
}

impl Binding {
    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The pricing kind or validation name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pricing (which kind) or validation.
    pub fn role(&self) -> BindingRole {
        self.role
    }

    /// The module file it was loaded from.
    pub fn module(&self) -> &Path {
        &self.module
    }

    /// sha256 of the module bytes: recorded with every answer.
    pub fn content_hash(&self) -> &str {
        &self.definition.content_hash
    }

    /// The binding's `config:` as JSON.
    pub fn config_json(&self) -> &str {
        &self.definition.config_json
    }

    /// Effective limits of every call.
    pub fn limits(&self) -> &Limits {
        &self.definition.limits
    }

    /// Module hash, config and limits together.
    pub fn definition(&self) -> &Definition {
        &self.definition
    }

    /// The binding's version: 1 at first load, +1 each time its module hash,
    /// config or limits change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When this version was loaded (ms since the epoch).
    pub fn loaded_at_ms(&self) -> i64 {
        self.loaded_at_ms
    }

    /// The loaded module.
    pub fn policy(&self) -> &LoadedPolicy {
        &self.policy
    }

    /// Call counters of this version.
    pub fn stats(&self) -> &BindingStats {
        &self.stats
    }

    /// The full WIT context for a call of this binding.
    pub fn context(&self, ctx: CallContext) -> types::Context {
        types::Context {
            tenant_id: self.tenant.clone(),
            config: self.definition.config_json.clone(),
            customer_id: ctx.customer_id,
            customer_attributes: ctx.customer_attributes,
            now_ms: ctx.now_ms,
        }
    }

    /// Price a request with this binding's config and limits, counting the call.
    pub fn price(&self, ctx: CallContext, request: &types::PricingRequest) -> Call<types::Quote> {
        let call = self
            .policy
            .price(&self.context(ctx), request, &self.definition.limits);
        self.stats.record(&call.result);
        call
    }

    /// Validate a subject with this binding's config and limits, counting the call.
    pub fn validate(
        &self,
        ctx: CallContext,
        subject: &types::ValidationSubject,
    ) -> Call<Vec<types::Violation>> {
        let call = self
            .policy
            .validate(&self.context(ctx), subject, &self.definition.limits);
        self.stats.record(&call.result);
        call
    }
}

/// Counters of one binding version, updated by every call.
#[derive(Debug, Default)]
pub struct BindingStats {
    calls: AtomicU64,
    policy_errors: AtomicU64,
    failures: [AtomicU64; FailureKind::ALL.len()],
}

/// A copy of [`BindingStats`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    /// Calls made.
    pub calls: u64,
    /// Calls the policy answered with its own error (rejected, unsupported,
    /// invalid config).
    pub policy_errors: u64,
    /// Calls the sandbox stopped, by failure kind (kinds with 0 left out).
    pub failures: BTreeMap<&'static str, u64>,
}

impl BindingStats {
    fn record<T>(&self, result: &Result<T, CallError>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => {}
            Err(CallError::Policy(_)) => {
                self.policy_errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(CallError::Failed(failure)) => {
                let index = FailureKind::ALL
                    .iter()
                    .position(|k| *k == failure.kind)
                    .expect("FailureKind::ALL lists every kind");
                self.failures[index].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Read the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let failures = FailureKind::ALL
            .iter()
            .zip(&self.failures)
            .map(|(kind, n)| (kind.as_str(), n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect();
        StatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            policy_errors: self.policy_errors.load(Ordering::Relaxed),
            failures,
        }
    }
}

//! One bound policy version and its call counters.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

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

    /// Whether its calls have been quick lately (see `SLOW_CALL_FUEL`): a caller
    /// on an async worker may then run the next call in place instead of
    /// handing the worker off first.
    pub fn is_quick(&self) -> bool {
        self.stats.slow_calls_left.load(Ordering::Relaxed) == 0
    }

    /// Price a request with this binding's config and limits, counting the call.
    pub fn price(&self, ctx: CallContext, request: &types::PricingRequest) -> Call<types::Quote> {
        let call = self
            .policy
            .price(&self.context(ctx), request, &self.definition.limits);
        self.stats.record(&call.result, call.stats.fuel_used);
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
        self.stats.record(&call.result, call.stats.fuel_used);
        call
    }
}

/// A call burning at least this much fuel — about a millisecond of guest
/// code — (or stopped by the sandbox for time or fuel) marks its binding
/// slow for the next [`SLOW_FOR_CALLS`] calls. Fuel, not wall time: on a
/// busy machine a 20 µs call can take milliseconds of wall time when its
/// thread is preempted, and that says nothing about the policy.
pub const SLOW_CALL_FUEL: u64 = 1_000_000;
/// How many calls a slow binding stays slow for.
pub const SLOW_FOR_CALLS: u32 = 1_000;

/// Counters of one binding version, updated by every call.
#[derive(Debug, Default)]
pub struct BindingStats {
    calls: AtomicU64,
    policy_errors: AtomicU64,
    failures: [AtomicU64; FailureKind::ALL.len()],
    /// Calls left before the binding counts as quick again.
    slow_calls_left: AtomicU32,
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
    fn record<T>(&self, result: &Result<T, CallError>, fuel_used: u64) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let stopped_for_time = matches!(
            result,
            Err(CallError::Failed(f))
                if matches!(f.kind, FailureKind::Deadline | FailureKind::OutOfFuel)
        );
        if fuel_used >= SLOW_CALL_FUEL || stopped_for_time {
            self.slow_calls_left
                .store(SLOW_FOR_CALLS, Ordering::Relaxed);
        } else {
            // Saturating: a quick binding stays at 0.
            let _ =
                self.slow_calls_left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                        left.checked_sub(1)
                    });
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyFailure;

    /// A typical reference-policy call.
    const QUICK: u64 = 40_000;

    fn is_quick(stats: &BindingStats) -> bool {
        stats.slow_calls_left.load(Ordering::Relaxed) == 0
    }

    #[test]
    fn a_slow_call_marks_the_binding_slow_for_the_next_thousand_calls() {
        let stats = BindingStats::default();
        assert!(is_quick(&stats), "a new binding is quick");
        stats.record(&Ok::<(), CallError>(()), QUICK);
        assert!(is_quick(&stats));

        stats.record(&Ok::<(), CallError>(()), SLOW_CALL_FUEL);
        assert!(!is_quick(&stats));
        for _ in 0..SLOW_FOR_CALLS - 1 {
            stats.record(&Ok::<(), CallError>(()), QUICK);
        }
        assert!(!is_quick(&stats), "still within the slow window");
        stats.record(&Ok::<(), CallError>(()), QUICK);
        assert!(
            is_quick(&stats),
            "quick again after {SLOW_FOR_CALLS} quick calls"
        );
    }

    #[test]
    fn a_call_stopped_for_time_or_fuel_marks_the_binding_slow_however_fast_it_failed() {
        for kind in [FailureKind::Deadline, FailureKind::OutOfFuel] {
            let stats = BindingStats::default();
            let failed: Result<(), CallError> =
                Err(CallError::Failed(PolicyFailure::new(kind, "stopped")));
            stats.record(&failed, QUICK);
            assert!(!is_quick(&stats), "{kind:?}");
        }
        // A trap is the policy's own fault, not a sign it hogs the worker.
        let stats = BindingStats::default();
        let trapped: Result<(), CallError> = Err(CallError::Failed(PolicyFailure::new(
            FailureKind::Trap,
            "unreachable",
        )));
        stats.record(&trapped, QUICK);
        assert!(is_quick(&stats));
    }
}

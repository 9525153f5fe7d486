//! Calling the tenant's policies from a use case.
//!
//! A policy call is synchronous and bounded by its limits (fuel, deadline):
//! tens of microseconds normally, at most the deadline. Where it runs:
//! - a binding whose recent calls were all quick ([`Binding::is_quick`]) is
//!   called in place, on the async worker: handing the worker off with
//!   `block_in_place` costs more than such a call (measured: credits/use on
//!   PostgreSQL 1,555 → 1,860 req/s, SQLite 3,000 → 3,740; BENCHMARKS.md);
//! - a binding with a recent slow call (≥ 1M fuel, about a millisecond of
//!   guest code, or stopped for time or fuel) runs under `block_in_place`
//!   for its next 1,000 calls, so a slow or hostile policy never holds an
//!   async worker for more than one call's deadline per thousand calls;
//! - off a multi-threaded runtime (single-threaded test runtimes) calls run
//!   in place.

use std::sync::Arc;

use super::App;
use super::error::{AppError, PolicyFault, PolicyRef, PolicyViolation, Result};
use crate::config::PricingKind;
use crate::policy::registry::{Binding, CallContext, Snapshot};
use crate::policy::types;

/// Runs `binding`'s call `f` in place when the binding is quick, else where
/// blocking is allowed (see the module docs).
///
/// Never inside a write transaction: a policy may run for its whole
/// deadline, and on SQLite every tenant's writes wait for the one writer
/// (`store::write_transaction_open`). Debug builds, and so every test,
/// fail a call made while one is open.
fn call_on<T>(binding: &Binding, f: impl FnOnce() -> T) -> T {
    debug_assert!(
        !crate::store::write_transaction_open(),
        "policy `{}` was called while a write transaction is open: price and \
         validate before the transaction, re-check what the policy saw inside it",
        binding.name()
    );
    if binding.is_quick() {
        return f();
    }
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Who a binding is, for quotes and errors.
pub(super) fn policy_ref(binding: &Binding) -> PolicyRef {
    PolicyRef {
        policy: binding.name().to_owned(),
        kind: binding.role().as_str(),
        content_hash: binding.content_hash().to_owned(),
        version: binding.version(),
    }
}

/// Prices `request`; a refusal or failure becomes [`AppError::Policy`].
pub(super) fn price(
    binding: &Arc<Binding>,
    ctx: CallContext,
    request: &types::PricingRequest,
) -> Result<types::Quote> {
    let call = call_on(binding, || binding.price(ctx, request));
    call.result.map_err(|error| {
        AppError::Policy(Box::new(PolicyFault {
            policy: policy_ref(binding),
            error,
            stats: call.stats,
        }))
    })
}

/// Runs every validation policy in order and collects every violation; the
/// first policy that fails to answer stops the request.
pub(super) fn validate(
    bindings: &[Arc<Binding>],
    ctx: &CallContext,
    subject: &types::ValidationSubject,
) -> Result<()> {
    let mut violations = Vec::new();
    for binding in bindings {
        let call = call_on(binding, || binding.validate(ctx.clone(), subject));
        match call.result {
            Ok(found) => violations.extend(found.into_iter().map(|v| PolicyViolation {
                policy: binding.name().to_owned(),
                rule_id: v.rule_id,
                message: v.message,
            })),
            Err(error) => {
                return Err(AppError::Policy(Box::new(PolicyFault {
                    policy: policy_ref(binding),
                    error,
                    stats: call.stats,
                })));
            }
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(AppError::Violations(violations))
    }
}

/// A policy answered something the contract does not allow for this
/// request (e.g. money for a credit usage): the policy failed.
pub(super) fn invalid_output(binding: &Binding, message: impl Into<String>) -> AppError {
    AppError::Policy(Box::new(PolicyFault {
        policy: policy_ref(binding),
        error: crate::policy::CallError::Failed(crate::policy::PolicyFailure::new(
            crate::policy::FailureKind::InvalidOutput,
            message,
        )),
        stats: Default::default(),
    }))
}

impl App {
    /// The registry's current snapshot, once the first load has published
    /// one. A use case takes every binding it needs from one snapshot, so a
    /// reload mid-request does not mix versions.
    fn loaded_snapshot(&self) -> Result<Arc<Snapshot>> {
        let snapshot = self.registry().snapshot();
        if snapshot.version() == 0 {
            return Err(AppError::NotReady);
        }
        Ok(snapshot)
    }

    /// The tenant's `kind` pricing binding and its validation bindings.
    pub(super) fn policies_for(
        &self,
        tenant: &str,
        kind: PricingKind,
    ) -> Result<(Arc<Binding>, Vec<Arc<Binding>>)> {
        let snapshot = self.loaded_snapshot()?;
        let policies = snapshot.tenant(tenant);
        let pricing = policies
            .and_then(|p| p.pricing(kind))
            .cloned()
            .ok_or_else(|| AppError::NoPolicy {
                tenant: tenant.to_owned(),
                kind: kind.as_str(),
            })?;
        let validation = policies
            .map(|p| p.validation().to_vec())
            .unwrap_or_default();
        Ok((pricing, validation))
    }

    /// The tenant's validation bindings (for requests no pricing policy
    /// prices).
    pub(super) fn validation_policies(&self, tenant: &str) -> Result<Vec<Arc<Binding>>> {
        Ok(self
            .loaded_snapshot()?
            .tenant(tenant)
            .map(|p| p.validation().to_vec())
            .unwrap_or_default())
    }
}

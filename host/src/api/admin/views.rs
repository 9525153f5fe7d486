//! The admin API's JSON shapes (camelCase). WIT data (pricing requests,
//! validation subjects, quotes, violations) keeps the runtime's serde form,
//! the same JSON `fluxpay-host policy run --input` reads, so an author can
//! paste one into the other.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::policy::registry::{Binding, CallContext, Snapshot, StatsSnapshot};
use crate::policy::reload::ReloadStatus;
use crate::policy::{CallStats, Limits, types};

/// `GET /admin/v1/policies`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoliciesView {
    /// The snapshot serving now (0: nothing loaded yet).
    pub snapshot_version: u64,
    /// When it was published (ms since the epoch).
    pub snapshot_created_at_ms: i64,
    /// The configuration file.
    pub config_file: PathBuf,
    /// The last reload's outcome (including refused ones).
    pub last_reload: Option<ReloadStatus>,
    /// Tenants by id.
    pub tenants: BTreeMap<String, TenantView>,
}

/// One tenant's bindings.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    /// Pricing bindings by kind.
    pub pricing: Vec<BindingView>,
    /// Validation bindings in run order.
    pub validation: Vec<BindingView>,
}

/// One binding as it serves now.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BindingView {
    /// Pricing kind or validation name.
    pub name: String,
    /// `credit`, `subscription`, `metered`, `order` or `validation`.
    pub kind: &'static str,
    /// The module file.
    pub module: PathBuf,
    /// sha256 of the module.
    pub content_hash: String,
    /// Module size.
    pub size_bytes: u64,
    /// The binding's version.
    pub version: u64,
    /// When this version was loaded (ms since the epoch).
    pub loaded_at_ms: i64,
    /// Whether it serves a rolled-back version.
    pub rolled_back: bool,
    /// Calls, policy errors and failures by kind, of this version.
    #[serde(flatten)]
    pub stats: StatsSnapshot,
    /// Effective limits.
    pub limits: LimitsView,
    /// The kept versions, oldest first.
    pub history: Vec<VersionView>,
}

/// A kept version.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionView {
    /// Its version number.
    pub version: u64,
    /// Its module hash.
    pub content_hash: String,
    /// When it was loaded.
    pub loaded_at_ms: i64,
    /// Whether it is the one serving.
    pub serving: bool,
}

/// [`Limits`] in the API's casing.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsView {
    /// Instruction budget per call.
    pub fuel: u64,
    /// Wall-clock deadline per call.
    pub deadline_ms: u64,
    /// Linear memory cap.
    pub memory_bytes: u64,
    /// Module size cap.
    pub module_bytes: u64,
    /// Input size cap.
    pub input_bytes: u64,
    /// Output size cap.
    pub output_bytes: u64,
    /// Log bytes kept per call.
    pub log_bytes: u64,
}

impl From<&Limits> for LimitsView {
    fn from(l: &Limits) -> Self {
        LimitsView {
            fuel: l.fuel,
            deadline_ms: l.deadline_ms,
            memory_bytes: l.memory_bytes,
            module_bytes: l.module_bytes,
            input_bytes: l.input_bytes,
            output_bytes: l.output_bytes,
            log_bytes: l.log_bytes,
        }
    }
}

impl PoliciesView {
    pub(super) fn new(
        snapshot: &Snapshot,
        config_file: PathBuf,
        last_reload: Option<ReloadStatus>,
    ) -> Self {
        let view = |b: &std::sync::Arc<Binding>| binding_view(snapshot, b);
        let tenants = snapshot
            .tenants()
            .map(|(id, t)| {
                let tenant = TenantView {
                    pricing: t.pricing_bindings().map(view).collect(),
                    validation: t.validation().iter().map(view).collect(),
                };
                (id.to_owned(), tenant)
            })
            .collect();
        PoliciesView {
            snapshot_version: snapshot.version(),
            snapshot_created_at_ms: snapshot.created_at_ms(),
            config_file,
            last_reload,
            tenants,
        }
    }
}

fn binding_view(snapshot: &Snapshot, b: &Binding) -> BindingView {
    let history = snapshot
        .history(b.tenant(), b.name())
        .iter()
        .map(|v| VersionView {
            version: v.version(),
            content_hash: v.content_hash().to_owned(),
            loaded_at_ms: v.loaded_at_ms(),
            serving: v.version() == b.version(),
        })
        .collect();
    BindingView {
        name: b.name().to_owned(),
        kind: b.role().as_str(),
        module: b.module().to_owned(),
        content_hash: b.content_hash().to_owned(),
        size_bytes: b.policy().size_bytes(),
        version: b.version(),
        loaded_at_ms: b.loaded_at_ms(),
        rolled_back: snapshot.is_rolled_back(b.tenant(), b.name()),
        stats: b.stats().snapshot(),
        limits: b.limits().into(),
        history,
    }
}

/// `POST /admin/v1/policies/{tenant}/{policy}/evaluate`: exactly one of
/// `request` (pricing bindings) or `subject` (validation bindings).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvaluateBody {
    /// Who the call is for and when.
    pub context: EvaluateContext,
    /// What to price.
    #[serde(default)]
    pub request: Option<types::PricingRequest>,
    /// What to validate.
    #[serde(default)]
    pub subject: Option<types::ValidationSubject>,
}

/// The caller's side of the context; the tenant and the binding's config
/// are filled in by the host, as in production.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvaluateContext {
    /// The customer.
    pub customer_id: String,
    /// The customer's attributes as `[["tier", "gold"], …]`.
    #[serde(default)]
    pub customer_attributes: Vec<(String, String)>,
    /// The request instant; the host's clock when absent.
    #[serde(default)]
    pub now_ms: Option<i64>,
}

impl EvaluateContext {
    pub(super) fn into_call_context(self, now_ms: i64) -> CallContext {
        CallContext {
            customer_id: self.customer_id,
            customer_attributes: self.customer_attributes,
            now_ms: self.now_ms.unwrap_or(now_ms),
        }
    }
}

/// Who answered an evaluation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnsweredBy {
    /// The tenant.
    pub tenant: String,
    /// The policy name.
    pub policy: String,
    /// Its kind.
    pub kind: &'static str,
    /// Module hash that answered.
    pub content_hash: String,
    /// Binding version that answered.
    pub version: u64,
    /// Snapshot the call was served from.
    pub snapshot_version: u64,
}

/// The result of a successful evaluation.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluateView {
    /// Who answered.
    #[serde(flatten)]
    pub answered_by: AnsweredBy,
    /// The quote, for a pricing binding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quote: Option<types::Quote>,
    /// The violations (empty: passes), for a validation binding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub violations: Option<Vec<types::Violation>>,
    /// What the call used.
    pub stats: CallStatsView,
}

/// [`CallStats`] in the API's casing.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallStatsView {
    /// Fuel burnt.
    pub fuel_used: u64,
    /// Peak linear memory.
    pub peak_memory_bytes: u64,
    /// Wall time in microseconds.
    pub duration_us: u64,
    /// Input size.
    pub input_bytes: u64,
    /// Output size.
    pub output_bytes: u64,
    /// Log bytes kept.
    pub log_bytes: u64,
    /// Whether the log was cut at the limit.
    pub log_truncated: bool,
}

impl From<&CallStats> for CallStatsView {
    fn from(s: &CallStats) -> Self {
        CallStatsView {
            fuel_used: s.fuel_used,
            peak_memory_bytes: s.peak_memory_bytes,
            duration_us: s.duration.as_micros() as u64,
            input_bytes: s.input_bytes,
            output_bytes: s.output_bytes,
            log_bytes: s.log_bytes,
            log_truncated: s.log_truncated,
        }
    }
}

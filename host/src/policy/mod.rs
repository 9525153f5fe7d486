//! The policy runtime: loads tenant policy components, runs each call in a
//! fresh sandboxed instance under limits, and keeps the tenant → policy
//! registry that hot reload swaps atomically.
//!
//! wasmtime types never leave this module: callers see [`PolicyEngine`],
//! [`LoadedPolicy`], the WIT data types re-exported from [`types`], and
//! plain errors.

mod artifacts;
mod bindings;
mod call;
mod engine;
mod error;
mod limits;
mod module;
mod output;
pub mod registry;
pub mod reload;
mod size;

pub use call::{Call, CallStats};
pub use engine::{EngineSettings, EngineStats, PolicyEngine};
pub use error::{CallError, FailureKind, LoadError, PolicyFailure};
pub use limits::{Limits, LimitsOverride};
pub use module::{ALLOWED_IMPORTS, ArtifactSource, LoadedPolicy, ModuleInfo, PolicyKind};

/// The WIT data types of `fluxpay:policy@0.1.0` (`Context`, `PricingRequest`,
/// `Quote`, `ValidationSubject`, `Violation`, the guest's `PolicyError`…),
/// generated once in `bindings` and serde-serialisable.
pub mod types {
    pub use super::bindings::types::*;
}

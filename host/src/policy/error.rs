//! What can go wrong loading a policy and calling one.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::module::PolicyKind;
use super::types;

/// Why a module was refused at load. Every message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("module is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error(
        "module imports `{name}`, which the sandbox does not provide (only \
         fluxpay:policy/types@0.1.0 and fluxpay:policy/host@0.1.0 are allowed; \
         build for wasm32-unknown-unknown, not WASI)"
    )]
    ForbiddenImport { name: String },
    #[error("module was bound as a {expected} policy but {found}")]
    WrongWorld { expected: PolicyKind, found: String },
    #[error("module does not match world `{world}` of fluxpay:policy@0.1.0: {message}")]
    Incompatible { world: PolicyKind, message: String },
    #[error("compiling the module failed: {0}")]
    Compile(String),
    #[error("invalid limits: {0}")]
    Limits(String),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How a call went wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The guest answered with its own error (rejected, unsupported,
    /// invalid config). The policy works; the request does not fit it.
    Policy(types::PolicyError),
    /// The sandbox stopped the guest, or the guest broke the contract.
    Failed(PolicyFailure),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Policy(e) => match e {
                types::PolicyError::Unsupported(m) => write!(f, "policy: unsupported: {m}"),
                types::PolicyError::InvalidConfig(m) => write!(f, "policy: invalid config: {m}"),
                types::PolicyError::Rejected(r) => {
                    write!(f, "policy: rejected ({}): {}", r.code, r.message)
                }
            },
            CallError::Failed(failure) => failure.fmt(f),
        }
    }
}

impl std::error::Error for CallError {}

/// The sandbox stopped a call; `kind` is stable, `message` is for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl PolicyFailure {
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        PolicyFailure {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for PolicyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy failed ({}): {}", self.kind, self.message)
    }
}

impl std::error::Error for PolicyFailure {}

/// Why the sandbox stopped a call. [`FailureKind::as_str`] is the stable
/// name used in API responses and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The instruction budget ran out.
    OutOfFuel,
    /// The wall-clock deadline passed.
    Deadline,
    /// The guest tried to grow memory past its limit.
    MemoryLimit,
    /// Any other trap (panic, `unreachable`, stack overflow, bad memory access).
    Trap,
    /// The guest returned something the contract does not allow.
    InvalidOutput,
    /// The request was too large to hand to the policy.
    InputTooLarge,
    /// The policy's answer was over the output limit.
    OutputTooLarge,
    /// Every instance slot is busy; retry later.
    Overloaded,
}

impl FailureKind {
    pub const ALL: [FailureKind; 8] = [
        FailureKind::OutOfFuel,
        FailureKind::Deadline,
        FailureKind::MemoryLimit,
        FailureKind::Trap,
        FailureKind::InvalidOutput,
        FailureKind::InputTooLarge,
        FailureKind::OutputTooLarge,
        FailureKind::Overloaded,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::OutOfFuel => "out_of_fuel",
            FailureKind::Deadline => "deadline",
            FailureKind::MemoryLimit => "memory_limit",
            FailureKind::Trap => "trap",
            FailureKind::InvalidOutput => "invalid_output",
            FailureKind::InputTooLarge => "input_too_large",
            FailureKind::OutputTooLarge => "output_too_large",
            FailureKind::Overloaded => "overloaded",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_kind_names_are_stable_snake_case_and_match_serde() {
        for kind in FailureKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(kind.to_string(), kind.as_str());
        }
    }

    #[test]
    fn load_errors_name_the_offending_import() {
        let e = LoadError::ForbiddenImport {
            name: "wasi:io/poll@0.2.6".into(),
        };
        assert!(e.to_string().contains("`wasi:io/poll@0.2.6`"));
        let e = LoadError::WrongWorld {
            expected: PolicyKind::Pricing,
            found: "it exports a validation policy (fluxpay:policy/validator@0.1.0)".into(),
        };
        assert_eq!(
            e.to_string(),
            "module was bound as a pricing policy but it exports a validation policy \
             (fluxpay:policy/validator@0.1.0)"
        );
    }
}

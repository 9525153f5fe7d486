//! What a policy module is: its kind, what it imports and exports (read
//! without compiling), and a loaded, ready-to-instantiate policy.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::ComponentExportIndex;
use wasmtime::wasmparser::{Encoding, Parser, Payload};

use super::bindings::{PricingPre, ValidationPre};
use super::engine::EngineShared;
use super::error::LoadError;
use super::limits::Limits;

/// The only imports a policy may have: the contract's types and the log.
pub const ALLOWED_IMPORTS: [&str; 2] = ["fluxpay:policy/types@0.1.0", "fluxpay:policy/host@0.1.0"];

/// Which world a policy implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    Pricing,
    Validation,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Pricing => "pricing",
            PolicyKind::Validation => "validation",
        }
    }

    /// The interface a component of this kind exports.
    pub fn export_name(self) -> &'static str {
        match self {
            PolicyKind::Pricing => "fluxpay:policy/pricer@0.1.0",
            PolicyKind::Validation => "fluxpay:policy/validator@0.1.0",
        }
    }

    fn from_export(name: &str) -> Option<PolicyKind> {
        [PolicyKind::Pricing, PolicyKind::Validation]
            .into_iter()
            .find(|k| k.export_name() == name)
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A component's outline, read from its bytes without compiling it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleInfo {
    /// File size.
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of the bytes.
    pub content_hash: String,
    /// Top-level import names, in file order.
    pub imports: Vec<String>,
    /// Top-level export names, in file order.
    pub exports: Vec<String>,
    /// The FluxPay worlds the exports implement (normally exactly one).
    pub worlds: Vec<PolicyKind>,
}

impl ModuleInfo {
    /// Imports the sandbox does not provide.
    pub fn forbidden_imports(&self) -> impl Iterator<Item = &str> {
        self.imports
            .iter()
            .map(String::as_str)
            .filter(|name| !ALLOWED_IMPORTS.contains(name))
    }

    /// Everything load checks before compiling: size, imports, world.
    pub fn check(&self, expected: PolicyKind, limits: &Limits) -> Result<(), LoadError> {
        if self.size_bytes > limits.module_bytes {
            return Err(LoadError::TooLarge {
                size: self.size_bytes,
                limit: limits.module_bytes,
            });
        }
        if let Some(name) = self.forbidden_imports().next() {
            return Err(LoadError::ForbiddenImport {
                name: name.to_owned(),
            });
        }
        if !self.worlds.contains(&expected) {
            let found = match self.worlds.first() {
                Some(other) => format!("it exports a {other} policy ({})", other.export_name()),
                None => format!(
                    "it exports no FluxPay world (expected {}; exports: {})",
                    expected.export_name(),
                    if self.exports.is_empty() {
                        "none".to_owned()
                    } else {
                        self.exports.join(", ")
                    }
                ),
            };
            return Err(LoadError::WrongWorld { expected, found });
        }
        Ok(())
    }
}

/// Read a component's top-level imports and exports. Only parses; the
/// module is validated when it is compiled.
pub(crate) fn inspect(bytes: &[u8]) -> Result<ModuleInfo, LoadError> {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    // Nested modules and components have their own imports and exports; only
    // depth 1 (the outer component) is the policy's interface.
    let mut depth = 0u32;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| LoadError::NotAComponent(format!("{e}")))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err(LoadError::NotAComponent(
                        "this is a core wasm module; turn it into a component \
                         (fluxpay-policy-build does this)"
                            .into(),
                    ));
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| LoadError::NotAComponent(format!("{e}")))?;
                    imports.push(import.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| LoadError::NotAComponent(format!("{e}")))?;
                    exports.push(export.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(LoadError::NotAComponent("the file is truncated".into()));
    }
    let worlds = exports
        .iter()
        .filter_map(|e| PolicyKind::from_export(e))
        .collect();
    Ok(ModuleInfo {
        size_bytes: bytes.len() as u64,
        content_hash: hex::encode(Sha256::digest(bytes)),
        imports,
        exports,
        worlds,
    })
}

/// Where a loaded policy's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactSource {
    /// Compiled at this load.
    Compiled,
    /// Deserialised from the engine's artifact directory; nothing compiled.
    Cached,
}

/// A compiled, linked policy, ready to run calls. Cheap to clone.
#[derive(Clone)]
pub struct LoadedPolicy {
    pub(crate) inner: Arc<LoadedInner>,
}

pub(crate) struct LoadedInner {
    pub(crate) kind: PolicyKind,
    pub(crate) content_hash: String,
    pub(crate) size_bytes: u64,
    pub(crate) source: ArtifactSource,
    pub(crate) pre: Pre,
    /// The export a call enters (`pricer.price` or `validator.validate`),
    /// found once at load so a call does not look it up by name.
    pub(crate) entry: ComponentExportIndex,
    /// The entry's type has been checked against the host's signature for
    /// it (on the first call). A component's export types are the same in
    /// every instance, so later calls skip the check.
    pub(crate) entry_checked: AtomicBool,
    /// Keeps the epoch ticker alive while the policy can still be called.
    pub(crate) engine: Arc<EngineShared>,
}

pub(crate) enum Pre {
    Pricing(PricingPre<super::call::CallState>),
    Validation(ValidationPre<super::call::CallState>),
}

impl LoadedPolicy {
    pub fn kind(&self) -> PolicyKind {
        self.inner.kind
    }

    /// Lowercase hex SHA-256 of the component file's bytes.
    pub fn content_hash(&self) -> &str {
        &self.inner.content_hash
    }

    pub fn size_bytes(&self) -> u64 {
        self.inner.size_bytes
    }

    /// Whether this load compiled the module or reused a stored artifact.
    pub fn artifact_source(&self) -> ArtifactSource {
        self.inner.source
    }
}

impl fmt::Debug for LoadedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPolicy")
            .field("kind", &self.inner.kind)
            .field("content_hash", &self.inner.content_hash)
            .field("size_bytes", &self.inner.size_bytes)
            .field("source", &self.inner.source)
            .finish()
    }
}

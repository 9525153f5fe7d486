//! The wasmtime engine every policy runs on: pooling allocator sized from
//! [`EngineSettings`], fuel and epoch interruption on, one epoch ticker
//! thread, one linker offering `host.log` and nothing else.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use wasmtime::component::{Component, ComponentExportIndex, HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
};

use super::artifacts;
use super::bindings::{PricingPre, ValidationPre, host};
use super::call::CallState;
use super::error::LoadError;
use super::limits::Limits;
use super::module::{self, LoadedInner, LoadedPolicy, ModuleInfo, PolicyKind, Pre};

const MIB: u64 = 1024 * 1024;

/// How the engine is sized. Everything here is fixed for the engine's
/// lifetime; per-call limits live in [`Limits`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Where compiled modules are kept, keyed by content hash and engine
    /// compatibility, so a restart deserialises instead of compiling.
    /// `None` compiles on every load. The directory must be writable only by
    /// the host: its files are loaded as machine code.
    pub artifact_dir: Option<PathBuf>,
    /// Instance slots in the pool: the most calls that can run at once.
    /// A call that finds no free slot fails as `overloaded`.
    pub max_concurrent_instances: u32,
    /// Linear memory each slot can hold: the ceiling for any policy's
    /// `limits.memory_bytes`.
    pub max_memory_bytes: u64,
    /// Epoch tick: the granularity of `limits.deadline_ms`.
    pub epoch_tick_ms: u64,
    /// Bytes of each memory slot kept mapped and zeroed with memset when a
    /// call ends instead of being returned to the kernel; covers a small
    /// policy's stack and data so the next call takes no page faults there.
    pub memory_keep_resident_bytes: u64,
    /// Same for table slots.
    pub table_keep_resident_bytes: u64,
    /// Use Linux's `PAGEMAP_SCAN` (kernel 6.7+) to reset only the pages a
    /// call dirtied, up to the keep-resident sizes; ignored where unsupported.
    pub pagemap_scan: bool,
    /// Let guard pages and signal handlers catch out-of-bounds accesses
    /// (wasmtime's default). Off (ours): explicit bounds checks in compiled
    /// code, but no `mprotect` (and TLB shootdown) each time a call grows
    /// memory and each time its slot is reset.
    pub signals_based_traps: bool,
    /// Core instances one component may create (a componentised policy has
    /// about three: the module and wit-component's shim and fixup modules).
    pub max_core_instances_per_component: u32,
    /// Linear memories one component may define.
    pub max_memories_per_component: u32,
    /// Tables one component may define.
    pub max_tables_per_component: u32,
    /// Elements per table.
    pub max_table_elements: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            artifact_dir: None,
            max_concurrent_instances: 64,
            max_memory_bytes: 64 * MIB,
            epoch_tick_ms: 2,
            // Measured on the target machine: 64 KiB took a fresh call from
            // 28 to 23 µs; 1 MiB made it worse (41 µs).
            memory_keep_resident_bytes: 64 * 1024,
            table_keep_resident_bytes: 8 * 1024,
            pagemap_scan: true,
            // Measured on the target machine (fresh-instance call, release):
            // 17 µs p50 with signals and guard pages, 10.4 µs without; the
            // `mprotect`s and TLB shootdowns cost more than explicit bounds
            // checks save for policies this small. Re-measured with the
            // SDK's bump allocator (a small call no longer grows memory):
            // signals were ~5 % faster (10.8 vs 11.3 µs, credit), but a call
            // that grows memory pays the `mprotect`s again and the pool then
            // reserves 4 GiB of address space per slot; kept off.
            signals_based_traps: false,
            max_core_instances_per_component: 8,
            max_memories_per_component: 1,
            max_tables_per_component: 4,
            max_table_elements: 20_000,
        }
    }
}

/// Counters for what loading did; `compiled` stays 0 on a warm restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EngineStats {
    /// Modules compiled by this engine.
    pub compiled: u64,
    /// Modules deserialised from the artifact directory.
    pub artifacts_loaded: u64,
    /// Stored artifacts that could not be used (corrupt, incompatible) and
    /// were replaced by a fresh compile.
    pub artifacts_rejected: u64,
}

/// Loads policies and owns what every call shares. Cheap to clone.
#[derive(Clone)]
pub struct PolicyEngine {
    shared: Arc<EngineShared>,
}

pub(crate) struct EngineShared {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<CallState>,
    pub(crate) settings: EngineSettings,
    /// `"{sha256 of the compatibility hash}"`, truncated; part of artifact names.
    pub(crate) compat_key: String,
    pub(crate) compiled: AtomicU64,
    pub(crate) artifacts_loaded: AtomicU64,
    pub(crate) artifacts_rejected: AtomicU64,
    ticker: Option<Ticker>,
}

impl PolicyEngine {
    pub fn new(settings: EngineSettings) -> anyhow::Result<Self> {
        validate_settings(&settings)?;
        let engine = Engine::new(&wasmtime_config(&settings))
            .map_err(anyhow::Error::from)
            .context("creating the wasm engine")?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(anyhow::Error::from)
            .context("adding host.log to the linker")?;
        if let Some(dir) = &settings.artifact_dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating artifact directory {}", dir.display()))?;
        }
        let compat_key = artifacts::compat_key(&engine);
        let ticker = Ticker::start(
            engine.clone(),
            Duration::from_millis(settings.epoch_tick_ms),
        )?;
        Ok(PolicyEngine {
            shared: Arc::new(EngineShared {
                engine,
                linker,
                settings,
                compat_key,
                compiled: AtomicU64::new(0),
                artifacts_loaded: AtomicU64::new(0),
                artifacts_rejected: AtomicU64::new(0),
                ticker: Some(ticker),
            }),
        })
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.shared.settings
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            compiled: self.shared.compiled.load(Ordering::Relaxed),
            artifacts_loaded: self.shared.artifacts_loaded.load(Ordering::Relaxed),
            artifacts_rejected: self.shared.artifacts_rejected.load(Ordering::Relaxed),
        }
    }

    /// Read a module's outline (worlds, imports, exports, size, hash)
    /// without compiling it.
    pub fn inspect(&self, bytes: &[u8]) -> Result<ModuleInfo, LoadError> {
        module::inspect(bytes)
    }

    /// Check, compile (or fetch the stored artifact) and link a module as a
    /// policy of kind `expected`. Slow (milliseconds): never on a request path.
    pub fn load(
        &self,
        bytes: &[u8],
        expected: PolicyKind,
        limits: &Limits,
    ) -> Result<LoadedPolicy, LoadError> {
        limits
            .validate(self.shared.settings.max_memory_bytes)
            .map_err(LoadError::Limits)?;
        let info = module::inspect(bytes)?;
        info.check(expected, limits)?;
        let (component, source) = artifacts::obtain(&self.shared, bytes, &info.content_hash)?;
        let pre = self.link(&component, expected)?;
        let entry = entry_export(&component, expected)?;
        tracing::debug!(
            kind = %expected,
            content_hash = %info.content_hash,
            size_bytes = info.size_bytes,
            ?source,
            "policy.load"
        );
        Ok(LoadedPolicy {
            inner: Arc::new(LoadedInner {
                kind: expected,
                content_hash: info.content_hash,
                size_bytes: info.size_bytes,
                source,
                pre,
                entry,
                entry_checked: AtomicBool::new(false),
                engine: self.shared.clone(),
            }),
        })
    }

    /// [`PolicyEngine::load`] of a file.
    pub fn load_file(
        &self,
        path: &Path,
        expected: PolicyKind,
        limits: &Limits,
    ) -> Result<LoadedPolicy, LoadError> {
        let bytes = read_module(path, limits.module_bytes)?;
        self.load(&bytes, expected, limits)
    }

    fn link(&self, component: &Component, kind: PolicyKind) -> Result<Pre, LoadError> {
        let incompatible = |e: wasmtime::Error| LoadError::Incompatible {
            world: kind,
            message: format!("{e:#}"),
        };
        let pre = self
            .shared
            .linker
            .instantiate_pre(component)
            .map_err(incompatible)?;
        Ok(match kind {
            PolicyKind::Pricing => Pre::Pricing(PricingPre::new(pre).map_err(incompatible)?),
            PolicyKind::Validation => {
                Pre::Validation(ValidationPre::new(pre).map_err(incompatible)?)
            }
        })
    }
}

/// The index of the function a call of `kind` enters.
fn entry_export(
    component: &Component,
    kind: PolicyKind,
) -> Result<ComponentExportIndex, LoadError> {
    let function = match kind {
        PolicyKind::Pricing => "price",
        PolicyKind::Validation => "validate",
    };
    component
        .get_export_index(None, kind.export_name())
        .and_then(|interface| component.get_export_index(Some(&interface), function))
        .ok_or_else(|| LoadError::Incompatible {
            world: kind,
            message: format!("{} does not export `{function}`", kind.export_name()),
        })
}

/// Read a module file, refusing before reading when it is over `limit`.
pub(crate) fn read_module(path: &Path, limit: u64) -> Result<Vec<u8>, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > limit {
        return Err(LoadError::TooLarge { size, limit });
    }
    std::fs::read(path).map_err(io)
}

fn validate_settings(s: &EngineSettings) -> anyhow::Result<()> {
    anyhow::ensure!(
        s.max_concurrent_instances > 0,
        "engine.max_concurrent_instances must be greater than 0"
    );
    anyhow::ensure!(
        s.max_memory_bytes >= 64 * 1024 && s.max_memory_bytes <= 4096 * MIB,
        "engine.max_memory_bytes must be between 64 KiB and 4 GiB, got {}",
        s.max_memory_bytes
    );
    anyhow::ensure!(
        (1..=1000).contains(&s.epoch_tick_ms),
        "engine.epoch_tick_ms must be between 1 and 1000, got {}",
        s.epoch_tick_ms
    );
    Ok(())
}

fn wasmtime_config(s: &EngineSettings) -> Config {
    let n = s.max_concurrent_instances;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(s.max_core_instances_per_component))
        .total_memories(n.saturating_mul(s.max_memories_per_component))
        .total_tables(n.saturating_mul(s.max_tables_per_component))
        .max_core_instances_per_component(s.max_core_instances_per_component)
        .max_memories_per_component(s.max_memories_per_component)
        .max_tables_per_component(s.max_tables_per_component)
        .max_memories_per_module(s.max_memories_per_component)
        .max_tables_per_module(s.max_tables_per_component)
        .table_elements(s.max_table_elements as usize)
        .max_memory_size(s.max_memory_bytes as usize)
        .linear_memory_keep_resident(s.memory_keep_resident_bytes as usize)
        .table_keep_resident(s.table_keep_resident_bytes as usize)
        .pagemap_scan(if s.pagemap_scan {
            Enabled::Auto
        } else {
            Enabled::No
        });

    let mut config = Config::new();
    if !s.signals_based_traps {
        // Without signal handlers guard pages catch nothing; without guard
        // pages wasmtime leaves a slot's pages read/write between calls
        // instead of `mprotect`ing them on every grow and reset.
        config
            .memory_guard_size(0)
            .guard_before_linear_memory(false)
            .memory_reservation(s.max_memory_bytes);
    }
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed)
        .signals_based_traps(s.signals_based_traps)
        .wasm_component_model(true);
    config
}

/// The one thread per engine that advances the epoch. Stops when the engine
/// (and every policy loaded from it) is dropped.
struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine, tick: Duration) -> anyhow::Result<Ticker> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fluxpay-epoch".into())
            .spawn(move || {
                // A message or a hang-up both mean stop.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })
            .context("starting the epoch ticker thread")?;
        Ok(Ticker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EngineShared {
    fn drop(&mut self) {
        if let Some(mut ticker) = self.ticker.take() {
            drop(ticker.stop.take());
            if let Some(thread) = ticker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_build_an_engine_and_hold_the_default_limits() {
        let engine = PolicyEngine::new(EngineSettings::default()).unwrap();
        assert!(
            Limits::default()
                .validate(engine.settings().max_memory_bytes)
                .is_ok()
        );
    }

    #[test]
    fn a_core_module_is_not_a_component() {
        let engine = PolicyEngine::new(EngineSettings::default()).unwrap();
        // The 8-byte header of an empty core module.
        let core = b"\0asm\x01\0\0\0";
        let err = engine.inspect(core).unwrap_err();
        assert!(matches!(err, LoadError::NotAComponent(_)), "{err}");
        let err = engine
            .load(b"not wasm", PolicyKind::Pricing, &Limits::default())
            .unwrap_err();
        assert!(matches!(err, LoadError::NotAComponent(_)), "{err}");
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let err = PolicyEngine::new(EngineSettings {
            max_concurrent_instances: 0,
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("max_concurrent_instances"));
    }
}

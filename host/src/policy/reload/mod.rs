//! Hot reload: one function, [`Reloader::reload`], used by the file watcher
//! ([`watch`]) and the admin endpoint alike.
//!
//! A reload parses and validates the configuration file, then, for every
//! binding whose definition (module hash, config, limits) changed, loads the
//! module (reusing any module already loaded with the same content hash:
//! unchanged modules are never recompiled) and asks it to check its config.
//! Only when every binding is good does it publish a new registry snapshot;
//! otherwise the serving snapshot stays and the answer lists every problem
//! with its file and field. Reloads (and rollbacks) are serialised by the
//! registry's writer lock. Loading is slow (milliseconds per module), so
//! callers run this off the request path: the watcher on its own thread, the
//! admin endpoint through `spawn_blocking`.

pub mod watch;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::registry::{
    BindingKey, CommitReport, Decision, Definition, Entry, EntryAction, Registry, RegistryWriter,
    now_ms,
};
use super::{CallError, LoadError, LoadedPolicy, PolicyEngine, PolicyKind, types};
use crate::config::{
    self, BindingConfig, BindingRole, Config, ConfigError, ConfigErrors, EngineConfig,
};

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Trigger {
    /// The first load at start-up.
    Startup,
    /// The file watcher saw the config or a module change.
    Watcher,
    /// `POST /admin/v1/policies/reload`.
    Admin,
}

/// A successful reload.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReport {
    /// What changed and the snapshot version now serving.
    #[serde(flatten)]
    pub commit: CommitReport,
    /// What started it.
    pub trigger: Trigger,
    /// Distinct modules compiled (or read from the artifact cache) by this reload.
    pub modules_loaded: usize,
    /// Changed bindings whose module was already loaded (by an earlier
    /// snapshot or another binding of this reload) and was reused.
    pub modules_reused: usize,
    /// Wall time of the reload.
    pub duration_ms: u64,
}

/// A refused reload: nothing was swapped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("reload refused; snapshot {serving_version} keeps serving: {errors}")]
pub struct ReloadFailure {
    /// Every problem, with file and field.
    pub errors: ConfigErrors,
    /// The snapshot version that keeps serving.
    pub serving_version: u64,
    /// What started it.
    pub trigger: Trigger,
}

/// The last reload's outcome, for the admin listing.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadStatus {
    /// When it finished (ms since the epoch).
    pub at_ms: i64,
    /// What started it.
    pub trigger: Trigger,
    /// Whether it was accepted.
    pub ok: bool,
    /// The snapshot version serving after it.
    pub snapshot_version: u64,
    /// Why it was refused (empty when accepted).
    pub errors: Vec<ConfigError>,
}

/// Reloads one configuration file into one registry with one engine.
pub struct Reloader {
    /// As the operator named it: read from here and shown in errors.
    config_path: PathBuf,
    /// Absolute, for the watcher.
    config_abs: PathBuf,
    engine: PolicyEngine,
    /// The engine section the engine was built from; changes need a restart.
    engine_config: EngineConfig,
    registry: Arc<Registry>,
    /// Files the watcher should follow: the config and the modules of the
    /// last configuration that parsed (even if loading it failed, so fixing a
    /// missing module triggers a reload).
    watched: Mutex<Vec<PathBuf>>,
    /// Serialises reloads, including recording their outcome (so `last`
    /// is always the latest). Rollbacks only take the registry's writer lock.
    reload_lock: Mutex<()>,
    last: Mutex<Option<ReloadStatus>>,
}

impl Reloader {
    /// Read the configuration's engine section and build the engine. Loads
    /// no policy: call [`Reloader::reload`] with [`Trigger::Startup`] next.
    pub fn new(config_path: &Path, registry: Arc<Registry>) -> anyhow::Result<Reloader> {
        let config = config::load(config_path)?;
        let engine = PolicyEngine::new(config.engine.settings())
            .map_err(|err| anyhow::anyhow!("{}: engine: {err:#}", config_path.display()))?;
        let config_abs =
            std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_owned());
        Ok(Reloader {
            watched: Mutex::new(vec![config_abs.clone()]),
            config_abs,
            config_path: config_path.to_owned(),
            engine,
            engine_config: config.engine,
            registry,
            reload_lock: Mutex::new(()),
            last: Mutex::new(None),
        })
    }

    /// The registry this reloader publishes to.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The engine policies are loaded with.
    pub fn engine(&self) -> &PolicyEngine {
        &self.engine
    }

    /// The configuration file, as given.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The config file and every module file of the last parsed config.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        lock(&self.watched).clone()
    }

    /// The outcome of the last reload, if any ran.
    pub fn last_status(&self) -> Option<ReloadStatus> {
        lock(&self.last).clone()
    }

    /// Reload the configuration file; see the module docs. Blocks while it
    /// loads modules: call it off the request path.
    pub fn reload(&self, trigger: Trigger) -> Result<ReloadReport, ReloadFailure> {
        let started = Instant::now();
        let _serial = lock(&self.reload_lock);
        // Take the writer lock before reading the file, so the last of two
        // concurrent reloads always publishes the newest file.
        let writer = self.registry.writer();
        let serving_version = writer.current().version();
        let outcome = self.prepare(&writer);
        let result = match outcome {
            Ok(prepared) => {
                let commit = writer.commit(prepared.tenant_ids, prepared.entries);
                Ok(ReloadReport {
                    commit,
                    trigger,
                    modules_loaded: prepared.loaded,
                    modules_reused: prepared.reused,
                    duration_ms: started.elapsed().as_millis() as u64,
                })
            }
            Err(errors) => {
                drop(writer);
                Err(ReloadFailure {
                    errors,
                    serving_version,
                    trigger,
                })
            }
        };
        self.record(&result);
        result
    }

    fn record(&self, result: &Result<ReloadReport, ReloadFailure>) {
        let status = match result {
            Ok(report) => {
                let changed = report
                    .commit
                    .bindings
                    .iter()
                    .filter(|b| b.change != super::registry::Change::Unchanged)
                    .count();
                tracing::info!(
                    trigger = ?report.trigger,
                    snapshot_version = report.commit.snapshot_version,
                    swapped = report.commit.swapped,
                    bindings = report.commit.bindings.len(),
                    changed,
                    modules_loaded = report.modules_loaded,
                    duration_ms = report.duration_ms,
                    "policy.reload"
                );
                ReloadStatus {
                    at_ms: now_ms(),
                    trigger: report.trigger,
                    ok: true,
                    snapshot_version: report.commit.snapshot_version,
                    errors: Vec::new(),
                }
            }
            Err(failure) => {
                for err in failure.errors.iter() {
                    tracing::warn!(trigger = ?failure.trigger, error = %err, "policy.reload refused");
                }
                ReloadStatus {
                    at_ms: now_ms(),
                    trigger: failure.trigger,
                    ok: false,
                    snapshot_version: failure.serving_version,
                    errors: failure.errors.0.clone(),
                }
            }
        };
        *lock(&self.last) = Some(status);
    }

    /// Parse, validate and load everything; no side effect on the registry.
    fn prepare(&self, writer: &RegistryWriter<'_>) -> Result<Prepared, ConfigErrors> {
        let config = config::load(&self.config_path)?;
        self.follow(&config);
        let mut errors = ConfigErrors::new();
        for (field, change) in self.engine_config.startup_only_changes(&config.engine) {
            errors.push(ConfigError::new(
                &config.file,
                field,
                format!(
                    "changed ({change}); engine settings apply at start-up only: restart the host"
                ),
            ));
        }
        let mut prepared = Prepared {
            tenant_ids: config.tenants.keys().cloned().collect(),
            entries: Vec::new(),
            fresh: Vec::new(),
            loaded: 0,
            reused: 0,
        };
        for binding in config.bindings() {
            match self.prepare_binding(writer, &config, binding, &mut prepared) {
                Ok(entry) => prepared.entries.push(entry),
                Err(err) => errors.push(err),
            }
        }
        errors.into_result(prepared)
    }

    fn follow(&self, config: &Config) {
        let mut files = vec![self.config_abs.clone()];
        // The watcher reports absolute paths; a config given by a relative
        // path yields relative module paths, which would never match.
        files.extend(
            config
                .bindings()
                .map(|b| std::path::absolute(&b.module).unwrap_or_else(|_| b.module.clone())),
        );
        files.sort();
        files.dedup();
        *lock(&self.watched) = files;
    }

    fn prepare_binding(
        &self,
        writer: &RegistryWriter<'_>,
        config: &Config,
        binding: &BindingConfig,
        prepared: &mut Prepared,
    ) -> Result<Entry, ConfigError> {
        let at = |field: &str, message: String| {
            ConfigError::new(&config.file, format!("{}.{field}", binding.field), message)
        };
        let bytes = read_module(&binding.module, binding.limits.module_bytes)
            .map_err(|message| at("module", message))?;
        let content_hash = hex::encode(Sha256::digest(&bytes));
        if let Some(pin) = &binding.sha256
            && *pin != content_hash
        {
            return Err(at(
                "sha256",
                format!(
                    "the module {} has sha256 {content_hash}, the pin expects {pin}",
                    binding.module.display()
                ),
            ));
        }
        let definition = Definition {
            content_hash,
            config_json: binding.config_json.clone(),
            limits: binding.limits.clone(),
        };
        let key = BindingKey::new(&binding.tenant, &binding.name);
        if let Decision::Keep(serving) = writer.decide(&key, &definition) {
            return Ok(entry(binding, definition, EntryAction::Keep(serving)));
        }

        let kind = match binding.role {
            BindingRole::Pricing(_) => PolicyKind::Pricing,
            BindingRole::Validation => PolicyKind::Validation,
        };
        // A module already loaded, by an earlier snapshot or earlier in this
        // reload (several bindings often share one module), is not compiled again.
        let known = writer
            .loaded_module(&definition.content_hash, kind)
            .or_else(|| prepared.fresh_module(&definition.content_hash, kind));
        let policy = match known {
            Some(policy) if policy.size_bytes() <= binding.limits.module_bytes => {
                prepared.reused += 1;
                policy
            }
            Some(policy) => {
                let err = LoadError::TooLarge {
                    size: policy.size_bytes(),
                    limit: binding.limits.module_bytes,
                };
                return Err(at("module", err.to_string()));
            }
            None => {
                let policy = self
                    .engine
                    .load(&bytes, kind, &binding.limits)
                    .map_err(|err| match err {
                        LoadError::Limits(msg) => at("limits", msg),
                        other => at(
                            "module",
                            format!("{} cannot be used: {other}", binding.module.display()),
                        ),
                    })?;
                prepared.loaded += 1;
                prepared.fresh.push(policy.clone());
                policy
            }
        };

        let check = policy.check_config(&binding.config_json, &binding.limits);
        match check.result {
            Ok(()) => Ok(entry(binding, definition, EntryAction::New(policy))),
            Err(CallError::Policy(types::PolicyError::InvalidConfig(msg))) => Err(at(
                "config",
                format!("the module refused its config: {msg}"),
            )),
            Err(CallError::Policy(other)) => Err(at(
                "config",
                format!(
                    "the module's check_config did not accept the config: {}",
                    CallError::Policy(other)
                ),
            )),
            Err(CallError::Failed(failure)) => Err(at(
                "config",
                format!("the module failed while checking its config: {failure}"),
            )),
        }
    }
}

struct Prepared {
    tenant_ids: Vec<String>,
    entries: Vec<Entry>,
    /// Modules loaded by this reload.
    fresh: Vec<LoadedPolicy>,
    loaded: usize,
    reused: usize,
}

impl Prepared {
    fn fresh_module(&self, content_hash: &str, kind: PolicyKind) -> Option<LoadedPolicy> {
        self.fresh
            .iter()
            .find(|p| p.content_hash() == content_hash && p.kind() == kind)
            .cloned()
    }
}

fn entry(binding: &BindingConfig, definition: Definition, action: EntryAction) -> Entry {
    Entry {
        config: binding.clone(),
        definition,
        action,
    }
}

/// Read a module, refusing one over `limit` without reading all of it.
fn read_module(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => format!("file not found: {}", path.display()),
        _ => format!("cannot read {}: {err}", path.display()),
    })?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "{} is over the module size limit of {limit} bytes (limits.module_bytes)",
            path.display()
        ));
    }
    Ok(bytes)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

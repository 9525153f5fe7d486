//! The YAML configuration: which policies each tenant runs, with what config
//! and limits, and how the policy engine is sized.
//!
//! [`load`] reads, parses and validates a file in one go and reports every
//! problem it finds, each naming the file and the field path. What needs a
//! policy engine to check (module files, sha256 pins, the world a module
//! implements, the module's own `check_config`) is checked when the bindings
//! are loaded, in [`crate::policy::reload`], with the same error type.
//!
//! The schema is documented, with an example of every field, in
//! `examples/tenants.yaml`.

mod api;
mod database;
mod error;
mod file;
mod gateway;
mod kafka;
mod secret;
mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use api::{ApiKeyConfig, SigningConfig, SubscriptionsConfig, TenantApiConfig};
pub use database::{
    DATABASE_URL_ENV, DEFAULT_IDEMPOTENCY_RETENTION_HOURS, DEFAULT_MAX_CONNECTIONS, DatabaseConfig,
    DatabaseUrl, MIN_IDEMPOTENCY_RETENTION_HOURS, SqliteSynchronous,
};
pub use error::{ConfigError, ConfigErrors};
pub use gateway::{DEFAULT_VOID_UNCONFIRMED_AFTER, GatewayConfig, GatewayKind};
pub use kafka::{CreateTopics, KafkaConfig, legal_topic};
pub use secret::Secret;
pub use webhook::{WebhookConfig, WebhooksConfig};

use crate::domain::Currency;
use crate::policy::{EngineSettings, Limits};
use file::{RawBinding, RawConfig, RawDatabase, RawEngine, RawSubscriptions, RawTenant};

/// A validated configuration. Paths are absolute (relative ones were taken
/// relative to the config file's directory).
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, as the operator named it.
    pub file: PathBuf,
    /// Engine sizing and default limits.
    pub engine: EngineConfig,
    /// The database (the file's `database:`; see [`DatabaseConfig`]).
    pub database: DatabaseConfig,
    /// Tenants by id.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Where `serve` runs the bundled PG simulator (`pg_simulator:`), for
    /// tenants whose gateway is of kind `simulator`.
    pub pg_simulator: Option<std::net::SocketAddr>,
    /// Where the outbox relay publishes events (`kafka:`); none: not to
    /// Kafka.
    pub kafka: Option<KafkaConfig>,
    /// How tenants' webhooks are delivered (`webhooks:`; defaults when
    /// absent).
    pub webhooks: WebhooksConfig,
}

impl Config {
    /// Every binding of every tenant, pricing first, in a stable order.
    pub fn bindings(&self) -> impl Iterator<Item = &BindingConfig> {
        self.tenants.values().flat_map(TenantConfig::bindings)
    }
}

/// The `engine:` section.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Where precompiled modules are cached; `None` disables the cache.
    pub artifact_dir: Option<PathBuf>,
    /// Pool size: at most this many policy calls run at once.
    pub max_concurrent_instances: Option<u32>,
    /// The largest linear memory any call may have.
    pub max_memory_bytes: Option<u64>,
    /// Built-in defaults with `default_limits:` applied; every binding's
    /// `limits:` is applied on top of these.
    pub default_limits: Limits,
}

impl EngineConfig {
    /// Engine settings: built-in defaults with this section's values applied.
    pub fn settings(&self) -> EngineSettings {
        let mut settings = EngineSettings {
            artifact_dir: self.artifact_dir.clone(),
            ..EngineSettings::default()
        };
        if let Some(n) = self.max_concurrent_instances {
            settings.max_concurrent_instances = n;
        }
        if let Some(n) = self.max_memory_bytes {
            settings.max_memory_bytes = n;
        }
        settings
    }

    /// The settings that size the engine itself. They apply at start-up only:
    /// the instance pool cannot be resized under running calls.
    pub fn startup_only_changes(&self, other: &EngineConfig) -> Vec<(&'static str, String)> {
        let mut changes = Vec::new();
        if self.artifact_dir != other.artifact_dir {
            changes.push((
                "engine.artifact_dir",
                format!("{:?} → {:?}", self.artifact_dir, other.artifact_dir),
            ));
        }
        if self.max_concurrent_instances != other.max_concurrent_instances {
            changes.push((
                "engine.max_concurrent_instances",
                format!(
                    "{:?} → {:?}",
                    self.max_concurrent_instances, other.max_concurrent_instances
                ),
            ));
        }
        if self.max_memory_bytes != other.max_memory_bytes {
            changes.push((
                "engine.max_memory_bytes",
                format!("{:?} → {:?}", self.max_memory_bytes, other.max_memory_bytes),
            ));
        }
        changes
    }
}

/// One tenant: its policies and its API settings.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// The tenant id (the key under `tenants:`).
    pub id: String,
    /// At most one pricing policy per kind.
    pub pricing: BTreeMap<PricingKind, BindingConfig>,
    /// Validation policies, in the order they run.
    pub validation: Vec<BindingConfig>,
    /// API keys, signing, currency, subscription payment.
    pub api: TenantApiConfig,
}

impl TenantConfig {
    /// Pricing bindings then validation bindings.
    pub fn bindings(&self) -> impl Iterator<Item = &BindingConfig> {
        self.pricing.values().chain(self.validation.iter())
    }
}

/// What a pricing policy is asked to price; a tenant binds one policy per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PricingKind {
    /// Credit cost of a feature use.
    Credit,
    /// Subscription start, renewal and plan change.
    Subscription,
    /// Metered usage over a period.
    Metered,
    /// Order line items.
    Order,
}

impl PricingKind {
    /// All kinds, in file order.
    pub const ALL: [PricingKind; 4] = [
        PricingKind::Credit,
        PricingKind::Subscription,
        PricingKind::Metered,
        PricingKind::Order,
    ];

    /// The YAML key, which is also the binding's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PricingKind::Credit => "credit",
            PricingKind::Subscription => "subscription",
            PricingKind::Metered => "metered",
            PricingKind::Order => "order",
        }
    }
}

impl fmt::Display for PricingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which world a binding's module must implement and what it is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindingRole {
    /// A pricing policy bound for one kind of request.
    Pricing(PricingKind),
    /// A validation policy.
    Validation,
}

impl BindingRole {
    /// `credit`, `subscription`, `metered`, `order` or `validation`.
    pub fn as_str(self) -> &'static str {
        match self {
            BindingRole::Pricing(kind) => kind.as_str(),
            BindingRole::Validation => "validation",
        }
    }
}

/// One policy bound to a tenant, as the file defines it.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingConfig {
    /// The tenant it belongs to.
    pub tenant: String,
    /// Unique per tenant: the pricing kind, or the validation entry's `name`.
    pub name: String,
    /// Pricing (which kind) or validation.
    pub role: BindingRole,
    /// Where in the file it is defined, e.g. `tenants.acme.pricing.credit`;
    /// errors about it append the field (`.module`, `.config`…).
    pub field: String,
    /// The module file, absolute.
    pub module: PathBuf,
    /// The expected sha256 of the module (lower-case hex), when pinned.
    pub sha256: Option<String>,
    /// The `config:` block as JSON text (`{}` when absent).
    pub config_json: String,
    /// Effective limits: built-in defaults, then `engine.default_limits`,
    /// then the binding's `limits:`.
    pub limits: Limits,
}

/// Read, parse and validate a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| ConfigError::new(path, "", format!("cannot read the file: {err}")))?;
    parse(path, &text)
}

/// Parse and validate configuration text; `path` names the file in errors
/// and anchors relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let raw: RawConfig =
        serde_yaml::from_str(text).map_err(|err| ConfigError::from_yaml(path, &err))?;
    Resolver::new(path).resolve(raw)
}

/// Turns the raw file into a [`Config`], collecting every error.
struct Resolver<'a> {
    file: &'a Path,
    base: PathBuf,
    errors: ConfigErrors,
    /// Whether `pg_simulator:` is configured (for `gateway.kind: simulator`).
    has_simulator: bool,
}

impl<'a> Resolver<'a> {
    fn new(file: &'a Path) -> Self {
        let dir = file.parent().unwrap_or(Path::new(""));
        // Absolute without touching the file system: the watcher needs stable
        // paths, and a missing module is reported later with its field.
        let base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Resolver {
            file,
            base,
            errors: ConfigErrors::new(),
            has_simulator: false,
        }
    }

    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors
            .push(ConfigError::new(self.file, field, message));
    }

    fn resolve(mut self, raw: RawConfig) -> Result<Config, ConfigErrors> {
        let engine = self.engine(raw.engine);
        let database = self.database(raw.database);
        let pg_simulator = raw.pg_simulator.and_then(|sim| match sim.resolve() {
            Ok(addr) => Some(addr),
            Err(message) => {
                self.error("pg_simulator.listen", message);
                None
            }
        });
        self.has_simulator = pg_simulator.is_some();
        let kafka = raw.kafka.and_then(|kafka| match kafka.resolve() {
            Ok(kafka) => Some(kafka),
            Err(problems) => {
                for (field, message) in problems {
                    self.error(field, message);
                }
                None
            }
        });
        let webhooks = match raw.webhooks.unwrap_or_default().resolve() {
            Ok(webhooks) => webhooks,
            Err(problems) => {
                for (key, message) in problems {
                    self.error(format!("webhooks.{key}"), message);
                }
                WebhooksConfig::default()
            }
        };
        let mut tenants = BTreeMap::new();
        for (id, tenant) in raw.tenants {
            let tenant = self.tenant(&engine, id.clone(), tenant);
            // A round (its budget, then one delivery) must end inside the
            // lease.
            if let Some(hook) = &tenant.api.webhook
                && hook.timeout > webhooks.round_budget()
            {
                self.error(
                    format!("tenants.{id}.events.webhook.timeout_ms"),
                    format!(
                        "{} is more than a third of webhooks.lease_ms ({}): a delivery must end \
                         inside the relay's lease",
                        hook.timeout.as_millis(),
                        webhooks.lease.as_millis()
                    ),
                );
            }
            tenants.insert(id, tenant);
        }
        self.check_unique_keys(&tenants);
        let config = Config {
            file: self.file.to_path_buf(),
            engine,
            database,
            tenants,
            pg_simulator,
            kafka,
            webhooks,
        };
        self.errors.into_result(config)
    }

    fn engine(&mut self, raw: RawEngine) -> EngineConfig {
        if raw.max_concurrent_instances == Some(0) {
            self.error("engine.max_concurrent_instances", "must be at least 1");
        }
        if let Some(bytes) = raw.max_memory_bytes
            && !(MIN_ENGINE_MEMORY..=MAX_ENGINE_MEMORY).contains(&bytes)
        {
            self.error(
                "engine.max_memory_bytes",
                format!(
                    "{bytes} is outside {MIN_ENGINE_MEMORY}..={MAX_ENGINE_MEMORY} (64 KiB to 4 GiB)"
                ),
            );
        }
        let mut engine = EngineConfig {
            artifact_dir: raw.artifact_dir.map(|dir| self.path(&dir)),
            max_concurrent_instances: raw.max_concurrent_instances,
            max_memory_bytes: raw.max_memory_bytes,
            default_limits: Limits::default(),
        };
        engine.default_limits = Limits::default().with(&raw.default_limits);
        let max_memory = engine.settings().max_memory_bytes;
        if let Err(msg) = engine.default_limits.validate(max_memory) {
            self.error("engine.default_limits", msg);
        }
        engine
    }

    fn tenant(&mut self, engine: &EngineConfig, id: String, raw: RawTenant) -> TenantConfig {
        let field = format!("tenants.{id}");
        if !valid_name(&id) {
            self.error(&field, format!("tenant id `{id}` {NAME_RULE}"));
        }
        let api = self.tenant_api(&field, &raw);
        let mut tenant = TenantConfig {
            id: id.clone(),
            pricing: BTreeMap::new(),
            validation: Vec::new(),
            api,
        };
        let pricing = [
            (PricingKind::Credit, raw.pricing.credit),
            (PricingKind::Subscription, raw.pricing.subscription),
            (PricingKind::Metered, raw.pricing.metered),
            (PricingKind::Order, raw.pricing.order),
        ];
        for (kind, binding) in pricing {
            let Some(binding) = binding else { continue };
            let field = format!("{field}.pricing.{kind}");
            let binding = self.binding(
                engine,
                &id,
                kind.as_str().to_owned(),
                BindingRole::Pricing(kind),
                field,
                binding,
            );
            tenant.pricing.insert(kind, binding);
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (index, raw) in raw.validation.into_iter().enumerate() {
            let field = format!("{field}.validation[{index}]");
            let name = raw.name.clone();
            if !valid_name(&name) {
                self.error(
                    format!("{field}.name"),
                    format!("policy name `{name}` {NAME_RULE}"),
                );
            } else if PricingKind::ALL.iter().any(|k| k.as_str() == name) {
                self.error(
                    format!("{field}.name"),
                    format!("policy name `{name}` is taken by the pricing kind of the same name; pick another"),
                );
            } else if let Some(first) = seen.get(&name) {
                self.error(
                    format!("{field}.name"),
                    format!("duplicate policy name `{name}` (already used by validation[{first}])"),
                );
            }
            seen.entry(name.clone()).or_insert(index);
            let binding = RawBinding {
                module: raw.module,
                sha256: raw.sha256,
                config: raw.config,
                limits: raw.limits,
            };
            let binding = self.binding(engine, &id, name, BindingRole::Validation, field, binding);
            tenant.validation.push(binding);
        }
        tenant
    }

    fn binding(
        &mut self,
        engine: &EngineConfig,
        tenant: &str,
        name: String,
        role: BindingRole,
        field: String,
        raw: RawBinding,
    ) -> BindingConfig {
        if raw.module.as_os_str().is_empty() {
            self.error(format!("{field}.module"), "must name a module file");
        }
        let sha256 = raw.sha256.map(|pin| {
            let pin = pin.trim().to_ascii_lowercase();
            if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.error(
                    format!("{field}.sha256"),
                    format!("`{pin}` is not a sha256 digest (64 hex digits)"),
                );
            }
            pin
        });
        let limits = engine.default_limits.with(&raw.limits);
        let max_memory = engine.settings().max_memory_bytes;
        if let Err(msg) = limits.validate(max_memory) {
            self.error(format!("{field}.limits"), msg);
        }
        let config_json = match raw.config {
            None | Some(serde_json::Value::Null) => "{}".to_owned(),
            Some(value) => value.to_string(),
        };
        BindingConfig {
            tenant: tenant.to_owned(),
            name,
            role,
            module: self.path(&raw.module),
            sha256,
            config_json,
            limits,
            field,
        }
    }

    /// `join` keeps an absolute path as it is.
    fn path(&self, path: &Path) -> PathBuf {
        self.base.join(path)
    }

    fn database(&mut self, raw: Option<RawDatabase>) -> DatabaseConfig {
        let mut database = DatabaseConfig::default_for(&self.base);
        let Some(raw) = raw else { return database };
        match DatabaseUrl::parse(&raw.url, &self.base) {
            Ok(url) => database.url = url,
            Err(message) => self.error("database.url", message),
        }
        match raw.max_connections {
            Some(0) => self.error("database.max_connections", "must be at least 1"),
            Some(n) => database.max_connections = n,
            None => {}
        }
        match raw.sqlite_synchronous.as_deref() {
            None | Some("full") => {}
            Some("normal") => database.sqlite_synchronous = SqliteSynchronous::Normal,
            Some(other) => self.error(
                "database.sqlite_synchronous",
                format!("`{other}` is not one of: full, normal"),
            ),
        }
        match raw.idempotency_retention_hours {
            Some(hours) if hours < MIN_IDEMPOTENCY_RETENTION_HOURS => self.error(
                "database.idempotency_retention_hours",
                format!("{hours} is below the minimum of {MIN_IDEMPOTENCY_RETENTION_HOURS} hours"),
            ),
            Some(hours) => database.idempotency_retention_hours = hours,
            None => {}
        }
        match raw.outbox_retention_days {
            Some(days) if !(1..=database::MAX_OUTBOX_RETENTION_DAYS).contains(&days) => self.error(
                "database.outbox_retention_days",
                format!(
                    "{days} must be within 1..={}",
                    database::MAX_OUTBOX_RETENTION_DAYS
                ),
            ),
            Some(days) => database.outbox_retention_days = days,
            None => {}
        }
        database
    }

    /// `subscriptions:`; paying from credits needs the exchange rate.
    fn subscriptions(
        &mut self,
        field: &str,
        raw: Option<&RawSubscriptions>,
    ) -> SubscriptionsConfig {
        let Some(raw) = raw else {
            return SubscriptionsConfig::default();
        };
        let key = format!("{field}.subscriptions.credits_per_major_unit");
        match raw.credits_per_major_unit {
            Some(rate) if rate <= 0 => self.error(
                key,
                format!("{rate} must be a whole number of credits above 0"),
            ),
            None if raw.pay_from_credits => self.error(
                key,
                "required when pay_from_credits is true: how many credits one major unit of \
                 the plan's currency costs (e.g. 100 credits per 1 USD)",
            ),
            _ => {}
        }
        if raw.charge_card && raw.pay_from_credits {
            self.error(
                format!("{field}.subscriptions.charge_card"),
                "renewals are paid either from credits or by card, not both",
            );
        }
        let dunning_days = match &raw.dunning_days {
            None => api::DEFAULT_DUNNING_DAYS.to_vec(),
            Some(days) => {
                let ascending = days.windows(2).all(|w| w[0] < w[1]);
                if days.is_empty()
                    || days.len() > 10
                    || !ascending
                    || days.iter().any(|d| !(1..=60).contains(d))
                {
                    self.error(
                        format!("{field}.subscriptions.dunning_days"),
                        format!(
                            "{days:?}: 1 to 10 retries, days after the failure from 1 to 60, \
                             ascending"
                        ),
                    );
                }
                days.clone()
            }
        };
        SubscriptionsConfig {
            pay_from_credits: raw.pay_from_credits,
            credits_per_major_unit: raw.credits_per_major_unit.filter(|rate| *rate > 0),
            charge_card: raw.charge_card,
            dunning_days,
        }
    }

    fn tenant_api(&mut self, field: &str, raw: &RawTenant) -> TenantApiConfig {
        let mut api = TenantApiConfig {
            dev: raw.dev,
            subscriptions: self.subscriptions(field, raw.subscriptions.as_ref()),
            ..TenantApiConfig::default()
        };
        match raw.events.as_ref().and_then(|e| e.order.as_deref()) {
            None | Some("strict") => {}
            Some("available") => api.events_pass_dead = true,
            Some(other) => self.error(
                format!("{field}.events.order"),
                format!("`{other}` is not an order: strict (the default) or available"),
            ),
        }
        if let Some(webhook) = raw.events.as_ref().and_then(|e| e.webhook.as_ref()) {
            match webhook.resolve() {
                Ok(config) => api.webhook = Some(config),
                Err(problems) => {
                    for (key, message) in problems {
                        self.error(format!("{field}.events.webhook.{key}"), message);
                    }
                }
            }
        }
        if let Some(gateway) = &raw.gateway {
            let (config, problems) = gateway.resolve(self.has_simulator);
            for (key, message) in problems {
                self.error(format!("{field}.gateway.{key}"), message);
            }
            api.gateway = Some(config);
        }
        if api.subscriptions.charge_card && api.gateway.is_none() {
            self.error(
                format!("{field}.subscriptions.charge_card"),
                "needs the tenant's `gateway:` to charge cards through",
            );
        }
        if let Some(code) = &raw.currency {
            match Currency::parse(code) {
                Ok(currency) => api.currency = Some(currency),
                Err(err) => self.error(format!("{field}.currency"), err.to_string()),
            }
        }
        let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
        for (index, key) in raw.api_keys.iter().enumerate() {
            let key_field = format!("{field}.api_keys[{index}]");
            if !valid_name(&key.id) {
                self.error(
                    format!("{key_field}.id"),
                    format!("key id `{}` {NAME_RULE}", key.id),
                );
            } else if let Some(first) = ids.insert(&key.id, index) {
                self.error(
                    format!("{key_field}.id"),
                    format!(
                        "duplicate key id `{}` (already used by api_keys[{first}])",
                        key.id
                    ),
                );
            }
            match api::parse_sha256(&key.sha256) {
                Some(sha256) => api.api_keys.push(ApiKeyConfig {
                    id: key.id.clone(),
                    sha256,
                }),
                None => self.error(
                    format!("{key_field}.sha256"),
                    "must be the sha256 of the key as 64 hex digits (e.g. `printf %s \"$KEY\" | sha256sum`)",
                ),
            }
        }
        if let Some(signing) = &raw.signing {
            if api::valid_env_name(&signing.secret_env) {
                api.signing = Some(SigningConfig {
                    secret_env: signing.secret_env.clone(),
                });
            } else {
                self.error(
                    format!("{field}.signing.secret_env"),
                    format!(
                        "`{}` is not an environment variable name (A-Z, 0-9, `_`); the secret itself never goes in this file",
                        signing.secret_env
                    ),
                );
            }
        } else if !raw.dev && !raw.api_keys.is_empty() {
            self.error(
                format!("{field}.signing"),
                "required for a tenant with api_keys (or set `dev: true` to allow unsigned requests)",
            );
        }
        api
    }

    /// A key authenticates exactly one tenant: the same key listed twice
    /// would make the tenant depend on file order.
    fn check_unique_keys(&mut self, tenants: &BTreeMap<String, TenantConfig>) {
        let mut seen: BTreeMap<[u8; 32], String> = BTreeMap::new();
        for (id, tenant) in tenants {
            for (index, key) in tenant.api.api_keys.iter().enumerate() {
                let field = format!("tenants.{id}.api_keys[{index}].sha256");
                if let Some(other) = seen.insert(key.sha256, field.clone()) {
                    self.error(field, format!("the same key is already listed at {other}"));
                }
            }
        }
    }
}

/// The engine's own bounds for `max_memory_bytes`, checked here too so the
/// error names the file.
const MIN_ENGINE_MEMORY: u64 = 64 * 1024;
const MAX_ENGINE_MEMORY: u64 = 4096 * 1024 * 1024;

const NAME_RULE: &str =
    "must be 1-64 characters of a-z, 0-9, `-` and `_`, starting with a letter or digit";

/// Tenant ids and policy names appear in URLs and metric labels: keep them plain.
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

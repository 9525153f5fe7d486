//! The YAML file as written: serde structs that mirror it one to one.
//!
//! Every struct denies unknown fields, so a typo is an error that names the
//! key instead of a setting silently ignored. Meaning (paths resolved, names
//! checked, limits merged) is given in `super::resolve`.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::policy::LimitsOverride;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub engine: RawEngine,
    pub database: Option<RawDatabase>,
    pub pg_simulator: Option<super::gateway::RawPgSimulator>,
    pub kafka: Option<super::kafka::RawKafka>,
    pub webhooks: Option<super::webhook::RawWebhooks>,
    #[serde(deserialize_with = "unique_keys")]
    pub tenants: BTreeMap<String, RawTenant>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEngine {
    pub artifact_dir: Option<PathBuf>,
    pub max_concurrent_instances: Option<u32>,
    pub max_memory_bytes: Option<u64>,
    #[serde(default)]
    pub default_limits: LimitsOverride,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    #[serde(default)]
    pub pricing: RawPricing,
    #[serde(default)]
    pub validation: Vec<RawValidation>,
    /// A development tenant: unsigned requests are allowed.
    #[serde(default)]
    pub dev: bool,
    /// Default ISO-4217 currency of the tenant's money amounts.
    pub currency: Option<String>,
    #[serde(default)]
    pub api_keys: Vec<RawApiKey>,
    pub signing: Option<RawSigning>,
    pub subscriptions: Option<RawSubscriptions>,
    /// How its payments reach a payment gateway.
    pub gateway: Option<super::gateway::RawGateway>,
    /// How its events are relayed.
    pub events: Option<RawTenantEvents>,
}

/// `events:` of a tenant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenantEvents {
    /// `strict` (default) or `available`.
    pub order: Option<String>,
    /// Where its events are POSTed.
    pub webhook: Option<super::webhook::RawWebhook>,
}

/// `database:`: where the money lives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDatabase {
    pub url: String,
    pub max_connections: Option<u32>,
    pub sqlite_synchronous: Option<String>,
    pub idempotency_retention_hours: Option<u32>,
    pub outbox_retention_days: Option<u32>,
}

/// One API key of a tenant, stored as the sha256 of the key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApiKey {
    pub id: String,
    pub sha256: String,
}

/// Request signing: the secret is read from the environment, never the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigning {
    pub secret_env: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSubscriptions {
    #[serde(default)]
    pub pay_from_credits: bool,
    pub credits_per_major_unit: Option<i64>,
    #[serde(default)]
    pub charge_card: bool,
    pub dunning_days: Option<Vec<u32>>,
}

/// One optional binding per pricing kind: named fields (not a map) so an
/// unknown kind is rejected with the list of valid ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPricing {
    pub credit: Option<RawBinding>,
    pub subscription: Option<RawBinding>,
    pub metered: Option<RawBinding>,
    pub order: Option<RawBinding>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBinding {
    pub module: PathBuf,
    pub sha256: Option<String>,
    /// Any YAML; handed to the policy as JSON text.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub limits: LimitsOverride,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawValidation {
    pub name: String,
    pub module: PathBuf,
    pub sha256: Option<String>,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub limits: LimitsOverride,
}

/// A map that refuses a repeated key. serde_yaml lets the last occurrence
/// win, which would make a duplicated tenant silently replace the first.
fn unique_keys<'de, D, V>(deserializer: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct UniqueKeys<V>(PhantomData<V>);

    impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueKeys<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }

    deserializer.deserialize_map(UniqueKeys(PhantomData))
}

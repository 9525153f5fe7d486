//! The tenants the API serves, with their keys and resolved secrets.
//!
//! Built once at start-up from the configuration and the environment: a
//! reload changes policies, not keys or signing secrets (restart for those).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::config::{Config, ConfigError, ConfigErrors, Secret};
use crate::domain::Currency;

/// One tenant's API settings, secrets resolved.
#[derive(Debug, Clone)]
pub struct TenantSettings {
    /// The tenant id.
    pub id: String,
    /// Unsigned requests allowed.
    pub dev: bool,
    /// The HMAC secret requests are signed with.
    pub signing: Option<Secret>,
    /// Default currency.
    pub currency: Option<Currency>,
    /// Renewals paid from credits.
    pub pay_from_credits: bool,
    /// Credits per major unit of a plan's currency (set when paying from
    /// credits; checked by the configuration).
    pub credits_per_major_unit: Option<i64>,
    /// Renewal orders are charged to the customer's stored card.
    pub charge_card: bool,
    /// Days after a failed renewal charge when it is tried again.
    pub dunning_days: Vec<u32>,
    /// A dead-lettered event lets its customer's later events pass
    /// (`events.order: available`) instead of holding them (strict).
    pub events_pass_dead: bool,
    /// Where its events are POSTed (`events.webhook`), secret resolved.
    pub webhook: Option<std::sync::Arc<crate::events::webhook::TenantWebhook>>,
}

impl TenantSettings {
    /// Whether every request must carry a valid signature.
    pub fn requires_signature(&self) -> bool {
        !self.dev
    }
}

#[derive(Debug, Clone)]
struct KeyEntry {
    digest: [u8; 32],
    tenant: usize,
    key_id: String,
}

/// Who an API key authenticates.
#[derive(Debug, Clone, Copy)]
pub struct Authenticated<'a> {
    /// The tenant.
    pub tenant: &'a TenantSettings,
    /// The key's id (for `actor`, never the key itself).
    pub key_id: &'a str,
}

/// Every tenant the API serves and the keys that authenticate them.
#[derive(Debug, Clone, Default)]
pub struct TenantDirectory {
    tenants: Vec<TenantSettings>,
    by_id: BTreeMap<String, usize>,
    keys: Vec<KeyEntry>,
}

impl TenantDirectory {
    /// Resolves every tenant's signing secret through `env`; a tenant that
    /// needs one and has none is an error naming the file and field.
    pub fn from_config(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<TenantDirectory, ConfigErrors> {
        let mut directory = TenantDirectory::default();
        let mut errors = ConfigErrors::new();
        for (id, tenant) in &config.tenants {
            let api = &tenant.api;
            let signing = match &api.signing {
                Some(signing) => match signing.resolve(env) {
                    Ok(secret) => Some(secret),
                    Err(message) if api.dev => {
                        // A dev tenant signs optionally: without the secret
                        // it simply accepts unsigned requests.
                        tracing::warn!(tenant = %id, "config.signing_secret_missing: {message}");
                        None
                    }
                    Err(message) => {
                        errors.push(ConfigError::new(
                            &config.file,
                            format!("tenants.{id}.signing.secret_env"),
                            message,
                        ));
                        None
                    }
                },
                None => None,
            };
            let webhook = api.webhook.as_ref().and_then(|hook| {
                let mut key = |field: &str, variable: &str| {
                    let parsed = match env(variable) {
                        Some(text) => crate::events::webhook::SigningKey::parse(&text)
                            .map_err(|why| format!("environment variable {variable}: {why}")),
                        None => Err(format!(
                            "environment variable {variable} is not set (it holds the \
                             webhook's signing secret, whsec_…)"
                        )),
                    };
                    parsed
                        .map_err(|message| {
                            errors.push(ConfigError::new(
                                &config.file,
                                format!("tenants.{id}.events.webhook.{field}"),
                                message,
                            ));
                        })
                        .ok()
                };
                let current = key("secret_env", &hook.secret_env);
                let previous = match &hook.previous_secret_env {
                    Some(variable) => Some(key("previous_secret_env", variable)?),
                    None => None,
                };
                Some(std::sync::Arc::new(crate::events::webhook::TenantWebhook {
                    config: hook.clone(),
                    key: current?,
                    previous,
                }))
            });
            let index = directory.tenants.len();
            directory.tenants.push(TenantSettings {
                id: id.clone(),
                dev: api.dev,
                signing,
                currency: api.currency,
                pay_from_credits: api.subscriptions.pay_from_credits,
                credits_per_major_unit: api.subscriptions.credits_per_major_unit,
                charge_card: api.subscriptions.charge_card,
                dunning_days: api.subscriptions.dunning_days.clone(),
                events_pass_dead: api.events_pass_dead,
                webhook,
            });
            directory.by_id.insert(id.clone(), index);
            for key in &api.api_keys {
                directory.keys.push(KeyEntry {
                    digest: key.sha256,
                    tenant: index,
                    key_id: key.id.clone(),
                });
            }
        }
        errors.into_result(directory)
    }

    /// A tenant by id.
    pub fn get(&self, tenant: &str) -> Option<&TenantSettings> {
        self.by_id.get(tenant).map(|&i| &self.tenants[i])
    }

    /// All tenants.
    pub fn iter(&self) -> impl Iterator<Item = &TenantSettings> {
        self.tenants.iter()
    }

    /// The tenant a presented API key belongs to. The key is hashed and
    /// compared with *every* configured digest in constant time, so neither
    /// the answer's timing nor its position in the list leaks anything.
    pub fn authenticate(&self, presented: &str) -> Option<Authenticated<'_>> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, key) in self.keys.iter().enumerate() {
            let equal = digest.ct_eq(&key.digest);
            index = u32::conditional_select(&index, &(i as u32), equal);
            found |= equal;
        }
        if !bool::from(found) {
            return None;
        }
        let key = &self.keys[index as usize];
        Some(Authenticated {
            tenant: &self.tenants[key.tenant],
            key_id: &key.key_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sha(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    fn config() -> Config {
        let yaml = format!(
            "tenants:\n  acme:\n    api_keys: [{{ id: a1, sha256: {} }}, {{ id: a2, sha256: {} }}]\n    signing: {{ secret_env: ACME_SECRET }}\n  dev:\n    dev: true\n    api_keys: [{{ id: d1, sha256: {} }}]\n",
            sha("key-a1"),
            sha("key-a2"),
            sha("key-d1")
        );
        crate::config::parse(Path::new("t.yaml"), &yaml).unwrap()
    }

    #[test]
    fn keys_authenticate_their_own_tenant_only() {
        let env = |name: &str| (name == "ACME_SECRET").then(|| "s3cret".to_owned());
        let directory = TenantDirectory::from_config(&config(), &env).unwrap();
        let who = directory.authenticate("key-a2").unwrap();
        assert_eq!((who.tenant.id.as_str(), who.key_id), ("acme", "a2"));
        let who = directory.authenticate("key-d1").unwrap();
        assert_eq!((who.tenant.id.as_str(), who.key_id), ("dev", "d1"));
        assert!(directory.authenticate("key-a").is_none());
        assert!(directory.authenticate("").is_none());
        assert_eq!(
            directory
                .get("acme")
                .unwrap()
                .signing
                .as_ref()
                .unwrap()
                .expose(),
            "s3cret"
        );
        assert!(directory.get("dev").unwrap().signing.is_none());
    }

    #[test]
    fn a_signed_tenant_without_its_secret_in_the_environment_is_refused() {
        let errors = TenantDirectory::from_config(&config(), &|_| None).unwrap_err();
        let text = errors.to_string();
        assert!(
            text.contains("tenants.acme.signing.secret_env") && text.contains("ACME_SECRET"),
            "{text}"
        );
        assert!(!text.contains("s3cret"));
    }
}

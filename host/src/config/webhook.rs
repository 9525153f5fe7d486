//! `tenants.<id>.events.webhook:`: a tenant without Kafka receives its
//! events by HTTPS POST (`crate::events::webhook`), signed as Standard
//! Webhooks with a secret from the environment.
//!
//! ```yaml
//! tenants:
//!   acme:
//!     events:
//!       order: strict                   # or available (see the README)
//!       webhook:
//!         url: https://hooks.acme.example/fluxpay
//!         secret_env: ACME_WEBHOOK_SECRET   # whsec_<base64 of 24-64 bytes>
//!         previous_secret_env: ACME_WEBHOOK_SECRET_OLD  # while rotating: signed under both
//!         timeout_ms: 10000             # one delivery's longest wait
//!         backoff_ms: 10000             # first retry after a failure; doubles
//!         max_backoff_ms: 3600000       # the doubling stops at an hour
//!         max_attempts: 12              # then the event is dead
//!         concurrency: 8                # customers delivered to at once
//! ```
//!
//! With the defaults a failing event is tried 12 times over about four
//! hours before it is dead.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

/// Where and how a tenant's events are POSTed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The endpoint (https, or http to a loopback address).
    pub url: Url,
    /// The environment variable holding the signing secret.
    pub secret_env: String,
    /// While the secret is being rotated: the variable holding the one
    /// being replaced. Every request then carries a signature under each,
    /// so the receiver may switch to the new secret at any time.
    pub previous_secret_env: Option<String>,
    /// The longest a delivery may take (connect, send, answer).
    pub timeout: Duration,
    /// The wait before the first retry of a failed event; each further
    /// failure doubles it, up to `max_backoff`.
    pub backoff: Duration,
    /// The longest wait between two attempts of an event.
    pub max_backoff: Duration,
    /// Attempts of one event before it is dead.
    pub max_attempts: i64,
    /// Customers whose events are delivered at once (each customer's one
    /// after the other).
    pub concurrency: usize,
}

/// Default `timeout_ms`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `timeout_ms`: a round must end well inside the relay's lease.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `backoff_ms`.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);
/// Default `max_backoff_ms`.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Default `max_attempts`.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 12;
/// Default `concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Most `concurrency`.
pub const MAX_CONCURRENCY: usize = 64;

/// The top-level `webhooks:` section: how the relay delivers every
/// tenant's webhook (all optional).
///
/// ```yaml
/// webhooks:
///   lease_ms: 60000   # a dead host's tenants move on after this
///   batch: 200        # feed events per round and tenant
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhooksConfig {
    /// How long a host's hold on a tenant's deliveries lasts without
    /// renewal. A round starts no delivery after a third of it, and every
    /// tenant's `timeout_ms` is at most a third of it, so a round ends
    /// inside the lease.
    pub lease: Duration,
    /// Feed events read per round and tenant.
    pub batch: i64,
}

/// Default `webhooks.lease_ms`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// Default `webhooks.batch`.
pub const DEFAULT_BATCH: i64 = 200;
/// Most `webhooks.batch`.
pub const MAX_BATCH: i64 = 10_000;

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            lease: DEFAULT_LEASE,
            batch: DEFAULT_BATCH,
        }
    }
}

impl WebhooksConfig {
    /// No delivery of a round starts later than this into it.
    pub fn round_budget(&self) -> Duration {
        self.lease / 3
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    pub lease_ms: Option<u64>,
    pub batch: Option<i64>,
}

impl RawWebhooks {
    /// The checked section, or every problem as `(key, message)`.
    pub(super) fn resolve(&self) -> Result<WebhooksConfig, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let lease = self.lease_ms.map_or(DEFAULT_LEASE, Duration::from_millis);
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&lease) {
            problems.push((
                "lease_ms",
                "must be within 1000..=300000 (5 minutes)".into(),
            ));
        }
        let batch = self.batch.unwrap_or(DEFAULT_BATCH);
        if !(1..=MAX_BATCH).contains(&batch) {
            problems.push(("batch", format!("{batch} must be within 1..={MAX_BATCH}")));
        }
        if problems.is_empty() {
            Ok(WebhooksConfig { lease, batch })
        } else {
            Err(problems)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub url: String,
    pub secret_env: String,
    pub previous_secret_env: Option<String>,
    pub timeout_ms: Option<u64>,
    pub backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub max_attempts: Option<i64>,
    pub concurrency: Option<usize>,
}

/// Whether `url` may receive events: https anywhere, http only on this
/// machine (a receiver in development or a test; never plain text over a
/// network).
fn acceptable(url: &Url) -> Result<(), String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials: the signature authenticates FluxPay".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a #fragment".into());
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = url.host_str().unwrap_or_default();
            let loopback = host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err("must be https:// (http:// only to a loopback address)".into())
            }
        }
        other => Err(format!("{other}:// is not https://")),
    }
}

impl RawWebhook {
    /// The checked config, or every problem as `(key, message)`.
    pub(super) fn resolve(&self) -> Result<WebhookConfig, Vec<(&'static str, String)>> {
        let mut problems = Vec::new();
        let url = match Url::parse(&self.url) {
            Ok(url) => match acceptable(&url) {
                Ok(()) => Some(url),
                Err(why) => {
                    problems.push(("url", format!("`{}` {why}", self.url)));
                    None
                }
            },
            Err(error) => {
                problems.push(("url", format!("`{}` is not a URL: {error}", self.url)));
                None
            }
        };
        if !super::api::valid_env_name(&self.secret_env) {
            problems.push((
                "secret_env",
                format!(
                    "`{}` is not an environment variable name (A-Z 0-9 _): it names the \
                     variable holding the signing secret, never the secret",
                    self.secret_env
                ),
            ));
        }
        if let Some(previous) = &self.previous_secret_env
            && (!super::api::valid_env_name(previous) || previous == &self.secret_env)
        {
            problems.push((
                "previous_secret_env",
                format!(
                    "`{previous}` must be an environment variable name (A-Z 0-9 _) other than \
                     secret_env"
                ),
            ));
        }
        let ms =
            |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
        let timeout = ms(self.timeout_ms, DEFAULT_TIMEOUT);
        if !(Duration::from_millis(100)..=MAX_TIMEOUT).contains(&timeout) {
            problems.push(("timeout_ms", "must be within 100..=30000".into()));
        }
        let backoff = ms(self.backoff_ms, DEFAULT_BACKOFF);
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&backoff) {
            problems.push((
                "backoff_ms",
                "must be within 100..=3600000 (an hour)".into(),
            ));
        }
        let max_backoff = ms(self.max_backoff_ms, DEFAULT_MAX_BACKOFF);
        if !(backoff..=Duration::from_secs(86_400)).contains(&max_backoff) {
            problems.push((
                "max_backoff_ms",
                "must be at least backoff_ms and at most 86400000 (a day)".into(),
            ));
        }
        let max_attempts = self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=30).contains(&max_attempts) {
            problems.push((
                "max_attempts",
                format!("{max_attempts} must be within 1..=30"),
            ));
        }
        let concurrency = self.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            problems.push((
                "concurrency",
                format!("{concurrency} must be within 1..={MAX_CONCURRENCY}"),
            ));
        }
        match url {
            Some(url) if problems.is_empty() => Ok(WebhookConfig {
                url,
                secret_env: self.secret_env.clone(),
                previous_secret_env: self.previous_secret_env.clone(),
                timeout,
                backoff,
                max_backoff,
                max_attempts,
                concurrency,
            }),
            _ => Err(problems),
        }
    }
}

impl WebhookConfig {
    /// How long after its `attempts`-th failed attempt an event is tried
    /// again: `backoff`, doubled per further failure, at most
    /// `max_backoff`.
    pub fn retry_after(&self, attempts: i64) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 40)).unwrap_or(40);
        self.backoff
            .checked_mul(1u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawWebhook {
        RawWebhook {
            url: url.into(),
            secret_env: "ACME_WEBHOOK_SECRET".into(),
            previous_secret_env: None,
            timeout_ms: None,
            backoff_ms: None,
            max_backoff_ms: None,
            max_attempts: None,
            concurrency: None,
        }
    }

    #[test]
    fn https_anywhere_http_only_on_loopback() {
        for url in [
            "https://hooks.acme.example/fluxpay",
            "http://127.0.0.1:9000/hook",
            "http://localhost/hook",
            "http://[::1]:8080/",
        ] {
            assert!(raw(url).resolve().is_ok(), "{url}");
        }
        for (url, why) in [
            ("http://hooks.acme.example/fluxpay", "must be https://"),
            ("http://10.0.0.1/hook", "must be https://"),
            ("ftp://hooks.acme.example/", "is not https://"),
            ("https://user:pw@hooks.acme.example/", "credentials"),
            ("hooks.acme.example", "is not a URL"),
        ] {
            let problems = raw(url).resolve().unwrap_err();
            assert_eq!(problems.len(), 1, "{url}: {problems:?}");
            assert_eq!(problems[0].0, "url");
            assert!(problems[0].1.contains(why), "{url}: {problems:?}");
        }
    }

    #[test]
    fn every_limit_is_checked_at_its_edges() {
        let mut ok = raw("https://h.example/");
        ok.timeout_ms = Some(30_000);
        ok.backoff_ms = Some(100);
        ok.max_backoff_ms = Some(86_400_000);
        ok.max_attempts = Some(30);
        ok.concurrency = Some(64);
        assert!(ok.resolve().is_ok());
        let mut bad = raw("https://h.example/");
        bad.secret_env = "whsec_abc".into();
        bad.previous_secret_env = Some("whsec_abc".into());
        bad.timeout_ms = Some(30_001);
        bad.backoff_ms = Some(99);
        bad.max_backoff_ms = Some(86_400_001);
        bad.max_attempts = Some(31);
        bad.concurrency = Some(65);
        let keys: Vec<&str> = bad.resolve().unwrap_err().iter().map(|p| p.0).collect();
        assert_eq!(
            keys,
            [
                "secret_env",
                "previous_secret_env",
                "timeout_ms",
                "backoff_ms",
                "max_backoff_ms",
                "max_attempts",
                "concurrency"
            ]
        );
        let mut inverted = raw("https://h.example/");
        inverted.backoff_ms = Some(60_000);
        inverted.max_backoff_ms = Some(59_999);
        assert_eq!(inverted.resolve().unwrap_err()[0].0, "max_backoff_ms");
    }

    #[test]
    fn the_wait_doubles_up_to_its_cap_and_the_defaults_span_hours() {
        let config = raw("https://h.example/").resolve().unwrap();
        let waits: Vec<u64> = (1..=12).map(|n| config.retry_after(n).as_secs()).collect();
        assert_eq!(
            waits,
            [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600, 3600]
        );
        // Between the first attempt and the twelfth (the last): 11 waits.
        let span: u64 = waits[..11].iter().sum();
        assert!((3 * 3600..5 * 3600).contains(&span), "{span}");
        // No overflow however many attempts are counted.
        assert_eq!(config.retry_after(i64::MAX), Duration::from_secs(3600));
        assert_eq!(config.retry_after(0), Duration::from_secs(10));
    }
}

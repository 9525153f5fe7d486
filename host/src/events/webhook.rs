//! Tenant webhooks: the relay POSTs each event of a tenant that configured
//! `events.webhook` to its endpoint, as a CloudEvent in structured JSON
//! (`application/cloudevents+json`), signed as [Standard Webhooks]:
//!
//! - `webhook-id`: the event's id (the CloudEvents `id`, the same on every
//!   attempt and in the feed and on Kafka), for the receiver to drop
//!   duplicates;
//! - `webhook-timestamp`: when this attempt was signed, Unix seconds;
//! - `webhook-signature`: `v1,` and the base64 HMAC-SHA256, under the
//!   tenant's secret, of `{id}.{timestamp}.{body}` (while the secret is
//!   rotated, one such signature per secret, separated by a space).
//!
//! A 2xx answer delivers the event; anything else (another status, a
//! redirect, no answer within `timeout_ms`) fails this attempt. A failed
//! event is tried again after `backoff_ms`, doubled per failure up to
//! `max_backoff_ms`, and is dead after `max_attempts` (`relay_events`:
//! `FAILING` with `next_attempt_at`, then `DEAD`; the admin API lists,
//! replays and skips it as it does Kafka's).
//!
//! Order per customer: a customer's events go one after the other, and
//! while one of them is failing its later events wait (`HELD`); a dead one
//! holds them too under the tenant's strict order (`events.order`).
//! Other customers' events go on meanwhile, `concurrency` customers at
//! once.
//!
//! An endpoint that answers nothing at all (a round in which every attempt
//! failed) is not sent new events: the tenant rests until its earliest
//! failing event is due, at most `backoff_ms` (its host keeps the lease
//! meanwhile), and then only the oldest due failing event is tried (a
//! probe; with none due, a normal round). When the probe is delivered
//! every failing event is due at once, so that a recovered endpoint
//! receives the backlog without waiting out each event's backoff. A rest
//! never outlasts `backoff_ms`, so an event that fails on its own (a
//! receiver's bug) delays other customers' events by a couple of
//! `backoff_ms` at most.
//!
//! One host delivers a tenant at a time (the `webhook` cursor's lease);
//! the cursor moves past every event of a round in the transaction that
//! records those that wait. A host that stops mid-round leaves the cursor
//! where it was: the next round delivers those events again, in order
//! (at least once; receivers deduplicate by `webhook-id`).
//!
//! [Standard Webhooks]: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Leases, RelayRun, TenantTimes, Write, pending_row};
use crate::api::tenant::views::CloudEventView;
use crate::app::App;
use crate::config::{WebhookConfig, WebhooksConfig};
use crate::store::{EventRecord, Queries, RelayEventRecord, RelayQueries, StoreError};

/// The sink name of the webhook cursor.
pub const SINK: &str = "webhook";
/// The `content-type` of a structured-mode CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// A tenant's webhook, its secret resolved.
#[derive(Debug, Clone)]
pub struct TenantWebhook {
    /// Where and how.
    pub config: WebhookConfig,
    /// The signing secret.
    pub key: SigningKey,
    /// The secret being replaced, while it is rotated.
    pub previous: Option<SigningKey>,
}

impl TenantWebhook {
    /// The `webhook-signature` header: a signature under the secret, and
    /// under the previous one while it is rotated.
    pub fn signature(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut header = self.key.sign(id, timestamp, body);
        if let Some(previous) = &self.previous {
            header.push(' ');
            header.push_str(&previous.sign(id, timestamp, body));
        }
        header
    }
}

/// A Standard Webhooks signing secret: `whsec_` and the base64 of 24 to 64
/// random bytes (what the spec recommends and its libraries generate).
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(…)")
    }
}

impl SigningKey {
    /// The key of `text` (`whsec_<base64>`).
    pub fn parse(text: &str) -> Result<SigningKey, String> {
        let encoded = text
            .strip_prefix("whsec_")
            .ok_or("must start with whsec_ (Standard Webhooks secret format)")?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "after whsec_ must come base64".to_owned())?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!(
                "holds {} bytes: a secret is 24 to 64 random bytes",
                key.len()
            ));
        }
        Ok(SigningKey(key))
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    }
}

/// The request body of `event` of `tenant`: the feed's CloudEvent (JSON
/// format) with the `tenantid` extension, as on Kafka.
pub fn body(tenant: &str, event: &EventRecord) -> Vec<u8> {
    let mut value = serde_json::to_value(CloudEventView::from(event.clone()))
        .expect("an event view is plain JSON");
    value["tenantid"] = serde_json::Value::String(tenant.to_owned());
    serde_json::to_vec(&value).expect("JSON values serialize")
}

/// Seconds since the epoch by the system clock (what receivers compare the
/// signature's timestamp with).
fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// How long the relay waits between rounds that found nothing to do.
pub const IDLE: Duration = Duration::from_millis(100);

/// Delivers the outbox to the tenants' webhooks, round after round: at
/// once while batches come full, else after [`IDLE`]. `serve` runs it as a
/// task of its own.
pub async fn run(app: App, relay: Arc<WebhookRelay>) {
    loop {
        let run = relay.run_once(&app).await;
        if run.published > 0 || run.failed > 0 || run.dead > 0 {
            tracing::debug!(?run, "relay.webhook_round");
        }
        if !run.more {
            tokio::time::sleep(IDLE).await;
        }
    }
}

/// The webhook relay of one host.
pub struct WebhookRelay {
    settings: WebhooksConfig,
    client: reqwest::Client,
    leases: Leases,
    /// Tenants whose endpoint failed every attempt of its last round: until
    /// when they rest (then one probe goes).
    resting: TenantTimes,
}

impl WebhookRelay {
    /// A relay delivering as `owner` (unique per host process).
    pub fn new(
        settings: WebhooksConfig,
        owner: impl Into<String>,
    ) -> Result<WebhookRelay, reqwest::Error> {
        let client = reqwest::Client::builder()
            // A redirect is not a delivery: the receiver must answer itself.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("FluxPay-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(WebhookRelay {
            settings,
            client,
            leases: Leases::new(SINK, owner.into(), settings.lease),
            resting: TenantTimes::default(),
        })
    }

    /// The host's name in the cursors' leases.
    pub fn owner(&self) -> &str {
        self.leases.owner()
    }

    /// One round: every webhook tenant whose lease this host holds or
    /// takes.
    pub async fn run_once(&self, app: &App) -> RelayRun {
        let mut run = RelayRun::default();
        for (tenant, hook, pass_dead) in webhook_tenants(app) {
            match self.relay_tenant(app, &tenant, &hook, pass_dead).await {
                Ok(None) => {}
                Ok(Some(round)) => {
                    run.tenants += 1;
                    run.published += round.delivered;
                    run.dead += round.dead;
                    run.held += round.held;
                    run.more |= round.full;
                    if round.failed > 0 {
                        run.failed += 1;
                    }
                }
                Err(error) => {
                    run.failed += 1;
                    tracing::warn!(%tenant, %error, "relay.webhook_failed");
                }
            }
        }
        run
    }

    /// Gives up this host's leases (on shutdown).
    pub async fn release(&self, app: &App) {
        let tenants: Vec<String> = webhook_tenants(app).into_iter().map(|t| t.0).collect();
        self.leases.release(app, &tenants).await;
    }

    async fn relay_tenant(
        &self,
        app: &App,
        tenant: &str,
        hook: &Arc<TenantWebhook>,
        pass_dead: bool,
    ) -> Result<Option<TenantRound>, StoreError> {
        let now = app.now();
        let resting = self.resting.get(tenant);
        if resting.is_some_and(|until| now < until) {
            // Resting is this host's decision: it keeps the tenant (else
            // another host, knowing nothing of the rest, would try every
            // due event at once). Taken over anyway, it forgets the rest.
            if !self.leases.keep(app, tenant).await? {
                self.resting.set(tenant, None);
            }
            return Ok(None);
        }
        let Some((cursor, rows)) = self.leases.begin(app, tenant).await? else {
            return Ok(None);
        };
        let mut round = TenantRound::default();
        let mut rows: BTreeMap<i64, RelayEventRecord> =
            rows.into_iter().map(|r| (r.position, r)).collect();
        let mut writes = Vec::new();
        let sender = Sender {
            client: self.client.clone(),
            hook: hook.clone(),
            tenant: tenant.to_owned(),
            pass_dead,
            now,
            // A delivery starts no later than a third into the lease, and
            // lasts at most another third (the config checks timeouts).
            stop_starting: tokio::time::Instant::now() + self.settings.round_budget(),
        };

        // The endpoint failed everything last time: one probe first, the
        // oldest failing event that is due (none due: a normal round, whose
        // first attempts tell as much).
        if resting.is_some() {
            let probe = rows
                .values()
                .filter(|r| r.state == "FAILING" && r.next_attempt_at.is_none_or(|at| at <= now))
                .min_by_key(|r| r.position)
                .cloned();
            if let Some(row) = probe {
                let event = app.store().event_by_id(tenant, &row.event_id).await?;
                let outcome = match event {
                    Some(event) => sender.attempt(Entry::Row(row.clone(), event)).await,
                    None => Attempt::Gone(row.event_id.clone()),
                };
                round.count(&outcome);
                // Still down: rest again (one request per rest).
                let down = match &outcome {
                    Attempt::Failed(_) => Some(now + hook.config.backoff.as_millis() as i64),
                    _ => None,
                };
                if let Some(write) = outcome.write() {
                    apply(&mut rows, &write);
                    writes.push(write);
                }
                if let Some(until) = down {
                    self.resting.set(tenant, Some(until));
                    self.leases
                        .finish(app, tenant, &writes, (cursor.position, cursor.position))
                        .await?;
                    return Ok(Some(round));
                }
                // Back: every failing event is due now.
                for row in rows.values_mut().filter(|r| r.state == "FAILING") {
                    row.next_attempt_at = Some(now);
                }
            }
            self.resting.set(tenant, None);
        }

        // Every customer's queue: its waiting rows, then the feed after the
        // cursor, in feed order.
        let batch = self.settings.batch;
        let events = app.store().events(tenant, cursor.position, batch).await?;
        round.full = events.len() as i64 == batch;
        let mut queues: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        // Customers stopped by a row: what waits behind it is not read (a
        // customer held behind a dead event may have many rows).
        let mut stopped: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for row in rows.values() {
            let blocks = match row.state.as_str() {
                "DEAD" => !pass_dead,
                "FAILING" => row.next_attempt_at.is_some_and(|at| at > now),
                _ => false,
            };
            let entry = match row.state.as_str() {
                _ if stopped.contains(row.customer_id.as_str()) => Entry::Blocker(row.clone()),
                "DEAD" => Entry::Blocker(row.clone()),
                _ if blocks => Entry::Blocker(row.clone()),
                _ => match app.store().event_by_id(tenant, &row.event_id).await? {
                    Some(event) => Entry::Row(row.clone(), event),
                    // Pruned meanwhile: nothing left to deliver.
                    None => {
                        writes.push(Write::Drop(row.event_id.clone()));
                        continue;
                    }
                },
            };
            if blocks {
                stopped.insert(row.customer_id.as_str());
            }
            queues
                .entry(row.customer_id.clone())
                .or_default()
                .push(entry);
        }
        let through = events.last().map_or(cursor.position, |e| e.feed_seq);
        for event in events {
            queues
                .entry(event.subject.clone())
                .or_default()
                .push(Entry::Feed(event));
        }

        // The customers, `concurrency` at once, each one's events in order.
        let sender = Arc::new(sender);
        let mut running = tokio::task::JoinSet::new();
        let mut queues = queues.into_values();
        let mut attempted = 0u64;
        loop {
            while running.len() < hook.config.concurrency {
                let Some(queue) = queues.next() else { break };
                let sender = sender.clone();
                running.spawn(async move { sender.customer(queue).await });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            let outcomes = match done {
                Ok(outcomes) => outcomes,
                // A delivery task cannot panic by design; if one did, its
                // customer's events are sent again next round (the cursor
                // does not move).
                Err(error) => {
                    running.abort_all();
                    tracing::error!(tenant, %error, "relay.webhook_task_failed");
                    round.failed += 1;
                    return Ok(Some(round));
                }
            };
            for outcome in outcomes {
                attempted += u64::from(outcome.attempted());
                round.count(&outcome);
                if let Some(write) = outcome.write() {
                    apply(&mut rows, &write);
                    writes.push(write);
                }
            }
        }
        if attempted > 0 && round.delivered == 0 {
            // Nothing got through: rest until the earliest retry.
            self.resting
                .set(tenant, Some(rest_until(&rows, now, &hook.config)));
            round.full = false;
        }
        if through > cursor.position {
            crate::crash_points::reached("relay.webhook_delivered", tenant);
        }
        self.leases
            .finish(app, tenant, &writes, (cursor.position, through))
            .await?;
        Ok(Some(round))
    }
}

/// Every tenant with a webhook: id, webhook, whether dead events let later
/// ones pass.
fn webhook_tenants(app: &App) -> Vec<(String, Arc<TenantWebhook>, bool)> {
    app.tenants()
        .iter()
        .filter_map(|t| {
            t.webhook
                .as_ref()
                .map(|hook| (t.id.clone(), hook.clone(), t.events_pass_dead))
        })
        .collect()
}

/// Until when a tenant whose endpoint failed everything rests: its
/// earliest failing event's retry, and never longer than `backoff_ms` (a
/// rest must not follow one event's long retry schedule: if that event is
/// itself the problem, other customers' new events would wait behind it).
fn rest_until(rows: &BTreeMap<i64, RelayEventRecord>, now: i64, config: &WebhookConfig) -> i64 {
    let longest = now + config.backoff.as_millis() as i64;
    rows.values()
        .filter(|r| r.state == "FAILING")
        .filter_map(|r| r.next_attempt_at)
        .min()
        .unwrap_or(longest)
        .clamp(now, longest)
}

/// Keeps the in-memory rows as `write` leaves them.
fn apply(rows: &mut BTreeMap<i64, RelayEventRecord>, write: &Write) {
    match write {
        Write::Put(row) => {
            rows.insert(row.position, row.clone());
        }
        Write::Drop(id) => rows.retain(|_, r| &r.event_id != id),
    }
}

/// One item of a customer's queue.
enum Entry {
    /// A waiting row that may go (due, held, replayed), with its event.
    Row(RelayEventRecord, EventRecord),
    /// A row not tried this round: dead, failing and not yet due (these
    /// stop their customer's later events), or behind one of those.
    Blocker(RelayEventRecord),
    /// An event from the feed.
    Feed(EventRecord),
}

/// What became of one entry.
enum Attempt {
    Delivered(Option<String>),
    /// Tried and failed: the row as it now stands (`FAILING` or `DEAD`).
    Failed(RelayEventRecord),
    /// Not tried: waits behind an earlier event of its customer, or for
    /// the next round (`Some`: a new `HELD` row).
    Waits(Option<RelayEventRecord>),
    /// Its event was pruned meanwhile: the row goes.
    Gone(String),
}

impl Attempt {
    fn attempted(&self) -> bool {
        matches!(self, Attempt::Delivered(_) | Attempt::Failed(_))
    }

    fn write(&self) -> Option<Write> {
        match self {
            Attempt::Delivered(row) => row.clone().map(Write::Drop),
            Attempt::Failed(row) => Some(Write::Put(row.clone())),
            Attempt::Waits(row) => row.clone().map(Write::Put),
            Attempt::Gone(id) => Some(Write::Drop(id.clone())),
        }
    }
}

/// What a tenant's round did.
#[derive(Default)]
struct TenantRound {
    delivered: u64,
    failed: u64,
    dead: u64,
    held: u64,
    full: bool,
}

impl TenantRound {
    fn count(&mut self, attempt: &Attempt) {
        match attempt {
            Attempt::Delivered(_) => self.delivered += 1,
            Attempt::Failed(row) if row.state == "DEAD" => {
                self.failed += 1;
                self.dead += 1;
            }
            Attempt::Failed(_) => self.failed += 1,
            Attempt::Waits(Some(_)) => self.held += 1,
            Attempt::Waits(None) | Attempt::Gone(_) => {}
        }
    }
}

/// What delivering a tenant's round needs, shared by its customers' tasks.
struct Sender {
    client: reqwest::Client,
    hook: Arc<TenantWebhook>,
    tenant: String,
    pass_dead: bool,
    /// The round's time (`app.now()`), for rows and retries.
    now: i64,
    /// No delivery starts after this.
    stop_starting: tokio::time::Instant,
}

impl Sender {
    /// A customer's queue, in order: everything after a failing or (under
    /// strict order) dead event waits.
    async fn customer(&self, queue: Vec<Entry>) -> Vec<Attempt> {
        let mut outcomes = Vec::with_capacity(queue.len());
        let mut blocked = false;
        for entry in queue {
            let outcome = match entry {
                Entry::Blocker(row) => {
                    blocked |= row.state == "FAILING" || (row.state == "DEAD" && !self.pass_dead);
                    continue;
                }
                entry if blocked || tokio::time::Instant::now() >= self.stop_starting => {
                    blocked = true;
                    match entry {
                        Entry::Feed(event) => {
                            Attempt::Waits(Some(pending_row(&event, "HELD", 0, None, self.now)))
                        }
                        _ => Attempt::Waits(None),
                    }
                }
                entry => self.attempt(entry).await,
            };
            if let Attempt::Failed(row) = &outcome {
                blocked |= row.state == "FAILING" || !self.pass_dead;
            }
            outcomes.push(outcome);
        }
        outcomes
    }

    /// Delivers one entry's event.
    async fn attempt(&self, entry: Entry) -> Attempt {
        let (row, event) = match entry {
            Entry::Row(row, event) => (Some(row), event),
            Entry::Feed(event) => (None, event),
            Entry::Blocker(_) => return Attempt::Waits(None),
        };
        let error = match self.post(&event).await {
            Ok(()) => return Attempt::Delivered(row.map(|r| r.event_id)),
            Err(error) => error,
        };
        let config = &self.hook.config;
        let mut next = row.unwrap_or_else(|| pending_row(&event, "FAILING", 0, None, self.now));
        next.attempts += 1;
        next.last_error = Some(error.clone());
        next.updated_at = self.now;
        // A replayed event that fails again is dead again (as on Kafka).
        if next.state == "REPLAY" || next.attempts >= config.max_attempts {
            next.state = "DEAD".into();
            next.next_attempt_at = None;
            tracing::warn!(
                tenant = %self.tenant,
                event_id = %next.event_id,
                attempts = next.attempts,
                %error,
                "relay.webhook_dead"
            );
        } else {
            next.state = "FAILING".into();
            next.next_attempt_at =
                Some(self.now + config.retry_after(next.attempts).as_millis() as i64);
        }
        Attempt::Failed(next)
    }

    /// One signed POST; `Err` says why it is not delivered.
    async fn post(&self, event: &EventRecord) -> Result<(), String> {
        let body = body(&self.tenant, event);
        let timestamp = unix_seconds();
        let signature = self.hook.signature(&event.event_id, timestamp, &body);
        let mut answer = self
            .client
            .post(self.hook.config.url.clone())
            .timeout(self.hook.config.timeout)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header("webhook-id", &event.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = answer.status();
        if status.is_success() {
            return Ok(());
        }
        // What the receiver said, shortened (it lands in relay_events and
        // the admin API): at most 1 KiB is read, whatever it sends.
        let mut read = Vec::new();
        while read.len() < 1024 {
            match answer.chunk().await {
                Ok(Some(chunk)) => read.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let said: String = String::from_utf8_lossy(&read).chars().take(200).collect();
        Err(format!("HTTP {}: {}", status.as_u16(), said.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries.
    #[test]
    fn signs_as_the_standard_webhooks_reference_example() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            key.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn while_rotating_a_request_is_signed_under_both_secrets() {
        let key = |byte: u8| {
            SigningKey::parse(&format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode([byte; 32])
            ))
            .unwrap()
        };
        let config = crate::config::parse(
            std::path::Path::new("t.yaml"),
            "tenants: { t: { events: { webhook: { url: \"https://h.example/\", \
             secret_env: NEW } } } }",
        )
        .unwrap();
        let mut hook = TenantWebhook {
            config: config.tenants["t"].api.webhook.clone().unwrap(),
            key: key(1),
            previous: None,
        };
        assert_eq!(
            hook.signature("evt_1", 7, b"{}"),
            key(1).sign("evt_1", 7, b"{}")
        );
        hook.previous = Some(key(2));
        assert_eq!(
            hook.signature("evt_1", 7, b"{}"),
            format!(
                "{} {}",
                key(1).sign("evt_1", 7, b"{}"),
                key(2).sign("evt_1", 7, b"{}")
            )
        );
    }

    #[test]
    fn a_secret_is_whsec_and_24_to_64_bytes_of_base64() {
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
        assert!(SigningKey::parse(&format!("whsec_{}", b64(24))).is_ok());
        assert!(SigningKey::parse(&format!("whsec_{}", b64(64))).is_ok());
        for (text, why) in [
            (format!("whsec_{}", b64(23)), "24 to 64"),
            (format!("whsec_{}", b64(65)), "24 to 64"),
            (b64(32), "whsec_"),
            ("whsec_not base64!".to_owned(), "base64"),
        ] {
            let error = SigningKey::parse(&text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
        assert_eq!(format!("{:?}", SigningKey(vec![1; 32])), "SigningKey(…)");
    }

    #[test]
    fn the_body_is_a_structured_cloudevent_with_the_tenant() {
        let event = EventRecord {
            feed_seq: 7,
            event_id: "evt_1".into(),
            event_type: "order.paid".into(),
            source: "/fluxpay/tenants/acme".into(),
            subject: "cus_1".into(),
            time: 1_763_640_000_123,
            data: r#"{"orderId":"ord_1"}"#.into(),
            transaction_id: "tx_1".into(),
            request_id: Some("req_1".into()),
        };
        let value: serde_json::Value = serde_json::from_slice(&body("acme", &event)).unwrap();
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["id"], "evt_1");
        assert_eq!(value["type"], "order.paid");
        assert_eq!(value["subject"], "cus_1");
        assert_eq!(value["time"], "2025-11-20T12:00:00.123Z");
        assert_eq!(value["datacontenttype"], "application/json");
        assert_eq!(value["data"]["orderId"], "ord_1");
        assert_eq!(value["position"], 7);
        assert_eq!(value["tenantid"], "acme");
        assert_eq!(value["requestid"], "req_1");
    }
}

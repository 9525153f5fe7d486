//! Tenant webhooks, on both backends, against a receiver over real HTTP
//! that checks every request's signature with the Standard Webhooks
//! reference library: every event is POSTed once as a structured
//! CloudEvent; a failing event is retried with backoff while its
//! customer's later events wait and other customers' go on; an event that
//! keeps failing is dead, listed, replayed and skipped like Kafka's; an
//! endpoint that is down is probed once per backoff, not flooded, and gets
//! its backlog in order when it returns; two hosts deliver each event once;
//! and the real binary delivers what `serve` is configured with.

mod harness;
mod payment_steps;
mod process;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use fluxpay_host::config::WebhooksConfig;
use fluxpay_host::events::RelayRun;
use fluxpay_host::events::webhook::WebhookRelay;
use fluxpay_host::store::{EventRecord, Queries};
use harness::{Tenant, TestHost, WEBHOOK_SECRET, backends};
use process::{Server, database_url, http};
use serde_json::{Value, json};

/// How the receiver answers.
#[derive(Debug, Clone, PartialEq)]
enum Mode {
    /// 204 to everything.
    Up,
    /// 503 to everything.
    Down,
    /// 500 to this customer's events, 204 to the others'.
    Refuse(String),
}

/// One request as received.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    customer: String,
    position: i64,
    body: Value,
    raw: Bytes,
    headers: HeaderMap,
    /// Answered 2xx.
    accepted: bool,
}

#[derive(Default)]
struct ReceiverState {
    mode: Mutex<Option<Mode>>,
    log: Mutex<Vec<Delivery>>,
    arrived: tokio::sync::Notify,
}

/// An HTTP endpoint on 127.0.0.1 that verifies each request's signature
/// (an unverified one is refused with 401 and fails the test) and records
/// it.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    axum::extract::State(state): axum::extract::State<Arc<ReceiverState>>,
    headers: HeaderMap,
    raw: Bytes,
) -> (StatusCode, &'static str) {
    let verifier = standardwebhooks::Webhook::new(WEBHOOK_SECRET).expect("the test secret");
    if verifier.verify(&raw, &headers).is_err() {
        return (StatusCode::UNAUTHORIZED, "bad signature");
    }
    let body: Value = serde_json::from_slice(&raw).expect("a JSON body");
    let customer = body["subject"].as_str().unwrap_or_default().to_owned();
    let mode = state.mode.lock().unwrap().clone().unwrap_or(Mode::Up);
    let answer = match mode {
        Mode::Up => (StatusCode::NO_CONTENT, ""),
        Mode::Down => (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance"),
        Mode::Refuse(c) if c == customer => (StatusCode::INTERNAL_SERVER_ERROR, "handler crashed"),
        Mode::Refuse(_) => (StatusCode::NO_CONTENT, ""),
    };
    state.log.lock().unwrap().push(Delivery {
        id: headers["webhook-id"].to_str().unwrap().to_owned(),
        customer,
        position: body["position"].as_i64().unwrap(),
        body,
        raw,
        headers,
        accepted: answer.0.is_success(),
    });
    state.arrived.notify_waiters();
    answer
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(ReceiverState::default());
        let router = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Receiver { url, state, task }
    }

    fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = Some(mode);
    }

    fn log(&self) -> Vec<Delivery> {
        self.state.log.lock().unwrap().clone()
    }

    /// Requests for `customer`'s events.
    fn of(&self, customer: &str) -> Vec<Delivery> {
        self.log()
            .into_iter()
            .filter(|d| d.customer == customer)
            .collect()
    }

    /// Waits (up to a minute) until every event of `ids` was accepted.
    async fn wait_for_accepted(&self, ids: &[String]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let arrived = self.state.arrived.notified();
            let log = self.log();
            let missing = ids
                .iter()
                .filter(|id| !log.iter().any(|d| d.accepted && &&d.id == id))
                .count();
            if missing == 0 {
                return;
            }
            tokio::time::timeout_at(deadline, arrived)
                .await
                .unwrap_or_else(|_| panic!("{missing} of {} never delivered", ids.len()));
        }
    }
}

/// The test config with globex POSTing its events to `url`: retries after
/// 1 s, 2 s, 4 s, 4 s; dead after 4 attempts.
fn with_webhook(yaml: String, url: &str, order: &str) -> String {
    let anchor = "  globex:\n    dev: true\n";
    assert!(yaml.contains(anchor));
    yaml.replace(
        anchor,
        &format!(
            "{anchor}    events:\n      order: {order}\n      webhook: {{ url: \"{url}\", \
             secret_env: TEST_WEBHOOK_SECRET, timeout_ms: 2000, backoff_ms: 1000, \
             max_backoff_ms: 4000, max_attempts: 4, concurrency: 4 }}\n"
        ),
    )
}

async fn host_with(backend: harness::Backend, receiver: &Receiver, order: &str) -> TestHost {
    TestHost::start_with(backend, |yaml| with_webhook(yaml, &receiver.url, order)).await
}

/// A webhook relay with the default settings, delivering as `owner`.
fn relay(owner: &str) -> WebhookRelay {
    WebhookRelay::new(WebhooksConfig::default(), owner).expect("a webhook relay")
}

/// Every event of globex's feed, in feed order.
async fn feed(host: &TestHost) -> Vec<EventRecord> {
    host.app.store().events("globex", 0, 100_000).await.unwrap()
}

/// Runs rounds until one delivers nothing and wants no more; what they did
/// in all.
async fn drain(relay: &WebhookRelay, host: &TestHost) -> RelayRun {
    let mut all = RelayRun::default();
    for _ in 0..1_000 {
        let run = relay.run_once(&host.app).await;
        all.published += run.published;
        all.failed += run.failed;
        all.dead += run.dead;
        all.held += run.held;
        if run.published == 0 && !run.more {
            return all;
        }
    }
    panic!("the relay kept finding events");
}

/// The feed positions of the accepted deliveries of each customer, first
/// copies only, in arrival order.
fn accepted_positions(receiver: &Receiver) -> BTreeMap<String, Vec<i64>> {
    let mut seen = std::collections::HashSet::new();
    let mut by_customer: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for d in receiver.log().into_iter().filter(|d| d.accepted) {
        if seen.insert(d.id.clone()) {
            by_customer.entry(d.customer).or_default().push(d.position);
        }
    }
    by_customer
}

/// The feed positions of each customer, in feed order.
fn feed_positions(events: &[EventRecord]) -> BTreeMap<String, Vec<i64>> {
    let mut by_customer: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for e in events {
        by_customer
            .entry(e.subject.clone())
            .or_default()
            .push(e.feed_seq);
    }
    by_customer
}

/// The ids of the feed, as the real binary serves it.
fn feed_ids(server: &Server) -> Vec<String> {
    let (status, body) = http(server, "GET", "/api/v1/events?limit=1000", None, None);
    assert_eq!(status, 200);
    process::json_of(&body)["result"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn webhook_status(host: &TestHost) -> Value {
    let answer = payment_steps::admin(host, "GET", "/admin/v1/events/status", None).await;
    answer.expect(200, "OK");
    answer.result()["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "globex" && t["sink"] == "webhook")
        .cloned()
        .expect("globex's webhook status")
}

async fn dead(host: &TestHost) -> Value {
    let answer = payment_steps::admin(
        host,
        "GET",
        "/admin/v1/events/dead?tenant=globex&sink=webhook",
        None,
    )
    .await;
    answer.expect(200, "OK");
    answer.result().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_posted_once_as_a_signed_structured_cloudevent_in_order() {
    for backend in backends() {
        let receiver = Receiver::start().await;
        let host = host_with(backend, &receiver, "strict").await;
        // Customers, grants, uses and a refund.
        for customer in ["c1", "c2", "c3"] {
            host.funded_customer(Tenant::Globex, customer, 100).await;
            for n in 0..3 {
                host.use_credits(
                    Tenant::Globex,
                    customer,
                    "render",
                    1,
                    &format!("u-{customer}-{n}"),
                )
                .await
                .expect(201, "OK");
            }
        }
        let used = host
            .use_credits(Tenant::Globex, "c1", "render", 7, "u-refunded")
            .await;
        host.call(
            Tenant::Globex,
            "POST",
            "/api/v1/credits/refund",
            Some(json!({ "transactionId": used.result()["transactionId"], "credits": 2 })),
            Some("refund-1"),
        )
        .await
        .expect(201, "OK");
        let events = feed(&host).await;
        let relay = relay("host-a");
        let run = drain(&relay, &host).await;
        assert_eq!(run.published as usize, events.len(), "{backend:?}: {run:?}");
        assert_eq!((run.failed, run.dead, run.held), (0, 0, 0));

        // Each event exactly once, as its feed entry.
        let log = receiver.log();
        assert_eq!(log.len(), events.len());
        let by_id: HashMap<&str, &Delivery> = log.iter().map(|d| (d.id.as_str(), d)).collect();
        for event in &events {
            let d = by_id[event.event_id.as_str()];
            assert_eq!(d.headers["content-type"], "application/cloudevents+json");
            assert_eq!(d.body["specversion"], "1.0");
            assert_eq!(d.body["id"], event.event_id.as_str());
            assert_eq!(d.body["type"], event.event_type.as_str());
            assert_eq!(d.body["source"], event.source.as_str());
            assert_eq!(d.body["subject"], event.subject.as_str());
            assert_eq!(d.body["position"], event.feed_seq);
            assert_eq!(d.body["tenantid"], "globex");
            assert_eq!(d.body["transactionid"], event.transaction_id.as_str());
            assert_eq!(d.body["requestid"], json!(event.request_id));
            assert_eq!(
                d.body["data"],
                serde_json::from_str::<Value>(&event.data).unwrap()
            );
        }
        assert_eq!(accepted_positions(&receiver), feed_positions(&events));

        // The signature is what the receiver verified: another secret or
        // a changed body fails.
        let sample = &log[0];
        let other =
            standardwebhooks::Webhook::new("whsec_b3RoZXItc2VjcmV0LW9mLWF0LWxlYXN0LTI0LWJ5dGVz")
                .unwrap();
        assert!(other.verify(&sample.raw, &sample.headers).is_err());
        let ours = standardwebhooks::Webhook::new(WEBHOOK_SECRET).unwrap();
        assert!(ours.verify(&sample.raw, &sample.headers).is_ok());
        let mut changed = sample.raw.to_vec();
        changed.push(b' ');
        assert!(ours.verify(&changed, &sample.headers).is_err());

        let status = webhook_status(&host).await;
        assert_eq!(status["position"], events.last().unwrap().feed_seq);
        assert_eq!(status["pending"], 0, "{status}");
        assert_eq!(
            (&status["failing"], &status["held"], &status["dead"]),
            (&json!(0), &json!(0), &json!(0))
        );
        assert_eq!(status["owner"], "host-a");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_is_retried_with_backoff_while_its_customer_waits_and_others_go_on() {
    for backend in backends() {
        let receiver = Receiver::start().await;
        let host = host_with(backend, &receiver, "strict").await;
        for customer in ["bad", "ok"] {
            host.funded_customer(Tenant::Globex, customer, 100).await;
            host.use_credits(
                Tenant::Globex,
                customer,
                "render",
                1,
                &format!("u-{customer}"),
            )
            .await
            .expect(201, "OK");
        }
        receiver.set(Mode::Refuse("bad".into()));
        let relay = relay("host-a");
        let run = relay.run_once(&host.app).await;
        // `ok`'s three events went; `bad`'s first failed, the others wait.
        assert_eq!((run.published, run.held), (3, 2), "{backend:?}: {run:?}");
        assert_eq!(receiver.of("bad").len(), 1);
        let status = webhook_status(&host).await;
        assert_eq!(
            (&status["failing"], &status["held"]),
            (&json!(1), &json!(2)),
            "{status}"
        );

        // Not due before its backoff (1 s), even as new events come.
        host.use_credits(Tenant::Globex, "bad", "render", 1, "u-bad-2")
            .await
            .expect(201, "OK");
        host.use_credits(Tenant::Globex, "ok", "render", 1, "u-ok-2")
            .await
            .expect(201, "OK");
        host.advance(999);
        let run = relay.run_once(&host.app).await;
        assert_eq!((run.published, run.held), (1, 1), "{run:?}");
        assert_eq!(receiver.of("bad").len(), 1);

        // Due: fails again, next after 2 s.
        host.advance(1);
        relay.run_once(&host.app).await;
        assert_eq!(receiver.of("bad").len(), 2);
        host.advance(1_999);
        relay.run_once(&host.app).await;
        assert_eq!(receiver.of("bad").len(), 2);

        // The receiver is fixed: at the next due time the failing event
        // and everything behind it go, in feed order.
        receiver.set(Mode::Up);
        host.advance(1);
        let run = drain(&relay, &host).await;
        assert_eq!(run.published, 4, "{run:?}");
        let events = feed(&host).await;
        assert_eq!(accepted_positions(&receiver), feed_positions(&events));
        let first = &receiver.of("bad")[0];
        assert!(!first.accepted);
        let status = webhook_status(&host).await;
        assert_eq!(
            (&status["failing"], &status["held"], &status["pending"]),
            (&json!(0), &json!(0), &json!(0)),
            "{status}"
        );
        host.finish().await;
    }
}

/// Fails `bad`'s next event until it is dead (4 attempts, the clock moved
/// on past each backoff and past the rest after the last), the receiver up
/// again at the end; other customers' events are delivered meanwhile.
async fn kill_bads_next_event(host: &TestHost, relay: &WebhookRelay, receiver: &Receiver) {
    let before = receiver.of("bad").len();
    receiver.set(Mode::Refuse("bad".into()));
    relay.run_once(&host.app).await;
    for wait in [1_000, 2_000, 4_000] {
        host.advance(wait);
        relay.run_once(&host.app).await;
    }
    let tried = receiver.of("bad");
    assert_eq!(tried.len(), before + 4);
    assert!(
        tried[before..]
            .iter()
            .all(|d| !d.accepted && d.id == tried[before].id)
    );
    receiver.set(Mode::Up);
    host.advance(4_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_keeps_failing_is_dead_holds_its_customer_and_is_replayed_or_skipped() {
    for backend in backends() {
        let receiver = Receiver::start().await;
        let host = host_with(backend, &receiver, "strict").await;
        host.funded_customer(Tenant::Globex, "bad", 100).await;
        host.funded_customer(Tenant::Globex, "ok", 100).await;
        let relay = relay("host-a");
        kill_bads_next_event(&host, &relay, &receiver).await;
        let events = feed(&host).await;
        let bad_first = events.iter().find(|e| e.subject == "bad").unwrap();

        let listed = dead(&host).await;
        let rows = listed["dead"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{backend:?}: {listed}");
        assert_eq!(rows[0]["eventId"], bad_first.event_id.as_str());
        assert_eq!(rows[0]["attempts"], 4);
        assert_eq!(rows[0]["lastError"], "HTTP 500: handler crashed");
        assert_eq!(listed["held"], 1);
        // Kafka's list is another sink's.
        let kafka =
            payment_steps::admin(&host, "GET", "/admin/v1/events/dead?tenant=globex", None).await;
        assert_eq!(kafka.result()["dead"], json!([]));

        // Strict order: `bad`'s later events keep waiting, even with the
        // receiver fixed and long after; `ok`'s go.
        host.funded_customer(Tenant::Globex, "ok2", 5).await;
        host.charge(Tenant::Globex, "bad", 5)
            .await
            .expect(201, "OK");
        host.advance(3_600_000);
        drain(&relay, &host).await;
        assert_eq!(receiver.of("bad").iter().filter(|d| d.accepted).count(), 0);
        assert_eq!(receiver.of("ok2").len(), 2);
        assert_eq!(dead(&host).await["held"], 2);

        // A replay delivers the dead event (same id), then what waited.
        let replay = payment_steps::admin(
            &host,
            "POST",
            "/admin/v1/events/replay",
            Some(json!({ "tenant": "globex", "sink": "webhook", "deadOfType": bad_first.event_type })),
        )
        .await;
        replay.expect(200, "OK");
        assert_eq!(replay.result()["replayed"], 1);
        drain(&relay, &host).await;
        let events = feed(&host).await;
        assert_eq!(accepted_positions(&receiver), feed_positions(&events));
        assert_eq!(dead(&host).await, json!({ "dead": [], "held": 0 }));

        // Dead again, then skipped: what waited goes, the skipped one never.
        host.charge(Tenant::Globex, "bad", 6)
            .await
            .expect(201, "OK");
        host.charge(Tenant::Globex, "bad", 7)
            .await
            .expect(201, "OK");
        kill_bads_next_event(&host, &relay, &receiver).await;
        let listed = dead(&host).await;
        let poison = listed["dead"][0]["eventId"].as_str().unwrap().to_owned();
        let unknown = payment_steps::admin(
            &host,
            "POST",
            &format!("/admin/v1/events/globex/{poison}/skip?sink=nowhere"),
            None,
        )
        .await;
        unknown.expect(400, "REQ_001");
        payment_steps::admin(
            &host,
            "POST",
            &format!("/admin/v1/events/globex/{poison}/skip?sink=webhook"),
            None,
        )
        .await
        .expect(200, "OK");
        drain(&relay, &host).await;
        let last = feed(&host).await.last().unwrap().clone();
        let delivered = receiver.of("bad");
        assert!(
            delivered
                .iter()
                .any(|d| d.id == last.event_id && d.accepted)
        );
        assert!(!delivered.iter().any(|d| d.id == poison && d.accepted));
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_available_order_a_dead_event_lets_its_customers_later_events_pass() {
    for backend in backends() {
        let receiver = Receiver::start().await;
        let host = host_with(backend, &receiver, "available").await;
        host.funded_customer(Tenant::Globex, "bad", 100).await;
        let relay = relay("host-a");
        kill_bads_next_event(&host, &relay, &receiver).await;
        host.charge(Tenant::Globex, "bad", 5)
            .await
            .expect(201, "OK");
        drain(&relay, &host).await;
        let events = feed(&host).await;
        let accepted: Vec<i64> = accepted_positions(&receiver).remove("bad").unwrap();
        assert_eq!(
            accepted,
            events[1..].iter().map(|e| e.feed_seq).collect::<Vec<_>>(),
            "{backend:?}"
        );
        assert_eq!(dead(&host).await["dead"].as_array().unwrap().len(), 1);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_is_down_is_probed_not_flooded_and_gets_the_backlog_in_order() {
    for backend in backends() {
        let receiver = Receiver::start().await;
        let host = host_with(backend, &receiver, "strict").await;
        let customers: Vec<String> = (0..6).map(|n| format!("c{n}")).collect();
        for customer in &customers {
            host.funded_customer(Tenant::Globex, customer, 100).await;
        }
        receiver.set(Mode::Down);
        let relay = relay("host-a");
        // One attempt per customer (the first event of each), then rest.
        relay.run_once(&host.app).await;
        assert_eq!(receiver.log().len(), 6, "{backend:?}");
        for customer in &customers {
            host.use_credits(
                Tenant::Globex,
                customer,
                "render",
                1,
                &format!("u-{customer}"),
            )
            .await
            .expect(201, "OK");
        }
        // Resting: nothing is sent until the first retry is due, new
        // events or not.
        for _ in 0..5 {
            relay.run_once(&host.app).await;
        }
        assert_eq!(receiver.log().len(), 6);
        // Then one probe per rest (a rest lasts at most backoff_ms: 1 s).
        host.advance(1_000);
        for _ in 0..5 {
            relay.run_once(&host.app).await;
        }
        assert_eq!(receiver.log().len(), 7);
        host.advance(999);
        relay.run_once(&host.app).await;
        assert_eq!(receiver.log().len(), 7);
        host.advance(1);
        for _ in 0..5 {
            relay.run_once(&host.app).await;
        }
        assert_eq!(receiver.log().len(), 8);
        let status = webhook_status(&host).await;
        assert_eq!(status["failing"], 6, "{status}");
        assert_eq!(status["dead"], 0);

        // Back: the next probe goes through and every failing event is due
        // at once; everything arrives, in order per customer.
        receiver.set(Mode::Up);
        host.advance(4_000);
        drain(&relay, &host).await;
        let events = feed(&host).await;
        assert_eq!(accepted_positions(&receiver), feed_positions(&events));
        let status = webhook_status(&host).await;
        assert_eq!(
            (&status["failing"], &status["held"], &status["pending"]),
            (&json!(0), &json!(0), &json!(0)),
            "{status}"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_deliver_each_event_once_and_the_second_takes_over_a_stopped_first() {
    for backend in backends() {
        let receiver = Receiver::start().await;
        let host = host_with(backend, &receiver, "strict").await;
        host.funded_customer(Tenant::Globex, "c1", 100).await;
        let (a, b) = (relay("host-a"), relay("host-b"));
        drain(&a, &host).await;
        host.charge(Tenant::Globex, "c1", 5).await.expect(201, "OK");
        // A holds the lease: B delivers nothing.
        let run = b.run_once(&host.app).await;
        assert_eq!((run.tenants, run.published), (0, 0), "{backend:?}");
        assert_eq!(receiver.log().len(), 2);
        // A stops renewing; once its lease (60 s) lapses, B takes over
        // from the cursor.
        host.advance(60_000);
        let run = drain(&b, &host).await;
        assert_eq!(run.published, 1);
        let events = feed(&host).await;
        assert_eq!(receiver.log().len(), events.len());
        assert_eq!(accepted_positions(&receiver), feed_positions(&events));
        assert_eq!(webhook_status(&host).await["owner"], "host-b");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_posts_every_event_to_the_configured_webhook() {
    for backend in backends() {
        let receiver = Receiver::start().await;
        let host = host_with(backend, &receiver, "strict").await;
        host.app.store().close().await;
        let (url, config_path) = (database_url(&host), host.config_path.clone());
        let server = tokio::task::spawn_blocking(move || {
            let server = Server::start(&config_path, &url);
            for customer in ["c1", "c2"] {
                let (status, _) = http(
                    &server,
                    "PUT",
                    &format!("/api/v1/customers/{customer}"),
                    Some(&json!({})),
                    None,
                );
                assert_eq!(status, 201);
            }
            server
        })
        .await
        .unwrap();
        // On PostgreSQL the feed numbers events just after they commit:
        // both customers' events are awaited in it first.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let ids = loop {
            let ids = feed_ids(&server);
            if ids.len() >= 2 {
                break ids;
            }
            assert!(std::time::Instant::now() < deadline, "{backend:?}: {ids:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        receiver.wait_for_accepted(&ids).await;
        drop(server);
        let customers: Vec<String> = receiver.log().into_iter().map(|d| d.customer).collect();
        assert_eq!(customers.len(), 2, "{backend:?}");
        assert!(customers.contains(&"c1".to_owned()) && customers.contains(&"c2".to_owned()));
        host.discard().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_between_delivery_and_its_cursor_loses_nothing_and_keeps_order() {
    for backend in backends() {
        let receiver = Receiver::start().await;
        // A short lease, so that the restarted host takes over soon.
        let host = TestHost::start_with(backend, |yaml| {
            let yaml = with_webhook(yaml, &receiver.url, "strict")
                .replace("timeout_ms: 2000", "timeout_ms: 500");
            format!("webhooks:\n  lease_ms: 1500\n{yaml}")
        })
        .await;
        host.app.store().close().await;
        let (url, config_path) = (database_url(&host), host.config_path.clone());
        let (server, ids) = tokio::task::spawn_blocking(move || {
            // Aborted right after a round of globex's events was delivered,
            // before the cursor moved past them.
            let (server, events) = process::relay_crash_then_more_events(
                &config_path,
                &url,
                "relay.webhook_delivered",
            );
            let ids: Vec<String> = events
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned())
                .collect();
            (server, ids)
        })
        .await
        .unwrap();
        receiver.wait_for_accepted(&ids).await;
        server.kill();
        // The event delivered before the crash came again after it.
        let copies = receiver.log().iter().filter(|d| d.id == ids[0]).count();
        assert!(copies >= 2, "{backend:?}: delivered {copies} times");
        // First copies in feed order per customer, none lost.
        let first = accepted_positions(&receiver);
        let delivered: usize = first.values().map(Vec::len).sum();
        assert_eq!(delivered, ids.len(), "{backend:?}");
        harness::assert_in_feed_order(&first, &format!("{backend:?}"));
        host.restart().await.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_endpoint_is_spoken_to_with_tls() {
    use tokio::io::AsyncReadExt;
    // A TCP endpoint that reads what the relay sends first, then hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let first_bytes = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut bytes = [0u8; 2];
        socket.read_exact(&mut bytes).await.unwrap();
        bytes
    });
    let url = format!("https://localhost:{port}/hook");
    let host = TestHost::start_with(harness::Backend::Sqlite, |yaml| {
        with_webhook(yaml, &url, "strict")
    })
    .await;
    host.put_customer(Tenant::Globex, "c1", json!({}))
        .await
        .expect(201, "OK");
    let relay = relay("host-a");
    let run = relay.run_once(&host.app).await;
    // A TLS handshake record (0x16), TLS major version 3: a ClientHello.
    assert_eq!(first_bytes.await.unwrap(), [0x16, 0x03]);
    assert_eq!((run.published, run.failed), (0, 1), "{run:?}");
    let status = webhook_status(&host).await;
    assert_eq!(status["failing"], 1, "{status}");
    host.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_secret_is_rotated_a_receiver_verifies_with_either() {
    let receiver = Receiver::start().await;
    // The receiver still knows only the old secret (WEBHOOK_SECRET).
    let host = TestHost::start_with(harness::Backend::Sqlite, |yaml| {
        with_webhook(yaml, &receiver.url, "strict").replace(
            "secret_env: TEST_WEBHOOK_SECRET,",
            "secret_env: TEST_WEBHOOK_SECRET_NEW, previous_secret_env: TEST_WEBHOOK_SECRET,",
        )
    })
    .await;
    host.put_customer(Tenant::Globex, "c1", json!({}))
        .await
        .expect(201, "OK");
    let relay = relay("host-a");
    let run = drain(&relay, &host).await;
    assert_eq!((run.published, run.failed), (1, 0), "{run:?}");
    let delivery = &receiver.log()[0];
    assert!(delivery.accepted);
    // A receiver that switched to the new secret accepts it too.
    let new = standardwebhooks::Webhook::new(harness::WEBHOOK_SECRET_NEW).unwrap();
    assert!(new.verify(&delivery.raw, &delivery.headers).is_ok());
    host.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resting_tenant_stays_with_its_host_so_no_other_host_floods_the_endpoint() {
    for backend in backends() {
        let receiver = Receiver::start().await;
        // Retries after 100 s: a rest outlasts half the lease (60 s).
        let host = TestHost::start_with(backend, |yaml| {
            with_webhook(yaml, &receiver.url, "strict")
                .replace("backoff_ms: 1000", "backoff_ms: 100000")
                .replace("max_backoff_ms: 4000", "max_backoff_ms: 3600000")
        })
        .await;
        for customer in ["c1", "c2"] {
            host.funded_customer(Tenant::Globex, customer, 100).await;
        }
        receiver.set(Mode::Down);
        let (a, b) = (relay("host-a"), relay("host-b"));
        a.run_once(&host.app).await;
        assert_eq!(receiver.log().len(), 2, "{backend:?}");
        // A rests past its first lease: it keeps renewing it, so B never
        // gets the tenant (B, knowing nothing of the rest, would try every
        // customer's failing event at once).
        for _ in 0..2 {
            host.advance(40_000);
            a.run_once(&host.app).await;
            let run = b.run_once(&host.app).await;
            assert_eq!(run.tenants, 0, "{backend:?}: {run:?}");
        }
        assert_eq!(receiver.log().len(), 2, "{backend:?}");
        // The rest over, A probes with one event.
        host.advance(20_000);
        a.run_once(&host.app).await;
        assert_eq!(b.run_once(&host.app).await.tenants, 0);
        assert_eq!(receiver.log().len(), 3, "{backend:?}");
        assert_eq!(webhook_status(&host).await["owner"], "host-a");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_receiver_keeps_refusing_holds_other_customers_back_one_backoff_at_most() {
    for backend in backends() {
        let receiver = Receiver::start().await;
        let host = host_with(backend, &receiver, "strict").await;
        host.put_customer(Tenant::Globex, "bad", json!({}))
            .await
            .expect(201, "OK");
        receiver.set(Mode::Refuse("bad".into()));
        let relay = relay("host-a");
        // Only `bad` had an event, and it failed: the tenant rests 1 s.
        relay.run_once(&host.app).await;
        host.funded_customer(Tenant::Globex, "ok", 100).await;
        host.advance(1_000);
        // The probe is `bad`'s event (due): refused again, its next try in
        // 2 s; the tenant rests 1 s, not 2.
        relay.run_once(&host.app).await;
        assert_eq!(receiver.of("bad").len(), 2, "{backend:?}");
        assert!(receiver.of("ok").is_empty());
        host.advance(1_000);
        drain(&relay, &host).await;
        let ok = receiver.of("ok");
        assert_eq!(ok.len(), 2, "{backend:?}");
        assert!(ok.iter().all(|d| d.accepted));
        assert_eq!(receiver.of("bad").len(), 2);
        host.finish().await;
    }
}

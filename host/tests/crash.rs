//! Crash safety under load: the real `fluxpay-host serve` is killed with
//! SIGKILL while eight writers keep it busy (grants, uses, refunds, orders,
//! usage batches), so group commits (SQLite) and transactions (PostgreSQL)
//! are in flight when it dies; then it is started again on the same
//! database. Several kills per run. After each restart:
//!
//! - every acknowledged request with an `Idempotency-Key`, sent again,
//!   gets the answer it was acknowledged with, byte for byte;
//! - every acknowledged order is there; every event of an acknowledged
//!   usage batch is stored (`duplicate` when sent again);
//! - requests that were cut off get an answer when sent again (stored, or
//!   run now: never both, never an error).
//!
//! At the end each customer's balance is what the answers add up to, and
//! the auditor finds the books clean.

mod harness;
mod process;

use std::sync::mpsc;
use std::time::Duration;

use harness::{Tenant, TestHost, backends};
use process::{Server, database_url, http, json_of, try_http};
use serde_json::{Value, json};

const WRITERS: usize = 8;
const KILLS: usize = 3;
/// Answers received in a round before the kill.
const ANSWERS_BEFORE_KILL: usize = 160;
const GRANT: i64 = 20;
/// globex prices `render` at 1 credit per unit.
const USE_UNITS: i64 = 3;
const USAGE_BATCH: usize = 10;

/// A request as sent, and what came back (`None`: cut off by the kill).
#[derive(Debug, Clone)]
struct Sent {
    customer: String,
    path: &'static str,
    body: Value,
    key: Option<String>,
    answer: Option<(u16, Vec<u8>)>,
    /// Cut off after the server accepted its connection: it was in flight
    /// when the server died (not refused by a server already gone).
    in_flight: bool,
}

impl Sent {
    fn send(&self, addr: &str) -> std::io::Result<(u16, Vec<u8>)> {
        try_http(
            addr,
            "POST",
            self.path,
            Some(&self.body),
            self.key.as_deref(),
        )
    }
}

/// What a successful answer means for the request's path.
fn acceptable(path: &str, status: u16) -> bool {
    match path {
        "/api/v1/usage" => status == 200,
        // A use may find the balance short: refused, nothing written.
        "/api/v1/credits/use" => status == 201 || status == 402,
        _ => status == 201,
    }
}

/// One writer: its own customer, requests back to back until the server
/// stops answering.
fn writer(addr: String, round: usize, w: usize, answers: mpsc::Sender<()>) -> Vec<Sent> {
    let customer = format!("w{w}");
    let mut sent = Vec::new();
    let mut last_use: Option<String> = None;
    for n in 0.. {
        let tag = format!("{round}-{w}-{n}");
        let (path, body, key) = match n % 5 {
            0 => (
                "/api/v1/credits/charge",
                json!({ "customerId": customer, "credits": GRANT, "reason": "load" }),
                Some(format!("g-{tag}")),
            ),
            1 => (
                "/api/v1/credits/use",
                json!({ "customerId": customer, "feature": "render", "units": USE_UNITS }),
                Some(format!("u-{tag}")),
            ),
            2 => match last_use.take() {
                Some(transaction) => (
                    "/api/v1/credits/refund",
                    json!({ "transactionId": transaction, "credits": 1 }),
                    Some(format!("r-{tag}")),
                ),
                None => continue,
            },
            3 => (
                "/api/v1/orders",
                json!({ "customerId": customer, "items": [{ "sku": "report", "quantity": 1 }] }),
                Some(format!("o-{tag}")),
            ),
            _ => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64;
                let events: Vec<Value> = (0..USAGE_BATCH)
                    .map(|i| {
                        json!({ "eventId": format!("e-{tag}-{i}"), "customerId": customer,
                                "metric": "emails", "quantity": 1, "timestamp": now - 1000 })
                    })
                    .collect();
                ("/api/v1/usage", json!({ "events": events }), None)
            }
        };
        let mut request = Sent {
            customer: customer.clone(),
            path,
            body,
            key,
            answer: None,
            in_flight: false,
        };
        let (status, bytes) = match request.send(&addr) {
            Ok(answer) => answer,
            Err(err) => {
                // The server is gone: this request's fate is for the restart.
                request.in_flight = err.kind() != std::io::ErrorKind::ConnectionRefused;
                sent.push(request);
                break;
            }
        };
        assert!(
            acceptable(path, status),
            "{path} answered {status} under load: {}",
            String::from_utf8_lossy(&bytes)
        );
        if path == "/api/v1/credits/use" && status == 201 {
            last_use = json_of(&bytes)["result"]["transactionId"]
                .as_str()
                .map(str::to_owned);
        }
        request.answer = Some((status, bytes));
        sent.push(request);
        // The main thread may have stopped counting.
        let _ = answers.send(());
    }
    sent
}

/// Runs the writers until `ANSWERS_BEFORE_KILL` answers came back, then
/// kills the server under them.
fn round_under_load(server: Server, round: usize) -> Vec<Sent> {
    let (answered, answers) = mpsc::channel();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (addr, answered) = (server.addr.clone(), answered.clone());
            std::thread::spawn(move || writer(addr, round, w, answered))
        })
        .collect();
    drop(answered);
    for _ in 0..ANSWERS_BEFORE_KILL {
        answers
            .recv_timeout(Duration::from_secs(60))
            .expect("the writers stopped answering before the kill");
    }
    // Eight writers are mid-request: SIGKILL now.
    server.kill();
    writers
        .into_iter()
        .flat_map(|w| w.join().expect("a writer panicked"))
        .collect()
}

/// After a restart: acknowledged answers replay and their effects are
/// there; cut-off requests get their answer now.
fn check_round(server: &Server, sent: &mut [Sent], backend: harness::Backend) {
    let cut_off = sent.iter().filter(|s| s.answer.is_none()).count();
    let in_flight = sent.iter().filter(|s| s.in_flight).count();
    assert!(
        in_flight > 0,
        "{backend:?}: no request was in flight at the kill"
    );
    eprintln!(
        "{backend:?}: {} requests answered, {cut_off} cut off by the kill ({in_flight} in flight)",
        sent.len() - cut_off
    );
    for request in sent.iter_mut() {
        // A refused use stored nothing under its key: sent again it would
        // be a new request (and might now be charged).
        if matches!(&request.answer, Some((402, _))) {
            continue;
        }
        let (status, bytes) = request
            .send(&server.addr)
            .expect("the restarted server answers");
        assert!(
            acceptable(request.path, status),
            "{backend:?}: {} {:?} after the restart: {status} {}",
            request.path,
            request.key,
            String::from_utf8_lossy(&bytes)
        );
        match (&request.answer, request.key.is_some()) {
            (Some(acknowledged), true) => {
                assert_eq!(
                    (status, String::from_utf8_lossy(&bytes)),
                    (acknowledged.0, String::from_utf8_lossy(&acknowledged.1)),
                    "{backend:?}: {} {:?} replays its acknowledged answer",
                    request.path,
                    request.key
                );
            }
            (Some(_), false) => {
                // A usage batch: every event it stored is still stored.
                let again = json_of(&bytes);
                let statuses: Vec<&str> = again["result"]["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["status"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    statuses,
                    vec!["duplicate"; USAGE_BATCH],
                    "{backend:?}: an acknowledged usage batch lost events"
                );
            }
            (None, _) => request.answer = Some((status, bytes)),
        }
        if request.path == "/api/v1/orders" {
            let order = json_of(&request.answer.as_ref().unwrap().1);
            let id = order["result"]["orderId"].as_str().unwrap();
            let (status, found) = http(server, "GET", &format!("/api/v1/orders/{id}"), None, None);
            assert_eq!(status, 200, "{backend:?}: acknowledged order {id} is gone");
            assert_eq!(json_of(&found)["result"]["total"], order["result"]["total"]);
        }
    }
}

/// Each customer's balance from the answers: grants and refunds in, uses
/// out.
fn expected_balances(sent: &[Sent]) -> std::collections::BTreeMap<String, i64> {
    let mut balances = std::collections::BTreeMap::new();
    for request in sent {
        let (status, bytes) = request.answer.as_ref().expect("every request answered");
        if *status != 201 {
            continue;
        }
        let result = json_of(bytes)["result"].clone();
        let change = match request.path {
            "/api/v1/credits/charge" => result["creditsGranted"].as_i64().unwrap(),
            "/api/v1/credits/use" => -result["creditsCharged"].as_i64().unwrap(),
            "/api/v1/credits/refund" => result["creditsRefunded"].as_i64().unwrap(),
            _ => 0,
        };
        *balances.entry(request.customer.clone()).or_insert(0) += change;
    }
    balances
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_under_load_the_server_keeps_every_acknowledged_write() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        for w in 0..WRITERS {
            host.put_customer(Tenant::Globex, &format!("w{w}"), json!({}))
                .await;
        }
        host.app.store().close().await;
        let url = database_url(&host);
        let config = host.config_path.clone();

        let everything = tokio::task::spawn_blocking(move || {
            let mut everything = Vec::new();
            for round in 0..KILLS {
                let server = Server::start(&config, &url);
                let mut sent = round_under_load(server, round);
                let server = Server::start(&config, &url);
                check_round(&server, &mut sent, backend);
                everything.extend(sent);
                if round == KILLS - 1 {
                    return (everything, server);
                }
            }
            unreachable!()
        })
        .await
        .unwrap();
        let (everything, server) = everything;

        for (customer, balance) in expected_balances(&everything) {
            let (_, bytes) = http(
                &server,
                "GET",
                &format!("/api/v1/credits/balance?customerId={customer}"),
                None,
                None,
            );
            assert_eq!(
                json_of(&bytes)["result"]["balance"],
                balance,
                "{backend:?}: {customer}'s balance is what its answers add up to"
            );
        }
        drop(server);
        // The auditor, on the harness's own store: money in = money out,
        // every effect with its ledger, history and event.
        host.restart().await.finish().await;
    }
}

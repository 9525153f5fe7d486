//! Every acknowledged write survives a restart: the real `fluxpay-host serve`
//! is killed with SIGKILL (no graceful shutdown, no checkpoint) after its
//! answers were received, then started again on the same database, which
//! must hold every write, replay stored answers byte for byte, and audit
//! clean. Also an in-process restart of the store on both backends.

mod harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{GLOBEX_KEY, Tenant, TestHost, backends};
use serde_json::{Value, json};

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &Path, database_url: &str) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fluxpay-host"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .env("FLUXPAY_DATABASE_URL", database_url)
        .env("TEST_ACME_SECRET", harness::ACME_SECRET)
        .env_remove("FLUXPAY_CONFIG")
        .env_remove("FLUXPAY_LISTEN")
        .env("FLUXPAY_ADMIN_TOKEN", harness::ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting fluxpay-host");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("fluxpay-host listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    let server = Server { child, addr };
    let deadline = Instant::now() + Duration::from_secs(120);
    while http(&server, "GET", "/health/ready", None, None).0 != 200 {
        assert!(Instant::now() < deadline, "server never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// One request per connection; (status, raw body).
fn http(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {GLOBEX_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        server.addr,
        body.len()
    );
    if let Some(key) = key {
        request.push_str(&format!("Idempotency-Key: {key}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_keeps_every_acknowledged_write() {
    for backend in backends() {
        // The harness creates (and migrates) the database; the real binary
        // serves it. The harness's own store stays closed meanwhile.
        let host = TestHost::start(backend).await;
        host.app.store().close().await;
        let url = match &host.database.url {
            fluxpay_host::config::DatabaseUrl::Sqlite(path) => {
                format!("sqlite://{}", path.display())
            }
            fluxpay_host::config::DatabaseUrl::Postgres(url) => url.expose().to_owned(),
        };

        let server = start(&host.config_path, &url);
        assert_eq!(
            http(
                &server,
                "PUT",
                "/api/v1/customers/c1",
                Some(&json!({ "attributes": {} })),
                None
            )
            .0,
            201
        );
        let (status, _) = http(
            &server,
            "POST",
            "/api/v1/credits/charge",
            Some(&json!({ "customerId": "c1", "credits": 100, "reason": "r" })),
            Some("g1"),
        );
        assert_eq!(status, 201);
        let mut acknowledged = Vec::new();
        for i in 0..20 {
            let (status, body) = http(
                &server,
                "POST",
                "/api/v1/credits/use",
                Some(&json!({ "customerId": "c1", "feature": "render", "units": 1 })),
                Some(&format!("u{i}")),
            );
            assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
            acknowledged.push(body);
        }
        // SIGKILL right after the last answer: no shutdown, no checkpoint.
        drop(server);

        let server = start(&host.config_path, &url);
        let (_, balance) = http(
            &server,
            "GET",
            "/api/v1/credits/balance?customerId=c1",
            None,
            None,
        );
        assert_eq!(json_of(&balance)["result"]["balance"], 80, "{backend:?}");
        // Every acknowledged use is there, and a retry gets the same bytes.
        for (i, body) in acknowledged.iter().enumerate() {
            let (status, replay) = http(
                &server,
                "POST",
                "/api/v1/credits/use",
                Some(&json!({ "customerId": "c1", "feature": "render", "units": 1 })),
                Some(&format!("u{i}")),
            );
            assert_eq!(status, 201);
            assert_eq!(&replay, body, "{backend:?}: use {i} replays byte for byte");
        }
        let (_, events) = http(&server, "GET", "/api/v1/events?limit=1000", None, None);
        assert_eq!(
            json_of(&events)["result"]["events"]
                .as_array()
                .unwrap()
                .len(),
            22,
            "{backend:?}: customer, grant and 20 uses"
        );
        drop(server);

        let host = host.restart().await;
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_the_store_keeps_balances_statements_and_the_feed() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Globex, "c1", 30).await;
        let used = host
            .use_credits(Tenant::Globex, "c1", "render", 4, "u1")
            .await;
        let statement = host
            .call(
                Tenant::Globex,
                "GET",
                "/api/v1/credits/transactions?customerId=c1",
                None,
                None,
            )
            .await;
        let feed = host
            .call(Tenant::Globex, "GET", "/api/v1/events", None, None)
            .await;

        let host = host.restart().await;
        assert_eq!(
            host.balance(Tenant::Globex, "c1").await.result()["balance"],
            26
        );
        let again = host
            .call(
                Tenant::Globex,
                "GET",
                "/api/v1/credits/transactions?customerId=c1",
                None,
                None,
            )
            .await;
        assert_eq!(again.result(), statement.result());
        let feed_again = host
            .call(Tenant::Globex, "GET", "/api/v1/events", None, None)
            .await;
        assert_eq!(feed_again.result(), feed.result());
        let replay = host
            .use_credits(Tenant::Globex, "c1", "render", 4, "u1")
            .await;
        assert_eq!(replay.bytes, used.bytes);
        host.finish().await;
    }
}

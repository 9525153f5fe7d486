//! The real `fluxpay-host serve` as a child process on the harness's
//! database, and plain HTTP/1.1 to it (one request per connection, as the
//! globex dev tenant: no signature needed).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{self, GLOBEX_KEY, TestHost};

/// A running `fluxpay-host serve`; killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary on `config` and `database_url` and waits until it
    /// is ready.
    pub fn start(config: &Path, database_url: &str) -> Server {
        Server::start_with_env(config, database_url, &[])
    }

    /// [`Server::start`] with `env` added to the child's environment.
    pub fn start_with_env(config: &Path, database_url: &str, env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fluxpay-host"))
            .envs(env.iter().copied())
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .env("FLUXPAY_DATABASE_URL", database_url)
            .env("TEST_ACME_SECRET", harness::ACME_SECRET)
            .env("TEST_WEBHOOK_SECRET", harness::WEBHOOK_SECRET)
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

    /// Waits for the process to end by itself (e.g. at a crash point);
    /// whether it was killed by a signal rather than exiting.
    pub fn wait_for_death(mut self) -> bool {
        use std::os::unix::process::ExitStatusExt as _;
        let status = self.child.wait().expect("reaped");
        status.signal().is_some()
    }

    /// SIGKILL: no shutdown, no checkpoint, requests cut wherever they are.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

/// The database URL the binary should serve for `host` (whose own store
/// must be closed meanwhile).
pub fn database_url(host: &TestHost) -> String {
    match &host.database.url {
        fluxpay_host::config::DatabaseUrl::Sqlite(path) => {
            format!("sqlite://{}", path.display())
        }
        fluxpay_host::config::DatabaseUrl::Postgres(url) => url.expose().to_owned(),
    }
}

/// One request; (status, raw body), or the I/O error that cut it (a killed
/// server).
pub fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {GLOBEX_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(key) = key {
        request.push_str(&format!("Idempotency-Key: {key}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection closed before a whole response",
        ));
    };
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response[split + 4..].to_vec();
    // A server killed while it wrote the body closes the connection early.
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    if length.is_some_and(|length| length != body.len()) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection closed in the middle of the body",
        ));
    }
    Ok((status, body))
}

/// One request to a server that must answer.
pub fn http(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&Value>,
    key: Option<&str>,
) -> (u16, Vec<u8>) {
    try_http(&server.addr, method, path, body, key)
        .unwrap_or_else(|err| panic!("{method} {path}: {err}"))
}

pub fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

/// The relay crash scenario of the Kafka and webhook suites: the real
/// binary aborts (as under SIGKILL) at relay crash point `point` for
/// globex, right after a round of its events was delivered and before the
/// cursor moved past them; restarted, it must deliver them again once the
/// dead host's lease ran out, and go on with new events (customers c1 and
/// c2, three grants each). The running server and the feed's events.
pub fn relay_crash_then_more_events(
    config: &Path,
    database_url: &str,
    point: &str,
) -> (Server, Vec<Value>) {
    let server = Server::start_with_env(
        config,
        database_url,
        &[
            (fluxpay_host::crash_points::ABORT_AT_ENV, point),
            (fluxpay_host::crash_points::ABORT_ORDER_ENV, "globex"),
        ],
    );
    let (status, _) = http(
        &server,
        "PUT",
        "/api/v1/customers/c1",
        Some(&serde_json::json!({})),
        None,
    );
    assert_eq!(status, 201);
    assert!(server.wait_for_death(), "the relay did not reach {point}");
    let server = Server::start(config, database_url);
    for customer in ["c1", "c2"] {
        if customer == "c2" {
            let (status, _) = http(
                &server,
                "PUT",
                "/api/v1/customers/c2",
                Some(&serde_json::json!({})),
                None,
            );
            assert_eq!(status, 201);
        }
        for n in 0..3 {
            let (status, _) = http(
                &server,
                "POST",
                "/api/v1/credits/charge",
                Some(
                    &serde_json::json!({ "customerId": customer, "credits": 10 + n, "reason": "r" }),
                ),
                Some(&format!("grant-{customer}-{n}")),
            );
            assert_eq!(status, 201);
        }
    }
    let (status, body) = http(&server, "GET", "/api/v1/events?limit=1000", None, None);
    assert_eq!(status, 200);
    let events = json_of(&body)["result"]["events"]
        .as_array()
        .unwrap()
        .clone();
    (server, events)
}

//! The money tests' harness: a host (tenant API + admin API) per test, on
//! SQLite (a temp file) and, when `FLUXPAY_TEST_POSTGRES_URL` is set, on
//! PostgreSQL (a fresh database per test). With `CI=true` a missing
//! PostgreSQL URL fails the test instead of skipping it.
//!
//! Tenants of the test config:
//! - `acme`: signed (secret [`ACME_SECRET`]); `render` costs 5 credits per
//!   unit (×0.5 for tier `gold`), `free` costs 0; its validation policy caps
//!   customers of tier `capped` at 50 credits a day. Subscriptions are paid
//!   from credits at 100 credits per USD. Usage metrics are only `api-calls`
//!   and `storage-gb`, metered in USD as in examples/tenants.yaml (1000 free
//!   api-calls, then graduated tiers; storage-gb by volume).
//! - `globex`: dev (unsigned); `render` costs 1 credit per unit;
//!   subscriptions leave orders (its plans are priced in USD); metered in
//!   EUR: `emails` 500 free then €4.00 per started 1000, `api-calls` 1 cent
//!   each, other metrics ignored.
//! - `acme` and `globex` share the subscription plans `basic` (10 USD a
//!   month), `pro` (30), `pro-yearly` (300 a year), `trial-basic` (basic
//!   with 14 trial days) and `trial-pro` (pro with 7).
//! - `initech`: dev; its credit policy is the hostile fixture set to loop
//!   forever, so every price call runs out of fuel.
//! - `hooli`: dev, with no policies at all.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use fluxpay_host::api::{self, admin::AdminState, admin::AdminToken, tenant::auth::sign};
use fluxpay_host::app::audit::{self, AuditReport};
use fluxpay_host::app::{App, TenantDirectory};
use fluxpay_host::config::{self, DatabaseConfig, DatabaseUrl, Secret, SqliteSynchronous};
use fluxpay_host::gateway::resilient::{Resilience, ResilientGateway};
use fluxpay_host::gateway::simulator::{Faults, Simulator};
use fluxpay_host::gateway::toss::{TossConfig, TossGateway};
use fluxpay_host::policy::registry::Registry;
use fluxpay_host::policy::reload::{Reloader, Trigger};
use fluxpay_host::store::Store;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt as _;

pub const ACME_KEY: &str = "fp_test_acme_key_0001";
pub const ACME_KEY_2: &str = "fp_test_acme_key_0002";
pub const ACME_SECRET: &str = "acme-signing-secret";
/// The webhook signing secret of tests that configure a webhook
/// (`secret_env: TEST_WEBHOOK_SECRET`): 32 bytes, Standard Webhooks format.
pub const WEBHOOK_SECRET: &str = "whsec_Zmx1eHBheS10ZXN0LXdlYmhvb2stc2VjcmV0LTMyYiE=";
/// The secret that replaces [`WEBHOOK_SECRET`] in the rotation test
/// (`TEST_WEBHOOK_SECRET_NEW`): 31 bytes.
pub const WEBHOOK_SECRET_NEW: &str = "whsec_bmV3LWZsdXhwYXktd2ViaG9vay1zZWNyZXQtMzJiIQ==";
pub const GLOBEX_KEY: &str = "fp_test_globex_key_0001";
pub const INITECH_KEY: &str = "fp_test_initech_key_0001";
pub const HOOLI_KEY: &str = "fp_test_hooli_key_0001";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The Kafka-protocol broker of the Kafka suite (`FLUXPAY_TEST_KAFKA_BROKERS`,
/// which `.ci/run` sets after starting tansu): `None` skips the suite,
/// except in CI (`CI=true`), where a missing broker fails it.
pub fn kafka_brokers() -> Option<String> {
    match std::env::var("FLUXPAY_TEST_KAFKA_BROKERS") {
        Ok(brokers) if !brokers.is_empty() => Some(brokers),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!(
                    "CI=true but FLUXPAY_TEST_KAFKA_BROKERS is not set: the Kafka suite must run \
                     in CI (.ci/run starts tansu)"
                );
            }
            eprintln!("FLUXPAY_TEST_KAFKA_BROKERS not set: Kafka tests skipped");
            None
        }
    }
}

/// A broker of a test's own (tansu, `FLUXPAY_TEST_TANSU_BIN`), for tests
/// that stop and start it. In-memory storage: what it held is gone after a
/// stop. Killed when dropped.
pub struct Broker {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// The tansu binary, or `None` outside CI (in CI a missing one fails).
    pub fn binary() -> Option<PathBuf> {
        match std::env::var("FLUXPAY_TEST_TANSU_BIN") {
            Ok(bin) if !bin.is_empty() => Some(PathBuf::from(bin)),
            _ => {
                if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                    panic!(
                        "CI=true but FLUXPAY_TEST_TANSU_BIN is not set: .ci/run builds tansu \
                         and exports it"
                    );
                }
                eprintln!("FLUXPAY_TEST_TANSU_BIN not set: broker outage tests skipped");
                None
            }
        }
    }

    /// Starts a broker on `port` (0: a free one) and waits until it
    /// listens.
    pub fn start(binary: &Path, port: u16) -> Broker {
        let port = match port {
            0 => std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
            port => port,
        };
        let dir = tempfile::tempdir().unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let mut child = std::process::Command::new(binary)
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tansu starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("tansu exited ({status}) instead of listening on {port}");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "tansu did not listen on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Broker {
            child,
            port,
            _dir: dir,
        }
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGSTOP: the broker stops answering (connections stay open, what
    /// it stored stays) until [`Broker::resume`].
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Broker::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with the pid of our own live child.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that in every group (a customer, or a customer and topic) the
/// feed positions only grow: first copies of what a consumer received, in
/// arrival order.
pub fn assert_in_feed_order<'a, K: std::fmt::Debug + 'a>(
    groups: impl IntoIterator<Item = (&'a K, &'a Vec<i64>)>,
    context: &str,
) {
    for (key, positions) in groups {
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "{context}: {key:?} out of order: {positions:?}"
        );
    }
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// SQLite always; PostgreSQL when `FLUXPAY_TEST_POSTGRES_URL` is set. In CI
/// (`CI=true`) the PostgreSQL URL is mandatory.
pub fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Sqlite];
    match std::env::var("FLUXPAY_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => backends.push(Backend::Postgres),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!(
                    "CI=true but FLUXPAY_TEST_POSTGRES_URL is not set: the PostgreSQL suite \
                     must run in CI (.ci/run starts a private cluster)"
                );
            }
            eprintln!("FLUXPAY_TEST_POSTGRES_URL not set: PostgreSQL tests skipped");
        }
    }
    backends
}

pub fn sha_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A reference policy component, built once per test binary.
pub fn policy(package: &str) -> PathBuf {
    use std::sync::{Mutex, OnceLock};
    static BUILT: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(package) {
        return path.clone();
    }
    let root = fluxpay_policy_build::workspace_root_from(Path::new(env!("CARGO_MANIFEST_DIR")))
        .expect("workspace root");
    let exe = std::env::current_exe().expect("test binary path");
    let stem = exe.file_stem().unwrap().to_string_lossy().into_owned();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("policies-{stem}"));
    let path = fluxpay_policy_build::Build::in_workspace(&root, package)
        .out_dir(out)
        .run()
        .unwrap_or_else(|err| panic!("building {package}: {err:#}"));
    built.insert(package.to_owned(), path.clone());
    path
}

/// The test configuration (see the module docs).
pub fn config_yaml() -> String {
    let credit = policy("fluxpay-policy-credit");
    let validation = policy("fluxpay-policy-validation");
    let hostile = policy("fluxpay-fixture-hostile");
    let metered = policy("fluxpay-policy-metered");
    let subscription = policy("fluxpay-policy-subscription");
    // Plans for the subscription tests (api_subscriptions.rs).
    let plans = "plans: [\
        { id: basic, interval: monthly, price: 1000, currency: USD }, \
        { id: pro, interval: monthly, price: 3000, currency: USD }, \
        { id: pro-yearly, interval: yearly, price: 30000, currency: USD }, \
        { id: trial-basic, interval: monthly, price: 1000, currency: USD, trial_days: 14 }, \
        { id: trial-pro, interval: monthly, price: 3000, currency: USD, trial_days: 7 }]";
    let catalog = policy("fluxpay-policy-catalog");
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    format!(
        r#"engine:
  artifact_dir: {artifacts}
  default_limits: {{ deadline_ms: 10000 }}
tenants:
  acme:
    currency: USD
    api_keys:
      - {{ id: acme-1, sha256: {acme} }}
      - {{ id: acme-2, sha256: {acme2} }}
    signing: {{ secret_env: TEST_ACME_SECRET }}
    subscriptions: {{ pay_from_credits: true, credits_per_major_unit: 100 }}
    pricing:
      subscription:
        module: {subscription}
        config: {{ {plans} }}
      credit:
        module: {credit}
        config:
          features: {{ render: {{ credits_per_unit: 5 }}, free: {{ credits_per_unit: 0 }} }}
          multiplier_attribute: tier
          multipliers: {{ gold: 500 }}
      metered:
        module: {metered}
        config:
          currency: USD
          metrics:
            api-calls:
              free: 1000
              graduated:
                - {{ up_to: 10000, price: 10, per: 1000 }}
                - {{ up_to: 50000, price: 5, per: 1000 }}
                - {{ price: 2, per: 1000 }}
            storage-gb:
              volume:
                - {{ up_to: 100, price: 200 }}
                - {{ up_to: 1000, price: 150 }}
                - {{ price: 100 }}
      order:
        module: {catalog}
        config:
          products:
            starter-pack: {{ name: Starter pack, prices: {{ USD: 999, EUR: 899 }} }}
            pro-pack:
              name: Pro pack
              prices: {{ USD: 4999 }}
              quantity_breaks: [{{ min_quantity: 10, prices: {{ USD: 4499 }} }}]
          discount: {{ attribute: tier, per_mille: {{ gold: 100 }} }}
    validation:
      - name: limits
        module: {validation}
        config:
          daily_credit_cap: {{ by_tier: {{ capped: 50 }} }}
          allowed_currencies: [USD]
          max_order_amount: {{ USD: {{ default: 100000 }} }}
      - name: usage
        module: {validation}
        config:
          usage: {{ known_metrics: [api-calls, storage-gb] }}
  globex:
    dev: true
    api_keys: [{{ id: globex-1, sha256: {globex} }}]
    currency: EUR
    # Orders may be paid with credits (api_saga_credits.rs): 1 credit = 1 cent.
    subscriptions: {{ credits_per_major_unit: 100 }}
    pricing:
      subscription:
        module: {subscription}
        config: {{ {plans} }}
      credit:
        module: {credit}
        config: {{ features: {{ render: {{ credits_per_unit: 1 }} }} }}
      metered:
        module: {metered}
        config:
          currency: EUR
          unknown_metrics: ignore
          metrics:
            emails: {{ free: 500, package: {{ size: 1000, price: 400 }} }}
            api-calls: {{ graduated: [{{ price: 1 }}] }}
      order:
        module: {catalog}
        config: {{ products: {{ report: {{ prices: {{ EUR: 2500 }} }} }} }}
  initech:
    dev: true
    api_keys: [{{ id: initech-1, sha256: {initech} }}]
    pricing:
      credit:
        module: {hostile}
        config: {{ behaviour: loop }}
  hooli:
    dev: true
    api_keys: [{{ id: hooli-1, sha256: {hooli} }}]
"#,
        artifacts = artifacts.display(),
        acme = sha_hex(ACME_KEY),
        acme2 = sha_hex(ACME_KEY_2),
        globex = sha_hex(GLOBEX_KEY),
        initech = sha_hex(INITECH_KEY),
        hooli = sha_hex(HOOLI_KEY),
        credit = credit.display(),
        validation = validation.display(),
        hostile = hostile.display(),
        metered = metered.display(),
        subscription = subscription.display(),
        catalog = catalog.display(),
    )
}

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenant {
    /// Signed.
    Acme,
    /// Dev, unsigned.
    Globex,
    /// Dev; its credit policy loops until it runs out of fuel.
    Initech,
    /// Dev; no policies.
    Hooli,
}

impl Tenant {
    pub fn key(self) -> &'static str {
        match self {
            Tenant::Acme => ACME_KEY,
            Tenant::Globex => GLOBEX_KEY,
            Tenant::Initech => INITECH_KEY,
            Tenant::Hooli => HOOLI_KEY,
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            Tenant::Acme => "acme",
            Tenant::Globex => "globex",
            Tenant::Initech => "initech",
            Tenant::Hooli => "hooli",
        }
    }
}

/// Direct access to the test database, for what the API must not offer:
/// counting every row, and corrupting data on purpose.
#[derive(Clone)]
pub enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// Every table of the schema.
pub const TABLES: [&str; 21] = [
    "customers",
    "ledger_transactions",
    "ledger_postings",
    "credit_accounts",
    "credit_grants",
    "credit_uses",
    "credit_refunds",
    "credit_reservations",
    "orders",
    "order_items",
    "order_lines",
    "subscriptions",
    "usage_events",
    "period_closes",
    "state_history",
    "outbox_events",
    "idempotency_keys",
    "payments",
    "payment_attempts",
    "payment_methods",
    "renewal_charges",
];

impl Raw {
    pub async fn execute(&self, sql: &str) {
        self.try_execute(sql).await.unwrap();
    }

    /// Runs `sql`, handing back the database's refusal.
    pub async fn try_execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        match self {
            Raw::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
            Raw::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        }
    }

    pub async fn text(&self, sql: &str) -> String {
        match self {
            Raw::Sqlite(pool) => sqlx::query_scalar::<_, String>(sql)
                .fetch_one(pool)
                .await
                .unwrap(),
            Raw::Postgres(pool) => sqlx::query_scalar::<_, String>(sql)
                .fetch_one(pool)
                .await
                .unwrap(),
        }
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        match self {
            Raw::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(pool)
                .await
                .unwrap(),
            Raw::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(pool)
                .await
                .unwrap(),
        }
    }

    /// Rows per table (all tenants).
    pub async fn counts(&self) -> BTreeMap<&'static str, i64> {
        let mut counts = BTreeMap::new();
        for table in TABLES {
            counts.insert(
                table,
                self.scalar(&format!("SELECT COUNT(*) FROM {table}")).await,
            );
        }
        counts
    }

    pub async fn close(&self) {
        match self {
            Raw::Sqlite(pool) => pool.close().await,
            Raw::Postgres(pool) => pool.close().await,
        }
    }
}

/// An answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
    pub json: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.json["code"].as_str().unwrap_or("<none>")
    }

    pub fn result(&self) -> &Value {
        &self.json["result"]
    }

    /// Asserts the status and envelope code.
    #[track_caller]
    pub fn expect(&self, status: u16, code: &str) -> &Self {
        assert_eq!(
            (self.status.as_u16(), self.code()),
            (status, code),
            "unexpected answer: {}",
            self.json
        );
        assert_eq!(self.json["isSuccess"], code == "OK", "{}", self.json);
        self
    }
}

/// A host under test.
pub struct TestHost {
    pub backend: Backend,
    pub app: App,
    pub router: axum::Router,
    pub raw: Raw,
    pub clock: Arc<AtomicI64>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub database: DatabaseConfig,
    pg_admin: Option<(String, String)>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A fresh PostgreSQL database on the test cluster: (admin url, db url, name).
pub async fn fresh_pg_database() -> (String, String, String) {
    let admin = std::env::var("FLUXPAY_TEST_POSTGRES_URL").expect("FLUXPAY_TEST_POSTGRES_URL");
    let name = format!("fluxpay_t_{}", uuid::Uuid::now_v7().simple());
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .expect("connect to the test cluster");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (base, _) = admin
        .split_once('?')
        .map_or((admin.as_str(), ""), |(b, q)| (b, q));
    let (server, _) = base.rsplit_once('/').expect("the URL names a database");
    (admin.clone(), format!("{server}/{name}"), name)
}

impl TestHost {
    /// A host on `backend` with the test config, policies loaded, the
    /// database migrated, the clock at the real now.
    pub async fn start(backend: Backend) -> TestHost {
        TestHost::start_with(backend, |yaml| yaml).await
    }

    /// [`TestHost::start`] with the test config as `edit` makes it.
    pub async fn start_with(backend: Backend, edit: impl FnOnce(String) -> String) -> TestHost {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("tenants.yaml");
        std::fs::write(&config_path, edit(config_yaml())).unwrap();
        let (url, pg_admin) = match backend {
            Backend::Sqlite => (DatabaseUrl::Sqlite(dir.path().join("fluxpay.db")), None),
            Backend::Postgres => {
                let (admin, url, name) = fresh_pg_database().await;
                (DatabaseUrl::Postgres(Secret::new(url)), Some((admin, name)))
            }
        };
        let database = DatabaseConfig {
            url,
            max_connections: 8,
            sqlite_synchronous: SqliteSynchronous::Full,
            idempotency_retention_hours: 48,
            outbox_retention_days: 30,
        };
        let mut host = TestHost::assemble(backend, dir, config_path, database).await;
        host.pg_admin = pg_admin;
        host
    }

    async fn assemble(
        backend: Backend,
        dir: tempfile::TempDir,
        config_path: PathBuf,
        database: DatabaseConfig,
    ) -> TestHost {
        let store = Store::open(&database).await.expect("open and migrate");
        let raw = match &database.url {
            DatabaseUrl::Sqlite(path) => Raw::Sqlite(
                sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(
                        sqlx::sqlite::SqliteConnectOptions::new()
                            .filename(path)
                            .busy_timeout(std::time::Duration::from_secs(10)),
                    )
                    .await
                    .unwrap(),
            ),
            DatabaseUrl::Postgres(url) => Raw::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .connect(url.expose())
                    .await
                    .unwrap(),
            ),
        };
        let registry = Arc::new(Registry::new());
        let reloader = Arc::new(Reloader::new(&config_path, registry.clone()).unwrap());
        if let Err(failure) = reloader.reload(Trigger::Startup) {
            panic!("startup load failed: {failure}");
        }
        let config = config::load(&config_path).unwrap();
        let tenants = TenantDirectory::from_config(&config, &|name| match name {
            "TEST_ACME_SECRET" => Some(ACME_SECRET.to_owned()),
            "TEST_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.to_owned()),
            "TEST_WEBHOOK_SECRET_NEW" => Some(WEBHOOK_SECRET_NEW.to_owned()),
            _ => None,
        })
        .unwrap();
        let clock = Arc::new(AtomicI64::new(now_ms()));
        let reading = clock.clone();
        let app = App::new(
            store,
            registry,
            tenants,
            Arc::new(move || reading.load(Ordering::SeqCst)),
        );
        let token = AdminToken::new(&Secret::new(ADMIN_TOKEN));
        let router = api::service(AdminState::new(reloader, Some(token)), app.clone());
        TestHost {
            backend,
            app,
            router,
            raw,
            clock,
            dir,
            config_path,
            database,
            pg_admin: None,
        }
    }

    /// The same database, opened again by a new host (a restart).
    pub async fn restart(self) -> TestHost {
        let TestHost {
            backend,
            app,
            raw,
            dir,
            config_path,
            database,
            pg_admin,
            clock,
            ..
        } = self;
        app.store().close().await;
        raw.close().await;
        drop(app);
        let mut host = TestHost::assemble(backend, dir, config_path, database).await;
        host.pg_admin = pg_admin;
        host.clock
            .store(clock.load(Ordering::SeqCst), Ordering::SeqCst);
        host
    }

    pub fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    pub fn advance(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sends a raw request.
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .unwrap()
            .to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Answer {
            status,
            headers,
            bytes,
            json,
        }
    }

    /// A request as a well-behaved client sends it: the tenant's key, JSON,
    /// signed with the host's clock when the tenant signs.
    pub fn request(
        &self,
        tenant: Tenant,
        method: &str,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Request<Body> {
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", tenant.key()));
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        if let Some(key) = idempotency_key {
            builder = builder.header("idempotency-key", key);
        }
        if tenant == Tenant::Acme {
            let ts = (self.now() / 1000).to_string();
            let signature = sign(ACME_SECRET.as_bytes(), &ts, method, path, &bytes);
            builder = builder
                .header("x-fluxpay-timestamp", ts)
                .header("x-fluxpay-signature", signature);
        }
        builder.body(Body::from(bytes)).unwrap()
    }

    pub async fn call(
        &self,
        tenant: Tenant,
        method: &str,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> Answer {
        self.send(self.request(tenant, method, path, body.as_ref(), idempotency_key))
            .await
    }

    pub async fn put_customer(&self, tenant: Tenant, id: &str, attributes: Value) -> Answer {
        self.call(
            tenant,
            "PUT",
            &format!("/api/v1/customers/{id}"),
            Some(serde_json::json!({ "attributes": attributes })),
            None,
        )
        .await
    }

    /// A new customer without attributes holding `credits`: the starting
    /// point of most scenarios.
    pub async fn funded_customer(&self, tenant: Tenant, id: &str, credits: i64) {
        self.put_customer(tenant, id, serde_json::json!({}))
            .await
            .expect(201, "OK");
        self.charge(tenant, id, credits).await.expect(201, "OK");
    }

    pub async fn charge(&self, tenant: Tenant, customer: &str, credits: i64) -> Answer {
        let key = format!("charge-{}", uuid::Uuid::now_v7().simple());
        self.call(
            tenant,
            "POST",
            "/api/v1/credits/charge",
            Some(serde_json::json!({ "customerId": customer, "credits": credits, "reason": "test grant" })),
            Some(&key),
        )
        .await
    }

    pub async fn use_credits(
        &self,
        tenant: Tenant,
        customer: &str,
        feature: &str,
        units: i64,
        key: &str,
    ) -> Answer {
        self.call(
            tenant,
            "POST",
            "/api/v1/credits/use",
            Some(serde_json::json!({ "customerId": customer, "feature": feature, "units": units })),
            Some(key),
        )
        .await
    }

    pub async fn balance(&self, tenant: Tenant, customer: &str) -> Answer {
        self.call(
            tenant,
            "GET",
            &format!("/api/v1/credits/balance?customerId={customer}"),
            None,
            None,
        )
        .await
    }

    /// `GET /api/v1/orders/{id}` as `tenant`.
    pub async fn order(&self, tenant: Tenant, id: impl AsRef<str>) -> Answer {
        self.call(
            tenant,
            "GET",
            &format!("/api/v1/orders/{}", id.as_ref()),
            None,
            None,
        )
        .await
    }

    /// The auditor's report over every tenant.
    pub async fn audit(&self) -> AuditReport {
        audit::audit(self.app.store(), &[])
            .await
            .expect("the auditor runs")
    }

    /// Panics with the report unless the books balance.
    pub async fn assert_audit_clean(&self) {
        let report = self.audit().await;
        assert!(report.is_clean(), "{:?} audit:\n{report}", self.backend);
    }

    /// Audits, closes and drops the test database.
    pub async fn finish(self) {
        self.assert_audit_clean().await;
        self.discard().await;
    }

    /// Closes and drops the test database without auditing (for tests that
    /// corrupt it on purpose).
    pub async fn discard(self) {
        self.app.store().close().await;
        self.raw.close().await;
        if let Some((admin, name)) = &self.pg_admin {
            let pool = sqlx::PgPool::connect(admin).await.unwrap();
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&pool)
                .await;
            pool.close().await;
        }
    }
}

/// The PG simulator's secret key in the tests.
pub const PG_SECRET: &str = "test_sk_payments";
/// The connector's request timeout in the tests: the simulator's slow
/// cards answer after three times this.
pub const PG_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(400);

/// A PG simulator on 127.0.0.1.
pub struct Pg {
    /// It, to inject faults and read its ledger.
    pub sim: Simulator,
    /// Its base URL.
    pub url: String,
}

/// A simulator on 127.0.0.1, and globex's gateway pointed at it.
pub async fn pg(host: &TestHost) -> Pg {
    pg_for(host, &["globex"]).await
}

/// A simulator on 127.0.0.1, and a gateway to it for each of `tenants`.
pub async fn pg_for(host: &TestHost, tenants: &[&str]) -> Pg {
    let sim = Simulator::new(PG_SECRET, 7);
    sim.set_faults(Faults {
        slow_answer_ms: 3 * PG_TIMEOUT.as_millis() as u64,
        ..Faults::default()
    });
    let url = sim.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let connector = TossGateway::new(TossConfig {
        base_url: url.clone(),
        secret_key: Secret::new(PG_SECRET),
        connect_timeout: std::time::Duration::from_secs(2),
        request_timeout: PG_TIMEOUT,
    })
    .unwrap();
    let settings = Resilience {
        retry_min_delay: std::time::Duration::from_millis(5),
        retry_max_delay: std::time::Duration::from_millis(20),
        minimum_calls: 50,
        ..Resilience::default()
    };
    let gateway = ResilientGateway::new(connector, "globex", &settings).unwrap();
    host.app.set_gateways(
        tenants
            .iter()
            .map(|tenant| (tenant.to_string(), Arc::new(gateway.clone())))
            .collect(),
    );
    Pg { sim, url }
}

impl Pg {
    /// The checkout window, opened for FluxPay's order id.
    pub async fn checkout(&self, order_id: &str, amount: i64, card: &str) -> String {
        self.checkout_capturing(order_id, amount, card, "MANUAL")
            .await
    }

    /// [`Pg::checkout`] with the PG's `captureMethod` (`MANUAL`:
    /// authorized, captured later; `AUTOMATIC`: captured with the
    /// approval).
    pub async fn checkout_capturing(
        &self,
        order_id: &str,
        amount: i64,
        card: &str,
        capture_method: &str,
    ) -> String {
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/v1/checkout", self.url))
            .json(
                &json!({ "orderId": order_id, "amount": amount, "currency": "EUR",
                           "cardNumber": card, "captureMethod": capture_method }),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["paymentKey"].as_str().unwrap().to_owned()
    }
    /// A billing key for `customer_key`'s `card`, issued by the PG.
    pub async fn billing_key(&self, customer_key: &str, card: &str) -> String {
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/v1/billing/authorizations/card", self.url))
            .json(&json!({ "customerKey": customer_key, "cardNumber": card }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["billingKey"].as_str().unwrap().to_owned()
    }
}

//! The SQLite writer's share of one `credits/use`, without HTTP or policies:
//! what each request does while it holds the one writer (claim the
//! idempotency key, guarded debit + use row, journal: ledger transaction,
//! two postings, history row, outbox event, stored answer) and the group
//! `COMMIT`s, through the real store on a fresh file with 10,000 funded
//! customers picked at random.
//!
//! ```text
//! RUST_BACKTRACE=0 cargo bench -p fluxpay-host --bench sqlite_write_path [-- USES]
//! ```
//!
//! `WRITE_PATH_CONCURRENCY` (25: a group's size under the end-to-end
//! load) requests run at once on two runtime threads, so they queue for
//! the writer and share commits as they do in `serve`. `WRITE_PATH_SYNC`
//! is `normal` (default: the CPU of the path, without an fsync per group)
//! or `full`.
//!
//! Wall time on this VM drifts with its neighbours; for numbers that do
//! not, count instructions with callgrind at two sizes and take the
//! difference per use (set-up and seeding cancel out). One use at a time:
//! the customer sequence is fixed, so the runs repeat (with concurrent
//! uses, groups would form as valgrind happens to schedule the threads):
//!
//! ```text
//! B=$(ls -t target/release/deps/sqlite_write_path-* | grep -v '\.d$' | head -1)
//! for n in 1000 3000; do
//!   WRITE_PATH_CONCURRENCY=1 valgrind --tool=callgrind --callgrind-out-file=cg.$n $B $n
//!   callgrind_annotate --inclusive=yes cg.$n | grep -E 'write_path::run::.*closure|journal_flush'
//! done
//! ```

use std::sync::Arc;
use std::time::Instant;

use fluxpay_host::app::journal::{credit_account_state, entity, event_type, source};
use fluxpay_host::config::{DatabaseConfig, DatabaseUrl, SqliteSynchronous};
use fluxpay_host::domain::credit::CreditUseKind;
use fluxpay_host::domain::ledger::LedgerTransaction;
use fluxpay_host::domain::{CustomerId, PositiveCredits};
use fluxpay_host::store::{
    DebitCredits, DebitOutcome, GrantCredits, GrantOutcome, HistoryEntry, IdempotencyClaim,
    Journal, LedgerEntry, OutboxEntry, Store, StoredResponse, Transactions, TxOps,
};

// The allocator `fluxpay-host` runs on (host/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TENANT: &str = "bench";
const CUSTOMERS: usize = 10_000;
const NOW: i64 = 1_795_000_000_000;

fn main() {
    let uses: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(20_000);
    let concurrency: usize = std::env::var("WRITE_PATH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    let sync = match std::env::var("WRITE_PATH_SYNC").as_deref() {
        Ok("full") => SqliteSynchronous::Full,
        _ => SqliteSynchronous::Normal,
    };
    // Two runtime threads, as `serve` has on this machine: requests queue
    // for the writer while another holds it, and groups form as they do
    // there (on one thread, the first request after a commit would always
    // find nobody queued and commit alone).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run(uses, concurrency, sync));
}

async fn run(uses: usize, concurrency: usize, sync: SqliteSynchronous) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = DatabaseConfig {
        url: DatabaseUrl::Sqlite(dir.path().join("bench.db")),
        max_connections: 2,
        sqlite_synchronous: sync,
        idempotency_retention_hours: 24,
        outbox_retention_days: 30,
    };
    let store = Arc::new(Store::open(&config).await.expect("the store opens"));
    seed(&store).await;

    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let store = store.clone();
            let share = uses / concurrency + usize::from(task < uses % concurrency);
            tokio::spawn(async move {
                // A fixed pseudo-random customer sequence per task (LCG).
                let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ task as u64;
                for n in 0..share {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let customer = (state >> 33) as usize % CUSTOMERS;
                    use_credits(&store, customer, &format!("use-{task}-{n}")).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a use task");
    }
    let elapsed = started.elapsed();
    println!(
        "{uses} uses, {concurrency} at a time, synchronous={sync:?}: {:.1} µs per use ({:.0} uses/s)",
        elapsed.as_secs_f64() * 1e6 / uses as f64,
        uses as f64 / elapsed.as_secs_f64()
    );
    store.close().await;
}

fn customer_id(n: usize) -> String {
    format!("c-{n:05}")
}

/// 10,000 customers with 10⁹ credits each, in one transaction.
async fn seed(store: &Store) {
    let mut tx = store.begin(TENANT).await.expect("begin");
    let mut journal = Journal::default();
    for n in 0..CUSTOMERS {
        let id = customer_id(n);
        tx.upsert_customer(&id, r#"{"tier":"standard"}"#, NOW)
            .await
            .expect("a customer");
        let grant_id = format!("grant-{n:05}");
        let grant = GrantCredits {
            grant_id: grant_id.clone(),
            customer_id: id.clone(),
            credits: 1_000_000_000,
            expires_at: None,
            reason: "seed".into(),
            now: NOW,
        };
        assert!(matches!(
            tx.grant_credits(&grant).await.expect("a grant"),
            GrantOutcome::Granted(_)
        ));
        journal.ledger.push(LedgerEntry {
            transaction_id: grant_id,
            customer_id: Some(id.clone()),
            request_id: None,
            created_at: NOW,
            transaction: LedgerTransaction::credit_grant(
                &CustomerId::new(id).expect("an id"),
                PositiveCredits::new(1_000_000_000).expect("positive"),
            ),
        });
    }
    tx.record(journal);
    tx.commit(None).await.expect("the seed commits");
}

/// What `App::use_credits` writes for one use of 3 credits, with an answer
/// the size of the real one.
async fn use_credits(store: &Store, customer: usize, key: &str) {
    let id = customer_id(customer);
    let use_id = format!("tx-{key}");
    let mut tx = store.begin(TENANT).await.expect("begin");
    let claim = IdempotencyClaim {
        key: key.to_owned(),
        fingerprint: format!("{:064x}", customer),
        now: NOW,
    };
    tx.claim_idempotency(&claim).await.expect("a claim");
    let debit = DebitCredits {
        use_id: use_id.clone(),
        customer_id: id.clone(),
        credits: 3,
        kind: CreditUseKind::Use,
        feature: "report-export".into(),
        units: 1,
        metadata: "{}".into(),
        quote: r#"{"total":{"credits":3},"lineItems":[{"code":"report-export","description":"report-export × 1","quantity":1,"amount":{"credits":3}}]}"#.into(),
        policy: "credit-pricing".into(),
        policy_hash: "0".repeat(64),
        now: NOW,
        from_reserved: 0,
    };
    let after = match tx.debit_credits(&debit).await.expect("a debit") {
        DebitOutcome::Debited(after) => after,
        _ => panic!("the seeded balance covers every use"),
    };
    let mut journal = Journal::default();
    journal.ledger.push(LedgerEntry {
        transaction_id: use_id.clone(),
        customer_id: Some(id.clone()),
        request_id: Some(format!("req-{key}")),
        created_at: NOW,
        transaction: LedgerTransaction::credit_use(
            &CustomerId::new(id.clone()).expect("an id"),
            PositiveCredits::new(3).expect("positive"),
        ),
    });
    journal.history.push(HistoryEntry {
        entity_type: entity::CREDIT_ACCOUNT,
        entity_id: id.clone(),
        from_state: Some(credit_account_state(after.balance + 3, 0)),
        to_state: credit_account_state(after.balance, 0),
        event: "use".into(),
        reason: "report-export × 1".into(),
        actor: "api_key:bench".into(),
        request_id: Some(format!("req-{key}")),
        transaction_id: use_id.clone(),
        at: NOW,
    });
    journal.events.push(OutboxEntry {
        event_id: format!("evt-{key}"),
        event_type: event_type::CREDIT_DEDUCTED,
        source: source(TENANT),
        subject: id.clone(),
        time: NOW,
        data: format!(
            r#"{{"customerId":"{id}","transactionId":"{use_id}","feature":"report-export","units":1,"credits":3,"balance":{}}}"#,
            after.balance
        ),
        transaction_id: use_id.clone(),
        request_id: Some(format!("req-{key}")),
    });
    tx.record(journal);
    let body = format!(
        r#"{{"isSuccess":true,"code":"OK","message":"credits used","result":{{"transactionId":"{use_id}","customerId":"{id}","feature":"report-export","units":1,"creditsCharged":3,"balance":{{"balance":{},"reserved":0,"available":{}}},"lineItems":[{{"code":"report-export","description":"report-export × 1","quantity":1,"amount":{{"credits":3}}}}],"pricedBy":{{"policy":"credit-pricing","contentHash":"{}"}},"createdAt":{NOW}}}}}"#,
        after.balance,
        after.balance,
        "0".repeat(64)
    );
    tx.commit(Some(StoredResponse {
        status: 201,
        body: body.into_bytes(),
    }))
    .await
    .expect("the use commits");
}

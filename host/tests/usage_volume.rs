//! Usage batches at the documented maximum (1,000 events) keep working on
//! a large usage table, one client after another and several at once,
//! through the real binary (with every setting it runs with). A batch's
//! transaction writes far more than any statement journal or cache
//! threshold — megabytes of in-memory statement journal (`temp_store =
//! memory`), thousands of WAL frames past the checkpoint thresholds: this
//! is the test that drives them past their edge. With SQLite's statement
//! journal spill set to 1 MiB in memory it once failed with `SYS_001`
//! ("database or disk is full") from about 25,000 stored events on.

mod harness;
mod process;

use harness::{Tenant, TestHost, backends};
use process::{Server, database_url, http, json_of};
use serde_json::{Value, json};

const BATCH: usize = 1_000;
/// Sequential batches: 200,000 events stored before the concurrent ones.
const SEQUENTIAL: usize = 200;
const CLIENTS: usize = 4;
const BATCHES_PER_CLIENT: usize = 10;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// An event id that lands anywhere in the id index (as client-made UUIDs
/// do), so that a batch's 1,000 inserts touch ~1,000 different index pages
/// instead of appending to the last one: the transaction, and every
/// journal SQLite keeps for it, is then megabytes, not kilobytes.
fn scattered_id(tag: &str, i: usize) -> String {
    // splitmix64 over the tag's bytes and the index.
    let mut x = tag.bytes().fold(i as u64, |h, b| {
        h.wrapping_mul(31).wrapping_add(u64::from(b))
    });
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    format!("{x:016x}-{tag}-{i}")
}

fn batch(customer: &str, tag: &str, timestamp: i64) -> Value {
    let events: Vec<Value> = (0..BATCH)
        .map(|i| {
            json!({ "eventId": scattered_id(tag, i), "customerId": customer,
                    "metric": "emails", "quantity": 1, "timestamp": timestamp,
                    "properties": { "campaign": format!("c-{}", i % 17) } })
        })
        .collect();
    json!({ "events": events })
}

fn send_batch(addr: &str, customer: &str, tag: &str, timestamp: i64) {
    let (status, bytes) = process::try_http(
        addr,
        "POST",
        "/api/v1/usage",
        Some(&batch(customer, tag, timestamp)),
        None,
    )
    .expect("the server answers");
    assert_eq!(
        status,
        200,
        "batch {tag}: {}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(json_of(&bytes)["result"]["accepted"], BATCH, "batch {tag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_event_batches_are_stored_past_200_000_events_alone_and_concurrently() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        for c in 0..CLIENTS {
            host.put_customer(Tenant::Globex, &format!("u{c}"), json!({}))
                .await;
        }
        host.app.store().close().await;
        let server = Server::start(&host.config_path, &database_url(&host));
        let from = now_ms() - 60_000;

        let server = tokio::task::spawn_blocking(move || {
            for b in 0..SEQUENTIAL {
                send_batch(&server.addr, "u0", &format!("s{b}"), from);
            }
            let clients: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let addr = server.addr.clone();
                    std::thread::spawn(move || {
                        for b in 0..BATCHES_PER_CLIENT {
                            send_batch(&addr, &format!("u{c}"), &format!("c{c}-{b}"), from);
                        }
                    })
                })
                .collect();
            for client in clients {
                client.join().expect("a concurrent client failed");
            }
            server
        })
        .await
        .unwrap();

        // Everything counted once.
        let to = now_ms() + 1;
        let mut total = 0;
        for c in 0..CLIENTS {
            let (status, bytes) = http(
                &server,
                "GET",
                &format!("/api/v1/usage/summary?customerId=u{c}&from={from}&to={to}"),
                None,
                None,
            );
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
            let usage = &json_of(&bytes)["result"]["usage"];
            total += usage[0]["quantity"].as_i64().unwrap();
        }
        assert_eq!(
            total,
            ((SEQUENTIAL + CLIENTS * BATCHES_PER_CLIENT) * BATCH) as i64,
            "{backend:?}"
        );
        drop(server);
        if let fluxpay_host::config::DatabaseUrl::Sqlite(path) = &host.database.url {
            // ~1 GB went through the WAL; the checkpoints (every 4,000
            // frames, the writer's own past 10,000) kept starting it over,
            // so it stays a fraction of that (the bound leaves room for a
            // checkpointer that fell behind on a busy machine).
            let wal = std::fs::metadata(path.with_extension("db-wal"))
                .expect("the killed server left its WAL")
                .len();
            assert!(
                wal < 256 << 20,
                "the WAL grew to {wal} bytes: checkpoints did not keep up"
            );
        }
        host.restart().await.finish().await;
    }
}

//! Every acknowledged write survives a restart: the real `fluxpay-host serve`
//! is killed with SIGKILL (no graceful shutdown, no checkpoint) after its
//! answers were received, then started again on the same database, which
//! must hold every write, replay stored answers byte for byte, and audit
//! clean. Also an in-process restart of the store on both backends.

mod harness;
mod process;

use harness::{Tenant, TestHost, backends};
use process::{Server, database_url, http, json_of};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_keeps_every_acknowledged_write() {
    for backend in backends() {
        // The harness creates (and migrates) the database; the real binary
        // serves it. The harness's own store stays closed meanwhile.
        let host = TestHost::start(backend).await;
        host.app.store().close().await;
        let url = database_url(&host);

        let server = Server::start(&host.config_path, &url);
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

        let server = Server::start(&host.config_path, &url);
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

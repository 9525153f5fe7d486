//! Customers through the tenant API: create, replace attributes, read, and
//! the errors; every change has its history row and event.

mod harness;

use harness::{Tenant, TestHost, backends};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_creates_then_replaces_attributes_and_get_reads_them_back() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let created = host
            .put_customer(
                Tenant::Acme,
                "cus_1",
                json!({ "tier": "gold", "region": "eu" }),
            )
            .await;
        created.expect(201, "OK");
        assert_eq!(created.result()["customerId"], "cus_1");
        assert_eq!(created.result()["version"], 1);
        assert_eq!(created.result()["attributes"]["tier"], "gold");

        // The same attributes again: nothing changes, nothing is written.
        let before = host.raw.counts().await;
        let same = host
            .put_customer(
                Tenant::Acme,
                "cus_1",
                json!({ "region": "eu", "tier": "gold" }),
            )
            .await;
        same.expect(200, "OK");
        assert_eq!(same.result()["version"], 1);
        assert_eq!(host.raw.counts().await, before);

        let updated = host
            .put_customer(Tenant::Acme, "cus_1", json!({ "tier": "silver" }))
            .await;
        updated.expect(200, "OK");
        assert_eq!(updated.result()["version"], 2);
        assert_eq!(updated.result()["attributes"], json!({ "tier": "silver" }));

        let read = host
            .call(Tenant::Acme, "GET", "/api/v1/customers/cus_1", None, None)
            .await;
        read.expect(200, "OK");
        assert_eq!(read.result(), updated.result());

        // Ids tenants already use fit: colons, pipes, @.
        for id in ["auth0|123", "a@b.c", "x:y:z"] {
            let path_id = id.replace('|', "%7C");
            host.call(
                Tenant::Globex,
                "PUT",
                &format!("/api/v1/customers/{path_id}"),
                Some(json!({})),
                None,
            )
            .await
            .expect(201, "OK");
        }

        let events = host
            .call(Tenant::Acme, "GET", "/api/v1/events", None, None)
            .await;
        let types: Vec<_> = events.result()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(types, ["customer.created", "customer.updated"]);
        assert_eq!(
            host.raw
                .scalar("SELECT COUNT(*) FROM state_history WHERE entity_type = 'customer' AND entity_id = 'cus_1'")
                .await,
            2
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_and_attributes_are_req_001_and_unknown_customers_404() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let before = host.raw.counts().await;
        let long_value = "v".repeat(1025);
        let too_many: serde_json::Map<_, _> =
            (0..65).map(|i| (format!("a{i}"), json!("x"))).collect();
        for attributes in [
            json!({ "": "x" }),
            json!({ "has space": "x" }),
            json!({ "k": long_value }),
            serde_json::Value::Object(too_many),
        ] {
            host.put_customer(Tenant::Globex, "c1", attributes)
                .await
                .expect(400, "REQ_001");
        }
        let long_id = "c".repeat(129);
        for id in ["a%20b", long_id.as_str(), "%C3%A9"] {
            host.call(
                Tenant::Globex,
                "PUT",
                &format!("/api/v1/customers/{id}"),
                Some(json!({})),
                None,
            )
            .await
            .expect(400, "REQ_001");
        }
        assert_eq!(host.raw.counts().await, before, "nothing written");
        host.call(Tenant::Globex, "GET", "/api/v1/customers/ghost", None, None)
            .await
            .expect(404, "NOT_FOUND");
        host.call(
            Tenant::Globex,
            "DELETE",
            "/api/v1/customers/ghost",
            None,
            None,
        )
        .await
        .expect(405, "REQ_004");
        host.call(Tenant::Globex, "GET", "/api/v1/nothing-here", None, None)
            .await
            .expect(404, "NOT_FOUND");
        host.finish().await;
    }
}

//! Credits through the tenant API: charge, use, refund, balance and the
//! statement — each endpoint's happy path and its errors — on SQLite and
//! (when configured) PostgreSQL, with the auditor clean after each scenario.

mod harness;

use harness::{Backend, Raw, Tenant, TestHost, backends};
use serde_json::json;

async fn customer_with_credits(host: &TestHost, tenant: Tenant, id: &str, credits: i64) {
    host.put_customer(tenant, id, json!({}))
        .await
        .expect(201, "OK");
    if credits > 0 {
        host.charge(tenant, id, credits).await.expect(201, "OK");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_a_use_and_a_refund_move_the_balance_and_appear_on_the_statement() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Acme, "c1", json!({ "tier": "gold" }))
            .await
            .expect(201, "OK");

        let grant = host.charge(Tenant::Acme, "c1", 100).await;
        grant.expect(201, "OK");
        assert_eq!(grant.result()["creditsGranted"], 100);
        assert_eq!(grant.result()["balance"], 100);
        assert_eq!(grant.result()["available"], 100);

        // 3 renders × 5 × 0.5 (gold) = 7.5 → 8 credits, priced by the policy.
        let used = host
            .use_credits(Tenant::Acme, "c1", "render", 3, "use-1")
            .await;
        used.expect(201, "OK");
        let result = used.result();
        assert_eq!(result["creditsCharged"], 8, "{result}");
        assert_eq!(result["balance"], 92);
        assert_eq!(result["pricedBy"]["policy"], "credit");
        assert_eq!(result["pricedBy"]["kind"], "credit");
        assert_eq!(
            result["pricedBy"]["contentHash"].as_str().unwrap().len(),
            64
        );
        let lines = result["lineItems"].as_array().unwrap();
        assert_eq!(lines[0]["code"], "feature:render");
        assert_eq!(lines[0]["credits"], 15);
        let total: i64 = lines.iter().map(|l| l["credits"].as_i64().unwrap()).sum();
        assert_eq!(total, 8, "line items add up to the charge");
        let use_id = result["transactionId"].as_str().unwrap().to_owned();

        let refund = host
            .call(
                Tenant::Acme,
                "POST",
                "/api/v1/credits/refund",
                Some(json!({ "transactionId": use_id, "credits": 3, "reason": "render failed" })),
                Some("refund-1"),
            )
            .await;
        refund.expect(201, "OK");
        assert_eq!(refund.result()["creditsRefunded"], 3);
        assert_eq!(refund.result()["totalRefunded"], 3);
        assert_eq!(refund.result()["refundable"], 5);
        assert_eq!(refund.result()["balance"], 95);

        let balance = host.balance(Tenant::Acme, "c1").await;
        balance.expect(200, "OK");
        assert_eq!(balance.result()["balance"], 95);
        assert_eq!(balance.result()["available"], 95);
        assert_eq!(balance.result()["reserved"], 0);
        assert_eq!(balance.result()["spentToday"], 8);

        let statement = host
            .call(
                Tenant::Acme,
                "GET",
                "/api/v1/credits/transactions?customerId=c1",
                None,
                None,
            )
            .await;
        statement.expect(200, "OK");
        let items = statement.result()["items"].as_array().unwrap();
        let kinds: Vec<_> = items.iter().map(|i| i["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["refund", "use", "grant"], "newest first");
        let deltas: Vec<_> = items
            .iter()
            .map(|i| i["credits"].as_i64().unwrap())
            .collect();
        assert_eq!(deltas, [3, -8, 100]);
        let after: Vec<_> = items
            .iter()
            .map(|i| i["balanceAfter"].as_i64().unwrap())
            .collect();
        assert_eq!(after, [95, 92, 100]);
        assert_eq!(items[0]["refundedTransactionId"], use_id.as_str());
        assert_eq!(items[1]["refunded"], 3);
        assert_eq!(items[1]["feature"], "render");
        assert_eq!(statement.result()["nextCursor"], serde_json::Value::Null);

        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_pages_with_a_cursor() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        customer_with_credits(&host, Tenant::Globex, "c1", 50).await;
        for i in 0..4 {
            host.use_credits(Tenant::Globex, "c1", "render", 1, &format!("u{i}"))
                .await
                .expect(201, "OK");
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/credits/transactions?customerId=c1&limit=2&cursor={c}"),
                None => "/api/v1/credits/transactions?customerId=c1&limit=2".to_owned(),
            };
            let page = host.call(Tenant::Globex, "GET", &path, None, None).await;
            page.expect(200, "OK");
            for item in page.result()["items"].as_array().unwrap() {
                seen.push(item["transactionId"].as_str().unwrap().to_owned());
            }
            match page.result()["nextCursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 5, "4 uses and a grant, each once: {seen:?}");
        let unique: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), 5);

        for bad in ["cursor=abc", "cursor=-1", "limit=0", "limit=201", "limit=x"] {
            let path = format!("/api/v1/credits/transactions?customerId=c1&{bad}");
            host.call(Tenant::Globex, "GET", &path, None, None)
                .await
                .expect(400, "REQ_001");
        }
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_use_beyond_the_available_balance_is_402_and_moves_nothing() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        customer_with_credits(&host, Tenant::Acme, "c1", 12).await;
        let before = host.raw.counts().await;
        // 3 renders × 5 = 15 > 12.
        let short = host
            .use_credits(Tenant::Acme, "c1", "render", 3, "u1")
            .await;
        short.expect(402, "PAY_001");
        assert!(
            short.json["message"]
                .as_str()
                .unwrap()
                .contains("15 requested, 12 available")
        );
        assert_eq!(host.raw.counts().await, before, "nothing written");
        // The failed attempt did not burn the key: a retry runs afresh.
        host.charge(Tenant::Acme, "c1", 3).await.expect(201, "OK");
        host.use_credits(Tenant::Acme, "c1", "render", 3, "u1")
            .await
            .expect(201, "OK");
        let balance = host.balance(Tenant::Acme, "c1").await;
        assert_eq!(balance.result()["balance"], 0);
        host.finish().await;
    }
}

/// Acme's `c1` on the capped tier (50 credits a day), with 500 credits of
/// which it spent 45 today (`render` × 9 at 5 each, key `u1`): a use of 2
/// more breaks the cap.
async fn capped_customer_near_its_cap(host: &TestHost) {
    host.put_customer(Tenant::Acme, "c1", json!({ "tier": "capped" }))
        .await
        .expect(201, "OK");
    host.charge(Tenant::Acme, "c1", 500).await.expect(201, "OK");
    host.use_credits(Tenant::Acme, "c1", "render", 9, "u1")
        .await
        .expect(201, "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_policies_see_the_balance_and_todays_spend_and_answer_pol_001() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        capped_customer_near_its_cap(&host).await;
        let before = host.raw.counts().await;
        let refused = host
            .use_credits(Tenant::Acme, "c1", "render", 2, "u2")
            .await;
        refused.expect(422, "POL_001");
        let violations = refused.result()["violations"].as_array().unwrap();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0]["policy"], "limits");
        assert_eq!(violations[0]["ruleId"], "daily-credit-cap");
        assert_eq!(host.raw.counts().await, before, "nothing written");
        // Exactly up to the cap passes.
        host.use_credits(Tenant::Acme, "c1", "render", 1, "u3")
            .await
            .expect(201, "OK");
        // A rule is reported even when the balance is also short.
        host.put_customer(Tenant::Acme, "c2", json!({ "tier": "capped" }))
            .await
            .expect(201, "OK");
        host.use_credits(Tenant::Acme, "c2", "render", 20, "u4")
            .await
            .expect(422, "POL_001");
        // The next UTC day starts from zero.
        host.advance(24 * 3_600_000);
        host.use_credits(Tenant::Acme, "c1", "render", 2, "u5")
            .await
            .expect(201, "OK");
        let balance = host.balance(Tenant::Acme, "c1").await;
        assert_eq!(balance.result()["spentToday"], 10);
        host.finish().await;
    }
}

/// A transaction the host abandons (here: a use refused by a rule after its
/// debit locked the account row) gives its locks back at once, not when its
/// pooled connection is next checked out: until then every other use of
/// that account would wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_an_abandoned_transaction_releases_its_row_locks_at_once() {
    if !backends().contains(&Backend::Postgres) {
        return;
    }
    let host = TestHost::start(Backend::Postgres).await;
    capped_customer_near_its_cap(&host).await;
    host.use_credits(Tenant::Acme, "c1", "render", 2, "u2")
        .await
        .expect(422, "POL_001");
    // No further request reaches the host, so nothing checks its
    // connections out again.
    let Raw::Postgres(pool) = &host.raw else {
        unreachable!()
    };
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET lock_timeout = '5s'")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE credit_accounts SET updated_at = updated_at \
         WHERE tenant_id = 'acme' AND customer_id = 'c1'",
    )
    .execute(&mut *conn)
    .await
    .expect("the refused use's row lock is released");
    drop(conn);
    host.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pricing_refusals_and_failures_are_policy_errors_with_who_answered() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        customer_with_credits(&host, Tenant::Acme, "c1", 100).await;
        let before = host.raw.counts().await;
        let unknown = host
            .use_credits(Tenant::Acme, "c1", "teleport", 1, "u1")
            .await;
        unknown.expect(422, "POL_003");
        assert_eq!(unknown.result()["rejection"]["code"], "unknown-feature");
        assert_eq!(unknown.result()["policy"], "credit");
        assert_eq!(unknown.result()["contentHash"].as_str().unwrap().len(), 64);

        customer_with_credits(&host, Tenant::Initech, "c1", 100).await;
        let before_initech = host.raw.counts().await;
        let failed = host
            .use_credits(Tenant::Initech, "c1", "render", 1, "u1")
            .await;
        failed.expect(500, "POL_002");
        assert_eq!(failed.result()["failure"]["kind"], "out_of_fuel");
        assert_eq!(host.raw.counts().await, before_initech, "nothing written");
        assert_eq!(before["credit_uses"], 0);

        // A tenant with no credit policy cannot use credits.
        customer_with_credits(&host, Tenant::Hooli, "c1", 5).await;
        let unbound = host
            .use_credits(Tenant::Hooli, "c1", "render", 1, "u1")
            .await;
        unbound.expect(422, "POL_008");
        assert_eq!(
            host.balance(Tenant::Hooli, "c1").await.result()["balance"],
            5
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_use_priced_at_zero_moves_nothing_but_is_answered_and_kept_for_its_key() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        customer_with_credits(&host, Tenant::Acme, "c1", 10).await;
        let before = host.raw.counts().await;
        let free = host.use_credits(Tenant::Acme, "c1", "free", 5, "f1").await;
        free.expect(201, "OK");
        assert_eq!(free.result()["creditsCharged"], 0);
        assert_eq!(free.result()["transactionId"], serde_json::Value::Null);
        assert_eq!(free.result()["balance"], 10);
        let after = host.raw.counts().await;
        assert_eq!(after["ledger_transactions"], before["ledger_transactions"]);
        assert_eq!(after["idempotency_keys"], before["idempotency_keys"] + 1);
        let again = host.use_credits(Tenant::Acme, "c1", "free", 5, "f1").await;
        assert_eq!(again.bytes, free.bytes);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_never_exceed_what_the_use_charged() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        customer_with_credits(&host, Tenant::Globex, "c1", 10).await;
        let used = host
            .use_credits(Tenant::Globex, "c1", "render", 4, "u1")
            .await;
        let use_id = used.result()["transactionId"].as_str().unwrap().to_owned();
        let refund = |credits: Option<i64>, key: &'static str| {
            let mut body = json!({ "transactionId": use_id });
            if let Some(credits) = credits {
                body["credits"] = json!(credits);
            }
            host.call(
                Tenant::Globex,
                "POST",
                "/api/v1/credits/refund",
                Some(body),
                Some(key),
            )
        };
        refund(Some(5), "r1").await.expect(400, "REQ_001");
        refund(Some(0), "r2").await.expect(400, "REQ_001");
        refund(Some(-1), "r3").await.expect(400, "REQ_001");
        refund(Some(1), "r4").await.expect(201, "OK");
        let rest = refund(None, "r5").await;
        rest.expect(201, "OK");
        assert_eq!(rest.result()["creditsRefunded"], 3);
        assert_eq!(rest.result()["refundable"], 0);
        refund(None, "r6").await.expect(409, "PAY_004");
        refund(Some(1), "r7").await.expect(400, "REQ_001");
        // Unknown transactions, and grants (not uses), are not found.
        let grant = host.charge(Tenant::Globex, "c1", 1).await;
        let grant_id = grant.result()["transactionId"].as_str().unwrap();
        for id in ["tx_nope", grant_id] {
            host.call(
                Tenant::Globex,
                "POST",
                "/api/v1/credits/refund",
                Some(json!({ "transactionId": id })),
                Some(&format!("r-{id}")),
            )
            .await
            .expect(404, "NOT_FOUND");
        }
        let balance = host.balance(Tenant::Globex, "c1").await;
        assert_eq!(balance.result()["balance"], 11);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_amounts_ids_and_missing_keys_are_req_001_and_write_nothing() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        customer_with_credits(&host, Tenant::Globex, "c1", 10).await;
        let before = host.raw.counts().await;
        let charge = |body: serde_json::Value, key: Option<&'static str>| {
            host.call(
                Tenant::Globex,
                "POST",
                "/api/v1/credits/charge",
                Some(body),
                key,
            )
        };
        let bodies = [
            json!({ "customerId": "c1", "credits": 0, "reason": "r" }),
            json!({ "customerId": "c1", "credits": -5, "reason": "r" }),
            json!({ "customerId": "c1", "credits": 1.5, "reason": "r" }),
            json!({ "customerId": "c1", "credits": "5", "reason": "r" }),
            json!({ "customerId": "c1", "credits": 9_223_372_036_854_775_807u64 + 1, "reason": "r" }),
            json!({ "customerId": "c1", "credits": 5 }),
            json!({ "customerId": "c1", "credits": 5, "reason": " " }),
            json!({ "customerId": "", "credits": 5, "reason": "r" }),
            json!({ "customerId": "a b", "credits": 5, "reason": "r" }),
            json!({ "customerId": "c1", "credits": 5, "reason": "r", "expiresAt": 1 }),
            json!({ "customerId": "c1", "credits": 5, "reason": "r", "extra": true }),
        ];
        for body in bodies {
            let answer = charge(body.clone(), Some("k1")).await;
            answer.expect(400, "REQ_001");
            assert!(
                !answer.json["message"].as_str().unwrap().is_empty(),
                "{body}"
            );
        }
        charge(
            json!({ "customerId": "c1", "credits": 5, "reason": "r" }),
            None,
        )
        .await
        .expect(400, "REQ_001");
        host.use_credits(Tenant::Globex, "c1", "render", 0, "u0")
            .await
            .expect(400, "REQ_001");
        host.call(
            Tenant::Globex,
            "POST",
            "/api/v1/credits/use",
            Some(json!({ "customerId": "c1", "feature": "render", "units": 1 })),
            None,
        )
        .await
        .expect(400, "REQ_001");
        // A balance that would overflow 64 bits is refused, not wrapped.
        charge(
            json!({ "customerId": "c1", "credits": i64::MAX, "reason": "r" }),
            Some("k2"),
        )
        .await
        .expect(400, "REQ_001");
        assert_eq!(host.raw.counts().await, before, "nothing written");
        // Unknown customers are not found.
        for (method, path, body) in [
            (
                "POST",
                "/api/v1/credits/charge",
                Some(json!({ "customerId": "ghost", "credits": 5, "reason": "r" })),
            ),
            (
                "POST",
                "/api/v1/credits/use",
                Some(json!({ "customerId": "ghost", "feature": "render", "units": 1 })),
            ),
            ("GET", "/api/v1/credits/balance?customerId=ghost", None),
            ("GET", "/api/v1/credits/transactions?customerId=ghost", None),
        ] {
            host.call(Tenant::Globex, method, path, body, Some("k3"))
                .await
                .expect(404, "NOT_FOUND");
        }
        assert_eq!(host.raw.counts().await, before, "nothing written");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_grants_are_spent_first_and_tracked() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Globex, "c1", json!({}))
            .await
            .expect(201, "OK");
        let soon = host.now() + 3_600_000;
        let later = host.now() + 7_200_000;
        for (credits, expires_at, key) in [
            (10, Some(later), "g1"),
            (10, Some(soon), "g2"),
            (10, None, "g3"),
        ] {
            host.call(
                Tenant::Globex,
                "POST",
                "/api/v1/credits/charge",
                Some(json!({ "customerId": "c1", "credits": credits, "reason": "promo", "expiresAt": expires_at })),
                Some(key),
            )
            .await
            .expect(201, "OK");
        }
        host.use_credits(Tenant::Globex, "c1", "render", 15, "u1")
            .await
            .expect(201, "OK");
        // The soonest-expiring grant is spent first, then the next one.
        let remaining = host
            .raw
            .scalar("SELECT CAST(COALESCE(SUM(remaining), 0) AS BIGINT) FROM credit_grants WHERE remaining IS NOT NULL")
            .await;
        assert_eq!(remaining, 5);
        let soonest = host
            .raw
            .scalar(&format!(
                "SELECT remaining FROM credit_grants WHERE expires_at = {soon}"
            ))
            .await;
        assert_eq!(soonest, 0);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_same_request_replays_byte_for_byte_and_a_different_request_is_pay_003() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        customer_with_credits(&host, Tenant::Acme, "c1", 100).await;
        let first = host
            .use_credits(Tenant::Acme, "c1", "render", 2, "same")
            .await;
        first.expect(201, "OK");
        assert!(first.headers.get("idempotent-replayed").is_none());
        // Later, signed with a new timestamp: the same request, same bytes.
        host.advance(5_000);
        let again = host
            .use_credits(Tenant::Acme, "c1", "render", 2, "same")
            .await;
        assert_eq!(again.status, first.status);
        assert_eq!(again.bytes, first.bytes, "byte for byte");
        assert_eq!(again.headers["idempotent-replayed"], "true");
        let other = host
            .use_credits(Tenant::Acme, "c1", "render", 3, "same")
            .await;
        other.expect(409, "PAY_003");
        // Keys are scoped to the tenant: globex may use the same key.
        customer_with_credits(&host, Tenant::Globex, "c1", 10).await;
        host.use_credits(Tenant::Globex, "c1", "render", 2, "same")
            .await
            .expect(201, "OK");
        let balance = host.balance(Tenant::Acme, "c1").await;
        assert_eq!(balance.result()["balance"], 90, "one effect");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_runs_postgres_when_configured() {
    let backends = backends();
    assert_eq!(backends[0], Backend::Sqlite);
    if std::env::var("FLUXPAY_TEST_POSTGRES_URL").is_ok_and(|v| !v.is_empty()) {
        assert!(backends.contains(&Backend::Postgres));
    }
}

//! Money under concurrency: many requests on one account at once never
//! overdraw it, a daily cap holds exactly, and concurrent duplicates of one
//! idempotent request produce one effect and identical answers.

mod harness;

use std::collections::BTreeSet;
use std::sync::Arc;

use harness::{Tenant, TestHost, backends};
use serde_json::json;
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_uses_on_one_account_never_overdraw_it() {
    for backend in backends() {
        let host = Arc::new(TestHost::start(backend).await);
        host.put_customer(Tenant::Globex, "c1", json!({}))
            .await
            .expect(201, "OK");
        // 301 credits; each use costs 3: exactly 100 fit, with 1 left.
        host.charge(Tenant::Globex, "c1", 301)
            .await
            .expect(201, "OK");
        let mut tasks = JoinSet::new();
        for i in 0..200 {
            let host = host.clone();
            tasks.spawn(async move {
                host.use_credits(Tenant::Globex, "c1", "render", 3, &format!("use-{i}"))
                    .await
            });
        }
        let (mut ok, mut short) = (0, 0);
        let mut balances = BTreeSet::new();
        while let Some(answer) = tasks.join_next().await {
            let answer = answer.unwrap();
            match answer.code() {
                "OK" => {
                    ok += 1;
                    let balance = answer.result()["balance"].as_i64().unwrap();
                    assert!(balance >= 0);
                    assert!(balances.insert(balance), "two uses saw balance {balance}");
                }
                "PAY_001" => short += 1,
                other => panic!("{backend:?}: unexpected {other}: {}", answer.json),
            }
        }
        assert_eq!((ok, short), (100, 100), "{backend:?}");
        let balance = host.balance(Tenant::Globex, "c1").await;
        assert_eq!(balance.result()["balance"], 1, "{backend:?}");
        assert_eq!(
            host.raw.scalar("SELECT COUNT(*) FROM credit_uses").await,
            100
        );
        let host = Arc::into_inner(host).unwrap();
        // Balance = ledger, every use has its history row and event.
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_daily_cap_holds_exactly_under_concurrent_uses() {
    for backend in backends() {
        let host = Arc::new(TestHost::start(backend).await);
        host.put_customer(Tenant::Acme, "c1", json!({ "tier": "capped" }))
            .await
            .expect(201, "OK");
        host.charge(Tenant::Acme, "c1", 1000)
            .await
            .expect(201, "OK");
        // Cap 50 a day, 5 credits each: exactly 10 of 30 pass.
        let mut tasks = JoinSet::new();
        for i in 0..30 {
            let host = host.clone();
            tasks.spawn(async move {
                host.use_credits(Tenant::Acme, "c1", "render", 1, &format!("cap-{i}"))
                    .await
            });
        }
        let mut codes = Vec::new();
        while let Some(answer) = tasks.join_next().await {
            codes.push(answer.unwrap().code().to_owned());
        }
        let ok = codes.iter().filter(|c| *c == "OK").count();
        let refused = codes.iter().filter(|c| *c == "POL_001").count();
        assert_eq!((ok, refused), (10, 20), "{backend:?}: {codes:?}");
        let balance = host.balance(Tenant::Acme, "c1").await;
        assert_eq!(balance.result()["spentToday"], 50);
        assert_eq!(balance.result()["balance"], 950);
        Arc::into_inner(host).unwrap().finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_duplicates_of_one_request_make_one_effect_and_identical_answers() {
    for backend in backends() {
        let host = Arc::new(TestHost::start(backend).await);
        host.funded_customer(Tenant::Acme, "c1", 1000).await;
        let before = host.raw.counts().await;
        // The same request (one body, one key), built once so the signature
        // is identical too, sent 100 times at once.
        let body = json!({ "customerId": "c1", "feature": "render", "units": 2 });
        let mut tasks = JoinSet::new();
        for _ in 0..100 {
            let host = host.clone();
            let body = body.clone();
            tasks.spawn(async move {
                let request = host.request(
                    Tenant::Acme,
                    "POST",
                    "/api/v1/credits/use",
                    Some(&body),
                    Some("one-key"),
                );
                host.send(request).await
            });
        }
        let mut answers = Vec::new();
        while let Some(answer) = tasks.join_next().await {
            answers.push(answer.unwrap());
        }
        let first = &answers[0];
        first.expect(201, "OK");
        for answer in &answers {
            assert_eq!(answer.status, first.status, "{}", answer.json);
            assert_eq!(answer.bytes, first.bytes, "identical answers");
        }
        let replayed = answers
            .iter()
            .filter(|a| a.headers.get("idempotent-replayed").is_some())
            .count();
        assert_eq!(replayed, 99, "{backend:?}");
        let after = host.raw.counts().await;
        assert_eq!(
            after["credit_uses"],
            before["credit_uses"] + 1,
            "one effect"
        );
        assert_eq!(
            after["ledger_transactions"],
            before["ledger_transactions"] + 1
        );
        assert_eq!(after["outbox_events"], before["outbox_events"] + 1);
        assert_eq!(after["idempotency_keys"], before["idempotency_keys"] + 1);
        let balance = host.balance(Tenant::Acme, "c1").await;
        assert_eq!(balance.result()["balance"], 990);
        Arc::into_inner(host).unwrap().finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_grants_uses_and_refunds_across_customers_keep_the_books_balanced() {
    for backend in backends() {
        let host = Arc::new(TestHost::start(backend).await);
        for c in 0..5 {
            host.put_customer(Tenant::Globex, &format!("c{c}"), json!({}))
                .await
                .expect(201, "OK");
            host.charge(Tenant::Globex, &format!("c{c}"), 40)
                .await
                .expect(201, "OK");
        }
        let mut tasks = JoinSet::new();
        for i in 0..60 {
            let host = host.clone();
            tasks.spawn(async move {
                let customer = format!("c{}", i % 5);
                match i % 3 {
                    0 => host.charge(Tenant::Globex, &customer, 2).await,
                    _ => {
                        let used = host
                            .use_credits(Tenant::Globex, &customer, "render", 4, &format!("m{i}"))
                            .await;
                        if used.code() == "OK" && i % 2 == 0 {
                            let id = used.result()["transactionId"].as_str().unwrap().to_owned();
                            host.call(
                                Tenant::Globex,
                                "POST",
                                "/api/v1/credits/refund",
                                Some(json!({ "transactionId": id, "credits": 1 })),
                                Some(&format!("r{i}")),
                            )
                            .await
                        } else {
                            used
                        }
                    }
                }
            });
        }
        while let Some(answer) = tasks.join_next().await {
            let answer = answer.unwrap();
            assert!(
                matches!(answer.code(), "OK" | "PAY_001"),
                "{backend:?}: {}",
                answer.json
            );
        }
        Arc::into_inner(host).unwrap().finish().await;
    }
}

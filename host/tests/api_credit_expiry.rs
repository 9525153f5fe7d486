//! Credit expiry: grants with an `expiresAt` lose what is left of them when
//! the expiry job runs after that time — soonest-expiring credits are spent
//! first, the expiry shows on the statement and in the events, and the
//! books balance — on SQLite and (when configured) PostgreSQL.

mod harness;

use harness::{Tenant, TestHost, backends};
use serde_json::json;

const HOUR: i64 = 3_600_000;

async fn grant(host: &TestHost, customer: &str, credits: i64, expires_at: Option<i64>) -> String {
    let answer = host
        .call(
            Tenant::Globex,
            "POST",
            "/api/v1/credits/charge",
            Some(json!({
                "customerId": customer, "credits": credits, "reason": "promo",
                "expiresAt": expires_at
            })),
            Some(&format!("grant-{}", uuid::Uuid::now_v7().simple())),
        )
        .await;
    answer.expect(201, "OK");
    answer.result()["transactionId"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unspent_credits_of_a_lapsed_grant_expire_and_spending_takes_them_first() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Globex, "g1", json!({}))
            .await
            .expect(201, "OK");
        let promo = grant(&host, "g1", 100, Some(host.now() + HOUR)).await;
        grant(&host, "g1", 50, None).await;
        // 30 credits spent: they come out of the promo, which expires first.
        host.use_credits(Tenant::Globex, "g1", "render", 30, "use-1")
            .await
            .expect(201, "OK");

        // Not due yet: nothing happens.
        let early = host.app.expire_credits(host.now()).await.unwrap();
        assert_eq!((early.grants, early.credits), (0, 0));

        host.advance(2 * HOUR);
        let run = host.app.expire_credits(host.now()).await.unwrap();
        assert_eq!((run.grants, run.credits, run.failed), (1, 70, 0));
        let balance = host.balance(Tenant::Globex, "g1").await;
        assert_eq!(balance.result()["balance"], 50, "the 50 that never expire");

        // A second run finds nothing left to expire.
        let again = host.app.expire_credits(host.now()).await.unwrap();
        assert_eq!((again.grants, again.credits), (0, 0));

        let statement = host
            .call(
                Tenant::Globex,
                "GET",
                "/api/v1/credits/transactions?customerId=g1",
                None,
                None,
            )
            .await;
        let newest = &statement.result()["items"][0];
        assert_eq!(newest["type"], "expiry", "{}", statement.json);
        assert_eq!(newest["credits"], -70);
        assert_eq!(newest["balanceAfter"], 50);
        assert_eq!(newest["grantTransactionId"], promo.as_str());

        let events = host
            .call(Tenant::Globex, "GET", "/api/v1/events", None, None)
            .await;
        let expired: Vec<_> = events.result()["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "credit.expired")
            .collect();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0]["data"]["credits"], 70);
        assert_eq!(expired[0]["data"]["grantTransactionId"], promo.as_str());
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_spent_in_full_before_it_lapses_has_nothing_to_expire() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Globex, "g1", json!({}))
            .await
            .expect(201, "OK");
        grant(&host, "g1", 40, Some(host.now() + HOUR)).await;
        grant(&host, "g1", 10, None).await;
        host.use_credits(Tenant::Globex, "g1", "render", 45, "use-1")
            .await
            .expect(201, "OK");
        host.advance(2 * HOUR);
        let run = host.app.expire_credits(host.now()).await.unwrap();
        assert_eq!((run.grants, run.credits), (0, 0));
        assert_eq!(
            host.balance(Tenant::Globex, "g1").await.result()["balance"],
            5
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_expiry_runs_expire_each_grant_once() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        for c in 0..5 {
            let id = format!("g{c}");
            host.put_customer(Tenant::Globex, &id, json!({}))
                .await
                .expect(201, "OK");
            grant(&host, &id, 20, Some(host.now() + HOUR)).await;
        }
        host.advance(2 * HOUR);
        let now = host.now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let app = host.app.clone();
                tokio::spawn(async move { app.expire_credits(now).await.unwrap() })
            })
            .collect();
        let mut runs = Vec::new();
        for task in tasks {
            runs.push(task.await.unwrap());
        }
        let total: i64 = runs.iter().map(|r| r.credits).sum();
        let grants: u64 = runs.iter().map(|r| r.grants).sum();
        assert_eq!((grants, total), (5, 100), "{runs:?}");
        let expiries = host
            .raw
            .scalar("SELECT COUNT(*) FROM credit_expiries")
            .await;
        assert_eq!(expiries, 5);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_spent_after_a_grant_lapses_but_before_the_job_runs_come_out_of_that_grant() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Globex, "g1", json!({}))
            .await
            .expect(201, "OK");
        grant(&host, "g1", 50, None).await;
        grant(&host, "g1", 100, Some(host.now() + HOUR)).await;
        host.advance(HOUR + 1000);
        // The lapsed grant is still in the balance until the job runs; a
        // spend takes it first, so the credits that never expire are only
        // touched for the rest.
        host.use_credits(Tenant::Globex, "g1", "render", 120, "use-1")
            .await
            .expect(201, "OK");
        let run = host.app.expire_credits(host.now()).await.unwrap();
        assert_eq!((run.grants, run.credits), (0, 0), "nothing left to expire");
        assert_eq!(
            host.balance(Tenant::Globex, "g1").await.result()["balance"],
            30,
            "the never-expiring credits minus what the lapsed grant did not cover"
        );
        host.finish().await;
    }
}

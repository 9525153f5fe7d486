//! Subscriptions through the tenant API and the scheduler: create (trial or
//! paid), read, change plan (prorated now, or at period end), cancel (now or
//! at period end), resume, renewals paid from credits, past due, the billing anchor,
//! double scheduler runs and tenant isolation — on SQLite and (when
//! configured) PostgreSQL, with the auditor clean after each scenario.
//!
//! Plans (harness): basic 10 USD/month, pro 30, pro-yearly 300/year,
//! trial-basic (14 trial days), trial-pro (7). `acme` pays from credits at
//! 100 credits per USD, so a basic month costs 1000 credits.

mod harness;

use fluxpay_host::app::subscriptions::SchedulerSummary;
use harness::{Answer, Tenant, TestHost, backends};
use serde_json::{Value, json};

const DAY: i64 = 86_400_000;

async fn subscribe(host: &TestHost, tenant: Tenant, customer: &str, plan: &str) -> Answer {
    host.call(
        tenant,
        "POST",
        "/api/v1/subscriptions",
        Some(json!({ "customerId": customer, "planId": plan })),
        Some(&format!("sub-{customer}-{plan}-{}", host.now())),
    )
    .await
}

/// Acme's customer `c1` funded with `credits`, on the `basic` plan:
/// (subscription id, end of its first period).
async fn basic_subscription(host: &TestHost, credits: i64) -> (String, i64) {
    host.funded_customer(Tenant::Acme, "c1", credits).await;
    let created = subscribe(host, Tenant::Acme, "c1", "basic").await;
    (id_of(&created), int(&created.result()["currentPeriodEnd"]))
}

async fn get(host: &TestHost, tenant: Tenant, id: &str) -> Answer {
    host.call(
        tenant,
        "GET",
        &format!("/api/v1/subscriptions/{id}"),
        None,
        None,
    )
    .await
}

async fn change_plan(
    host: &TestHost,
    tenant: Tenant,
    id: &str,
    plan: &str,
    timing: &str,
) -> Answer {
    host.call(
        tenant,
        "POST",
        &format!("/api/v1/subscriptions/{id}/change-plan"),
        Some(json!({ "planId": plan, "timing": timing })),
        Some(&format!("change-{id}-{plan}-{}", host.now())),
    )
    .await
}

async fn cancel(host: &TestHost, tenant: Tenant, id: &str, body: Option<Value>) -> Answer {
    host.call(
        tenant,
        "POST",
        &format!("/api/v1/subscriptions/{id}/cancel"),
        body,
        None,
    )
    .await
}

async fn resume(host: &TestHost, tenant: Tenant, id: &str, key: Option<&str>) -> Answer {
    host.call(
        tenant,
        "POST",
        &format!("/api/v1/subscriptions/{id}/resume"),
        None,
        key,
    )
    .await
}

async fn run_scheduler(host: &TestHost) -> SchedulerSummary {
    host.app
        .run_subscription_scheduler(host.now())
        .await
        .expect("the scheduler runs")
}

async fn available(host: &TestHost, tenant: Tenant, customer: &str) -> i64 {
    host.balance(tenant, customer).await.result()["available"]
        .as_i64()
        .unwrap()
}

fn id_of(answer: &Answer) -> String {
    answer.result()["subscriptionId"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn int(value: &Value) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("not an integer: {value}"))
}

/// Epoch ms of a UTC date and hour (days-from-civil, no date crate).
fn utc(year: i64, month: i64, day: i64, hour: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * DAY + hour * 3_600_000
}

/// The policy's proration rounding: half away from zero (non-negative here).
fn prorate(price: i64, remaining: i64, period: i64) -> i64 {
    let (price, remaining, period) = (price as i128, remaining as i128, period as i128);
    ((2 * price * remaining + period) / (2 * period)) as i64
}

async fn event_types(host: &TestHost, tenant: Tenant) -> Vec<String> {
    let page = host
        .call(tenant, "GET", "/api/v1/events?limit=200", None, None)
        .await;
    page.expect(200, "OK");
    page.result()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_start_is_active_and_pays_its_first_period_from_credits() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Acme, "c1", 5000).await;
        let now = host.now();
        let key = "sub-create-1";
        let body = json!({ "customerId": "c1", "planId": "basic", "metadata": { "crm": "42" } });
        let created = host
            .call(
                Tenant::Acme,
                "POST",
                "/api/v1/subscriptions",
                Some(body.clone()),
                Some(key),
            )
            .await;
        created.expect(201, "OK");
        let result = created.result();
        assert_eq!(result["status"], "ACTIVE", "{result}");
        assert_eq!(result["planId"], "basic");
        assert_eq!(result["customerId"], "c1");
        assert_eq!(result["pendingPlanId"], Value::Null);
        assert_eq!(result["trialEnd"], Value::Null);
        assert_eq!(result["cancelAtPeriodEnd"], false);
        assert_eq!(int(&result["currentPeriodStart"]), now);
        assert_eq!(int(&result["billingAnchor"]), now);
        assert!(int(&result["currentPeriodEnd"]) >= now + 28 * DAY);
        assert_eq!(result["metadata"]["crm"], "42");
        let charge = &result["charge"];
        assert_eq!(charge["method"], "credits");
        assert_eq!(
            charge["total"],
            json!({ "amount": 1000, "currency": "USD" })
        );
        assert_eq!(charge["creditsCharged"], 1000);
        assert_eq!(charge["pricedBy"]["kind"], "subscription");
        assert_eq!(charge["lineItems"][0]["code"], "plan:basic");
        assert!(charge["transactionId"].as_str().unwrap().starts_with("tx_"));
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 4000);

        // A retry replays the stored answer and charges nothing more.
        let replay = host
            .call(
                Tenant::Acme,
                "POST",
                "/api/v1/subscriptions",
                Some(body),
                Some(key),
            )
            .await;
        replay.expect(201, "OK");
        assert_eq!(replay.bytes, created.bytes);
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 4000);

        let id = id_of(&created);
        let read = get(&host, Tenant::Acme, &id).await;
        read.expect(200, "OK");
        assert_eq!(read.result()["status"], "ACTIVE");
        assert_eq!(read.result()["version"], 1);
        assert_eq!(
            read.result()["currentPeriodEnd"],
            result["currentPeriodEnd"]
        );

        let statement = host
            .call(
                Tenant::Acme,
                "GET",
                "/api/v1/credits/transactions?customerId=c1",
                None,
                None,
            )
            .await;
        assert_eq!(
            statement.result()["items"][0]["feature"],
            "subscription:basic"
        );
        let events = event_types(&host, Tenant::Acme).await;
        assert!(
            events.contains(&"subscription.created".to_owned()),
            "{events:?}"
        );
        assert!(events.contains(&"credit.deducted".to_owned()), "{events:?}");
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_costs_nothing_and_the_scheduler_activates_it_at_the_trial_end() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Acme, "c1", 5000).await;
        let start = host.now();
        let created = subscribe(&host, Tenant::Acme, "c1", "trial-basic").await;
        created.expect(201, "OK");
        let result = created.result();
        assert_eq!(result["status"], "TRIALING", "{result}");
        assert_eq!(int(&result["trialEnd"]), start + 14 * DAY);
        assert_eq!(int(&result["currentPeriodEnd"]), start + 14 * DAY);
        assert_eq!(result["billingAnchor"], Value::Null);
        assert_eq!(result["charge"]["creditsCharged"], 0);
        assert_eq!(result["charge"]["method"], "none");
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 5000);
        let id = id_of(&created);

        // Not due yet: nothing happens.
        host.advance(14 * DAY - 1);
        assert_eq!(run_scheduler(&host).await, SchedulerSummary::default());

        host.advance(1);
        let summary = run_scheduler(&host).await;
        assert_eq!(summary.activated, 1, "{summary:?}");
        let read = get(&host, Tenant::Acme, &id).await;
        let sub = read.result();
        assert_eq!(sub["status"], "ACTIVE", "{sub}");
        assert_eq!(int(&sub["currentPeriodStart"]), start + 14 * DAY);
        assert_eq!(int(&sub["billingAnchor"]), start + 14 * DAY);
        assert_eq!(sub["trialEnd"], Value::Null);
        assert_eq!(sub["version"], 2);
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 4000);
        let events = event_types(&host, Tenant::Acme).await;
        assert!(
            events.contains(&"subscription.activated".to_owned()),
            "{events:?}"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_is_paid_from_credits_and_a_second_scheduler_run_renews_nothing() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Acme, "c1", 5000).await;
        let created = subscribe(&host, Tenant::Acme, "c1", "basic").await;
        created.expect(201, "OK");
        let id = id_of(&created);
        let end = int(&created.result()["currentPeriodEnd"]);
        host.advance(end - host.now());

        let first = run_scheduler(&host).await;
        assert_eq!(first.renewed, 1, "{first:?}");
        let second = run_scheduler(&host).await;
        assert_eq!(second, SchedulerSummary::default());
        // Two schedulers at once (two `serve` processes): still one renewal.
        let (a, b) = tokio::join!(run_scheduler(&host), run_scheduler(&host));
        assert_eq!(a.renewed + b.renewed, 0);

        let sub = get(&host, Tenant::Acme, &id).await;
        assert_eq!(int(&sub.result()["currentPeriodStart"]), end);
        assert_eq!(sub.result()["status"], "ACTIVE");
        assert_eq!(sub.result()["version"], 2);
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 3000);
        let events = event_types(&host, Tenant::Acme).await;
        assert_eq!(
            events
                .iter()
                .filter(|e| *e == "subscription.renewed")
                .count(),
            1
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_schedulers_renew_a_due_subscription_exactly_once() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Acme, "c1", 5000).await;
        let created = subscribe(&host, Tenant::Acme, "c1", "basic").await;
        let end = int(&created.result()["currentPeriodEnd"]);
        host.advance(end - host.now());
        // Two tasks, as two hosts' schedulers (or a scheduler and a
        // restart) would run.
        let run = |app: fluxpay_host::app::App, now| {
            tokio::spawn(async move { app.run_subscription_scheduler(now).await })
        };
        let (a, b) = (
            run(host.app.clone(), host.now()),
            run(host.app.clone(), host.now()),
        );
        let (a, b) = (
            a.await.unwrap().expect("the scheduler runs"),
            b.await.unwrap().expect("the scheduler runs"),
        );
        assert_eq!(a.renewed + b.renewed, 1, "{a:?} {b:?}");
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 3000);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_without_enough_credits_is_past_due_until_the_credits_arrive() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Acme, "c1", 1500).await;
        let created = subscribe(&host, Tenant::Acme, "c1", "basic").await;
        created.expect(201, "OK");
        let id = id_of(&created);
        let end = int(&created.result()["currentPeriodEnd"]);
        host.advance(end - host.now());

        let summary = run_scheduler(&host).await;
        assert_eq!(summary.past_due, 1, "{summary:?}");
        let sub = get(&host, Tenant::Acme, &id).await;
        assert_eq!(sub.result()["status"], "PAST_DUE");
        assert_eq!(
            int(&sub.result()["currentPeriodEnd"]),
            end,
            "the last paid period stays"
        );
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 500);
        let events = event_types(&host, Tenant::Acme).await;
        assert!(
            events.contains(&"subscription.past_due".to_owned()),
            "{events:?}"
        );
        host.assert_audit_clean().await;

        // Still short: the retry writes nothing.
        let retry = run_scheduler(&host).await;
        assert_eq!(retry.skipped, 1, "{retry:?}");
        assert_eq!(get(&host, Tenant::Acme, &id).await.result()["version"], 2);

        host.charge(Tenant::Acme, "c1", 1000)
            .await
            .expect(201, "OK");
        let recovered = run_scheduler(&host).await;
        assert_eq!(recovered.activated, 1, "{recovered:?}");
        let sub = get(&host, Tenant::Acme, &id).await;
        assert_eq!(sub.result()["status"], "ACTIVE");
        assert_eq!(int(&sub.result()["currentPeriodStart"]), end);
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 500);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_past_due_subscription_expires_after_the_dunning_window_without_charging_a_backlog() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let (id, end) = basic_subscription(&host, 1500).await;
        host.advance(end - host.now());
        assert_eq!(run_scheduler(&host).await.past_due, 1);

        // Fourteen days later, still unpaid: the scheduler gives up.
        host.advance(fluxpay_host::app::subscriptions::DUNNING_WINDOW_MS);
        let summary = run_scheduler(&host).await;
        assert_eq!(summary.expired, 1, "{summary:?}");
        let sub = get(&host, Tenant::Acme, &id).await;
        assert_eq!(sub.result()["status"], "EXPIRED");

        // Credits arriving afterwards buy nothing retroactively.
        host.charge(Tenant::Acme, "c1", 5000)
            .await
            .expect(201, "OK");
        let later = run_scheduler(&host).await;
        assert_eq!(later.activated + later.renewed, 0, "{later:?}");
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 5500);
        let events = event_types(&host, Tenant::Acme).await;
        assert!(
            events.contains(&"subscription.expired".to_owned()),
            "{events:?}"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_keep_the_billing_anchor_day_through_short_months() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.clock
            .store(utc(2024, 1, 31, 10), std::sync::atomic::Ordering::SeqCst);
        host.funded_customer(Tenant::Acme, "c1", 10_000).await;
        let created = subscribe(&host, Tenant::Acme, "c1", "basic").await;
        created.expect(201, "OK");
        let id = id_of(&created);
        assert_eq!(
            int(&created.result()["currentPeriodEnd"]),
            utc(2024, 2, 29, 10)
        );

        host.advance(utc(2024, 2, 29, 10) - host.now());
        assert_eq!(run_scheduler(&host).await.renewed, 1);
        let sub = get(&host, Tenant::Acme, &id).await;
        assert_eq!(
            int(&sub.result()["currentPeriodStart"]),
            utc(2024, 2, 29, 10)
        );
        assert_eq!(int(&sub.result()["currentPeriodEnd"]), utc(2024, 3, 31, 10));
        assert_eq!(int(&sub.result()["billingAnchor"]), utc(2024, 1, 31, 10));

        host.advance(utc(2024, 3, 31, 10) - host.now());
        assert_eq!(run_scheduler(&host).await.renewed, 1);
        let sub = get(&host, Tenant::Acme, &id).await;
        assert_eq!(int(&sub.result()["currentPeriodEnd"]), utc(2024, 4, 30, 10));
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_upgrade_is_prorated_and_a_downgrade_credits_the_difference_back() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Acme, "c1", 10_000).await;
        let created = subscribe(&host, Tenant::Acme, "c1", "basic").await;
        let id = id_of(&created);
        let start = int(&created.result()["currentPeriodStart"]);
        let end = int(&created.result()["currentPeriodEnd"]);
        host.advance(10 * DAY + 12_345);

        let up = change_plan(&host, Tenant::Acme, &id, "pro", "immediate").await;
        up.expect(200, "OK");
        let remaining = end - host.now();
        let expected =
            prorate(3000, remaining, end - start) - prorate(1000, remaining, end - start);
        let result = up.result();
        assert_eq!(result["planId"], "pro", "{result}");
        assert_eq!(
            int(&result["currentPeriodStart"]),
            start,
            "the period is kept"
        );
        assert_eq!(int(&result["currentPeriodEnd"]), end);
        assert_eq!(int(&result["charge"]["total"]["amount"]), expected);
        // 100 credits per USD: one credit per cent.
        assert_eq!(int(&result["charge"]["creditsCharged"]), expected);
        let codes: Vec<_> = result["charge"]["lineItems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, ["proration:credit:basic", "proration:charge:pro"]);
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 9000 - expected);

        host.advance(DAY);
        let down = change_plan(&host, Tenant::Acme, &id, "basic", "immediate").await;
        down.expect(200, "OK");
        let remaining = end - host.now();
        let owed = prorate(3000, remaining, end - start) - prorate(1000, remaining, end - start);
        assert_eq!(int(&down.result()["charge"]["total"]["amount"]), -owed);
        assert_eq!(int(&down.result()["charge"]["creditsGranted"]), owed);
        assert_eq!(down.result()["charge"]["creditsCharged"], 0);
        assert_eq!(
            available(&host, Tenant::Acme, "c1").await,
            9000 - expected + owed
        );
        assert_eq!(get(&host, Tenant::Acme, &id).await.result()["version"], 3);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_at_period_end_is_applied_by_the_renewal() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Acme, "c1", 10_000).await;
        let created = subscribe(&host, Tenant::Acme, "c1", "basic").await;
        let id = id_of(&created);
        let end = int(&created.result()["currentPeriodEnd"]);

        let scheduled = change_plan(&host, Tenant::Acme, &id, "pro", "period_end").await;
        scheduled.expect(200, "OK");
        assert_eq!(scheduled.result()["planId"], "basic");
        assert_eq!(scheduled.result()["pendingPlanId"], "pro");
        assert_eq!(scheduled.result()["charge"], Value::Null);
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 9000);

        host.advance(end - host.now());
        assert_eq!(run_scheduler(&host).await.renewed, 1);
        let sub = get(&host, Tenant::Acme, &id).await;
        assert_eq!(sub.result()["planId"], "pro");
        assert_eq!(sub.result()["pendingPlanId"], Value::Null);
        assert_eq!(
            available(&host, Tenant::Acme, "c1").await,
            6000,
            "the renewal was priced on pro"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_change_during_a_trial_keeps_or_ends_the_trial_as_the_policy_says() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Acme, "c1", 10_000).await;
        let start = host.now();
        let created = subscribe(&host, Tenant::Acme, "c1", "trial-basic").await;
        let id = id_of(&created);
        host.advance(DAY);

        // trial-pro's own 7-day trial from the trial start is still running.
        let kept = change_plan(&host, Tenant::Acme, &id, "trial-pro", "immediate").await;
        kept.expect(200, "OK");
        let result = kept.result();
        assert_eq!(result["status"], "TRIALING", "{result}");
        assert_eq!(result["planId"], "trial-pro");
        assert_eq!(int(&result["trialEnd"]), start + 7 * DAY);
        assert_eq!(int(&result["currentPeriodStart"]), start);
        assert_eq!(result["charge"]["creditsCharged"], 0);
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 10_000);

        // pro has no trial: the trial ends and the first paid period starts now.
        host.advance(DAY);
        let now = host.now();
        let ended = change_plan(&host, Tenant::Acme, &id, "pro", "immediate").await;
        ended.expect(200, "OK");
        let result = ended.result();
        assert_eq!(result["status"], "ACTIVE", "{result}");
        assert_eq!(int(&result["currentPeriodStart"]), now);
        assert_eq!(int(&result["billingAnchor"]), now);
        assert_eq!(result["charge"]["creditsCharged"], 3000);
        assert_eq!(result["version"], 4, "create, change, change, end_trial");
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 7000);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_now_ends_the_subscription_and_an_ended_one_cannot_change() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Acme, "c1", 5000).await;
        let id = id_of(&subscribe(&host, Tenant::Acme, "c1", "basic").await);
        let cancelled = cancel(
            &host,
            Tenant::Acme,
            &id,
            Some(json!({ "atPeriodEnd": false, "reason": "customer left" })),
        )
        .await;
        cancelled.expect(200, "OK");
        assert_eq!(cancelled.result()["status"], "CANCELLED");

        cancel(&host, Tenant::Acme, &id, None)
            .await
            .expect(409, "PAY_004");
        change_plan(&host, Tenant::Acme, &id, "pro", "immediate")
            .await
            .expect(409, "PAY_004");
        change_plan(&host, Tenant::Acme, &id, "pro", "period_end")
            .await
            .expect(409, "PAY_004");
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 4000);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_at_period_end_lets_the_scheduler_expire_it() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let (id, end) = basic_subscription(&host, 5000).await;

        let flagged = cancel(&host, Tenant::Acme, &id, None).await;
        flagged.expect(200, "OK");
        assert_eq!(flagged.result()["status"], "ACTIVE");
        assert_eq!(flagged.result()["cancelAtPeriodEnd"], true);
        // Twice is refused.
        cancel(
            &host,
            Tenant::Acme,
            &id,
            Some(json!({ "atPeriodEnd": true })),
        )
        .await
        .expect(409, "PAY_004");

        host.advance(end - host.now());
        let summary = run_scheduler(&host).await;
        assert_eq!(summary.expired, 1, "{summary:?}");
        let sub = get(&host, Tenant::Acme, &id).await;
        assert_eq!(sub.result()["status"], "EXPIRED");
        assert_eq!(sub.result()["cancelAtPeriodEnd"], false);
        assert_eq!(
            available(&host, Tenant::Acme, "c1").await,
            4000,
            "no renewal charge"
        );
        let events = event_types(&host, Tenant::Acme).await;
        assert!(
            events.contains(&"subscription.expired".to_owned()),
            "{events:?}"
        );
        assert_eq!(run_scheduler(&host).await, SchedulerSummary::default());
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_withdraws_a_cancellation_at_period_end_and_the_subscription_renews() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let (id, end) = basic_subscription(&host, 5000).await;

        // Nothing to resume yet.
        let before = host.raw.counts().await;
        resume(&host, Tenant::Acme, &id, None)
            .await
            .expect(409, "PAY_004");
        assert_eq!(host.raw.counts().await, before, "a refusal writes nothing");

        cancel(&host, Tenant::Acme, &id, None)
            .await
            .expect(200, "OK");
        let resumed = resume(&host, Tenant::Acme, &id, Some("resume-1")).await;
        resumed.expect(200, "OK");
        assert_eq!(resumed.result()["status"], "ACTIVE");
        assert_eq!(resumed.result()["cancelAtPeriodEnd"], false);
        // A retry replays the answer; a second resumption is refused.
        let replayed = resume(&host, Tenant::Acme, &id, Some("resume-1")).await;
        assert_eq!(replayed.status, resumed.status);
        assert_eq!(replayed.bytes, resumed.bytes);
        resume(&host, Tenant::Acme, &id, Some("resume-2"))
            .await
            .expect(409, "PAY_004");
        // Another tenant cannot resume it.
        cancel(&host, Tenant::Acme, &id, None)
            .await
            .expect(200, "OK");
        resume(&host, Tenant::Globex, &id, None)
            .await
            .expect(404, "NOT_FOUND");
        resume(&host, Tenant::Acme, &id, None)
            .await
            .expect(200, "OK");

        // At period end it renews and is charged, instead of expiring.
        host.advance(end - host.now());
        let summary = run_scheduler(&host).await;
        assert_eq!(summary.renewed, 1, "{summary:?}");
        assert_eq!(summary.expired, 0, "{summary:?}");
        let sub = get(&host, Tenant::Acme, &id).await;
        assert_eq!(sub.result()["status"], "ACTIVE");
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 3000);
        let events = event_types(&host, Tenant::Acme).await;
        assert_eq!(
            events
                .iter()
                .filter(|e| *e == "subscription.resumed")
                .count(),
            2,
            "{events:?}"
        );
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_write_nothing() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Acme, "c1", 500).await;
        let before = host.raw.counts().await;

        // The policy does not know the plan.
        let unknown = subscribe(&host, Tenant::Acme, "c1", "platinum").await;
        unknown.expect(422, "POL_003");
        // No such customer.
        subscribe(&host, Tenant::Acme, "ghost", "basic")
            .await
            .expect(404, "NOT_FOUND");
        // 500 credits do not pay a 1000-credit month.
        subscribe(&host, Tenant::Acme, "c1", "basic")
            .await
            .expect(402, "PAY_001");
        // No Idempotency-Key on a request that moves money.
        host.call(
            Tenant::Acme,
            "POST",
            "/api/v1/subscriptions",
            Some(json!({ "customerId": "c1", "planId": "basic" })),
            None,
        )
        .await
        .expect(400, "REQ_001");
        // Unknown fields and missing ones.
        host.call(
            Tenant::Acme,
            "POST",
            "/api/v1/subscriptions",
            Some(json!({ "customerId": "c1", "planId": "basic", "coupon": "x" })),
            Some("k-unknown-field"),
        )
        .await
        .expect(400, "REQ_001");
        // A tenant without a subscription policy.
        host.put_customer(Tenant::Hooli, "h1", json!({}))
            .await
            .expect(201, "OK");
        subscribe(&host, Tenant::Hooli, "h1", "basic")
            .await
            .expect(422, "POL_008");
        assert_eq!(
            host.raw.counts().await["subscriptions"],
            before["subscriptions"]
        );
        assert_eq!(
            host.raw.counts().await["ledger_transactions"],
            before["ledger_transactions"]
        );

        host.charge(Tenant::Acme, "c1", 5000)
            .await
            .expect(201, "OK");
        let id = id_of(&subscribe(&host, Tenant::Acme, "c1", "basic").await);
        // A bad timing, the current plan, an unknown plan, a missing key.
        change_plan(&host, Tenant::Acme, &id, "pro", "tomorrow")
            .await
            .expect(400, "REQ_001");
        change_plan(&host, Tenant::Acme, &id, "basic", "immediate")
            .await
            .expect(400, "REQ_001");
        change_plan(&host, Tenant::Acme, &id, "platinum", "period_end")
            .await
            .expect(422, "POL_003");
        change_plan(&host, Tenant::Acme, &id, "platinum", "immediate")
            .await
            .expect(422, "POL_003");
        host.call(
            Tenant::Acme,
            "POST",
            &format!("/api/v1/subscriptions/{id}/change-plan"),
            Some(json!({ "planId": "pro", "timing": "immediate" })),
            None,
        )
        .await
        .expect(400, "REQ_001");
        get(&host, Tenant::Acme, "sub_nope")
            .await
            .expect(404, "NOT_FOUND");
        let sub = get(&host, Tenant::Acme, &id).await;
        assert_eq!(sub.result()["planId"], "basic");
        assert_eq!(sub.result()["version"], 1);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_upgrade_without_enough_credits_is_refused_and_changes_nothing() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Acme, "c1", 1000).await;
        let id = id_of(&subscribe(&host, Tenant::Acme, "c1", "basic").await);
        host.advance(DAY);
        change_plan(&host, Tenant::Acme, &id, "pro", "immediate")
            .await
            .expect(402, "PAY_001");
        let sub = get(&host, Tenant::Acme, &id).await;
        assert_eq!(sub.result()["planId"], "basic");
        assert_eq!(sub.result()["version"], 1);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_cannot_see_or_touch_a_subscription() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Acme, "c1", 5000).await;
        let id = id_of(&subscribe(&host, Tenant::Acme, "c1", "basic").await);
        host.put_customer(Tenant::Globex, "c1", json!({}))
            .await
            .expect(201, "OK");
        let before = host.raw.counts().await;

        get(&host, Tenant::Globex, &id)
            .await
            .expect(404, "NOT_FOUND");
        change_plan(&host, Tenant::Globex, &id, "pro", "period_end")
            .await
            .expect(404, "NOT_FOUND");
        cancel(
            &host,
            Tenant::Globex,
            &id,
            Some(json!({ "atPeriodEnd": false })),
        )
        .await
        .expect(404, "NOT_FOUND");
        assert_eq!(host.raw.counts().await, before);
        let sub = get(&host, Tenant::Acme, &id).await;
        assert_eq!(sub.result()["status"], "ACTIVE");
        assert_eq!(sub.result()["version"], 1);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pay_from_credits_each_charge_leaves_a_pending_order() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.put_customer(Tenant::Globex, "g1", json!({}))
            .await
            .expect(201, "OK");
        let created = subscribe(&host, Tenant::Globex, "g1", "basic").await;
        created.expect(201, "OK");
        let result = created.result();
        assert_eq!(result["status"], "ACTIVE", "{result}");
        assert_eq!(result["charge"]["method"], "order");
        assert_eq!(result["charge"]["creditsCharged"], 0);
        let id = id_of(&created);
        let order_id = result["charge"]["orderId"].as_str().unwrap().to_owned();

        let order = host.order(Tenant::Globex, &order_id).await;
        order.expect(200, "OK");
        let order = order.result();
        assert_eq!(order["status"], "PENDING", "{order}");
        assert_eq!(order["total"], 1000);
        assert_eq!(order["currency"], "USD");
        assert_eq!(order["source"], "subscription");
        assert_eq!(order["sourceId"], id.as_str());
        assert_eq!(order["lineItems"][0]["code"], "plan:basic");

        // The renewal moves on into the next period and leaves another order.
        let end = int(&result["currentPeriodEnd"]);
        host.advance(end - host.now());
        assert_eq!(run_scheduler(&host).await.renewed, 1);
        let sub = get(&host, Tenant::Globex, &id).await;
        assert_eq!(sub.result()["status"], "ACTIVE");
        assert_eq!(int(&sub.result()["currentPeriodStart"]), end);
        let orders = host
            .raw
            .scalar(&format!(
                "SELECT COUNT(*) FROM orders WHERE source_id = '{id}' AND status = 'PENDING'"
            ))
            .await;
        assert_eq!(orders, 2);

        // An upgrade leaves an order; the downgrade back owes the customer
        // money: reported, not paid out.
        host.advance(DAY);
        let up = change_plan(&host, Tenant::Globex, &id, "pro", "immediate").await;
        up.expect(200, "OK");
        assert_eq!(up.result()["charge"]["method"], "order");
        let back = change_plan(&host, Tenant::Globex, &id, "basic", "immediate").await;
        back.expect(200, "OK");
        let charge = &back.result()["charge"];
        assert_eq!(charge["method"], "none", "{charge}");
        assert!(int(&charge["creditOwed"]["amount"]) > 0);
        assert_eq!(charge["creditOwed"]["currency"], "USD");
        assert_eq!(charge["orderId"], Value::Null);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_the_policy_refuses_to_renew_does_not_stop_the_others() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Acme, "c1", 5000).await;
        host.funded_customer(Tenant::Acme, "c2", 5000).await;
        let broken = subscribe(&host, Tenant::Acme, "c1", "basic").await;
        let fine = subscribe(&host, Tenant::Acme, "c2", "basic").await;
        let (broken, fine) = (id_of(&broken), id_of(&fine));
        // The tenant removed the plan from its policy's config since.
        host.raw
            .execute(&format!(
                "UPDATE subscriptions SET plan_id = 'retired' WHERE subscription_id = '{broken}'"
            ))
            .await;
        host.advance(32 * DAY);

        let summary = run_scheduler(&host).await;
        assert_eq!(summary.failed, 1, "{summary:?}");
        assert_eq!(summary.renewed, 1, "{summary:?}");
        assert_eq!(get(&host, Tenant::Acme, &fine).await.result()["version"], 2);
        let left = get(&host, Tenant::Acme, &broken).await;
        assert_eq!(left.result()["status"], "ACTIVE");
        assert_eq!(left.result()["version"], 1, "left due for the next run");
        assert_eq!(available(&host, Tenant::Acme, "c1").await, 4000);
        host.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_of_a_plan_change_and_a_cancellation_replay_their_first_answer() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        host.funded_customer(Tenant::Acme, "c1", 10_000).await;
        let id = id_of(&subscribe(&host, Tenant::Acme, "c1", "basic").await);
        host.advance(DAY);
        let path = format!("/api/v1/subscriptions/{id}/change-plan");
        let body = json!({ "planId": "pro", "timing": "immediate" });
        let first = host
            .call(
                Tenant::Acme,
                "POST",
                &path,
                Some(body.clone()),
                Some("chg-1"),
            )
            .await;
        first.expect(200, "OK");
        let paid = available(&host, Tenant::Acme, "c1").await;
        // The subscription is on pro now, so the checks alone would refuse
        // the retry: the stored answer is replayed instead.
        let retry = host
            .call(Tenant::Acme, "POST", &path, Some(body), Some("chg-1"))
            .await;
        retry.expect(200, "OK");
        assert_eq!(retry.bytes, first.bytes);
        assert_eq!(retry.headers["idempotent-replayed"], "true");
        assert_eq!(available(&host, Tenant::Acme, "c1").await, paid);
        host.call(
            Tenant::Acme,
            "POST",
            &path,
            Some(json!({ "planId": "basic", "timing": "period_end" })),
            Some("chg-1"),
        )
        .await
        .expect(409, "PAY_003");

        let cancel_path = format!("/api/v1/subscriptions/{id}/cancel");
        let body = json!({ "atPeriodEnd": false });
        let first = host
            .call(
                Tenant::Acme,
                "POST",
                &cancel_path,
                Some(body.clone()),
                Some("cxl-1"),
            )
            .await;
        first.expect(200, "OK");
        let retry = host
            .call(
                Tenant::Acme,
                "POST",
                &cancel_path,
                Some(body),
                Some("cxl-1"),
            )
            .await;
        retry.expect(200, "OK");
        assert_eq!(retry.bytes, first.bytes);
        assert_eq!(get(&host, Tenant::Acme, &id).await.result()["version"], 3);
        host.finish().await;
    }
}

//! The Toss-style connector against the bundled PG simulator, over real
//! HTTP on 127.0.0.1: approvals, declines, the PG's idempotency, transient
//! faults, answers lost after (or without) an approval, partial and full
//! cancels, outages, and a PG that cannot be reached. The simulator's own
//! books say what really happened at the PG.

use std::time::Duration;

use fluxpay_host::config::Secret;
use fluxpay_host::gateway::simulator::{Faults, Simulator, cards};
use fluxpay_host::gateway::toss::{TossConfig, TossGateway};
use fluxpay_host::gateway::{
    CancelRequest, CaptureRequest, ConfirmRequest, GatewayError, PaymentGateway, PgPayment,
    PgStatus, codes,
};
use serde_json::json;

const SECRET: &str = "test_sk_simulator";
/// The connector's request timeout; slow test cards answer after 3×.
const TIMEOUT: Duration = Duration::from_millis(400);

struct Pg {
    sim: Simulator,
    url: String,
    gateway: TossGateway,
    http: reqwest::Client,
}

async fn pg() -> Pg {
    let sim = Simulator::new(SECRET, 42);
    sim.set_faults(Faults {
        slow_answer_ms: 3 * TIMEOUT.as_millis() as u64,
        ..Faults::default()
    });
    let url = sim.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let gateway = connector(&url, SECRET);
    Pg {
        sim,
        url,
        gateway,
        http: reqwest::Client::new(),
    }
}

fn connector(url: &str, secret: &str) -> TossGateway {
    TossGateway::new(TossConfig {
        base_url: url.to_owned(),
        secret_key: Secret::new(secret),
        connect_timeout: Duration::from_secs(2),
        request_timeout: TIMEOUT,
    })
    .unwrap()
}

impl Pg {
    /// The checkout window: a payment key for `order_id` paid by `card`.
    async fn checkout(&self, order_id: &str, amount: i64, card: &str) -> ConfirmRequest {
        checkout(&self.http, &self.url, order_id, amount, card).await
    }
}

/// The checkout window of the PG at `url`.
async fn checkout(
    http: &reqwest::Client,
    url: &str,
    order_id: &str,
    amount: i64,
    card: &str,
) -> ConfirmRequest {
    let answer: PgPayment = http
        .post(format!("{url}/v1/checkout"))
        .json(
            &json!({ "orderId": order_id, "amount": amount, "currency": "KRW",
                           "cardNumber": card }),
        )
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer.status, PgStatus::Ready);
    ConfirmRequest {
        payment_key: answer.payment_key,
        order_id: order_id.to_owned(),
        amount,
    }
}

fn refused_code(result: Result<PgPayment, GatewayError>) -> String {
    match result {
        Err(GatewayError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn an_approval_is_taken_once_per_key_and_reported_by_key_and_by_order() {
    let pg = pg().await;
    let request = pg.checkout("pay_1", 15_000, cards::APPROVE).await;
    let approved = pg.gateway.confirm(&request, "pay_1-approve").await.unwrap();
    assert_eq!(approved.status, PgStatus::Done);
    assert_eq!(approved.balance_amount, 15_000);
    assert!(approved.approved_at.is_some());

    // The same key again: the stored answer, no second approval.
    let again = pg.gateway.confirm(&request, "pay_1-approve").await.unwrap();
    assert_eq!(again, approved);
    // Another key for the same payment: the PG says it was processed.
    assert_eq!(
        refused_code(pg.gateway.confirm(&request, "another-key").await),
        codes::ALREADY_PROCESSED_PAYMENT
    );
    assert_eq!(pg.sim.ledger().approvals, 1);
    assert_eq!(pg.sim.ledger().approved_amount, 15_000);

    let by_key = pg.gateway.payment(&request.payment_key).await.unwrap();
    let by_order = pg.gateway.payment_by_order("pay_1").await.unwrap();
    assert_eq!(by_key, approved);
    assert_eq!(by_order, approved);
}

#[tokio::test]
async fn an_authorization_is_captured_once_per_key_or_voided_and_a_refusal_keeps_it_held() {
    let pg = pg().await;
    let capture = |amount| CaptureRequest { amount };
    let request = pg.checkout("pay_1", 15_000, cards::APPROVE).await;
    let key = request.payment_key.clone();
    let approved = pg.gateway.confirm(&request, "pay_1-approve").await.unwrap();
    // Approved is authorized: held on the card, not captured.
    assert_eq!(approved.captured_at, None);
    assert_eq!(pg.sim.ledger().held_amount, 15_000);
    // Not the authorized amount: refused, nothing captured (and that key
    // keeps its answer).
    assert_eq!(
        refused_code(
            pg.gateway
                .capture(&key, &capture(14_999), "pay_1-capture-short")
                .await
        ),
        codes::INVALID_REQUEST
    );
    let captured = pg
        .gateway
        .capture(&key, &capture(15_000), "pay_1-capture")
        .await
        .unwrap();
    assert!(captured.captured_at.is_some());
    assert_eq!(captured.status, PgStatus::Done);
    // The same key: the stored answer. Another key: not capturable.
    let again = pg
        .gateway
        .capture(&key, &capture(15_000), "pay_1-capture")
        .await
        .unwrap();
    assert_eq!(again, captured);
    assert_eq!(
        refused_code(pg.gateway.capture(&key, &capture(15_000), "another").await),
        codes::NOT_CAPTURABLE_PAYMENT
    );
    assert_eq!(pg.gateway.payment(&key).await.unwrap(), captured);
    let ledger = pg.sim.ledger();
    assert_eq!(
        (ledger.captures, ledger.captured_amount, ledger.held_amount),
        (1, 15_000, 0)
    );

    // The issuer refuses a capture: the authorization stays held until it
    // is voided, and a voided one cannot be captured.
    let request = pg.checkout("pay_2", 5_000, cards::CAPTURE_REFUSED).await;
    let key = request.payment_key.clone();
    pg.gateway.confirm(&request, "pay_2-approve").await.unwrap();
    assert_eq!(
        refused_code(
            pg.gateway
                .capture(&key, &capture(5_000), "pay_2-capture")
                .await
        ),
        codes::REJECT_CARD_PAYMENT
    );
    assert_eq!(pg.sim.ledger().held_amount, 5_000);
    let voided = pg
        .gateway
        .cancel(
            &key,
            &CancelRequest {
                cancel_reason: "capture refused".into(),
                cancel_amount: None,
            },
            "pay_2-void",
        )
        .await
        .unwrap();
    assert_eq!(
        (voided.status, voided.balance_amount),
        (PgStatus::Canceled, 0)
    );
    assert_eq!(
        refused_code(
            pg.gateway
                .capture(&key, &capture(5_000), "pay_2-capture-2")
                .await
        ),
        codes::NOT_CAPTURABLE_PAYMENT
    );
    let ledger = pg.sim.ledger();
    assert_eq!((ledger.captures, ledger.held_amount), (1, 0));
}

#[tokio::test]
async fn a_decline_is_final_and_an_amount_that_differs_from_the_checkout_is_refused() {
    let pg = pg().await;
    let declined = pg.checkout("pay_2", 5_000, cards::DECLINE).await;
    assert_eq!(
        refused_code(pg.gateway.confirm(&declined, "k2").await),
        codes::REJECT_CARD_PAYMENT
    );
    let status = pg
        .gateway
        .payment(&declined.payment_key)
        .await
        .unwrap()
        .status;
    assert_eq!(status, PgStatus::Aborted);
    assert!(status.failed());

    let mut tampered = pg.checkout("pay_3", 5_000, cards::APPROVE).await;
    tampered.amount = 1;
    assert_eq!(
        refused_code(pg.gateway.confirm(&tampered, "k3").await),
        codes::INVALID_REQUEST
    );
    assert_eq!(pg.sim.ledger().approvals, 0);
}

#[tokio::test]
async fn a_transient_fault_is_retried_with_the_same_key_and_approves_once() {
    let pg = pg().await;
    let request = pg.checkout("pay_4", 7_000, cards::TRANSIENT_TWICE).await;
    for _ in 0..2 {
        match pg.gateway.confirm(&request, "pay_4-approve").await {
            Err(GatewayError::Transient { code, .. }) => assert_eq!(code, codes::PROVIDER_ERROR),
            other => panic!("expected a transient fault, got {other:?}"),
        }
    }
    let approved = pg.gateway.confirm(&request, "pay_4-approve").await.unwrap();
    assert_eq!(approved.status, PgStatus::Done);
    assert_eq!(pg.sim.ledger().approvals, 1);
    assert_eq!(pg.sim.ledger().confirm_calls, 3);

    let failing = pg.checkout("pay_5", 7_000, cards::ALWAYS_FAILS).await;
    assert!(matches!(
        pg.gateway.confirm(&failing, "pay_5-approve").await,
        Err(GatewayError::Transient { .. })
    ));
    assert_eq!(
        pg.gateway
            .payment(&failing.payment_key)
            .await
            .unwrap()
            .status,
        PgStatus::Ready,
        "a transient failure changes nothing"
    );
}

#[tokio::test]
async fn a_timeout_leaves_the_outcome_unknown_and_a_query_tells_what_happened() {
    let pg = pg().await;
    // The PG approved, the answer came too late.
    let approved = pg
        .checkout("pay_6", 9_900, cards::APPROVE_THEN_TIMEOUT)
        .await;
    assert!(matches!(
        pg.gateway.confirm(&approved, "pay_6-approve").await,
        Err(GatewayError::Unknown(_))
    ));
    let found = pg.gateway.payment_by_order("pay_6").await.unwrap();
    assert_eq!(found.status, PgStatus::Done);
    // Sent again with its key (never a new one): the first answer, and
    // still one approval.
    let replay = pg
        .gateway
        .confirm(&approved, "pay_6-approve")
        .await
        .unwrap();
    assert_eq!(replay.status, PgStatus::Done);
    assert_eq!(pg.sim.ledger().approvals, 1);

    // The PG did not approve, and its answer came too late as well.
    let aborted = pg
        .checkout("pay_7", 9_900, cards::TIMEOUT_NOT_APPROVED)
        .await;
    assert!(matches!(
        pg.gateway.confirm(&aborted, "pay_7-approve").await,
        Err(GatewayError::Unknown(_))
    ));
    let found = pg.gateway.payment(&aborted.payment_key).await.unwrap();
    assert_eq!(found.status, PgStatus::Aborted);
    assert_eq!(pg.sim.ledger().approvals, 1);
}

#[tokio::test]
async fn partial_and_full_cancels_never_give_back_more_than_was_taken() {
    let pg = pg().await;
    let request = pg.checkout("pay_8", 10_000, cards::APPROVE).await;
    pg.gateway.confirm(&request, "pay_8-approve").await.unwrap();
    let key = &request.payment_key;
    let part = CancelRequest {
        cancel_reason: "one seat returned".into(),
        cancel_amount: Some(3_000),
    };
    let after = pg
        .gateway
        .cancel(key, &part, "pay_8-refund-1")
        .await
        .unwrap();
    assert_eq!(after.status, PgStatus::PartialCanceled);
    assert_eq!(after.balance_amount, 7_000);
    assert_eq!(after.cancels.last().unwrap().refundable_amount, 7_000);
    // The same cancel again (same key): nothing more given back.
    let replay = pg
        .gateway
        .cancel(key, &part, "pay_8-refund-1")
        .await
        .unwrap();
    assert_eq!(replay, after);

    let too_much = CancelRequest {
        cancel_reason: "x".into(),
        cancel_amount: Some(7_001),
    };
    assert_eq!(
        refused_code(pg.gateway.cancel(key, &too_much, "pay_8-refund-2").await),
        codes::NOT_CANCELABLE_AMOUNT
    );
    let rest = CancelRequest {
        cancel_reason: "order cancelled".into(),
        cancel_amount: None,
    };
    let all = pg
        .gateway
        .cancel(key, &rest, "pay_8-refund-3")
        .await
        .unwrap();
    assert_eq!(all.status, PgStatus::Canceled);
    assert_eq!(all.balance_amount, 0);
    assert_eq!(
        refused_code(pg.gateway.cancel(key, &rest, "pay_8-refund-4").await),
        codes::NOT_CANCELABLE_PAYMENT
    );
    let ledger = pg.sim.ledger();
    assert_eq!(
        (ledger.approved_amount, ledger.cancelled_amount),
        (10_000, 10_000)
    );
}

#[tokio::test]
async fn a_repeat_that_arrives_while_the_first_is_processed_is_told_to_wait() {
    let pg = pg().await;
    // Longer than the connector's timeout: its own call ends Unknown.
    pg.sim.set_faults(Faults {
        latency_ms: [1_000, 1_000],
        ..Faults::default()
    });
    let request = pg.checkout("pay_9", 2_000, cards::APPROVE).await;
    let (a, b) = tokio::join!(pg.gateway.confirm(&request, "pay_9-approve"), async {
        // Sent once the first is inside its 150 ms of processing.
        while pg.sim.in_flight() == 0 {
            tokio::task::yield_now().await;
        }
        pg.gateway.confirm(&request, "pay_9-approve").await
    });
    // The first outlasts the connector's timeout; the second is told the
    // key is in flight. Neither knows the outcome, and a query does.
    assert!(matches!(a, Err(GatewayError::Unknown(_))), "{a:?}");
    match b {
        Err(GatewayError::Unknown(message)) => {
            assert!(
                message.contains(codes::ALREADY_PROCESSING_REQUEST),
                "{message}"
            )
        }
        other => panic!("expected 409 ALREADY_PROCESSING_REQUEST, got {other:?}"),
    }
    // The PG goes on with the first, whose client gave up on it.
    while pg.sim.in_flight() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pg.sim.set_faults(Faults::default());
    let found = pg.gateway.payment(&request.payment_key).await.unwrap();
    assert_eq!(found.status, PgStatus::Done);
    assert_eq!(pg.sim.ledger().approvals, 1);
}

#[tokio::test]
async fn an_outage_a_wrong_key_and_an_unreachable_pg_are_told_apart() {
    let pg = pg().await;
    let request = pg.checkout("pay_10", 1_000, cards::APPROVE).await;
    pg.sim.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    assert!(matches!(
        pg.gateway.confirm(&request, "pay_10-approve").await,
        Err(GatewayError::Transient { .. })
    ));
    pg.sim.set_faults(Faults::default());
    assert_eq!(
        pg.gateway
            .confirm(&request, "pay_10-approve")
            .await
            .unwrap()
            .status,
        PgStatus::Done,
        "the outage changed nothing and kept nothing for the key"
    );

    let wrong = connector(&pg.url, "test_sk_wrong");
    assert_eq!(
        refused_code(wrong.payment(&request.payment_key).await),
        codes::UNAUTHORIZED_KEY
    );

    // A port nobody listens on: the request never left.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let nowhere = connector(&format!("http://{closed}"), SECRET);
    assert!(matches!(
        nowhere.confirm(&request, "k").await,
        Err(GatewayError::Unreachable(_))
    ));
}

mod resilience {
    use super::*;
    use fluxpay_host::gateway::resilient::{Resilience, ResilientGateway};
    use tower_resilience_circuitbreaker::CircuitState;

    /// Retries fast; a breaker that needs more calls than a test makes.
    fn settings() -> Resilience {
        Resilience {
            window: Duration::from_secs(60),
            minimum_calls: 50,
            failure_rate: 0.5,
            open_wait: Duration::from_millis(300),
            half_open_calls: 1,
            retry_min_delay: Duration::from_millis(5),
            retry_max_delay: Duration::from_millis(20),
            ..Resilience::default()
        }
    }

    fn resilient(pg: &Pg, settings: &Resilience) -> ResilientGateway {
        ResilientGateway::new(connector(&pg.url, SECRET), "sim", settings).unwrap()
    }

    #[tokio::test]
    async fn transient_faults_are_retried_with_one_key_up_to_the_limit() {
        let pg = pg().await;
        let gateway = resilient(&pg, &settings());
        let request = pg.checkout("pay_20", 4_000, cards::TRANSIENT_TWICE).await;
        let approved = gateway.confirm(&request, "pay_20-approve").await.unwrap();
        assert_eq!(approved.status, PgStatus::Done);
        assert_eq!(
            pg.sim.ledger().confirm_calls,
            3,
            "two faults, then the approval"
        );
        assert_eq!(pg.sim.ledger().approvals, 1);

        let failing = pg.checkout("pay_21", 4_000, cards::ALWAYS_FAILS).await;
        assert!(matches!(
            gateway.confirm(&failing, "pay_21-approve").await,
            Err(GatewayError::Transient { .. })
        ));
        assert_eq!(
            pg.sim.ledger().confirm_calls,
            3 + 1 + 3,
            "the first call and three retries, no more"
        );
    }

    #[tokio::test]
    async fn declines_and_lost_answers_are_never_sent_again() {
        let pg = pg().await;
        let gateway = resilient(&pg, &settings());
        let declined = pg.checkout("pay_22", 4_000, cards::DECLINE).await;
        assert!(matches!(
            gateway.confirm(&declined, "pay_22-approve").await,
            Err(GatewayError::Refused { .. })
        ));
        assert_eq!(pg.sim.ledger().confirm_calls, 1);

        let lost = pg
            .checkout("pay_23", 4_000, cards::APPROVE_THEN_TIMEOUT)
            .await;
        assert!(matches!(
            gateway.confirm(&lost, "pay_23-approve").await,
            Err(GatewayError::Unknown(_))
        ));
        assert_eq!(
            pg.sim.ledger().confirm_calls,
            2,
            "an unknown outcome is queried, not resent"
        );
        // A query is retried, and tells what happened.
        assert_eq!(
            gateway.payment_by_order("pay_23").await.unwrap().status,
            PgStatus::Done
        );
    }

    #[tokio::test]
    async fn an_outage_opens_the_breaker_and_a_probe_closes_it_when_the_pg_is_back() {
        let pg = pg().await;
        let no_retries = Resilience {
            retries: 0,
            minimum_calls: 4,
            ..settings()
        };
        let gateway = resilient(&pg, &no_retries);
        let request = pg.checkout("pay_24", 4_000, cards::APPROVE).await;
        pg.sim.set_faults(Faults {
            outage: true,
            ..Faults::default()
        });
        for _ in 0..4 {
            assert!(matches!(
                gateway.confirm(&request, "pay_24-approve").await,
                Err(GatewayError::Transient { .. })
            ));
        }
        assert_eq!(gateway.state(), CircuitState::Open);
        // Open: fast failures that reach nothing.
        for _ in 0..10 {
            assert_eq!(
                gateway.confirm(&request, "pay_24-approve").await,
                Err(GatewayError::CircuitOpen)
            );
        }
        assert_eq!(pg.sim.ledger().confirm_calls, 4);

        // The PG recovers; once the open wait is over one probe goes
        // through, succeeds, and closes the breaker.
        pg.sim.set_faults(Faults::default());
        tokio::time::sleep(no_retries.open_wait + Duration::from_millis(50)).await;
        let approved = gateway.confirm(&request, "pay_24-approve").await.unwrap();
        assert_eq!(approved.status, PgStatus::Done);
        assert_eq!(gateway.state(), CircuitState::Closed);
        assert_eq!(pg.sim.ledger().approvals, 1);
    }

    #[tokio::test]
    async fn a_pg_that_answers_but_slowly_opens_the_breaker_too() {
        let pg = pg().await;
        let slow = Resilience {
            minimum_calls: 4,
            slow_call: Duration::from_millis(100),
            slow_call_rate: 0.5,
            ..settings()
        };
        let gateway = resilient(&pg, &slow);
        let request = pg.checkout("pay_25", 4_000, cards::APPROVE).await;
        pg.gateway
            .confirm(&request, "pay_25-approve")
            .await
            .unwrap();
        pg.sim.set_faults(Faults {
            latency_ms: [150, 150],
            ..Faults::default()
        });
        for _ in 0..4 {
            // Every answer is right, and late.
            assert_eq!(
                gateway.payment(&request.payment_key).await.unwrap().status,
                PgStatus::Done
            );
        }
        assert_eq!(gateway.state(), CircuitState::Open);
        assert_eq!(
            gateway.payment(&request.payment_key).await,
            Err(GatewayError::CircuitOpen)
        );
    }
}

/// `fluxpay-host pg-sim`: the same simulator as a process of its own.
mod process {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    fn pg_sim(args: &[&str], secret: Option<&str>) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fluxpay-host"));
        command
            .arg("pg-sim")
            .args(args)
            .env_remove("FLUXPAY_PG_SIM_SECRET_KEY");
        if let Some(secret) = secret {
            command.env("FLUXPAY_PG_SIM_SECRET_KEY", secret);
        }
        command
    }

    #[tokio::test]
    async fn the_pg_sim_command_serves_the_api_on_loopback() {
        let mut child = pg_sim(&["--listen", "127.0.0.1:0"], Some(SECRET))
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting fluxpay-host pg-sim");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("fluxpay pg-sim listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        let request = checkout(
            &reqwest::Client::new(),
            &url,
            "pay_30",
            1_000,
            cards::APPROVE,
        )
        .await;
        let approved = connector(&url, SECRET)
            .confirm(&request, "pay_30-approve")
            .await;
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(approved.unwrap().status, PgStatus::Done);
    }

    #[test]
    fn the_pg_sim_command_needs_its_secret_and_a_loopback_address() {
        let no_secret = pg_sim(&["--listen", "127.0.0.1:0"], None).output().unwrap();
        assert!(!no_secret.status.success());
        assert!(
            String::from_utf8_lossy(&no_secret.stderr).contains("FLUXPAY_PG_SIM_SECRET_KEY"),
            "{}",
            String::from_utf8_lossy(&no_secret.stderr)
        );
        let public = pg_sim(&["--listen", "0.0.0.0:0"], Some(SECRET))
            .output()
            .unwrap();
        assert!(!public.status.success());
        assert!(String::from_utf8_lossy(&public.stderr).contains("loopback"));
    }
}

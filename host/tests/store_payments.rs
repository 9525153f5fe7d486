//! The payment store on both backends: a payment and its PG calls are
//! written in the tenant's transaction, read back tenant-scoped, changed
//! only from the state the writer saw, and held to the schema's last line
//! of defence (one approval key per tenant, refunds within the amount, a
//! payment only for an existing order).

mod harness;

use fluxpay_host::store::{
    NewPayment, PaymentAttemptRecord, PaymentQueries, PaymentTx, PaymentUpdate, Store, StoreError,
    Transactions, TxOps,
};
use harness::{Tenant, TestHost, backends};
use serde_json::json;

async fn order_of(host: &TestHost, key: &str) -> String {
    host.put_customer(Tenant::Globex, "c1", json!({})).await;
    let order = host
        .call(
            Tenant::Globex,
            "POST",
            "/api/v1/orders",
            Some(json!({ "customerId": "c1", "items": [{ "sku": "report", "quantity": 2 }] })),
            Some(key),
        )
        .await;
    order.expect(201, "OK");
    order.result()["orderId"].as_str().unwrap().to_owned()
}

fn new_payment(id: &str, order: &str, key: &str) -> NewPayment {
    NewPayment {
        payment_id: id.into(),
        order_id: order.into(),
        customer_id: "c1".into(),
        amount: 5_000,
        currency: "EUR".into(),
        approval_key: key.into(),
        pg_payment_key: None,
        next_check_at: 11_000,
        capture_mode: "manual",
        now: 1_000,
    }
}

/// Runs `write` in a globex transaction and commits it.
async fn in_tx<T>(
    store: &Store,
    write: impl AsyncFnOnce(&mut fluxpay_host::store::Tx) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut tx = store.begin("globex").await?;
    let value = write(&mut tx).await?;
    tx.commit(None).await?;
    Ok(value)
}

fn attempt(kind: &str, outcome: &str, at: i64) -> PaymentAttemptRecord {
    PaymentAttemptRecord {
        attempt: 0,
        kind: kind.into(),
        idempotency_key: (kind != "query").then(|| "pay_1-approve".into()),
        outcome: outcome.into(),
        pg_code: (outcome == "transient").then(|| "PROVIDER_ERROR".into()),
        latency_ms: 12,
        created_at: at,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_and_their_pg_calls_are_stored_scoped_guarded_and_checked() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let order = order_of(&host, "order-1").await;
        let other_order = order_of(&host, "order-2").await;
        let store = host.app.store().clone();

        in_tx(&store, async |tx| {
            tx.insert_payment(&new_payment("pay_1", &order, "pay_1-approve"))
                .await
        })
        .await
        .unwrap();
        let stored = store.payment("globex", "pay_1").await.unwrap().unwrap();
        assert_eq!(
            (
                stored.status.as_str(),
                stored.version,
                stored.refunded,
                stored.amount
            ),
            ("READY", 1, 0, 5_000),
            "{backend:?}"
        );
        assert_eq!(stored.pg_payment_key, None);
        assert_eq!(stored.capture_mode.as_deref(), Some("manual"));
        // A capture mode the schema does not know is refused.
        let unknown_mode = in_tx(&store, async |tx| {
            tx.insert_payment(&NewPayment {
                capture_mode: "later",
                ..new_payment("pay_9", &other_order, "pay_9-approve")
            })
            .await
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&unknown_mode, StoreError::Constraint { constraint, .. }
                if constraint.contains("capture_mode")),
            "{backend:?}: {unknown_mode}"
        );
        // Due for the recovery scheduler at its first check, not before.
        let due = |now| {
            let store = store.clone();
            async move { store.due_payments("globex", now, 10).await.unwrap().len() }
        };
        assert_eq!(
            (due(10_999).await, due(11_000).await),
            (0, 1),
            "{backend:?}"
        );
        assert!(
            store
                .due_payments("acme", 11_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Another tenant sees nothing of it.
        assert_eq!(store.payment("acme", "pay_1").await.unwrap(), None);
        assert!(
            store
                .payments_of_order("acme", &order)
                .await
                .unwrap()
                .is_empty()
        );

        // A second payment of the order while the first is in flight is
        // refused, and so is one that reuses an approval key.
        let second = in_tx(&store, async |tx| {
            tx.insert_payment(&new_payment("pay_2", &order, "pay_2-approve"))
                .await
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&second, StoreError::Constraint { constraint, .. }
                if constraint.contains("order_id") || constraint.contains("one_active")),
            "{backend:?}: {second}"
        );
        let duplicate = in_tx(&store, async |tx| {
            tx.insert_payment(&new_payment("pay_2", &other_order, "pay_1-approve"))
                .await
        })
        .await
        .unwrap_err();
        assert!(
            matches!(&duplicate, StoreError::Constraint { constraint, .. }
                if constraint.contains("approval_key")),
            "{backend:?}: {duplicate}"
        );
        // A payment for an order that does not exist is refused.
        let orphan = in_tx(&store, async |tx| {
            tx.insert_payment(&new_payment("pay_3", "o_missing", "pay_3-approve"))
                .await
        })
        .await
        .unwrap_err();
        assert!(
            matches!(orphan, StoreError::Constraint { .. }),
            "{backend:?}: {orphan}"
        );

        // The calls to the PG, numbered in order, and the approval.
        let approved = PaymentUpdate {
            payment_id: "pay_1".into(),
            from: ("READY".into(), 1),
            status: "APPROVED".into(),
            pg_payment_key: Some("tsim_1".into()),
            refunded: 0,
            failure: None,
            next_check_at: None,
            checks: 0,
            flagged_at: None,
            now: 2_000,
        };
        let (numbers, version) = in_tx(&store, async |tx| {
            let locked = tx.payment_for_update("pay_1").await?.unwrap();
            assert_eq!(locked.status, "READY");
            let first = tx
                .record_payment_attempt("pay_1", &attempt("approve", "transient", 1_500))
                .await?;
            let second = tx
                .record_payment_attempt("pay_1", &attempt("approve", "approved", 1_900))
                .await?;
            let version = tx.update_payment(&approved).await?;
            Ok(((first, second), version))
        })
        .await
        .unwrap();
        assert_eq!(numbers, (1, 2));
        assert_eq!(version, Some(2));
        let attempts = store.payment_attempts("globex", "pay_1").await.unwrap();
        assert_eq!(
            attempts
                .iter()
                .map(|a| (a.attempt, a.outcome.as_str(), a.pg_code.as_deref()))
                .collect::<Vec<_>>(),
            [
                (1, "transient", Some("PROVIDER_ERROR")),
                (2, "approved", None)
            ]
        );
        assert!(
            store
                .payment_attempts("acme", "pay_1")
                .await
                .unwrap()
                .is_empty()
        );

        // The same change again, from the state it no longer has: nothing.
        let stale = in_tx(&store, async |tx| tx.update_payment(&approved).await)
            .await
            .unwrap();
        assert_eq!(stale, None, "{backend:?}");
        let now = store.payment("globex", "pay_1").await.unwrap().unwrap();
        assert_eq!(
            (
                now.status.as_str(),
                now.version,
                now.pg_payment_key.as_deref()
            ),
            ("APPROVED", 2, Some("tsim_1"))
        );

        // Refunds past the amount are refused by the schema too.
        let over = PaymentUpdate {
            payment_id: "pay_1".into(),
            from: ("APPROVED".into(), 2),
            status: "PARTIALLY_REFUNDED".into(),
            pg_payment_key: Some("tsim_1".into()),
            refunded: 5_001,
            failure: None,
            next_check_at: None,
            checks: 0,
            flagged_at: None,
            now: 3_000,
        };
        let refused = in_tx(&store, async |tx| tx.update_payment(&over).await)
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, StoreError::Constraint { constraint, .. }
                if constraint.contains("refunded")),
            "{backend:?}: {refused}"
        );
        let of_order = store.payments_of_order("globex", &order).await.unwrap();
        assert_eq!(of_order.len(), 1);
        assert_eq!(of_order[0].payment_id, "pay_1");
        // These rows were written without the journal a use case writes
        // with them (history rows, events), and the auditor says so.
        let report = host.audit().await;
        assert!(
            report.to_string().contains("history.count payment:pay_1"),
            "{backend:?}: {report}"
        );
        host.discard().await;
    }
}

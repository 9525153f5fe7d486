//! The outbox relay's cursors on both backends: one host at a time holds a
//! tenant's publishing lease; another takes over only once it expires (or
//! is given up), and the host that lost it to another can no longer move
//! the cursor; positions only move forward; tenants and sinks are
//! independent.

mod harness;

use fluxpay_host::store::{RelayCursor, RelayTx, Store, StoreError, Transactions, TxOps};
use harness::{TestHost, backends};

const LEASE: i64 = 10_000;

async fn in_tx<T>(
    store: &Store,
    tenant: &str,
    write: impl AsyncFnOnce(&mut fluxpay_host::store::Tx) -> Result<T, StoreError>,
) -> T {
    let mut tx = store.begin(tenant).await.unwrap();
    let value = write(&mut tx).await.unwrap();
    tx.commit(None).await.unwrap();
    value
}

async fn claim(store: &Store, tenant: &str, owner: &str, now: i64) -> Option<RelayCursor> {
    in_tx(store, tenant, async |tx| {
        tx.claim_relay("kafka", owner, (now, now + LEASE)).await
    })
    .await
}

async fn advance(store: &Store, tenant: &str, owner: &str, position: i64, now: i64) -> bool {
    in_tx(store, tenant, async |tx| {
        tx.advance_relay("kafka", owner, position, (now, now + LEASE))
            .await
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_at_a_time_publishes_a_tenant_and_a_lost_lease_cannot_move_the_cursor() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let store = host.app.store();

        let first = claim(store, "globex", "host-a", 1_000).await.unwrap();
        assert_eq!(
            (first.position, first.owner.as_deref(), first.lease_until),
            (0, Some("host-a"), 11_000),
            "{backend:?}"
        );
        // Another host is refused while the lease lives; the holder renews.
        assert_eq!(claim(store, "globex", "host-b", 5_000).await, None);
        assert!(advance(store, "globex", "host-a", 40, 6_000).await);
        let renewed = claim(store, "globex", "host-a", 7_000).await.unwrap();
        assert_eq!((renewed.position, renewed.lease_until), (40, 17_000));

        // host-a stalls past its lease: host-b takes over from position 40,
        // and host-a's late acknowledgement moves nothing.
        let taken = claim(store, "globex", "host-b", 17_000).await.unwrap();
        assert_eq!(
            (taken.position, taken.owner.as_deref()),
            (40, Some("host-b"))
        );
        assert!(!advance(store, "globex", "host-a", 90, 17_500).await);
        // Positions move forward only.
        assert!(advance(store, "globex", "host-b", 60, 18_000).await);
        assert!(advance(store, "globex", "host-b", 50, 18_500).await);
        assert_eq!(
            claim(store, "globex", "host-b", 19_000)
                .await
                .unwrap()
                .position,
            60
        );
        // A holder whose lease ran out is still the owner until another
        // host claims: its round's acknowledgements count (the relay keeps
        // rounds shorter than the lease; the owner is the fence).
        assert!(advance(store, "globex", "host-b", 70, 29_000).await);

        // Given up on stopping: another host takes over at once.
        in_tx(store, "globex", async |tx| {
            tx.release_relay("kafka", "host-b", 29_500).await
        })
        .await;
        let next = claim(store, "globex", "host-c", 29_600).await.unwrap();
        assert_eq!((next.position, next.owner.as_deref()), (70, Some("host-c")));
        host.discard().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_of_other_tenants_and_sinks_are_independent() {
    for backend in backends() {
        let host = TestHost::start(backend).await;
        let store = host.app.store();
        claim(store, "globex", "host-a", 1_000).await.unwrap();
        assert!(advance(store, "globex", "host-a", 25, 1_100).await);
        // Another tenant's cursor starts at 0, leased by whoever claims it.
        let acme = claim(store, "acme", "host-b", 1_200).await.unwrap();
        assert_eq!((acme.position, acme.owner.as_deref()), (0, Some("host-b")));
        assert!(!advance(store, "acme", "host-a", 99, 1_300).await);
        // Another sink of the same tenant too.
        let webhook = in_tx(store, "globex", async |tx| {
            tx.claim_relay("webhook", "host-b", (1_400, 1_400 + LEASE))
                .await
        })
        .await
        .unwrap();
        assert_eq!(webhook.position, 0);
        assert_eq!(
            claim(store, "globex", "host-a", 1_500)
                .await
                .unwrap()
                .position,
            25,
            "{backend:?}"
        );
        host.discard().await;
    }
}

//! One customer's decisions, one at a time (in this process).
//!
//! A validation policy decides on a snapshot of the customer's account
//! (balance, today's spend) before the write transaction begins, and the
//! transaction applies the verdict only if the account still shows those
//! values (`credits/use`). Uses of one customer that interleave would make
//! each other's snapshots stale and retry; so each use holds its
//! customer's lock from the snapshot to the commit. The lock is the
//! customer's alone: a slow policy delays that customer's next use, never
//! another customer's or another tenant's, and no write transaction is
//! open while the policy runs. Other hosts (PostgreSQL) are not excluded:
//! there the re-check and its bounded retry keep the verdict honest.
//!
//! Hand-rolled because it is a map of async mutexes whose entries go away
//! when nobody holds or waits for them: a dozen lines, no crate needed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

type Key = (String, String);

/// A customer's mutex and how many hold or wait for it.
struct Entry {
    mutex: Arc<tokio::sync::Mutex<()>>,
    users: usize,
}

/// The per-customer locks of one process.
#[derive(Default)]
pub(super) struct CustomerLocks {
    locks: Mutex<HashMap<Key, Entry>>,
}

/// A customer's turn: registered from the moment it starts waiting, held
/// once `guard` is set, and given up (with the map entry, when it was the
/// last user) when dropped — also when the waiting future is cancelled.
pub(super) struct CustomerGuard<'a> {
    locks: &'a CustomerLocks,
    key: Key,
    guard: Option<OwnedMutexGuard<()>>,
}

impl CustomerLocks {
    /// Waits for `customer` of `tenant` (first come, first served).
    pub(super) async fn lock(&self, tenant: &str, customer: &str) -> CustomerGuard<'_> {
        let key = (tenant.to_owned(), customer.to_owned());
        let mutex = {
            let mut map = self.map();
            let entry = map.entry(key.clone()).or_insert_with(|| Entry {
                mutex: Default::default(),
                users: 0,
            });
            entry.users += 1;
            entry.mutex.clone()
        };
        // Registered before the wait: if the caller is cancelled while it
        // waits, this turn's drop still counts it out.
        let mut turn = CustomerGuard {
            locks: self,
            key,
            guard: None,
        };
        turn.guard = Some(mutex.lock_owned().await);
        turn
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        // Nothing panics while the map is locked; a poisoned map is whole.
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for CustomerGuard<'_> {
    fn drop(&mut self) {
        // The next waiter may go on at once.
        drop(self.guard.take());
        let mut map = self.locks.map();
        if let Some(entry) = map.get_mut(&self.key) {
            entry.users -= 1;
            if entry.users == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_customer_at_a_time_others_in_parallel_and_nothing_left_behind() {
        let locks = Arc::new(CustomerLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (locks, inside, most) = (locks.clone(), inside.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let _guard = locks.lock("t", "c1").await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        // Another customer (and another tenant's customer of the same id)
        // is not kept waiting by a holder of c1.
        let held = locks.lock("t", "c1").await;
        tokio::time::timeout(Duration::from_secs(5), async {
            let _a = locks.lock("t", "c2").await;
            let _b = locks.lock("u", "c1").await;
        })
        .await
        .expect("other customers' locks are free");
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1, "never two holders of c1");
        assert_eq!(locks.len(), 0, "no entry outlives its holders");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_no_entry_behind() {
        let locks = CustomerLocks::default();
        let held = locks.lock("t", "c1").await;
        // A request cancelled while it waits (its client went away).
        let waited = tokio::time::timeout(Duration::from_millis(10), locks.lock("t", "c1")).await;
        assert!(waited.is_err(), "c1 is held");
        drop(held);
        assert_eq!(locks.len(), 0);
        // And the customer can be locked again.
        drop(locks.lock("t", "c1").await);
        assert_eq!(locks.len(), 0);
    }
}

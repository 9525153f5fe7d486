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

/// The per-customer locks of one process.
#[derive(Default)]
pub(super) struct CustomerLocks {
    locks: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// A customer's lock, held until dropped.
pub(super) struct CustomerGuard<'a> {
    locks: &'a CustomerLocks,
    key: Key,
    guard: Option<OwnedMutexGuard<()>>,
}

impl CustomerLocks {
    /// Waits for `customer` of `tenant` (first come, first served).
    pub(super) async fn lock(&self, tenant: &str, customer: &str) -> CustomerGuard<'_> {
        let key = (tenant.to_owned(), customer.to_owned());
        let mutex = self.map().entry(key.clone()).or_default().clone();
        CustomerGuard {
            locks: self,
            key,
            guard: Some(mutex.lock_owned().await),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<tokio::sync::Mutex<()>>>> {
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
        let mut map = self.locks.map();
        drop(self.guard.take());
        // Gone when only the map holds it: nobody holds or waits (a waiter
        // holds a clone of the Arc), and new lockers take the map's lock
        // first, which we hold.
        if map
            .get(&self.key)
            .is_some_and(|mutex| Arc::strong_count(mutex) == 1)
        {
            map.remove(&self.key);
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
}

//! Which tasks and threads hold a write transaction open, so that the app
//! layer can refuse to call a policy while one is (debug builds).
//!
//! The rule it guards: a policy runs for up to its deadline, and on SQLite
//! every tenant shares one writer, so a policy called while a write
//! transaction is open would stall every other tenant's writes for that
//! long. Use cases price and validate before they begin, and re-check
//! inside the transaction only what the policy saw ([`crate::app`]).
//!
//! A transaction is usually held by a tokio task, which may move between
//! threads at every await: it is counted by task id. The SQLite writer's
//! own thread runs write jobs outside any task (`sqlite_jobs`): there it
//! is counted per thread. Two futures joined inside one task (or one
//! `block_on`) count as one holder: concurrent requests run as tasks of
//! their own, as the server runs them. A policy called from a task spawned
//! by the holder is not seen: use cases call policies in their own task.
//! Release builds keep no count: [`WriteMark`] is
//! empty and [`write_transaction_open`] answers `false`.

#[cfg(debug_assertions)]
mod tracking {
    use std::collections::HashMap;
    use std::sync::{Mutex, PoisonError};
    use std::thread::ThreadId;

    use tokio::task::Id;

    /// Who holds a mark: the task, or outside any task the thread. Kept in
    /// one map so a mark dropped elsewhere still counts its own holder out.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub(super) enum Holder {
        Task(Id),
        Thread(ThreadId),
    }

    static HOLDERS: Mutex<Option<HashMap<Holder, usize>>> = Mutex::new(None);

    fn holders<R>(f: impl FnOnce(&mut HashMap<Holder, usize>) -> R) -> R {
        let mut guard = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
        f(guard.get_or_insert_with(HashMap::new))
    }

    /// The current task, or outside a task the current thread (a task on
    /// a current-thread runtime shares its thread with the runtime's own
    /// future, which is no task).
    fn current() -> Holder {
        match tokio::task::try_id() {
            Some(id) => Holder::Task(id),
            None => Holder::Thread(std::thread::current().id()),
        }
    }

    pub(super) fn enter() -> Holder {
        let holder = current();
        holders(|map| *map.entry(holder).or_default() += 1);
        holder
    }

    pub(super) fn leave(holder: Holder) {
        holders(|map| {
            if let Some(n) = map.get_mut(&holder) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&holder);
                }
            }
        });
    }

    pub(super) fn open_here() -> bool {
        let holder = current();
        holders(|map| map.contains_key(&holder))
    }
}

/// Held by every write transaction for as long as it is open.
#[derive(Debug)]
pub(super) struct WriteMark {
    #[cfg(debug_assertions)]
    holder: tracking::Holder,
}

impl WriteMark {
    /// Marks the current task (or, outside a task, thread) as holding a
    /// write transaction.
    pub(super) fn new() -> Self {
        WriteMark {
            #[cfg(debug_assertions)]
            holder: tracking::enter(),
        }
    }
}

impl Drop for WriteMark {
    fn drop(&mut self) {
        #[cfg(debug_assertions)]
        tracking::leave(self.holder);
    }
}

/// Whether the current task (or thread) holds a write transaction open.
/// Always `false` in release builds, which do not track them.
pub fn write_transaction_open() -> bool {
    #[cfg(debug_assertions)]
    return tracking::open_here();
    #[cfg(not(debug_assertions))]
    false
}

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_holding_a_mark_is_seen_and_others_are_not() {
        let holder = tokio::spawn(async {
            assert!(!write_transaction_open());
            let mark = WriteMark::new();
            assert!(write_transaction_open());
            // Another task does not hold it, nor does the runtime's own
            // future.
            let other = tokio::spawn(async { write_transaction_open() });
            assert!(!other.await.unwrap());
            // Still held across awaits, wherever the task resumes.
            for _ in 0..100 {
                tokio::task::yield_now().await;
                assert!(write_transaction_open());
            }
            drop(mark);
            assert!(!write_transaction_open());
        });
        assert!(!write_transaction_open());
        holder.await.unwrap();
    }

    #[test]
    fn a_mark_dropped_on_another_thread_counts_its_own_thread_out() {
        let mark = WriteMark::new();
        assert!(write_transaction_open());
        std::thread::spawn(move || drop(mark)).join().unwrap();
        assert!(!write_transaction_open());
    }

    #[test]
    fn outside_a_task_the_thread_holds_it() {
        assert!(!write_transaction_open());
        let outer = WriteMark::new();
        let inner = WriteMark::new();
        drop(inner);
        assert!(write_transaction_open(), "the outer mark is still held");
        drop(outer);
        assert!(!write_transaction_open());
        let other = std::thread::spawn(write_transaction_open);
        let _mark = WriteMark::new();
        assert!(!other.join().unwrap());
    }
}

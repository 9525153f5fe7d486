//! Write jobs: the writer's own thread runs the hot write transactions.
//!
//! A request that holds the writer through [`super::sqlite_writer`]'s
//! queue is a tokio task, and so is each hand-off: the request behind it
//! is woken and waits for a runtime thread, and after a group's `COMMIT`
//! (on sqlx's thread) the task that tells the group is woken from outside
//! the runtime and waits longer still. Measured under `credits/use` load
//! (c=48, BENCHMARKS.md "The writer's own thread"), those waits cost
//! ~24 µs per request of the writer's ~205 (~20 µs at every hand-off,
//! ~270 µs after every other `COMMIT`), against ~86 µs of statements.
//!
//! So a command can instead hand its transaction to the writer as a
//! **job** ([`super::Store::write`]): a closure that runs on the writer's
//! thread, which takes every job queued, runs them one after another as
//! members of one group, each in its own savepoint, `COMMIT`s inline and
//! only then answers them all. Nothing is answered before the group is
//! durable, a failed `COMMIT` fails every job in it, and a job whose
//! caller has gone before it started is skipped.
//!
//! The thread shares the connection with the queue of async transactions
//! (it waits in that queue like any request), so both kinds of write
//! serialise on one connection and may share a group.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::Instrument;

use super::error::{Result, StoreError};
use super::sqlite::SqliteTx;
use super::sqlite_writer::{Batch, Writer};
use super::{BoxFuture, Finish, StoredResponse, Tx, WriteJobFn};

/// A job with its result type erased, as the writer's thread sees it.
pub(super) trait WriteJob: Send {
    /// The tenant its transaction is for.
    fn tenant(&self) -> &str;
    /// Whether its caller has gone (then it is not run).
    fn abandoned(&self) -> bool;
    /// Runs it in `tx`; what to do with the transaction.
    fn run<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Step>;
    /// Replaces its result with an error that ended it after it ran.
    fn fail(&mut self, err: StoreError);
    /// Answers the caller once the group's outcome is known.
    fn answer(self: Box<Self>, committed: std::result::Result<(), &StoreError>);
}

/// What a job's transaction comes to.
pub(super) enum Step {
    /// Kept, with the answer to store for the claimed idempotency key.
    Keep(Option<StoredResponse>),
    /// Undone.
    Undo,
}

/// A job and where its result goes.
struct Typed<F, R, E> {
    tenant: String,
    /// The caller's span, so that what the job logs is the request's.
    span: tracing::Span,
    job: Option<F>,
    result: Option<std::result::Result<R, E>>,
    reply: oneshot::Sender<std::result::Result<R, E>>,
}

impl<F, R, E> WriteJob for Typed<F, R, E>
where
    F: for<'a> FnOnce(&'a mut Tx) -> BoxFuture<'a, std::result::Result<Finish<R>, E>> + Send,
    R: Send,
    E: From<StoreError> + Send,
{
    fn tenant(&self) -> &str {
        &self.tenant
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn run<'a>(&'a mut self, tx: &'a mut Tx) -> BoxFuture<'a, Step> {
        Box::pin(async move {
            let Some(job) = self.job.take() else {
                return Step::Undo;
            };
            let span = self.span.clone();
            let (result, step) = match job(tx).instrument(span).await {
                Ok(Finish::Commit { response, value }) => (Ok(value), Step::Keep(response)),
                Ok(Finish::Discard(value)) => (Ok(value), Step::Undo),
                Err(err) => (Err(err), Step::Undo),
            };
            self.result = Some(result);
            step
        })
    }

    fn fail(&mut self, err: StoreError) {
        self.result = Some(Err(err.into()));
    }

    fn answer(self: Box<Self>, committed: std::result::Result<(), &StoreError>) {
        let result = match committed {
            // Whatever it decided, it read state that never became durable.
            Err(err) => Err(err.shared_by_group().into()),
            Ok(()) => self.result.unwrap_or_else(|| {
                Err(StoreError::Database("the write job did not finish".into()).into())
            }),
        };
        // The caller may have gone meanwhile; its work stands.
        let _ = self.reply.send(result);
    }
}

/// How long a caller waits for its job's answer, as for the writer itself
/// (`sqlite_writer`): a job still queued then is skipped.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The queue of jobs for the writer's thread.
#[derive(Clone, Debug)]
pub(super) struct Jobs(mpsc::Sender<Box<dyn WriteJob>>);

impl Jobs {
    /// Starts the writer's thread on `writer`. It ends when every [`Jobs`]
    /// is dropped.
    pub(super) fn start(writer: Writer) -> Result<Jobs> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|err| StoreError::Unavailable(format!("no runtime for the writer: {err}")))?;
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("fluxpay-writer".into())
            .spawn(move || run(&writer, &receiver, &runtime))
            .map_err(|err| StoreError::Unavailable(format!("starting the writer: {err}")))?;
        Ok(Jobs(sender))
    }

    /// Runs `job` on the writer's thread; its result once its group has
    /// committed.
    pub(super) async fn submit<F, R, E>(&self, tenant: &str, job: F) -> std::result::Result<R, E>
    where
        F: WriteJobFn<R, E>,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job = Box::new(Typed {
            tenant: tenant.to_owned(),
            span: tracing::Span::current(),
            job: Some(job),
            result: None,
            reply,
        });
        self.0
            .send(job)
            .map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        match tokio::time::timeout(ANSWER_TIMEOUT, result).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => {
                Err(StoreError::Database("the database writer dropped a job".into()).into())
            }
            Err(_) => Err(StoreError::Unavailable(
                "timed out waiting for the database writer".into(),
            )
            .into()),
        }
    }
}

/// The writer's thread: a batch per wake-up, as many jobs as are queued
/// (up to the group's limits), then one `COMMIT`.
fn run(
    writer: &Writer,
    receiver: &mpsc::Receiver<Box<dyn WriteJob>>,
    runtime: &tokio::runtime::Handle,
) {
    while let Ok(first) = receiver.recv() {
        // A panic outside a job (none is known) ends its batch, whose
        // group then rolls back (`Batch`'s drop) and whose callers get an
        // error; the thread goes on with the next.
        let batch = std::panic::catch_unwind(AssertUnwindSafe(|| {
            run_batch(writer, receiver, runtime, first);
        }));
        if batch.is_err() {
            tracing::error!("store.sqlite_writer_batch_panicked");
        }
    }
}

fn run_batch(
    writer: &Writer,
    receiver: &mpsc::Receiver<Box<dyn WriteJob>>,
    runtime: &tokio::runtime::Handle,
    first: Box<dyn WriteJob>,
) {
    let mut batch = match writer.batch_blocking() {
        Ok(batch) => Some(batch),
        Err(err) => {
            // No group could begin (a closed store, another process's
            // write lock past the busy timeout): so for every job queued.
            first.answer(Err(&err));
            for job in receiver.try_iter() {
                job.answer(Err(&err));
            }
            return;
        }
    };
    let mut ran: Vec<Box<dyn WriteJob>> = Vec::new();
    let mut failed = None;
    let mut next = Some(first);
    // `next` is only taken while the batch holds the connection.
    while let Some(mut job) = next.take()
        && let Some(current) = batch.take()
    {
        if job.abandoned() {
            batch = Some(current);
        } else {
            match run_one(writer, current, job.as_mut(), runtime) {
                Ok(kept) => batch = Some(kept),
                // The group was rolled back: every job in it fails.
                Err(err) => failed = Some(err),
            }
            ran.push(job);
        }
        if batch.as_ref().is_some_and(|b| !b.full()) {
            next = receiver.try_recv().ok();
        }
    }
    let committed = match (&mut batch, failed) {
        (_, Some(err)) => Err(err),
        (Some(batch), None) => batch.commit(writer),
        (None, None) => unreachable!("a batch ends with its connection or an error"),
    };
    for job in ran {
        job.answer(committed.as_ref().map(|_| ()));
    }
    // Answered first: the checkpoint that may follow is nobody's wait.
    if let (Some(batch), Ok(())) = (batch, &committed) {
        batch.finish(writer);
    }
}

/// One job in its savepoint. `Err`: the group was rolled back.
fn run_one(
    writer: &Writer,
    batch: Batch,
    job: &mut dyn WriteJob,
    runtime: &tokio::runtime::Handle,
) -> Result<Batch> {
    let member = batch.member(writer)?;
    let mut tx = Tx::Sqlite(SqliteTx::new(member, job.tenant()));
    let step = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(job.run(&mut tx))));
    let Tx::Sqlite(tx) = tx else {
        unreachable!("the writer's jobs run in SQLite transactions")
    };
    let Ok(step) = step else {
        // A job that panics fails alone: its work is undone.
        job.fail(StoreError::Database("a write job panicked".into()));
        return tx.tx.undo_after_panic(runtime);
    };
    let (flushed, batch) = tx.end_in_batch(step);
    if let Err(err) = flushed {
        job.fail(err);
    }
    batch
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::sqlite_writer::tests::{committed, with_deferred_foreign_key, writer};
    use super::*;

    /// A job that inserts `id` into `t` and ends as `finish` says.
    fn job(
        id: i64,
        finish: Ending,
    ) -> impl for<'a> FnOnce(&'a mut Tx) -> BoxFuture<'a, Result<Finish<i64>>> + Send + 'static
    {
        move |tx| {
            Box::pin(async move {
                let Tx::Sqlite(tx) = tx else {
                    unreachable!("jobs run on SQLite")
                };
                tx.tx
                    .raw()
                    .execute("INSERT INTO t (id) VALUES (?1)", [id])?;
                finish(id)
            })
        }
    }

    /// How a test job ends, given its id.
    type Ending = fn(i64) -> Result<Finish<i64>>;

    fn keep(id: i64) -> Result<Finish<i64>> {
        Ok(Finish::Commit {
            response: None,
            value: id,
        })
    }

    /// Submits `job` from a task of its own.
    fn spawn_job<R: Send + 'static>(
        jobs: &Jobs,
        job: impl WriteJobFn<R, StoreError>,
    ) -> tokio::task::JoinHandle<Result<R>> {
        let jobs = jobs.clone();
        tokio::spawn(async move { jobs.submit("t", job).await })
    }

    /// Waits until `n` are queued for the writer (its thread counts once).
    async fn queued(writer: &Writer, n: usize) {
        while writer.queued() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Submits a job per id while the connection is held, so that all of
    /// them are queued before any runs; then lets them run.
    async fn queue_and_run(
        writer: &Writer,
        jobs: &Jobs,
        ids: std::ops::RangeInclusive<i64>,
        finish: fn(i64) -> Ending,
    ) -> Vec<Result<i64>> {
        let held = writer.hold().await;
        let sent = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = ids
            .map(|id| {
                let (jobs, sent) = (jobs.clone(), sent.clone());
                tokio::spawn(async move {
                    // Counted as the job is sent: `submit` sends it before
                    // its first await.
                    sent.fetch_add(1, Ordering::SeqCst);
                    jobs.submit("t", job(id, finish(id))).await
                })
            })
            .collect();
        while sent.load(Ordering::SeqCst) < tasks.len() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        queued(writer, 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        answers
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_jobs_share_one_commit_and_are_answered_once_it_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        // However slowly they run here, they make one group.
        let writer = writer.with_max_age(Duration::from_secs(60));
        let jobs = Jobs::start(writer.clone()).unwrap();
        let before = writer.commits();
        let answers = queue_and_run(&writer, &jobs, 1..=20, |_| keep).await;
        assert_eq!(writer.commits() - before, 1, "one COMMIT for all of them");
        let ids: Vec<i64> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(ids, (1..=20).collect::<Vec<_>>());
        assert_eq!(committed(&options).await, ids);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_or_panicking_job_undoes_only_its_own_work() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        let jobs = Jobs::start(writer.clone()).unwrap();
        let answers = queue_and_run(&writer, &jobs, 1..=20, |id| match id % 4 {
            0 => |id| Ok(Finish::Discard(-id)),
            1 => |_| Err(StoreError::Corrupt("refused".into())),
            2 => |_| panic!("a job that panics"),
            _ => keep,
        })
        .await;
        for (id, answer) in (1..=20i64).zip(&answers) {
            match id % 4 {
                0 => assert_eq!(answer.as_ref().ok(), Some(&-id), "a discarded job's value"),
                1 => assert!(matches!(answer, Err(StoreError::Corrupt(_))), "{answer:?}"),
                2 => assert!(
                    matches!(answer, Err(StoreError::Database(m)) if m.contains("panicked")),
                    "{answer:?}"
                ),
                _ => assert_eq!(answer.as_ref().ok(), Some(&id)),
            }
        }
        let kept: Vec<i64> = (1..=20).filter(|id| id % 4 == 3).collect();
        assert_eq!(committed(&options).await, kept);
        // The thread outlived the panics.
        assert_eq!(jobs.submit("t", job(100, keep)).await.unwrap(), 100);
    }

    // On a current-thread runtime, as most integration tests run: the job's
    // sqlx statement runs through `Handle::block_on` on the writer's thread.
    #[tokio::test]
    async fn a_job_that_panics_after_a_sqlx_statement_is_undone_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        let jobs = Jobs::start(writer.clone()).unwrap();
        let panicked = jobs
            .submit("t", |tx: &mut Tx| -> BoxFuture<'_, Result<Finish<()>>> {
                Box::pin(async move {
                    let Tx::Sqlite(tx) = tx else { unreachable!() };
                    sqlx::query("INSERT INTO t (id) VALUES (1)")
                        .execute(&mut *tx.tx)
                        .await?;
                    panic!("a job that panics after a statement");
                })
            })
            .await;
        assert!(panicked.is_err());
        assert_eq!(jobs.submit("t", job(2, keep)).await.unwrap(), 2);
        assert_eq!(committed(&options).await, [2]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_fails_every_job_and_transaction_of_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        // The group must still take members once the jobs are queued.
        let writer = writer.with_max_age(Duration::from_secs(60));
        let jobs = Jobs::start(writer.clone()).unwrap();
        with_deferred_foreign_key(&writer).await;
        // An async transaction opens the group and hands it on to the
        // writer's thread, queued behind it with two jobs.
        let first = writer.begin().await.unwrap();
        first
            .raw()
            .execute("INSERT INTO t (id) VALUES (1)", [])
            .unwrap();
        let good = spawn_job(&jobs, job(2, keep));
        queued(&writer, 1).await;
        // Only the COMMIT can trip a deferred foreign key.
        let orphan = spawn_job(&jobs, |tx: &mut Tx| -> BoxFuture<'_, Result<Finish<()>>> {
            Box::pin(async move {
                let Tx::Sqlite(tx) = tx else { unreachable!() };
                tx.tx
                    .raw()
                    .execute("INSERT INTO child (parent) VALUES (42)", [])?;
                Ok(Finish::Commit {
                    response: None,
                    value: (),
                })
            })
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let first = first.commit().await;
        let good = good.await.unwrap();
        let orphan = orphan.await.unwrap();
        assert!(first.is_err(), "the transaction's work was fine");
        assert!(good.is_err(), "so was this job's");
        assert!(orphan.is_err());
        assert!(committed(&options).await.is_empty(), "nothing took effect");
        assert_eq!(jobs.submit("t", job(7, keep)).await.unwrap(), 7);
        assert_eq!(committed(&options).await, [7]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_caller_left_before_it_started_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        let jobs = Jobs::start(writer.clone()).unwrap();
        let held = writer.hold().await;
        let gone = tokio::time::timeout(Duration::from_millis(20), jobs.submit("t", job(1, keep)));
        assert!(gone.await.is_err(), "still queued when its caller gave up");
        drop(held);
        assert_eq!(jobs.submit("t", job(2, keep)).await.unwrap(), 2);
        assert_eq!(committed(&options).await, [2]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_join_the_group_a_transaction_hands_on_and_commit_it_for_both() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, options) = writer(&dir).await;
        let jobs = Jobs::start(writer.clone()).unwrap();
        let first = writer.begin().await.unwrap();
        first
            .raw()
            .execute("INSERT INTO t (id) VALUES (1)", [])
            .unwrap();
        let queued_job = spawn_job(&jobs, job(2, keep));
        queued(&writer, 1).await;
        let before = writer.commits();
        // The writer's thread is queued: the group is handed on to it, and
        // this returns once that thread has committed it.
        first.commit().await.unwrap();
        assert_eq!(queued_job.await.unwrap().unwrap(), 2);
        assert_eq!(committed(&options).await, [1, 2]);
        assert_eq!(writer.commits() - before, 1, "one COMMIT for both");
    }
}

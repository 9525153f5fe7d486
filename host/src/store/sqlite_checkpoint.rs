//! WAL checkpoints off the writer's path.
//!
//! In WAL mode a commit appends pages to the `-wal` file, and a
//! *checkpoint* copies them back into the database file so that the WAL can
//! start over. By default SQLite checkpoints inside the `COMMIT` that takes
//! the WAL past 1,000 pages: on the single writer, while every queued
//! request waits for that checkpoint's page copies and fsyncs. Under load
//! that was one group commit in a few, and the tail of `credits/use`
//! (BENCHMARKS.md).
//!
//! So a task copies committed pages back every [`INTERVAL`], through a
//! connection of its own, in `PASSIVE` mode: it never waits for, or blocks,
//! the writer or the readers. That alone cannot let the WAL start over:
//! SQLite restarts it only at a write transaction that begins once *every*
//! frame has been copied back, and under load new groups commit frames
//! during each pass. So once the WAL holds [`RESTART_FRAMES`], the task
//! asks the writer ([`super::sqlite_writer::Writer::wal_restart_flag`]),
//! which after its next `COMMIT`, before it lets the next request in,
//! checkpoints the few frames committed since the task's last pass. The
//! next group then starts the WAL over.
//!
//! The writer's own threshold stays as a safety net
//! ([`WRITER_AUTOCHECKPOINT_PAGES`]), for when this task is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the task checkpoints.
const INTERVAL: Duration = Duration::from_millis(50);

/// How many frames (pages) the WAL may hold before the writer is asked to
/// let it start over: ~16 MiB.
const RESTART_FRAMES: i64 = 4_000;

/// The writer's own checkpoint threshold, in pages (4 KiB each): ten times
/// SQLite's default, reached only if the task falls behind.
pub(super) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// The running task; [`Checkpointer::stop`] ends it.
#[derive(Debug)]
pub(super) struct Checkpointer {
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Checkpointer {
    /// Starts checkpointing the database `options` opens.
    pub(super) fn start(options: SqliteConnectOptions, restart_due: Arc<AtomicBool>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut conn: Option<SqliteConnection> = None;
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = tick.tick() => {}
                }
                if conn.is_none() {
                    match SqliteConnection::connect_with(&options).await {
                        Ok(opened) => conn = Some(opened),
                        Err(err) => {
                            tracing::warn!(error = %err, "store.sqlite_checkpoint_connect_failed");
                            continue;
                        }
                    }
                }
                let Some(open) = conn.as_mut() else { continue };
                // (busy, frames in the WAL, frames copied back)
                let done = sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
                    .fetch_one(&mut *open)
                    .await;
                match done {
                    Ok((_, frames, _)) if frames >= RESTART_FRAMES => {
                        restart_due.store(true, Ordering::SeqCst);
                    }
                    Ok(_) => {}
                    Err(err) => {
                        // Reconnect on the next tick.
                        tracing::warn!(error = %err, "store.sqlite_checkpoint_failed");
                        conn = None;
                    }
                }
            }
            if let Some(open) = conn {
                let _ = open.close().await;
            }
        });
        Checkpointer {
            stop,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Ends the task (after the checkpoint it may be running).
    pub(super) async fn stop(&self) {
        self.stop.send_replace(true);
        let task = self.task.lock().map(|mut task| task.take()).unwrap_or(None);
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use sqlx::sqlite::SqliteJournalMode;

    use super::super::sqlite_writer::Writer;
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wal_past_its_limit_asks_the_writer_to_start_it_over() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("c.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .pragma(
                "wal_autocheckpoint",
                WRITER_AUTOCHECKPOINT_PAGES.to_string(),
            );
        let writer = Writer::open(&options).await.unwrap();
        let flag = writer.wal_restart_flag();
        // ~25 pages a commit; the writer alone never checkpoints below
        // WRITER_AUTOCHECKPOINT_PAGES. (A pass that finds the writer idle
        // copies everything back, and the writer then starts the WAL over
        // by itself: write while no task runs.)
        let write = |pages: i64| {
            let writer = writer.clone();
            async move {
                for _ in 0..pages / 25 {
                    write_pages(&writer).await;
                }
            }
        };
        write(RESTART_FRAMES - 1_000).await;
        let checkpointer = Checkpointer::start(options.clone(), flag.clone());
        tokio::time::sleep(INTERVAL * 3).await;
        checkpointer.stop().await;
        assert!(!flag.load(Ordering::SeqCst), "not asked below the limit");

        write(RESTART_FRAMES + 500).await;
        let checkpointer = Checkpointer::start(options.clone(), flag.clone());
        tokio::time::sleep(INTERVAL * 3).await;
        checkpointer.stop().await;
        assert!(flag.load(Ordering::SeqCst), "asked past the limit");
        writer.close().await;
    }

    /// One commit through the writer of ~100 KiB (~25 pages).
    pub(in crate::store) async fn write_pages(writer: &Writer) {
        let tx = writer.begin().await.unwrap();
        tx.raw()
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS pages (body BLOB); \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) \
                 INSERT INTO pages (body) SELECT randomblob(1000) FROM n",
            )
            .unwrap();
        tx.commit().await.unwrap();
    }
}

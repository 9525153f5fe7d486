//! The file watcher: reloads when the config file or any bound module file
//! changes.
//!
//! It watches the *parent directories* and filters by file name, because
//! builders and editors replace files by writing a temporary file and
//! renaming it over the old one; a watch on the old file itself would follow
//! the replaced inode and miss the new content. Events are debounced: a
//! reload starts once the watched files have been quiet for the debounce
//! interval, so a burst of writes (or four modules rebuilt in a row) causes
//! one reload. After each reload the watch set follows the new module paths.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use notify::{Event, EventKind, RecursiveMode, Watcher as _};

use super::{Reloader, Trigger};

/// A reasonable debounce: longer than a builder's write-then-rename, short
/// enough that an operator does not wait.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(150);

/// How often the watch set is brought up to date without an event.
const REFRESH: Duration = Duration::from_secs(1);

/// A running watcher. Dropping it stops the thread (after any reload in
/// progress finishes).
pub struct WatchHandle {
    stop: mpsc::Sender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

enum Message {
    Event(notify::Result<Event>),
    Stop,
}

/// Start watching `reloader`'s config and module files on a thread of its own.
pub fn watch(reloader: Arc<Reloader>, debounce: Duration) -> anyhow::Result<WatchHandle> {
    let (tx, rx) = mpsc::channel();
    let events = tx.clone();
    let watcher = notify::recommended_watcher(move |event| {
        let _ = events.send(Message::Event(event));
    })
    .context("starting the file watcher")?;
    let mut state = WatchState {
        watcher,
        dirs: BTreeSet::new(),
        files: BTreeSet::new(),
    };
    state.follow(&reloader);
    let thread = std::thread::Builder::new()
        .name("fluxpay-reload-watch".into())
        .spawn(move || run(state, &reloader, &rx, debounce))
        .context("starting the file watcher thread")?;
    Ok(WatchHandle {
        stop: tx,
        thread: Some(thread),
    })
}

struct WatchState {
    watcher: notify::RecommendedWatcher,
    dirs: BTreeSet<PathBuf>,
    files: BTreeSet<PathBuf>,
}

impl WatchState {
    /// Watch the directories of the reloader's current files. Cheap when
    /// nothing changed, so it also runs periodically: an admin reload can
    /// bind modules in new directories, and a directory that did not exist
    /// yet (policies not built) is retried.
    fn follow(&mut self, reloader: &Reloader) {
        let files: BTreeSet<PathBuf> = reloader.watched_files().into_iter().collect();
        let wanted: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(PathBuf::from))
            .collect();
        self.files = files;
        if wanted == self.dirs {
            return;
        }
        for gone in self.dirs.difference(&wanted) {
            let _ = self.watcher.unwatch(gone);
        }
        let mut watching = BTreeSet::new();
        for dir in wanted {
            if self.dirs.contains(&dir) {
                watching.insert(dir);
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watching.insert(dir);
                }
                Err(err) => tracing::debug!(
                    dir = %dir.display(),
                    error = %err,
                    "policy.watch cannot watch directory yet"
                ),
            }
        }
        self.dirs = watching;
    }

    /// Whether an event concerns one of the watched files. Access events
    /// (open, close) are ignored: reading the modules must not trigger a reload.
    fn concerns_us(&self, event: &notify::Result<Event>) -> bool {
        match event {
            Ok(event) => {
                !matches!(event.kind, EventKind::Access(_))
                    && event.paths.iter().any(|p| self.files.contains(p))
            }
            Err(err) => {
                tracing::warn!(error = %err, "policy.watch error");
                false
            }
        }
    }
}

fn run(
    mut state: WatchState,
    reloader: &Reloader,
    rx: &mpsc::Receiver<Message>,
    debounce: Duration,
) {
    let mut followed = Instant::now();
    loop {
        match rx.recv_timeout(REFRESH) {
            Ok(Message::Event(event)) if state.concerns_us(&event) => {}
            // Writes to other files in a watched directory (e.g. an SQLite
            // database next to the config) arrive by the thousand under
            // load: drop them, refreshing the watch set at most once per
            // REFRESH as a quiet period would.
            Ok(Message::Event(_)) | Err(RecvTimeoutError::Timeout) => {
                if followed.elapsed() >= REFRESH {
                    state.follow(reloader);
                    followed = Instant::now();
                }
                continue;
            }
            Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
        }
        // Wait until the files have been quiet for `debounce`.
        loop {
            match rx.recv_timeout(debounce) {
                Ok(Message::Event(_)) => continue,
                Err(RecvTimeoutError::Timeout) => break,
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        // The outcome is logged and kept by the reloader; a refused reload
        // leaves the old version serving.
        let _ = reloader.reload(Trigger::Watcher);
        state.follow(reloader);
        followed = Instant::now();
    }
}

//! A VFS shim that writes a WAL transaction's frames together.
//!
//! SQLite appends every page a transaction changes to the `-wal` file as a
//! *frame*: a 24-byte header, then the page. The platform VFS turns that
//! into two `pwrite` system calls per frame, and the writer makes them all
//! inside its `COMMIT`, where every queued request waits for it. A
//! `credits/use` changes ~7.5 pages, so that is ~15 system calls per use on
//! the one serial path. Written together, one call per [`MAX_WRITE`], the
//! same bytes cost a fifth of the time on this machine (BENCHMARKS.md,
//! "SQLite write path: one write per WAL commit").
//!
//! SQLite cannot do this itself, so the store opens its connections through
//! this VFS, [`VFS_NAME`]: the platform's default VFS with two changes, on
//! Linux (elsewhere it is the platform's VFS unchanged).
//!
//! A `-wal` file keeps SQLite's appends in a buffer and writes them
//!
//! - as soon as the page of a **commit frame** (one whose header carries
//!   the database size) has been written. So every byte of a committed
//!   transaction reaches the operating system inside that transaction's
//!   frame writes: before SQLite syncs the WAL (`synchronous = FULL`) and
//!   before it publishes the frames to other connections in the WAL index
//!   (both modes), exactly as without the shim;
//! - before **any other call** on the file (read, sync, size, truncate,
//!   lock, file control, close), so SQLite never observes the buffer;
//! - before any write that is **not an append** to the previous one
//!   (SQLite overwriting a frame it spilled earlier in a transaction, or
//!   rewriting checksums), which then goes through as SQLite made it.
//!   Writes reach the file in SQLite's own order;
//! - when the buffer reaches [`MAX_BUFFERED`] (a transaction larger than
//!   the cache spills frames before its commit);
//! - and before **any shared-memory lock change on the database**: the
//!   second change is that the main database file's shared-memory lock
//!   call, where SQLite releases the WAL's write lock (and retakes a read
//!   lock before leaving exclusive locking mode), writes that WAL's buffer
//!   first. So when another connection may write the WAL, nothing of this
//!   one waits (at most frames of a transaction rolled back after it
//!   spilled, which the platform VFS would have written at once).
//!
//! What may sit in the buffer between calls is therefore only frames of a
//! transaction that has not committed and that still holds the write lock.
//! A failed write is reported by the call that made it; if a later call
//! had to write it, that call fails with `SQLITE_IOERR_WRITE` (never
//! `SQLITE_FULL`, which SQLite may answer by undoing only the statement),
//! after which SQLite rolls the whole transaction back, as after any
//! failed write.
//!
//! The database file's other methods, journals and the shared-memory index
//! are the platform's. A WAL whose database reports no "power-safe
//! overwrite" (where SQLite pads commits to a sector and syncs in the middle
//! of a frame: `psow=0`) is not buffered.
//!
//! Why not a crate: the Rust VFS crates (`sqlite-vfs`, `sqlite-plugin`)
//! implement a whole VFS; this needs the platform's own, with a few
//! methods wrapped.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::size_of;
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use rusqlite::ffi;

use super::error::{Result, StoreError};

/// The name the store's connections open their files with.
pub(super) const VFS_NAME: &str = "fluxpay-wal";
const VFS_NAME_C: &CStr = c"fluxpay-wal";

/// Bytes of frames buffered before the shim writes them ahead of the
/// commit. A group commit of 64 `credits/use` appends ~2 MiB.
const MAX_BUFFERED: usize = 8 << 20;

/// Buffer capacity kept between transactions.
const RETAINED: usize = 4 << 20;

/// The most one call to the platform's xWrite may write: the unix VFS
/// writes only the low 17 bits of a length (`seekAndWriteFd`), as SQLite
/// itself never writes more than a page. 124 KiB, a multiple of 4 KiB.
const MAX_WRITE: usize = 0x1_f000;

/// The size of a WAL frame header (the WAL file format's).
const FRAME_HEADER: usize = 24;

/// The platform VFS the shim wraps, and the size of its file struct
/// rounded up to 8 bytes (both set once, by [`register`]).
static PLATFORM: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());
static PLATFORM_FILE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Registers the shim (once per process; later calls return the first
/// outcome). Initialises SQLite, so [`super::configure_sqlite`] must come
/// first where it is used.
pub(super) fn register() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: `sqlite3_vfs_find` and `sqlite3_vfs_register` are
            // thread-safe; the struct registered is leaked, so it outlives
            // every connection, as SQLite requires.
            unsafe {
                let platform = ffi::sqlite3_vfs_find(ptr::null());
                if platform.is_null() {
                    return Err("SQLite has no default VFS".to_owned());
                }
                let file_size = ((*platform).szOsFile as usize).next_multiple_of(8);
                PLATFORM.store(platform, Ordering::Release);
                PLATFORM_FILE_SIZE.store(file_size, Ordering::Release);
                // Every method but xOpen stays the platform's own. The unix
                // VFS's ignore the VFS they are called with, except for
                // `pAppData` and `mxPathname`, copied here unchanged; the
                // files they see are the platform's.
                let mut shim = *platform;
                shim.pNext = ptr::null_mut();
                shim.zName = VFS_NAME_C.as_ptr();
                // A database file: the platform's, then a DatabaseExtra.
                // A WAL file: a WalFile, then the platform's.
                let extra = size_of::<WalFile>().max(size_of::<DatabaseExtra>());
                shim.szOsFile = (file_size + extra) as c_int;
                shim.xOpen = Some(open);
                let rc = ffi::sqlite3_vfs_register(Box::into_raw(Box::new(shim)), 0);
                if rc != ffi::SQLITE_OK {
                    return Err(format!("registering the {VFS_NAME} VFS: SQLite error {rc}"));
                }
            }
            Ok(())
        })
        .clone()
        .map_err(StoreError::Unavailable)
}

/// A `-wal` file: SQLite sees `base`; the platform's file lives right after
/// this struct, in the same allocation.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    platform: *mut ffi::sqlite3_file,
    /// The main database file's extra, which points back here (null if the
    /// database file is not the shim's: then nothing is buffered).
    database: *mut DatabaseExtra,
    /// Whether appends are buffered at all (see the module docs).
    buffering: bool,
    /// Appends not yet written, starting at file offset `pending_at`.
    pending: Vec<u8>,
    pending_at: i64,
    /// The offset just past SQLite's last write (−1 before the first).
    end: i64,
    /// The last write was a commit frame's header: write everything once
    /// its page is written.
    commit_page_next: bool,
    /// Writes made to the platform file, and bytes the database's lock
    /// changes had to write (read by tests).
    #[cfg(test)]
    writes: u64,
    #[cfg(test)]
    flushed_at_lock_change: u64,
}

/// What the shim keeps after a main database file's platform struct.
#[repr(C)]
struct DatabaseExtra {
    /// The database's open WAL file, if any.
    wal: *mut WalFile,
}

/// The main database file's methods: the platform's, with the
/// shared-memory lock call wrapped.
struct DatabaseMethods {
    platform: *const ffi::sqlite3_io_methods,
    shim: ffi::sqlite3_io_methods,
}

// SAFETY: both are immutable tables of function pointers, set once.
unsafe impl Send for DatabaseMethods {}
unsafe impl Sync for DatabaseMethods {}

/// Set at the first main database file the shim opens; only files with
/// these same platform methods are wrapped.
static DATABASE_METHODS: OnceLock<DatabaseMethods> = OnceLock::new();

unsafe extern "C" fn open(
    _shim: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let platform_vfs = PLATFORM.load(Ordering::Acquire);
    // SAFETY: `register` set PLATFORM before the shim could be found;
    // SQLite hands us `szOsFile` bytes at `file`, enough for either layout.
    unsafe {
        let Some(platform_open) = (*platform_vfs).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        // Elsewhere the unix VFS may compare a file's methods with its own
        // (macOS's proxy locking), which the database's wrapped methods
        // would change.
        if !cfg!(target_os = "linux") {
            return platform_open(platform_vfs, name, file, flags, out_flags);
        }
        if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
            let rc = platform_open(platform_vfs, name, file, flags, out_flags);
            if rc == ffi::SQLITE_OK && !(*file).pMethods.is_null() {
                wrap_database(file);
            }
            return rc;
        }
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return platform_open(platform_vfs, name, file, flags, out_flags);
        }
        let platform = file
            .cast::<u8>()
            .add(size_of::<WalFile>())
            .cast::<ffi::sqlite3_file>();
        (*platform).pMethods = ptr::null();
        let rc = platform_open(platform_vfs, name, platform, flags, out_flags);
        if (*platform).pMethods.is_null() {
            // Nothing to close: SQLite will not call xClose either.
            (*file).pMethods = ptr::null();
            return if rc == ffi::SQLITE_OK {
                ffi::SQLITE_CANTOPEN
            } else {
                rc
            };
        }
        // The database file this WAL belongs to (valid for a WAL's name
        // inside xOpen), and its extra if the shim wrapped it.
        let db = ffi::sqlite3_database_file_object(name);
        let database = database_extra(db);
        // SQLite pads commits when the *database* lacks power-safe
        // overwrite (sqlite3WalOpen); ask it the same question.
        let buffering = !database.is_null() && {
            let characteristics = (*(*db).pMethods)
                .xDeviceCharacteristics
                .map_or(0, |f| f(db));
            characteristics & ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE != 0
        };
        // Even after a failed open SQLite closes a file whose methods are
        // set, and the close reaches the platform's file through ours.
        file.cast::<WalFile>().write(WalFile {
            base: ffi::sqlite3_file {
                pMethods: &WAL_METHODS,
            },
            platform,
            database,
            buffering,
            pending: Vec::new(),
            pending_at: 0,
            end: -1,
            commit_page_next: false,
            #[cfg(test)]
            writes: 0,
            #[cfg(test)]
            flushed_at_lock_change: 0,
        });
        if !database.is_null() {
            (*database).wal = file.cast();
        }
        rc
    }
}

/// Gives an opened main database file the wrapped methods and its extra.
///
/// # Safety
/// `file` must be a main database file the platform VFS just opened in an
/// allocation of the shim's `szOsFile`.
unsafe fn wrap_database(file: *mut ffi::sqlite3_file) {
    // SAFETY: per the contract; the platform's methods live as long as
    // the process.
    unsafe {
        let platform = (*file).pMethods;
        let methods = DATABASE_METHODS.get_or_init(|| DatabaseMethods {
            platform,
            shim: ffi::sqlite3_io_methods {
                xShmLock: Some(database_shm_lock),
                ..*platform
            },
        });
        if !ptr::eq(methods.platform, platform)
            || (*platform).iVersion < 2
            || (*platform).xShmLock.is_none()
        {
            return;
        }
        database_extra_at(file).write(DatabaseExtra {
            wal: ptr::null_mut(),
        });
        (*file).pMethods = &methods.shim;
    }
}

/// # Safety
/// `file` must be a main database file opened through the shim.
unsafe fn database_extra_at(file: *mut ffi::sqlite3_file) -> *mut DatabaseExtra {
    // SAFETY: the extra follows the platform's struct (see `register`).
    unsafe {
        file.cast::<u8>()
            .add(PLATFORM_FILE_SIZE.load(Ordering::Acquire))
            .cast()
    }
}

/// The extra of `file` if the shim wrapped it, else null.
///
/// # Safety
/// `file` must be null or a live SQLite file.
unsafe fn database_extra(file: *mut ffi::sqlite3_file) -> *mut DatabaseExtra {
    let wrapped = DATABASE_METHODS.get().is_some_and(|methods| {
        // SAFETY: per the contract.
        !file.is_null() && ptr::eq(unsafe { (*file).pMethods }, &methods.shim)
    });
    if wrapped {
        // SAFETY: a database file the shim wrapped.
        unsafe { database_extra_at(file) }
    } else {
        ptr::null_mut()
    }
}

/// Writes the buffer of the database's WAL, if it has one: called before
/// every shared-memory lock change on the database, so before any other
/// connection may write the WAL (see the module docs).
///
/// # Safety
/// `file` must be a database file `wrap_database` set up. SQLite changes a
/// database's locks from the connection that owns its WAL, never from
/// inside a WAL method.
unsafe fn flush_wal_of(file: *mut ffi::sqlite3_file) {
    // SAFETY: per the contract.
    unsafe {
        let wal = (*database_extra_at(file)).wal;
        if wal.is_null() || (*wal).pending.is_empty() {
            return;
        }
        #[cfg(test)]
        {
            (*wal).flushed_at_lock_change += (*wal).pending.len() as u64;
        }
        // At most frames of a transaction rolled back after it spilled:
        // if writing them fails, nothing is lost.
        let _ = (*wal).flush();
    }
}

/// The database's platform methods (set before any file has the shim's,
/// so never `None` where a wrapped file asks).
fn database_platform_methods() -> Option<&'static ffi::sqlite3_io_methods> {
    // SAFETY: the platform's static table.
    DATABASE_METHODS
        .get()
        .map(|methods| unsafe { &*methods.platform })
}

/// The shared-memory lock call. SQLite releases the WAL's write lock
/// here. In exclusive locking mode it takes no shared-memory locks, and
/// other connections wait on the file lock instead; but before it gives
/// that up it takes a shared-memory read lock here again
/// (`sqlite3WalExclusiveMode`). A database opened in exclusive mode keeps
/// its WAL index in heap memory and its file lock until it closes the WAL.
unsafe extern "C" fn database_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: SQLite calls this on a database file `wrap_database` set up.
    unsafe {
        flush_wal_of(file);
        database_platform_methods()
            .and_then(|methods| methods.xShmLock)
            .map_or(ffi::SQLITE_IOERR_SHMLOCK, |lock| {
                lock(file, offset, n, flags)
            })
    }
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    // Version 1: a WAL file is never memory-mapped and has no shared
    // memory of its own (the index belongs to the database file).
    iVersion: 1,
    xClose: Some(wal_close),
    xRead: Some(wal_read),
    xWrite: Some(wal_write),
    xTruncate: Some(wal_truncate),
    xSync: Some(wal_sync),
    xFileSize: Some(wal_file_size),
    xLock: Some(wal_lock),
    xUnlock: Some(wal_unlock),
    xCheckReservedLock: Some(wal_check_reserved_lock),
    xFileControl: Some(wal_file_control),
    xSectorSize: Some(wal_sector_size),
    xDeviceCharacteristics: Some(wal_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

impl WalFile {
    /// # Safety
    /// `file` must be a file [`open`] set up with [`WAL_METHODS`].
    unsafe fn of<'a>(file: *mut ffi::sqlite3_file) -> &'a mut WalFile {
        // SAFETY: per the contract; SQLite calls a file's methods from one
        // thread at a time.
        unsafe { &mut *file.cast::<WalFile>() }
    }

    fn methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: `open` only builds a WalFile once the platform's file
        // has its methods, and they stay until xClose.
        unsafe { &*(*self.platform).pMethods }
    }

    /// Writes `data` at `offset` through the platform's file, in pieces
    /// of at most [`MAX_WRITE`].
    fn write_through(&mut self, data: &[u8], offset: i64) -> c_int {
        let Some(write) = self.methods().xWrite else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let mut at = offset;
        for piece in data.chunks(MAX_WRITE) {
            #[cfg(test)]
            {
                self.writes += 1;
            }
            // SAFETY: a live platform file; `piece` is valid for its
            // length, which fits a c_int.
            let rc = unsafe {
                write(
                    self.platform,
                    piece.as_ptr().cast(),
                    piece.len() as c_int,
                    at,
                )
            };
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            at += piece.len() as i64;
        }
        ffi::SQLITE_OK
    }

    /// Writes the buffer, if any. It is emptied either way: after a failed
    /// write SQLite abandons the transaction those frames belonged to.
    fn flush(&mut self) -> c_int {
        if self.pending.is_empty() {
            return ffi::SQLITE_OK;
        }
        let mut pending = std::mem::take(&mut self.pending);
        let rc = self.write_through(&pending, self.pending_at);
        if pending.capacity() <= RETAINED {
            pending.clear();
            self.pending = pending;
        }
        rc
    }

    fn write(&mut self, data: &[u8], offset: i64) -> c_int {
        let appends = self.buffering && offset == self.end;
        self.end = offset + data.len() as i64;
        // A frame header's bytes 4..8 hold the database size after a
        // commit, zero in every other frame; the WAL header is 32 bytes
        // and a page at least 512.
        let commit_header = data.len() == FRAME_HEADER && data[4..8] != [0; 4];
        let commit_page = std::mem::replace(&mut self.commit_page_next, commit_header);
        if !appends {
            if self.flush() != ffi::SQLITE_OK {
                return ffi::SQLITE_IOERR_WRITE;
            }
            return self.write_through(data, offset);
        }
        if self.pending.len() + data.len() > MAX_BUFFERED && self.flush() != ffi::SQLITE_OK {
            return ffi::SQLITE_IOERR_WRITE;
        }
        if self.pending.is_empty() {
            self.pending_at = offset;
        }
        self.pending.extend_from_slice(data);
        if commit_page {
            return self.flush();
        }
        ffi::SQLITE_OK
    }
}

/// Flushes, then runs `call` on the platform's file.
///
/// # Safety
/// As [`WalFile::of`].
unsafe fn flushed(
    file: *mut ffi::sqlite3_file,
    call: impl FnOnce(&ffi::sqlite3_io_methods, *mut ffi::sqlite3_file) -> Option<c_int>,
) -> c_int {
    // SAFETY: per the contract.
    let wal = unsafe { WalFile::of(file) };
    if wal.flush() != ffi::SQLITE_OK {
        // Not SQLITE_FULL, which SQLite may answer by undoing only the
        // statement, with the lost frames still in the WAL index: an I/O
        // error rolls back the whole transaction.
        return ffi::SQLITE_IOERR_WRITE;
    }
    call(wal.methods(), wal.platform).unwrap_or(ffi::SQLITE_IOERR)
}

/// Runs `call` on the platform's file, leaving the buffer alone.
///
/// # Safety
/// As [`WalFile::of`].
unsafe fn direct(
    file: *mut ffi::sqlite3_file,
    call: impl FnOnce(&ffi::sqlite3_io_methods, *mut ffi::sqlite3_file) -> c_int,
) -> c_int {
    // SAFETY: per the contract.
    let wal = unsafe { WalFile::of(file) };
    call(wal.methods(), wal.platform)
}

// The methods SQLite calls. SAFETY (all): SQLite passes a file `open` set
// up with WAL_METHODS, and pointers valid for the call.

unsafe extern "C" fn wal_close(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe {
        let wal = WalFile::of(file);
        let flushed = wal.flush();
        if !wal.database.is_null() && ptr::eq((*wal.database).wal, wal) {
            (*wal.database).wal = ptr::null_mut();
        }
        let closed = wal
            .methods()
            .xClose
            .map_or(ffi::SQLITE_OK, |f| f(wal.platform));
        ptr::drop_in_place(file.cast::<WalFile>());
        (*file).pMethods = ptr::null();
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn wal_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    unsafe { flushed(file, |m, p| m.xRead.map(|f| f(p, buf, amount, offset))) }
}

unsafe extern "C" fn wal_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    unsafe {
        let Ok(len) = usize::try_from(amount) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let data = std::slice::from_raw_parts(buf.cast::<u8>(), len);
        WalFile::of(file).write(data, offset)
    }
}

unsafe extern "C" fn wal_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    unsafe { flushed(file, |m, p| m.xTruncate.map(|f| f(p, size))) }
}

unsafe extern "C" fn wal_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    unsafe { flushed(file, |m, p| m.xSync.map(|f| f(p, flags))) }
}

unsafe extern "C" fn wal_file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    unsafe { flushed(file, |m, p| m.xFileSize.map(|f| f(p, size))) }
}

unsafe extern "C" fn wal_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    unsafe { flushed(file, |m, p| m.xLock.map(|f| f(p, level))) }
}

unsafe extern "C" fn wal_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    unsafe { flushed(file, |m, p| m.xUnlock.map(|f| f(p, level))) }
}

unsafe extern "C" fn wal_check_reserved_lock(
    file: *mut ffi::sqlite3_file,
    out: *mut c_int,
) -> c_int {
    unsafe { flushed(file, |m, p| m.xCheckReservedLock.map(|f| f(p, out))) }
}

unsafe extern "C" fn wal_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    unsafe {
        flushed(file, |m, p| {
            Some(
                m.xFileControl
                    .map_or(ffi::SQLITE_NOTFOUND, |f| f(p, op, arg)),
            )
        })
    }
}

unsafe extern "C" fn wal_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SQLite's own default when a VFS does not say.
    unsafe { direct(file, |m, p| m.xSectorSize.map_or(4096, |f| f(p))) }
}

unsafe extern "C" fn wal_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    unsafe { direct(file, |m, p| m.xDeviceCharacteristics.map_or(0, |f| f(p))) }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use rusqlite::{Connection, OpenFlags, params};

    use super::*;

    const SYNC_MODES: [&str; 2] = ["FULL", "NORMAL"];

    /// What happens before a commit, given the writer; returns the
    /// connection that then commits, if not the writer.
    type Setup<'a> = dyn Fn(&Connection) -> Option<Connection> + 'a;

    /// A WAL-mode connection through the shim that never checkpoints, so
    /// every committed page stays in the `-wal` file (what a crash leaves
    /// to recover).
    fn open_writer(path: &Path, synchronous: &str) -> Connection {
        open_writer_uri(&format!("file:{}", path.display()), synchronous)
    }

    fn open_writer_uri(uri: &str, synchronous: &str) -> Connection {
        register().unwrap();
        let conn = Connection::open_with_flags_and_vfs(
            uri,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_URI,
            VFS_NAME,
        )
        .unwrap();
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
             PRAGMA wal_autocheckpoint = 0; \
             CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body BLOB NOT NULL);"
        ))
        .unwrap();
        conn
    }

    /// Another process's connection (an operator's shell, say): the
    /// platform VFS, no checkpoints.
    fn open_plain(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0").unwrap();
        conn
    }

    /// A database file `name` in a new directory, and a writer on it.
    fn fresh(name: &str, synchronous: &str) -> (tempfile::TempDir, PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(name);
        let writer = open_writer(&db, synchronous);
        (dir, db, writer)
    }

    /// A transaction that spills ~250 pages of frames and rolls back.
    fn spill_and_roll_back(conn: &Connection) {
        conn.execute_batch("PRAGMA cache_size = 10").unwrap();
        let tx = conn.unchecked_transaction().unwrap();
        add_rows(&tx, 250, 3_000);
        tx.rollback().unwrap();
        conn.execute_batch("PRAGMA cache_size = 2000").unwrap();
    }

    /// `rows` rows of `bytes` random bytes, in the caller's transaction.
    fn add_rows(conn: &Connection, rows: i64, bytes: i64) {
        for _ in 0..rows {
            conn.execute(
                "INSERT INTO t (body) VALUES (randomblob(?1))",
                params![bytes],
            )
            .unwrap();
        }
    }

    /// Another writer's commit: table `m`, 500 rows (~70 pages).
    fn commit_table_m(conn: &Connection) {
        conn.execute_batch(
            "CREATE TABLE m (x BLOB); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) \
             INSERT INTO m SELECT randomblob(500) FROM n",
        )
        .unwrap();
    }

    fn rows_in_m(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM m", [], |row| row.get(0))
            .unwrap()
    }

    fn integrity(conn: &Connection) -> String {
        conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap()
    }

    /// The connection's WAL file, as the shim opened it.
    fn wal_file(conn: &Connection) -> &WalFile {
        let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
        // SAFETY: a live connection; JOURNAL_POINTER stores the WAL's
        // sqlite3_file, which lives as long as the connection's WAL.
        unsafe {
            let rc = ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_JOURNAL_POINTER,
                (&raw mut file).cast(),
            );
            assert_eq!(rc, ffi::SQLITE_OK);
            assert!(
                ptr::eq((*file).pMethods, &WAL_METHODS),
                "not the shim's WAL"
            );
            &*file.cast::<WalFile>()
        }
    }

    fn wal_path(db: &Path) -> PathBuf {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        wal.into()
    }

    fn wal_len(db: &Path) -> u64 {
        std::fs::metadata(wal_path(db)).unwrap().len()
    }

    fn insert(conn: &Connection, rows: i64, bytes: i64) {
        let tx = conn.unchecked_transaction().unwrap();
        for _ in 0..rows {
            tx.execute(
                "INSERT INTO t (body) VALUES (randomblob(?1))",
                params![bytes],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    /// (rows, bytes, a digest of every body) as `conn` sees the table.
    fn contents(conn: &Connection) -> (i64, i64, String) {
        conn.query_row(
            "SELECT count(*), coalesce(sum(length(body)), 0), \
                    coalesce(group_concat(hex(substr(body, 1, 8)) || hex(substr(body, -8)), ''), '') \
             FROM (SELECT body FROM t ORDER BY id)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap()
    }

    /// What a process crash leaves: the database and WAL files as the
    /// operating system holds them, without the shared-memory index, so
    /// opening the copy recovers from the WAL alone.
    fn after_a_crash(dir: &Path, db: &Path) -> Connection {
        let copy = dir.join("crashed.db");
        std::fs::copy(db, &copy).unwrap();
        std::fs::copy(wal_path(db), wal_path(&copy)).unwrap();
        let conn = Connection::open(&copy).unwrap();
        assert_eq!(integrity(&conn), "ok");
        conn
    }

    #[test]
    fn a_commit_reaches_the_wal_in_one_write() {
        for synchronous in SYNC_MODES {
            let (_dir, db, conn) = fresh("one.db", synchronous);
            // The first commit writes the WAL's header on its own.
            insert(&conn, 1, 10);
            let before = wal_file(&conn).writes;
            // ~20 pages (~80 KiB): 40 writes of SQLite's own without
            // the shim.
            insert(&conn, 20, 3_000);
            assert_eq!(wal_file(&conn).writes - before, 1, "{synchronous}");
            // ~100 pages (~400 KiB): one write per MAX_WRITE.
            let (before, wal_before) = (wal_file(&conn).writes, wal_len(&db));
            insert(&conn, 100, 3_000);
            let appended = (wal_len(&db) - wal_before) as usize;
            assert!(appended > 100 * 4096, "{appended}");
            assert_eq!(
                wal_file(&conn).writes - before,
                appended.div_ceil(MAX_WRITE) as u64,
                "{synchronous}"
            );
            assert!(wal_file(&conn).pending.is_empty());
        }
    }

    #[test]
    fn every_commit_is_readable_at_once_and_survives_a_crash() {
        for synchronous in SYNC_MODES {
            let (dir, db, writer) = fresh("visible.db", synchronous);
            // Another connection, on the platform VFS: it reads the frames
            // the WAL index points it to straight from the file.
            let reader =
                Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
            for commit in 1..=60 {
                insert(&writer, 1 + commit % 3, 1_500 + 97 * commit);
                assert_eq!(
                    contents(&reader),
                    contents(&writer),
                    "{synchronous} #{commit}"
                );
            }
            assert_eq!(wal_file(&writer).flushed_at_lock_change, 0, "{synchronous}");
            let committed = contents(&writer);
            assert_eq!(contents(&after_a_crash(dir.path(), &db)), committed);
        }
    }

    #[test]
    fn a_transaction_larger_than_the_cache_spills_rewrites_and_commits() {
        for synchronous in SYNC_MODES {
            let (dir, db, writer) = fresh("spill.db", synchronous);
            insert(&writer, 10, 500);
            // 20 pages of cache against ~400 pages changed: SQLite writes
            // uncommitted frames mid-transaction, reads them back, and
            // overwrites frames it already wrote.
            writer.execute_batch("PRAGMA cache_size = 20").unwrap();
            let tx = writer.unchecked_transaction().unwrap();
            add_rows(&tx, 400, 3_000);
            tx.execute("UPDATE t SET body = randomblob(2000) WHERE id % 7 = 0", [])
                .unwrap();
            tx.commit().unwrap();
            // A spilled transaction rolled back leaves nothing behind.
            spill_and_roll_back(&writer);
            insert(&writer, 3, 5_000);

            let committed = contents(&writer);
            assert_eq!(committed.0, 10 + 400 + 3, "{synchronous}");
            let reader =
                Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
            assert_eq!(contents(&reader), committed, "{synchronous}");
            assert_eq!(
                contents(&after_a_crash(dir.path(), &db)),
                committed,
                "{synchronous}"
            );
        }
    }

    #[test]
    fn a_one_page_commit_is_readable_at_once_whatever_came_before() {
        for synchronous in SYNC_MODES {
            let (dir, db, writer) = fresh("one-page.db", synchronous);
            let reader = open_plain(&db);
            insert(&writer, 5, 100);
            // Each time the commit's one frame is not an append to the
            // committing connection's own last write.
            let before: [(&str, &Setup); 3] = [
                ("a rolled-back spill", &|w| {
                    spill_and_roll_back(w);
                    None
                }),
                ("another writer's commit", &|_| {
                    insert(&open_plain(&db), 1, 100);
                    None
                }),
                ("a new connection", &|_| Some(open_writer(&db, synchronous))),
            ];
            for (case, setup) in before {
                let new = setup(&writer);
                let committer = new.as_ref().unwrap_or(&writer);
                let flushed_before = wal_file(committer).flushed_at_lock_change;
                committer
                    .execute("UPDATE t SET body = randomblob(50) WHERE id = 1", [])
                    .unwrap();
                // The commit wrote its frame itself: the lock change after
                // it found nothing to write.
                assert_eq!(
                    wal_file(committer).flushed_at_lock_change,
                    flushed_before,
                    "{synchronous}, after {case}"
                );
                assert_eq!(
                    contents(&reader),
                    contents(committer),
                    "{synchronous}, after {case}"
                );
                let crashed = after_a_crash(dir.path(), &db);
                assert_eq!(
                    contents(&crashed),
                    contents(committer),
                    "{synchronous}, after {case}"
                );
                drop(crashed);
                std::fs::remove_file(dir.path().join("crashed.db")).unwrap();
                let _ = std::fs::remove_file(wal_path(&dir.path().join("crashed.db")));
            }
        }
    }

    #[test]
    fn a_rolled_back_spill_never_lands_on_another_writers_commit() {
        for synchronous in SYNC_MODES {
            let (dir, db, writer) = fresh("dead-frames.db", synchronous);
            insert(&writer, 1, 100);
            // An empty WAL, so the rollback itself reads nothing from it.
            writer
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
            spill_and_roll_back(&writer);
            // The dead frames were written before the write lock went.
            assert!(
                wal_file(&writer).flushed_at_lock_change > 0,
                "{synchronous}"
            );
            assert!(wal_file(&writer).pending.is_empty(), "{synchronous}");
            // Another writer commits frames where the dead ones would go.
            commit_table_m(&open_plain(&db));
            // The first writer writes again (and so would flush a buffer).
            insert(&writer, 1, 100);

            let fresh = open_plain(&db);
            assert_eq!(integrity(&fresh), "ok", "{synchronous}");
            assert_eq!(rows_in_m(&fresh), 500, "{synchronous}");
            assert_eq!(contents(&fresh), contents(&writer), "{synchronous}");
            assert_eq!(
                rows_in_m(&after_a_crash(dir.path(), &db)),
                500,
                "{synchronous}"
            );
        }
    }

    #[test]
    fn a_database_without_power_safe_overwrite_is_not_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("psow.db");
        // SQLite pads each commit to a sector and syncs mid-frame here.
        let writer = open_writer_uri(&format!("file:{}?psow=0", db.display()), "FULL");
        let reader = open_plain(&db);
        for commit in 1..=10 {
            insert(&writer, commit, 700);
            assert_eq!(contents(&reader), contents(&writer), "#{commit}");
        }
        assert!(!wal_file(&writer).buffering);
        // And with power-safe overwrite (the default) it is.
        let other = open_writer(&dir.path().join("default.db"), "FULL");
        insert(&other, 1, 10);
        assert!(wal_file(&other).buffering);
    }

    #[test]
    fn a_rolled_back_spill_in_exclusive_mode_never_lands_on_a_later_commit() {
        let (dir, db, writer) = fresh("exclusive.db", "FULL");
        insert(&writer, 1, 100);
        writer
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        // No shared-memory locks in exclusive mode: the file lock is what
        // other connections wait on.
        writer
            .execute_batch("PRAGMA locking_mode = EXCLUSIVE")
            .unwrap();
        spill_and_roll_back(&writer);
        writer
            .execute_batch("PRAGMA locking_mode = NORMAL")
            .unwrap();
        // The next access gives the file lock up.
        let _ = contents(&writer);
        assert!(wal_file(&writer).pending.is_empty());

        commit_table_m(&open_plain(&db));
        assert_eq!(rows_in_m(&writer), 500);
        assert_eq!(integrity(&open_plain(&db)), "ok");
        assert_eq!(rows_in_m(&after_a_crash(dir.path(), &db)), 500);
    }
}

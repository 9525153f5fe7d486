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
//! this VFS, [`VFS_NAME`]: the platform's default VFS with one change. A
//! `-wal` file it opens keeps SQLite's appends in a buffer and writes them
//!
//! - as soon as the page of a **commit frame** (one whose header carries
//!   the database size) has been appended. So every byte of a committed
//!   transaction reaches the operating system inside that transaction's
//!   frame writes: before SQLite syncs the WAL (`synchronous = FULL`) and
//!   before it publishes the frames to other connections in the WAL index
//!   (both modes), exactly as without the shim;
//! - before **any other call** on the file (read, sync, size, truncate,
//!   lock, file control, close), so SQLite never observes the buffer;
//! - before any write that is **not an append** to the previous one
//!   (SQLite overwriting a frame it spilled earlier in a transaction, or
//!   rewriting checksums), which then goes through as SQLite made it. Writes
//!   reach the file in SQLite's own order;
//! - when the buffer reaches [`MAX_BUFFERED`] (a transaction larger than
//!   the cache spills frames before its commit).
//!
//! What may sit in the buffer between calls is therefore only frames of a
//! transaction that has not committed, which a crash would discard anyway.
//! A failed write is reported by the call that made it; SQLite then rolls
//! the transaction back as it would after any failed write.
//!
//! The database file, journals and shared-memory index go straight to the
//! platform VFS. A WAL on a device without "power-safe overwrite" (where
//! SQLite pads commits to a sector and syncs in the middle of a frame) is
//! not buffered either.
//!
//! Why not a crate: the Rust VFS crates (`sqlite-vfs`, `sqlite-plugin`)
//! implement a whole VFS; this needs the platform's own, with one method
//! wrapped.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::size_of;
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};

use rusqlite::ffi;

use super::error::{Result, StoreError};

/// The name the store's connections open their files with.
pub(super) const VFS_NAME: &str = "fluxpay-wal";
const VFS_NAME_C: &CStr = c"fluxpay-wal";

/// Bytes of frames buffered before the shim writes them ahead of the
/// commit. A group commit of 64 `credits/use` appends ~2 MiB.
const MAX_BUFFERED: usize = 8 << 20;

/// The most one call to the platform's xWrite may write: the unix VFS
/// writes only the low 17 bits of a length (`seekAndWriteFd`), as SQLite
/// itself never writes more than a page. 124 KiB, a multiple of 4 KiB.
const MAX_WRITE: usize = 0x1_f000;

/// The size of a WAL frame header (the WAL file format's).
const FRAME_HEADER: usize = 24;

/// The platform VFS the shim wraps (set once, by [`register`]).
static PLATFORM: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());

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
                PLATFORM.store(platform, Ordering::Release);
                // Every method but xOpen stays the platform's own. They
                // read the VFS struct's `pAppData` and `mxPathname`, copied
                // here unchanged, and the files they see are the platform's.
                let mut shim = *platform;
                shim.pNext = ptr::null_mut();
                shim.zName = VFS_NAME_C.as_ptr();
                shim.szOsFile = (*platform).szOsFile + size_of::<WalFile>() as c_int;
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
/// this struct, in the same allocation (`szOsFile` counts both).
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    platform: *mut ffi::sqlite3_file,
    /// Whether appends are buffered at all (see the module docs).
    buffering: bool,
    /// Appends not yet written, starting at file offset `pending_at`.
    pending: Vec<u8>,
    pending_at: i64,
    /// The offset just past SQLite's last write (−1 before the first).
    end: i64,
    /// The last append was a commit frame's header: write once its page
    /// is appended.
    commit_page_next: bool,
    /// Writes made to the platform file (read by tests).
    #[cfg(test)]
    writes: u64,
}

unsafe extern "C" fn open(
    _shim: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let platform_vfs = PLATFORM.load(Ordering::Acquire);
    // SAFETY: `register` set PLATFORM before the shim could be found;
    // SQLite hands us `szOsFile` bytes at `file`, enough for the platform's
    // file alone or for a WalFile followed by one.
    unsafe {
        let Some(platform_open) = (*platform_vfs).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
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
        let characteristics = (*(*platform).pMethods)
            .xDeviceCharacteristics
            .map_or(0, |f| f(platform));
        // Even after a failed open SQLite closes a file whose methods are
        // set, and the close reaches the platform's file through ours.
        file.cast::<WalFile>().write(WalFile {
            base: ffi::sqlite3_file {
                pMethods: &WAL_METHODS,
            },
            platform,
            buffering: characteristics & ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE != 0,
            pending: Vec::new(),
            pending_at: 0,
            end: -1,
            commit_page_next: false,
            #[cfg(test)]
            writes: 0,
        });
        rc
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
        let pending = std::mem::take(&mut self.pending);
        let rc = self.write_through(&pending, self.pending_at);
        self.pending = pending;
        self.pending.clear();
        rc
    }

    fn write(&mut self, data: &[u8], offset: i64) -> c_int {
        let appends = self.buffering && offset == self.end;
        self.end = offset + data.len() as i64;
        if !appends {
            self.commit_page_next = false;
            let rc = self.flush();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            return self.write_through(data, offset);
        }
        if self.pending.len() + data.len() > MAX_BUFFERED {
            let rc = self.flush();
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        if self.pending.is_empty() {
            self.pending_at = offset;
        }
        self.pending.extend_from_slice(data);
        if std::mem::take(&mut self.commit_page_next) {
            return self.flush();
        }
        // A frame header's bytes 4..8 hold the database size after a
        // commit, zero in every other frame.
        self.commit_page_next = data.len() == FRAME_HEADER && data[4..8] != [0; 4];
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
    let rc = wal.flush();
    if rc != ffi::SQLITE_OK {
        return rc;
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
    use std::path::Path;

    use rusqlite::{Connection, OpenFlags, params};

    use super::*;

    const SYNC_MODES: [&str; 2] = ["FULL", "NORMAL"];

    /// A WAL-mode connection that never checkpoints, so every committed
    /// page stays in the `-wal` file (what a crash leaves to recover).
    fn open_writer(path: &Path, synchronous: &str) -> Connection {
        register().unwrap();
        let conn = Connection::open_with_flags_and_vfs(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
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

    fn wal_path(db: &Path) -> std::path::PathBuf {
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
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        conn
    }

    #[test]
    fn a_commit_reaches_the_wal_in_one_write() {
        for synchronous in SYNC_MODES {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("one.db");
            let conn = open_writer(&db, synchronous);
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
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("visible.db");
            let writer = open_writer(&db, synchronous);
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
            let committed = contents(&writer);
            assert_eq!(contents(&after_a_crash(dir.path(), &db)), committed);
        }
    }

    #[test]
    fn a_transaction_larger_than_the_cache_spills_rewrites_and_commits() {
        for synchronous in SYNC_MODES {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("spill.db");
            let writer = open_writer(&db, synchronous);
            insert(&writer, 10, 500);
            // 20 pages of cache against ~400 pages changed: SQLite writes
            // uncommitted frames mid-transaction, reads them back, and
            // overwrites frames it already wrote.
            writer.execute_batch("PRAGMA cache_size = 20").unwrap();
            let tx = writer.unchecked_transaction().unwrap();
            for _ in 0..400 {
                tx.execute("INSERT INTO t (body) VALUES (randomblob(3000))", [])
                    .unwrap();
            }
            tx.execute("UPDATE t SET body = randomblob(2000) WHERE id % 7 = 0", [])
                .unwrap();
            tx.commit().unwrap();
            // A spilled transaction rolled back leaves nothing behind.
            let tx = writer.unchecked_transaction().unwrap();
            for _ in 0..300 {
                tx.execute("INSERT INTO t (body) VALUES (randomblob(3000))", [])
                    .unwrap();
            }
            tx.rollback().unwrap();
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
}

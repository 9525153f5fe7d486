//! Store errors. sqlx errors are classified here and never leave the module
//! as sqlx types: a named constraint becomes [`StoreError::Constraint`] so the
//! app layer can map it to a domain error (a duplicate is a 409, not a 500).

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A named constraint refused a write (CHECK, UNIQUE, FOREIGN KEY).
    #[error("constraint `{constraint}` refused the write: {message}")]
    Constraint {
        /// The constraint's name (PostgreSQL), or the best name SQLite's
        /// message gives (`<table>.<column>` for UNIQUE, `foreign key`).
        constraint: String,
        /// The database's message.
        message: String,
    },
    /// An integer result did not fit in 64 bits (PostgreSQL 22003).
    #[error("a value is out of the 64-bit range")]
    OutOfRange,
    /// The database cannot be reached, the pool is exhausted, or the
    /// connection broke mid-request (PostgreSQL shutting down, a reset).
    /// Retryable; a break during `COMMIT` leaves its outcome unknown, which
    /// the request's idempotency key resolves on the retry.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Another transaction held what this one needed for longer than the
    /// database waits (SQLite BUSY or LOCKED), or the database chose this
    /// one to undo (PostgreSQL serialization failure 40001, deadlock
    /// 40P01), or a statement was cancelled (57014, 55P03). Retryable.
    #[error("the database was busy: {0}")]
    Contention(String),
    /// The storage refused the write: the disk or the database's size
    /// limit is full, or an I/O error (SQLITE_FULL, SQLITE_IOERR,
    /// PostgreSQL 53100, 58000, 58030). Retryable once an operator has made
    /// room.
    #[error("the database could not store the write: {0}")]
    Storage(String),
    /// A row that breaks what the schema promises (a bad enum value, …).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// Migrations could not be applied.
    #[error("migrating the database failed: {0}")]
    Migrate(String),
    /// Anything else the driver reported; the source carries the detail.
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    /// The error every member of a failed SQLite group commit gets: a
    /// retryable one stays retryable (a closed store, another process's
    /// write lock, a full disk); anything else names the group.
    pub(super) fn shared_by_group(&self) -> StoreError {
        match self {
            StoreError::Unavailable(_) | StoreError::Contention(_) | StoreError::Storage(_) => {
                self.clone()
            }
            other => StoreError::Database(format!("the group commit failed: {other}")),
        }
    }

    /// Whether nothing was written and the same request may be sent again
    /// (the API answers 503 with `Retry-After`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Contention(_) | StoreError::Storage(_)
        )
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) => {
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    // SQLite's code is its extended result code, in decimal.
                    let code = db.code().and_then(|c| c.parse::<i32>().ok());
                    if let Some(err) = code.and_then(|c| sqlite_transient(c, db.message())) {
                        return err;
                    }
                } else if let Some(err) = db.code().and_then(|c| pg_transient(&c, db.message())) {
                    return err;
                }
                // PostgreSQL reports numeric overflow as 22003; constraint
                // violations are class 23 and name the constraint.
                if db.code().as_deref() == Some("22003") {
                    return StoreError::OutOfRange;
                }
                if let Some(name) = db.constraint() {
                    return StoreError::Constraint {
                        constraint: name.to_owned(),
                        message: db.message().to_owned(),
                    };
                }
                if let Some(constraint) = sqlite_constraint(db.message()) {
                    return StoreError::Constraint {
                        constraint,
                        message: db.message().to_owned(),
                    };
                }
                StoreError::Database(db.message().to_owned())
            }
            // A connection that broke mid-message reports Io or Protocol; a
            // dead SQLite worker thread, WorkerCrashed.
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err.to_string()),
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(err.to_string())
            }
            _ => StoreError::Database(err.to_string()),
        }
    }
}

/// The SQLite writer's inline statements (see `sqlite_writer`), classified
/// as sqlx's are.
impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match &err {
            rusqlite::Error::SqliteFailure(failure, message) => {
                let message = message.clone().unwrap_or_else(|| failure.to_string());
                if let Some(err) = sqlite_transient(failure.extended_code, &message) {
                    return err;
                }
                match failure.code {
                    rusqlite::ErrorCode::ConstraintViolation => StoreError::Constraint {
                        constraint: sqlite_constraint(&message)
                            .unwrap_or_else(|| "constraint".to_owned()),
                        message,
                    },
                    _ => StoreError::Database(message),
                }
            }
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(err.to_string()),
            _ => StoreError::Database(err.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(err.to_string())
    }
}

/// The SQLite result codes (primary or extended) that mean "nothing was
/// written, try again": one classification for the sqlx and the inline
/// (rusqlite) paths.
fn sqlite_transient(code: i32, message: &str) -> Option<StoreError> {
    use rusqlite::ffi;
    let message = message.to_owned();
    match code & 0xff {
        ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED => Some(StoreError::Contention(message)),
        ffi::SQLITE_FULL | ffi::SQLITE_IOERR | ffi::SQLITE_READONLY => {
            Some(StoreError::Storage(message))
        }
        ffi::SQLITE_CANTOPEN | ffi::SQLITE_NOMEM => Some(StoreError::Unavailable(message)),
        _ => None,
    }
}

/// The PostgreSQL SQLSTATEs that mean "nothing was committed, try again".
fn pg_transient(sqlstate: &str, message: &str) -> Option<StoreError> {
    let message = message.to_owned();
    match sqlstate {
        // serialization_failure, deadlock_detected
        "40001" | "40P01" => Some(StoreError::Contention(message)),
        // lock_not_available (lock_timeout), query_canceled (statement_timeout)
        "55P03" | "57014" => Some(StoreError::Contention(message)),
        // too_many_connections, out_of_memory, admin/crash shutdown,
        // cannot connect now
        "53300" | "53200" | "57P01" | "57P02" | "57P03" => Some(StoreError::Unavailable(message)),
        // connection exceptions (not a protocol violation: that is a bug)
        s if s.starts_with("08") && s != "08P01" => Some(StoreError::Unavailable(message)),
        // disk_full, system_error, io_error
        "53100" | "58000" | "58030" => Some(StoreError::Storage(message)),
        _ => None,
    }
}

/// SQLite names CHECK constraints in its message (`CHECK constraint failed:
/// credit_uses_refunded_check`) but not UNIQUE or FOREIGN KEY ones, which
/// are reported by column; map what it says to a stable name.
fn sqlite_constraint(message: &str) -> Option<String> {
    if let Some(name) = message.strip_prefix("CHECK constraint failed: ") {
        return Some(name.trim().to_owned());
    }
    if let Some(columns) = message.strip_prefix("UNIQUE constraint failed: ") {
        return Some(columns.trim().to_owned());
    }
    if message.starts_with("FOREIGN KEY constraint failed") {
        return Some("foreign key".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_messages_name_their_constraint() {
        assert_eq!(
            sqlite_constraint("CHECK constraint failed: credit_uses_refunded_check").as_deref(),
            Some("credit_uses_refunded_check")
        );
        assert_eq!(
            sqlite_constraint(
                "UNIQUE constraint failed: customers.tenant_id, customers.customer_id"
            )
            .as_deref(),
            Some("customers.tenant_id, customers.customer_id")
        );
        assert_eq!(
            sqlite_constraint("FOREIGN KEY constraint failed").as_deref(),
            Some("foreign key")
        );
        assert_eq!(sqlite_constraint("disk I/O error"), None);
    }
}

//! Store errors. sqlx errors are classified here and never leave the module
//! as sqlx types: a named constraint becomes [`StoreError::Constraint`] so the
//! app layer can map it to a domain error (a duplicate is a 409, not a 500).

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
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
    /// The database cannot be reached or the pool is exhausted.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
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

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) => {
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
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(err.to_string())
            }
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
                match failure.code {
                    rusqlite::ErrorCode::ConstraintViolation => StoreError::Constraint {
                        constraint: sqlite_constraint(&message)
                            .unwrap_or_else(|| "constraint".to_owned()),
                        message,
                    },
                    rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::SystemIoFailure => StoreError::Unavailable(message),
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

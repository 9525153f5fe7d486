//! The `database:` section: which backend, where, and how large a pool.
//!
//! ```yaml
//! database:
//!   url: sqlite://../.fluxpay/fluxpay.db   # or postgres://user@host:5432/db
//!   max_connections: 8                     # optional
//!   sqlite_synchronous: full               # optional: full (default) | normal
//!   idempotency_retention_hours: 48        # optional, ≥ 24 (default 48)
//!   outbox_retention_days: 30              # optional, 1..=3650 (default 30)
//! ```
//!
//! `FLUXPAY_DATABASE_URL` overrides `url` ([`DatabaseConfig::with_env_override`]);
//! a relative SQLite path is relative to the config file's directory, or to
//! the working directory when it comes from the environment.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Secret;

/// The environment variable that overrides `database.url`.
pub const DATABASE_URL_ENV: &str = "FLUXPAY_DATABASE_URL";

/// Default pool size: enough to keep two cores busy while some connections
/// wait on row locks, small enough for PostgreSQL's per-connection cost.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;

/// Idempotency records are kept at least this long (issue 3: ≥ 24 h).
pub const MIN_IDEMPOTENCY_RETENTION_HOURS: u32 = 24;
/// Default retention: a client retrying over a weekend still gets its answer.
/// Default `outbox_retention_days`.
pub const DEFAULT_OUTBOX_RETENTION_DAYS: u32 = 30;
/// Longest `outbox_retention_days` (10 years).
pub const MAX_OUTBOX_RETENTION_DAYS: u32 = 3650;
pub const DEFAULT_IDEMPOTENCY_RETENTION_HOURS: u32 = 48;

/// Where the database is.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file (absolute path); created when missing.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL. It may carry a password, so it is a
    /// [`Secret`] and `Debug` shows only the scheme.
    Postgres(Secret),
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            DatabaseUrl::Postgres(_) => f.write_str("postgres://***"),
        }
    }
}

impl DatabaseUrl {
    /// Parses `sqlite://<path>` (relative paths joined to `base`) or
    /// `postgres://…` / `postgresql://…`.
    pub fn parse(url: &str, base: &Path) -> Result<DatabaseUrl, String> {
        let url = url.trim();
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err(
                    "an SQLite URL needs a file path (sqlite://<path>); in-memory databases lose every write on restart"
                        .into(),
                );
            }
            return Ok(DatabaseUrl::Sqlite(base.join(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(Secret::new(url)));
        }
        Err("must start with sqlite:// or postgres://".into())
    }

    /// `sqlite` or `postgres`, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            DatabaseUrl::Sqlite(_) => "sqlite",
            DatabaseUrl::Postgres(_) => "postgres",
        }
    }
}

/// How SQLite flushes commits (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteSynchronous {
    /// Flush on every commit: an acknowledged write survives power loss.
    #[default]
    Full,
    /// WAL without a flush per commit: survives a process crash, not a power
    /// loss; roughly 2.5× the commit rate on one disk.
    Normal,
}

/// The validated `database:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// Backend and location.
    pub url: DatabaseUrl,
    /// Pool size (for SQLite: readers; there is always exactly one writer).
    pub max_connections: u32,
    /// SQLite only.
    pub sqlite_synchronous: SqliteSynchronous,
    /// How long idempotency records are kept.
    pub idempotency_retention_hours: u32,
    /// How long events stay in the outbox (and the feed) once every sink
    /// has published them.
    pub outbox_retention_days: u32,
}

impl DatabaseConfig {
    /// The default when the file has no `database:` section: an SQLite file
    /// `fluxpay.db` next to the config file.
    pub fn default_for(config_dir: &Path) -> Self {
        DatabaseConfig {
            url: DatabaseUrl::Sqlite(config_dir.join("fluxpay.db")),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            sqlite_synchronous: SqliteSynchronous::Full,
            idempotency_retention_hours: DEFAULT_IDEMPOTENCY_RETENTION_HOURS,
            outbox_retention_days: DEFAULT_OUTBOX_RETENTION_DAYS,
        }
    }

    /// Applies [`DATABASE_URL_ENV`] when set (relative SQLite paths are
    /// relative to the working directory).
    pub fn with_env_override(self) -> Result<Self, String> {
        match std::env::var(DATABASE_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => {
                let cwd = std::env::current_dir().unwrap_or_default();
                let url = DatabaseUrl::parse(&url, &cwd)
                    .map_err(|err| format!("{DATABASE_URL_ENV}: {err}"))?;
                Ok(DatabaseConfig { url, ..self })
            }
            _ => Ok(self),
        }
    }
}

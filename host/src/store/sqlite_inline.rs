//! Statements written once for both backends (`$N` placeholders, see
//! [`super::queries`]) run **inline** on SQLite's writer connection inside
//! a write transaction ([`super::sqlite_writer`], "Inline statements"):
//! no hand-off to sqlx's worker thread and back while the one writer is
//! held. The order saga's transactions are made of such statements; sent
//! through sqlx, each cost a round trip between threads, and those round
//! trips, not SQLite, were most of the time a saga step held the writer
//! (BENCHMARKS.md, "The order saga end to end").
//!
//! `$N` is SQLite's `?N` with the same number: the SQL is the same text.

use rusqlite::{OptionalExtension, Params, Row};

use super::error::Result;

/// `sql` with PostgreSQL's `$N` placeholders written as SQLite's `?N`.
fn numbered(sql: &str) -> String {
    debug_assert!(!sql.contains("'$"), "a `$` in a literal: {sql}");
    sql.replace('$', "?")
}

/// At most one row, mapped by `map`.
pub(super) fn optional<T>(
    raw: &rusqlite::Connection,
    sql: &str,
    params: impl Params,
    map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    Ok(raw
        .prepare_cached(&numbered(sql))?
        .query_row(params, map)
        .optional()?)
}

/// Every row, mapped by `map`.
pub(super) fn all<T>(
    raw: &rusqlite::Connection,
    sql: &str,
    params: impl Params,
    map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut statement = raw.prepare_cached(&numbered(sql))?;
    let rows = statement.query_map(params, map)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Runs a statement; the rows it changed.
pub(super) fn execute(raw: &rusqlite::Connection, sql: &str, params: impl Params) -> Result<usize> {
    Ok(raw.prepare_cached(&numbered(sql))?.execute(params)?)
}

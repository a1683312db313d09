//! tickdb's SQL.
//!
//! - One-off `SELECT`s: column projections, `*`, `t.*` and aliases, inner
//!   `JOIN ... ON` over several tables, `WHERE` with comparisons, `AND`/`OR`/`NOT`,
//!   `BETWEEN`, `IN` and `IS [NOT] NULL`, `ORDER BY`, `LIMIT` and `COUNT(*)`. A query
//!   is parsed with sqlparser (or bound from a [`StatementCache`] by its shape), bound
//!   to the database's tables with the position of each mistake, planned onto unique,
//!   btree and grid indexes, and run within a row and time budget ([`QueryLimits`]).
//! - `INSERT`, `UPDATE` and `DELETE` for the database's owner, as transactions in the
//!   tick loop ([`dml_work`]).
//! - Who reads what: [`Reader`] and [`Visibility`]: private tables for the owner
//!   alone, row-level rules with `:sender` joined into every client query.
//! - Subscriptions ([`Subscription`], [`SubscriptionSet`]): whole rows of one table,
//!   possibly through joins on indexed columns, kept up to date from each tick's
//!   changes alone; identical queries shared, `col = literal` queries grouped, windows
//!   found through an area-of-interest index, the rest in parallel. [`InitialScan`]
//!   computes a new subscription's rows without holding the tick loop.

mod aoi;
mod bind;
mod cache;
mod dml;
mod error;
mod exec;
mod initial;
mod plan;
mod semijoin;
mod subscribe;
mod visibility;

pub use bind::{BoundQuery, ColRef, JOIN_TABLES_MAX, Output};
pub use cache::{SHAPE_BYTES_MAX, STATEMENT_CACHE_SHAPES, StatementCache};
pub use dml::{dml_work, execute};
pub use error::{ErrorKind, Position, SqlError};
pub use exec::{QueryLimits, QueryResult, run};
pub use initial::InitialScan;
pub use plan::{Access, GRID_CELLS_MAX, JoinAccess, Plan};
pub use subscribe::{Delta, DeltaMap, QueryId, SetStats, Subscription, SubscriptionSet, TickDeltas};
pub use visibility::{Reader, TABLES_WITH_RULES_MAX, Visibility};

use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use tickdb_engine::Database;

/// The longest query accepted, in bytes.
pub const QUERY_BYTES_MAX: usize = 64 << 10;
/// How deeply expressions may nest.
pub const EXPR_DEPTH_MAX: usize = 64;

/// Parses and binds `sql` against `db`'s tables.
pub fn prepare(db: &Database, sql: &str) -> Result<BoundQuery, SqlError> {
    bind::bind(db, &parse_one(sql)?, bind::Params::default())
}

/// Parses exactly one statement, within the size and nesting limits.
pub(crate) fn parse_one(sql: &str) -> Result<sqlparser::ast::Statement, SqlError> {
    if sql.len() > QUERY_BYTES_MAX {
        let why = format!("the query is {} bytes; at most {QUERY_BYTES_MAX} are accepted", sql.len());
        return Err(SqlError::new(ErrorKind::TooLarge, why, None));
    }
    let statements = Parser::new(&GenericDialect {})
        .with_recursion_limit(EXPR_DEPTH_MAX)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
        .map_err(SqlError::parse)?;
    let mut statements = statements.into_iter();
    match (statements.next(), statements.len()) {
        (Some(statement), 0) => Ok(statement),
        (first, rest) => {
            let why = format!("expected one statement, found {}", usize::from(first.is_some()) + rest);
            Err(SqlError::new(ErrorKind::Unsupported, why, None))
        }
    }
}

/// Parses and binds `sql` for `reader`: refused if it reads a private table the reader
/// does not own, restricted by `visibility`'s rules otherwise.
pub fn prepare_for(
    db: &Database,
    visibility: &Visibility,
    reader: Reader,
    sql: &str,
) -> Result<BoundQuery, SqlError> {
    visibility.restrict(db, reader, prepare(db, sql)?)
}

/// Parses, binds, plans and runs a one-off query for `reader`.
pub fn query_for(
    db: &Database,
    visibility: &Visibility,
    reader: Reader,
    sql: &str,
    limits: &QueryLimits,
) -> Result<QueryResult, SqlError> {
    run(db, &prepare_for(db, visibility, reader, sql)?, limits)
}

/// Parses, binds, plans and runs a one-off query, as the owner.
pub fn query(db: &Database, sql: &str, limits: &QueryLimits) -> Result<QueryResult, SqlError> {
    let bound = prepare(db, sql)?;
    run(db, &bound, limits)
}

//! The engine's operating errors. Each message says what failed, naming the table,
//! column or constraint, so that it can go straight back to a module author.

use tickdb_wasm_abi::{DecodeError, EncodeError, SchemaError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("table `{0}` already exists")]
    TableExists(String),
    #[error("no table `{0}`")]
    NoSuchTable(String),
    #[error("table `{table}` has no unique constraint or index `{name}`")]
    NoSuchIndex { table: String, name: String },
    #[error("table `{table}`: column `{column}`: {source}")]
    InvalidRow { table: String, column: String, source: DecodeError },
    #[error("table `{table}`: row has {extra} bytes after its last column")]
    RowTrailingBytes { table: String, extra: usize },
    #[error("table `{table}`: row of {len} bytes is larger than the limit of {max} bytes")]
    RowTooLarge { table: String, len: usize, max: usize },
    #[error("table `{table}`, column `{column}`: {source}")]
    TypeMismatch { table: String, column: String, source: EncodeError },
    #[error("table `{table}`: {found} values given for {expected} columns")]
    ValueCount { table: String, expected: usize, found: usize },
    #[error("table `{table}` has no primary key")]
    NoPrimaryKey { table: String },
    #[error("index key for {columns}: {why}")]
    InvalidKey { columns: String, why: String },
    #[error("duplicate key {columns}=({key}) violates unique constraint `{constraint}`")]
    UniqueViolation { constraint: String, columns: String, key: String },
    #[error("table `{table}` has no row {row}")]
    NoSuchRow { table: String, row: u32 },
    #[error("table `{table}` has no row with that key in `{constraint}`")]
    NoRowWithKey { table: String, constraint: String },
    #[error("table `{table}` is full: it holds {max} rows, the most allowed")]
    TableFull { table: String, max: usize },
    #[error("table `{table}`: the auto_inc sequence of column `{column}` is exhausted")]
    SequenceExhausted { table: String, column: String },
}

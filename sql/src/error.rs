//! Errors that say what is wrong and where.

use std::fmt;

use sqlparser::tokenizer::Span;

/// A place in the query text: line and column, from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl Position {
    pub(crate) fn of(span: Span) -> Option<Position> {
        (span.start.line > 0).then_some(Position { line: span.start.line, column: span.start.column })
    }
}

/// What kind of mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Syntax,
    UnknownTable,
    UnknownColumn,
    TypeMismatch,
    Unsupported,
    TooLarge,
    /// The query read more rows or took longer than its budget.
    Budget,
    /// The reader may not read what the query reads (a private table).
    Forbidden,
}

/// A query that cannot run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    pub kind: ErrorKind,
    pub message: String,
    pub position: Option<Position>,
}

impl SqlError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>, position: Option<Position>) -> SqlError {
        SqlError { kind, message: message.into(), position }
    }

    pub(crate) fn at(kind: ErrorKind, message: impl Into<String>, span: Span) -> SqlError {
        SqlError::new(kind, message, Position::of(span))
    }

    pub(crate) fn parse(e: sqlparser::parser::ParserError) -> SqlError {
        let message = e.to_string();
        let message = message.strip_prefix("sql parser error: ").unwrap_or(&message).to_string();
        let kind = if message.contains("recursion limit") { ErrorKind::TooLarge } else { ErrorKind::Syntax };
        SqlError::new(kind, message, None)
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(p) = self.position {
            write!(f, " (line {}, column {})", p.line, p.column)?;
        }
        Ok(())
    }
}

impl std::error::Error for SqlError {}

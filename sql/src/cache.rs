//! The statement cache: most of a small query's cost is parsing, and clients send the
//! same queries again and again with other literals. A query's text is cut into its
//! shape (every number and string literal replaced by a numbered placeholder, `$1`,
//! `$2`...) and its literals; the shape is parsed once, and each later query of that
//! shape is bound straight from the cached statement with its own literals.
//!
//! Binding is redone every time, against the tables as they are, so a cached statement
//! never outlives a schema change. A query whose binding fails is parsed and bound
//! again from its own text, so its error points into the text the client sent.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sqlparser::ast::Statement;
use tickdb_engine::Database;

use crate::bind::{self, BoundQuery, Literal, Params};
use crate::error::SqlError;
use crate::exec::{QueryLimits, QueryResult, run};
use crate::visibility::{Reader, Visibility};

/// The most shapes a cache keeps by default.
pub const STATEMENT_CACHE_SHAPES: usize = 1024;
/// The longest shape kept: longer queries are parsed each time, so that the cache
/// holds at most `STATEMENT_CACHE_SHAPES` times this many bytes of text.
pub const SHAPE_BYTES_MAX: usize = 4096;

/// Parsed statements by shape, shared between threads.
#[derive(Debug)]
pub struct StatementCache {
    shapes: Mutex<HashMap<String, Arc<Statement>>>,
    capacity: usize,
}

impl Default for StatementCache {
    fn default() -> Self {
        StatementCache::new(STATEMENT_CACHE_SHAPES)
    }
}

impl StatementCache {
    /// A cache keeping at most `capacity` shapes; past that, an arbitrary shape makes
    /// room for the new one.
    pub fn new(capacity: usize) -> StatementCache {
        StatementCache { shapes: Mutex::new(HashMap::new()), capacity: capacity.max(1) }
    }

    /// Shapes kept.
    pub fn len(&self) -> usize {
        self.shapes.lock().expect("cache lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Like [`crate::prepare`], through the cache.
    pub fn prepare(&self, db: &Database, sql: &str) -> Result<BoundQuery, SqlError> {
        // Too long a text is refused by the parser's path, as it would be uncached.
        let shaped = (sql.len() <= crate::QUERY_BYTES_MAX).then(|| shape(sql)).flatten();
        let Some((shape, literals)) = shaped.filter(|(shape, _)| shape.len() <= SHAPE_BYTES_MAX) else {
            return crate::prepare(db, sql);
        };
        let cached = self.shapes.lock().expect("cache lock").get(&shape).cloned();
        let statement = match cached {
            Some(statement) => statement,
            None => {
                // A text that does not parse as a shape is parsed as itself, for its error.
                let Ok(statement) = crate::parse_one(&shape) else { return crate::prepare(db, sql) };
                let statement = Arc::new(statement);
                let mut shapes = self.shapes.lock().expect("cache lock");
                if shapes.len() >= self.capacity
                    && let Some(evicted) = shapes.keys().next().cloned()
                {
                    shapes.remove(&evicted);
                }
                shapes.insert(shape, statement.clone());
                statement
            }
        };
        let params = Params { literals: &literals, sender: None };
        bind::bind(db, &statement, params).or_else(|_| crate::prepare(db, sql))
    }

    /// Like [`crate::prepare_for`], through the cache.
    pub fn prepare_for(
        &self,
        db: &Database,
        visibility: &Visibility,
        reader: Reader,
        sql: &str,
    ) -> Result<BoundQuery, SqlError> {
        visibility.restrict(db, reader, self.prepare(db, sql)?)
    }

    /// Like [`crate::query`], through the cache.
    pub fn query(&self, db: &Database, sql: &str, limits: &QueryLimits) -> Result<QueryResult, SqlError> {
        let bound = self.prepare(db, sql)?;
        run(db, &bound, limits)
    }
}

/// A query's shape and its literals, or `None` for text the cache leaves to the parser
/// (comments, placeholders of its own, prefixed strings, an unterminated string).
pub(crate) fn shape(sql: &str) -> Option<(String, Vec<Literal<'_>>)> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut literals = Vec::new();
    let mut i = 0;
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let placeholder = |out: &mut String, n: usize| {
        out.push('$');
        out.push_str(&n.to_string());
    };
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' => {
                let start = i + 1;
                let mut j = start;
                let mut escaped = false;
                loop {
                    match bytes.get(j) {
                        None => return None,
                        Some(b'\'') if bytes.get(j + 1) == Some(&b'\'') => {
                            escaped = true;
                            j += 2;
                        }
                        Some(b'\'') => break,
                        Some(b'\\') => return None, // dialects differ on backslashes
                        Some(_) => j += 1,
                    }
                }
                let text = &sql[start..j];
                let text = if escaped { Cow::Owned(text.replace("''", "'")) } else { Cow::Borrowed(text) };
                literals.push(Literal::String(text));
                placeholder(&mut out, literals.len());
                i = j + 1;
            }
            b'"' | b'`' => {
                let end = i + 1 + bytes[i + 1..].iter().position(|&c| c == b)?;
                out.push_str(&sql[i..=end]);
                i = end + 1;
            }
            b'$' | b'?' | b':' | b'@' | b'#' => return None,
            b'-' if bytes.get(i + 1) == Some(&b'-') => return None,
            b'/' if bytes.get(i + 1) == Some(&b'*') => return None,
            b'0'..=b'9' | b'.' if b != b'.' || bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let mut j = i;
                while j < bytes.len() {
                    let c = bytes[j];
                    let sign_of_exponent =
                        (c == b'+' || c == b'-') && matches!(bytes[j - 1], b'e' | b'E') && j > i;
                    if is_word(c) || c == b'.' || sign_of_exponent {
                        j += 1;
                    } else {
                        break;
                    }
                }
                literals.push(Literal::Number(&sql[i..j]));
                placeholder(&mut out, literals.len());
                i = j;
            }
            _ if is_word(b) => {
                let start = i;
                while i < bytes.len() && is_word(bytes[i]) {
                    i += 1;
                }
                if bytes.get(i) == Some(&b'\'') {
                    return None; // X'..', N'..', E'..'
                }
                out.push_str(&sql[start..i]);
            }
            _ => {
                // Any other byte, including those of non-ASCII characters, is copied.
                let len = sql[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&sql[i..i + len]);
                i += len;
            }
        }
    }
    Some((out, literals))
}

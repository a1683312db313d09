//! Running a bound query against the database, within its budget.

use std::cmp::Ordering;
use std::ops::Bound;
use std::time::{Duration, Instant};

use tickdb_engine::key::{KeyBytes, prefix_successor};
use tickdb_engine::{Database, RowId, RowRef, Table};
use tickdb_wasm_abi::{ColId, Value, ValueType};

use crate::bind::{BoundQuery, Output, Pred};
use crate::error::{ErrorKind, SqlError};
use crate::plan::{Access, access};

/// How much one query may read and how long it may take, so that it never holds the
/// tick loop for long.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    pub rows_max: u64,
    pub time_max: Duration,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits { rows_max: 1_000_000, time_max: Duration::from_millis(100) }
    }
}

/// What a query returned.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// Column names and types.
    pub columns: Vec<(String, ValueType)>,
    pub rows: Vec<Vec<Value>>,
    /// How the table was read.
    pub access: Access,
    /// Rows read to answer it.
    pub rows_read: u64,
}

/// Runs a bound query.
pub fn run(db: &Database, query: &BoundQuery, limits: &QueryLimits) -> Result<QueryResult, SqlError> {
    let table = db.table(query.table);
    let schema = table.schema();
    let access = access(schema, query.filter.as_ref());
    let started = Instant::now();
    let mut rows_read = 0u64;
    let mut matched: Vec<Vec<Value>> = Vec::new();
    let mut count = 0u64;
    let wanted: Vec<ColId> = match &query.output {
        Output::Columns(columns) => columns.iter().map(|(_, c)| *c).collect(),
        Output::Count(_) => Vec::new(),
    };
    let sort_keys: Vec<ColId> = query.order_by.iter().map(|(c, _)| *c).collect();
    let early_limit = if query.order_by.is_empty() { query.limit } else { None };
    for id in candidates(table, &access)? {
        rows_read += 1;
        if rows_read > limits.rows_max {
            let why = format!(
                "the query read more than {} rows; narrow it with an indexed condition",
                limits.rows_max
            );
            return Err(SqlError::new(ErrorKind::Budget, why, None));
        }
        if rows_read.is_multiple_of(1024) && started.elapsed() > limits.time_max {
            let why = format!("the query ran longer than {} ms", limits.time_max.as_millis());
            return Err(SqlError::new(ErrorKind::Budget, why, None));
        }
        let Some(row) = table.get(id) else { continue };
        if let Some(filter) = &query.filter
            && eval(filter, &row) != Some(true)
        {
            continue;
        }
        count += 1;
        if !wanted.is_empty() || !sort_keys.is_empty() {
            let mut values: Vec<Value> = wanted.iter().map(|c| row.value(*c)).collect();
            values.extend(sort_keys.iter().map(|c| row.value(*c)));
            matched.push(values);
        }
        if early_limit.is_some_and(|l| count >= l) {
            break;
        }
    }
    if !query.order_by.is_empty() {
        let at = wanted.len();
        matched.sort_by(|a, b| {
            query
                .order_by
                .iter()
                .enumerate()
                .map(|(i, (_, desc))| {
                    let ord = a[at + i].cmp(&b[at + i]);
                    if *desc { ord.reverse() } else { ord }
                })
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        });
        if let Some(limit) = query.limit {
            matched.truncate(limit as usize);
        }
        matched.iter_mut().for_each(|row| row.truncate(at));
    }
    let (columns, rows) = match &query.output {
        Output::Columns(columns) => {
            let columns =
                columns.iter().map(|(n, c)| (n.clone(), schema.columns[c.index()].ty.clone())).collect();
            (columns, matched)
        }
        Output::Count(name) => (vec![(name.clone(), ValueType::U64)], vec![vec![Value::U64(count)]]),
    };
    Ok(QueryResult { columns, rows, access, rows_read })
}

/// The value a bound literal stands for in an index key over column `col`.
fn key_value(table: &Table, col: ColId, value: &Value) -> Value {
    match table.schema().columns[col.index()].ty {
        ValueType::Option(_) => Value::Option(Some(Box::new(value.clone()))),
        _ => value.clone(),
    }
}

fn key(table: &Table, columns: &[ColId], value: &Value) -> Result<KeyBytes, SqlError> {
    let value = key_value(table, columns[0], value);
    table
        .key_from_values(&columns[..1], std::slice::from_ref(&value))
        .map_err(|e| SqlError::new(ErrorKind::TypeMismatch, e.to_string(), None))
}

/// The row ids an access path reads.
fn candidates<'t>(
    table: &'t Table,
    access: &Access,
) -> Result<Box<dyn Iterator<Item = RowId> + 't>, SqlError> {
    Ok(match access {
        Access::Scan => Box::new(table.iter().map(|r| r.id())),
        Access::Unique { constraint, key: value } => {
            let columns = &table.schema().unique[*constraint].columns;
            let key = key(table, columns, value)?;
            Box::new(table.find_unique(*constraint, &key).into_iter())
        }
        Access::Range { index, lower, upper } => {
            let columns = &table.schema().indexes[*index].columns;
            // Bounds on the first column are key prefixes: an included upper bound takes
            // every key that starts with it, an excluded lower one skips them.
            let lower = match lower {
                Bound::Included(v) => Bound::Included(key(table, columns, v)?),
                Bound::Excluded(v) => match prefix_successor(&key(table, columns, v)?) {
                    Some(after) => Bound::Included(after),
                    None => return Ok(Box::new(std::iter::empty())),
                },
                Bound::Unbounded => Bound::Unbounded,
            };
            let upper = match upper {
                Bound::Included(v) => match prefix_successor(&key(table, columns, v)?) {
                    Some(after) => Bound::Excluded(after),
                    None => Bound::Unbounded,
                },
                Bound::Excluded(v) => Bound::Excluded(key(table, columns, v)?),
                Bound::Unbounded => Bound::Unbounded,
            };
            let as_ref = |b: &Bound<KeyBytes>| match b {
                Bound::Included(k) => Bound::Included(k.to_vec()),
                Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
                Bound::Unbounded => Bound::Unbounded,
            };
            let (lower, upper) = (as_ref(&lower), as_ref(&upper));
            let ids: Vec<RowId> =
                table.index_range(*index, bound_slice(&lower), bound_slice(&upper)).collect();
            Box::new(ids.into_iter())
        }
    })
}

fn bound_slice(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// A column's value for comparison: `None` for a NULL option.
fn operand(row: &RowRef<'_>, col: ColId) -> Option<Value> {
    match row.value(col) {
        Value::Option(inner) => inner.map(|v| *v),
        v => Some(v),
    }
}

/// Three-valued: `None` is unknown (a NULL was compared).
fn eval(pred: &Pred, row: &RowRef<'_>) -> Option<bool> {
    match pred {
        Pred::Cmp { col, op, value } => operand(row, *col).map(|v| op.holds(v.cmp(value))),
        Pred::Cols { left, op, right } => {
            let (l, r) = (operand(row, *left)?, operand(row, *right)?);
            Some(op.holds(l.cmp(&r)))
        }
        Pred::In { col, values, negated } => operand(row, *col).map(|v| values.contains(&v) != *negated),
        Pred::Between { col, low, high, negated } => {
            operand(row, *col).map(|v| (v >= *low && v <= *high) != *negated)
        }
        Pred::IsNull { col, negated } => Some((row.value(*col) == Value::Option(None)) != *negated),
        Pred::Const(b) => Some(*b),
        Pred::Not(inner) => eval(inner, row).map(|b| !b),
        Pred::And(parts) => {
            let mut result = Some(true);
            for part in parts {
                match eval(part, row) {
                    Some(false) => return Some(false),
                    None => result = None,
                    Some(true) => {}
                }
            }
            result
        }
        Pred::Or(parts) => {
            let mut result = Some(false);
            for part in parts {
                match eval(part, row) {
                    Some(true) => return Some(true),
                    None => result = None,
                    Some(false) => {}
                }
            }
            result
        }
    }
}

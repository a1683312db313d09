//! Running a bound query against the database, within its budget.

use std::cmp::Ordering;
use std::ops::Bound;
use std::time::{Duration, Instant};

use tickdb_engine::key::{KeyBytes, grid_key, stored_number};
use tickdb_engine::{Database, RowId, RowRef, Table, TableId};
use tickdb_wasm_abi::{ColId, TableSchema, Value, ValueType};

use crate::bind::{BoundQuery, ColRef, Output, Pred};
use crate::error::{ErrorKind, SqlError};
use crate::plan::{Access, JoinAccess, Plan, conjuncts, plan};

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
    /// How the tables were read.
    pub plan: Plan,
    /// Rows read to answer it.
    pub rows_read: u64,
}

/// The state of one run: what it has read and found so far.
struct Run<'q, 'd> {
    tables: Vec<&'d Table>,
    plan: &'q Plan,
    /// Per table, the conditions that can be checked once its row is chosen.
    checks: Vec<Vec<&'q Pred>>,
    limits: &'q QueryLimits,
    started: Instant,
    rows_read: u64,
    count: u64,
    matched: Vec<Vec<Value>>,
    /// The columns the output, then the sort, needs.
    wanted: Vec<ColRef>,
    early_limit: Option<u64>,
}

/// Why a run stopped before the end: its budget, or its `LIMIT` was met.
enum Stop {
    Limit,
    Error(SqlError),
}

/// Runs a bound query.
pub fn run(db: &Database, query: &BoundQuery, limits: &QueryLimits) -> Result<QueryResult, SqlError> {
    let tables: Vec<&Table> = query.tables.iter().map(|&t| db.table(t)).collect();
    let schemas: Vec<&TableSchema> = tables.iter().map(|t| &**t.schema()).collect();
    let plan = plan(&schemas, query.filter.as_ref());
    let mut checks = vec![Vec::new(); tables.len()];
    for condition in query.filter.as_ref().map(conjuncts).unwrap_or_default() {
        checks[condition.last_table()].push(condition);
    }
    let mut wanted: Vec<ColRef> = match &query.output {
        Output::Columns(columns) => columns.iter().map(|(_, c)| *c).collect(),
        Output::Count(_) => Vec::new(),
    };
    let at = wanted.len();
    wanted.extend(query.order_by.iter().map(|(c, _)| *c));
    // Without an order, rows past the limit need not be read; a count reads them all.
    let counting = matches!(query.output, Output::Count(_));
    let early_limit = if query.order_by.is_empty() && !counting { query.limit } else { None };
    let mut run = Run {
        tables,
        plan: &plan,
        checks,
        limits,
        started: Instant::now(),
        rows_read: 0,
        count: 0,
        matched: Vec::new(),
        wanted,
        early_limit,
    };
    let mut rows = Vec::with_capacity(run.tables.len());
    match run.descend(0, &mut rows) {
        Ok(()) | Err(Stop::Limit) => {}
        Err(Stop::Error(e)) => return Err(e),
    }
    let (count, mut matched, rows_read) = (run.count, run.matched, run.rows_read);
    if !query.order_by.is_empty() {
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
        matched.iter_mut().for_each(|row| row.truncate(at));
    }
    let (columns, mut rows) = match &query.output {
        Output::Columns(columns) => {
            let ty = |c: &ColRef| schemas[c.table].columns[c.col.index()].ty.clone();
            (columns.iter().map(|(n, c)| (n.clone(), ty(c))).collect(), matched)
        }
        Output::Count(name) => (vec![(name.clone(), ValueType::U64)], vec![vec![Value::U64(count)]]),
    };
    // `LIMIT` limits the rows returned: a count is one row, `LIMIT 0` none.
    if let Some(limit) = query.limit {
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    Ok(QueryResult { columns, rows, plan, rows_read })
}

impl<'d> Run<'_, 'd> {
    /// Chooses a row of table `k` for each candidate, given the rows before it.
    fn descend(&mut self, k: usize, rows: &mut Vec<RowRef<'d>>) -> Result<(), Stop> {
        let table = self.tables[k];
        let ids: Box<dyn Iterator<Item = RowId> + 'd> = if k == 0 {
            candidates(table, &self.plan.first).map_err(Stop::Error)?
        } else {
            Box::new(join_candidates(table, self.plan.joins[k - 1], rows).map_err(Stop::Error)?.into_iter())
        };
        for id in ids {
            self.rows_read += 1;
            budget(self.rows_read, self.started, self.limits).map_err(Stop::Error)?;
            let Some(row) = table.get(id) else { continue };
            rows.push(row);
            let pass = self.checks[k].iter().all(|c| eval(c, &rows[..]) == Some(true));
            let outcome = match (pass, k + 1 == self.tables.len()) {
                (false, _) => Ok(()),
                (true, false) => self.descend(k + 1, rows),
                (true, true) => self.emit(rows),
            };
            rows.pop();
            outcome?;
        }
        Ok(())
    }

    fn emit(&mut self, rows: &[RowRef<'d>]) -> Result<(), Stop> {
        self.count += 1;
        if !self.wanted.is_empty() {
            self.matched.push(self.wanted.iter().map(|c| rows[c.table].value(c.col)).collect());
        }
        match self.early_limit {
            Some(limit) if self.count >= limit => Err(Stop::Limit),
            _ => Ok(()),
        }
    }
}

/// Fails once a query has read more rows, or run longer, than its limits allow.
fn budget(rows_read: u64, started: Instant, limits: &QueryLimits) -> Result<(), SqlError> {
    if rows_read > limits.rows_max {
        let why =
            format!("the query read more than {} rows; narrow it with an indexed condition", limits.rows_max);
        return Err(SqlError::new(ErrorKind::Budget, why, None));
    }
    if rows_read.is_multiple_of(1024) && started.elapsed() > limits.time_max {
        let why = format!("the query ran longer than {} ms", limits.time_max.as_millis());
        return Err(SqlError::new(ErrorKind::Budget, why, None));
    }
    Ok(())
}

/// The rows of one table that meet `filter`, read as a query would (DML uses this).
pub(crate) fn matching_rows(
    db: &Database,
    table: TableId,
    filter: Option<&Pred>,
    limits: &QueryLimits,
) -> Result<Vec<RowId>, SqlError> {
    let t = db.table(table);
    let plan = plan(&[&**t.schema()], filter);
    let started = Instant::now();
    let mut rows_read = 0;
    let mut out = Vec::new();
    for id in candidates(t, &plan.first)? {
        rows_read += 1;
        budget(rows_read, started, limits)?;
        let Some(row) = t.get(id) else { continue };
        if filter.is_none_or(|f| eval(f, std::slice::from_ref(&row)) == Some(true)) {
            out.push(id);
        }
    }
    Ok(out)
}

/// Rows of a joined table matching the rows before it, by its plan.
fn join_candidates(table: &Table, access: JoinAccess, rows: &[RowRef<'_>]) -> Result<Vec<RowId>, SqlError> {
    // The outer column's value as the inner column holds it (an option or not);
    // NULL equals nothing.
    let outer_value = |outer: ColRef, inner: ColId| -> Option<Value> {
        match rows[outer.table].value(outer.col) {
            Value::Option(None) => None,
            Value::Option(Some(v)) => key_value(table, inner, &v),
            v => key_value(table, inner, &v),
        }
    };
    Ok(match access {
        JoinAccess::Scan => table.iter().map(|r| r.id()).collect(),
        JoinAccess::Unique { constraint, outer } => {
            let columns = &table.schema().unique[constraint].columns;
            let Some(value) = outer_value(outer, columns[0]) else { return Ok(Vec::new()) };
            let key = table.key_from_values(columns, &[value]).map_err(engine_error)?;
            table.find_unique(constraint, &key).into_iter().collect()
        }
        JoinAccess::Point { index, outer } => {
            let columns = &table.schema().indexes[index].columns;
            let Some(value) = outer_value(outer, columns[0]) else { return Ok(Vec::new()) };
            let key = table.key_from_values(&columns[..1], &[value]).map_err(engine_error)?;
            table.index_prefix(index, &key).collect()
        }
    })
}

fn engine_error(e: tickdb_engine::Error) -> SqlError {
    SqlError::new(ErrorKind::TypeMismatch, e.to_string(), None)
}

/// A value as column `col` of `table` holds it: of its type (another width of integer
/// or float converted), wrapped if `col` is an option. `None` if no value of the
/// column's type equals it.
pub(crate) fn key_value(table: &Table, col: ColId, value: &Value) -> Option<Value> {
    match &table.schema().columns[col.index()].ty {
        ValueType::Option(inner) => Some(Value::Option(Some(Box::new(cast(value, inner)?)))),
        ty => cast(value, ty),
    }
}

/// A value as a number of another width, if exactly one.
fn cast(value: &Value, ty: &ValueType) -> Option<Value> {
    if let Some(n) = integer(value) {
        return Some(match ty {
            ValueType::U8 => Value::U8(n.try_into().ok()?),
            ValueType::U16 => Value::U16(n.try_into().ok()?),
            ValueType::U32 => Value::U32(n.try_into().ok()?),
            ValueType::U64 => Value::U64(n.try_into().ok()?),
            ValueType::U128 => Value::U128(n.try_into().ok()?),
            ValueType::I8 => Value::I8(n.try_into().ok()?),
            ValueType::I16 => Value::I16(n.try_into().ok()?),
            ValueType::I32 => Value::I32(n.try_into().ok()?),
            ValueType::I64 => Value::I64(n.try_into().ok()?),
            ValueType::I128 => Value::I128(n),
            _ => return None,
        });
    }
    match (value, ty) {
        (Value::F32(f), ValueType::F64) => Some(Value::F64(f64::from(*f))),
        (Value::F64(f), ValueType::F32) => {
            let narrow = *f as f32;
            (f64::from(narrow).to_bits() == f.to_bits()).then_some(Value::F32(narrow))
        }
        // A u128 past every i128 equals no value of another integer type.
        (Value::U128(_), ty) if *ty != ValueType::U128 => None,
        _ => Some(value.clone()),
    }
}

/// An integer value, widened; `None` for anything else (and past `i128`).
fn integer(value: &Value) -> Option<i128> {
    Some(match value {
        Value::U8(n) => (*n).into(),
        Value::U16(n) => (*n).into(),
        Value::U32(n) => (*n).into(),
        Value::U64(n) => (*n).into(),
        Value::U128(n) => i128::try_from(*n).ok()?,
        Value::I8(n) => (*n).into(),
        Value::I16(n) => (*n).into(),
        Value::I32(n) => (*n).into(),
        Value::I64(n) => (*n).into(),
        Value::I128(n) => *n,
        _ => return None,
    })
}

/// Two column values in order: integers of any width by value, floats of either
/// width by value (in `total_cmp` order), anything else of one type as itself.
pub(crate) fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::F32(x), Value::F64(y)) => f64::from(*x).total_cmp(y),
        (Value::F64(x), Value::F32(y)) => x.total_cmp(&f64::from(*y)),
        _ => match (integer(a), integer(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            // A u128 past i128 is above every value that fits.
            (None, Some(_)) if matches!(a, Value::U128(_)) => Ordering::Greater,
            (Some(_), None) if matches!(b, Value::U128(_)) => Ordering::Less,
            _ => a.cmp(b),
        },
    }
}

fn key(table: &Table, columns: &[ColId], value: &Value) -> Result<KeyBytes, SqlError> {
    let value = key_value(table, columns[0], value).expect("a literal of the column's type");
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
            // Bounds on the first column are key prefixes, as the index reads them.
            let bound = |b: &Bound<Value>| -> Result<Bound<KeyBytes>, SqlError> {
                Ok(match b {
                    Bound::Included(v) => Bound::Included(key(table, columns, v)?),
                    Bound::Excluded(v) => Bound::Excluded(key(table, columns, v)?),
                    Bound::Unbounded => Bound::Unbounded,
                })
            };
            let (lower, upper) = (bound(lower)?, bound(upper)?);
            let ids: Vec<RowId> = table
                .index_range(*index, lower.as_ref().map(|k| &k[..]), upper.as_ref().map(|k| &k[..]))
                .collect();
            Box::new(ids.into_iter())
        }
        Access::Grid { index, cells, bounds } => {
            // Every combination of cells, one index prefix each; of the rows filed
            // there, those within the window's bounds (read straight from the columns,
            // in the order values compare in).
            let columns = &table.schema().indexes[*index].columns;
            let within = |id: &RowId| {
                table.get(*id).is_some_and(|row| {
                    columns.iter().zip(bounds).all(|(col, (lo, hi))| {
                        let v = stored_number(&table.schema().columns[col.index()].ty, row.stored(*col));
                        crate::aoi::within((*lo, *hi), v)
                    })
                })
            };
            if cells.iter().any(|(lo, hi)| lo > hi) {
                return Ok(Box::new(std::iter::empty())); // an empty window
            }
            let mut ids = Vec::new();
            let mut at: Vec<i64> = cells.iter().map(|(lo, _)| *lo).collect();
            'cells: loop {
                ids.extend(table.index_prefix(*index, &grid_key(&at)).filter(within));
                for d in (0..at.len()).rev() {
                    if at[d] < cells[d].1 {
                        at[d] += 1;
                        continue 'cells;
                    }
                    at[d] = cells[d].0;
                }
                break;
            }
            Box::new(ids.into_iter())
        }
    })
}

/// Where a condition reads column values: live rows of the query's tables, or the
/// decoded values of one row (a subscription checking a changed row).
pub(crate) trait RowSource {
    fn value(&self, c: ColRef) -> Value;
}

impl RowSource for [RowRef<'_>] {
    fn value(&self, c: ColRef) -> Value {
        self[c.table].value(c.col)
    }
}

/// One table's row, decoded: its column values in order.
pub(crate) struct Decoded<'a>(pub(crate) &'a [Value]);

impl RowSource for Decoded<'_> {
    fn value(&self, c: ColRef) -> Value {
        self.0[c.col.index()].clone()
    }
}

/// A column's value for comparison: `None` for a NULL option.
fn operand<R: RowSource + ?Sized>(rows: &R, c: ColRef) -> Option<Value> {
    match rows.value(c) {
        Value::Option(inner) => inner.map(|v| *v),
        v => Some(v),
    }
}

/// Three-valued: `None` is unknown (a NULL was compared).
pub(crate) fn eval<R: RowSource + ?Sized>(pred: &Pred, rows: &R) -> Option<bool> {
    match pred {
        Pred::Cmp { col, op, value } => operand(rows, *col).map(|v| op.holds(v.cmp(value))),
        Pred::Cols { left, op, right } => {
            let (l, r) = (operand(rows, *left)?, operand(rows, *right)?);
            Some(op.holds(compare(&l, &r)))
        }
        Pred::In { col, values, negated } => {
            operand(rows, *col).map(|v| values.binary_search(&v).is_ok() != *negated)
        }
        Pred::Between { col, low, high, negated } => {
            operand(rows, *col).map(|v| (v >= *low && v <= *high) != *negated)
        }
        Pred::IsNull { col, negated } => Some((rows.value(*col) == Value::Option(None)) != *negated),
        Pred::Const(b) => Some(*b),
        Pred::Not(inner) => eval(inner, rows).map(|b| !b),
        Pred::And(parts) => {
            let mut result = Some(true);
            for part in parts {
                match eval(part, rows) {
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
                match eval(part, rows) {
                    Some(true) => return Some(true),
                    None => result = None,
                    Some(false) => {}
                }
            }
            result
        }
    }
}

//! Subscriptions over joins, returning the rows of one table (a semijoin):
//! `SELECT p.* FROM player p JOIN member m ON p.id = m.player_id WHERE m.guild = 7`.
//!
//! A tick's delta is computed from its changes and indexed lookups alone. With `T` a
//! table before the tick, `T'` after it, and `ΔT = T' - T` its changes as signed rows
//! (an update is its old row removed and its new row added), the join's change is
//!
//! ```text
//! Δ(T1 ⋈ … ⋈ Tn) = Σi  T1' ⋈ … ⋈ T(i-1)' ⋈ ΔTi ⋈ T(i+1) ⋈ … ⋈ Tn
//! ```
//!
//! so each changed row of each table is joined, through the indexes on the join
//! columns, with the tables before it as they are now and the tables after it as they
//! were. A table as it was is read from the table as it is, less the rows the tick
//! added, plus the rows it removed. Results are multisets, as in SQL: a player in two
//! matching rows of `member` is in the result twice. Rows of the result table that
//! leave and come back under the same primary key in one tick are updates.

use std::borrow::Cow;
use std::collections::HashMap;

use tickdb_engine::{Database, TableChanges, TableId};
use tickdb_wasm_abi::{ColId, TableSchema, Value, ValueType};

use crate::bind::{CmpOp, ColRef, Pred};
use crate::error::{ErrorKind, SqlError};
use crate::exec::{RowSource, eval};
use crate::plan::conjuncts;
use crate::subscribe::Delta;

/// How a table is looked up by the value of one of its columns.
#[derive(Debug, Clone, Copy)]
enum Lookup {
    Unique(usize),
    Index(usize),
}

/// One step of a join from a changed row: rows of `table` whose column `col` equals
/// the value of `from` in a table already bound, then the conditions that can now be
/// checked.
#[derive(Debug, Clone)]
struct Step {
    table: usize,
    col: ColId,
    from: ColRef,
    lookup: Lookup,
    checks: Vec<usize>,
}

/// A join subscription's plan: from a changed row of each table, how to reach the rest.
#[derive(Debug, Clone)]
pub(crate) struct JoinPlan {
    tables: Vec<TableId>,
    row_types: Vec<ValueType>,
    /// The table whose rows are returned.
    result: usize,
    conditions: Vec<Pred>,
    /// Per starting table: the conditions on it alone, then the steps to the others.
    starts: Vec<(Vec<usize>, Vec<Step>)>,
    /// Per table, the columns it is looked up by.
    lookup_columns: Vec<Vec<ColId>>,
    /// The result table's primary key columns, to pair rows that leave and come back.
    primary_key: Option<Vec<ColId>>,
}

fn lookup_on(schema: &TableSchema, col: ColId) -> Option<Lookup> {
    if let Some(u) = schema.unique.iter().position(|u| u.columns[..] == [col]) {
        return Some(Lookup::Unique(u));
    }
    crate::plan::btree_on(schema, col).map(Lookup::Index)
}

/// Bit `k` set for each table `k` the condition reads.
fn tables_read(pred: &Pred) -> u32 {
    match pred {
        Pred::Cmp { col, .. }
        | Pred::In { col, .. }
        | Pred::Between { col, .. }
        | Pred::IsNull { col, .. } => 1 << col.table,
        Pred::Cols { left, right, .. } => (1 << left.table) | (1 << right.table),
        Pred::And(parts) | Pred::Or(parts) => parts.iter().map(tables_read).fold(0, |a, b| a | b),
        Pred::Not(inner) => tables_read(inner),
        Pred::Const(_) => 0,
    }
}

impl JoinPlan {
    pub(crate) fn new(
        db: &Database,
        tables: &[TableId],
        result: usize,
        filter: Option<&Pred>,
    ) -> Result<JoinPlan, SqlError> {
        if tables.len() > crate::visibility::TABLES_WITH_RULES_MAX {
            let why =
                format!("a subscription joins at most {} tables", crate::visibility::TABLES_WITH_RULES_MAX);
            return Err(SqlError::new(ErrorKind::TooLarge, why, None));
        }
        let schemas: Vec<&TableSchema> = tables.iter().map(|&t| &**db.table(t).schema()).collect();
        let name =
            |c: ColRef| format!("{}.{}", schemas[c.table].name, schemas[c.table].columns[c.col.index()].name);
        let conditions: Vec<Pred> = filter.map(conjuncts).unwrap_or_default().into_iter().cloned().collect();
        // The join's edges: equalities between columns of two tables, indexed on both sides.
        let mut edges = Vec::new();
        for c in &conditions {
            let Pred::Cols { left, op: CmpOp::Eq, right } = *c else { continue };
            if left.table == right.table {
                continue;
            }
            for side in [left, right] {
                if lookup_on(schemas[side.table], side.col).is_none() {
                    let why = format!(
                        "subscriptions join on indexed columns; `{}` has no unique constraint or index starting with it",
                        name(side)
                    );
                    return Err(SqlError::new(ErrorKind::Unsupported, why, None));
                }
            }
            edges.push((left, right));
        }
        let masks: Vec<u32> = conditions.iter().map(tables_read).collect();
        let mut starts = Vec::with_capacity(tables.len());
        for start in 0..tables.len() {
            let mut bound = 1u32 << start;
            // Conditions are as many as the query has; tables at most 32 (a bit each).
            let ready = |bound: u32, done: &mut Vec<bool>| -> Vec<usize> {
                let now: Vec<usize> =
                    (0..masks.len()).filter(|&i| !done[i] && masks[i] & !bound == 0).collect();
                now.iter().for_each(|&i| done[i] = true);
                now
            };
            let mut done = vec![false; masks.len()];
            let first_checks = ready(bound, &mut done);
            let mut steps = Vec::new();
            while bound.count_ones() < tables.len() as u32 {
                let next =
                    edges.iter().find_map(|&(a, b)| match (bound >> a.table & 1, bound >> b.table & 1) {
                        (1, 0) => Some((b, a)),
                        (0, 1) => Some((a, b)),
                        _ => None,
                    });
                let Some((to, from)) = next else {
                    let why = "subscriptions join every table by an equality between indexed columns \
                               (a JOIN ... ON a.x = b.y)";
                    return Err(SqlError::new(ErrorKind::Unsupported, why, None));
                };
                bound |= 1 << to.table;
                let lookup = lookup_on(schemas[to.table], to.col).expect("checked above");
                steps.push(Step {
                    table: to.table,
                    col: to.col,
                    from,
                    lookup,
                    checks: ready(bound, &mut done),
                });
            }
            starts.push((first_checks, steps));
        }
        let mut lookup_columns = vec![Vec::new(); tables.len()];
        for (a, b) in edges {
            for side in [a, b] {
                if !lookup_columns[side.table].contains(&side.col) {
                    lookup_columns[side.table].push(side.col);
                }
            }
        }
        let schema = schemas[result];
        let primary_key = schema.primary_key.map(|pk| schema.unique[pk].columns.to_vec());
        let row_types = schemas.iter().map(|s| crate::subscribe::row_type(s)).collect();
        Ok(JoinPlan {
            tables: tables.to_vec(),
            row_types,
            result,
            conditions,
            starts,
            lookup_columns,
            primary_key,
        })
    }

    /// The position of the table whose rows are returned.
    pub(crate) fn result(&self) -> usize {
        self.result
    }

    /// The tables the join reads.
    pub(crate) fn tables(&self) -> &[TableId] {
        &self.tables
    }

    /// The result's delta for one tick; fails past `rows_max` rows read (a join whose
    /// rows match many rows each can cost far more than the changes that set it off).
    pub(crate) fn delta(
        &self,
        db: &Database,
        changes: &[TableChanges],
        rows_max: u64,
    ) -> Result<Delta<'static>, SqlError> {
        let before: Vec<Option<Before<'_>>> = (0..self.tables.len())
            .map(|k| {
                let changed = changes.iter().find(|c| c.table == self.tables[k])?;
                Some(Before::new(changed, &self.row_types[k], &self.lookup_columns[k]))
            })
            .collect();
        if before.iter().all(Option::is_none) {
            return Ok(Delta::default());
        }
        let mut budget = rows_max;
        let mut counts: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut binding: Vec<Option<Row>> = vec![None; self.tables.len()];
        for (start, changed) in before.iter().enumerate() {
            let Some(changed) = changed else { continue };
            for (sign, bytes, values) in changed.signed_rows() {
                binding[start] = Some(Row { bytes: bytes.to_vec(), values });
                let (checks, _) = &self.starts[start];
                if self.holds(checks, &binding) {
                    self.extend(db, &before, start, 0, &mut binding, sign, &mut counts, &mut budget)?;
                }
            }
            binding[start] = None;
        }
        Ok(self.consolidate(counts))
    }

    /// How many times a row of the result table is in the result now: the number of
    /// combinations of the other tables' rows it joins with.
    /// Fails past `rows_max` rows read.
    pub(crate) fn count_of(&self, db: &Database, row: &[u8], rows_max: u64) -> Result<i64, SqlError> {
        let mut binding: Vec<Option<Row>> = vec![None; self.tables.len()];
        let values = decoded(&self.row_types[self.result], row);
        binding[self.result] = Some(Row { bytes: row.to_vec(), values });
        let (checks, _) = &self.starts[self.result];
        if !self.holds(checks, &binding) {
            return Ok(0);
        }
        let now: Vec<Option<Before<'_>>> = (0..self.tables.len()).map(|_| None).collect();
        let (mut counts, mut budget) = (HashMap::new(), rows_max);
        self.extend(db, &now, self.result, 0, &mut binding, 1, &mut counts, &mut budget)?;
        Ok(counts.values().sum())
    }

    fn holds(&self, checks: &[usize], binding: &[Option<Row>]) -> bool {
        checks.iter().all(|&c| eval(&self.conditions[c], &Binding(binding)) == Some(true))
    }

    /// Binds the tables after `step` of the join from `start`, counting each complete
    /// combination's result row with `sign`.
    #[allow(clippy::too_many_arguments)]
    fn extend(
        &self,
        db: &Database,
        before: &[Option<Before<'_>>],
        start: usize,
        step: usize,
        binding: &mut Vec<Option<Row>>,
        sign: i64,
        counts: &mut HashMap<Vec<u8>, i64>,
        budget: &mut u64,
    ) -> Result<(), SqlError> {
        let steps = &self.starts[start].1;
        let Some(s) = steps.get(step) else {
            let row = binding[self.result].as_ref().expect("every table is bound");
            *counts.entry(row.bytes.clone()).or_insert(0) += sign;
            return Ok(());
        };
        // The value as the looked-up column holds it (an option or not); NULL joins nothing.
        let value = match &binding[s.from.table].as_ref().expect("bound before").values[s.from.col.index()] {
            Value::Option(None) => return Ok(()),
            Value::Option(Some(v)) => (**v).clone(),
            v => v.clone(),
        };
        let Some(value) = crate::exec::key_value(db.table(self.tables[s.table]), s.col, &value) else {
            return Ok(());
        };
        // Tables before the starting one are read as they are now, after it as they were.
        let was = if s.table > start { before[s.table].as_ref() } else { None };
        let rows = self.rows_with(db, s, &value, was);
        *budget = budget.checked_sub(rows.len() as u64).ok_or_else(|| {
            let why = "the join reads more rows for one tick's changes than its budget allows; join on \
                       columns with fewer matches, or narrow it";
            SqlError::new(ErrorKind::Budget, why, None)
        })?;
        for row in rows {
            binding[s.table] = Some(row);
            if self.holds(&s.checks, binding) {
                self.extend(db, before, start, step + 1, binding, sign, counts, budget)?;
            }
        }
        binding[s.table] = None;
        Ok(())
    }

    /// The rows of the step's table whose column holds `value`: now, or, given the
    /// table's changes, before the tick.
    fn rows_with(&self, db: &Database, s: &Step, value: &Value, was: Option<&Before<'_>>) -> Vec<Row> {
        let table = db.table(self.tables[s.table]);
        let Ok(key) = table.key_from_values(&[s.col], std::slice::from_ref(value)) else { return Vec::new() };
        let ids: Vec<_> = match s.lookup {
            Lookup::Unique(constraint) => table.find_unique(constraint, &key).into_iter().collect(),
            Lookup::Index(index) => table.index_prefix(index, &key).collect(),
        };
        let mut rows: Vec<Row> = ids
            .into_iter()
            .filter_map(|id| table.get(id))
            .map(|r| Row { bytes: r.to_bytes(), values: r.to_values() })
            .collect();
        if let Some(was) = was {
            // Less the rows the tick added (each copy once), plus those it removed.
            let mut skipped: HashMap<&[u8], usize> = HashMap::new();
            rows.retain(|r| {
                let Some((&key, &added)) = was.added.get_key_value(&r.bytes[..]) else { return true };
                let n = skipped.entry(key).or_insert(0);
                if *n < added {
                    *n += 1;
                    false
                } else {
                    true
                }
            });
            let removed = was.removed_by.get(&s.col).and_then(|by| by.get(value)).into_iter().flatten();
            rows.extend(removed.map(|&i| {
                let (bytes, values) = &was.removed[i];
                Row { bytes: bytes.to_vec(), values: values.clone() }
            }));
        }
        rows
    }

    /// Signed counts of result rows as inserts and deletes, and a row that left and
    /// one that came back under the same primary key as an update.
    fn consolidate(&self, counts: HashMap<Vec<u8>, i64>) -> Delta<'static> {
        let (mut inserts, mut deletes) = (Vec::new(), Vec::new());
        for (row, n) in counts {
            match n {
                0 => {}
                n if n > 0 => (0..n).for_each(|_| inserts.push(row.clone())),
                n => (0..-n).for_each(|_| deletes.push(row.clone())),
            }
        }
        let owned = |rows: Vec<Vec<u8>>| rows.into_iter().map(Cow::Owned).collect();
        let Some(pk) = &self.primary_key else {
            return Delta { inserts: owned(inserts), deletes: owned(deletes), updates: Vec::new() };
        };
        let row_type = &self.row_types[self.result];
        let key_of = |row: &[u8]| -> Option<Vec<Value>> {
            let values = crate::subscribe::row_values(row_type, row)?;
            Some(pk.iter().map(|c| values[c.index()].clone()).collect())
        };
        let mut delta = Delta::default();
        let mut left: HashMap<Vec<Value>, Vec<Vec<u8>>> = HashMap::new();
        for row in deletes {
            match key_of(&row) {
                Some(key) => left.entry(key).or_default().push(row),
                None => delta.deletes.push(Cow::Owned(row)),
            }
        }
        for row in inserts {
            let old = key_of(&row).and_then(|key| left.get_mut(&key)).and_then(Vec::pop);
            match old {
                Some(old) => delta.updates.push((Cow::Owned(old), Cow::Owned(row))),
                None => delta.inserts.push(Cow::Owned(row)),
            }
        }
        delta.deletes.extend(left.into_values().flatten().map(Cow::Owned));
        delta
    }
}

/// A row of one of the join's tables: its encoding and its values.
#[derive(Debug, Clone)]
struct Row {
    bytes: Vec<u8>,
    values: Vec<Value>,
}

/// The rows bound so far, one per table, as conditions read them.
struct Binding<'b>(&'b [Option<Row>]);

impl RowSource for Binding<'_> {
    fn value(&self, c: ColRef) -> Value {
        self.0[c.table].as_ref().expect("conditions are checked once their tables are bound").values
            [c.col.index()]
        .clone()
    }
}

/// What a tick changed in one table, to read the table as it was.
struct Before<'c> {
    changes: &'c TableChanges,
    /// Rows the tick added (inserted, or new versions), with how many copies.
    added: HashMap<&'c [u8], usize>,
    /// Rows the tick removed (deleted, or old versions), decoded.
    removed: Vec<(&'c [u8], Vec<Value>)>,
    /// The removed rows by the value of each column the table is looked up by.
    removed_by: HashMap<ColId, HashMap<Value, Vec<usize>>>,
    row_type: &'c ValueType,
}

impl<'c> Before<'c> {
    fn new(changes: &'c TableChanges, row_type: &'c ValueType, lookup_columns: &[ColId]) -> Before<'c> {
        let mut added: HashMap<&[u8], usize> = HashMap::new();
        for row in changes.inserts.iter().chain(changes.updates_new.iter()) {
            *added.entry(row).or_insert(0) += 1;
        }
        let removed: Vec<(&[u8], Vec<Value>)> = changes
            .deletes
            .iter()
            .chain(changes.updates_old.iter())
            .map(|row| (row, decoded(row_type, row)))
            .collect();
        let mut removed_by: HashMap<ColId, HashMap<Value, Vec<usize>>> = HashMap::new();
        for &col in lookup_columns {
            let by = removed_by.entry(col).or_default();
            for (i, (_, values)) in removed.iter().enumerate() {
                by.entry(values[col.index()].clone()).or_default().push(i);
            }
        }
        Before { changes, added, removed, removed_by, row_type }
    }

    /// The tick's changes as signed rows: -1 for each removed, +1 for each added.
    fn signed_rows(&self) -> impl Iterator<Item = (i64, &'c [u8], Vec<Value>)> + '_ {
        let removed = self.removed.iter().map(|(bytes, values)| (-1, *bytes, values.clone()));
        let added = self.changes.inserts.iter().chain(self.changes.updates_new.iter());
        removed.chain(added.map(|row| (1, row, decoded(self.row_type, row))))
    }
}

/// A row of the table's own encoding, decoded.
fn decoded(row_type: &ValueType, row: &[u8]) -> Vec<Value> {
    // Rows in a changeset are the table's own, always valid.
    crate::subscribe::row_values(row_type, row).expect("a changed row decodes as its table's row")
}

//! Planning: which rows a query has to look at. For the first table: an equality on a
//! unique column reads one row; an equality or range on the first column of a btree
//! index reads that part of the index; bounds on every column of a grid index read the
//! cells of that window; anything else scans the table. For each joined
//! table: an equality with an earlier table's column looks the matching rows up through
//! a unique or btree index on the joined column; without one, the table is scanned for
//! each row before it. Every condition is still checked, as soon as the rows it reads
//! are chosen, so the plan only decides how much is read.

use std::ops::Bound;

use tickdb_wasm_abi::{ColId, IndexKind, TableSchema, Value, grid_cell};

use crate::bind::{CmpOp, ColRef, Pred};

/// How a query reads its first table.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// Every row.
    Scan,
    /// The one row holding `key` in unique constraint `constraint`.
    Unique { constraint: usize, key: Value },
    /// The rows whose first column of btree index `index` lies in this range.
    Range { index: usize, lower: Bound<Value>, upper: Bound<Value> },
    /// The rows filed in grid index `index` under these cells: on each of its
    /// columns, a range of cells (both ends included). `bounds` are the window's
    /// bounds on those columns, which every matching row is within.
    Grid { index: usize, cells: Vec<(i64, i64)>, bounds: Vec<(f64, f64)> },
}

/// How a query reads a joined table, for each combination of rows before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinAccess {
    /// Every row.
    Scan,
    /// The row whose unique constraint `constraint` holds the value of `outer`.
    Unique { constraint: usize, outer: ColRef },
    /// The rows whose first column of btree index `index` equals the value of `outer`.
    Point { index: usize, outer: ColRef },
}

/// How a query reads each of its tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub first: Access,
    pub joins: Vec<JoinAccess>,
}

/// The conditions every matching row meets: the top-level `AND`s.
pub(crate) fn conjuncts(pred: &Pred) -> Vec<&Pred> {
    match pred {
        Pred::And(parts) => parts.iter().flat_map(conjuncts).collect(),
        other => vec![other],
    }
}

fn unique_on(schema: &TableSchema, col: ColId) -> Option<usize> {
    schema.unique.iter().position(|u| u.columns[..] == [col])
}

/// A btree index whose first column is `col`.
pub(crate) fn btree_on(schema: &TableSchema, col: ColId) -> Option<usize> {
    schema.indexes.iter().position(|i| i.kind == IndexKind::BTree && i.columns.first() == Some(&col))
}

/// The most grid cells one query reads; a wider window reads another way.
pub const GRID_CELLS_MAX: u64 = 4096;

/// The best grid index for the window the conditions bound on its columns: the one
/// reading the fewest cells, and the cell range on each of its columns.
fn grid_access(schema: &TableSchema, conditions: &[&Pred]) -> Option<Access> {
    let window = crate::aoi::bounds(conditions, 0);
    let mut best: Option<(u64, Access)> = None;
    for (index, grid) in schema.indexes.iter().enumerate() {
        let IndexKind::Grid { cell_log2 } = grid.kind else { continue };
        // Each of the grid's columns bounded on both sides, finitely.
        let bounds: Option<Vec<(f64, f64)>> = grid
            .columns
            .iter()
            .map(|col| match window.by_column.get(col) {
                Some(&(Some(lo), Some(hi))) if lo.is_finite() && hi.is_finite() => Some((lo, hi)),
                _ => None,
            })
            .collect();
        let Some(bounds) = bounds else { continue };
        let cells: Vec<(i64, i64)> =
            bounds.iter().map(|&(lo, hi)| (grid_cell(lo, cell_log2), grid_cell(hi, cell_log2))).collect();
        // Cells read: none if a side is empty (the window holds nothing); wide in i128,
        // since cells saturate at the ends of i64.
        let count = cells.iter().try_fold(1u64, |n, (a, b)| {
            let span = (i128::from(*b) - i128::from(*a) + 1).max(0);
            n.checked_mul(u64::try_from(span).ok()?)
        });
        match count {
            Some(n) if n <= GRID_CELLS_MAX && best.as_ref().is_none_or(|(m, _)| n < *m) => {
                best = Some((n, Access::Grid { index, cells, bounds }))
            }
            _ => {}
        }
    }
    best.map(|(_, access)| access)
}

pub(crate) fn plan(schemas: &[&TableSchema], filter: Option<&Pred>) -> Plan {
    let conditions = filter.map(conjuncts).unwrap_or_default();
    let first = first_access(schemas[0], &conditions);
    let joins = (1..schemas.len()).map(|k| join_access(schemas[k], k, &conditions)).collect();
    Plan { first, joins }
}

fn first_access(schema: &TableSchema, conditions: &[&Pred]) -> Access {
    let mut best = grid_access(schema, conditions).unwrap_or(Access::Scan);
    for condition in conditions {
        let candidate = match condition {
            Pred::Cmp { col: ColRef { table: 0, col }, op: CmpOp::Eq, value } => {
                match (unique_on(schema, *col), btree_on(schema, *col)) {
                    (Some(constraint), _) => Access::Unique { constraint, key: value.clone() },
                    (None, Some(index)) => {
                        let (lower, upper) = (Bound::Included(value.clone()), Bound::Included(value.clone()));
                        Access::Range { index, lower, upper }
                    }
                    _ => continue,
                }
            }
            Pred::Cmp { col: ColRef { table: 0, col }, op, value } if *op != CmpOp::Ne => {
                let Some(index) = btree_on(schema, *col) else { continue };
                let (lower, upper) = match op {
                    CmpOp::Lt => (Bound::Unbounded, Bound::Excluded(value.clone())),
                    CmpOp::Le => (Bound::Unbounded, Bound::Included(value.clone())),
                    CmpOp::Gt => (Bound::Excluded(value.clone()), Bound::Unbounded),
                    _ => (Bound::Included(value.clone()), Bound::Unbounded),
                };
                Access::Range { index, lower, upper }
            }
            Pred::Between { col: ColRef { table: 0, col }, low, high, negated: false } => {
                let Some(index) = btree_on(schema, *col) else { continue };
                Access::Range {
                    index,
                    lower: Bound::Included(low.clone()),
                    upper: Bound::Included(high.clone()),
                }
            }
            _ => continue,
        };
        if rank(&candidate) > rank(&best) {
            best = candidate;
        }
    }
    best
}

fn join_access(schema: &TableSchema, k: usize, conditions: &[&Pred]) -> JoinAccess {
    let mut best = JoinAccess::Scan;
    for condition in conditions {
        let Pred::Cols { left, op: CmpOp::Eq, right } = condition else { continue };
        let (inner, outer) = match (left.table == k, right.table == k) {
            (true, false) if right.table < k => (*left, *right),
            (false, true) if left.table < k => (*right, *left),
            _ => continue,
        };
        match (unique_on(schema, inner.col), btree_on(schema, inner.col)) {
            (Some(constraint), _) => return JoinAccess::Unique { constraint, outer },
            (None, Some(index)) => best = JoinAccess::Point { index, outer },
            _ => {}
        }
    }
    best
}

/// How good an access path is: one row, then a point in an index, then a window of
/// a grid, then a range.
fn rank(access: &Access) -> u8 {
    match access {
        Access::Scan => 0,
        Access::Range { lower: Bound::Included(l), upper: Bound::Included(u), .. } if l == u => 3,
        Access::Range { .. } => 1,
        Access::Grid { .. } => 2,
        Access::Unique { .. } => 4,
    }
}

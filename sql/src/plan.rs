//! Planning: which rows a query has to look at. For the first table: an equality on a
//! unique column reads one row; an equality or range on the first column of a btree
//! index reads that part of the index; anything else scans the table. For each joined
//! table: an equality with an earlier table's column looks the matching rows up through
//! a unique or btree index on the joined column; without one, the table is scanned for
//! each row before it. Every condition is still checked, as soon as the rows it reads
//! are chosen, so the plan only decides how much is read.

use std::ops::Bound;

use tickdb_wasm_abi::{ColId, TableSchema, Value};

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

fn btree_on(schema: &TableSchema, col: ColId) -> Option<usize> {
    schema.indexes.iter().position(|i| i.columns.first() == Some(&col))
}

pub(crate) fn plan(schemas: &[&TableSchema], filter: Option<&Pred>) -> Plan {
    let conditions = filter.map(conjuncts).unwrap_or_default();
    let first = first_access(schemas[0], &conditions);
    let joins = (1..schemas.len()).map(|k| join_access(schemas[k], k, &conditions)).collect();
    Plan { first, joins }
}

fn first_access(schema: &TableSchema, conditions: &[&Pred]) -> Access {
    let mut best = Access::Scan;
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

/// How good an access path is: one row, then a point in an index, then a range.
fn rank(access: &Access) -> u8 {
    match access {
        Access::Scan => 0,
        Access::Range { lower: Bound::Included(l), upper: Bound::Included(u), .. } if l == u => 2,
        Access::Range { .. } => 1,
        Access::Unique { .. } => 3,
    }
}

//! Planning: which rows a query has to look at. An equality on a unique column reads
//! one row; an equality or range on the first column of a btree index reads that part
//! of the index; anything else scans the table. The whole condition is still checked
//! on every row read, so the plan only decides how much is read.

use std::ops::Bound;

use tickdb_wasm_abi::{TableSchema, Value};

use crate::bind::{CmpOp, Pred};

/// How a query reads its table.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// Every row.
    Scan,
    /// The one row holding `key` in unique constraint `constraint`.
    Unique { constraint: usize, key: Value },
    /// The rows whose first column of btree index `index` lies in this range.
    Range { index: usize, lower: Bound<Value>, upper: Bound<Value> },
}

/// The conditions every matching row meets: the top-level `AND`s.
fn conjuncts(pred: &Pred) -> Vec<&Pred> {
    match pred {
        Pred::And(parts) => parts.iter().flat_map(conjuncts).collect(),
        other => vec![other],
    }
}

pub(crate) fn access(schema: &TableSchema, filter: Option<&Pred>) -> Access {
    let Some(filter) = filter else {
        return Access::Scan;
    };
    let conditions = conjuncts(filter);
    let unique = |col| schema.unique.iter().position(|u| u.columns[..] == [col]);
    let btree = |col| schema.indexes.iter().position(|i| i.columns.first() == Some(&col));
    let mut best = Access::Scan;
    for condition in conditions {
        let candidate = match condition {
            Pred::Cmp { col, op: CmpOp::Eq, value } => match (unique(*col), btree(*col)) {
                (Some(constraint), _) => Access::Unique { constraint, key: value.clone() },
                (None, Some(index)) => {
                    let (lower, upper) = (Bound::Included(value.clone()), Bound::Included(value.clone()));
                    Access::Range { index, lower, upper }
                }
                _ => continue,
            },
            Pred::Cmp { col, op, value } if *op != CmpOp::Ne => {
                let Some(index) = btree(*col) else { continue };
                let (lower, upper) = match op {
                    CmpOp::Lt => (Bound::Unbounded, Bound::Excluded(value.clone())),
                    CmpOp::Le => (Bound::Unbounded, Bound::Included(value.clone())),
                    CmpOp::Gt => (Bound::Excluded(value.clone()), Bound::Unbounded),
                    _ => (Bound::Included(value.clone()), Bound::Unbounded),
                };
                Access::Range { index, lower, upper }
            }
            Pred::Between { col, low, high, negated: false } => {
                let Some(index) = btree(*col) else { continue };
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

/// How good an access path is: one row, then a point in an index, then a range.
fn rank(access: &Access) -> u8 {
    match access {
        Access::Scan => 0,
        Access::Range { lower: Bound::Included(l), upper: Bound::Included(u), .. } if l == u => 2,
        Access::Range { .. } => 1,
        Access::Unique { .. } => 3,
    }
}

//! Area of interest: subscriptions that watch a window of a game world,
//! `SELECT * FROM entity WHERE x BETWEEN 10 AND 40 AND y BETWEEN 0 AND 30`, and an
//! index that finds, for a changed row, the windows holding it without testing every
//! subscription.
//!
//! The index is a hierarchy of grids. Level `k` cuts space into cells of side `2^k`
//! on each of the window's two or three columns. A window is kept at the lowest
//! level whose cells are at least as large as its widest side, so it touches at most
//! two cells per column (four in 2D, eight in 3D). A point is looked up with one cell
//! per level in use: a handful of hash lookups, as many as there are window sizes
//! apart by a factor of two. The windows found are then checked exactly.
//!
//! Coordinates are read as `f64`. The conversion keeps order, so a point inside a
//! window is never outside the window's cells; the exact check compares the values
//! themselves.

use std::collections::{BTreeMap, HashMap};

use tickdb_wasm_abi::{ColId, Value, ValueType};

use crate::bind::{CmpOp, Pred};
use crate::plan::conjuncts;
use crate::subscribe::{QueryId, column_value, fixed_position};

/// The columns of a window: two or three.
pub(crate) type Dims = Vec<ColId>;

/// Most cells one window may be filed under; a window past it (an unbounded side, or
/// one that rounding stretches) is checked for every row.
const CELLS_MAX: usize = 64;
const LEVEL_MIN: i32 = -40;
const LEVEL_MAX: i32 = 120;

/// The window a subscription's condition bounds.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    pub(crate) dims: Dims,
    pub(crate) ranges: Vec<(f64, f64)>,
    /// Whether the bounds are the whole condition, so that a row within them is in
    /// the result without checking the condition.
    pub(crate) exact: bool,
}

/// What a condition's conjuncts say about the numeric columns of one of its tables.
pub(crate) struct Bounds {
    /// Per column, the narrowest lower and upper bound (as `f64`s, in `total_cmp` order).
    pub(crate) by_column: BTreeMap<ColId, (Option<f64>, Option<f64>)>,
    /// Whether every conjunct is an inclusive bound (`=`, `>=`, `<=`, `BETWEEN`) on a
    /// numeric column of that table: then a row within the bounds meets the condition.
    pub(crate) whole: bool,
}

/// The bounds `conditions` (a condition's conjuncts) put on table `table`'s columns.
pub(crate) fn bounds(conditions: &[&Pred], table: usize) -> Bounds {
    let mut by_column: BTreeMap<ColId, (Option<f64>, Option<f64>)> = BTreeMap::new();
    let mut whole = true;
    for condition in conditions {
        let (col, low, high, inclusive) = match condition {
            Pred::Between { col, low, high, negated: false } => (col, Some(low), Some(high), true),
            Pred::Cmp { col, op, value } => match op {
                CmpOp::Eq => (col, Some(value), Some(value), true),
                CmpOp::Ge | CmpOp::Gt => (col, Some(value), None, *op == CmpOp::Ge),
                CmpOp::Le | CmpOp::Lt => (col, None, Some(value), *op == CmpOp::Le),
                CmpOp::Ne => {
                    whole = false;
                    continue;
                }
            },
            _ => {
                whole = false;
                continue;
            }
        };
        // A literal has its column's type: a number, or the column is not numeric.
        let (low, high) = (low.map(coordinate), high.map(coordinate));
        if col.table != table || low == Some(None) || high == Some(None) {
            whole = false;
            continue;
        }
        whole &= inclusive;
        let entry = by_column.entry(col.col).or_default();
        if let Some(Some(v)) = low {
            entry.0 = Some(entry.0.map_or(v, |e: f64| if v.total_cmp(&e).is_gt() { v } else { e }));
        }
        if let Some(Some(v)) = high {
            entry.1 = Some(entry.1.map_or(v, |e: f64| if v.total_cmp(&e).is_lt() { v } else { e }));
        }
    }
    Bounds { by_column, whole }
}

/// Whether `v` lies in `lo..=hi`, in the order values compare in (`total_cmp`, as for
/// float columns).
pub(crate) fn within((lo, hi): (f64, f64), v: f64) -> bool {
    lo.total_cmp(&v).is_le() && v.total_cmp(&hi).is_le()
}

/// The window a single-table condition bounds: both bounds on two or three numeric
/// columns; `None` if it bounds fewer.
pub(crate) fn window(row_type: &ValueType, filter: Option<&Pred>) -> Option<Window> {
    let ValueType::Product(row) = row_type else { return None };
    let Bounds { by_column, whole } = bounds(&conjuncts(filter?), 0);
    let bounded = by_column.len();
    let (dims, ranges): (Vec<ColId>, Vec<(f64, f64)>) = by_column
        .into_iter()
        .filter_map(|(col, b)| match b {
            (Some(lo), Some(hi)) => Some((col, (lo, hi))),
            _ => None,
        })
        .take(3)
        .unzip();
    // Wide integers round on their way to `f64`, so their bounds only narrow the search.
    let exact = whole && dims.len() == bounded && dims.iter().all(|c| exactly_f64(&row.fields[c.index()].ty));
    (dims.len() >= 2).then_some(Window { dims, ranges, exact })
}

/// Whether every value of a numeric type is exactly an `f64`.
fn exactly_f64(ty: &ValueType) -> bool {
    match ty {
        ValueType::Option(inner) => exactly_f64(inner),
        ValueType::U64 | ValueType::U128 | ValueType::I64 | ValueType::I128 => false,
        _ => true,
    }
}

/// A numeric value as an `f64`, keeping order; `None` for anything else or NULL.
pub(crate) fn coordinate(value: &Value) -> Option<f64> {
    Some(match value {
        Value::U8(v) => f64::from(*v),
        Value::U16(v) => f64::from(*v),
        Value::U32(v) => f64::from(*v),
        Value::U64(v) => *v as f64,
        Value::U128(v) => *v as f64,
        Value::I8(v) => f64::from(*v),
        Value::I16(v) => f64::from(*v),
        Value::I32(v) => f64::from(*v),
        Value::I64(v) => *v as f64,
        Value::I128(v) => *v as f64,
        Value::F32(v) => f64::from(*v),
        Value::F64(v) => *v,
        Value::Option(Some(inner)) => coordinate(inner)?,
        _ => return None,
    })
}

type Cell = (i32, [i64; 3]);
type Placed = (Vec<(f64, f64)>, Option<i32>);

/// A window as filed: its query and bounds (an unused column's bounds hold
/// everything), kept beside the id so that a lookup reads one list.
#[derive(Debug, Clone, Copy)]
struct Filed {
    id: QueryId,
    ranges: [(f64, f64); 3],
    exact: bool,
}

impl Filed {
    fn new(id: QueryId, window: &Window) -> Filed {
        let mut ranges = [(f64::NEG_INFINITY, f64::INFINITY); 3];
        ranges[..window.ranges.len()].copy_from_slice(&window.ranges);
        Filed { id, ranges, exact: window.exact }
    }

    /// In the order values compare in (`total_cmp`, as for float columns), so that an
    /// exact window decides as its condition would.
    fn holds(&self, point: &[f64; 3]) -> bool {
        self.ranges.iter().zip(point).all(|(range, v)| within(*range, *v))
    }
}

/// A point: the window columns' values, then zeros.
pub(crate) type Point = [f64; 3];

/// The windows over one table's columns, filed by cell.
#[derive(Debug)]
pub(crate) struct AoiIndex {
    row_type: ValueType,
    dims: Dims,
    /// Where each window column lies in an encoded row, if fixed.
    fixed: Vec<Option<(usize, usize, ValueType)>>,
    cells: HashMap<Cell, Vec<Filed>>,
    /// Windows in use per level.
    levels: BTreeMap<i32, usize>,
    /// Windows filed under no cell: checked for every row.
    everywhere: Vec<Filed>,
    /// Each window's bounds, and the level it is filed at (`None`: everywhere).
    windows: HashMap<QueryId, Placed>,
}

impl AoiIndex {
    /// An empty index of windows over columns `dims` of rows of `row_type`.
    pub(crate) fn new(row_type: &ValueType, dims: &[ColId]) -> AoiIndex {
        let fixed = dims.iter().map(|c| fixed_position(row_type, *c)).collect();
        AoiIndex {
            row_type: row_type.clone(),
            dims: dims.to_vec(),
            fixed,
            cells: HashMap::new(),
            levels: BTreeMap::new(),
            everywhere: Vec::new(),
            windows: HashMap::new(),
        }
    }

    pub(crate) fn row_type(&self) -> &ValueType {
        &self.row_type
    }

    /// An encoded row's point: each column read where it lies when its place is fixed,
    /// from the decoded row otherwise. `None` if a coordinate is NULL.
    pub(crate) fn point(&self, row: &[u8]) -> Option<Point> {
        let mut point = [0.0; 3];
        for (d, (col, at)) in self.dims.iter().zip(&self.fixed).enumerate() {
            point[d] = coordinate(&column_value(&self.row_type, *col, at.as_ref(), row)?)?;
        }
        Some(point)
    }
    pub(crate) fn len(&self) -> usize {
        self.windows.len()
    }

    pub(crate) fn insert(&mut self, id: QueryId, window: &Window) {
        let ranges = window.ranges.clone();
        let cells = level_of(&ranges).and_then(|level| Some((level, cells(level, &ranges)?)));
        let filed = Filed::new(id, window);
        let level = match cells {
            Some((level, cells)) => {
                for cell in cells {
                    self.cells.entry(cell).or_default().push(filed);
                }
                *self.levels.entry(level).or_insert(0) += 1;
                Some(level)
            }
            None => {
                self.everywhere.push(filed);
                None
            }
        };
        self.windows.insert(id, (ranges, level));
    }

    pub(crate) fn remove(&mut self, id: QueryId) {
        let Some((ranges, level)) = self.windows.remove(&id) else { return };
        let Some(level) = level else {
            self.everywhere.retain(|f| f.id != id);
            return;
        };
        for cell in cells(level, &ranges).expect("filed under these cells") {
            if let Some(ids) = self.cells.get_mut(&cell) {
                ids.retain(|f| f.id != id);
                if ids.is_empty() {
                    self.cells.remove(&cell);
                }
            }
        }
        let n = self.levels.get_mut(&level).expect("counted");
        *n -= 1;
        if *n == 0 {
            self.levels.remove(&level);
        }
    }

    /// Calls `found` with each window whose bounds hold `point`, and whether the
    /// bounds are its whole condition (if not, the caller checks the condition).
    pub(crate) fn windows_at(&self, point: &Point, mut found: impl FnMut(QueryId, bool)) {
        let mut check = |filed: &Filed| {
            if filed.holds(point) {
                found(filed.id, filed.exact);
            }
        };
        self.everywhere.iter().for_each(&mut check);
        if point.iter().any(|v| v.is_nan()) {
            return;
        }
        for &level in self.levels.keys() {
            let mut at = [0i64; 3];
            for d in 0..self.dims.len() {
                at[d] = cell_index(level, point[d]);
            }
            if let Some(ids) = self.cells.get(&(level, at)) {
                ids.iter().for_each(&mut check);
            }
        }
    }
}

/// The level whose cells are at least as wide as the window's widest side.
fn level_of(ranges: &[(f64, f64)]) -> Option<i32> {
    let widest = ranges.iter().map(|(lo, hi)| hi - lo).fold(0.0f64, f64::max);
    if !widest.is_finite() || ranges.iter().any(|(lo, hi)| !lo.is_finite() || !hi.is_finite() || lo > hi) {
        return None;
    }
    let level = if widest == 0.0 { LEVEL_MIN } else { widest.log2().ceil() as i32 };
    (level <= LEVEL_MAX).then_some(level.max(LEVEL_MIN))
}

fn cell_index(level: i32, v: f64) -> i64 {
    (v / 2f64.powi(level)).floor() as i64
}

/// The cells a window touches at `level`, or `None` past [`CELLS_MAX`].
fn cells(level: i32, ranges: &[(f64, f64)]) -> Option<Vec<Cell>> {
    let spans: Vec<(i64, i64)> =
        ranges.iter().map(|(lo, hi)| (cell_index(level, *lo), cell_index(level, *hi))).collect();
    let count = spans.iter().try_fold(1usize, |n, (a, b)| n.checked_mul(usize::try_from(b - a + 1).ok()?))?;
    if count > CELLS_MAX {
        return None;
    }
    let mut out = vec![(level, [0i64; 3])];
    for (d, (a, b)) in spans.into_iter().enumerate() {
        out = out
            .into_iter()
            .flat_map(|(l, at)| {
                (a..=b).map(move |i| {
                    let mut at = at;
                    at[d] = i;
                    (l, at)
                })
            })
            .collect();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn range() -> impl Strategy<Value = (f64, f64)> {
        prop_oneof![
            8 => (-100.0..100.0f64, 0.0..40.0f64).prop_map(|(lo, w)| (lo, lo + w)),
            1 => (-1e6..1e6f64, 0.0..1e7f64).prop_map(|(lo, w)| (lo, lo + w)),
            1 => (-5.0..5.0f64).prop_map(|v| (v, v)),
            1 => Just((f64::NEG_INFINITY, 3.0)),
        ]
    }

    proptest! {
        /// The index finds exactly the windows a brute-force check finds, as windows
        /// come and go.
        #[test]
        fn the_index_finds_every_window_holding_a_point(
            windows in proptest::collection::vec(proptest::collection::vec(range(), 3), 1..60),
            removed in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
            points in proptest::collection::vec(proptest::collection::vec(-120.0..120.0f64, 3), 1..40),
            dims in 2..=3usize,
        ) {
            let columns: Vec<ColId> = (0..dims as u16).map(ColId).collect();
            let row = ValueType::Product(tickdb_wasm_abi::ProductType::new(
                columns.iter().map(|c| (format!("c{}", c.0), ValueType::F64)),
            ));
            let mut index = AoiIndex::new(&row, &columns);
            let mut live: Vec<(QueryId, Vec<(f64, f64)>)> = Vec::new();
            for (i, w) in windows.iter().enumerate() {
                let ranges = w[..dims].to_vec();
                let window = Window { dims: columns.clone(), ranges: ranges.clone(), exact: true };
                index.insert(QueryId(i as u32), &window);
                live.push((QueryId(i as u32), ranges));
            }
            for r in removed {
                if live.is_empty() { break }
                let (id, _) = live.remove(r.index(live.len()));
                index.remove(id);
            }
            prop_assert_eq!(index.len(), live.len());
            for p in &points {
                let mut point = [0.0; 3];
                point[..dims].copy_from_slice(&p[..dims]);
                let p = &p[..dims];
                let mut found = Vec::new();
                index.windows_at(&point, |id, _| found.push(id));
                found.sort();
                let mut expected: Vec<QueryId> = live
                    .iter()
                    .filter(|(_, w)| w.iter().zip(p).all(|((lo, hi), v)| lo <= v && v <= hi))
                    .map(|(id, _)| *id)
                    .collect();
                expected.sort();
                prop_assert_eq!(found, expected);
            }
        }
    }
}

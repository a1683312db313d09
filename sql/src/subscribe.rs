//! Subscriptions: `SELECT * FROM t [WHERE ...]`, or whole rows of one table through
//! joins (`SELECT t.* FROM t JOIN u ON ...`, see [`crate::semijoin`]), kept up to date
//! from each tick's changes alone; the query is never run again. Over one table, a
//! changed row is checked against the condition as it was and as it is: it enters the
//! result, leaves it, or changes within it.
//!
//! A [`SubscriptionSet`] evaluates all of a database's queries per tick: identical
//! queries once, `col = literal` queries grouped by column, windows through the
//! area-of-interest index ([`crate::aoi`]), joins and the other distinct queries in
//! parallel (rayon).

use std::borrow::Cow;
use std::collections::HashMap;

use rayon::prelude::*;

use tickdb_engine::{Database, TableChanges, TableId};
use tickdb_wasm_abi::{ColId, ProductType, TableSchema, Value, ValueType, decode_exact, encode};

use crate::aoi::{self, AoiIndex, Dims};
use crate::bind::{BoundQuery, Pred};
use crate::error::{ErrorKind, SqlError};
use crate::exec::{Decoded, QueryLimits, eval, matching_rows};
use crate::semijoin::JoinPlan;
use crate::visibility::{Reader, Visibility};

/// A subscription query, bound and ready to evaluate.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The table whose rows are returned.
    table: TableId,
    filter: Option<Pred>,
    row_type: ValueType,
    /// For a join: the bound query (for the initial rows) and its incremental plan.
    join: Option<(BoundQuery, JoinPlan)>,
}

/// A row's old and new versions.
pub type RowUpdate<'c> = (Cow<'c, [u8]>, Cow<'c, [u8]>);

/// What a tick did to a subscription's result. Rows are in the table's row encoding,
/// borrowed from the tick's changes where they are its rows (a changed row is in many
/// queries' deltas, and copying it for each costs more than finding them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta<'c> {
    pub inserts: Vec<Cow<'c, [u8]>>,
    pub deletes: Vec<Cow<'c, [u8]>>,
    /// Rows that stayed in the result with new values: (old, new).
    pub updates: Vec<RowUpdate<'c>>,
}

impl Delta<'_> {
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.deletes.is_empty() && self.updates.is_empty()
    }
}

/// An encoded row's column values; `None` if it is not a row of `row_type` (rows of a
/// table and of its changes always are).
pub(crate) fn row_values(row_type: &ValueType, row: &[u8]) -> Option<Vec<Value>> {
    match decode_exact(row_type, row) {
        Ok(Value::Product(values)) => Some(values),
        _ => None,
    }
}

/// A table's rows as one product type, as they are encoded.
pub(crate) fn row_type(schema: &TableSchema) -> ValueType {
    ValueType::Product(ProductType::new(schema.columns.iter().map(|c| (c.name.clone(), c.ty.clone()))))
}

impl Subscription {
    /// Binds a subscription query: `SELECT * FROM t [WHERE ...]`, or a join returning
    /// the rows of one of its tables, `SELECT t.* FROM t JOIN u ON t.a = u.b [WHERE ...]`,
    /// joined on indexed columns.
    pub fn new(db: &Database, sql: &str) -> Result<Subscription, SqlError> {
        Subscription::from_bound(db, crate::prepare(db, sql)?)
    }

    /// Binds a subscription query for `reader`, as [`crate::prepare_for`] does.
    pub fn for_reader(
        db: &Database,
        visibility: &Visibility,
        reader: Reader,
        sql: &str,
    ) -> Result<Subscription, SqlError> {
        Subscription::from_bound(db, crate::prepare_for(db, visibility, reader, sql)?)
    }

    /// A subscription to a query already bound (through a [`crate::StatementCache`], say).
    pub fn from_bound(db: &Database, bound: BoundQuery) -> Result<Subscription, SqlError> {
        let unsupported = |what: &str| {
            SqlError::new(
                ErrorKind::Unsupported,
                format!("subscriptions {what} (SELECT * FROM t WHERE ..., or SELECT t.* FROM t JOIN ...)"),
                None,
            )
        };
        if bound.limit.is_some() || !bound.order_by.is_empty() {
            return Err(unsupported("have no ORDER BY or LIMIT"));
        }
        let Some(result) = bound.whole_rows_of(db) else {
            return Err(unsupported("return whole rows of one table"));
        };
        let table = bound.tables[result];
        let row_type = row_type(db.table(table).schema());
        if bound.tables.len() == 1 {
            return Ok(Subscription { table, filter: bound.filter, row_type, join: None });
        }
        let plan = JoinPlan::new(db, &bound.tables, result, bound.filter.as_ref())?;
        Ok(Subscription { table, filter: bound.filter.clone(), row_type, join: Some((bound, plan)) })
    }

    /// The table whose rows the query returns.
    pub fn table(&self) -> TableId {
        self.table
    }

    /// Every table the query reads: a change to any of them may change its result.
    pub fn tables(&self) -> &[TableId] {
        match &self.join {
            Some((_, plan)) => plan.tables(),
            None => std::slice::from_ref(&self.table),
        }
    }

    pub(crate) fn join_plan(&self) -> Option<&JoinPlan> {
        self.join.as_ref().map(|(_, plan)| plan)
    }

    pub(crate) fn filter(&self) -> Option<&Pred> {
        self.filter.as_ref()
    }

    /// The rows the query returns now, encoded.
    pub fn initial(&self, db: &Database, limits: &QueryLimits) -> Result<Vec<Vec<u8>>, SqlError> {
        if let Some((bound, _)) = &self.join {
            let result = crate::exec::run(db, bound, limits)?;
            return Ok(result.rows.into_iter().map(|values| self.encode(values)).collect());
        }
        let t = db.table(self.table);
        let ids = matching_rows(db, self.table, self.filter.as_ref(), limits)?;
        Ok(ids.into_iter().filter_map(|id| t.get(id).map(|r| r.to_bytes())).collect())
    }

    fn encode(&self, values: Vec<Value>) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&self.row_type, &Value::Product(values), &mut out).expect("a row of the table's own type");
        out
    }

    /// What identifies the query however it was written: its tables, the one returned
    /// (by position: a self-join returns one of two copies of a table),
    /// and its bound condition.
    fn key(&self) -> String {
        match &self.join {
            Some((bound, plan)) => format!("{:?}/{}/{:?}", bound.tables, plan.result(), bound.filter),
            None => format!("{:?}/{:?}", self.table, self.filter),
        }
    }

    /// Whether an encoded row of the table is in the result.
    pub(crate) fn matches(&self, row: &[u8]) -> bool {
        if self.filter.is_none() {
            return true;
        }
        row_values(&self.row_type, row).is_some_and(|values| self.matches_values(&values))
    }

    /// Whether a row of the table, decoded, is in the result.
    fn matches_values(&self, values: &[Value]) -> bool {
        self.filter.as_ref().is_none_or(|f| eval(f, &Decoded(values)) == Some(true))
    }

    /// The subscription's delta for one tick: `db` as the tick left it, and the tick's
    /// changes. Only a join can fail: past `limits.rows_max` rows read.
    pub fn delta<'c>(
        &self,
        db: &Database,
        changes: &'c [TableChanges],
        limits: &QueryLimits,
    ) -> Result<Delta<'c>, SqlError> {
        match &self.join {
            Some((_, plan)) => plan.delta(db, changes, limits.rows_max),
            None => {
                let mut delta = Delta::default();
                for table_changes in changes.iter().filter(|c| c.table == self.table) {
                    self.delta_of_table(table_changes, &mut delta);
                }
                Ok(delta)
            }
        }
    }

    /// A single-table subscription's delta for its table's changes.
    fn delta_of_table<'c>(&self, changes: &'c TableChanges, delta: &mut Delta<'c>) {
        delta.inserts.extend(changes.inserts.iter().filter(|r| self.matches(r)).map(Cow::Borrowed));
        delta.deletes.extend(changes.deletes.iter().filter(|r| self.matches(r)).map(Cow::Borrowed));
        for (old, new) in changes.updates() {
            match (self.matches(old), self.matches(new)) {
                (true, true) => delta.updates.push((Cow::Borrowed(old), Cow::Borrowed(new))),
                (true, false) => delta.deletes.push(Cow::Borrowed(old)),
                (false, true) => delta.inserts.push(Cow::Borrowed(new)),
                (false, false) => {}
            }
        }
    }
}

/// A distinct subscription query in a [`SubscriptionSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u32);

/// Every subscription query of a database, evaluated together each tick.
///
/// Identical queries (the same bound query, however written) are one query, however
/// many clients hold it. Queries of the form `col = literal` are grouped by column: a
/// changed row's value finds the queries it concerns in one lookup, rather than each
/// query testing each row. Window queries over two or three numeric columns are filed
/// in an area-of-interest index that finds the windows holding a
/// changed row. Other queries are evaluated one by one, in parallel.
#[derive(Debug, Default)]
pub struct SubscriptionSet {
    queries: Vec<Option<Entry>>,
    /// Ids of removed queries, given to new ones.
    free: Vec<u32>,
    by_key: HashMap<String, QueryId>,
    /// Per table and column, the `col = literal` queries by their literal.
    groups: HashMap<(TableId, ColId), HashMap<Value, Vec<QueryId>>>,
    /// Per table and window columns, the window queries.
    windows: HashMap<(TableId, Dims), AoiIndex>,
    /// Per table, the other single-table queries.
    others: HashMap<TableId, Vec<QueryId>>,
    /// The queries over joins.
    joins: Vec<QueryId>,
    /// How much a join may read per tick (`rows_max`).
    limits: QueryLimits,
}

#[derive(Debug)]
struct Entry {
    sub: Subscription,
    key: String,
    holders: usize,
    place: Place,
}

/// How a query is found for a tick's changes.
#[derive(Debug, Clone)]
enum Place {
    Group(ColId, Value),
    Window(Dims),
    Join,
    Other,
}

/// Deltas by query. A changed row in many areas of interest makes an entry per
/// area, so the hash is the fast one (foldhash), not the DoS-resistant default: query
/// ids are the server's own numbers.
pub type DeltaMap<'c> = hashbrown::HashMap<QueryId, Delta<'c>>;

/// What a tick did to a set's queries.
#[derive(Debug, Default)]
pub struct TickDeltas<'c> {
    /// For each query whose result changed, what changed.
    pub deltas: DeltaMap<'c>,
    /// Queries that could not be evaluated, and why.
    pub failed: Vec<(QueryId, SqlError)>,
}

/// How many of a set's distinct queries are evaluated each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetStats {
    /// `col = literal`, grouped by column.
    pub grouped: usize,
    /// Windows in the area-of-interest index.
    pub windows: usize,
    pub joins: usize,
    /// Evaluated one by one.
    pub others: usize,
}

/// One change to one query's result, found by an index.
#[derive(Clone, Copy)]
enum Change<'a> {
    Insert(&'a [u8]),
    Delete(&'a [u8]),
    Update(&'a [u8], &'a [u8]),
}

impl SubscriptionSet {
    /// A set whose join queries may each read `limits.rows_max` rows per tick (past
    /// that, a query fails alone: see [`TickDeltas::failed`]).
    pub fn with_limits(limits: QueryLimits) -> SubscriptionSet {
        SubscriptionSet { limits, ..SubscriptionSet::default() }
    }

    /// Adds a holder of `sql`: the query's id, shared with every other holder of the
    /// same query.
    pub fn subscribe(&mut self, db: &Database, sql: &str) -> Result<QueryId, SqlError> {
        Ok(self.add(Subscription::new(db, sql)?))
    }

    /// Adds a holder of a bound subscription (see [`Subscription::for_reader`]).
    pub fn add(&mut self, sub: Subscription) -> QueryId {
        let key = sub.key();
        if let Some(&id) = self.by_key.get(&key) {
            self.queries[id.0 as usize].as_mut().expect("live").holders += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(free) => QueryId(free),
            None => {
                self.queries.push(None);
                QueryId(self.queries.len() as u32 - 1)
            }
        };
        let place = match (&sub.join, &sub.filter) {
            (Some(_), _) => {
                self.joins.push(id);
                Place::Join
            }
            (None, Some(Pred::Cmp { col, op: crate::bind::CmpOp::Eq, value })) => {
                let by_value = self.groups.entry((sub.table, col.col)).or_default();
                by_value.entry(value.clone()).or_default().push(id);
                Place::Group(col.col, value.clone())
            }
            (None, filter) => match aoi::window(&sub.row_type, filter.as_ref()) {
                Some(window) => {
                    let dims = window.dims.clone();
                    let index = self
                        .windows
                        .entry((sub.table, dims.clone()))
                        .or_insert_with(|| AoiIndex::new(&sub.row_type, &dims));
                    index.insert(id, &window);
                    Place::Window(dims)
                }
                None => {
                    self.others.entry(sub.table).or_default().push(id);
                    Place::Other
                }
            },
        };
        self.by_key.insert(key.clone(), id);
        self.queries[id.0 as usize] = Some(Entry { sub, key, holders: 1, place });
        id
    }

    /// Removes a holder; the query goes when its last holder does.
    pub fn unsubscribe(&mut self, id: QueryId) {
        let Some(slot) = self.queries.get_mut(id.0 as usize) else { return };
        let Some(entry) = slot else { return };
        entry.holders -= 1;
        if entry.holders > 0 {
            return;
        }
        let entry = slot.take().expect("checked");
        self.free.push(id.0);
        self.by_key.remove(&entry.key);
        let table = entry.sub.table;
        match entry.place {
            Place::Group(col, value) => {
                if let Some(by_value) = self.groups.get_mut(&(table, col))
                    && let Some(ids) = by_value.get_mut(&value)
                {
                    ids.retain(|q| *q != id);
                    if ids.is_empty() {
                        by_value.remove(&value);
                    }
                }
            }
            Place::Window(dims) => {
                let key = (table, dims);
                if let Some(index) = self.windows.get_mut(&key) {
                    index.remove(id);
                    if index.len() == 0 {
                        self.windows.remove(&key);
                    }
                }
            }
            Place::Join => self.joins.retain(|q| *q != id),
            Place::Other => {
                if let Some(ids) = self.others.get_mut(&table) {
                    ids.retain(|q| *q != id);
                }
            }
        }
    }

    /// How the distinct queries are evaluated.
    pub fn stats(&self) -> SetStats {
        SetStats {
            grouped: self.groups.values().flat_map(HashMap::values).map(Vec::len).sum(),
            windows: self.windows.values().map(AoiIndex::len).sum(),
            joins: self.joins.len(),
            others: self.others.values().map(Vec::len).sum(),
        }
    }

    /// Distinct queries held.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn query(&self, id: QueryId) -> Option<&Subscription> {
        self.queries.get(id.0 as usize)?.as_ref().map(|e| &e.sub)
    }

    /// The deltas of one tick: for each query whose result changed, what changed; and
    /// the queries that could not be evaluated (their holders should be told and
    /// unsubscribed). `db` is as the tick left it.
    pub fn evaluate<'c>(&self, db: &Database, changes: &'c [TableChanges]) -> TickDeltas<'c> {
        let live = |id: &QueryId| self.live(*id);
        let changed = |sub: &Subscription| sub.tables().iter().any(|t| changes.iter().any(|c| c.table == *t));
        let joins: Vec<(QueryId, Result<Delta<'_>, SqlError>)> = self
            .joins
            .par_iter()
            .filter(|id| changed(live(id)))
            .map(|id| (*id, live(id).delta(db, changes, &self.limits)))
            .collect();
        let mut deltas = DeltaMap::new();
        let mut failed = Vec::new();
        for (id, result) in joins {
            match result {
                Ok(delta) if delta.is_empty() => {}
                Ok(delta) => {
                    deltas.insert(id, delta);
                }
                Err(e) => failed.push((id, e)),
            }
        }
        for table_changes in changes {
            let table = table_changes.table;
            // Distinct queries are independent: evaluated in parallel, one task each.
            let others = self.others.get(&table).map(Vec::as_slice).unwrap_or_default();
            let evaluated: Vec<(QueryId, Delta<'_>)> = others
                .par_iter()
                .map(|id| {
                    let mut delta = Delta::default();
                    live(id).delta_of_table(table_changes, &mut delta);
                    (*id, delta)
                })
                .filter(|(_, delta)| !delta.is_empty())
                .collect();
            deltas.extend(evaluated);
            for ((group_table, col), by_value) in &self.groups {
                if *group_table == table && !by_value.is_empty() {
                    let found = self.group_changes(*col, by_value, table_changes);
                    push_changes(&mut deltas, found);
                }
            }
            for ((window_table, _), index) in &self.windows {
                if *window_table == table {
                    push_changes(&mut deltas, self.window_changes(index, table_changes));
                }
            }
        }
        TickDeltas { deltas, failed }
    }
}

/// Each changed row of a table as (old version, new version).
type Versions<'r> = (Option<&'r [u8]>, Option<&'r [u8]>);

/// Rows taken per parallel task when an index finds the queries changed rows concern.
const CHUNK: usize = 512;

fn versions(changes: &TableChanges) -> Vec<Versions<'_>> {
    changes
        .deletes
        .iter()
        .map(|r| (Some(r), None))
        .chain(changes.inserts.iter().map(|r| (None, Some(r))))
        .chain(changes.updates().map(|(old, new)| (Some(old), Some(new))))
        .collect()
}

/// Adds changes found by an index to the tick's deltas.
fn push_changes<'c>(deltas: &mut DeltaMap<'c>, mut found: Vec<(QueryId, Change<'c>)>) {
    // By query: each query's delta is looked up once and grown once (a changed row is
    // in many areas of interest, so there are many changes per query).
    found.sort_by_key(|(id, _)| *id);
    for run in found.chunk_by(|a, b| a.0 == b.0) {
        let delta = deltas.entry(run[0].0).or_default();
        let updates = run.iter().filter(|(_, c)| matches!(c, Change::Update(..))).count();
        delta.updates.reserve(updates);
        delta.inserts.reserve(run.len() - updates);
        for (_, change) in run {
            match *change {
                Change::Insert(row) => delta.inserts.push(Cow::Borrowed(row)),
                Change::Delete(row) => delta.deletes.push(Cow::Borrowed(row)),
                Change::Update(old, new) => delta.updates.push((Cow::Borrowed(old), Cow::Borrowed(new))),
            }
        }
    }
}

impl SubscriptionSet {
    fn live(&self, id: QueryId) -> &Subscription {
        &self.queries[id.0 as usize].as_ref().expect("live").sub
    }

    /// The `col = literal` queries a changed row enters, leaves or stays in: found by
    /// the column's value before and after. Rows are taken in parallel, in chunks.
    fn group_changes<'c>(
        &self,
        col: ColId,
        by_value: &HashMap<Value, Vec<QueryId>>,
        changes: &'c TableChanges,
    ) -> Vec<(QueryId, Change<'c>)> {
        let Some(first) = by_value.values().flatten().next() else { return Vec::new() };
        let row_type = &self.live(*first).row_type;
        let at = fixed_position(row_type, col);
        let holders = |row: Option<&[u8]>| -> &[QueryId] {
            let value = row.and_then(|row| column_value(row_type, col, at.as_ref(), row));
            value.and_then(|v| by_value.get(&v)).map_or(&[], Vec::as_slice)
        };
        versions(changes)
            .par_chunks(CHUNK)
            .flat_map_iter(|chunk| {
                let mut out = Vec::new();
                for &(old, new) in chunk {
                    let (before, after) = (holders(old), holders(new));
                    match (old, new) {
                        // The same value: the same queries hold the row, updated.
                        (Some(old), Some(new)) if std::ptr::eq(before, after) => {
                            out.extend(before.iter().map(|id| (*id, Change::Update(old, new))));
                        }
                        _ => {
                            if let Some(old) = old {
                                out.extend(before.iter().map(|id| (*id, Change::Delete(old))));
                            }
                            if let Some(new) = new {
                                out.extend(after.iter().map(|id| (*id, Change::Insert(new))));
                            }
                        }
                    }
                }
                out
            })
            .collect()
    }

    /// The windows a changed row enters, leaves or moves within: found through the
    /// index by the row's old and new positions. A window whose bounds are its whole
    /// condition is decided by them; any other is checked against its condition, on
    /// the row decoded once. Rows are taken in parallel, in chunks.
    fn window_changes<'c>(&self, index: &AoiIndex, changes: &'c TableChanges) -> Vec<(QueryId, Change<'c>)> {
        let holding = |row: &[u8], out: &mut Vec<QueryId>| {
            out.clear();
            let mut decoded: Option<Option<Vec<Value>>> = None;
            let Some(point) = index.point(row) else { return }; // a NULL coordinate is in no window
            index.windows_at(&point, |id, exact| {
                let holds = exact || {
                    let values = decoded.get_or_insert_with(|| row_values(index.row_type(), row));
                    values.as_ref().is_some_and(|values| self.live(id).matches_values(values))
                };
                if holds {
                    out.push(id);
                }
            });
        };
        let rows = versions(changes);
        rows.par_chunks(CHUNK)
            .flat_map_iter(|chunk| {
                let (mut before, mut after) = (Vec::new(), Vec::new());
                let mut out = Vec::new();
                for &(old, new) in chunk {
                    match old {
                        Some(row) => holding(row, &mut before),
                        None => before.clear(),
                    }
                    match new {
                        Some(row) => holding(row, &mut after),
                        None => after.clear(),
                    }
                    for id in &before {
                        let change = match (old, new) {
                            (Some(old), Some(new)) if after.contains(id) => Change::Update(old, new),
                            (Some(old), _) => Change::Delete(old),
                            (None, _) => unreachable!("a row held before has an old version"),
                        };
                        out.push((*id, change));
                    }
                    if let Some(new) = new {
                        out.extend(
                            after
                                .iter()
                                .filter(|id| !before.contains(id))
                                .map(|id| (*id, Change::Insert(new))),
                        );
                    }
                }
                out
            })
            .collect()
    }
}

/// Where column `col` lies in every encoded row, when the columns before it and it
/// are fixed-size: its offset, size and type.
pub(crate) fn fixed_position(row_type: &ValueType, col: ColId) -> Option<(usize, usize, ValueType)> {
    let ValueType::Product(product) = row_type else { return None };
    let mut offset = 0;
    for field in &product.fields[..col.index()] {
        offset += field.ty.fixed_size()?;
    }
    let ty = &product.fields.get(col.index())?.ty;
    Some((offset, ty.fixed_size()?, ty.clone()))
}

/// Column `col` of an encoded row, as a `col = literal` condition compares it: the
/// inner value of an option, `None` for NULL. A fixed-size column at a fixed place is
/// read where it lies; any other makes the whole row decoded.
pub(crate) fn column_value(
    row_type: &ValueType,
    col: ColId,
    at: Option<&(usize, usize, ValueType)>,
    row: &[u8],
) -> Option<Value> {
    let value = match at {
        Some((offset, size, ty)) => decode_exact(ty, row.get(*offset..offset + size)?).ok()?,
        None => row_values(row_type, row)?.swap_remove(col.index()),
    };
    match value {
        Value::Option(inner) => inner.map(|v| *v),
        v => Some(v),
    }
}

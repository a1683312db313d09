//! The client cache: the rows of every table the client's query sets return, kept as
//! the server last sent them, and the events applying a message produced.
//!
//! A row is stored once, under its *key*: the encoding of its primary key columns for
//! a table with a primary key (the form `RowUpdates.keys` names rows in), or the whole
//! row for a table without one. Each row carries a count: the server sends a row once
//! per query that returns it, in every query set, so a row stays while any of them
//! still holds it. Each query set also keeps the keys it contributed, which lets the
//! cache drop a set's rows when it is unsubscribed or fails, and compute the difference
//! when a set's rows are sent afresh (after a reconnect without resume), so callbacks
//! see only what really changed.
//!
//! Applying a message never runs user code: it returns [`CacheEvent`]s, which the
//! connection turns into callbacks once the whole message is applied.

use std::any::Any;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use tickdb_protocol::{RowUpdates, TableUpdate};
use tickdb_wasm_abi::{DecodeError, Reader, ValueType, skip};

use crate::SdkError;

/// A decoded row, type-erased; its concrete type is the table's row struct.
pub type AnyRow = Arc<dyn Any + Send + Sync>;

/// What the client knows of one table, from generated bindings.
#[derive(Clone, Copy)]
pub struct TableDesc {
    pub name: &'static str,
    /// The row type: a product of the table's columns.
    pub row_type: fn() -> ValueType,
    /// Column positions of the primary key; empty for a table without one.
    pub primary_key: &'static [usize],
    /// Columns with a unique constraint of their own, which have lookups.
    pub unique: &'static [usize],
    pub decode: fn(&[u8]) -> Result<AnyRow, DecodeError>,
}

impl std::fmt::Debug for TableDesc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableDesc").field("name", &self.name).field("primary_key", &self.primary_key).finish()
    }
}

/// One change to the cache, for callbacks.
#[derive(Clone)]
pub(crate) enum CacheEvent {
    Insert { table: usize, row: AnyRow },
    Delete { table: usize, row: AnyRow },
    Update { table: usize, old: AnyRow, new: AnyRow },
}

struct CachedRow {
    bytes: Vec<u8>,
    count: u32,
    value: AnyRow,
}

pub(crate) struct TableCache {
    pub(crate) desc: TableDesc,
    columns: Vec<ValueType>,
    rows: HashMap<Vec<u8>, CachedRow>,
    /// The unique columns looked up through an index of their own: all but a
    /// one-column primary key, whose values are the rows' keys.
    indexed: Vec<usize>,
    /// Per column of `indexed`: column value → row key.
    unique: Vec<HashMap<Vec<u8>, Vec<u8>>>,
}

impl TableCache {
    fn new(desc: TableDesc) -> TableCache {
        let columns = match (desc.row_type)() {
            ValueType::Product(p) => p.fields.into_iter().map(|f| f.ty).collect(),
            other => vec![other],
        };
        let indexed: Vec<usize> = desc.unique.iter().copied().filter(|&c| desc.primary_key != [c]).collect();
        let unique = vec![HashMap::new(); indexed.len()];
        TableCache { desc, columns, rows: HashMap::new(), indexed, unique }
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &AnyRow> {
        self.rows.values().map(|r| &r.value)
    }

    /// The row whose unique column `column` holds the value encoded as `value`.
    pub(crate) fn find_unique(&self, column: usize, value: &[u8]) -> Option<&AnyRow> {
        if self.desc.primary_key == [column] {
            return self.rows.get(value).map(|r| &r.value);
        }
        let slot = self.indexed.iter().position(|&c| c == column)?;
        let key = self.unique[slot].get(value)?;
        self.rows.get(key).map(|r| &r.value)
    }

    /// Where each column's value lies in `row`.
    fn spans(&self, row: &[u8]) -> Result<Vec<Range<usize>>, DecodeError> {
        let mut r = Reader::new(row);
        let mut spans = Vec::with_capacity(self.columns.len());
        for ty in &self.columns {
            let start = r.position();
            skip(ty, &mut r)?;
            spans.push(start..r.position());
        }
        match r.remaining() {
            0 => Ok(spans),
            extra => Err(DecodeError::TrailingBytes { extra }),
        }
    }

    fn key_of(&self, row: &[u8]) -> Result<Vec<u8>, DecodeError> {
        if self.desc.primary_key.is_empty() {
            return Ok(row.to_vec());
        }
        let spans = self.spans(row)?;
        Ok(self.desc.primary_key.iter().flat_map(|&c| row[spans[c].clone()].iter().copied()).collect())
    }

    fn index(&mut self, key: &[u8], row: &[u8], add: bool) -> Result<(), DecodeError> {
        if self.indexed.is_empty() {
            return Ok(());
        }
        let spans = self.spans(row)?;
        for (slot, &column) in self.indexed.iter().enumerate() {
            let value = row[spans[column].clone()].to_vec();
            if add {
                self.unique[slot].insert(value, key.to_vec());
            } else if self.unique[slot].get(&value).is_some_and(|k| k == key) {
                self.unique[slot].remove(&value);
            }
        }
        Ok(())
    }

    /// Adds a hold on `row`; returns its key.
    fn insert(
        &mut self,
        table: usize,
        row: &[u8],
        events: &mut Vec<CacheEvent>,
    ) -> Result<Vec<u8>, SdkError> {
        let key = self.key_of(row).map_err(|e| self.bad_row(e))?;
        if let Some(held) = self.rows.get_mut(&key) {
            held.count += 1;
            if held.bytes != row {
                // A query set sent afresh with a row that changed meanwhile.
                let new = (self.desc.decode)(row).map_err(|e| self.bad_row(e))?;
                let held = self.rows.get_mut(&key).expect("looked up above");
                let old = std::mem::replace(&mut held.value, new.clone());
                let old_bytes = std::mem::replace(&mut held.bytes, row.to_vec());
                self.index(&key, &old_bytes, false).map_err(|e| self.bad_row(e))?;
                self.index(&key, row, true).map_err(|e| self.bad_row(e))?;
                events.push(CacheEvent::Update { table, old, new });
            }
            return Ok(key);
        }
        let value = (self.desc.decode)(row).map_err(|e| self.bad_row(e))?;
        self.index(&key, row, true).map_err(|e| self.bad_row(e))?;
        self.rows.insert(key.clone(), CachedRow { bytes: row.to_vec(), count: 1, value: value.clone() });
        events.push(CacheEvent::Insert { table, row: value });
        Ok(key)
    }

    /// Drops `count` holds on the row under `key`.
    fn release(
        &mut self,
        table: usize,
        key: &[u8],
        count: u32,
        events: &mut Vec<CacheEvent>,
    ) -> Result<(), SdkError> {
        let Some(held) = self.rows.get_mut(key) else {
            return Err(SdkError::Protocol(format!(
                "a delete from table `{}` of a row the client does not hold",
                self.desc.name
            )));
        };
        held.count = held.count.saturating_sub(count);
        if held.count > 0 {
            return Ok(());
        }
        let held = self.rows.remove(key).expect("looked up above");
        self.index(key, &held.bytes, false).map_err(|e| self.bad_row(e))?;
        events.push(CacheEvent::Delete { table, row: held.value });
        Ok(())
    }

    /// Applies partial updates: each names a row by key and carries its changed columns.
    fn update(
        &mut self,
        table: usize,
        updates: &RowUpdates,
        events: &mut Vec<CacheEvent>,
    ) -> Result<(), SdkError> {
        let width = self.columns.len().div_ceil(8);
        if updates.values.len() != updates.keys.len() || updates.changed.len() != updates.keys.len() * width {
            return Err(SdkError::Protocol(format!("malformed updates for table `{}`", self.desc.name)));
        }
        for (i, key) in updates.keys.iter().enumerate() {
            let changed = &updates.changed[i * width..(i + 1) * width];
            let Some(held) = self.rows.get(key) else {
                return Err(SdkError::Protocol(format!(
                    "an update to table `{}` of a row the client does not hold",
                    self.desc.name
                )));
            };
            let patched =
                self.patch(&held.bytes, changed, updates.values.row(i)).map_err(|e| self.bad_row(e))?;
            if patched == held.bytes {
                // The same update, once per query that returns the row.
                continue;
            }
            let new = (self.desc.decode)(&patched).map_err(|e| self.bad_row(e))?;
            // Unique columns are indexed again only when one of them changed.
            let reindex = self.indexed.iter().any(|&c| changed[c / 8] & (1 << (c % 8)) != 0);
            let held = self.rows.get_mut(key).expect("looked up above");
            let old = std::mem::replace(&mut held.value, new.clone());
            let old_bytes = std::mem::replace(&mut held.bytes, patched);
            if reindex {
                let new_bytes = held.bytes.clone();
                self.index(key, &old_bytes, false).map_err(|e| self.bad_row(e))?;
                self.index(key, &new_bytes, true).map_err(|e| self.bad_row(e))?;
            }
            events.push(CacheEvent::Update { table, old, new });
        }
        Ok(())
    }

    /// The row `old` with the columns marked in `changed` replaced by `values`'s.
    fn patch(&self, old: &[u8], changed: &[u8], values: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let spans = self.spans(old)?;
        let mut new_values = Reader::new(values);
        let mut row = Vec::with_capacity(old.len());
        for (c, ty) in self.columns.iter().enumerate() {
            if changed[c / 8] & (1 << (c % 8)) != 0 {
                let start = new_values.position();
                skip(ty, &mut new_values)?;
                row.extend_from_slice(&values[start..new_values.position()]);
            } else {
                row.extend_from_slice(&old[spans[c].clone()]);
            }
        }
        match new_values.remaining() {
            0 => Ok(row),
            extra => Err(DecodeError::TrailingBytes { extra }),
        }
    }

    fn bad_row(&self, e: DecodeError) -> SdkError {
        SdkError::Protocol(format!(
            "a row of table `{}` does not match the bindings: {e} (regenerate them?)",
            self.desc.name
        ))
    }
}

/// The rows one query set holds: (table, key) → count.
#[derive(Default)]
pub(crate) struct SetRows(HashMap<(usize, Vec<u8>), u32>);

/// Every table's rows, and which query set holds which.
pub(crate) struct ClientCache {
    pub(crate) tables: Vec<TableCache>,
    by_name: HashMap<&'static str, usize>,
    sets: HashMap<u32, SetRows>,
    /// Tables named by the server that the bindings do not know, reported once each.
    unknown: Vec<String>,
}

impl std::fmt::Debug for ClientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCache").field("tables", &self.tables.len()).finish_non_exhaustive()
    }
}

impl ClientCache {
    pub(crate) fn new(tables: &[TableDesc]) -> ClientCache {
        let by_name = tables.iter().enumerate().map(|(i, t)| (t.name, i)).collect();
        let tables = tables.iter().map(|&t| TableCache::new(t)).collect();
        ClientCache { tables, by_name, sets: HashMap::new(), unknown: Vec::new() }
    }

    pub(crate) fn table_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The index of a table the server named, or `None` (and an error, the first time)
    /// when the bindings do not know it.
    fn resolve(&mut self, name: &str, errors: &mut Vec<SdkError>) -> Option<usize> {
        let index = self.table_index(name);
        if index.is_none() && !self.unknown.iter().any(|n| n == name) {
            self.unknown.push(name.to_string());
            errors.push(SdkError::Protocol(format!(
                "the server sent rows of table `{name}`, which the bindings do not know: regenerate them"
            )));
        }
        index
    }

    /// Replaces query set `set`'s rows with `tables`' (its initial rows, or its rows
    /// sent afresh): rows it newly holds are added before the rows it no longer holds
    /// are released, so a row held before and after raises no event.
    pub(crate) fn apply_rows<'r>(
        &mut self,
        set: u32,
        tables: impl IntoIterator<Item = (&'r str, Vec<&'r [u8]>)>,
        events: &mut Vec<CacheEvent>,
        errors: &mut Vec<SdkError>,
    ) {
        let mut held = SetRows::default();
        for (name, rows) in tables {
            let Some(t) = self.resolve(name, errors) else { continue };
            for row in rows {
                match self.tables[t].insert(t, row, events) {
                    Ok(key) => *held.0.entry((t, key)).or_default() += 1,
                    Err(e) => errors.push(e),
                }
            }
        }
        let old = self.sets.insert(set, held).unwrap_or_default();
        self.release_all(old, events, errors);
    }

    /// Applies one tick's changes to the query sets named. Rows added (inserts and
    /// updates) go in before rows removed, across every set of the tick, so a row that
    /// moves from one query or set to another is held throughout: it raises no delete
    /// and insert, only an update if its values changed.
    pub(crate) fn apply_tick(
        &mut self,
        sets: &[(u32, &[TableUpdate])],
        events: &mut Vec<CacheEvent>,
        errors: &mut Vec<SdkError>,
    ) {
        for &(set, tables) in sets {
            self.apply_part(set, tables, true, events, errors);
        }
        for &(set, tables) in sets {
            self.apply_part(set, tables, false, events, errors);
        }
    }

    /// The additions (`add`) or the removals of one set's changes.
    fn apply_part(
        &mut self,
        set: u32,
        tables: &[TableUpdate],
        add: bool,
        events: &mut Vec<CacheEvent>,
        errors: &mut Vec<SdkError>,
    ) {
        let Some(mut held) = self.sets.remove(&set) else {
            // An update for a set the client has just dropped.
            return;
        };
        for update in tables {
            let Some(t) = self.resolve(&update.table_name, errors) else { continue };
            let table = &mut self.tables[t];
            if add {
                for row in update.inserts.iter() {
                    match table.insert(t, row, events) {
                        Ok(key) => *held.0.entry((t, key)).or_default() += 1,
                        Err(e) => errors.push(e),
                    }
                }
                if let Err(e) = table.update(t, &update.updates, events) {
                    errors.push(e);
                }
                continue;
            }
            for row in update.deletes.iter() {
                let result = table.key_of(row).map_err(|e| table.bad_row(e)).and_then(|key| {
                    table.release(t, &key, 1, events)?;
                    let count = held.0.entry((t, key.clone())).or_default();
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        held.0.remove(&(t, key));
                    }
                    Ok(())
                });
                if let Err(e) = result {
                    errors.push(e);
                }
            }
        }
        self.sets.insert(set, held);
    }

    /// Drops query set `set` and every row only it held.
    pub(crate) fn drop_set(&mut self, set: u32, events: &mut Vec<CacheEvent>, errors: &mut Vec<SdkError>) {
        if let Some(held) = self.sets.remove(&set) {
            self.release_all(held, events, errors);
        }
    }

    fn release_all(&mut self, held: SetRows, events: &mut Vec<CacheEvent>, errors: &mut Vec<SdkError>) {
        for ((t, key), count) in held.0 {
            if let Err(e) = self.tables[t].release(t, &key, count, events) {
                errors.push(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tickdb_protocol::RowList;
    use tickdb_wasm_abi::Type;

    use super::*;

    /// Rows of the test table: (id, name, score), keyed by id.
    type Row = (u32, String, i64);

    fn desc(primary_key: &'static [usize]) -> TableDesc {
        TableDesc {
            name: "player",
            row_type: <Row as Type>::value_type,
            primary_key,
            unique: primary_key,
            decode: |bytes| <Row as Type>::from_bytes(bytes).map(|row| Arc::new(row) as AnyRow),
        }
    }

    fn row(id: u32, name: &str, score: i64) -> Vec<u8> {
        (id, name.to_string(), score).to_bytes()
    }

    fn inserts(rows: &[Vec<u8>]) -> TableUpdate {
        let inserts = rows.iter().map(Vec::as_slice).collect();
        TableUpdate { table_name: "player".into(), inserts, ..TableUpdate::default() }
    }

    fn deletes(rows: &[Vec<u8>]) -> TableUpdate {
        let deletes = rows.iter().map(Vec::as_slice).collect();
        TableUpdate { table_name: "player".into(), deletes, ..TableUpdate::default() }
    }

    /// The events as (kind, id of the row, or old and new score for updates).
    fn summary(events: &[CacheEvent]) -> Vec<String> {
        let r = |row: &AnyRow| row.downcast_ref::<Row>().expect("a Row").clone();
        events
            .iter()
            .map(|e| match e {
                CacheEvent::Insert { row, .. } => format!("+{}", r(row).0),
                CacheEvent::Delete { row, .. } => format!("-{}", r(row).0),
                CacheEvent::Update { old, new, .. } => format!("{}:{}->{}", r(old).0, r(old).2, r(new).2),
            })
            .collect()
    }

    fn apply(cache: &mut ClientCache, set: u32, update: TableUpdate) -> (Vec<String>, Vec<SdkError>) {
        let (mut events, mut errors) = (Vec::new(), Vec::new());
        cache.apply_tick(&[(set, std::slice::from_ref(&update))], &mut events, &mut errors);
        (summary(&events), errors)
    }

    fn subscribe(cache: &mut ClientCache, set: u32, rows: &[Vec<u8>]) -> Vec<String> {
        let (mut events, mut errors) = (Vec::new(), Vec::new());
        cache.apply_rows(
            set,
            [("player", rows.iter().map(Vec::as_slice).collect())],
            &mut events,
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        summary(&events)
    }

    /// A row two queries return is held twice: it leaves with its last holder.
    #[test]
    fn rows_are_counted_per_query() {
        let mut cache = ClientCache::new(&[desc(&[0])]);
        assert_eq!(subscribe(&mut cache, 1, &[]), Vec::<String>::new());
        assert_eq!(apply(&mut cache, 1, inserts(&[row(1, "ada", 5), row(1, "ada", 5)])).0, ["+1"]);
        assert_eq!(apply(&mut cache, 1, deletes(&[row(1, "ada", 5)])).0, Vec::<String>::new());
        assert_eq!(cache.tables[0].len(), 1);
        assert_eq!(apply(&mut cache, 1, deletes(&[row(1, "ada", 5)])).0, ["-1"]);
        assert_eq!(cache.tables[0].len(), 0);
    }

    /// An update names its row by key and carries only the changed columns; the same
    /// update sent once per query raises one event.
    #[test]
    fn partial_updates_patch_the_changed_columns() {
        let mut cache = ClientCache::new(&[desc(&[0])]);
        subscribe(&mut cache, 1, &[row(7, "bo", 1), row(7, "bo", 1)]);
        let key = 7u32.to_bytes();
        let value = 42i64.to_bytes();
        let updates = RowUpdates {
            keys: [key.as_slice()].into_iter().collect(),
            changed: vec![0b100],
            values: [value.as_slice()].into_iter().collect(),
        };
        let update = TableUpdate { table_name: "player".into(), updates, ..TableUpdate::default() };
        let twice = TableUpdate { updates: update.updates.clone(), ..update.clone() };
        assert_eq!(apply(&mut cache, 1, update).0, ["7:1->42"]);
        assert_eq!(apply(&mut cache, 1, twice).0, Vec::<String>::new());
        let found = cache.tables[0].find_unique(0, &key).expect("row 7");
        assert_eq!(found.downcast_ref::<Row>(), Some(&(7, "bo".to_string(), 42)));
    }

    /// A set's rows sent afresh become the difference: what is new, changed and gone.
    #[test]
    fn rows_sent_afresh_raise_only_what_changed() {
        let mut cache = ClientCache::new(&[desc(&[0])]);
        assert_eq!(subscribe(&mut cache, 1, &[row(1, "a", 1), row(2, "b", 2)]), ["+1", "+2"]);
        let mut events = subscribe(&mut cache, 1, &[row(2, "b", 3), row(3, "c", 3)]);
        events.sort();
        assert_eq!(events, ["+3", "-1", "2:2->3"]);
        assert_eq!(cache.tables[0].len(), 2);
    }

    /// Dropping a set releases its rows; rows another set holds stay.
    #[test]
    fn dropping_a_set_keeps_what_others_hold() {
        let mut cache = ClientCache::new(&[desc(&[])]);
        subscribe(&mut cache, 1, &[row(1, "a", 1), row(2, "b", 2)]);
        subscribe(&mut cache, 2, &[row(2, "b", 2)]);
        let (mut events, mut errors) = (Vec::new(), Vec::new());
        cache.drop_set(1, &mut events, &mut errors);
        assert_eq!(summary(&events), ["-1"]);
        assert_eq!(cache.tables[0].len(), 1);
    }

    /// What does not fit the cache is an error, never a panic, and changes nothing.
    #[test]
    fn bad_input_is_an_error() {
        let mut cache = ClientCache::new(&[desc(&[0])]);
        subscribe(&mut cache, 1, &[row(1, "a", 1)]);
        let (_, errors) = apply(&mut cache, 1, inserts(&[vec![1, 2, 3]]));
        assert!(matches!(errors[..], [SdkError::Protocol(_)]), "{errors:?}");
        let (_, errors) = apply(&mut cache, 1, deletes(&[row(9, "x", 0)]));
        assert!(matches!(errors[..], [SdkError::Protocol(_)]), "{errors:?}");
        let key = 1u32.to_bytes();
        let bad_width = RowUpdates {
            keys: [key.as_slice()].into_iter().collect(),
            changed: vec![],
            values: RowList::default(),
        };
        let update =
            TableUpdate { table_name: "player".into(), updates: bad_width, ..TableUpdate::default() };
        assert!(!apply(&mut cache, 1, update).1.is_empty());
        let too_long = RowUpdates {
            keys: [key.as_slice()].into_iter().collect(),
            changed: vec![0b100],
            values: [[0u8; 12].as_slice()].into_iter().collect(),
        };
        let update = TableUpdate { table_name: "player".into(), updates: too_long, ..TableUpdate::default() };
        assert!(!apply(&mut cache, 1, update).1.is_empty());
        let unknown = TableUpdate { table_name: "ghost".into(), ..inserts(&[row(1, "a", 1)]) };
        assert_eq!(apply(&mut cache, 1, unknown.clone()).1.len(), 1);
        assert!(apply(&mut cache, 1, unknown).1.is_empty(), "reported once");
        let held = cache.tables[0].find_unique(0, &key).expect("row 1 is untouched");
        assert_eq!(held.downcast_ref::<Row>(), Some(&(1, "a".to_string(), 1)));
    }

    /// A row that leaves one query set and enters another in the same tick, with new
    /// values, is an update, whichever set the tick lists first.
    #[test]
    fn a_row_moving_between_sets_is_an_update() {
        for first_the_leaving_set in [true, false] {
            let mut cache = ClientCache::new(&[desc(&[0])]);
            subscribe(&mut cache, 1, &[row(1, "a", 1)]);
            subscribe(&mut cache, 2, &[]);
            let leave = [deletes(&[row(1, "a", 1)])];
            let enter = [inserts(&[row(1, "a", 2)])];
            let mut sets = vec![(1, leave.as_slice()), (2, enter.as_slice())];
            if !first_the_leaving_set {
                sets.reverse();
            }
            let (mut events, mut errors) = (Vec::new(), Vec::new());
            cache.apply_tick(&sets, &mut events, &mut errors);
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(summary(&events), ["1:1->2"]);
            assert_eq!(cache.tables[0].len(), 1);
        }
    }
}

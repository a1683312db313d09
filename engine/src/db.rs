//! The database (its tables) and transactions over it.
//!
//! One thread owns a [`Database`]; there is no locking anywhere below it. A [`Tx`]
//! borrows the database mutably, applies every write in place at once, and keeps an
//! undo log: enough to put back each slot, index entry and sequence exactly as it
//! was. Reads through the transaction therefore see its own writes for free, commit is
//! just building the [`Changeset`] from the rows' first images and current state, and
//! rollback replays the undo log backwards.
//! Because exactly one transaction runs at a time, nothing else can observe its
//! uncommitted state: that is what makes in-place writes safe.

use std::collections::HashMap;

use smallvec::SmallVec;
use tickdb_wasm_abi::{ColId, TableSchema, Value, encode};

use crate::changeset::{Changeset, Span};
use crate::config::EngineConfig;
use crate::error::Error;
use crate::ids::{RowId, TableId};
use crate::table::{ColumnSet, RowParts, Table};

/// All tables of one database.
#[derive(Debug, Default)]
pub struct Database {
    config: EngineConfig,
    tables: Vec<Table>,
    names: HashMap<String, TableId>,
    /// Per table, a bit per row id: set while the running transaction has touched the
    /// row. Kept here, not in the transaction, so its memory is reused; every bit a
    /// transaction sets, it clears when it ends.
    touched: Vec<Vec<u64>>,
    /// The last transaction's buffers, emptied, for the next one to reuse.
    spare: TxBuffers,
    /// The last tick applied, if any (set by the tick loop, a snapshot or a replay),
    /// and the commit log's transaction offset after it.
    last_tick: Option<u64>,
    next_tx: u64,
}

/// A transaction's working buffers. Reused from one transaction to the next, so that a
/// tick of many small transactions does not allocate for each.
#[derive(Debug, Default)]
struct TxBuffers {
    undo: Vec<Undo>,
    images: Vec<u8>,
    scratch: Vec<u8>,
    parts: RowParts,
}

/// Buffers that grew past these are freed rather than kept for the next transaction.
const SPARE_IMAGES_BYTES_MAX: usize = 1 << 20;
const SPARE_UNDO_MAX: usize = 1 << 14;

impl Database {
    pub fn new(config: EngineConfig) -> Result<Database, Error> {
        config.validate()?;
        let (tables, names, touched, spare) = Default::default();
        Ok(Database { config, tables, names, touched, spare, last_tick: None, next_tx: 0 })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Adds an empty table.
    pub fn create_table(&mut self, schema: TableSchema) -> Result<TableId, Error> {
        schema.validate()?;
        if self.names.contains_key(&schema.name) {
            return Err(Error::TableExists(schema.name));
        }
        let id = TableId(self.tables.len() as u32);
        self.names.insert(schema.name.clone(), id);
        self.tables.push(Table::new(id, schema, &self.config));
        self.touched.push(Vec::new());
        Ok(id)
    }

    pub fn table_id(&self, name: &str) -> Result<TableId, Error> {
        self.names.get(name).copied().ok_or_else(|| Error::NoSuchTable(name.into()))
    }

    pub fn table(&self, id: TableId) -> &Table {
        &self.tables[id.index()]
    }

    pub fn tables(&self) -> impl ExactSizeIterator<Item = &Table> + '_ {
        self.tables.iter()
    }

    /// The last tick whose changes the database holds.
    pub fn last_tick(&self) -> Option<u64> {
        self.last_tick
    }

    /// The commit log's transaction offset after the last tick.
    pub fn next_tx(&self) -> u64 {
        self.next_tx
    }

    /// Takes the next tick number without running a tick, and returns it: a state of
    /// its own for what changes the database outside ticks (a migration), so that
    /// its snapshot is not mistaken for one of the tick before. The tick loop goes on
    /// after it; the log has no frame for it, as for any tick that wrote nothing.
    pub fn advance_tick(&mut self) -> u64 {
        let tick = self.last_tick.map_or(1, |t| t + 1);
        self.last_tick = Some(tick);
        tick
    }

    pub(crate) fn set_log_position(&mut self, tick: u64, next_tx: u64) {
        self.last_tick = Some(tick);
        self.next_tx = next_tx;
    }

    /// Replaces table `id` with an empty one of `schema` and copies every row into it,
    /// `appended` (the encoded values of added columns) after each. A migration step:
    /// not undoable, not logged. The new schema must keep the table's name, columns
    /// (in order), keys and auto-inc columns; see [`crate::migrate`].
    pub(crate) fn rebuild_table(
        &mut self,
        id: TableId,
        schema: TableSchema,
        appended: &[u8],
    ) -> Result<(), Error> {
        schema.validate()?;
        let fresh = Table::new(id, schema, &self.config);
        let old = std::mem::replace(&mut self.tables[id.index()], fresh);
        self.touched[id.index()].clear();
        let mut copy = || {
            let mut tx = self.begin();
            let mut row = Vec::new();
            for stored in old.iter() {
                row.clear();
                stored.encode_into(&mut row);
                row.extend_from_slice(appended);
                tx.insert_exact(id, &row)?;
            }
            tx.commit_quietly();
            Ok(())
        };
        if let Err(e) = copy() {
            // The copy rolled back: the table is as it was.
            self.tables[id.index()] = old;
            return Err(e);
        }
        self.advance_sequences(id, &old.sequence_positions());
        Ok(())
    }

    /// Moves table `table`'s sequences to at least `positions` (restoring a snapshot).
    pub(crate) fn advance_sequences(&mut self, table: TableId, positions: &[u128]) {
        self.tables[table.index()].advance_sequences(positions);
    }

    /// Starts a transaction. Dropping it without [`Tx::commit`] rolls it back.
    pub fn begin(&mut self) -> Tx<'_> {
        let TxBuffers { undo, images, scratch, parts } = std::mem::take(&mut self.spare);
        debug_assert!(undo.is_empty() && images.is_empty());
        Tx { db: self, undo, images, scratch, parts, writing: false, done: false }
    }
}

/// One step to take back on rollback. `first` marks the transaction's first change to
/// that row slot: the one whose image is the row as it was before the transaction.
#[derive(Debug, Clone, Copy)]
enum Undo {
    Inserted {
        table: TableId,
        row: RowId,
        fresh: bool,
        first: bool,
    },
    Deleted {
        table: TableId,
        row: RowId,
        image: Span,
        first: bool,
    },
    Updated {
        table: TableId,
        row: RowId,
        image: Span,
        changed: u64,
        first: bool,
    },
    /// `prev` is the sequence's previous `next` value, as little-endian halves (kept
    /// as two `u64`s so that undo entries stay 8-byte aligned and small).
    Sequence {
        table: TableId,
        seq: u16,
        prev: [u64; 2],
    },
}

impl Undo {
    fn slot(&self) -> Option<(TableId, RowId)> {
        match *self {
            Undo::Inserted { table, row, .. }
            | Undo::Deleted { table, row, .. }
            | Undo::Updated { table, row, .. } => Some((table, row)),
            Undo::Sequence { .. } => None,
        }
    }
}

/// A transaction; see the module docs.
#[derive(Debug)]
pub struct Tx<'db> {
    db: &'db mut Database,
    undo: Vec<Undo>,
    /// Encodings of rows as they were before a delete or update, for the undo log and
    /// then the changeset.
    images: Vec<u8>,
    /// A row being filled with sequence values.
    scratch: Vec<u8>,
    /// Column positions of the row being written.
    parts: RowParts,
    /// Set while a table write runs: still set after a panic means the write may be
    /// half done, and the undo log cannot restore the state.
    writing: bool,
    done: bool,
}

impl Tx<'_> {
    /// The database as this transaction sees it, its own writes included.
    pub fn db(&self) -> &Database {
        self.db
    }

    pub fn table(&self, id: TableId) -> &Table {
        self.db.table(id)
    }

    /// Writes logged so far.
    pub fn undo_len(&self) -> usize {
        self.undo.len()
    }

    /// Inserts an encoded row. Zero in an auto-inc column takes the sequence's next value.
    pub fn insert(&mut self, table: TableId, row: &[u8]) -> Result<RowId, Error> {
        self.guarded(|tx| tx.insert_row(table, row, true))
    }

    /// Inserts a row exactly as given, zeros in auto-inc columns included (restoring
    /// rows from a snapshot or a log); sequences still move past the values given.
    pub fn insert_exact(&mut self, table: TableId, row: &[u8]) -> Result<RowId, Error> {
        self.guarded(|tx| tx.insert_row(table, row, false))
    }

    /// Runs one table write, marking the transaction torn until it returns.
    fn guarded<T>(&mut self, write: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        self.writing = true;
        let result = write(self);
        self.writing = false;
        result
    }

    /// Whether a table write was interrupted by a panic: then the state may be torn and
    /// rollback cannot be trusted.
    pub(crate) fn is_torn(&self) -> bool {
        self.writing
    }

    fn insert_row(&mut self, table: TableId, row: &[u8], fill: bool) -> Result<RowId, Error> {
        let t = &mut self.db.tables[table.index()];
        let parts = &mut self.parts;
        t.parse_row_into(row, parts)?;
        let mut sequences = SmallVec::new();
        let row = if t.schema().auto_inc.is_empty() {
            row
        } else {
            self.scratch.clear();
            self.scratch.extend_from_slice(row);
            sequences = t.fill_sequences(&mut self.scratch, parts, fill)?;
            &self.scratch
        };
        match t.insert(row, parts) {
            Ok((id, fresh)) => {
                let changed = sequences.iter().map(|&(seq, prev)| Undo::Sequence {
                    table,
                    seq,
                    prev: [prev as u64, (prev >> 64) as u64],
                });
                self.undo.extend(changed);
                let first = mark_touched(&mut self.db.touched[table.index()], id);
                self.undo.push(Undo::Inserted { table, row: id, fresh, first });
                Ok(id)
            }
            Err(e) => {
                sequences.iter().rev().for_each(|&(seq, prev)| t.undo_sequence(seq, prev));
                Err(e)
            }
        }
    }

    /// Inserts a row given as values, checking them against the column types.
    pub fn insert_values(&mut self, table: TableId, values: &[Value]) -> Result<RowId, Error> {
        let row = self.encode_values(table, values)?;
        self.insert(table, &row)
    }

    /// Deletes a live row.
    pub fn delete(&mut self, table: TableId, row: RowId) -> Result<(), Error> {
        self.guarded(|tx| tx.delete_row(table, row))
    }

    fn delete_row(&mut self, table: TableId, row: RowId) -> Result<(), Error> {
        let start = self.images.len();
        let t = &mut self.db.tables[table.index()];
        let Some(current) = t.get(row) else {
            return Err(Error::NoSuchRow { table: t.name().into(), row: row.0 });
        };
        current.encode_into(&mut self.images);
        t.delete(row).expect("the row is live");
        let first = mark_touched(&mut self.db.touched[table.index()], row);
        self.undo.push(Undo::Deleted { table, row, image: Span::of(&self.images, start), first });
        Ok(())
    }

    /// Replaces a live row's values in place (the row keeps its id).
    pub fn update(&mut self, table: TableId, row: RowId, new: &[u8]) -> Result<(), Error> {
        self.guarded(|tx| tx.update_row(table, row, new))
    }

    fn update_row(&mut self, table: TableId, row: RowId, new: &[u8]) -> Result<(), Error> {
        self.db.tables[table.index()].parse_row_into(new, &mut self.parts)?;
        self.update_parsed(table, row, new)
    }

    /// Updates `row` to `new`, whose columns `self.parts` already holds.
    fn update_parsed(&mut self, table: TableId, row: RowId, new: &[u8]) -> Result<(), Error> {
        let t = &mut self.db.tables[table.index()];
        let start = self.images.len();
        let changed = t.update(row, new, &self.parts, &mut self.images)?;
        let first = mark_touched(&mut self.db.touched[table.index()], row);
        let changed = changed.to_mask();
        self.undo.push(Undo::Updated { table, row, image: Span::of(&self.images, start), changed, first });
        Ok(())
    }

    /// Replaces the row whose key in unique constraint `constraint` equals the new
    /// row's (how a module updates through a unique column). Returns the row's id.
    ///
    /// `hint` is a row the caller expects it to be (the row it just read, typically):
    /// if that row holds the key, the index is not consulted.
    pub fn update_by_unique(
        &mut self,
        table: TableId,
        constraint: usize,
        new: &[u8],
        hint: Option<RowId>,
    ) -> Result<RowId, Error> {
        self.guarded(|tx| {
            let t = &tx.db.tables[table.index()];
            t.parse_row_into(new, &mut tx.parts)?;
            let hinted = hint.filter(|&row| t.row_has_key(row, constraint, new, &tx.parts));
            let Some(row) = hinted.or_else(|| t.find_unique_of_parsed(constraint, new, &tx.parts)) else {
                let (table, constraint) = (t.name().into(), t.schema().unique[constraint].name.clone());
                return Err(Error::NoRowWithKey { table, constraint });
            };
            tx.update_parsed(table, row, new)?;
            Ok(row)
        })
    }

    /// Deletes one row equal to `row`, found through the primary key if the table has
    /// one, by a scan otherwise. Returns whether a row was deleted.
    pub fn delete_equal(&mut self, table: TableId, row: &[u8]) -> Result<bool, Error> {
        let t = &self.db.tables[table.index()];
        t.parse_row_into(row, &mut self.parts)?;
        let found = match t.schema().primary_key {
            Some(pk) => {
                t.find_unique_of_parsed(pk, row, &self.parts).filter(|&id| t.row_equals(id, row, &self.parts))
            }
            None => t.iter().map(|r| r.id()).find(|&id| t.row_equals(id, row, &self.parts)),
        };
        match found {
            Some(id) => self.delete(table, id).map(|()| true),
            None => Ok(false),
        }
    }

    pub fn update_values(&mut self, table: TableId, row: RowId, values: &[Value]) -> Result<(), Error> {
        let new = self.encode_values(table, values)?;
        self.update(table, row, &new)
    }

    fn encode_values(&self, table: TableId, values: &[Value]) -> Result<Vec<u8>, Error> {
        let t = self.db.table(table);
        let all: Vec<ColId> = (0..t.schema().columns.len()).map(|c| ColId(c as u16)).collect();
        encode_columns(t, &all, values)
    }

    /// The row whose primary key is `key` (one value per key column).
    pub fn find_by_primary_key(&self, table: TableId, key: &[Value]) -> Result<Option<RowId>, Error> {
        let t = self.db.table(table);
        let Some(pk) = t.schema().primary_key else {
            return Err(Error::NoPrimaryKey { table: t.name().into() });
        };
        let encoded = encode_columns(t, &t.schema().unique[pk].columns, key)?;
        t.find_unique_encoded(pk, &encoded)
    }

    /// Makes the writes permanent and returns what they changed.
    pub fn commit(self) -> Changeset {
        let mut changeset = Changeset::default();
        self.commit_into(&mut changeset);
        changeset
    }

    /// Makes the writes permanent and folds what they changed into `changeset`, which
    /// holds the changes of transactions committed before this one (see
    /// [`Changeset::merge`]), without building a changeset of its own.
    pub fn commit_into(mut self, changeset: &mut Changeset) {
        self.done = true;
        let undo = std::mem::take(&mut self.undo);
        self.clear_touched(&undo);
        let touched = undo.iter().filter_map(|u| match *u {
            Undo::Inserted { table, row, first: true, .. } => Some((table, row, None)),
            Undo::Deleted { table, row, image, first: true }
            | Undo::Updated { table, row, image, first: true, .. } => Some((table, row, Some(image))),
            _ => None,
        });
        let db = &*self.db;
        changeset.absorb(&self.images, touched, |table, row, out| match db.table(table).get(row) {
            Some(current) => {
                current.encode_into(out);
                true
            }
            None => false,
        });
        self.undo = undo;
        self.recycle();
    }

    /// Appends what this transaction changed, as the commit log records it: the rows it
    /// removed (old images of deleted and updated rows), then the rows it added (new
    /// images of inserted and updated rows), each as `table: u32, len: u32, row`, each
    /// list after a `u32` count. Replaying removes, then adds, restores the same state.
    /// Slots left as they were are not recorded. `scratch` is working space.
    pub fn log_changes(&self, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
        let count_at = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        scratch.clear();
        let (mut removed, mut added) = (0u32, 0u32);
        for undo in &self.undo {
            let (table, row, before) = match *undo {
                Undo::Inserted { table, row, first: true, .. } => (table, row, None),
                Undo::Deleted { table, row, image, first: true }
                | Undo::Updated { table, row, image, first: true, .. } => (table, row, Some(image)),
                _ => continue,
            };
            let before = before.map(|span| &self.images[span.start..span.end]);
            // The row as it is now, appended to the added list; taken back out if the
            // slot ended as it began.
            let start = scratch.len();
            let after = self.db.table(table).get(row).map(|current| {
                scratch.extend_from_slice(&table.0.to_le_bytes());
                scratch.extend_from_slice(&0u32.to_le_bytes());
                current.encode_into(scratch);
                let len = (scratch.len() - start - 8) as u32;
                scratch[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
            });
            if before == after.map(|()| &scratch[start + 8..]) {
                scratch.truncate(start);
                continue;
            }
            if let Some(before) = before {
                push_row(out, table, before);
                removed += 1;
            }
            added += u32::from(after.is_some());
        }
        out[count_at..count_at + 4].copy_from_slice(&removed.to_le_bytes());
        out.extend_from_slice(&added.to_le_bytes());
        out.extend_from_slice(scratch);
    }

    /// Moves table `table`'s sequences to at least `positions`.
    pub(crate) fn advance_sequences(&mut self, table: TableId, positions: &[u128]) {
        self.db.advance_sequences(table, positions);
    }

    /// Makes the writes permanent without building a changeset (replaying a log).
    pub fn commit_quietly(mut self) {
        self.done = true;
        let undo = std::mem::take(&mut self.undo);
        self.clear_touched(&undo);
        self.undo = undo;
        self.recycle();
    }

    /// Empties the buffers and hands them to the next transaction, unless they grew
    /// large.
    fn recycle(&mut self) {
        self.undo.clear();
        self.images.clear();
        if self.images.capacity() > SPARE_IMAGES_BYTES_MAX || self.undo.capacity() > SPARE_UNDO_MAX {
            return;
        }
        use std::mem::take;
        let (undo, images) = (take(&mut self.undo), take(&mut self.images));
        let (scratch, parts) = (take(&mut self.scratch), take(&mut self.parts));
        self.db.spare = TxBuffers { undo, images, scratch, parts };
    }

    /// Undoes every write, restoring the exact previous state, indexes included.
    pub fn rollback(mut self) {
        self.undo_all();
    }

    fn undo_all(&mut self) {
        self.done = true;
        let mut undo = std::mem::take(&mut self.undo);
        self.clear_touched(&undo);
        for undo in undo.drain(..).rev() {
            let image = |span: Span| &self.images[span.start..span.end];
            match undo {
                Undo::Inserted { table, row, fresh, .. } => {
                    self.db.tables[table.index()].undo_insert(row, fresh)
                }
                Undo::Deleted { table, row, image: span, .. } => {
                    self.db.tables[table.index()].undo_delete(row, image(span), &mut self.parts);
                }
                Undo::Updated { table, row, image: span, changed, .. } => {
                    let changed = ColumnSet::from_mask(changed);
                    self.db.tables[table.index()].undo_update(row, image(span), changed, &mut self.parts);
                }
                Undo::Sequence { table, seq, prev } => {
                    let prev = u128::from(prev[0]) | (u128::from(prev[1]) << 64);
                    self.db.tables[table.index()].undo_sequence(seq, prev);
                }
            }
        }
        self.undo = undo;
        self.recycle();
    }

    fn clear_touched(&mut self, undo: &[Undo]) {
        for (table, row) in undo.iter().filter_map(Undo::slot) {
            let (word, bit) = (row.0 as usize / 64, row.0 % 64);
            self.db.touched[table.index()][word] &= !(1 << bit);
        }
        debug_assert!(self.db.touched.iter().all(|t| t.iter().all(|&w| w == 0)));
    }
}

fn push_row(out: &mut Vec<u8>, table: TableId, row: &[u8]) {
    out.extend_from_slice(&table.0.to_le_bytes());
    out.extend_from_slice(&(row.len() as u32).to_le_bytes());
    out.extend_from_slice(row);
}

/// Encodes one value per column of `columns`, naming the column whose value is wrong.
fn encode_columns(t: &Table, columns: &[ColId], values: &[Value]) -> Result<Vec<u8>, Error> {
    if columns.len() != values.len() {
        let (table, expected, found) = (t.name().into(), columns.len(), values.len());
        return Err(Error::ValueCount { table, expected, found });
    }
    let mut out = Vec::new();
    for (col, value) in columns.iter().zip(values) {
        let column = &t.schema().columns[col.index()];
        encode(&column.ty, value, &mut out).map_err(|source| Error::TypeMismatch {
            table: t.name().into(),
            column: column.name.clone(),
            source,
        })?;
    }
    Ok(out)
}

/// Marks `row` touched; returns whether this is its first touch in the transaction.
fn mark_touched(bits: &mut Vec<u64>, row: RowId) -> bool {
    let (word, bit) = (row.0 as usize / 64, row.0 % 64);
    if word >= bits.len() {
        bits.resize(word + 1, 0);
    }
    let first = bits[word] & (1 << bit) == 0;
    bits[word] |= 1 << bit;
    first
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.undo_all();
        }
    }
}

//! Tables: chunks of rows, their indexes and their sequences, kept consistent.
//!
//! A table accepts rows in the value encoding (the struct of its columns; see
//! [`tickdb_wasm_abi::encoding`]), checks them once on the way in, and from then on
//! moves bytes: a fixed-size column value is copied into its chunk array as is.
//!
//! The write methods here apply a change and keep every index in step, but know
//! nothing of transactions: [`Tx`](crate::Tx) calls them, logs what is needed to undo
//! them, and calls the `undo_*` methods to roll back. Each write either happens whole
//! or returns an error having changed nothing.

use std::ops::{Bound, Range};
use std::sync::Arc;

use smallvec::SmallVec;
use tickdb_wasm_abi::encoding::needs_validation;
use tickdb_wasm_abi::schema::TABLE_COLUMNS_MAX;
use tickdb_wasm_abi::{
    ColId, DecodeError, IndexKind, IndexSchema, Reader, TableSchema, Value, ValueType, decode_exact, encode,
    grid_cell, skip,
};

use crate::chunk::{CHUNK_ROWS, CHUNK_ROWS_LOG2, Chunk, ColumnLayout};
use crate::config::EngineConfig;
use crate::error::Error;
use crate::ids::{RowId, TableId};
use crate::index::{BTreeIndex, UniqueIndex, UniqueKey};
use crate::key::{self, KeyBytes};

/// Where each column's stored bytes lie in an encoded row.
pub(crate) type RowParts = Vec<Range<u32>>;

/// What reading a column from an incoming row must check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// A fixed-size value that any bytes encode validly: just take them.
    Fixed(usize),
    /// A string: length, then UTF-8.
    Utf8,
    /// Bytes: length, then anything.
    Bytes,
    /// Anything else: walk the value with [`skip`].
    Walk,
}

impl Check {
    fn of(ty: &ValueType) -> Check {
        match (ty, ty.fixed_size()) {
            (ValueType::String, _) => Check::Utf8,
            (ValueType::Bytes, _) => Check::Bytes,
            (_, Some(size)) if !needs_validation(ty) => Check::Fixed(size),
            _ => Check::Walk,
        }
    }
}

/// The most chunks a table can address with 32-bit row ids.
const TABLE_CHUNKS_MAX: usize = 1 << (32 - CHUNK_ROWS_LOG2);

/// An auto-increment sequence over one integer column.
#[derive(Debug, Clone)]
struct Sequence {
    col: ColId,
    next: u128,
    max: u128,
    size: usize,
}

/// One table's rows, indexes and sequences.
#[derive(Debug)]
pub struct Table {
    id: TableId,
    schema: Arc<TableSchema>,
    layouts: Box<[ColumnLayout]>,
    /// How to read and check each column of an incoming row.
    checks: Box<[Check]>,
    /// Per column, its byte offset in every encoded row of this table, when all the
    /// columns before it are fixed-size.
    fixed_offsets: Box<[Option<usize>]>,
    /// Columns that some unique constraint or btree index covers.
    indexed: ColumnSet,
    chunks: Vec<Chunk>,
    /// Vacant slots below the chunks' high-water marks, reused last-freed first.
    free: Vec<RowId>,
    len: usize,
    unique: Vec<UniqueIndex>,
    /// Per unique constraint: the column type, when the key is one scalar column of at
    /// most 8 bytes, so lookups can skip building key bytes (see [`key::scalar_word`]).
    word_keys: Vec<Option<ValueType>>,
    btree: Vec<BTreeIndex>,
    sequences: Vec<Sequence>,
    row_bytes_max: usize,
    rows_max: usize,
}

impl Table {
    pub(crate) fn new(id: TableId, schema: TableSchema, config: &EngineConfig) -> Table {
        let layouts = schema.columns.iter().map(|c| ColumnLayout::of(&c.ty)).collect();
        let checks = schema.columns.iter().map(|c| Check::of(&c.ty)).collect();
        let fixed_offsets = fixed_offsets(&schema);
        let mut indexed = ColumnSet::default();
        let index_columns =
            schema.unique.iter().map(|u| &u.columns).chain(schema.indexes.iter().map(|i| &i.columns));
        index_columns.flatten().for_each(|c| indexed.insert(c.index()));
        let sequences = schema.auto_inc.iter().map(|&col| new_sequence(col, &schema.columns[col.index()].ty));
        Table {
            id,
            unique: schema.unique.iter().map(|u| UniqueIndex::new(key_len(&schema, &u.columns))).collect(),
            word_keys: schema.unique.iter().map(|u| word_key_type(&schema, &u.columns)).collect(),
            btree: schema.indexes.iter().map(|_| BTreeIndex::default()).collect(),
            sequences: sequences.collect(),
            schema: Arc::new(schema),
            layouts,
            checks,
            fixed_offsets,
            indexed,
            chunks: Vec::new(),
            free: Vec::new(),
            len: 0,
            row_bytes_max: config.row_bytes_max,
            rows_max: config.table_rows_max.min(TABLE_CHUNKS_MAX * CHUNK_ROWS),
        }
    }

    pub fn id(&self) -> TableId {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.schema.name
    }

    pub fn schema(&self) -> &Arc<TableSchema> {
        &self.schema
    }

    /// Live rows.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The live row at `row`, if there is one.
    pub fn get(&self, row: RowId) -> Option<RowRef<'_>> {
        let chunk = self.chunks.get(row.chunk())?;
        chunk.is_occupied(row.slot()).then_some(RowRef { table: self, chunk, slot: row.slot(), id: row })
    }

    /// Every live row, chunk by chunk, in row id order.
    pub fn iter(&self) -> impl Iterator<Item = RowRef<'_>> + '_ {
        self.chunks.iter().enumerate().flat_map(move |(c, chunk)| {
            chunk.occupied_slots().map(move |slot| RowRef {
                table: self,
                chunk,
                slot,
                id: RowId::new(c, slot),
            })
        })
    }

    /// The chunks, for column-at-a-time scans.
    pub fn chunks(&self) -> impl Iterator<Item = ChunkView<'_>> + '_ {
        self.chunks.iter().enumerate().map(move |(index, chunk)| ChunkView { table: self, chunk, index })
    }

    /// Position of the unique constraint named `name`.
    pub fn unique_constraint(&self, name: &str) -> Result<usize, Error> {
        self.schema.unique.iter().position(|u| u.name == name).ok_or_else(|| self.no_such_index(name))
    }

    /// Position of the btree index named `name` (grid indexes are not btree indexes).
    pub fn btree_index(&self, name: &str) -> Result<usize, Error> {
        let btree = |i: &&IndexSchema| i.name == name && i.kind == IndexKind::BTree;
        self.schema.indexes.iter().position(|i| btree(&i)).ok_or_else(|| self.no_such_index(name))
    }

    fn no_such_index(&self, name: &str) -> Error {
        Error::NoSuchIndex { table: self.schema.name.clone(), name: name.into() }
    }

    /// The row holding `key` in unique constraint `constraint` (a position in
    /// `schema().unique`; the primary key, if any, is at `schema().primary_key`).
    pub fn find_unique(&self, constraint: usize, key: &[u8]) -> Option<RowId> {
        self.unique[constraint].get(key)
    }

    /// The row holding the key given as the concatenated value encodings of the
    /// constraint's columns (how a module sends it).
    pub fn find_unique_encoded(&self, constraint: usize, encoded: &[u8]) -> Result<Option<RowId>, Error> {
        if let Some(word) = self.word_keys[constraint].as_ref().and_then(|ty| key::scalar_word(ty, encoded)) {
            return Ok(self.unique[constraint].get_word(word));
        }
        let key = self.key_from_encoded(&self.schema.unique[constraint].columns, encoded)?;
        Ok(self.unique[constraint].get(&key))
    }

    /// Rows of btree index `index` between two key (prefix) bounds, in key order.
    pub fn index_range<'a>(
        &'a self,
        index: usize,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> impl Iterator<Item = RowId> + 'a {
        self.btree[index].range(lower, upper)
    }

    /// Rows of btree index `index` whose key starts with `prefix`, in key order.
    pub fn index_prefix<'a>(&'a self, index: usize, prefix: &[u8]) -> impl Iterator<Item = RowId> + 'a {
        self.btree[index].prefix(prefix)
    }

    /// The key (or key prefix, given fewer values than columns) of `values` for the
    /// index over `columns`.
    pub fn key_from_values(&self, columns: &[ColId], values: &[Value]) -> Result<KeyBytes, Error> {
        let mut encoded = Vec::new();
        for (col, value) in columns.iter().zip(values) {
            let ty = &self.schema.columns[col.index()].ty;
            encode(ty, value, &mut encoded).map_err(|e| self.invalid_key(columns, e.to_string()))?;
        }
        if values.len() > columns.len() {
            return Err(
                self.invalid_key(columns, format!("{} values for {} columns", values.len(), columns.len()))
            );
        }
        self.key_from_encoded(&columns[..values.len()], &encoded)
    }

    /// The key of the value encodings of `columns`, concatenated (how a module sends them).
    pub fn key_from_encoded(&self, columns: &[ColId], encoded: &[u8]) -> Result<KeyBytes, Error> {
        self.key_of_encoded(columns, encoded, true)
    }

    /// The key prefix of the value encodings of the leading columns of `columns`,
    /// concatenated: as many columns as `encoded` holds (a module's prefix scans).
    pub fn key_prefix_from_encoded(&self, columns: &[ColId], encoded: &[u8]) -> Result<KeyBytes, Error> {
        self.key_of_encoded(columns, encoded, false)
    }

    fn key_of_encoded(&self, columns: &[ColId], encoded: &[u8], whole: bool) -> Result<KeyBytes, Error> {
        let mut r = Reader::new(encoded);
        let mut out = KeyBytes::new();
        for col in columns {
            if !whole && r.remaining() == 0 {
                break;
            }
            let ty = &self.schema.columns[col.index()].ty;
            let start = r.position();
            skip(ty, &mut r).map_err(|e| self.invalid_key(columns, e.to_string()))?;
            key::push_encoded(ty, &mut Reader::new(&encoded[start..r.position()]), &mut out)
                .map_err(|e| self.invalid_key(columns, e.to_string()))?;
        }
        if r.remaining() != 0 {
            return Err(self.invalid_key(columns, format!("{} bytes after the last column", r.remaining())));
        }
        Ok(out)
    }

    /// The live row holding, in unique constraint `constraint`, the key of a parsed row.
    pub(crate) fn find_unique_of_parsed(
        &self,
        constraint: usize,
        row: &[u8],
        parts: &RowParts,
    ) -> Option<RowId> {
        let key = self.unique_key(constraint, |col| part(row, parts, col));
        self.unique[constraint].get_key(&key)
    }

    /// Whether live row `id` holds the parsed row's key in unique constraint
    /// `constraint`. Stored bytes are canonical, so equal bytes mean equal keys.
    pub(crate) fn row_has_key(&self, id: RowId, constraint: usize, row: &[u8], parts: &RowParts) -> bool {
        let columns = &self.schema.unique[constraint].columns;
        self.get(id).is_some_and(|live| {
            columns.iter().all(|&col| crate::small::eq(live.stored(col), part(row, parts, col.index())))
        })
    }

    /// Whether live row `id` stores exactly the parsed row.
    pub(crate) fn row_equals(&self, id: RowId, row: &[u8], parts: &RowParts) -> bool {
        self.get(id).is_some_and(|live| {
            (0..parts.len())
                .all(|col| crate::small::eq(live.stored(ColId(col as u16)), part(row, parts, col)))
        })
    }

    fn invalid_key(&self, columns: &[ColId], why: String) -> Error {
        Error::InvalidKey { columns: self.schema.describe_columns(columns), why }
    }

    /// Checks an encoded row against the schema and finds its columns.
    pub(crate) fn parse_row_into(&self, row: &[u8], parts: &mut RowParts) -> Result<(), Error> {
        if row.len() > self.row_bytes_max {
            let (table, len, max) = (self.schema.name.clone(), row.len(), self.row_bytes_max);
            return Err(Error::RowTooLarge { table, len, max });
        }
        parts.clear();
        let mut pos = 0;
        for (col, check) in self.checks.iter().enumerate() {
            // A fixed-size column only needs its bytes to be there; the reader (and its
            // error messages) is for everything else, and for a row that ends too soon.
            if let Check::Fixed(size) = *check
                && pos + size <= row.len()
            {
                parts.push(pos as u32..(pos + size) as u32);
                pos += size;
                continue;
            }
            let mut r = Reader::new(row);
            r.take(pos, "row").expect("pos is within the row");
            let part = match *check {
                Check::Fixed(size) => r.take(size, "value").map(|_| pos..pos + size),
                Check::Utf8 => r.skip_str().map(|()| pos + 4..r.position()),
                Check::Bytes => r.bytes().map(|_| pos + 4..r.position()),
                Check::Walk => skip(&self.schema.columns[col].ty, &mut r).map(|()| pos..r.position()),
            };
            let part = part.map_err(|source| self.invalid_row(col, source))?;
            pos = part.end;
            parts.push(part.start as u32..part.end as u32);
        }
        if pos != row.len() {
            return Err(Error::RowTrailingBytes { table: self.schema.name.clone(), extra: row.len() - pos });
        }
        Ok(())
    }

    /// Finds the columns of a row this table held (an undo or changeset image),
    /// without checking what was checked on the way in.
    fn split_trusted(&self, row: &[u8], parts: &mut RowParts) {
        parts.clear();
        let mut pos = 0usize;
        let len_at = |pos: usize| u32::from_le_bytes(row[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        for (col, check) in self.checks.iter().enumerate() {
            let part = match *check {
                Check::Fixed(size) => pos..pos + size,
                Check::Utf8 | Check::Bytes => pos + 4..pos + 4 + len_at(pos),
                Check::Walk => {
                    let mut r = Reader::new(&row[pos..]);
                    skip(&self.schema.columns[col].ty, &mut r).expect("images are valid rows");
                    pos..pos + r.position()
                }
            };
            pos = part.end;
            parts.push(part.start as u32..part.end as u32);
        }
        debug_assert_eq!(pos, row.len());
    }

    fn invalid_row(&self, col: usize, source: DecodeError) -> Error {
        let (table, column) = (self.schema.name.clone(), self.schema.columns[col].name.clone());
        Error::InvalidRow { table, column, source }
    }

    /// Inserts a parsed row. Returns its id, and whether its slot was never used
    /// before (which [`Table::undo_insert`] needs to know).
    pub(crate) fn insert(&mut self, row: &[u8], parts: &RowParts) -> Result<(RowId, bool), Error> {
        if self.len >= self.rows_max || (self.free.is_empty() && self.last_chunk_full_at_max()) {
            return Err(Error::TableFull { table: self.schema.name.clone(), max: self.rows_max });
        }
        // Claim each unique key for the slot the row will get, one probe per index;
        // on a clash give back the keys claimed so far.
        let id = self.next_slot();
        for i in 0..self.unique.len() {
            let key = self.unique_key(i, |col| part(row, parts, col));
            if !self.unique[i].try_insert(key, id) {
                for j in 0..i {
                    let key = self.unique_key(j, |col| part(row, parts, col));
                    self.unique[j].remove_key(&key, id);
                }
                return Err(self.unique_violation(i, row, parts));
            }
        }
        let (allocated, fresh) = self.alloc_slot();
        debug_assert_eq!(allocated, id);
        self.write_columns(id, row, parts);
        self.index_btree(id, row, parts);
        Ok((id, fresh))
    }

    /// The key of unique constraint `i`, from the stored bytes of each column.
    fn unique_key<'a>(&self, i: usize, value: impl Fn(usize) -> &'a [u8]) -> UniqueKey {
        let columns = &self.schema.unique[i].columns;
        if let Some(ty) = &self.word_keys[i] {
            let word = key::scalar_word(ty, value(columns[0].index()));
            return UniqueKey::Word(word.expect("checked rows hold valid values"));
        }
        UniqueKey::Bytes(self.key_over(columns, value))
    }

    /// The index key over `columns`, from each column's stored bytes.
    fn key_over<'a>(&self, columns: &[ColId], value: impl Fn(usize) -> &'a [u8]) -> KeyBytes {
        let mut key = KeyBytes::new();
        for col in columns {
            key::push_stored(&self.schema.columns[col.index()].ty, value(col.index()), &mut key);
        }
        key
    }

    fn last_chunk_full_at_max(&self) -> bool {
        self.chunks.len() == TABLE_CHUNKS_MAX && self.chunks.last().is_some_and(Chunk::is_full)
    }

    /// Deletes a live row.
    pub(crate) fn delete(&mut self, id: RowId) -> Result<(), Error> {
        self.check_live(id)?;
        self.unlink(id);
        self.free.push(id);
        self.chunks[id.chunk()].maybe_compact(&self.layouts);
        Ok(())
    }

    /// Replaces a live row's values with a parsed row, in place: the row keeps its id.
    /// Appends the row as it was to `image` (for the undo log), in the same pass that
    /// finds the changed columns. On error nothing changed, `image` included.
    pub(crate) fn update(
        &mut self,
        id: RowId,
        row: &[u8],
        parts: &RowParts,
        image: &mut Vec<u8>,
    ) -> Result<ColumnSet, Error> {
        self.check_live(id)?;
        let start = image.len();
        let changed = self.image_and_changes(id, row, parts, image);
        for (i, constraint) in self.schema.unique.iter().enumerate() {
            if !changed.touches(&constraint.columns) {
                continue;
            }
            let key = self.unique_key(i, |col| part(row, parts, col));
            if self.unique[i].get_key(&key).is_some_and(|holder| holder != id) {
                image.truncate(start);
                return Err(self.unique_violation(i, row, parts));
            }
        }
        self.replace(id, row, parts, changed);
        self.chunks[id.chunk()].maybe_compact(&self.layouts);
        Ok(changed)
    }

    /// Appends live row `id`'s encoding to `image` and returns the columns that the
    /// parsed row changes.
    fn image_and_changes(&self, id: RowId, row: &[u8], parts: &RowParts, image: &mut Vec<u8>) -> ColumnSet {
        let mut changed = ColumnSet::default();
        self.chunks[id.chunk()].encode_row_visiting(&self.layouts, id.slot(), image, |col, stored| {
            if !crate::small::eq(stored, part(row, parts, col)) {
                changed.insert(col);
            }
        });
        changed
    }

    /// Undoes the [`Table::insert`] that returned `id` and `fresh`, which must be the
    /// latest change to this table still standing.
    pub(crate) fn undo_insert(&mut self, id: RowId, fresh: bool) {
        self.unlink(id);
        if fresh {
            self.chunks[id.chunk()].pop_slot(id.slot());
        } else {
            self.free.push(id);
        }
    }

    /// Undoes the [`Table::delete`] of `id`, restoring the row from its encoding.
    /// `parts` is scratch space.
    pub(crate) fn undo_delete(&mut self, id: RowId, image: &[u8], parts: &mut RowParts) {
        let popped = self.free.pop();
        assert_eq!(popped, Some(id), "undo_delete must undo the latest free-list push");
        self.split_trusted(image, parts);
        for i in 0..self.unique.len() {
            let key = self.unique_key(i, |col| part(image, parts, col));
            let added = self.unique[i].try_insert(key, id);
            assert!(added, "a rolled-back delete's keys are free again");
        }
        self.write_columns(id, image, parts);
        self.index_btree(id, image, parts);
    }

    /// Undoes an update of `id`, restoring its previous values from `image`. `changed`
    /// is what [`Table::update`] returned (or a superset); `parts` is scratch space.
    pub(crate) fn undo_update(&mut self, id: RowId, image: &[u8], changed: ColumnSet, parts: &mut RowParts) {
        // The common case, such as a position update: only unindexed fixed-size columns
        // at known offsets changed, so put back just those bytes.
        let fixed_at = |col: usize| match (self.fixed_offsets[col], self.layouts[col]) {
            (Some(offset), ColumnLayout::Fixed { size }) => Some(offset..offset + size),
            _ => None,
        };
        let columns = self.layouts.len();
        let fast = !changed.intersects(&self.indexed)
            && changed.iter().all(|col| col < columns && fixed_at(col).is_some());
        if fast {
            let chunk = &mut self.chunks[id.chunk()];
            for col in changed.iter() {
                let range = fixed_at(col).expect("checked above");
                chunk.set_value(&self.layouts, col, id.slot(), &image[range], true);
            }
            return;
        }
        self.split_trusted(image, parts);
        let changed = self.changed_columns(id, image, parts);
        self.replace(id, image, parts, changed);
    }

    fn check_live(&self, id: RowId) -> Result<(), Error> {
        match self.get(id) {
            Some(_) => Ok(()),
            None => Err(Error::NoSuchRow { table: self.schema.name.clone(), row: id.0 }),
        }
    }

    fn unique_violation(&self, constraint: usize, row: &[u8], parts: &RowParts) -> Error {
        let c = &self.schema.unique[constraint];
        let values: Vec<String> = c
            .columns
            .iter()
            .map(|col| {
                let stored = &row[parts[col.index()].start as usize..parts[col.index()].end as usize];
                self.stored_value(col.index(), stored).to_string()
            })
            .collect();
        let columns = self.schema.describe_columns(&c.columns);
        Error::UniqueViolation { constraint: c.name.clone(), columns, key: values.join(", ") }
    }

    /// The slot the next [`Table::alloc_slot`] will return.
    fn next_slot(&self) -> RowId {
        if let Some(&id) = self.free.last() {
            return id;
        }
        match self.chunks.last() {
            Some(chunk) if !chunk.is_full() => RowId::new(self.chunks.len() - 1, chunk.high_water()),
            _ => RowId::new(self.chunks.len(), 0),
        }
    }

    fn alloc_slot(&mut self) -> (RowId, bool) {
        if let Some(id) = self.free.pop() {
            return (id, false);
        }
        if self.chunks.last().is_none_or(Chunk::is_full) {
            let full = !self.chunks.is_empty();
            self.chunks.push(Chunk::new(&self.layouts, full));
        }
        let c = self.chunks.len() - 1;
        let slot = self.chunks[c].push_slot(&self.layouts);
        (RowId::new(c, slot), true)
    }

    /// Writes a row's values into a vacant slot and marks it live.
    fn write_columns(&mut self, id: RowId, row: &[u8], parts: &RowParts) {
        let chunk = &mut self.chunks[id.chunk()];
        chunk.write_row(&self.layouts, id.slot(), row, parts);
        chunk.occupy(id.slot());
        self.len += 1;
    }

    fn index_btree(&mut self, id: RowId, row: &[u8], parts: &RowParts) {
        for (i, index) in self.schema.indexes.iter().enumerate() {
            let key = self.index_key(index, |col| part(row, parts, col));
            self.btree[i].insert(key, id);
        }
    }

    /// A row's key in a non-unique index: its columns' key, or for a grid, their cells.
    fn index_key<'a>(&self, index: &IndexSchema, value: impl Fn(usize) -> &'a [u8]) -> KeyBytes {
        match index.kind {
            IndexKind::BTree => self.key_over(&index.columns, value),
            IndexKind::Grid { cell_log2 } => {
                let mut cells = [0i64; 3];
                for (d, col) in index.columns.iter().enumerate() {
                    let v = key::stored_number(&self.schema.columns[col.index()].ty, value(col.index()));
                    cells[d] = grid_cell(v, cell_log2);
                }
                key::grid_key(&cells[..index.columns.len()])
            }
        }
    }

    /// Removes a live row from every index and vacates its slot.
    fn unlink(&mut self, id: RowId) {
        for i in 0..self.unique.len() {
            let key = self.unique_key(i, |col| self.stored(id, col));
            self.unique[i].remove_key(&key, id);
        }
        for (i, index) in self.schema.indexes.iter().enumerate() {
            let key = self.index_key(index, |col| self.stored(id, col));
            self.btree[i].remove(key, id);
        }
        self.chunks[id.chunk()].vacate(&self.layouts, id.slot());
        self.len -= 1;
    }

    /// Which columns of live row `id` the parsed row changes.
    fn changed_columns(&self, id: RowId, row: &[u8], parts: &RowParts) -> ColumnSet {
        let chunk = &self.chunks[id.chunk()];
        let mut changed = ColumnSet::default();
        for (col, range) in parts.iter().enumerate() {
            let new = &row[range.start as usize..range.end as usize];
            if !crate::small::eq(chunk.value(&self.layouts, col, id.slot()), new) {
                changed.insert(col);
            }
        }
        changed
    }

    /// Overwrites the `changed` columns of a live row, and the index keys over them.
    fn replace(&mut self, id: RowId, row: &[u8], parts: &RowParts, changed: ColumnSet) {
        for (i, constraint) in self.schema.unique.iter().enumerate() {
            if changed.touches(&constraint.columns) {
                let old = self.unique_key(i, |col| self.stored(id, col));
                let new = self.unique_key(i, |col| part(row, parts, col));
                self.unique[i].remove_key(&old, id);
                self.unique[i].insert_key(new, id);
            }
        }
        for (i, index) in self.schema.indexes.iter().enumerate() {
            if changed.touches(&index.columns) {
                let old = self.index_key(index, |col| self.stored(id, col));
                let new = self.index_key(index, |col| part(row, parts, col));
                self.btree[i].remove(old, id);
                self.btree[i].insert(new, id);
            }
        }
        let chunk = &mut self.chunks[id.chunk()];
        for col in changed.iter() {
            chunk.set_value(&self.layouts, col, id.slot(), part(row, parts, col), true);
        }
    }

    fn stored(&self, id: RowId, col: usize) -> &[u8] {
        self.chunks[id.chunk()].value(&self.layouts, col, id.slot())
    }

    /// Whether two encoded rows this table held have the same key in unique constraint
    /// `constraint`. Key columns at fixed offsets are compared in place, without
    /// walking the rows.
    pub(crate) fn same_unique_key(&self, constraint: usize, a: &[u8], b: &[u8]) -> bool {
        let columns = &self.schema.unique[constraint].columns;
        let fixed = |col: &ColId| match (self.fixed_offsets[col.index()], self.layouts[col.index()]) {
            (Some(offset), ColumnLayout::Fixed { size }) => Some(offset..offset + size),
            _ => None,
        };
        if columns.iter().all(|c| fixed(c).is_some()) {
            return columns.iter().all(|c| {
                let range = fixed(c).expect("checked above");
                a[range.clone()] == b[range]
            });
        }
        self.unique_key_of_row(constraint, a) == self.unique_key_of_row(constraint, b)
    }

    /// The key in unique constraint `constraint` of an encoded row this table held (or
    /// holds), as [`Table::find_unique`] takes it.
    pub fn unique_key_bytes_of_row(&self, constraint: usize, row: &[u8]) -> KeyBytes {
        let mut parts = RowParts::new();
        self.split_trusted(row, &mut parts);
        self.key_over(&self.schema.unique[constraint].columns, |col| part(row, &parts, col))
    }

    /// The key in unique constraint `constraint` of an encoded row this table held.
    pub(crate) fn unique_key_of_row(&self, constraint: usize, row: &[u8]) -> UniqueKey {
        let mut parts = RowParts::new();
        self.split_trusted(row, &mut parts);
        self.unique_key(constraint, |col| part(row, &parts, col))
    }

    fn stored_value(&self, col: usize, stored: &[u8]) -> Value {
        let ty = &self.schema.columns[col].ty;
        match ty {
            ValueType::String => Value::String(String::from_utf8_lossy(stored).into()),
            ValueType::Bytes => Value::Bytes(stored.into()),
            _ => decode_exact(ty, stored).expect("stored values are valid encodings"),
        }
    }

    /// Fills the row's zero auto-inc columns from their sequences and moves sequences
    /// past explicit values. Returns each changed sequence's previous `next`.
    /// With `fill` unset (restoring rows as they were), zeros stay zeros and only the
    /// moving past explicit values happens.
    pub(crate) fn fill_sequences(
        &mut self,
        row: &mut [u8],
        parts: &RowParts,
        fill: bool,
    ) -> Result<SmallVec<[(u16, u128); 2]>, Error> {
        let mut changed = SmallVec::new();
        for i in 0..self.sequences.len() {
            let seq = &mut self.sequences[i];
            let range = parts[seq.col.index()].start as usize..parts[seq.col.index()].end as usize;
            let value = &mut row[range];
            let mut le = [0u8; 16];
            le[..seq.size].copy_from_slice(value);
            let current = u128::from_le_bytes(le);
            let prev = seq.next;
            if current == 0 && fill {
                if seq.next > seq.max {
                    let column = self.schema.columns[seq.col.index()].name.clone();
                    // Leave no trace: put back the sequences this row already moved.
                    for &(j, prev) in changed.iter().rev() {
                        self.sequences[usize::from(j)].next = prev;
                    }
                    return Err(Error::SequenceExhausted { table: self.schema.name.clone(), column });
                }
                value.copy_from_slice(&seq.next.to_le_bytes()[..seq.size]);
                seq.next += 1;
            } else if current != 0 && current <= seq.max && current >= seq.next {
                seq.next = current + 1;
            }
            if seq.next != prev {
                changed.push((i as u16, prev));
            }
        }
        Ok(changed)
    }

    pub(crate) fn undo_sequence(&mut self, seq: u16, prev: u128) {
        self.sequences[usize::from(seq)].next = prev;
    }

    /// The next value of each auto-inc sequence, in `schema().auto_inc` order (for
    /// snapshots: values handed out and deleted since must not be handed out again).
    pub fn sequence_positions(&self) -> Vec<u128> {
        self.sequences.iter().map(|s| s.next).collect()
    }

    /// Moves each sequence to at least the given next value (restoring a snapshot).
    pub(crate) fn advance_sequences(&mut self, positions: &[u128]) {
        for (seq, &next) in self.sequences.iter_mut().zip(positions) {
            seq.next = seq.next.max(next);
        }
    }

    /// Heap bytes of the rows: chunks and free list, by capacity.
    pub fn heap_bytes(&self) -> usize {
        let chunks: usize = self.chunks.iter().map(Chunk::heap_bytes).sum();
        chunks + self.chunks.capacity() * size_of::<Chunk>() + self.free.capacity() * size_of::<RowId>()
    }

    /// Heap bytes of the indexes.
    pub fn index_heap_bytes(&self) -> usize {
        self.unique.iter().map(UniqueIndex::heap_bytes).sum::<usize>()
            + self.btree.iter().map(BTreeIndex::heap_bytes).sum::<usize>()
    }
}

/// The stored bytes of column `col` of a parsed row.
fn part<'a>(row: &'a [u8], parts: &RowParts, col: usize) -> &'a [u8] {
    &row[parts[col].start as usize..parts[col].end as usize]
}

fn fixed_offsets(schema: &TableSchema) -> Box<[Option<usize>]> {
    let mut offset = Some(0);
    let mut out = Vec::with_capacity(schema.columns.len());
    for column in &schema.columns {
        out.push(offset);
        offset = offset.zip(column.ty.fixed_size()).map(|(o, size)| o + size);
    }
    out.into()
}

/// A set of column positions, as a bitmap wide enough for every table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ColumnSet([u64; TABLE_COLUMNS_MAX.div_ceil(64)]);

impl ColumnSet {
    /// Bit `c` for column `c < 63`; bit 63 for "some column from 63 on", which
    /// [`ColumnSet::from_mask`] turns back into every column from 63 on.
    pub(crate) fn to_mask(self) -> u64 {
        let high = self.0[0] >> 63 != 0 || self.0[1..].iter().any(|&w| w != 0);
        (self.0[0] & !(1 << 63)) | (u64::from(high) << 63)
    }

    pub(crate) fn from_mask(mask: u64) -> ColumnSet {
        let high = if mask >> 63 != 0 { u64::MAX } else { 0 };
        let mut set = ColumnSet([high; TABLE_COLUMNS_MAX.div_ceil(64)]);
        set.0[0] = mask | (high & (1 << 63));
        set
    }

    fn intersects(&self, other: &ColumnSet) -> bool {
        self.0.iter().zip(&other.0).any(|(a, b)| a & b != 0)
    }

    /// The columns in the set, in ascending order.
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    w * 64 + bit
                })
            })
        })
    }

    fn insert(&mut self, col: usize) {
        self.0[col / 64] |= 1 << (col % 64);
    }

    fn contains(&self, col: usize) -> bool {
        self.0[col / 64] & (1 << (col % 64)) != 0
    }

    /// Whether any of `columns` is in the set.
    fn touches(&self, columns: &[ColId]) -> bool {
        columns.iter().any(|c| self.contains(c.index()))
    }
}

/// The length of every key over `columns`, if it is the same for all values: the key
/// encoding of a scalar is as long as its value encoding.
fn key_len(schema: &TableSchema, columns: &[ColId]) -> Option<usize> {
    use ValueType as T;
    columns
        .iter()
        .map(|c| match &schema.columns[c.index()].ty {
            T::Array(_) | T::Option(_) | T::Product(_) | T::Sum(_) | T::String | T::Bytes => None,
            scalar => scalar.fixed_size(),
        })
        .sum()
}

fn word_key_type(schema: &TableSchema, columns: &[ColId]) -> Option<ValueType> {
    let [col] = columns else { return None };
    let ty = &schema.columns[col.index()].ty;
    (key_len(schema, columns)? <= 8).then(|| ty.clone())
}

fn new_sequence(col: ColId, ty: &ValueType) -> Sequence {
    let size = ty.fixed_size().expect("auto_inc columns are integers");
    let signed =
        matches!(ty, ValueType::I8 | ValueType::I16 | ValueType::I32 | ValueType::I64 | ValueType::I128);
    let bits = size as u32 * 8 - u32::from(signed);
    // A u128 sequence stops one short of u128::MAX, so that `next` (one past the last
    // value handed out) always fits.
    let max = if bits == 128 { u128::MAX - 1 } else { (1u128 << bits) - 1 };
    Sequence { col, next: 1, max, size }
}

/// A live row, borrowed from its table.
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    table: &'a Table,
    chunk: &'a Chunk,
    slot: usize,
    id: RowId,
}

impl<'a> RowRef<'a> {
    pub fn id(&self) -> RowId {
        self.id
    }

    /// The stored bytes of column `col`: its value encoding, or the bare payload of a
    /// `String` or `Bytes` column.
    pub fn stored(&self, col: ColId) -> &'a [u8] {
        self.chunk.value(&self.table.layouts, col.index(), self.slot)
    }

    /// Appends the row's value encoding.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.chunk.encode_row(&self.table.layouts, self.slot, out);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub fn value(&self, col: ColId) -> Value {
        self.table.stored_value(col.index(), self.stored(col))
    }

    pub fn to_values(&self) -> Vec<Value> {
        (0..self.table.layouts.len()).map(|c| self.value(ColId(c as u16))).collect()
    }
}

/// One chunk of a table, for column-at-a-time scans.
#[derive(Debug, Clone, Copy)]
pub struct ChunkView<'a> {
    table: &'a Table,
    chunk: &'a Chunk,
    index: usize,
}

impl<'a> ChunkView<'a> {
    /// Live rows in this chunk.
    pub fn len(&self) -> usize {
        self.chunk.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunk.is_empty()
    }

    /// Whether every slot below the high-water mark is live, so that a column slice
    /// holds live values only.
    pub fn is_dense(&self) -> bool {
        self.chunk.len() == self.chunk.high_water()
    }

    /// A fixed-size column as a typed slice, one element per slot up to the high-water
    /// mark, vacant slots included (see [`ChunkView::is_dense`] and
    /// [`ChunkView::occupied_slots`]). `None` unless `T` has the column's size and
    /// an alignment of at most 8.
    pub fn column<T: bytemuck::Pod>(&self, col: ColId) -> Option<&'a [T]> {
        let ColumnLayout::Fixed { size } = self.table.layouts[col.index()] else { return None };
        if size != size_of::<T>() {
            return None;
        }
        let bytes = &self.chunk.column_bytes(col.index())[..self.chunk.high_water() * size];
        bytemuck::try_cast_slice(bytes).ok()
    }

    /// Live slots in ascending order.
    pub fn occupied_slots(&self) -> impl Iterator<Item = usize> + 'a {
        self.chunk.occupied_slots()
    }

    pub fn row_id(&self, slot: usize) -> RowId {
        RowId::new(self.index, slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compact mask keeps columns below 63 exactly and turns any higher column into
    /// "every column from 63 on", never losing a changed column.
    #[test]
    fn column_set_mask_round_trip() {
        let mut low = ColumnSet::default();
        [0, 5, 62].into_iter().for_each(|c| low.insert(c));
        assert_eq!(ColumnSet::from_mask(low.to_mask()), low);
        assert_eq!(low.iter().collect::<Vec<_>>(), vec![0, 5, 62]);
        let mut high = low;
        high.insert(200);
        let back = ColumnSet::from_mask(high.to_mask());
        assert!([0, 5, 62, 63, 200, 254].into_iter().all(|c| back.contains(c)));
        assert!(!back.contains(1));
    }
}

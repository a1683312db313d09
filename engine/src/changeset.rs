//! Changesets: what committed transactions changed.
//!
//! A [`Changeset`] is kept per row slot: for each slot a transaction touched, the row
//! it held before (if any) and the row it holds after (if any), both in the value
//! encoding. Because rows change in place and a slot's states form one chain, merging
//! the changesets of consecutive transactions is just keeping the first *before* and
//! the last *after* of each slot. That is how the tick loop folds many transactions into
//! one tick changeset, and why a row inserted and deleted within a tick never shows.
//!
//! [`Changeset::table_changes`] resolves slots into what the commit log and subscribers
//! want, per table: inserted rows, deleted rows, and updates, recognised by primary key
//! (also when a row was deleted and a row with the same key inserted elsewhere).

use std::collections::BTreeMap;

use hashbrown::HashMap;

use crate::db::Database;
use crate::ids::{RowId, TableId};
use crate::index::UniqueKey;

/// A byte range in a changeset's image buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn of(buf: &[u8], start: usize) -> Span {
        Span { start, end: buf.len() }
    }
}

#[derive(Debug, Clone, Copy)]
struct SlotChange {
    table: TableId,
    row: RowId,
    before: Option<Span>,
    after: Option<Span>,
}

/// Per-slot changes of one or more committed transactions; see the module docs.
#[derive(Debug, Default)]
pub struct Changeset {
    images: Vec<u8>,
    slots: Vec<SlotChange>,
    /// Where each slot is in `slots`; built on the first merge that needs it.
    positions: Option<HashMap<(TableId, RowId), usize>>,
    /// An emptied position map, kept by [`Changeset::clear`] for reuse.
    spare_positions: HashMap<(TableId, RowId), usize>,
}

impl Changeset {
    /// Folds in a transaction committed after the changes already here: its first
    /// touch of each slot, in order, with the span in `images` of the row the slot held
    /// before (`None` if none). `after` is called once per slot, in the same order, and
    /// appends the slot's current row to the buffer it is given, if it has one.
    pub(crate) fn absorb(
        &mut self,
        images: &[u8],
        first_touches: impl Iterator<Item = (TableId, RowId, Option<Span>)>,
        mut after: impl FnMut(TableId, RowId, &mut Vec<u8>) -> bool,
    ) {
        // A transaction touches each slot first only once, so into an empty changeset
        // its slots go without lookups; the position map is built when first needed.
        let mut positions = (!self.slots.is_empty()).then(|| self.take_positions());
        let most = first_touches.size_hint().1.unwrap_or(0);
        self.slots.reserve(most);
        for (table, row, before) in first_touches {
            let start = self.images.len();
            let after = after(table, row, &mut self.images).then(|| Span::of(&self.images, start));
            if self.slots.is_empty() {
                // Guess the room for all after-images from the first, rather than let a
                // large commit grow (and copy) the buffer a dozen times.
                self.images.reserve((self.images.len() - start) * most);
            }
            match positions.as_ref().and_then(|p| p.get(&(table, row))) {
                Some(&i) => self.slots[i].after = after,
                None => {
                    let before = before.map(|span| {
                        let start = self.images.len();
                        self.images.extend_from_slice(&images[span.start..span.end]);
                        Span::of(&self.images, start)
                    });
                    if let Some(p) = positions.as_mut() {
                        p.insert((table, row), self.slots.len());
                    }
                    self.slots.push(SlotChange { table, row, before, after });
                }
            }
        }
        self.positions = positions;
    }

    fn take_positions(&mut self) -> HashMap<(TableId, RowId), usize> {
        let slots = &self.slots;
        let spare = &mut self.spare_positions;
        self.positions.take().unwrap_or_else(|| {
            let mut positions = std::mem::take(spare);
            positions.extend(slots.iter().enumerate().map(|(i, s)| ((s.table, s.row), i)));
            positions
        })
    }

    /// Empties the changeset, keeping its buffers for the next tick's changes.
    pub fn clear(&mut self) {
        self.images.clear();
        self.slots.clear();
        if let Some(mut positions) = self.positions.take() {
            positions.clear();
            self.spare_positions = positions;
        }
    }

    /// Whether no slot holds a different row than before. A changeset that is not empty
    /// can still resolve to no [`TableChanges`], when a row left a slot and came back
    /// unchanged in another one.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|s| self.image(s.before) == self.image(s.after))
    }

    fn image(&self, span: Option<Span>) -> Option<&[u8]> {
        span.map(|s| &self.images[s.start..s.end])
    }

    /// Folds in the changes of a transaction committed after this one.
    pub fn merge(&mut self, later: Changeset) {
        if self.slots.is_empty() {
            *self = later;
            return;
        }
        // A changeset holds each slot once, as a transaction's first touches do, so
        // `absorb` takes its slots as they are: before images, and after images copied
        // over (`absorb` asks for each slot's after image once, in order).
        let touches = later.slots.iter().map(|c| (c.table, c.row, c.before));
        let mut afters = later.slots.iter().map(|c| c.after);
        self.absorb(&later.images, touches, |_, _, out| match afters.next().flatten() {
            Some(span) => {
                out.extend_from_slice(&later.images[span.start..span.end]);
                true
            }
            None => false,
        });
    }

    /// Resolves slots into per-table inserts, deletes and updates, tables in id order
    /// and rows in the order they were first touched. `db` supplies the schemas.
    pub fn table_changes(&self, db: &Database) -> Vec<TableChanges> {
        let mut by_table: BTreeMap<TableId, Vec<&SlotChange>> = BTreeMap::new();
        for slot in &self.slots {
            if self.image(slot.before) != self.image(slot.after) {
                by_table.entry(slot.table).or_default().push(slot);
            }
        }
        let changes = by_table.into_iter().map(|(table, slots)| self.resolve_table(db, table, &slots));
        changes.filter(|c| c.rows_changed() > 0 || !c.moved.is_empty()).collect()
    }

    fn resolve_table(&self, db: &Database, table_id: TableId, slots: &[&SlotChange]) -> TableChanges {
        let mut out = TableChanges { table: table_id, ..TableChanges::default() };
        let table = db.table(table_id);
        let Some(pk) = table.schema().primary_key else {
            for slot in slots {
                if let Some(before) = self.image(slot.before) {
                    out.deletes.push(before);
                }
                if let Some(after) = self.image(slot.after) {
                    out.inserts.push(after);
                }
            }
            return out;
        };
        // Size the lists for the common case, every slot an update, so they grow once.
        let size = |span: Option<Span>| span.map_or(0, |s| s.end - s.start);
        let before: usize = slots.iter().map(|s| size(s.before)).sum();
        let after: usize = slots.iter().map(|s| size(s.after)).sum();
        out.updates_old.reserve(slots.len(), before);
        out.updates_new.reserve(slots.len(), after);
        let key = |bytes: &[u8]| table.unique_key_of_row(pk, bytes);
        let mut deletes: Vec<(UniqueKey, &[u8])> = Vec::new();
        let mut inserts: Vec<(UniqueKey, &[u8])> = Vec::new();
        for slot in slots {
            let (before, after) = (self.image(slot.before), self.image(slot.after));
            if let (Some(b), Some(a)) = (before, after)
                && table.same_unique_key(pk, b, a)
            {
                // The common case: a row updated in place.
                out.push_update(b, a);
                continue;
            }
            let before = before.map(|b| (key(b), b));
            let after = after.map(|a| (key(a), a));
            match (before, after) {
                (Some((kb, b)), Some((ka, a))) if kb == ka => out.push_update(b, a),
                (before, after) => {
                    deletes.extend(before);
                    inserts.extend(after);
                }
            }
        }
        let mut unmatched: HashMap<&UniqueKey, usize> =
            deletes.iter().enumerate().map(|(i, (k, _))| (k, i)).collect();
        let mut paired = vec![false; deletes.len()];
        for (k, a) in &inserts {
            match unmatched.remove(k) {
                Some(i) => {
                    paired[i] = true;
                    // A row deleted and inserted back unchanged (in another slot) did not change.
                    if deletes[i].1 != *a {
                        out.push_update(deletes[i].1, a);
                    } else {
                        out.moved.push(a);
                    }
                }
                None => out.inserts.push(a),
            }
        }
        for ((_, b), _) in deletes.iter().zip(&paired).filter(|(_, p)| !**p) {
            out.deletes.push(b);
        }
        out
    }
}

/// A list of encoded rows in one buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowList {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl RowList {
    /// Makes room for `rows` more rows of `bytes` bytes in all.
    pub fn reserve(&mut self, rows: usize, bytes: usize) {
        self.ends.reserve(rows);
        self.bytes.reserve(bytes);
    }

    pub fn push(&mut self, row: &[u8]) {
        self.bytes.extend_from_slice(row);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// The rows' bytes, all together.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.bytes[start..end])
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.get(i).expect("index in range"))
    }
}

/// What committed transactions did to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableChanges {
    pub table: TableId,
    pub inserts: RowList,
    pub deletes: RowList,
    /// Old versions of updated rows; `updates_new[i]` is the new version of `updates_old[i]`.
    pub updates_old: RowList,
    pub updates_new: RowList,
    /// Rows deleted and inserted back unchanged, now in another slot. Their content did
    /// not change, so they are in no list above; a reader that walks a table by row id
    /// across ticks (a sliced scan) needs them, since they moved.
    pub moved: RowList,
}

impl TableChanges {
    fn push_update(&mut self, old: &[u8], new: &[u8]) {
        self.updates_old.push(old);
        self.updates_new.push(new);
    }

    /// `(old, new)` pairs of updated rows.
    pub fn updates(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.updates_old.iter().zip(self.updates_new.iter())
    }

    /// Rows inserted, deleted or updated.
    pub fn rows_changed(&self) -> usize {
        self.inserts.len() + self.deletes.len() + self.updates_old.len()
    }
}

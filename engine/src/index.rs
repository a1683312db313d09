//! Indexes map keys (see [`crate::key`]) to row ids.
//!
//! - [`UniqueIndex`] backs primary keys and unique constraints: a hash map from key to
//!   the one row holding it. Hashing won over a btree for this in `benches/storage.rs`
//!   (point lookup of a `u64` key in 1M: see BENCHMARKS.md), and unique constraints are
//!   only ever probed by equality. A range over a primary key needs a btree index too.
//!   The hasher is randomly seeded, so clients cannot pick keys that collide; nothing
//!   ever iterates a hash index, so the seed cannot leak into results.
//! - [`BTreeIndex`] backs `#[index(btree)]`: an ordered set of `(key, row)` pairs, so
//!   duplicate keys are fine and point, prefix and range scans are one ordered walk.
//!
//! Indexes hold no row data and never decide anything: the [`Table`](crate::Table)
//! builds keys, checks constraints and keeps every index in step with its rows.

use std::collections::BTreeSet;
use std::ops::Bound;

use hashbrown::HashMap;

use crate::ids::RowId;
use crate::key::{KeyBytes, prefix_successor};

/// A primary key or unique constraint: at most one row per key.
#[derive(Debug, Default)]
pub struct UniqueIndex {
    map: HashMap<KeyBytes, RowId>,
}

impl UniqueIndex {
    pub fn get(&self, key: &[u8]) -> Option<RowId> {
        self.map.get(key).copied()
    }

    /// Adds `key`; the caller has checked that it is free.
    pub fn insert(&mut self, key: KeyBytes, row: RowId) {
        let previous = self.map.insert(key, row);
        debug_assert!(previous.is_none(), "unique index insert over an existing key");
    }

    pub fn remove(&mut self, key: &[u8], row: RowId) {
        let removed = self.map.remove(key);
        debug_assert_eq!(removed, Some(row), "unique index entry missing or pointing elsewhere");
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn reserve(&mut self, additional: usize) {
        self.map.reserve(additional);
    }

    /// Heap bytes, by capacity (entries plus hashbrown's control bytes), not counting
    /// keys longer than the inline size.
    pub fn heap_bytes(&self) -> usize {
        self.map.capacity() * (size_of::<(KeyBytes, RowId)>() + 1)
    }
}

/// An ordered, non-unique index.
#[derive(Debug, Default)]
pub struct BTreeIndex {
    set: BTreeSet<(KeyBytes, RowId)>,
}

impl BTreeIndex {
    pub fn insert(&mut self, key: KeyBytes, row: RowId) {
        let added = self.set.insert((key, row));
        debug_assert!(added, "btree index entry added twice");
    }

    pub fn remove(&mut self, key: KeyBytes, row: RowId) {
        let removed = self.set.remove(&(key, row));
        debug_assert!(removed, "btree index entry missing");
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Rows whose key lies between the bounds, in key order. A bound may be a key
    /// *prefix* (the leading columns of a multi-column index); it then compares the way
    /// SQL compares those leading columns: `Included(p)` as a lower bound takes every key
    /// starting with `p`, `Excluded(p)` none of them, and likewise for upper bounds.
    pub fn range(&self, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> impl Iterator<Item = RowId> + '_ {
        let lower = match lower {
            Bound::Included(p) => Some(Bound::Included((KeyBytes::from_slice(p), RowId(0)))),
            Bound::Excluded(p) => prefix_successor(p).map(|s| Bound::Included((s, RowId(0)))),
            Bound::Unbounded => Some(Bound::Unbounded),
        };
        let upper = match upper {
            Bound::Included(p) => match prefix_successor(p) {
                Some(s) => Bound::Excluded((s, RowId(0))),
                None => Bound::Unbounded,
            },
            Bound::Excluded(p) => Bound::Excluded((KeyBytes::from_slice(p), RowId(0))),
            Bound::Unbounded => Bound::Unbounded,
        };
        let empty = match (&lower, &upper) {
            (None, _) => true,
            (Some(Bound::Included(l)), Bound::Excluded(u)) => l >= u,
            _ => false,
        };
        let range = match lower {
            Some(lower) if !empty => Some(self.set.range((lower, upper))),
            _ => None,
        };
        range.into_iter().flatten().map(|(_, row)| *row)
    }

    /// Rows whose key starts with `prefix` (all rows for an empty prefix), in key order.
    pub fn prefix(&self, prefix: &[u8]) -> impl Iterator<Item = RowId> + '_ {
        self.range(Bound::Included(prefix), Bound::Included(prefix))
    }

    /// Heap bytes, estimated from entry size (BTreeSet nodes are about 2/3 full).
    pub fn heap_bytes(&self) -> usize {
        self.set.len() * size_of::<(KeyBytes, RowId)>() * 3 / 2
    }
}

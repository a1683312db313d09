//! Indexes map keys (see [`crate::key`]) to row ids.
//!
//! - [`UniqueIndex`] backs primary keys and unique constraints: a hash map from key to
//!   the one row holding it, with short fixed-length keys stored inline. Hashing won over a btree for this in `benches/storage.rs`
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
use crate::key::{KeyBytes, key_word, prefix_successor};

/// A primary key or unique constraint: at most one row per key.
///
/// Keys of a fixed length (scalar key columns) are stored inline in the hash table, as
/// one `u64` for up to 8 bytes (ids, counters) or a 32-byte array (identities, pairs),
/// so that the common keys cost no allocation and little memory; other keys (strings,
/// options) are stored as [`KeyBytes`].
#[derive(Debug)]
pub enum UniqueIndex {
    Word { len: usize, map: HashMap<u64, RowId> },
    Wide { len: usize, map: HashMap<[u8; 32], RowId> },
    Bytes(HashMap<KeyBytes, RowId>),
}

/// A key as a unique index stores it: an integer for a key over one scalar column of
/// at most 8 bytes (see [`crate::key::key_word`]), bytes otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UniqueKey {
    Word(u64),
    Bytes(KeyBytes),
}

fn wide(key: &[u8]) -> [u8; 32] {
    if let Ok(bytes) = <[u8; 32]>::try_from(key) {
        return bytes;
    }
    let mut bytes = [0u8; 32];
    bytes[..key.len()].copy_from_slice(key);
    bytes
}

impl UniqueIndex {
    /// An index for keys that all have `key_len` bytes, or of varying length (`None`).
    pub fn new(key_len: Option<usize>) -> Self {
        match key_len {
            Some(len) if len <= 8 => UniqueIndex::Word { len, map: HashMap::default() },
            Some(len) if len <= 32 => UniqueIndex::Wide { len, map: HashMap::default() },
            _ => UniqueIndex::Bytes(HashMap::default()),
        }
    }

    /// Looks up a key given as [`key_word`] of its bytes; only for `Word` indexes.
    pub fn get_word(&self, word: u64) -> Option<RowId> {
        match self {
            UniqueIndex::Word { map, .. } => map.get(&word).copied(),
            _ => None,
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<RowId> {
        match self {
            // A key of another length (a prefix, say) cannot be in a fixed-length index.
            UniqueIndex::Word { len, map } => {
                (key.len() == *len).then(|| map.get(&key_word(key)).copied())?
            }
            UniqueIndex::Wide { len, map } => (key.len() == *len).then(|| map.get(&wide(key)).copied())?,
            UniqueIndex::Bytes(map) => map.get(key).copied(),
        }
    }

    pub fn get_key(&self, key: &UniqueKey) -> Option<RowId> {
        match key {
            UniqueKey::Word(word) => self.get_word(*word),
            UniqueKey::Bytes(bytes) => self.get(bytes),
        }
    }

    /// Adds `key` for `row` if no row holds it yet; returns whether it did.
    pub fn try_insert(&mut self, key: UniqueKey, row: RowId) -> bool {
        use hashbrown::hash_map::Entry;
        fn claim<K: std::hash::Hash + Eq>(map: &mut HashMap<K, RowId>, key: K, row: RowId) -> bool {
            match map.entry(key) {
                Entry::Occupied(_) => false,
                Entry::Vacant(slot) => {
                    slot.insert(row);
                    true
                }
            }
        }
        match (self, key) {
            (UniqueIndex::Word { map, .. }, UniqueKey::Word(word)) => claim(map, word, row),
            (UniqueIndex::Word { map, .. }, UniqueKey::Bytes(bytes)) => claim(map, key_word(&bytes), row),
            (UniqueIndex::Wide { map, .. }, UniqueKey::Bytes(bytes)) => claim(map, wide(&bytes), row),
            (UniqueIndex::Bytes(map), UniqueKey::Bytes(bytes)) => claim(map, bytes, row),
            (_, UniqueKey::Word(_)) => unreachable!("word keys only go to word indexes"),
        }
    }

    /// Adds `key`; the caller has checked that it is free.
    pub fn insert_key(&mut self, key: UniqueKey, row: RowId) {
        match (self, key) {
            (UniqueIndex::Word { map, .. }, UniqueKey::Word(word)) => {
                let previous = map.insert(word, row);
                assert!(previous.is_none(), "unique index insert over an existing key");
            }
            (index, UniqueKey::Bytes(bytes)) => index.insert(bytes, row),
            (_, UniqueKey::Word(_)) => unreachable!("word keys only go to word indexes"),
        }
    }

    pub fn remove_key(&mut self, key: &UniqueKey, row: RowId) {
        match (self, key) {
            (UniqueIndex::Word { map, .. }, UniqueKey::Word(word)) => {
                let removed = map.remove(word);
                assert_eq!(removed, Some(row), "unique index entry missing or pointing elsewhere");
            }
            (index, UniqueKey::Bytes(bytes)) => index.remove(bytes, row),
            (_, UniqueKey::Word(_)) => unreachable!("word keys only go to word indexes"),
        }
    }

    /// Adds `key`; the caller has checked that it is free.
    pub fn insert(&mut self, key: KeyBytes, row: RowId) {
        let previous = match self {
            UniqueIndex::Word { len, map } => {
                assert_eq!(key.len(), *len, "key of the wrong length for its index");
                map.insert(key_word(&key), row)
            }
            UniqueIndex::Wide { len, map } => {
                assert_eq!(key.len(), *len, "key of the wrong length for its index");
                map.insert(wide(&key), row)
            }
            UniqueIndex::Bytes(map) => map.insert(key, row),
        };
        assert!(previous.is_none(), "unique index insert over an existing key");
    }

    pub fn remove(&mut self, key: &[u8], row: RowId) {
        let removed = match self {
            UniqueIndex::Word { map, .. } => map.remove(&key_word(key)),
            UniqueIndex::Wide { map, .. } => map.remove(&wide(key)),
            UniqueIndex::Bytes(map) => map.remove(key),
        };
        assert_eq!(removed, Some(row), "unique index entry missing or pointing elsewhere");
    }

    pub fn len(&self) -> usize {
        match self {
            UniqueIndex::Word { map, .. } => map.len(),
            UniqueIndex::Wide { map, .. } => map.len(),
            UniqueIndex::Bytes(map) => map.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes, by capacity (entries plus hashbrown's control bytes), not counting
    /// keys longer than the inline size of [`KeyBytes`].
    pub fn heap_bytes(&self) -> usize {
        match self {
            UniqueIndex::Word { map, .. } => map.capacity() * (size_of::<(u64, RowId)>() + 1),
            UniqueIndex::Wide { map, .. } => map.capacity() * (size_of::<([u8; 32], RowId)>() + 1),
            UniqueIndex::Bytes(map) => map.capacity() * (size_of::<(KeyBytes, RowId)>() + 1),
        }
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
        assert!(added, "btree index entry added twice");
    }

    pub fn remove(&mut self, key: KeyBytes, row: RowId) {
        let removed = self.set.remove(&(key, row));
        assert!(removed, "btree index entry missing");
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

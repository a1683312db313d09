//! Chunks: the unit of columnar storage.
//!
//! A [`Table`](crate::Table) is a list of chunks. A chunk holds up to [`CHUNK_ROWS`]
//! rows, column by column: one contiguous array per column, plus one byte arena for the
//! variable-length values of all its columns. Like an archetype's table in an ECS, a
//! scan over one column reads one dense array per chunk; unlike an ECS, the columns
//! are described at run time by the schema, and rows have keys and indexes.
//!
//! Each column array holds, for every slot, either
//! - the value's encoding itself, for a fixed-size type (a `u64` column is a `[u64]`,
//!   because the value encoding is little-endian and so is every supported host), or
//! - a 16-byte *var ref* for a variable-length type: values of up to 15 bytes are kept
//!   inline in the ref, longer ones in the chunk's arena, with offset and length in the
//!   ref. `String` and `Bytes` store their payload without the length prefix, so short
//!   names never touch the arena.
//!
//! Slots are used from 0 up to the chunk's high-water mark; below it, an occupancy
//! bitmap tells live slots from vacant ones (deleted, waiting for reuse). Deleted
//! arena bytes become garbage, reclaimed by compacting the arena when garbage passes
//! half of it. Column arrays grow by doubling up to the full chunk and no further, so a
//! full chunk wastes nothing and a tiny table does not pay for 4096 rows.

use std::ops::Range;

use tickdb_wasm_abi::ValueType;

/// Rows per chunk, as a power of two: row ids split into chunk and slot by shifting.
pub const CHUNK_ROWS_LOG2: u32 = 12;
/// Rows per chunk.
pub const CHUNK_ROWS: usize = 1 << CHUNK_ROWS_LOG2;

const VAR_REF_SIZE: usize = 16;
const VAR_INLINE_MAX: usize = 15;
const VAR_HEAP_TAG: u8 = 0xFF;
/// Arena garbage below this size is never worth a compaction.
const ARENA_GARBAGE_MIN: usize = 4096;
/// Column arrays start at this many slots and double up to [`CHUNK_ROWS`].
const CHUNK_CAPACITY_MIN: usize = 16;

/// How one column is stored in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnLayout {
    /// The encoding itself, `size` bytes per slot.
    Fixed { size: usize },
    /// A var ref per slot. `len_prefixed` columns (`String`, `Bytes`) store the payload
    /// without its `u32` length prefix.
    Var { len_prefixed: bool },
}

impl ColumnLayout {
    pub fn of(ty: &ValueType) -> ColumnLayout {
        match ty.fixed_size() {
            Some(size) => ColumnLayout::Fixed { size },
            None => ColumnLayout::Var { len_prefixed: matches!(ty, ValueType::String | ValueType::Bytes) },
        }
    }

    fn stride(self) -> usize {
        match self {
            ColumnLayout::Fixed { size } => size,
            ColumnLayout::Var { .. } => VAR_REF_SIZE,
        }
    }
}

/// One chunk's storage. All methods take the table's column layouts; a chunk does not
/// keep its own copy.
#[derive(Debug)]
pub struct Chunk {
    /// One array per column, `capacity * stride` bytes long. Stored as `u64` words so
    /// that every column is 8-byte aligned and can be viewed as a typed slice.
    columns: Vec<Vec<u64>>,
    arena: Vec<u8>,
    arena_garbage: usize,
    occupied: Box<[u64; CHUNK_ROWS / 64]>,
    capacity: usize,
    high_water: usize,
    len: usize,
}

impl Chunk {
    /// An empty chunk. Its column arrays start small and double as rows arrive, unless
    /// `full` asks for room for all [`CHUNK_ROWS`] at once (for a table that already
    /// filled a chunk, and so will likely fill this one too).
    pub fn new(layouts: &[ColumnLayout], full: bool) -> Chunk {
        let mut chunk = Chunk {
            columns: vec![Vec::new(); layouts.len()],
            arena: Vec::new(),
            arena_garbage: 0,
            occupied: Box::new([0; CHUNK_ROWS / 64]),
            capacity: 0,
            high_water: 0,
            len: 0,
        };
        if full {
            chunk.grow_to(layouts, CHUNK_ROWS);
        }
        chunk
    }

    /// Live rows.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slots in use or once used: every live slot is below it.
    pub fn high_water(&self) -> usize {
        self.high_water
    }

    pub fn is_full(&self) -> bool {
        self.high_water == CHUNK_ROWS
    }

    pub fn is_occupied(&self, slot: usize) -> bool {
        slot < CHUNK_ROWS && self.occupied[slot / 64] & (1 << (slot % 64)) != 0
    }

    /// Live slots in ascending order.
    pub fn occupied_slots(&self) -> impl Iterator<Item = usize> + '_ {
        let words = self.high_water.div_ceil(64);
        self.occupied[..words]
            .iter()
            .enumerate()
            .flat_map(|(w, &word)| BitIter(word).map(move |b| w * 64 + b))
    }

    /// Takes the next never-used slot. The caller checks [`Chunk::is_full`] first.
    pub fn push_slot(&mut self, layouts: &[ColumnLayout]) -> usize {
        assert!(!self.is_full(), "push_slot on a full chunk");
        if self.high_water == self.capacity {
            self.grow(layouts);
        }
        self.high_water += 1;
        self.high_water - 1
    }

    /// Gives back the newest never-used slot: the exact inverse of [`Chunk::push_slot`].
    pub fn pop_slot(&mut self, slot: usize) {
        assert_eq!(slot + 1, self.high_water, "pop_slot must undo the latest push_slot");
        assert!(!self.is_occupied(slot));
        self.high_water -= 1;
    }

    fn grow(&mut self, layouts: &[ColumnLayout]) {
        self.grow_to(layouts, (self.capacity * 2).clamp(CHUNK_CAPACITY_MIN, CHUNK_ROWS));
    }

    fn grow_to(&mut self, layouts: &[ColumnLayout], capacity: usize) {
        for (column, layout) in self.columns.iter_mut().zip(layouts) {
            let words = (capacity * layout.stride()).div_ceil(8);
            if column.is_empty() {
                // Zeroed allocation: large ones come zeroed from the OS, with no memset.
                *column = vec![0; words];
            } else {
                column.reserve_exact(words - column.len());
                column.resize(words, 0);
            }
        }
        self.capacity = capacity;
    }

    /// Marks a vacant slot below the high-water mark as live, with its values written.
    pub fn occupy(&mut self, slot: usize) {
        debug_assert!(slot < self.high_water && !self.is_occupied(slot));
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.len += 1;
    }

    /// Marks a live slot vacant; its arena bytes become garbage.
    pub fn vacate(&mut self, layouts: &[ColumnLayout], slot: usize) {
        debug_assert!(self.is_occupied(slot));
        for (col, layout) in layouts.iter().enumerate() {
            if let ColumnLayout::Var { .. } = layout {
                self.arena_garbage += self.var_heap_len(col, slot);
            }
        }
        self.occupied[slot / 64] &= !(1 << (slot % 64));
        self.len -= 1;
    }

    /// The stored bytes of one value: the encoding, or for `String`/`Bytes` its payload.
    pub fn value(&self, layouts: &[ColumnLayout], col: usize, slot: usize) -> &[u8] {
        match layouts[col] {
            ColumnLayout::Fixed { size } => &self.column_bytes(col)[slot * size..][..size],
            ColumnLayout::Var { .. } => {
                self.var_value(read_fixed::<VAR_REF_SIZE>(self.column_bytes(col), slot))
            }
        }
    }

    /// Writes every value of a vacant slot from an encoded row: column `c` is
    /// `row[parts[c]]` (see [`Table`](crate::Table) for what `parts` holds).
    pub fn write_row(&mut self, layouts: &[ColumnLayout], slot: usize, row: &[u8], parts: &[Range<u32>]) {
        debug_assert!(!self.is_occupied(slot));
        let arena = &mut self.arena;
        for ((column, layout), part) in self.columns.iter_mut().zip(layouts).zip(parts) {
            let value = &row[part.start as usize..part.end as usize];
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(column);
            match *layout {
                ColumnLayout::Fixed { size } => crate::small::copy(&mut bytes[slot * size..][..size], value),
                ColumnLayout::Var { .. } => write_fixed::<VAR_REF_SIZE>(bytes, slot, &var_ref(arena, value)),
            }
        }
    }

    /// Appends the value encoding of the row in `slot`: each column's stored bytes,
    /// with the `u32` length put back in front of `String` and `Bytes` payloads.
    pub fn encode_row(&self, layouts: &[ColumnLayout], slot: usize, out: &mut Vec<u8>) {
        self.encode_row_visiting(layouts, slot, out, |_, _| {});
    }

    /// [`Chunk::encode_row`], also showing each column's stored bytes to `visit`.
    #[inline(always)]
    pub fn encode_row_visiting(
        &self,
        layouts: &[ColumnLayout],
        slot: usize,
        out: &mut Vec<u8>,
        mut visit: impl FnMut(usize, &[u8]),
    ) {
        for (col, (column, layout)) in self.columns.iter().zip(layouts).enumerate() {
            let bytes: &[u8] = bytemuck::cast_slice(column);
            let value: &[u8] = match *layout {
                ColumnLayout::Fixed { size } => &bytes[slot * size..][..size],
                ColumnLayout::Var { len_prefixed } => {
                    let value = self.var_value(read_fixed::<VAR_REF_SIZE>(bytes, slot));
                    if len_prefixed {
                        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    }
                    value
                }
            };
            crate::small::extend(out, value);
            visit(col, value);
        }
    }

    /// The value a var ref points to: inside the ref, or in the arena.
    fn var_value<'a>(&'a self, r: &'a [u8; VAR_REF_SIZE]) -> &'a [u8] {
        if r[15] == VAR_HEAP_TAG {
            let (offset, len) = decode_heap_ref(r);
            &self.arena[offset..offset + len]
        } else {
            &r[..usize::from(r[15])]
        }
    }

    /// Writes one value of a slot. A var value of a live slot that is overwritten turns
    /// its old arena bytes into garbage; pass `live` to say whether there is one.
    pub fn set_value(&mut self, layouts: &[ColumnLayout], col: usize, slot: usize, bytes: &[u8], live: bool) {
        match layouts[col] {
            ColumnLayout::Fixed { size } => {
                debug_assert_eq!(bytes.len(), size);
                crate::small::copy(&mut self.column_bytes_mut(col)[slot * size..][..size], bytes);
            }
            ColumnLayout::Var { .. } => {
                if live {
                    self.arena_garbage += self.var_heap_len(col, slot);
                }
                let r = var_ref(&mut self.arena, bytes);
                self.column_bytes_mut(col)[slot * VAR_REF_SIZE..][..VAR_REF_SIZE].copy_from_slice(&r);
            }
        }
    }

    /// Reclaims arena garbage once it is more than half of the arena.
    pub fn maybe_compact(&mut self, layouts: &[ColumnLayout]) {
        if self.arena_garbage < ARENA_GARBAGE_MIN || self.arena_garbage * 2 < self.arena.len() {
            return;
        }
        let mut arena = Vec::with_capacity(self.arena.len() - self.arena_garbage);
        let slots: Vec<usize> = self.occupied_slots().collect();
        for (col, layout) in layouts.iter().enumerate() {
            if !matches!(layout, ColumnLayout::Var { .. }) {
                continue;
            }
            for &slot in &slots {
                let start = slot * VAR_REF_SIZE;
                let r =
                    &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.columns[col])[start..][..VAR_REF_SIZE];
                if r[15] != VAR_HEAP_TAG {
                    continue;
                }
                let (offset, len) = decode_heap_ref(r);
                r[..8].copy_from_slice(&(arena.len() as u64).to_le_bytes());
                arena.extend_from_slice(&self.arena[offset..offset + len]);
            }
        }
        debug_assert_eq!(arena.len(), self.arena.len() - self.arena_garbage);
        self.arena = arena;
        self.arena_garbage = 0;
    }

    /// A fixed-size column's bytes for slots `0..high_water`, vacant slots included.
    pub fn column_bytes(&self, col: usize) -> &[u8] {
        bytemuck::cast_slice(&self.columns[col])
    }

    fn column_bytes_mut(&mut self, col: usize) -> &mut [u8] {
        bytemuck::cast_slice_mut(&mut self.columns[col])
    }

    fn var_ref(&self, col: usize, slot: usize) -> &[u8] {
        &self.column_bytes(col)[slot * VAR_REF_SIZE..][..VAR_REF_SIZE]
    }

    fn var_heap_len(&self, col: usize, slot: usize) -> usize {
        let r = self.var_ref(col, slot);
        if r[15] == VAR_HEAP_TAG { decode_heap_ref(r).1 } else { 0 }
    }

    /// Heap bytes this chunk holds, by capacity.
    pub fn heap_bytes(&self) -> usize {
        let columns: usize = self.columns.iter().map(|c| c.capacity() * 8).sum();
        columns + self.columns.capacity() * size_of::<Vec<u64>>() + self.arena.capacity() + CHUNK_ROWS / 8
    }
}

/// Writes an `N`-byte value into slot `slot` of a column of `N`-byte values.
#[inline(always)]
fn write_fixed<const N: usize>(column: &mut [u8], slot: usize, value: &[u8]) {
    let value: &[u8; N] = value.try_into().expect("a value of the column's size");
    let dst: &mut [u8; N] = (&mut column[slot * N..slot * N + N]).try_into().expect("N bytes");
    *dst = *value;
}

/// The `N` bytes of slot `slot` in a column of `N`-byte values.
#[inline(always)]
fn read_fixed<const N: usize>(column: &[u8], slot: usize) -> &[u8; N] {
    (&column[slot * N..slot * N + N]).try_into().expect("N bytes")
}

/// The var ref of a value: inline if it fits, else appended to the arena.
#[inline]
fn var_ref(arena: &mut Vec<u8>, value: &[u8]) -> [u8; VAR_REF_SIZE] {
    let mut r = [0u8; VAR_REF_SIZE];
    if value.len() <= VAR_INLINE_MAX {
        crate::small::copy_short(&mut r, value);
        r[15] = value.len() as u8;
    } else {
        r[..8].copy_from_slice(&(arena.len() as u64).to_le_bytes());
        r[8..12].copy_from_slice(&(value.len() as u32).to_le_bytes());
        r[15] = VAR_HEAP_TAG;
        arena.extend_from_slice(value);
    }
    r
}

fn decode_heap_ref(r: &[u8]) -> (usize, usize) {
    let offset = u64::from_le_bytes(r[..8].try_into().expect("8 bytes")) as usize;
    let len = u32::from_le_bytes(r[8..12].try_into().expect("4 bytes")) as usize;
    (offset, len)
}

/// Iterates the set bits of a word, lowest first.
struct BitIter(u64);

impl Iterator for BitIter {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

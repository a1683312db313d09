//! Opaque ids. Each wraps an integer so that a table id can never be passed where a
//! row id is meant; conversions are explicit.

/// A table's position in its [`Database`](crate::Database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct TableId(pub u32);

impl TableId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A row's stable address in its table: chunk number and slot within the chunk.
///
/// A row keeps its id for as long as it lives, updates included. Once it is deleted the
/// id may be handed to a later insert, so ids are not names: keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct RowId(pub u32);

impl RowId {
    pub(crate) fn new(chunk: usize, slot: usize) -> RowId {
        debug_assert!(slot < crate::chunk::CHUNK_ROWS);
        debug_assert!(chunk < (1 << (32 - crate::chunk::CHUNK_ROWS_LOG2)));
        RowId(((chunk << crate::chunk::CHUNK_ROWS_LOG2) | slot) as u32)
    }

    pub fn chunk(self) -> usize {
        (self.0 >> crate::chunk::CHUNK_ROWS_LOG2) as usize
    }

    pub fn slot(self) -> usize {
        (self.0 as usize) & (crate::chunk::CHUNK_ROWS - 1)
    }
}

/// A tick's sequence number, counted from 1 in each run of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct TickId(pub u64);

//! Tables as reducers use them: the [`Table`] trait of every table handle, unique
//! columns ([`UniqueColumn`]: find, update, delete) and btree indexes ([`BTreeIndex`]:
//! filter and delete by key, prefix or range). Rows cross to the host in batches: a
//! scan fills a buffer with many encoded rows per host call.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Bound, Range, RangeFrom, RangeInclusive, RangeTo, RangeToInclusive};

use tickdb_wasm_abi::Reader;
use tickdb_wasm_abi::abi::{Errno, bound};

use crate::Type;
use crate::rt::{IndexRef, TableRef};
use crate::sys;

/// Why an insert (or update) was refused. The row was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteError {
    pub errno: Errno,
    /// The host's message: it names the table, the constraint and the value.
    pub message: String,
}

impl WriteError {
    fn last(errno: Errno) -> WriteError {
        WriteError { errno, message: sys::last_error() }
    }

    /// Whether another row holds the same value in a unique column.
    pub fn is_unique_violation(&self) -> bool {
        self.errno == Errno::UniqueViolation
    }
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WriteError {}

/// A table handle, as `ctx.db.player()` returns it.
pub trait Table {
    type Row: Type;

    #[doc(hidden)]
    fn table_ref(&self) -> &'static TableRef;

    /// Whether the table fills auto-inc columns (then inserts read the row back).
    #[doc(hidden)]
    const AUTO_INC: bool;

    /// Rows in the table.
    fn count(&self) -> u64 {
        let table = self.table_ref();
        sys::row_count(table.id()).unwrap_or_else(|_| panic!("{}", sys::last_error()))
    }

    /// Every row, in no particular order.
    fn iter(&self) -> RowIter<Self::Row> {
        let table = self.table_ref();
        RowIter::open(sys::iter_table(table.id()))
    }

    /// Inserts a row and returns it with its auto-inc columns filled. Panics if a
    /// unique constraint is violated (use [`Table::try_insert`] to handle that).
    fn insert(&self, row: Self::Row) -> Self::Row {
        self.try_insert(row).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Inserts a row and returns it with its auto-inc columns filled.
    fn try_insert(&self, row: Self::Row) -> Result<Self::Row, WriteError> {
        let mut bytes = with_buffer(|buf| {
            row.encode(buf);
            buf.clone()
        });
        sys::insert(self.table_ref().id(), &mut bytes).map_err(WriteError::last)?;
        if Self::AUTO_INC {
            return Ok(Self::Row::from_bytes(&bytes).expect("the host returns the row it was given"));
        }
        Ok(row)
    }

    /// Deletes a row equal to `row`. Returns whether one was deleted.
    fn delete(&self, row: Self::Row) -> bool {
        let table = self.table_ref();
        let deleted = with_buffer(|buf| {
            row.encode(buf);
            sys::delete_row(table.id(), buf)
        });
        deleted.unwrap_or_else(|_| panic!("{}", sys::last_error())) > 0
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static ROW_BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with an empty scratch buffer, reused across calls.
fn with_buffer<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = SCRATCH.with_borrow_mut(std::mem::take);
    buf.clear();
    let result = f(&mut buf);
    SCRATCH.with_borrow_mut(|spare| *spare = buf);
    result
}

/// A column (or set of columns) with a unique constraint: the primary key or `#[unique]`.
pub struct UniqueColumn<Row, Key> {
    index: &'static IndexRef,
    _types: PhantomData<fn(Key) -> Row>,
}

impl<Row, Key> fmt::Debug for UniqueColumn<Row, Key> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UniqueColumn").field("index", &self.index.name).finish()
    }
}

impl<Row: Type, Key: Type> UniqueColumn<Row, Key> {
    #[doc(hidden)]
    pub fn new(index: &'static IndexRef) -> Self {
        UniqueColumn { index, _types: PhantomData }
    }

    /// The row holding `key`, if any.
    pub fn find(&self, key: impl Borrow<Key>) -> Option<Row> {
        let (table, index) = (self.index.table.id(), self.index.id());
        let mut row = ROW_BUFFERS.with_borrow_mut(Vec::pop).unwrap_or_default();
        if row.len() < BATCH_BYTES {
            row.resize(BATCH_BYTES, 0);
        }
        let found = with_buffer(|key_bytes| {
            key.borrow().encode(key_bytes);
            loop {
                match sys::find(table, index, key_bytes, &mut row) {
                    Ok(size) => return Some(size),
                    Err((Errno::NotFound, _)) => return None,
                    Err((Errno::BufferTooSmall, needed)) => row.resize(needed, 0),
                    Err(_) => panic!("{}", sys::last_error()),
                }
            }
        });
        let value = found.map(|size| {
            Row::from_bytes(&row[..size])
                .unwrap_or_else(|e| panic!("the host sent a row this module cannot read: {e}"))
        });
        ROW_BUFFERS.with_borrow_mut(|spare| spare.push(row));
        value
    }

    /// Replaces the row with the same key as `row`. Panics if there is none, or if the
    /// new row clashes with another in a unique column.
    pub fn update(&self, row: Row) -> Row {
        self.try_update(row).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Replaces the row with the same key as `row`.
    pub fn try_update(&self, row: Row) -> Result<Row, WriteError> {
        let (table, index) = (self.index.table.id(), self.index.id());
        with_buffer(|buf| {
            row.encode(buf);
            sys::update(table, index, buf)
        })
        .map_err(WriteError::last)?;
        Ok(row)
    }

    /// Deletes the row holding `key`. Returns whether there was one.
    pub fn delete(&self, key: impl Borrow<Key>) -> bool {
        let (table, index) = (self.index.table.id(), self.index.id());
        let deleted = with_buffer(|buf| {
            key.borrow().encode(buf);
            sys::delete_by_key(table, index, buf)
        });
        deleted.unwrap_or_else(|_| panic!("{}", sys::last_error())) > 0
    }
}

/// A btree index over one or more columns (`Cols` is the tuple of their types).
pub struct BTreeIndex<Row, Cols> {
    index: &'static IndexRef,
    _types: PhantomData<fn(Cols) -> Row>,
}

impl<Row, Cols> fmt::Debug for BTreeIndex<Row, Cols> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BTreeIndex").field("index", &self.index.name).finish()
    }
}

impl<Row: Type, Cols> BTreeIndex<Row, Cols> {
    #[doc(hidden)]
    pub fn new(index: &'static IndexRef) -> Self {
        BTreeIndex { index, _types: PhantomData }
    }

    /// The rows matching `bounds`, in key order: a value (or, for a multi-column index,
    /// a tuple of values or a leading value), or a range over the (first) column.
    pub fn filter(&self, bounds: impl IndexBounds<Cols>) -> RowIter<Row> {
        let (table, index) = (self.index.table.id(), self.index.id());
        let iter = with_buffer(|buf| match bounds.into_bounds() {
            Bounds::Key(key) => sys::iter_key(table, index, &key),
            Bounds::Range(lower, upper) => {
                encode_bound(lower, buf);
                encode_bound(upper, buf);
                sys::iter_range(table, index, buf)
            }
        });
        RowIter::open(iter)
    }

    /// Deletes the rows matching `bounds`. Returns how many.
    pub fn delete(&self, bounds: impl IndexBounds<Cols>) -> u64 {
        let (table, index) = (self.index.table.id(), self.index.id());
        match bounds.into_bounds() {
            Bounds::Key(key) => u64::from(
                sys::delete_by_key(table, index, &key).unwrap_or_else(|_| panic!("{}", sys::last_error())),
            ),
            range => {
                let rows: Vec<Vec<u8>> = self.filter(RawBounds(range)).map(|row| row.to_bytes()).collect();
                let delete = |row: &Vec<u8>| {
                    sys::delete_row(table, row).unwrap_or_else(|_| panic!("{}", sys::last_error()))
                };
                rows.iter().map(|row| u64::from(delete(row))).sum()
            }
        }
    }
}

fn encode_bound(b: Bound<Vec<u8>>, out: &mut Vec<u8>) {
    let (kind, key) = match b {
        Bound::Unbounded => (bound::UNBOUNDED, None),
        Bound::Included(k) => (bound::INCLUDED, Some(k)),
        Bound::Excluded(k) => (bound::EXCLUDED, Some(k)),
    };
    out.push(kind);
    if let Some(key) = key {
        tickdb_wasm_abi::typed::encode_len(key.len(), out);
        out.extend_from_slice(&key);
    }
}

/// What an index lookup matches, as encoded key prefixes.
#[doc(hidden)]
#[derive(Debug)]
pub enum Bounds {
    /// Rows whose key starts with these column values.
    Key(Vec<u8>),
    Range(Bound<Vec<u8>>, Bound<Vec<u8>>),
}

/// Ways to select rows of an index over columns `Cols`.
pub trait IndexBounds<Cols> {
    #[doc(hidden)]
    fn into_bounds(self) -> Bounds;
}

struct RawBounds(Bounds);

impl<Cols> IndexBounds<Cols> for RawBounds {
    fn into_bounds(self) -> Bounds {
        self.0
    }
}

fn bytes<T: Type>(value: &T) -> Vec<u8> {
    value.to_bytes()
}

fn map_bound<T: Type>(b: Bound<&T>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(v) => Bound::Included(bytes(v)),
        Bound::Excluded(v) => Bound::Excluded(bytes(v)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn range<T: Type>(r: impl std::ops::RangeBounds<T>) -> Bounds {
    Bounds::Range(map_bound(r.start_bound()), map_bound(r.end_bound()))
}

macro_rules! range_bounds {
    ($cols:ty; $($first:ident)?; $($rest:ident),*) => {
        impl<$($first: Type,)? $($rest),*> IndexBounds<$cols> for Range<$($first)?> { fn into_bounds(self) -> Bounds { range(self) } }
        impl<$($first: Type,)? $($rest),*> IndexBounds<$cols> for RangeInclusive<$($first)?> { fn into_bounds(self) -> Bounds { range(self) } }
        impl<$($first: Type,)? $($rest),*> IndexBounds<$cols> for RangeFrom<$($first)?> { fn into_bounds(self) -> Bounds { range(self) } }
        impl<$($first: Type,)? $($rest),*> IndexBounds<$cols> for RangeTo<$($first)?> { fn into_bounds(self) -> Bounds { range(self) } }
        impl<$($first: Type,)? $($rest),*> IndexBounds<$cols> for RangeToInclusive<$($first)?> { fn into_bounds(self) -> Bounds { range(self) } }
    };
}

// One column: a value, a reference to one, or a range.
impl<K: Type> IndexBounds<(K,)> for K {
    fn into_bounds(self) -> Bounds {
        Bounds::Key(bytes(&self))
    }
}
impl<K: Type> IndexBounds<(K,)> for &K {
    fn into_bounds(self) -> Bounds {
        Bounds::Key(bytes(self))
    }
}
range_bounds!((K,); K;);

// Two columns: both values, the first value, the first value and a range of the
// second, or a range of the first.
impl<A: Type, B: Type> IndexBounds<(A, B)> for (A, B) {
    fn into_bounds(self) -> Bounds {
        let mut key = bytes(&self.0);
        self.1.encode(&mut key);
        Bounds::Key(key)
    }
}
impl<A: Type, B> IndexBounds<(A, B)> for A {
    fn into_bounds(self) -> Bounds {
        Bounds::Key(bytes(&self))
    }
}
impl<A: Type, B: Type> IndexBounds<(A, B)> for (A, Range<B>) {
    fn into_bounds(self) -> Bounds {
        let prefix = bytes(&self.0);
        let with = |b: &B| {
            let mut key = prefix.clone();
            b.encode(&mut key);
            key
        };
        Bounds::Range(Bound::Included(with(&self.1.start)), Bound::Excluded(with(&self.1.end)))
    }
}
range_bounds!((A, B); A; B);

// Three columns: all values, or the first value, or a range of the first.
impl<A: Type, B: Type, C: Type> IndexBounds<(A, B, C)> for (A, B, C) {
    fn into_bounds(self) -> Bounds {
        let mut key = bytes(&self.0);
        self.1.encode(&mut key);
        self.2.encode(&mut key);
        Bounds::Key(key)
    }
}
impl<A: Type, B, C> IndexBounds<(A, B, C)> for A {
    fn into_bounds(self) -> Bounds {
        Bounds::Key(bytes(&self))
    }
}
range_bounds!((A, B, C); A; B, C);

/// Rows read from the host in batches; see the module docs.
pub struct RowIter<Row> {
    iter: Option<u32>,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    _row: PhantomData<fn() -> Row>,
}

impl<Row> fmt::Debug for RowIter<Row> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowIter").field("iter", &self.iter).finish_non_exhaustive()
    }
}

/// The first batch buffer's size; it grows when a row does not fit.
const BATCH_BYTES: usize = 4096;

impl<Row: Type> RowIter<Row> {
    fn open(opened: Result<u32, Errno>) -> Self {
        let iter = opened.unwrap_or_else(|_| panic!("{}", sys::last_error()));
        let mut buf = ROW_BUFFERS.with_borrow_mut(Vec::pop).unwrap_or_default();
        if buf.len() < BATCH_BYTES {
            buf.resize(BATCH_BYTES, 0);
        }
        RowIter { iter: Some(iter), buf, pos: 0, end: 0, _row: PhantomData }
    }
}

impl<Row: Type> Iterator for RowIter<Row> {
    type Item = Row;

    fn next(&mut self) -> Option<Row> {
        while self.pos == self.end {
            let iter = self.iter?;
            match sys::iter_next(iter, &mut self.buf) {
                Ok(used) => (self.pos, self.end) = (0, used),
                Err((Errno::Exhausted, _)) => {
                    // The host freed the iterator when it ran out.
                    self.iter = None;
                    return None;
                }
                Err((Errno::BufferTooSmall, needed)) => self.buf.resize(needed, 0),
                Err(_) => panic!("{}", sys::last_error()),
            }
        }
        let mut r = Reader::new(&self.buf[self.pos..self.end]);
        let row = Row::decode(&mut r)
            .unwrap_or_else(|e| panic!("the host sent a row this module cannot read: {e}"));
        self.pos += r.position();
        Some(row)
    }
}

impl<Row> Drop for RowIter<Row> {
    fn drop(&mut self) {
        if let Some(iter) = self.iter.take() {
            sys::iter_drop(iter);
        }
        let buf = std::mem::take(&mut self.buf);
        ROW_BUFFERS.with_borrow_mut(|spare| spare.push(buf));
    }
}

//! The host functions of ABI version 1 (`wasm-abi/README.md`), and the state they
//! work on.
//!
//! Every read or write of guest memory goes through [`guest`] and [`guest_mut`], which
//! check the pointer and length against the memory's size: a bad pointer becomes a
//! [`GuestFault`] (a trap that ends the call), never a host panic. Everything else a
//! module can get wrong is an [`Errno`] status with a message for `last_error`.

use std::ops::Bound;
use std::sync::Arc;

use tickdb_wasm_abi::abi::{Errno, IMPORT_MODULE, bound, imports};
use tickdb_wasm_abi::{ColId, Timestamp};
use wasmtime::{Caller, Linker, Memory, ResourceLimiter};

use super::logs::{LogRecord, ModuleLogs};
use super::tx_slot::TxSlot;
use super::{HostConfig, HostError};
use crate::db::Tx;
use crate::error::Error;
use crate::ids::{RowId, TableId};
use crate::key;
use crate::table::Table;

/// A module broke the ABI in a way that ends its call: a pointer outside its memory,
/// say. The call traps with this message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct GuestFault(pub(crate) String);

/// The module asked for more memory than its cap.
#[derive(Debug, thiserror::Error)]
#[error("the module's memory would grow to {desired} bytes, past its limit of {limit} bytes")]
pub(crate) struct MemoryLimitHit {
    pub(crate) desired: usize,
    pub(crate) limit: usize,
}

type HostResult<T> = wasmtime::Result<T>;

/// Snapshot buffers kept for reuse between iterators and calls, and the largest kept.
const SPARE_SNAPSHOTS: usize = 8;
const SPARE_SNAPSHOT_ROWS: usize = 1 << 16;

fn fault(message: String) -> wasmtime::Error {
    wasmtime::Error::new(GuestFault(message))
}

/// What the module may be doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    /// Inside `__describe_module__`.
    Describe,
    /// Inside `__call_reducer__`.
    Call,
}

/// Caps the module's memory and tables.
#[derive(Debug)]
pub(crate) struct Limits {
    memory_bytes_max: usize,
    table_elements_max: usize,
}

impl ResourceLimiter for Limits {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> HostResult<bool> {
        if desired > self.memory_bytes_max {
            return Err(wasmtime::Error::new(MemoryLimitHit { desired, limit: self.memory_bytes_max }));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> HostResult<bool> {
        Ok(desired <= self.table_elements_max)
    }
}

/// A row-id snapshot being read out by `iter_next`.
#[derive(Debug)]
struct Iter {
    table: TableId,
    rows: Vec<RowId>,
    pos: usize,
}

/// A store's data: everything host functions need between and during calls. The
/// lent transaction and the rest are separate fields so that host functions can borrow
/// both at once.
#[derive(Debug)]
pub(crate) struct HostState {
    pub(crate) tx: TxSlot,
    pub(crate) memory: Option<Memory>,
    pub(crate) env: Env,
}

/// Everything but the transaction.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) phase: Phase,
    /// The running call's header and arguments, for `call_args_read`.
    pub(crate) input: Vec<u8>,
    pub(crate) output: Option<Vec<u8>>,
    pub(crate) error: Option<String>,
    pub(crate) describe: Option<Vec<u8>>,
    /// The running reducer's name and the call's time, for log lines.
    pub(crate) reducer: Option<Arc<str>>,
    pub(crate) timestamp: Timestamp,
    pub(crate) limits: Limits,
    /// The row `find` last returned: the likely target of an update that follows.
    last_found: Option<(TableId, RowId)>,
    last_error: String,
    iters: Vec<Option<Iter>>,
    open_iters: usize,
    /// Row ids held by the call's open iterators.
    iter_rows: usize,
    spare_rows: Vec<Vec<RowId>>,
    scratch: Vec<u8>,
    logs: Arc<ModuleLogs>,
    config: Arc<HostConfig>,
}

impl HostState {
    pub(crate) fn new(config: Arc<HostConfig>, logs: Arc<ModuleLogs>) -> HostState {
        HostState { tx: TxSlot::default(), memory: None, env: Env::new(config, logs) }
    }
}

impl Env {
    fn new(config: Arc<HostConfig>, logs: Arc<ModuleLogs>) -> Env {
        let limits = Limits { memory_bytes_max: config.memory_bytes_max, table_elements_max: 1 << 20 };
        Env {
            phase: Phase::Idle,
            input: Vec::new(),
            output: None,
            error: None,
            describe: None,
            reducer: None,
            timestamp: Timestamp::from_micros(0),
            limits,
            last_found: None,
            last_error: String::new(),
            iters: Vec::new(),
            open_iters: 0,
            iter_rows: 0,
            spare_rows: Vec::new(),
            scratch: Vec::new(),
            logs,
            config,
        }
    }

    /// Ends a call: frees its iterators and takes what it returned.
    pub(crate) fn end_call(&mut self) -> (Option<Vec<u8>>, Option<String>) {
        let iters = std::mem::take(&mut self.iters);
        for iter in iters.into_iter().flatten() {
            self.recycle_rows(iter.rows);
        }
        self.open_iters = 0;
        self.iter_rows = 0;
        self.last_found = None;
        self.last_error.clear();
        self.phase = Phase::Idle;
        self.reducer = None;
        (self.output.take(), self.error.take())
    }

    fn fail(&mut self, errno: Errno, message: impl Into<String>) -> i32 {
        self.last_error = message.into();
        errno.code()
    }

    fn fail_engine(&mut self, error: Error) -> i32 {
        let errno = match &error {
            Error::NoSuchTable(_) => Errno::NoSuchTable,
            Error::NoSuchIndex { .. } => Errno::NoSuchIndex,
            Error::InvalidKey { .. } => Errno::InvalidKey,
            Error::RowTooLarge { .. } => Errno::RowTooLarge,
            Error::UniqueViolation { .. } => Errno::UniqueViolation,
            Error::NoSuchRow { .. } | Error::NoRowWithKey { .. } => Errno::NotFound,
            Error::TableFull { .. } => Errno::TableFull,
            Error::SequenceExhausted { .. } => Errno::SequenceExhausted,
            Error::NoPrimaryKey { .. } => Errno::NotUnique,
            _ => Errno::InvalidRow,
        };
        self.fail(errno, error.to_string())
    }

    fn open_iter(&mut self, table: TableId, rows: impl Iterator<Item = RowId>) -> Result<u32, i32> {
        if self.open_iters >= self.config.iterators_max {
            let max = self.config.iterators_max;
            return Err(
                self.fail(Errno::TooManyIterators, format!("a call may hold at most {max} open iterators"))
            );
        }
        let mut snapshot = self.spare_rows.pop().unwrap_or_default();
        let budget = self.config.iterator_rows_max.saturating_sub(self.iter_rows);
        snapshot.extend(rows.take(budget.saturating_add(1)));
        if snapshot.len() > budget {
            self.recycle_rows(snapshot);
            let max = self.config.iterator_rows_max;
            let why = format!(
                "a call's open iterators may hold at most {max} rows; drop iterators or narrow scans"
            );
            return Err(self.fail(Errno::TooManyIterators, why));
        }
        self.iter_rows += snapshot.len();
        let iter = Iter { table, rows: snapshot, pos: 0 };
        self.open_iters += 1;
        match self.iters.iter().position(Option::is_none) {
            Some(free) => {
                self.iters[free] = Some(iter);
                Ok(free as u32)
            }
            None => {
                self.iters.push(Some(iter));
                Ok(self.iters.len() as u32 - 1)
            }
        }
    }

    fn close_iter(&mut self, id: u32) -> bool {
        match self.iters.get_mut(id as usize).and_then(Option::take) {
            Some(iter) => {
                self.iter_rows -= iter.rows.len();
                self.recycle_rows(iter.rows);
                self.open_iters -= 1;
                true
            }
            None => false,
        }
    }

    /// Keeps a few small snapshot buffers for reuse; big or surplus ones are freed, so
    /// one call's huge scan does not stay allocated.
    fn recycle_rows(&mut self, mut rows: Vec<RowId>) {
        if self.spare_rows.len() < SPARE_SNAPSHOTS && rows.capacity() <= SPARE_SNAPSHOT_ROWS {
            rows.clear();
            self.spare_rows.push(rows);
        }
    }
}

/// The bytes `ptr..ptr + len` of guest memory, or a fault if they are not all inside it.
pub(crate) fn guest(mem: &[u8], ptr: u32, len: u32) -> HostResult<&[u8]> {
    let end = (ptr as usize).checked_add(len as usize).ok_or_else(|| out_of_bounds(mem, ptr, len))?;
    mem.get(ptr as usize..end).ok_or_else(|| out_of_bounds(mem, ptr, len))
}

/// Writable bytes `ptr..ptr + len` of guest memory, or a fault.
pub(crate) fn guest_mut(mem: &mut [u8], ptr: u32, len: u32) -> HostResult<&mut [u8]> {
    let size = mem.len();
    let end = (ptr as usize).checked_add(len as usize).ok_or_else(|| out_of_bounds_size(size, ptr, len))?;
    mem.get_mut(ptr as usize..end).ok_or_else(|| out_of_bounds_size(size, ptr, len))
}

fn out_of_bounds(mem: &[u8], ptr: u32, len: u32) -> wasmtime::Error {
    out_of_bounds_size(mem.len(), ptr, len)
}

fn out_of_bounds_size(size: usize, ptr: u32, len: u32) -> wasmtime::Error {
    fault(format!("the module passed {len} bytes at address {ptr}, outside its memory of {size} bytes"))
}

fn read_u32(mem: &[u8], ptr: u32) -> HostResult<u32> {
    Ok(u32::from_le_bytes(guest(mem, ptr, 4)?.try_into().expect("4 bytes")))
}

fn write_u32(mem: &mut [u8], ptr: u32, value: u32) -> HostResult<()> {
    guest_mut(mem, ptr, 4)?.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

fn write_u64(mem: &mut [u8], ptr: u32, value: u64) -> HostResult<()> {
    guest_mut(mem, ptr, 8)?.copy_from_slice(&value.to_le_bytes());
    Ok(())
}

/// Guest memory and the store's data, borrowed together.
fn split<'a>(caller: &'a mut Caller<'_, HostState>) -> HostResult<(&'a mut [u8], &'a mut HostState)> {
    let memory = caller.data().memory.ok_or_else(|| fault("the module has no memory".into()))?;
    Ok(memory.data_and_store_mut(caller))
}

/// Which index an index id names: unique constraints come first, then btree indexes.
#[derive(Debug, Clone, Copy)]
enum Index {
    Unique(usize),
    BTree(usize),
}

/// The running call's transaction, or `WrongPhase`.
macro_rules! tx_or_status {
    ($state:expr) => {
        match $state.tx.get() {
            Some(tx) => tx,
            None => {
                $state.env.last_error = "this call is only allowed inside a reducer call".into();
                return Ok(Errno::WrongPhase.code());
            }
        }
    };
}

/// Checks a table id from the module (the engine indexes by it, so it must be checked here).
fn table_of(tx: &Tx<'_>, id: u32) -> Result<TableId, String> {
    if (id as usize) < tx.db().tables().len() {
        Ok(TableId(id))
    } else {
        Err(format!("no table has id {id}"))
    }
}

fn index_of(table: &Table, id: u32) -> Result<Index, String> {
    let schema = table.schema();
    let id = id as usize;
    if id < schema.unique.len() {
        Ok(Index::Unique(id))
    } else if let Some(index) = schema.indexes.get(id - schema.unique.len()) {
        match index.kind {
            tickdb_wasm_abi::IndexKind::BTree => Ok(Index::BTree(id - schema.unique.len())),
            tickdb_wasm_abi::IndexKind::Grid { .. } => {
                Err(format!("index `{}` is a grid index, which modules read through SQL only", index.name))
            }
        }
    } else {
        Err(format!("table `{}` has no index with id {id}", table.name()))
    }
}

/// Runs `$body` with a checked table, turning a bad id into `NoSuchTable`.
macro_rules! checked_table {
    ($state:expr, $tx:expr, $id:expr) => {
        match table_of($tx, $id) {
            Ok(t) => t,
            Err(message) => return Ok($state.env.fail(Errno::NoSuchTable, message)),
        }
    };
}

macro_rules! checked_index {
    ($state:expr, $table:expr, $id:expr) => {
        match index_of($table, $id) {
            Ok(i) => i,
            Err(message) => return Ok($state.env.fail(Errno::NoSuchIndex, message)),
        }
    };
}

/// Builds the linker with every host function of ABI version 1.
pub(crate) fn linker(engine: &wasmtime::Engine) -> Result<Linker<HostState>, HostError> {
    let mut l = Linker::new(engine);
    define(&mut l).map_err(|e| HostError::Setup(format!("defining host functions: {e}")))?;
    Ok(l)
}

fn define(l: &mut Linker<HostState>) -> HostResult<()> {
    l.func_wrap(
        IMPORT_MODULE,
        imports::TABLE_ID,
        |mut c: Caller<'_, HostState>, name: u32, len: u32, out: u32| {
            let (mem, state) = split(&mut c)?;
            let name = guest(mem, name, len)?;
            let tx = tx_or_status!(state);
            let found = std::str::from_utf8(name).ok().and_then(|n| tx.db().table_id(n).ok());
            match found {
                Some(id) => write_u32(mem, out, id.0).map(|()| 0),
                None => {
                    let name = String::from_utf8_lossy(name);
                    Ok(state.env.fail(Errno::NoSuchTable, format!("no table is named `{name}`")))
                }
            }
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        imports::INDEX_ID,
        |mut c: Caller<'_, HostState>, table: u32, name: u32, len: u32, out: u32| {
            let (mem, state) = split(&mut c)?;
            let name = guest(mem, name, len)?;
            let tx = tx_or_status!(state);
            let table = checked_table!(state, tx, table);
            let t = tx.table(table);
            let name = String::from_utf8_lossy(name);
            let id = match (t.unique_constraint(&name), t.btree_index(&name)) {
                (Ok(u), _) => u,
                (_, Ok(b)) => t.schema().unique.len() + b,
                (Err(e), _) => return Ok(state.env.fail(Errno::NoSuchIndex, e.to_string())),
            };
            write_u32(mem, out, id as u32).map(|()| 0)
        },
    )?;
    l.func_wrap(IMPORT_MODULE, imports::ROW_COUNT, |mut c: Caller<'_, HostState>, table: u32, out: u32| {
        let (mem, state) = split(&mut c)?;
        let tx = tx_or_status!(state);
        let table = checked_table!(state, tx, table);
        write_u64(mem, out, tx.table(table).len() as u64).map(|()| 0)
    })?;
    l.func_wrap(
        IMPORT_MODULE,
        imports::INSERT,
        |mut c: Caller<'_, HostState>, table: u32, row: u32, len: u32| {
            let (mem, state) = split(&mut c)?;
            let tx = tx_or_status!(state);
            let table = checked_table!(state, tx, table);
            let id = match tx.insert(table, guest(mem, row, len)?) {
                Ok(id) => id,
                Err(e) => return Ok(state.env.fail_engine(e)),
            };
            let t = tx.table(table);
            if !t.schema().auto_inc.is_empty() {
                // Auto-inc columns are fixed-size: the filled row has the same length.
                state.env.scratch.clear();
                t.get(id).expect("the row was just inserted").encode_into(&mut state.env.scratch);
                guest_mut(mem, row, len)?.copy_from_slice(&state.env.scratch);
            }
            Ok(0)
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        imports::UPDATE,
        |mut c: Caller<'_, HostState>, table: u32, index: u32, row: u32, len: u32| {
            let (mem, state) = split(&mut c)?;
            let tx = tx_or_status!(state);
            let table = checked_table!(state, tx, table);
            let Index::Unique(constraint) = checked_index!(state, tx.table(table), index) else {
                return Ok(state.env.fail(Errno::NotUnique, "update needs a unique index"));
            };
            let hint = state.env.last_found.filter(|(t, _)| *t == table).map(|(_, row)| row);
            match tx.update_by_unique(table, constraint, guest(mem, row, len)?, hint) {
                Ok(_) => Ok(0),
                Err(e) => Ok(state.env.fail_engine(e)),
            }
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        imports::DELETE_BY_KEY,
        |mut c: Caller<'_, HostState>, table: u32, index: u32, key: u32, len: u32, out: u32| {
            let (mem, state) = split(&mut c)?;
            let key = guest(mem, key, len)?;
            let tx = tx_or_status!(state);
            let table = checked_table!(state, tx, table);
            let t = tx.table(table);
            let rows = match rows_by_key(t, checked_index!(state, t, index), key) {
                Ok(rows) => rows,
                Err(e) => return Ok(state.env.fail_engine(e)),
            };
            for &row in &rows {
                if let Err(e) = tx.delete(table, row) {
                    return Ok(state.env.fail_engine(e));
                }
            }
            write_u32(mem, out, rows.len() as u32).map(|()| 0)
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        imports::DELETE_ROW,
        |mut c: Caller<'_, HostState>, table: u32, row: u32, len: u32, out: u32| {
            let (mem, state) = split(&mut c)?;
            let tx = tx_or_status!(state);
            let table = checked_table!(state, tx, table);
            match tx.delete_equal(table, guest(mem, row, len)?) {
                Ok(deleted) => write_u32(mem, out, u32::from(deleted)).map(|()| 0),
                Err(e) => Ok(state.env.fail_engine(e)),
            }
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        imports::FIND,
        |mut c: Caller<'_, HostState>, table: u32, index: u32, key: u32, len: u32, buf: u32, buf_len: u32| {
            let (mem, state) = split(&mut c)?;
            let key = guest(mem, key, len)?;
            let capacity = read_u32(mem, buf_len)?;
            let tx = tx_or_status!(state);
            let table = checked_table!(state, tx, table);
            let t = tx.table(table);
            let Index::Unique(constraint) = checked_index!(state, t, index) else {
                return Ok(state.env.fail(Errno::NotUnique, "find needs a unique index"));
            };
            let row = match t.find_unique_encoded(constraint, key) {
                Ok(Some(row)) => {
                    state.env.last_found = Some((table, row));
                    t.get(row).expect("indexes hold live rows")
                }
                Ok(None) => return Ok(state.env.fail(Errno::NotFound, "no row has that key")),
                Err(e) => return Ok(state.env.fail_engine(e)),
            };
            let out = &mut state.env.scratch;
            out.clear();
            row.encode_into(out);
            let size = out.len() as u32;
            write_u32(mem, buf_len, size)?;
            if size > capacity {
                return Ok(state.env.fail(Errno::BufferTooSmall, format!("the row needs {size} bytes")));
            }
            guest_mut(mem, buf, size)?.copy_from_slice(out);
            Ok(0)
        },
    )?;
    l.func_wrap(IMPORT_MODULE, imports::ITER_TABLE, |mut c: Caller<'_, HostState>, table: u32, out: u32| {
        let (mem, state) = split(&mut c)?;
        let tx = tx_or_status!(state);
        let table = checked_table!(state, tx, table);
        let rows = tx.table(table).iter().map(|r| r.id());
        iter_opened(mem, out, state.env.open_iter(table, rows))
    })?;
    l.func_wrap(
        IMPORT_MODULE,
        imports::ITER_KEY,
        |mut c: Caller<'_, HostState>, table: u32, index: u32, key: u32, len: u32, out: u32| {
            let (mem, state) = split(&mut c)?;
            let key = guest(mem, key, len)?;
            let tx = tx_or_status!(state);
            let table = checked_table!(state, tx, table);
            let t = tx.table(table);
            let index = checked_index!(state, t, index);
            let opened = match index {
                Index::Unique(constraint) => match t.find_unique_encoded(constraint, key) {
                    Ok(row) => state.env.open_iter(table, row.into_iter()),
                    Err(e) => Err(state.env.fail_engine(e)),
                },
                Index::BTree(index) => {
                    match t.key_prefix_from_encoded(&t.schema().indexes[index].columns, key) {
                        Ok(prefix) => state.env.open_iter(table, t.index_prefix(index, &prefix)),
                        Err(e) => Err(state.env.fail_engine(e)),
                    }
                }
            };
            iter_opened(mem, out, opened)
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        imports::ITER_RANGE,
        |mut c: Caller<'_, HostState>, table: u32, index: u32, bounds: u32, len: u32, out: u32| {
            let (mem, state) = split(&mut c)?;
            let bounds = guest(mem, bounds, len)?;
            let tx = tx_or_status!(state);
            let table = checked_table!(state, tx, table);
            let t = tx.table(table);
            let Index::BTree(index) = checked_index!(state, t, index) else {
                return Ok(state.env.fail(Errno::NoSuchIndex, "range scans need a btree index"));
            };
            let columns = &t.schema().indexes[index].columns;
            let (lower, upper) = match parse_bounds(t, columns, bounds) {
                Ok(b) => b,
                Err(e) => return Ok(state.env.fail_engine(e)),
            };
            let rows = t.index_range(index, lower.as_ref().map(|k| &k[..]), upper.as_ref().map(|k| &k[..]));
            iter_opened(mem, out, state.env.open_iter(table, rows))
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        imports::ITER_NEXT,
        |mut c: Caller<'_, HostState>, iter: u32, buf: u32, buf_len: u32| {
            let (mem, state) = split(&mut c)?;
            let capacity = read_u32(mem, buf_len)?;
            // The whole buffer must be guest memory before the host fills any of it.
            guest(mem, buf, capacity)?;
            let capacity = capacity as usize;
            let tx = tx_or_status!(state);
            let Some(Some(it)) = state.env.iters.get_mut(iter as usize) else {
                return Ok(state.env.fail(Errno::NoSuchIter, format!("no open iterator has id {iter}")));
            };
            let t = tx.table(it.table);
            let out = &mut state.env.scratch;
            out.clear();
            while let Some(&row) = it.rows.get(it.pos) {
                // Rows deleted since the snapshot are skipped.
                let Some(live) = t.get(row) else {
                    it.pos += 1;
                    continue;
                };
                let start = out.len();
                live.encode_into(out);
                if out.len() > capacity {
                    if start == 0 {
                        let needed = out.len() as u32;
                        write_u32(mem, buf_len, needed)?;
                        return Ok(state
                            .env
                            .fail(Errno::BufferTooSmall, format!("the next row needs {needed} bytes")));
                    }
                    out.truncate(start);
                    break;
                }
                it.pos += 1;
            }
            if out.is_empty() {
                state.env.close_iter(iter);
                write_u32(mem, buf_len, 0)?;
                return Ok(Errno::Exhausted.code());
            }
            guest_mut(mem, buf, out.len() as u32)?.copy_from_slice(out);
            write_u32(mem, buf_len, out.len() as u32).map(|()| 0)
        },
    )?;
    l.func_wrap(IMPORT_MODULE, imports::ITER_DROP, |mut c: Caller<'_, HostState>, iter: u32| {
        let state = c.data_mut();
        if state.env.close_iter(iter) {
            Ok(0)
        } else {
            Ok(state.env.fail(Errno::NoSuchIter, format!("no open iterator has id {iter}")))
        }
    })?;
    l.func_wrap(IMPORT_MODULE, imports::CALL_ARGS_READ, |mut c: Caller<'_, HostState>, buf: u32| {
        let (mem, state) = split(&mut c)?;
        if state.env.phase != Phase::Call {
            return Ok(state.env.fail(Errno::WrongPhase, "call_args_read outside a reducer call"));
        }
        guest_mut(mem, buf, state.env.input.len() as u32)?.copy_from_slice(&state.env.input);
        Ok(0)
    })?;
    l.func_wrap(
        IMPORT_MODULE,
        imports::CALL_RETURN,
        |mut c: Caller<'_, HostState>, value: u32, len: u32| {
            let (mem, state) = split(&mut c)?;
            if state.env.phase != Phase::Call {
                return Ok(state.env.fail(Errno::WrongPhase, "call_return outside a reducer call"));
            }
            if len as usize > state.env.config.return_bytes_max {
                let max = state.env.config.return_bytes_max;
                return Ok(state
                    .env
                    .fail(Errno::RowTooLarge, format!("return values are limited to {max} bytes")));
            }
            state.env.output = Some(guest(mem, value, len)?.to_vec());
            Ok(0)
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        imports::CALL_ERROR,
        |mut c: Caller<'_, HostState>, message: u32, len: u32| {
            let (mem, state) = split(&mut c)?;
            // Allowed in any phase: a panic while registering or describing reports here too.
            let message = guest(mem, message, len)?;
            state.env.error = Some(truncated(message, state.env.config.message_bytes_max));
            Ok(0)
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        imports::DESCRIBE_WRITE,
        |mut c: Caller<'_, HostState>, def: u32, len: u32| {
            let (mem, state) = split(&mut c)?;
            if state.env.phase != Phase::Describe {
                return Ok(state.env.fail(Errno::WrongPhase, "describe_write outside __describe_module__"));
            }
            if len as usize > super::DESCRIBE_BYTES_MAX {
                return Err(fault(format!(
                    "the module definition is {len} bytes, past the limit of {} bytes",
                    super::DESCRIBE_BYTES_MAX
                )));
            }
            state.env.describe = Some(guest(mem, def, len)?.to_vec());
            Ok(0)
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        imports::LAST_ERROR,
        |mut c: Caller<'_, HostState>, buf: u32, buf_len: u32| {
            let (mem, state) = split(&mut c)?;
            let capacity = read_u32(mem, buf_len)? as usize;
            let needed = state.env.last_error.len();
            write_u32(mem, buf_len, needed as u32)?;
            if needed > capacity {
                return Ok(Errno::BufferTooSmall.code());
            }
            guest_mut(mem, buf, needed as u32)?.copy_from_slice(state.env.last_error.as_bytes());
            Ok(0)
        },
    )?;
    l.func_wrap(
        IMPORT_MODULE,
        imports::LOG,
        |mut c: Caller<'_, HostState>,
         level: u32,
         target: u32,
         target_len: u32,
         message: u32,
         message_len: u32| {
            let (mem, state) = split(&mut c)?;
            let max = state.env.config.message_bytes_max;
            let target = truncated(guest(mem, target, target_len)?, 256);
            let message = truncated(guest(mem, message, message_len)?, max);
            let level = level.clamp(1, 5) as u8;
            let reducer = state.env.reducer.clone();
            state.env.logs.push(LogRecord {
                timestamp: state.env.timestamp,
                level,
                target,
                reducer,
                message,
            });
            Ok(0)
        },
    )?;
    Ok(())
}

/// Writes a new iterator's id to `out`, or returns the status of the failed open.
fn iter_opened(mem: &mut [u8], out: u32, opened: Result<u32, i32>) -> HostResult<i32> {
    match opened {
        Ok(id) => write_u32(mem, out, id).map(|()| 0),
        Err(status) => Ok(status),
    }
}

fn truncated(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    if bytes.len() > max { format!("{text}… ({} bytes cut)", bytes.len() - max) } else { text }
}

/// The rows whose key in `index` equals `key` (for a btree index, a key prefix).
fn rows_by_key(t: &Table, index: Index, key: &[u8]) -> Result<Vec<RowId>, Error> {
    match index {
        Index::Unique(constraint) => Ok(t.find_unique_encoded(constraint, key)?.into_iter().collect()),
        Index::BTree(index) => {
            let prefix = t.key_prefix_from_encoded(&t.schema().indexes[index].columns, key)?;
            Ok(t.index_prefix(index, &prefix).collect())
        }
    }
}

/// Parses `iter_range`'s bounds into index key (prefix) bounds.
fn parse_bounds(
    t: &Table,
    columns: &[ColId],
    bytes: &[u8],
) -> Result<(Bound<key::KeyBytes>, Bound<key::KeyBytes>), Error> {
    let invalid =
        |why: &str| Error::InvalidKey { columns: t.schema().describe_columns(columns), why: why.into() };
    let mut pos = 0;
    let next = |pos: &mut usize| -> Result<(u8, Option<key::KeyBytes>), Error> {
        let kind = *bytes.get(*pos).ok_or_else(|| invalid("bounds end before a bound kind"))?;
        *pos += 1;
        if kind == bound::UNBOUNDED {
            return Ok((kind, None));
        }
        if kind != bound::INCLUDED && kind != bound::EXCLUDED {
            return Err(invalid(&format!("unknown bound kind {kind}")));
        }
        let len = bytes.get(*pos..*pos + 4).ok_or_else(|| invalid("bounds end before a length"))?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        *pos += 4;
        let end = pos.checked_add(len).ok_or_else(|| invalid("a key length past the bounds"))?;
        let key = bytes.get(*pos..end).ok_or_else(|| invalid("bounds end inside a key"))?;
        *pos += len;
        Ok((kind, Some(t.key_prefix_from_encoded(columns, key)?)))
    };
    // The index reads bounds as key prefixes itself (`BTreeIndex::range`).
    let as_bound = |(kind, key): (u8, Option<key::KeyBytes>)| match (kind, key) {
        (bound::INCLUDED, Some(k)) => Bound::Included(k),
        (_, Some(k)) => Bound::Excluded(k),
        (_, None) => Bound::Unbounded,
    };
    let lower = as_bound(next(&mut pos)?);
    let upper = as_bound(next(&mut pos)?);
    if pos != bytes.len() {
        return Err(invalid("bytes after the upper bound"));
    }
    Ok((lower, upper))
}

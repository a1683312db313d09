//! The names and codes of the module ABI, version 1: what a module imports from the
//! host, what it exports, and the status codes host calls return. `wasm-abi/README.md`
//! documents each call: its arguments, what it returns, and when it traps.
//!
//! Both sides use these constants, so a renamed call cannot drift apart between the
//! module SDK and the host.

/// The module every host function is imported from. The version is part of the name:
/// a module built for another version fails to link, with a clear error, instead of
/// calling functions whose meaning changed.
pub const IMPORT_MODULE: &str = "tickdb_1";

/// Host functions, imported from [`IMPORT_MODULE`].
pub mod imports {
    pub const TABLE_ID: &str = "table_id";
    pub const INDEX_ID: &str = "index_id";
    pub const ROW_COUNT: &str = "row_count";
    pub const INSERT: &str = "insert";
    pub const UPDATE: &str = "update";
    pub const DELETE_BY_KEY: &str = "delete_by_key";
    pub const DELETE_ROW: &str = "delete_row";
    pub const FIND: &str = "find";
    pub const ITER_TABLE: &str = "iter_table";
    pub const ITER_KEY: &str = "iter_key";
    pub const ITER_RANGE: &str = "iter_range";
    pub const ITER_NEXT: &str = "iter_next";
    pub const ITER_DROP: &str = "iter_drop";
    pub const CALL_ARGS_READ: &str = "call_args_read";
    pub const CALL_RETURN: &str = "call_return";
    pub const CALL_ERROR: &str = "call_error";
    pub const DESCRIBE_WRITE: &str = "describe_write";
    pub const LAST_ERROR: &str = "last_error";
    pub const LOG: &str = "log";
}

/// Functions a module exports.
pub mod exports {
    /// `() -> ()`: writes the module definition with `describe_write`.
    pub const DESCRIBE: &str = "__describe_module__";
    /// `(reducer: u32, args_len: u32) -> i32`: runs one reducer call.
    pub const CALL_REDUCER: &str = "__call_reducer__";
    /// The module's linear memory.
    pub const MEMORY: &str = "memory";
    /// `() -> ()`: every export whose name starts with this registers one table,
    /// reducer or tick system with the module's SDK. The host calls them all, in
    /// name order, right after instantiating the module, before anything else.
    pub const REGISTER_PREFIX: &str = "__tickdb_register__";
}

/// What `__call_reducer__` returns.
pub mod call_result {
    /// The reducer succeeded; its value, if any, was given with `call_return`.
    pub const OK: i32 = 0;
    /// The reducer failed; its message was given with `call_error`.
    pub const ERR: i32 = 1;
}

/// Bytes before a reducer's arguments in what `call_args_read` copies: the caller's
/// identity (32), connection id (16), the call's timestamp (8, µs since the epoch), a
/// random seed (8) and, for tick systems, the delta time since their last run (8, µs).
pub const CALL_HEADER_BYTES: usize = 72;

/// Bound kinds in the bounds argument of `iter_range`.
pub mod bound {
    pub const UNBOUNDED: u8 = 0;
    pub const INCLUDED: u8 = 1;
    pub const EXCLUDED: u8 = 2;
}

/// Log levels of the `log` call, as the `log` crate numbers them.
pub mod level {
    pub const ERROR: u32 = 1;
    pub const WARN: u32 = 2;
    pub const INFO: u32 = 3;
    pub const DEBUG: u32 = 4;
    pub const TRACE: u32 = 5;
}

/// The status a host call returns: 0 for success, one of these otherwise. A status is
/// an answer, not a failure of the module: the call changed nothing, and the module
/// decides what to do (`last_error` gives the host's message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Errno {
    NoSuchTable = 1,
    NoSuchIndex = 2,
    /// `update` needs a unique index; this one is not.
    NotUnique = 3,
    InvalidRow = 4,
    InvalidKey = 5,
    UniqueViolation = 6,
    NotFound = 7,
    RowTooLarge = 8,
    TableFull = 9,
    SequenceExhausted = 10,
    NoSuchIter = 11,
    /// The next row does not fit the buffer; the size it needs was written back.
    BufferTooSmall = 12,
    /// The iterator has no more rows.
    Exhausted = 13,
    TooManyIterators = 14,
    /// A call that only makes sense inside a reducer call, or inside describe, came
    /// from elsewhere.
    WrongPhase = 15,
}

impl Errno {
    pub const ALL: [Errno; 15] = [
        Errno::NoSuchTable,
        Errno::NoSuchIndex,
        Errno::NotUnique,
        Errno::InvalidRow,
        Errno::InvalidKey,
        Errno::UniqueViolation,
        Errno::NotFound,
        Errno::RowTooLarge,
        Errno::TableFull,
        Errno::SequenceExhausted,
        Errno::NoSuchIter,
        Errno::BufferTooSmall,
        Errno::Exhausted,
        Errno::TooManyIterators,
        Errno::WrongPhase,
    ];

    pub fn code(self) -> i32 {
        self as u16 as i32
    }

    /// The errno for a status a host call returned; `None` for 0 (success) and for
    /// codes this version does not know.
    pub fn from_code(code: i32) -> Option<Errno> {
        Errno::ALL.into_iter().find(|e| e.code() == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Errno::NoSuchTable => "no such table",
            Errno::NoSuchIndex => "no such index",
            Errno::NotUnique => "index is not unique",
            Errno::InvalidRow => "invalid row",
            Errno::InvalidKey => "invalid key",
            Errno::UniqueViolation => "unique constraint violated",
            Errno::NotFound => "no row with that key",
            Errno::RowTooLarge => "row too large",
            Errno::TableFull => "table full",
            Errno::SequenceExhausted => "sequence exhausted",
            Errno::NoSuchIter => "no such iterator",
            Errno::BufferTooSmall => "buffer too small",
            Errno::Exhausted => "iterator exhausted",
            Errno::TooManyIterators => "too many open iterators",
            Errno::WrongPhase => "call not allowed here",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes are distinct, non-zero, and map back to their errno.
    #[test]
    fn errno_codes_round_trip() {
        for e in Errno::ALL {
            assert_ne!(e.code(), 0);
            assert_eq!(Errno::from_code(e.code()), Some(e));
        }
        assert_eq!(Errno::from_code(0), None);
        assert_eq!(Errno::from_code(999), None);
    }
}

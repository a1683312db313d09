//! The one contract between the tickdb host and the modules it runs.
//!
//! Both sides build against this crate, so it stays small and runtime-free: it compiles
//! for `wasm32-unknown-unknown` and depends on nothing heavier than `thiserror`.
//!
//! - [`abi`]: the names and status codes of the host calls and exports (version 1;
//!   `wasm-abi/README.md` documents each call).
//! - [`types`]: the value types a column or argument can have.
//! - [`value`]: dynamically typed values, for tools and tests.
//! - [`typed`]: the [`Type`] trait, Rust types with their tickdb type and encoding.
//! - [`encoding`]: the compact binary encoding every layer moves rows in.
//! - [`schema`]: table schemas and their validation.
//! - [`module_def`]: what a module declares (tables, reducers, schedules, tick systems)
//!   and its binary encoding.

#[cfg(not(target_endian = "little"))]
compile_error!("tickdb stores the little-endian value encoding in place and needs a little-endian target");

pub mod abi;
pub mod encoding;
pub mod module_def;
pub mod schema;
pub mod typed;
pub mod types;
pub mod value;

pub use encoding::{DecodeError, EncodeError, Reader, decode, decode_exact, encode, encode_product, skip};
pub use module_def::{
    Lifecycle, ModuleDef, ModuleDefError, ReducerDef, SCHEDULE_AT_INTERVAL, SCHEDULE_AT_TIME, ScheduleDef,
    TickSystemDef, decode_type, encode_type, schedule_at_type,
};
pub use schema::{
    ColId, ColumnSchema, GRID_CELL_LOG2, IndexKind, IndexSchema, SchemaError, TableAccess, TableSchema,
    TableSchemaBuilder, UniqueConstraint, grid_cell,
};
pub use typed::{ScheduleAt, Type};
pub use types::{Field, ProductType, SumType, TypeError, ValueType};
pub use value::{ConnectionId, Identity, TimeDuration, Timestamp, Value};

//! Write tickdb modules in Rust.
//!
//! A module declares tables with `#[tickdb::table]`, reducers with
//! `#[tickdb::reducer]` and tick systems with `#[tickdb::tick(hz = N)]` (add `batch_calls`
//! to run clients' calls in its ticks), and is built
//! for `wasm32-unknown-unknown` as a `cdylib`. The host runs each reducer call as one
//! transaction in the database's tick loop.
//!
//! ```no_run
//! use tickdb::{Identity, ReducerContext, Table, reducer, table};
//!
//! #[table(accessor = player, public)]
//! pub struct Player {
//!     #[primary_key]
//!     #[auto_inc]
//!     id: u64,
//!     #[unique]
//!     identity: Identity,
//!     #[index(btree)]
//!     zone: u32,
//!     x: f32,
//!     y: f32,
//!     name: String,
//! }
//!
//! #[reducer]
//! pub fn move_to(ctx: &ReducerContext, x: f32, y: f32) -> Result<(), String> {
//!     let mut p = ctx.db.player().identity().find(ctx.sender).ok_or("not joined")?;
//!     p.x = x;
//!     p.y = y;
//!     ctx.db.player().id().update(p);
//!     Ok(())
//! }
//! ```
//!
//! `#[tickdb::client_visibility_filter]` on a `const` SQL string declares which rows
//! of a table each client may read (`SELECT * FROM item WHERE owner = :sender`).
//!
//! Panics in a reducer fail the call with the panic's message and roll it back.
//! The `log` crate's macros write to the database's log.

mod rt;
mod sys;
mod table;

pub use rt::{Local, ReducerContext, ReducerResult, Rng};
pub use table::{BTreeIndex, IndexBounds, RowIter, Table, UniqueColumn, WriteError};
pub use tickdb_macros::{Type, client_visibility_filter, reducer, table, tick};
pub use tickdb_wasm_abi::{ConnectionId, Identity, TimeDuration, Timestamp};
pub use tickdb_wasm_abi::{ScheduleAt, Type};

/// For the macros' generated code only.
#[doc(hidden)]
pub mod __private {
    pub use crate::rt::*;
    pub use crate::table::Bounds;
    pub use tickdb_wasm_abi::typed::{encode_len, product, sum, take_tag};
    pub use tickdb_wasm_abi::{DecodeError, Lifecycle, Reader, TableAccess, TableSchema, ValueType};
}

/// Everything a module usually needs, in one import.
pub mod prelude {
    pub use crate::{
        ConnectionId, Identity, ReducerContext, ScheduleAt, Table, TimeDuration, Timestamp, Type,
        client_visibility_filter, reducer, table, tick,
    };
}

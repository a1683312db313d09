//! tickdb's storage engine.
//!
//! A [`Database`] is a set of [`Table`]s, each a list of columnar [`chunk`]s with
//! [`index`]es over them. All writes go through a [`Tx`], which applies them in place
//! and keeps an undo log; committing yields a [`Changeset`]. The [`tick`] loop owns a
//! database on one thread and runs every unit of work as its own transaction, tick
//! by tick, handing each tick's merged changes on.
//!
//! The engine does no socket I/O and knows nothing of clients or the wire protocol.

pub mod changeset;
pub mod chunk;
pub mod commitlog;
pub mod config;
pub mod db;
pub mod durability;
pub mod error;
pub mod host;
pub mod ids;
pub mod index;
pub mod key;
pub mod migrate;
mod small;
pub mod snapshot;
pub mod store;
pub mod table;
pub mod tick;

pub use changeset::{Changeset, RowList, TableChanges};
pub use config::{ConfigError, EngineConfig};
pub use db::{Database, Tx};
pub use durability::{
    Durability, DurableSink, RecoverError, Recovered, ReplayError, Replayed, SnapshotPolicy, prune, recover,
    recover_from, replay,
};
pub use error::Error;
pub use host::{
    CallError, CallReply, HostConfig, HostError, LoadedModule, LogRecord, ModuleError, ModuleHost,
    ModuleLogs, ModuleSystem, ModuleWork, OwnChanges, ReplyTo,
};
pub use ids::{RowId, TableId, TickId};
pub use key::KeyBytes;
pub use migrate::{Incompatible, Migration};
pub use table::{ChunkView, RowRef, Table};
pub use tick::{
    Clock, Entropy, InboxError, ReadError, Release, Releases, SplitMix64, SystemClock, TickContext,
    TickHandle, TickLog, TickLoop, TickMetrics, TickOutput, TickSink, TickSystem, Ticker,
};

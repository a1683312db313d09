//! `tickdb-sdk`: the Rust client SDK for tickdb.
//!
//! A client connects to one database over WebSocket, subscribes to SQL queries and
//! keeps their rows in a local cache, updated tick by tick; it calls the module's
//! reducers and runs one-off queries. Typed bindings for a module (row structs, table
//! handles, reducer functions) are generated with `tickdb generate --lang rust`:
//!
//! ```text
//! mod bindings; // generated
//! use bindings::*;
//!
//! let conn = DbConnection::builder(bindings::tables())
//!     .with_uri("http://127.0.0.1:3000")
//!     .with_database_name("chat")
//!     .on_connect(|_, identity, _token| println!("connected as {identity}"))
//!     .build()?;
//! conn.db().message().on_insert(|_, m| println!("{}", m.text));
//! conn.subscription_builder().subscribe(["SELECT * FROM message"]);
//! conn.reducers().send_message("hello".into())?;
//! loop {
//!     conn.frame_tick(); // or conn.run_threaded() once
//!     // ... the game's frame
//! }
//! ```
//!
//! - [`connection`]: [`DbConnection`], its builder, callbacks, subscriptions, reconnect.
//! - `cache`: the rows, counted per query, and what applying a message changed.
//! - [`table`]: typed handles for the generated bindings.
//! - `link`: the WebSocket connection and its I/O thread.
//!
//! Nothing the server sends can panic the client: what cannot be read or applied
//! reaches the `on_error` callbacks.

mod cache;
pub mod connection;
mod link;
pub mod table;

pub use cache::{AnyRow, TableDesc};
pub use connection::{
    CallbackId, DbConnection, DbConnectionBuilder, Event, EventContext, ResultCallback, SubscriptionBuilder,
    SubscriptionHandle,
};
pub use table::{Db, HasPrimaryKey, Reducers, TableHandle, TableRow, UniqueColumn};
pub use tickdb_protocol::{Compression, QueryRows};
pub use tickdb_wasm_abi::{
    ConnectionId, DecodeError, Identity, Reader, ScheduleAt, TimeDuration, Timestamp, Type, Value, ValueType,
    typed,
};

/// The client cache without a connection, for the benchmarks (`benches/benches/sdk.rs`);
/// not part of the API.
#[doc(hidden)]
pub mod bench {
    use tickdb_protocol::TableUpdate;

    use crate::TableDesc;
    use crate::cache::ClientCache;

    #[derive(Debug)]
    pub struct Cache(ClientCache);

    impl Cache {
        pub fn new(tables: &[TableDesc]) -> Cache {
            Cache(ClientCache::new(tables))
        }

        /// Query set `set`'s rows, all of them, as a `SubscribeApplied` brings them;
        /// the number of events.
        pub fn subscribe(&mut self, set: u32, table: &str, rows: Vec<&[u8]>) -> usize {
            let (mut events, mut errors) = (Vec::new(), Vec::new());
            self.0.apply_rows(set, [(table, rows)], &mut events, &mut errors);
            assert!(errors.is_empty(), "{errors:?}");
            events.len()
        }

        /// One tick's changes to query set `set`; the number of events.
        pub fn apply(&mut self, set: u32, update: &TableUpdate) -> usize {
            let (mut events, mut errors) = (Vec::new(), Vec::new());
            self.0.apply_tick(&[(set, std::slice::from_ref(update))], &mut events, &mut errors);
            assert!(errors.is_empty(), "{errors:?}");
            events.len()
        }

        pub fn len(&self, table: usize) -> usize {
            self.0.tables[table].len()
        }

        pub fn is_empty(&self, table: usize) -> bool {
            self.len(table) == 0
        }
    }
}

/// A one-off query's rows as `R`s: a type whose fields are the query's columns in
/// order, such as a table's row struct for `SELECT * FROM table`.
pub fn decode_rows<R: Type>(rows: &QueryRows) -> Result<Vec<R>, DecodeError> {
    rows.rows.iter().map(R::from_bytes).collect()
}

/// What went wrong on a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdkError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("the server refused the connection ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("disconnected: {0}")]
    Disconnected(String),
    #[error("the server sent something this client cannot apply: {0}")]
    Protocol(String),
    #[error("query set {query_set_id} failed: {message}")]
    Subscription { query_set_id: u32, message: String },
}

//! tickdb's client protocol, shared by the server (`tickdb-net`) and the client SDKs.
//!
//! The contract is `tickdb.fbs`: FlatBuffers messages, one per binary WebSocket
//! message, behind one byte that says how the rest is compressed ([`frame`],
//! [`unframe`]). This crate gives each message as a plain Rust type
//! ([`ClientMessage`], [`ServerMessage`]) with its encoding and a decoder that checks
//! untrusted input (the FlatBuffers verifier, with limits) and never panics on it.
//! Rows, keys and arguments stay in tickdb's binary value encoding: this crate moves
//! their bytes and does not look inside them.

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, VerifierOptions, WIPOffset};

#[allow(unsafe_code, clippy::all, clippy::pedantic, clippy::undocumented_unsafe_blocks, unused_imports, unused_extern_crates, rust_2018_idioms, missing_debug_implementations, deprecated)]
#[rustfmt::skip]
mod generated;

mod frame;

pub use frame::{COMPRESS_BYTES_MIN, Compression, frame, unframe};
pub use generated::tickdb::protocol as fb;

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("the message is not a valid tickdb FlatBuffer: {0}")]
    Invalid(String),
    #[error("the message has no body, or a body of a kind this side does not know")]
    UnknownBody,
    #[error("the message is empty: it has no compression byte")]
    Empty,
    #[error("unknown compression tag {0}; known are 0 (none) and 1 (lz4)")]
    UnknownCompression(u8),
    #[error("the message decompresses to {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the compressed message is corrupt: {0}")]
    Corrupt(String),
    #[error("{field} must be {expected} bytes, not {found}")]
    BadLength { field: &'static str, expected: usize, found: usize },
    #[error("row offsets are not increasing within the row data")]
    BadOffsets,
}

/// How many tables, and how deep, a message may hold before the verifier refuses it.
/// Messages from clients are small; updates from the server are wide but shallow.
fn verifier_options() -> VerifierOptions {
    VerifierOptions { max_depth: 16, max_tables: 4_000_000, max_apparent_size: 1 << 31, ..Default::default() }
}

/// Encoded rows, concatenated, with where each starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowList {
    pub data: Vec<u8>,
    pub offsets: Vec<u32>,
}

impl RowList {
    pub fn push(&mut self, row: &[u8]) {
        self.offsets.push(u32::try_from(self.data.len()).expect("messages are smaller than 4 GiB"));
        self.data.extend_from_slice(row);
    }

    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The rows, in order. The offsets were checked when the list was decoded.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.offsets.len()).map(|i| self.row(i))
    }

    /// Row `i`; panics if there is no such row.
    pub fn row(&self, i: usize) -> &[u8] {
        let end = self.offsets.get(i + 1).map_or(self.data.len(), |&o| o as usize);
        &self.data[self.offsets[i] as usize..end]
    }

    fn read(list: Option<fb::RowList<'_>>) -> Result<RowList, ProtocolError> {
        let Some(list) = list else { return Ok(RowList::default()) };
        let data = list.data().map(|d| d.bytes().to_vec()).unwrap_or_default();
        let offsets: Vec<u32> = list.offsets().map(|o| o.iter().collect()).unwrap_or_default();
        let increasing = offsets.windows(2).all(|w| w[0] <= w[1]);
        if !increasing
            || offsets.first().is_some_and(|&o| o != 0)
            || offsets.last().is_some_and(|&o| o as usize > data.len())
        {
            return Err(ProtocolError::BadOffsets);
        }
        Ok(RowList { data, offsets })
    }

    fn write<'b>(&self, b: &mut FlatBufferBuilder<'b>) -> WIPOffset<fb::RowList<'b>> {
        let data = b.create_vector(&self.data);
        let offsets = b.create_vector(&self.offsets);
        fb::RowList::create(b, &fb::RowListArgs { data: Some(data), offsets: Some(offsets) })
    }
}

impl<'a> FromIterator<&'a [u8]> for RowList {
    fn from_iter<I: IntoIterator<Item = &'a [u8]>>(rows: I) -> Self {
        let mut list = RowList::default();
        rows.into_iter().for_each(|r| list.push(r));
        list
    }
}

/// A message from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    CallReducer {
        request_id: u32,
        reducer: String,
        args: Vec<u8>,
    },
    /// `resume_after_tick` and `resume_epoch`: see `Subscribe` in `tickdb.fbs` (0: not
    /// resuming).
    Subscribe {
        query_set_id: u32,
        queries: Vec<String>,
        resume_after_tick: u64,
        resume_epoch: u64,
    },
    Unsubscribe {
        query_set_id: u32,
    },
    OneOffQuery {
        request_id: u32,
        sql: String,
    },
}

impl ClientMessage {
    /// The message as a FlatBuffer (without the compression byte: see [`frame`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = FlatBufferBuilder::with_capacity(64);
        let (body_type, body) = match self {
            ClientMessage::CallReducer { request_id, reducer, args } => {
                let args = fb::CallReducerArgs {
                    request_id: *request_id,
                    reducer: Some(b.create_string(reducer)),
                    args: Some(b.create_vector(args)),
                };
                (fb::ClientBody::CallReducer, fb::CallReducer::create(&mut b, &args).as_union_value())
            }
            ClientMessage::Subscribe { query_set_id, queries, resume_after_tick, resume_epoch } => {
                let queries: Vec<_> = queries.iter().map(|q| b.create_string(q)).collect();
                let queries = Some(b.create_vector(&queries));
                let args = fb::SubscribeArgs {
                    query_set_id: *query_set_id,
                    queries,
                    resume_after_tick: *resume_after_tick,
                    resume_epoch: *resume_epoch,
                };
                (fb::ClientBody::Subscribe, fb::Subscribe::create(&mut b, &args).as_union_value())
            }
            ClientMessage::Unsubscribe { query_set_id } => {
                let args = fb::UnsubscribeArgs { query_set_id: *query_set_id };
                (fb::ClientBody::Unsubscribe, fb::Unsubscribe::create(&mut b, &args).as_union_value())
            }
            ClientMessage::OneOffQuery { request_id, sql } => {
                let args = fb::OneOffQueryArgs { request_id: *request_id, sql: Some(b.create_string(sql)) };
                (fb::ClientBody::OneOffQuery, fb::OneOffQuery::create(&mut b, &args).as_union_value())
            }
        };
        let root = fb::ClientMessage::create(&mut b, &fb::ClientMessageArgs { body_type, body: Some(body) });
        b.finish_minimal(root);
        b.finished_data().to_vec()
    }

    /// Reads a client's message (after [`unframe`]), checking every offset.
    pub fn decode(bytes: &[u8]) -> Result<ClientMessage, ProtocolError> {
        let opts = verifier_options();
        let message = flatbuffers::root_with_opts::<fb::ClientMessage<'_>>(&opts, bytes)
            .map_err(|e| ProtocolError::Invalid(e.to_string()))?;
        let text = |s: Option<&str>| s.unwrap_or_default().to_string();
        if let Some(m) = message.body_as_call_reducer() {
            let args = m.args().map(|a| a.bytes().to_vec()).unwrap_or_default();
            return Ok(ClientMessage::CallReducer {
                request_id: m.request_id(),
                reducer: text(m.reducer()),
                args,
            });
        }
        if let Some(m) = message.body_as_subscribe() {
            let queries = m.queries().map(|q| q.iter().map(str::to_string).collect()).unwrap_or_default();
            return Ok(ClientMessage::Subscribe {
                query_set_id: m.query_set_id(),
                queries,
                resume_after_tick: m.resume_after_tick(),
                resume_epoch: m.resume_epoch(),
            });
        }
        if let Some(m) = message.body_as_unsubscribe() {
            return Ok(ClientMessage::Unsubscribe { query_set_id: m.query_set_id() });
        }
        if let Some(m) = message.body_as_one_off_query() {
            return Ok(ClientMessage::OneOffQuery { request_id: m.request_id(), sql: text(m.sql()) });
        }
        Err(ProtocolError::UnknownBody)
    }
}

/// The rows of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRows {
    pub table_id: u32,
    pub table_name: String,
    pub rows: RowList,
}

/// Rows of a table with a primary key that stayed in a result with new values; see
/// `RowUpdates` in `tickdb.fbs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowUpdates {
    pub keys: RowList,
    pub changed: Vec<u8>,
    pub values: RowList,
}

impl RowUpdates {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableUpdate {
    pub table_id: u32,
    pub table_name: String,
    pub inserts: RowList,
    pub deletes: RowList,
    pub updates: RowUpdates,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuerySetUpdate {
    pub query_set_id: u32,
    pub tables: Vec<TableUpdate>,
}

/// One tick's changes to a query set, for a resumed subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MissedTick {
    pub tick: u64,
    pub tables: Vec<TableUpdate>,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    IdentityToken {
        identity: [u8; 32],
        token: String,
        connection_id: [u8; 16],
        tick: u64,
        epoch: u64,
    },
    /// `resumed`: `tables` is empty and `missed` holds the changes since the client's
    /// resume tick (see `SubscribeApplied` in `tickdb.fbs`).
    SubscribeApplied {
        query_set_id: u32,
        tick: u64,
        tables: Vec<TableRows>,
        resumed: bool,
        missed: Vec<MissedTick>,
    },
    TickUpdate {
        tick: u64,
        timestamp_us: i64,
        query_sets: Vec<QuerySetUpdate>,
    },
    ReducerResult {
        request_id: u32,
        tick: u64,
        outcome: Result<Vec<u8>, String>,
        duration_us: u64,
        /// What this call changed in the caller's query sets.
        changes: Vec<QuerySetUpdate>,
    },
    QueryResult {
        request_id: u32,
        outcome: Result<QueryRows, String>,
        duration_us: u64,
    },
    SubscriptionError {
        query_set_id: u32,
        message: String,
    },
}

/// A one-off query's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryRows {
    pub columns: Vec<String>,
    /// The rows' product type in the module definition's type encoding
    /// (`tickdb_wasm_abi::decode_type`).
    pub row_type: Vec<u8>,
    pub rows: RowList,
}

impl ServerMessage {
    /// The message as a FlatBuffer (without the compression byte: see [`frame`]).
    pub fn encode(&self) -> Vec<u8> {
        // Sized for the rows it carries: growing the builder copies what it holds.
        let mut b = FlatBufferBuilder::with_capacity(256 + self.rows_bytes());
        let (body_type, body) = self.write_body(&mut b);
        let root = fb::ServerMessage::create(&mut b, &fb::ServerMessageArgs { body_type, body: Some(body) });
        b.finish_minimal(root);
        b.finished_data().to_vec()
    }

    /// About how many bytes the message's rows take when encoded.
    fn rows_bytes(&self) -> usize {
        let list = |l: &RowList| l.data.len() + 4 * l.offsets.len() + 8;
        let table = |t: &TableUpdate| {
            let u = &t.updates;
            64 + list(&t.inserts) + list(&t.deletes) + list(&u.keys) + list(&u.values) + u.changed.len()
        };
        let sets = |sets: &[QuerySetUpdate]| -> usize {
            sets.iter().map(|s| 16 + s.tables.iter().map(table).sum::<usize>()).sum()
        };
        match self {
            ServerMessage::TickUpdate { query_sets, .. } => sets(query_sets),
            ServerMessage::ReducerResult { changes, .. } => sets(changes),
            _ => 0,
        }
    }

    fn write_body<'b>(
        &self,
        b: &mut FlatBufferBuilder<'b>,
    ) -> (fb::ServerBody, WIPOffset<flatbuffers::UnionWIPOffset>) {
        use fb::ServerBody as Body;
        match self {
            ServerMessage::IdentityToken { identity, token, connection_id, tick, epoch } => {
                let args = fb::IdentityTokenArgs {
                    identity: Some(b.create_vector(identity)),
                    token: Some(b.create_string(token)),
                    connection_id: Some(b.create_vector(connection_id)),
                    tick: *tick,
                    epoch: *epoch,
                };
                (Body::IdentityToken, fb::IdentityToken::create(b, &args).as_union_value())
            }
            ServerMessage::SubscribeApplied { query_set_id, tick, tables, resumed, missed } => {
                let tables: Vec<_> = tables.iter().map(|t| write_table_rows(b, t)).collect();
                let tables = Some(b.create_vector(&tables));
                let missed: Vec<_> = missed
                    .iter()
                    .map(|m| {
                        let tables: Vec<_> = m.tables.iter().map(|t| write_table_update(b, t)).collect();
                        let tables = Some(b.create_vector(&tables));
                        fb::MissedTick::create(b, &fb::MissedTickArgs { tick: m.tick, tables })
                    })
                    .collect();
                let missed = Some(b.create_vector(&missed));
                let args = fb::SubscribeAppliedArgs {
                    query_set_id: *query_set_id,
                    tick: *tick,
                    tables,
                    resumed: *resumed,
                    missed,
                };
                (Body::SubscribeApplied, fb::SubscribeApplied::create(b, &args).as_union_value())
            }
            ServerMessage::TickUpdate { tick, timestamp_us, query_sets } => {
                let sets: Vec<_> = query_sets.iter().map(|set| write_query_set(b, set)).collect();
                let query_sets = Some(b.create_vector(&sets));
                let args = fb::TickUpdateArgs { tick: *tick, timestamp_us: *timestamp_us, query_sets };
                (Body::TickUpdate, fb::TickUpdate::create(b, &args).as_union_value())
            }
            ServerMessage::ReducerResult { request_id, tick, outcome, duration_us, changes } => {
                let (value, error) = match outcome {
                    Ok(v) => (Some(b.create_vector(v)), None),
                    Err(e) => (None, Some(b.create_string(e))),
                };
                let changes = (!changes.is_empty()).then(|| {
                    let sets: Vec<_> = changes.iter().map(|set| write_query_set(b, set)).collect();
                    b.create_vector(&sets)
                });
                let args = fb::ReducerResultArgs {
                    request_id: *request_id,
                    tick: *tick,
                    ok: outcome.is_ok(),
                    value,
                    error,
                    duration_us: *duration_us,
                    changes,
                };
                (Body::ReducerResult, fb::ReducerResult::create(b, &args).as_union_value())
            }
            ServerMessage::QueryResult { request_id, outcome, duration_us } => {
                let mut args = fb::QueryResultArgs {
                    request_id: *request_id,
                    duration_us: *duration_us,
                    ..Default::default()
                };
                match outcome {
                    Ok(rows) => {
                        let columns: Vec<_> = rows.columns.iter().map(|c| b.create_string(c)).collect();
                        args.columns = Some(b.create_vector(&columns));
                        args.row_type = Some(b.create_vector(&rows.row_type));
                        args.rows = Some(rows.rows.write(b));
                    }
                    Err(e) => args.error = Some(b.create_string(e)),
                }
                (Body::QueryResult, fb::QueryResult::create(b, &args).as_union_value())
            }
            ServerMessage::SubscriptionError { query_set_id, message } => {
                let args = fb::SubscriptionErrorArgs {
                    query_set_id: *query_set_id,
                    message: Some(b.create_string(message)),
                };
                (Body::SubscriptionError, fb::SubscriptionError::create(b, &args).as_union_value())
            }
        }
    }

    /// Reads a server's message (after [`unframe`]), checking every offset.
    pub fn decode(bytes: &[u8]) -> Result<ServerMessage, ProtocolError> {
        let opts = verifier_options();
        let message = flatbuffers::root_with_opts::<fb::ServerMessage<'_>>(&opts, bytes)
            .map_err(|e| ProtocolError::Invalid(e.to_string()))?;
        let text = |s: Option<&str>| s.unwrap_or_default().to_string();
        if let Some(m) = message.body_as_identity_token() {
            return Ok(ServerMessage::IdentityToken {
                identity: fixed(m.identity(), "identity")?,
                token: text(m.token()),
                connection_id: fixed(m.connection_id(), "connection_id")?,
                tick: m.tick(),
                epoch: m.epoch(),
            });
        }
        if let Some(m) = message.body_as_subscribe_applied() {
            let tables = m.tables().into_iter().flatten().map(read_table_rows).collect::<Result<_, _>>()?;
            let mut missed = Vec::new();
            for t in m.missed().into_iter().flatten() {
                let tables =
                    t.tables().into_iter().flatten().map(read_table_update).collect::<Result<_, _>>()?;
                missed.push(MissedTick { tick: t.tick(), tables });
            }
            let (query_set_id, tick, resumed) = (m.query_set_id(), m.tick(), m.resumed());
            return Ok(ServerMessage::SubscribeApplied { query_set_id, tick, tables, resumed, missed });
        }
        if let Some(m) = message.body_as_tick_update() {
            let query_sets = read_query_sets(m.query_sets())?;
            return Ok(ServerMessage::TickUpdate {
                tick: m.tick(),
                timestamp_us: m.timestamp_us(),
                query_sets,
            });
        }
        if let Some(m) = message.body_as_reducer_result() {
            let outcome = match m.ok() {
                true => Ok(m.value().map(|v| v.bytes().to_vec()).unwrap_or_default()),
                false => Err(text(m.error())),
            };
            let (request_id, tick, duration_us) = (m.request_id(), m.tick(), m.duration_us());
            let changes = read_query_sets(m.changes())?;
            return Ok(ServerMessage::ReducerResult { request_id, tick, outcome, duration_us, changes });
        }
        if let Some(m) = message.body_as_query_result() {
            let outcome = match m.error() {
                Some(e) => Err(e.to_string()),
                None => Ok(QueryRows {
                    columns: m.columns().map(|c| c.iter().map(str::to_string).collect()).unwrap_or_default(),
                    row_type: m.row_type().map(|t| t.bytes().to_vec()).unwrap_or_default(),
                    rows: RowList::read(m.rows())?,
                }),
            };
            return Ok(ServerMessage::QueryResult {
                request_id: m.request_id(),
                outcome,
                duration_us: m.duration_us(),
            });
        }
        if let Some(m) = message.body_as_subscription_error() {
            return Ok(ServerMessage::SubscriptionError {
                query_set_id: m.query_set_id(),
                message: text(m.message()),
            });
        }
        Err(ProtocolError::UnknownBody)
    }
}

fn fixed<const N: usize>(
    bytes: Option<Vector<'_, u8>>,
    field: &'static str,
) -> Result<[u8; N], ProtocolError> {
    let bytes = bytes.map(|b| b.bytes()).unwrap_or_default();
    bytes.try_into().map_err(|_| ProtocolError::BadLength { field, expected: N, found: bytes.len() })
}

fn write_table_rows<'b>(b: &mut FlatBufferBuilder<'b>, t: &TableRows) -> WIPOffset<fb::TableRows<'b>> {
    let table_name = Some(b.create_string(&t.table_name));
    let rows = Some(t.rows.write(b));
    fb::TableRows::create(b, &fb::TableRowsArgs { table_id: t.table_id, table_name, rows })
}

fn read_table_rows(t: fb::TableRows<'_>) -> Result<TableRows, ProtocolError> {
    let table_name = t.table_name().unwrap_or_default().to_string();
    Ok(TableRows { table_id: t.table_id(), table_name, rows: RowList::read(t.rows())? })
}

fn write_query_set<'b>(
    b: &mut FlatBufferBuilder<'b>,
    set: &QuerySetUpdate,
) -> WIPOffset<fb::QuerySetUpdate<'b>> {
    let tables: Vec<_> = set.tables.iter().map(|t| write_table_update(b, t)).collect();
    let tables = Some(b.create_vector(&tables));
    fb::QuerySetUpdate::create(b, &fb::QuerySetUpdateArgs { query_set_id: set.query_set_id, tables })
}

fn write_table_update<'b>(b: &mut FlatBufferBuilder<'b>, t: &TableUpdate) -> WIPOffset<fb::TableUpdate<'b>> {
    let table_name = Some(b.create_string(&t.table_name));
    let (inserts, deletes) = (Some(t.inserts.write(b)), Some(t.deletes.write(b)));
    let updates = (!t.updates.is_empty()).then(|| {
        let keys = Some(t.updates.keys.write(b));
        let changed = Some(b.create_vector(&t.updates.changed));
        let values = Some(t.updates.values.write(b));
        fb::RowUpdates::create(b, &fb::RowUpdatesArgs { keys, changed, values })
    });
    let args = fb::TableUpdateArgs { table_id: t.table_id, table_name, inserts, deletes, updates };
    fb::TableUpdate::create(b, &args)
}

fn read_table_update(t: fb::TableUpdate<'_>) -> Result<TableUpdate, ProtocolError> {
    let updates = match t.updates() {
        None => RowUpdates::default(),
        Some(u) => {
            let keys = RowList::read(u.keys())?;
            let values = RowList::read(u.values())?;
            let changed = u.changed().map(|c| c.bytes().to_vec()).unwrap_or_default();
            let whole = keys.is_empty() || changed.len() % keys.len() == 0;
            if keys.len() != values.len() || !whole {
                return Err(ProtocolError::Invalid("row updates of unequal lengths".into()));
            }
            RowUpdates { keys, changed, values }
        }
    };
    Ok(TableUpdate {
        table_id: t.table_id(),
        table_name: t.table_name().unwrap_or_default().to_string(),
        inserts: RowList::read(t.inserts())?,
        deletes: RowList::read(t.deletes())?,
        updates,
    })
}

type Sets<'a> = Option<Vector<'a, ForwardsUOffset<fb::QuerySetUpdate<'a>>>>;

fn read_query_sets(sets: Sets<'_>) -> Result<Vec<QuerySetUpdate>, ProtocolError> {
    let mut out = Vec::new();
    for set in sets.into_iter().flatten() {
        let tables = set.tables().into_iter().flatten().map(read_table_update).collect::<Result<_, _>>()?;
        out.push(QuerySetUpdate { query_set_id: set.query_set_id(), tables });
    }
    Ok(out)
}

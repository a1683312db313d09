//! [`DbConnection`]: a client's connection to one database, its cache and callbacks.
//!
//! Messages from the server queue up until the client applies them, on its own
//! thread with [`DbConnection::frame_tick`] (the game loop's way: once per frame) or on
//! a background thread started by [`DbConnection::run_threaded`]. Applying a message
//! first updates the whole cache, then runs the callbacks it triggered, so a callback
//! always sees the cache as of the message's tick. Callbacks run without any lock
//! held: they may read the cache, call reducers and subscribe.
//!
//! When the connection drops, pending calls and queries fail with
//! [`SdkError::Disconnected`], and (unless turned off) a reconnect thread dials again
//! with the same token, backing off up to 5 s between attempts. Once connected, every
//! query set is subscribed again, resuming from the last tick the client applied: the
//! server then sends only what changed meanwhile, or every row afresh when it cannot
//! (it restarted, or the gap is longer than its history), and the cache turns that
//! into the inserts, updates and deletes that really happened.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, TryLockError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tickdb_protocol::{ClientMessage, Compression, MissedTick, QueryRows, ServerMessage, TableRows, frame};
use tickdb_wasm_abi::{ConnectionId, Identity, Timestamp};

use crate::SdkError;
use crate::cache::{AnyRow, CacheEvent, ClientCache, TableDesc};
use crate::link::{Inbound, Link, LinkLimits};
use crate::table::{Db, Reducers};

/// What a callback was called for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The connection was made (again); the identity is known.
    Connected,
    /// The connection dropped or was closed.
    Disconnected,
    /// A query set's rows arrived (again, after a reconnect: `resumed` when only what
    /// changed meanwhile was sent).
    SubscribeApplied { query_set_id: u32, tick: u64, resumed: bool },
    /// A tick's changes arrived.
    Tick { tick: u64, timestamp: Timestamp },
    /// A query set failed and was dropped, or was unsubscribed.
    SubscriptionEnded { query_set_id: u32 },
    /// A reducer call's result arrived; its changes come with that tick's update.
    ReducerResult { tick: u64 },
    /// A one-off query's result arrived.
    QueryResult,
    /// A message from the server could not be applied.
    Error,
}

/// What a callback gets: the connection (its cache, reducers) and the event.
#[derive(Debug)]
pub struct EventContext<'a> {
    pub conn: &'a DbConnection,
    pub event: Event,
}

impl<'a> EventContext<'a> {
    /// The client cache's tables.
    pub fn db(&self) -> Db<'a> {
        self.conn.db()
    }

    /// The module's reducers (through the generated bindings' trait).
    pub fn reducers(&self) -> Reducers<'a> {
        self.conn.reducers()
    }
}

type ConnectCallback = Box<dyn FnMut(&EventContext<'_>, Identity, &str) + Send>;
type DisconnectCallback = Box<dyn FnMut(&EventContext<'_>, Option<&SdkError>) + Send>;
type ErrorCallback = Box<dyn FnMut(&EventContext<'_>, &SdkError) + Send>;
pub(crate) type RowCallback = Box<dyn FnMut(&EventContext<'_>, &AnyRow) + Send>;
pub(crate) type UpdateCallback = Box<dyn FnMut(&EventContext<'_>, &AnyRow, &AnyRow) + Send>;
/// A callback for one result: a reducer call's or a query's.
pub type ResultCallback<T> = Box<dyn FnOnce(&EventContext<'_>, Result<T, String>) + Send>;
type CallCallback = ResultCallback<Vec<u8>>;
type QueryCallback = Box<dyn FnOnce(&EventContext<'_>, Result<QueryRows, String>) + Send>;
type SetCallback = Box<dyn FnMut(&EventContext<'_>) + Send>;
type SetErrorCallback = Box<dyn FnMut(&EventContext<'_>, &str) + Send>;

/// Identifies a registered callback, to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallbackId(u64);

/// The row callbacks of one table.
#[derive(Default)]
pub(crate) struct TableCallbacks {
    pub(crate) insert: Vec<(CallbackId, RowCallback)>,
    pub(crate) delete: Vec<(CallbackId, RowCallback)>,
    pub(crate) update: Vec<(CallbackId, UpdateCallback)>,
}

/// The long-lived callbacks. While they run they are taken out of the connection;
/// callbacks registered or removed meanwhile are merged in afterwards.
#[derive(Default)]
pub(crate) struct Callbacks {
    next_id: u64,
    connect: Vec<ConnectCallback>,
    disconnect: Vec<DisconnectCallback>,
    error: Vec<ErrorCallback>,
    pub(crate) tables: HashMap<usize, TableCallbacks>,
    removed: Vec<CallbackId>,
}

impl Callbacks {
    pub(crate) fn next_id(&mut self) -> CallbackId {
        self.next_id += 1;
        CallbackId(self.next_id)
    }

    fn merge(&mut self, mut added: Callbacks) {
        self.next_id = self.next_id.max(added.next_id);
        self.connect.append(&mut added.connect);
        self.disconnect.append(&mut added.disconnect);
        self.error.append(&mut added.error);
        for (table, mut callbacks) in added.tables {
            let into = self.tables.entry(table).or_default();
            into.insert.append(&mut callbacks.insert);
            into.delete.append(&mut callbacks.delete);
            into.update.append(&mut callbacks.update);
        }
        for id in added.removed {
            self.drop_callback(id);
        }
    }

    /// Removes a callback; one not found may be running right now, taken out of the
    /// slot, and is removed when it is merged back.
    pub(crate) fn remove(&mut self, id: CallbackId) -> bool {
        let found = self.drop_callback(id);
        if !found {
            self.removed.push(id);
        }
        found
    }

    fn drop_callback(&mut self, id: CallbackId) -> bool {
        let mut found = false;
        for t in self.tables.values_mut() {
            let before = t.insert.len() + t.delete.len() + t.update.len();
            t.insert.retain(|(i, _)| *i != id);
            t.delete.retain(|(i, _)| *i != id);
            t.update.retain(|(i, _)| *i != id);
            found |= before != t.insert.len() + t.delete.len() + t.update.len();
        }
        found
    }
}

/// A query set the client holds, sent again after every reconnect.
struct QuerySet {
    queries: Vec<String>,
    /// The link (generation) it was last sent on.
    sent_on: Option<u64>,
    /// The link its rows were last applied on: updates there move `resume` on.
    applied_on: Option<u64>,
    /// The run (epoch) and tick its cached rows are as of: where a resume starts.
    resume: Option<(u64, u64)>,
    on_applied: Option<SetCallback>,
    on_error: Option<SetErrorCallback>,
}

/// The most messages one `frame_tick` applies, so that a server sending faster than
/// the client applies cannot hold a frame for ever.
pub const FRAME_MESSAGES_MAX: usize = 4096;

#[derive(Default)]
struct State {
    link: Option<Link>,
    generation: u64,
    identity: Option<Identity>,
    connection_id: Option<ConnectionId>,
    token: Option<String>,
    epoch: u64,
    last_tick: u64,
    next_request: u32,
    next_set: u32,
    calls: HashMap<u32, CallCallback>,
    queries: HashMap<u32, QueryCallback>,
    sets: BTreeMap<u32, QuerySet>,
    /// The server refused a reconnect for good.
    gave_up: bool,
    /// A reconnect thread is dialing.
    reconnecting: bool,
}

struct Settings {
    url_base: String,
    database: String,
    compression: Compression,
    reconnect: bool,
    limits: LinkLimits,
}

struct Shared {
    settings: Settings,
    cache: RwLock<ClientCache>,
    callbacks: Mutex<Callbacks>,
    state: Mutex<State>,
    inbound: Mutex<mpsc::Receiver<Inbound>>,
    inbound_tx: mpsc::Sender<Inbound>,
    /// Set by `disconnect`: no more reconnects.
    closed: AtomicBool,
    /// Held by the thread applying messages.
    applying: Mutex<()>,
}

/// A connection to one database. Cheap to clone: clones share it.
#[derive(Clone)]
pub struct DbConnection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DbConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConnection")
            .field("database", &self.shared.settings.database)
            .finish_non_exhaustive()
    }
}

/// Builds a [`DbConnection`]; see [`DbConnection::builder`].
pub struct DbConnectionBuilder {
    tables: Vec<TableDesc>,
    uri: String,
    database: Option<String>,
    token: Option<String>,
    compression: Compression,
    reconnect: bool,
    limits: LinkLimits,
    callbacks: Callbacks,
}

impl std::fmt::Debug for DbConnectionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConnectionBuilder")
            .field("uri", &self.uri)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

impl DbConnectionBuilder {
    /// The server: `http://HOST:PORT` or `ws://HOST:PORT` (default `ws://127.0.0.1:3000`).
    pub fn with_uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = uri.into();
        self
    }

    pub fn with_database_name(mut self, name: impl Into<String>) -> Self {
        self.database = Some(name.into());
        self
    }

    /// Connect as the identity of this token (from an earlier `on_connect`); without
    /// one the server makes a new identity.
    pub fn with_token(mut self, token: Option<impl Into<String>>) -> Self {
        self.token = token.map(Into::into);
        self
    }

    /// Ask the server to compress its larger messages (LZ4).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Reconnect when the connection drops (the default).
    pub fn with_reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.limits.connect_timeout = timeout;
        self
    }

    /// The largest message accepted from the server, uncompressed (default 64 MiB).
    pub fn with_message_bytes_max(mut self, bytes: usize) -> Self {
        self.limits.message_bytes_max = bytes;
        self
    }

    /// Called with the client's identity and token each time a connection is made.
    pub fn on_connect(mut self, f: impl FnMut(&EventContext<'_>, Identity, &str) + Send + 'static) -> Self {
        self.callbacks.connect.push(Box::new(f));
        self
    }

    /// Called each time the connection drops (with why) or is closed (`None`).
    pub fn on_disconnect(
        mut self,
        f: impl FnMut(&EventContext<'_>, Option<&SdkError>) + Send + 'static,
    ) -> Self {
        self.callbacks.disconnect.push(Box::new(f));
        self
    }

    /// Called for a message from the server that could not be applied.
    pub fn on_error(mut self, f: impl FnMut(&EventContext<'_>, &SdkError) + Send + 'static) -> Self {
        self.callbacks.error.push(Box::new(f));
        self
    }

    /// Connects. Fails when the server cannot be reached or refuses the connection
    /// (an unknown database, a bad token); the reason is in the error.
    pub fn build(self) -> Result<DbConnection, SdkError> {
        let database = self.database.ok_or_else(|| SdkError::Connect("no database name given".into()))?;
        let base = self.uri.trim_end_matches('/');
        let url_base = match base.split_once("://") {
            Some(("http" | "ws", rest)) => format!("ws://{rest}"),
            Some((scheme, _)) => {
                return Err(SdkError::Connect(format!(
                    "`{scheme}://` is not supported; use ws:// or http://"
                )));
            }
            None => format!("ws://{base}"),
        };
        let (inbound_tx, inbound) = mpsc::channel();
        let settings = Settings {
            url_base,
            database,
            compression: self.compression,
            reconnect: self.reconnect,
            limits: self.limits,
        };
        let state = State { token: self.token, next_request: 1, next_set: 1, ..State::default() };
        let shared = Arc::new(Shared {
            settings,
            cache: RwLock::new(ClientCache::new(&self.tables)),
            callbacks: Mutex::new(self.callbacks),
            state: Mutex::new(state),
            inbound: Mutex::new(inbound),
            inbound_tx,
            closed: AtomicBool::new(false),
            applying: Mutex::new(()),
        });
        let conn = DbConnection { shared };
        let url = conn.url();
        let (link, start) = Link::open(&url, conn.shared.settings.limits, 0, conn.shared.inbound_tx.clone())?;
        conn.state().link = Some(link);
        start.go();
        Ok(conn)
    }
}

impl DbConnection {
    /// A builder for a client of a module whose generated bindings list `tables`
    /// (`bindings::tables()`).
    pub fn builder(tables: Vec<TableDesc>) -> DbConnectionBuilder {
        DbConnectionBuilder {
            tables,
            uri: "ws://127.0.0.1:3000".into(),
            database: None,
            token: None,
            compression: Compression::None,
            reconnect: true,
            limits: LinkLimits { connect_timeout: Duration::from_secs(10), message_bytes_max: 64 << 20 },
            callbacks: Callbacks::default(),
        }
    }

    fn url(&self) -> String {
        let s = &self.shared.settings;
        let mut url = format!("{}/v1/database/{}/subscribe", s.url_base, s.database);
        let mut params = Vec::new();
        if let Some(token) = &self.state().token {
            params.push(format!("token={token}"));
        }
        if s.compression == Compression::Lz4 {
            params.push("compression=lz4".into());
        }
        if !params.is_empty() {
            url.push('?');
            url.push_str(&params.join("&"));
        }
        url
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn cache(&self) -> RwLockReadGuard<'_, ClientCache> {
        self.shared.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn callbacks(&self) -> MutexGuard<'_, Callbacks> {
        self.shared.callbacks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cache's tables.
    pub fn db(&self) -> Db<'_> {
        Db::new(self)
    }

    /// The module's reducers, through the generated bindings' trait.
    pub fn reducers(&self) -> Reducers<'_> {
        Reducers::new(self)
    }

    /// This client's identity, once the server has said it.
    pub fn identity(&self) -> Option<Identity> {
        self.state().identity
    }

    pub fn connection_id(&self) -> Option<ConnectionId> {
        self.state().connection_id
    }

    /// The token that connects again as this identity, once known.
    pub fn token(&self) -> Option<String> {
        self.state().token.clone()
    }

    /// Whether a connection is up.
    pub fn is_active(&self) -> bool {
        self.state().link.is_some()
    }

    /// The last tick whose changes the cache holds.
    pub fn last_tick(&self) -> u64 {
        self.state().last_tick
    }

    fn send(&self, state: &State, message: &ClientMessage) -> Result<(), SdkError> {
        let link = state.link.as_ref().ok_or_else(|| SdkError::Disconnected("not connected".into()))?;
        link.send(frame(Compression::None, &message.encode()))
    }

    /// Calls a reducer with its arguments in the value encoding (the generated
    /// bindings' functions do the encoding); `then` gets the encoded return value or
    /// the error. Fails at once when not connected.
    pub fn call_reducer(
        &self,
        reducer: &str,
        args: Vec<u8>,
        then: Option<CallCallback>,
    ) -> Result<(), SdkError> {
        let mut state = self.state();
        let request_id = state.next_request;
        state.next_request = state.next_request.wrapping_add(1).max(1);
        self.send(&state, &ClientMessage::CallReducer { request_id, reducer: reducer.into(), args })?;
        if let Some(then) = then {
            state.calls.insert(request_id, then);
        }
        Ok(())
    }

    /// Runs a one-off SQL query; `then` gets the rows (see [`QueryRows`]) or the error.
    pub fn query(
        &self,
        sql: &str,
        then: impl FnOnce(&EventContext<'_>, Result<QueryRows, String>) + Send + 'static,
    ) -> Result<(), SdkError> {
        let mut state = self.state();
        let request_id = state.next_request;
        state.next_request = state.next_request.wrapping_add(1).max(1);
        self.send(&state, &ClientMessage::OneOffQuery { request_id, sql: sql.into() })?;
        state.queries.insert(request_id, Box::new(then));
        Ok(())
    }

    /// Starts a subscription: set its callbacks, then [`SubscriptionBuilder::subscribe`].
    pub fn subscription_builder(&self) -> SubscriptionBuilder<'_> {
        SubscriptionBuilder { conn: self, on_applied: None, on_error: None }
    }

    fn subscribe(
        &self,
        queries: Vec<String>,
        on_applied: Option<SetCallback>,
        on_error: Option<SetErrorCallback>,
    ) -> SubscriptionHandle {
        let mut state = self.state();
        let query_set_id = state.next_set;
        state.next_set += 1;
        let message = ClientMessage::Subscribe {
            query_set_id,
            queries: queries.clone(),
            resume_after_tick: 0,
            resume_epoch: 0,
        };
        // Not connected: the set goes out when the connection is made again.
        let sent_on = self.send(&state, &message).ok().map(|()| state.generation);
        let set = QuerySet { queries, sent_on, applied_on: None, resume: None, on_applied, on_error };
        state.sets.insert(query_set_id, set);
        SubscriptionHandle { conn: self.clone(), query_set_id }
    }

    /// Drops a query set. Its rows leave the cache (with `on_delete`) when the
    /// applying thread gets to it, in order with the messages before it.
    fn unsubscribe(&self, query_set_id: u32) {
        let mut state = self.state();
        if state.sets.remove(&query_set_id).is_none() {
            return;
        }
        let _ = self.send(&state, &ClientMessage::Unsubscribe { query_set_id });
        drop(state);
        let _ = self.shared.inbound_tx.send(Inbound::Unsubscribed(query_set_id));
    }

    /// Closes the connection; no reconnect follows. `on_disconnect` runs when the
    /// close is applied.
    pub fn disconnect(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Some(link) = &self.state().link {
            link.close();
        }
    }

    /// Applies the messages that have arrived (at most [`FRAME_MESSAGES_MAX`]),
    /// running their callbacks on this thread. One thread applies at a time: called
    /// while another applies (or from inside a callback), it returns at once.
    pub fn frame_tick(&self) {
        let Some(_applying) = self.applying() else { return };
        self.apply_queued();
    }

    /// Waits up to `timeout` for a message, then applies it and the others that have
    /// arrived. Returns whether there was one.
    pub fn frame_tick_wait(&self, timeout: Duration) -> bool {
        let Some(_applying) = self.applying() else { return false };
        let Some(first) = self.next_inbound(Some(timeout)) else { return false };
        self.apply(first);
        self.apply_queued();
        true
    }

    fn apply_queued(&self) {
        for _ in 0..FRAME_MESSAGES_MAX {
            let Some(inbound) = self.next_inbound(None) else { return };
            self.apply(inbound);
        }
    }

    /// The right to apply messages, unless another thread (or this one, further up
    /// the stack) has it.
    fn applying(&self) -> Option<MutexGuard<'_, ()>> {
        match self.shared.applying.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    fn next_inbound(&self, wait: Option<Duration>) -> Option<Inbound> {
        let inbound = self.shared.inbound.lock().unwrap_or_else(|e| e.into_inner());
        match wait {
            None => inbound.try_recv().ok(),
            Some(wait) => inbound.recv_timeout(wait).ok(),
        }
    }

    /// Applies messages on a background thread until the connection is closed with
    /// [`DbConnection::disconnect`] (or dropped by the server with reconnect off, or
    /// refused when reconnecting).
    pub fn run_threaded(&self) -> JoinHandle<()> {
        let conn = self.clone();
        std::thread::Builder::new()
            .name("tickdb-sdk".into())
            .spawn(move || {
                while !conn.finished() {
                    // Waits its turn while another thread applies, rather than spin.
                    let _applying = conn.shared.applying.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(first) = conn.next_inbound(Some(Duration::from_millis(200))) {
                        conn.apply(first);
                        conn.apply_queued();
                    }
                }
                // What arrived with the close: its callbacks, then done.
                conn.frame_tick();
            })
            .expect("a thread can be started")
    }

    /// Closed for good: no link and none coming.
    fn finished(&self) -> bool {
        let state = self.state();
        let no_more =
            self.shared.closed.load(Ordering::SeqCst) || !self.shared.settings.reconnect || state.gave_up;
        state.link.is_none() && !state.reconnecting && no_more
    }

    fn apply(&self, inbound: Inbound) {
        match inbound {
            Inbound::Message { generation, message } => {
                // A link that is not (or no longer) the connection's: a link made
                // while the client disconnected, say. Its messages are not ours.
                let current = {
                    let state = self.state();
                    state.generation == generation && state.link.is_some()
                };
                if current {
                    self.apply_message(message);
                }
            }
            Inbound::Bad(e) => self.dispatch(Event::Error, &[], &[e]),
            Inbound::Closed { generation, error } => self.closed(generation, error),
            Inbound::Linked { generation, link } => self.linked(generation, link),
            Inbound::ReconnectFailed(e) => {
                let mut state = self.state();
                state.gave_up = true;
                state.reconnecting = false;
                drop(state);
                if !self.shared.closed.load(Ordering::SeqCst) {
                    self.dispatch(Event::Error, &[], &[e]);
                }
            }
            Inbound::Unsubscribed(query_set_id) => self.drop_set(query_set_id),
        }
    }

    fn drop_set(&self, query_set_id: u32) {
        let (mut events, mut errors) = (Vec::new(), Vec::new());
        let mut cache = self.shared.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.drop_set(query_set_id, &mut events, &mut errors);
        drop(cache);
        self.dispatch(Event::SubscriptionEnded { query_set_id }, &events, &errors);
    }

    fn apply_message(&self, message: ServerMessage) {
        match message {
            ServerMessage::IdentityToken { identity, token, connection_id, epoch, .. } => {
                self.connected(Identity(identity), token, ConnectionId(connection_id), epoch)
            }
            ServerMessage::SubscribeApplied { query_set_id, tick, tables, resumed, missed } => {
                self.subscribe_applied(query_set_id, tick, &tables, resumed, &missed)
            }
            ServerMessage::TickUpdate { tick, timestamp_us, query_sets } => {
                let (mut events, mut errors) = (Vec::new(), Vec::new());
                let sets: Vec<_> = query_sets.iter().map(|s| (s.query_set_id, s.tables.as_slice())).collect();
                self.shared.cache.write().unwrap_or_else(|e| e.into_inner()).apply_tick(
                    &sets,
                    &mut events,
                    &mut errors,
                );
                {
                    // Every set applied on this link now holds its rows as of `tick`.
                    let mut state = self.state();
                    let (generation, epoch) = (state.generation, state.epoch);
                    state.last_tick = tick;
                    for set in state.sets.values_mut().filter(|s| s.applied_on == Some(generation)) {
                        set.resume = Some((epoch, tick));
                    }
                }
                let event = Event::Tick { tick, timestamp: Timestamp::from_micros(timestamp_us) };
                self.dispatch(event, &events, &errors);
            }
            ServerMessage::ReducerResult { request_id, tick, outcome, .. } => {
                let callback = self.state().calls.remove(&request_id);
                if let Some(callback) = callback {
                    callback(&self.context(Event::ReducerResult { tick }), outcome);
                }
            }
            ServerMessage::QueryResult { request_id, outcome, .. } => {
                let callback = self.state().queries.remove(&request_id);
                if let Some(callback) = callback {
                    callback(&self.context(Event::QueryResult), outcome);
                }
            }
            ServerMessage::SubscriptionError { query_set_id, message } => {
                let set = self.state().sets.remove(&query_set_id);
                self.drop_set(query_set_id);
                let event = Event::SubscriptionEnded { query_set_id };
                match set.and_then(|s| s.on_error) {
                    Some(mut on_error) => on_error(&self.context(event), &message),
                    None => {
                        let e = SdkError::Subscription { query_set_id, message };
                        self.dispatch(Event::Error, &[], &[e]);
                    }
                }
            }
        }
    }

    /// A query set's rows: all of them, or (resumed) the ticks it missed.
    fn subscribe_applied(
        &self,
        query_set_id: u32,
        tick: u64,
        tables: &[TableRows],
        resumed: bool,
        missed: &[MissedTick],
    ) {
        if !self.state().sets.contains_key(&query_set_id) {
            // Unsubscribed while its rows were on their way.
            return;
        }
        let (mut events, mut errors) = (Vec::new(), Vec::new());
        {
            let mut cache = self.shared.cache.write().unwrap_or_else(|e| e.into_inner());
            if resumed {
                for m in missed {
                    cache.apply_tick(&[(query_set_id, &m.tables)], &mut events, &mut errors);
                }
            } else {
                let rows = tables.iter().map(|t| (t.table_name.as_str(), t.rows.iter().collect()));
                cache.apply_rows(query_set_id, rows, &mut events, &mut errors);
            }
        }
        let callback = {
            let mut state = self.state();
            let (generation, epoch) = (state.generation, state.epoch);
            state.last_tick = state.last_tick.max(tick);
            state.sets.get_mut(&query_set_id).and_then(|set| {
                set.applied_on = Some(generation);
                set.resume = Some((epoch, tick));
                set.on_applied.take()
            })
        };
        let event = Event::SubscribeApplied { query_set_id, tick, resumed };
        self.dispatch(event.clone(), &events, &errors);
        if let Some(mut callback) = callback {
            callback(&self.context(event));
            if let Some(set) = self.state().sets.get_mut(&query_set_id) {
                set.on_applied.get_or_insert(callback);
            }
        }
    }

    /// The server said who the client is. Every set not yet sent on this link goes
    /// out, each resuming from the tick its rows are as of, in the run they came from
    /// (the server sends every row afresh when that run is not its own).
    fn connected(&self, identity: Identity, token: String, connection_id: ConnectionId, epoch: u64) {
        {
            let mut state = self.state();
            if state.epoch != epoch {
                state.last_tick = 0;
            }
            state.identity = Some(identity);
            state.connection_id = Some(connection_id);
            state.token = Some(token.clone());
            state.epoch = epoch;
            let generation = state.generation;
            let unsent: Vec<ClientMessage> = state
                .sets
                .iter()
                .filter(|(_, set)| set.sent_on != Some(generation))
                .map(|(&query_set_id, set)| {
                    let (resume_epoch, resume_after_tick) = set.resume.unwrap_or_default();
                    let queries = set.queries.clone();
                    ClientMessage::Subscribe { query_set_id, queries, resume_after_tick, resume_epoch }
                })
                .collect();
            for message in &unsent {
                if self.send(&state, message).is_ok()
                    && let ClientMessage::Subscribe { query_set_id, .. } = message
                    && let Some(set) = state.sets.get_mut(query_set_id)
                {
                    set.sent_on = Some(generation);
                }
            }
        }
        let mut callbacks = self.take_callbacks();
        let ctx = self.context(Event::Connected);
        callbacks.connect.iter_mut().for_each(|f| f(&ctx, identity, &token));
        self.restore(callbacks);
    }

    fn closed(&self, generation: u64, error: Option<SdkError>) {
        let (calls, queries) = {
            let mut state = self.state();
            if generation != state.generation || state.link.is_none() {
                return;
            }
            state.link = None;
            (std::mem::take(&mut state.calls), std::mem::take(&mut state.queries))
        };
        let ctx = self.context(Event::Disconnected);
        let why = || error.as_ref().map_or("the connection was closed".to_string(), ToString::to_string);
        for (_, call) in calls {
            let message = format!(
                "disconnected before the result arrived ({}); the call may or may not have run",
                why()
            );
            call(&ctx, Err(message));
        }
        for (_, query) in queries {
            query(&ctx, Err(format!("disconnected before the result arrived ({})", why())));
        }
        let mut callbacks = self.take_callbacks();
        callbacks.disconnect.iter_mut().for_each(|f| f(&ctx, error.as_ref()));
        self.restore(callbacks);
        if self.shared.settings.reconnect && !self.shared.closed.load(Ordering::SeqCst) {
            self.start_reconnect(generation + 1);
        }
    }

    fn linked(&self, generation: u64, link: Link) {
        let mut state = self.state();
        state.reconnecting = false;
        if self.shared.closed.load(Ordering::SeqCst) {
            drop(state);
            link.close();
            return;
        }
        state.generation = generation;
        state.link = Some(link);
    }

    /// Dials again on a thread of its own, backing off up to 5 s, until it connects,
    /// the client closes the connection, or the server refuses it for good (a 4xx:
    /// the database is gone, the token is not accepted).
    fn start_reconnect(&self, generation: u64) {
        self.state().reconnecting = true;
        let url = self.url();
        let weak = Arc::downgrade(&self.shared);
        let (limits, tx) = (self.shared.settings.limits, self.shared.inbound_tx.clone());
        let spawned = std::thread::Builder::new().name("tickdb-sdk-reconnect".into()).spawn(move || {
            let mut backoff = Duration::from_millis(100);
            loop {
                let Some(shared) = weak.upgrade() else { return };
                if shared.closed.load(Ordering::SeqCst) {
                    let closed = SdkError::Disconnected("closed while reconnecting".into());
                    let _ = tx.send(Inbound::ReconnectFailed(closed));
                    return;
                }
                drop(shared);
                let started = Instant::now();
                match Link::open(&url, limits, generation, tx.clone()) {
                    Ok((link, start)) => {
                        // Announced before it passes anything on; if the client closed
                        // the connection meanwhile, or nobody listens any more, the
                        // link is dropped unstarted.
                        if weak.upgrade().is_none_or(|s| s.closed.load(Ordering::SeqCst)) {
                            drop(start);
                            drop(link);
                            let closed = SdkError::Disconnected("closed while reconnecting".into());
                            let _ = tx.send(Inbound::ReconnectFailed(closed));
                            return;
                        }
                        match tx.send(Inbound::Linked { generation, link }) {
                            Ok(()) => start.go(),
                            Err(unsent) => {
                                drop(start);
                                drop(unsent);
                            }
                        }
                        return;
                    }
                    Err(SdkError::Refused { status, message }) if status < 500 => {
                        let _ = tx.send(Inbound::ReconnectFailed(SdkError::Refused { status, message }));
                        return;
                    }
                    Err(_) => {}
                }
                std::thread::sleep(backoff.saturating_sub(started.elapsed()));
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        if let Err(e) = spawned {
            self.state().reconnecting = false;
            let e = SdkError::Disconnected(format!("cannot start reconnecting: {e}"));
            self.dispatch(Event::Error, &[], &[e]);
        }
    }

    fn context(&self, event: Event) -> EventContext<'_> {
        EventContext { conn: self, event }
    }

    /// Runs the row callbacks of `events`, then the error callbacks of `errors`.
    fn dispatch(&self, event: Event, events: &[CacheEvent], errors: &[SdkError]) {
        if events.is_empty() && errors.is_empty() {
            return;
        }
        let mut callbacks = self.take_callbacks();
        let ctx = self.context(event);
        for e in events {
            match e {
                CacheEvent::Insert { table, row } => {
                    if let Some(t) = callbacks.tables.get_mut(table) {
                        t.insert.iter_mut().for_each(|(_, f)| f(&ctx, row));
                    }
                }
                CacheEvent::Delete { table, row } => {
                    if let Some(t) = callbacks.tables.get_mut(table) {
                        t.delete.iter_mut().for_each(|(_, f)| f(&ctx, row));
                    }
                }
                CacheEvent::Update { table, old, new } => {
                    if let Some(t) = callbacks.tables.get_mut(table) {
                        t.update.iter_mut().for_each(|(_, f)| f(&ctx, old, new));
                    }
                }
            }
        }
        let ctx = EventContext { conn: self, event: Event::Error };
        for e in errors {
            callbacks.error.iter_mut().for_each(|f| f(&ctx, e));
        }
        self.restore(callbacks);
    }

    /// The callbacks, taken out to run them. The slot keeps the id counter, so ids
    /// given to callbacks registered meanwhile never repeat one in use.
    fn take_callbacks(&self) -> Callbacks {
        let mut slot = self.callbacks();
        let next_id = slot.next_id;
        std::mem::replace(&mut *slot, Callbacks { next_id, ..Callbacks::default() })
    }

    fn restore(&self, mut callbacks: Callbacks) {
        let mut slot = self.callbacks();
        callbacks.merge(std::mem::take(&mut *slot));
        *slot = callbacks;
    }
}

/// Sets up a subscription; see [`DbConnection::subscription_builder`].
pub struct SubscriptionBuilder<'a> {
    conn: &'a DbConnection,
    on_applied: Option<SetCallback>,
    on_error: Option<SetErrorCallback>,
}

impl std::fmt::Debug for SubscriptionBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionBuilder").finish_non_exhaustive()
    }
}

impl SubscriptionBuilder<'_> {
    /// Called once the set's rows are in the cache (again after each reconnect).
    pub fn on_applied(mut self, f: impl FnMut(&EventContext<'_>) + Send + 'static) -> Self {
        self.on_applied = Some(Box::new(f));
        self
    }

    /// Called with the server's message when the set fails (it is then dropped).
    pub fn on_error(mut self, f: impl FnMut(&EventContext<'_>, &str) + Send + 'static) -> Self {
        self.on_error = Some(Box::new(f));
        self
    }

    /// Subscribes to `queries` as one set.
    pub fn subscribe<Q: Into<String>>(self, queries: impl IntoIterator<Item = Q>) -> SubscriptionHandle {
        let queries = queries.into_iter().map(Into::into).collect();
        self.conn.subscribe(queries, self.on_applied, self.on_error)
    }
}

/// A live query set.
#[derive(Debug, Clone)]
pub struct SubscriptionHandle {
    conn: DbConnection,
    query_set_id: u32,
}

impl SubscriptionHandle {
    pub fn query_set_id(&self) -> u32 {
        self.query_set_id
    }

    /// Ends the subscription: rows only it held leave the cache (with `on_delete`).
    pub fn unsubscribe(self) {
        self.conn.unsubscribe(self.query_set_id);
    }
}

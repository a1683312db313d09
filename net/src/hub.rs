//! A database's subscriptions and its per-tick fan-out, on the tick thread.
//!
//! The hub lives beside the tables: it is only touched on the database's tick thread,
//! by the sink after each tick ([`FanoutSink`]) and by reads the event loop posts
//! between ticks (subscribe, unsubscribe, one-off queries). So it reads the tables as
//! each tick leaves them, without copies and without locks on the tables.
//!
//! After each tick it evaluates the database's [`SubscriptionSet`] once per distinct
//! query, then builds each client's one `TickUpdate` from the deltas of the queries its
//! applied query sets hold. Clients whose query sets hold the same queries under the
//! same ids get the very same message, encoded once and shared.
//!
//! Nothing leaves before it may: a [`Gate`] holds every message until the tick whose
//! state it shows is durable (confirmed mode), then hands it to the event loop, in
//! order, and wakes it. Messages computed between ticks (initial rows) show the state
//! of the last tick that wrote, and wait for that tick.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use bumpalo::Bump;
use bumpalo::collections::Vec as BumpVec;
use tickdb_engine::{Database, DurableSink, Release, Releases, TableChanges, TableId, TickOutput, TickSink};
use tickdb_protocol::{
    Compression, MissedTick, QuerySetUpdate, RowList, RowUpdates, ServerMessage, TableRows, TableUpdate,
    frame,
};
use tickdb_sql::{
    Delta, DeltaMap, InitialScan, QueryId, QueryLimits, Reader, SqlError, StatementCache, Subscription,
    SubscriptionSet, Visibility,
};
use tickdb_wasm_abi::{ConnectionId, Reader as ValueReader, TableSchema, skip};

/// A connection, as the hub and the event loop both name it: unique for the server's life.
pub type ClientKey = u64;

/// How a client wants its messages: FlatBuffers (compressed or not), or JSON text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Binary(Compression),
    Json,
}

/// A message built once and sent to any number of clients, framed for each format
/// the first time a client that wants it is written to.
#[derive(Debug)]
pub struct Shared {
    message: Vec<u8>,
    none: OnceLock<tungstenite::Bytes>,
    lz4: OnceLock<tungstenite::Bytes>,
    json: OnceLock<tungstenite::Utf8Bytes>,
}

impl Shared {
    pub fn new(message: &ServerMessage) -> Arc<Shared> {
        Arc::new(Shared {
            message: message.encode(),
            none: OnceLock::new(),
            lz4: OnceLock::new(),
            json: OnceLock::new(),
        })
    }

    /// The WebSocket message for a client of `format`; JSON decodes rows by the tables
    /// of `module()` (only called for JSON).
    pub fn to_send(
        &self,
        format: Format,
        module: impl FnOnce() -> Arc<tickdb_engine::LoadedModule>,
    ) -> tungstenite::Message {
        match format {
            Format::Binary(compression) => tungstenite::Message::Binary(self.framed(compression)),
            Format::Json => {
                let text = self.json.get_or_init(|| {
                    let message = ServerMessage::decode(&self.message).expect("the server encoded it");
                    crate::json_protocol::server_message(&message, &module().def).into()
                });
                tungstenite::Message::Text(text.clone())
            }
        }
    }

    /// The message as sent to a client that asked for `compression`.
    pub fn framed(&self, compression: Compression) -> tungstenite::Bytes {
        let cell = match compression {
            Compression::None => &self.none,
            Compression::Lz4 => &self.lz4,
        };
        cell.get_or_init(|| frame(compression, &self.message).into()).clone()
    }
}

/// What the hub hands to the event loop.
#[derive(Debug)]
pub enum Outgoing {
    Message {
        client: ClientKey,
        message: Arc<Shared>,
    },
    /// The database stopped (its log could not be written, or it was deleted): the
    /// clients of that run of it (`epoch`) are closed.
    Stopped {
        database: String,
        epoch: u64,
        why: String,
    },
}

/// Holds messages until the tick they show is durable; see the module docs.
#[derive(Debug)]
pub struct Gate {
    database: String,
    epoch: u64,
    durable: u64,
    queue: VecDeque<(u64, Vec<Outgoing>)>,
    failed: Option<String>,
    routes: Arc<Routes>,
}

/// The way to each event loop thread: its channel and its waker. A client is served by
/// loop `(key - 1) % loops`, so a message finds its loop from its client's key.
#[derive(Debug)]
pub struct Routes {
    loops: Vec<(mpsc::Sender<Outgoing>, Arc<mio::Waker>)>,
}

impl Routes {
    pub fn new(loops: Vec<(mpsc::Sender<Outgoing>, Arc<mio::Waker>)>) -> Arc<Routes> {
        assert!(!loops.is_empty(), "a server has an event loop");
        Arc::new(Routes { loops })
    }

    /// The loop that serves `client`.
    pub fn loop_of(&self, client: ClientKey) -> usize {
        ((client - 1) % self.loops.len() as u64) as usize
    }

    /// Sends to the loops, then wakes those that got something. A loop gone means the
    /// server is stopping: nobody is left to tell.
    pub fn deliver(&self, messages: Vec<Outgoing>) {
        let mut woken = vec![false; self.loops.len()];
        for message in messages {
            match message {
                Outgoing::Message { client, .. } => {
                    let i = self.loop_of(client);
                    let _ = self.loops[i].0.send(message);
                    woken[i] = true;
                }
                Outgoing::Stopped { ref database, epoch, ref why } => {
                    for (i, (out, _)) in self.loops.iter().enumerate() {
                        let stopped =
                            Outgoing::Stopped { database: database.clone(), epoch, why: why.clone() };
                        let _ = out.send(stopped);
                        woken[i] = true;
                    }
                }
            }
        }
        for (i, woken) in woken.into_iter().enumerate() {
            if woken {
                let _ = self.loops[i].1.wake();
            }
        }
    }

    /// Wakes every loop (replies wait for them on their own channels).
    pub fn wake_all(&self) {
        self.loops.iter().for_each(|(_, waker)| drop(waker.wake()));
    }
}

impl Gate {
    pub fn new(database: String, epoch: u64, routes: Arc<Routes>) -> Arc<Mutex<Gate>> {
        let queue = VecDeque::new();
        Arc::new(Mutex::new(Gate { database, epoch, durable: 0, queue, failed: None, routes }))
    }

    /// Queues `messages`, which show the state after tick `after`.
    fn send(&mut self, after: u64, messages: Vec<Outgoing>) {
        if messages.is_empty() || self.failed.is_some() {
            return;
        }
        if after <= self.durable && self.queue.is_empty() {
            self.routes.deliver(messages);
        } else {
            self.queue.push_back((after, messages));
        }
    }

    fn wake(&self) {
        self.routes.wake_all();
    }

    /// Tick `tick` is durable: sends what waited for it.
    fn durable(&mut self, tick: u64) {
        self.durable = self.durable.max(tick);
        while let Some((_, messages)) = self.queue.pop_front_if(|(after, _)| *after <= self.durable) {
            self.routes.deliver(messages);
        }
        // Replies released with the tick wait on the loops' own channels.
        self.wake();
    }

    fn fail(&mut self, why: &str) {
        self.queue.clear();
        if self.failed.is_none() {
            self.failed = Some(why.to_string());
            self.routes.deliver(vec![Outgoing::Stopped {
                database: self.database.clone(),
                epoch: self.epoch,
                why: why.to_string(),
            }]);
        }
        self.wake();
    }
}

/// Releases a written tick's messages once it is durable.
struct GateRelease {
    gate: Arc<Mutex<Gate>>,
    tick: u64,
}

impl Release for GateRelease {
    fn release(self: Box<Self>, outcome: Result<(), &str>) {
        let mut gate = self.gate.lock().expect("gate lock");
        match outcome {
            Ok(()) => gate.durable(self.tick),
            Err(why) => gate.fail(why),
        }
    }
}

/// A database's module's view of a call's own changes: through the caller's
/// subscriptions, by its hub (see [`Hub::own_changes`]).
#[derive(Debug)]
pub struct OwnView(pub Arc<Mutex<Hub>>);

impl tickdb_engine::OwnChanges for OwnView {
    fn view(
        &mut self,
        db: &Database,
        connection: ConnectionId,
        changes: &[TableChanges],
    ) -> Option<Box<dyn std::any::Any + Send>> {
        let sets = lock(&self.0).own_changes(db, connection, changes);
        (!sets.is_empty()).then(|| Box::new(sets) as Box<dyn std::any::Any + Send>)
    }
}

/// Wakes the event loop for a tick that wrote nothing (its replies went out at once).
struct Wake(Arc<Mutex<Gate>>);

impl Release for Wake {
    fn release(self: Box<Self>, _: Result<(), &str>) {
        self.0.lock().expect("gate lock").wake();
    }
}

/// One client's subscriptions.
#[derive(Debug)]
struct Client {
    reader: Reader,
    connection: ConnectionId,
    sets: BTreeMap<u32, QuerySet>,
}

#[derive(Debug)]
struct QuerySet {
    queries: Vec<QueryId>,
    /// The queries as the client sent them: subscribed again after a migration.
    sql: Vec<String>,
    /// Initial rows per query, filled as scans finish; the set is applied (its
    /// deltas sent) once every query has its rows.
    initial: Vec<Option<Vec<Vec<u8>>>>,
    applied: bool,
}

#[derive(Debug)]
struct Scan {
    client: ClientKey,
    set: u32,
    query: usize,
    scan: InitialScan,
}

/// How a table's rows are cut into columns, for updates that carry changed columns only.
#[derive(Debug)]
struct TableShape {
    name: String,
    schema: Arc<TableSchema>,
    /// The primary key's columns, when the table has one.
    key: Option<Vec<usize>>,
}

/// The last ticks' changes, for clients that resume their subscriptions after a
/// reconnect: a single-table query's changes over a tick depend on the tick's changes
/// alone, so the ticks a client missed give it what it missed.
#[derive(Debug)]
struct History {
    ticks: VecDeque<(u64, Vec<TableChanges>, usize)>,
    bytes: usize,
    /// Every tick after this one that changed anything is held.
    from: u64,
    bytes_max: usize,
    ticks_max: usize,
}

impl History {
    /// Keeps a tick's changes (moved here, not copied: the log needs only the payload).
    fn record(&mut self, tick: u64, changes: Vec<TableChanges>) {
        if self.ticks_max == 0 {
            self.from = tick;
            return;
        }
        let rows = |c: &TableChanges| {
            c.inserts.byte_len() + c.deletes.byte_len() + c.updates_old.byte_len() + c.updates_new.byte_len()
        };
        let bytes = changes.iter().map(rows).sum::<usize>();
        self.ticks.push_back((tick, changes, bytes));
        self.bytes += bytes;
        while self.ticks.len() > self.ticks_max || self.bytes > self.bytes_max {
            let (tick, _, bytes) = self.ticks.pop_front().expect("not empty");
            self.bytes -= bytes;
            self.from = tick;
        }
    }

    /// The ticks after `after`, if every one that changed anything is still held.
    fn since(&self, after: u64, now: u64) -> Option<impl Iterator<Item = &(u64, Vec<TableChanges>, usize)>> {
        (self.from <= after && after <= now).then(|| self.ticks.iter().filter(move |(t, _, _)| *t > after))
    }
}

/// A database's subscriptions; see the module docs.
#[derive(Debug)]
pub struct Hub {
    set: SubscriptionSet,
    visibility: Visibility,
    statements: StatementCache,
    clients: HashMap<ClientKey, Client>,
    by_connection: HashMap<ConnectionId, ClientKey>,
    /// Who holds each query: (client, query set).
    holders: hashbrown::HashMap<QueryId, Vec<(ClientKey, u32)>>,
    scans: Vec<Scan>,
    shapes: HashMap<TableId, TableShape>,
    gate: Arc<Mutex<Gate>>,
    /// The last tick that wrote, and the last tick.
    written: u64,
    tick: u64,
    limits: QueryLimits,
    slice: QueryLimits,
    query_sets_max: usize,
    queries_per_set_max: usize,
    /// Time spent computing each tick's updates, µs.
    eval_us: hdrhistogram::Histogram<u64>,
    history: History,
    epoch: u64,
    status: Arc<HubStatus>,
    /// Per-tick scratch, emptied at the start of each tick's updates.
    scratch: Bump,
}

/// What other threads may read of a hub without waiting for its lock, which the tick
/// thread holds while it computes a tick's updates.
#[derive(Debug, Default)]
pub struct HubStatus {
    /// The last tick the hub saw.
    pub tick: AtomicU64,
    /// Whether initial scans wait for more slices (a hint: a stale `true` costs one
    /// empty step).
    pub scanning: AtomicBool,
}

/// What a hub is given: its limits, and where the database's ticks start.
#[derive(Debug, Clone)]
pub struct HubConfig {
    pub limits: QueryLimits,
    pub slice: QueryLimits,
    pub query_sets_max: usize,
    pub queries_per_set_max: usize,
    pub history_bytes_max: usize,
    pub history_ticks_max: usize,
    /// The database's last tick when the hub starts (recovered from its log).
    pub start_tick: u64,
    /// This run of the database: tick numbers are only comparable within one run.
    pub epoch: u64,
}

/// Why a subscribe was refused.
fn refused(set: u32, message: String) -> ServerMessage {
    ServerMessage::SubscriptionError { query_set_id: set, message }
}

impl Hub {
    pub fn new(visibility: Visibility, gate: Arc<Mutex<Gate>>, config: HubConfig) -> Hub {
        Hub {
            set: SubscriptionSet::with_limits(config.limits.clone()),
            visibility,
            statements: StatementCache::new(tickdb_sql::STATEMENT_CACHE_SHAPES),
            clients: HashMap::new(),
            by_connection: HashMap::new(),
            holders: hashbrown::HashMap::new(),
            scans: Vec::new(),
            shapes: HashMap::new(),
            gate,
            // Recovered state is durable: nothing waits for a tick before the first one.
            written: 0,
            tick: config.start_tick,
            limits: config.limits,
            slice: config.slice,
            query_sets_max: config.query_sets_max,
            queries_per_set_max: config.queries_per_set_max,
            eval_us: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds"),
            history: History {
                ticks: VecDeque::new(),
                bytes: 0,
                from: config.start_tick,
                bytes_max: config.history_bytes_max,
                ticks_max: config.history_ticks_max,
            },
            epoch: config.epoch,
            status: Arc::new(HubStatus {
                tick: AtomicU64::new(config.start_tick),
                scanning: AtomicBool::new(false),
            }),
            scratch: Bump::new(),
        }
    }

    /// How long computing each tick's updates took, µs.
    pub fn eval_us(&self) -> &hdrhistogram::Histogram<u64> {
        &self.eval_us
    }

    pub fn visibility(&self) -> &Visibility {
        &self.visibility
    }
    /// This run of the database (see [`HubConfig::epoch`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// What the event loops read without taking the hub's lock.
    pub fn status(&self) -> Arc<HubStatus> {
        Arc::clone(&self.status)
    }

    /// Sends `messages` once the last written tick is durable.
    fn send(&self, messages: Vec<Outgoing>) {
        self.gate.lock().expect("gate lock").send(self.written, messages);
    }

    fn send_one(&self, client: ClientKey, message: &ServerMessage) {
        self.send(vec![Outgoing::Message { client, message: Shared::new(message) }]);
    }

    /// A new connection; `reader` says whose.
    pub fn connect(&mut self, client: ClientKey, connection: ConnectionId, reader: Reader) {
        self.clients.insert(client, Client { reader, connection, sets: BTreeMap::new() });
        self.by_connection.insert(connection, client);
    }

    /// A connection closed: its query sets go.
    pub fn disconnect(&mut self, client: ClientKey) {
        if let Some(c) = self.clients.remove(&client) {
            self.by_connection.remove(&c.connection);
            for (id, set) in c.sets {
                self.release(client, id, &set.queries);
            }
        }
        self.scans.retain(|s| s.client != client);
    }

    fn release(&mut self, client: ClientKey, set: u32, queries: &[QueryId]) {
        for &q in queries {
            self.set.unsubscribe(q);
            if let Some(holders) = self.holders.get_mut(&q) {
                if let Some(i) = holders.iter().position(|h| *h == (client, set)) {
                    holders.swap_remove(i);
                }
                if holders.is_empty() {
                    self.holders.remove(&q);
                }
            }
        }
    }

    /// Subscribes `client` to `queries` as query set `set` (replacing a set of that id).
    /// `resume` (when its tick is not 0) is the run and tick up to which the client
    /// holds the set's rows from an earlier connection: see [`History`].
    pub fn subscribe(
        &mut self,
        db: &Database,
        client: ClientKey,
        set: u32,
        queries: &[String],
        resume: (u64, u64),
    ) {
        self.unsubscribe(client, set);
        let Some(c) = self.clients.get(&client) else { return };
        if c.sets.len() >= self.query_sets_max {
            let why =
                format!("a connection may hold {} query sets at once (query_sets_max)", self.query_sets_max);
            return self.send_one(client, &refused(set, why));
        }
        if queries.len() > self.queries_per_set_max || queries.is_empty() {
            let why = format!(
                "a query set holds 1 to {} queries (queries_per_set_max); this one has {}",
                self.queries_per_set_max,
                queries.len()
            );
            return self.send_one(client, &refused(set, why));
        }
        let reader = c.reader;
        let subs: Result<Vec<Subscription>, String> = queries
            .iter()
            .map(|sql| {
                let bound = self.statements.prepare_for(db, &self.visibility, reader, sql);
                bound.and_then(|b| Subscription::from_bound(db, b)).map_err(|e| format!("{sql}: {e}"))
            })
            .collect();
        let subs = match subs {
            Ok(subs) => subs,
            Err(why) => return self.send_one(client, &refused(set, why)),
        };
        let (resume_epoch, resume_after) = resume;
        if resume_after > 0
            && resume_epoch == self.epoch
            && let Some(missed) = self.missed_since(db, &subs, resume_after)
        {
            self.hold(client, set, queries, subs, Vec::new(), true);
            let (tick, tables) = (self.tick, Vec::new());
            let message =
                ServerMessage::SubscribeApplied { query_set_id: set, tick, tables, resumed: true, missed };
            return self.send_one(client, &message);
        }
        let mut scans = Vec::new();
        let mut initial = Vec::new();
        for (i, sub) in subs.iter().enumerate() {
            match InitialScan::start(db, sub, &self.slice, &self.limits) {
                Ok(scan) if scan.is_done() => initial.push(scan.rows()),
                Ok(scan) => {
                    initial.push(None);
                    scans.push(Scan { client, set, query: i, scan });
                }
                Err(e) => return self.send_one(client, &refused(set, format!("{}: {e}", queries[i]))),
            }
        }
        self.hold(client, set, queries, subs, initial, false);
        self.scans.extend(scans);
        self.update_status();
        self.apply_if_ready(db, client, set);
    }

    /// What one call's `changes` (`db` as the call left it) did to the query sets of
    /// the client on `connection` that are applied: what its `ReducerResult` carries.
    pub fn own_changes(
        &mut self,
        db: &Database,
        connection: ConnectionId,
        changes: &[TableChanges],
    ) -> Vec<QuerySetUpdate> {
        let Hub { clients, by_connection, set, shapes, limits, .. } = self;
        let Some(client) = by_connection.get(&connection).and_then(|c| clients.get(c)) else {
            return Vec::new();
        };
        let mut sets = Vec::new();
        for (&query_set_id, qs) in client.sets.iter().filter(|(_, qs)| qs.applied) {
            let mut tables = Vec::new();
            for sub in qs.queries.iter().filter_map(|&q| set.query(q)) {
                if !changes.iter().any(|c| sub.tables().contains(&c.table)) {
                    continue;
                }
                // A join past its budget fails here alone; the tick's update reports it.
                if let Ok(delta) = sub.delta(db, changes, limits)
                    && !delta.is_empty()
                {
                    let shape = shape_of(shapes, db, sub.table());
                    tables.push(table_update(shape, sub.table(), &delta, &mut UpdateMemo::default()));
                }
            }
            if !tables.is_empty() {
                sets.push(QuerySetUpdate { query_set_id, tables });
            }
        }
        sets
    }

    /// Adds a client's set of queries to the database's, each shared with its other holders.
    fn hold(
        &mut self,
        client: ClientKey,
        set: u32,
        sql: &[String],
        subs: Vec<Subscription>,
        initial: Vec<Option<Vec<Vec<u8>>>>,
        applied: bool,
    ) {
        let ids: Vec<QueryId> = subs.into_iter().map(|s| self.set.add(s)).collect();
        for &q in &ids {
            self.holders.entry(q).or_default().push((client, set));
        }
        let c = self.clients.get_mut(&client).expect("the client is connected");
        c.sets.insert(set, QuerySet { queries: ids, sql: sql.to_vec(), initial, applied });
    }

    /// The database's module was replaced and its tables migrated (see
    /// `Databases::publish`): queries are compiled again against the new tables and
    /// `visibility`, and every client's sets subscribed again, each getting its rows
    /// afresh (the new columns with them) or an error if a query no longer holds. The
    /// history is emptied: ticks before now hold rows of the old tables.
    pub fn migrated(&mut self, db: &Database, visibility: Visibility) {
        self.visibility = visibility;
        self.statements = StatementCache::new(tickdb_sql::STATEMENT_CACHE_SHAPES);
        self.shapes.clear();
        // The migration has a tick of its own: no client holds rows of it yet, so a
        // resume from any tick before it gets every row again.
        self.tick = db.last_tick().unwrap_or(self.tick).max(self.tick);
        self.status.tick.store(self.tick, Ordering::Release);
        self.history.ticks.clear();
        self.history.bytes = 0;
        self.history.from = self.tick;
        let mut sets = Vec::new();
        for (&client, c) in &self.clients {
            sets.extend(c.sets.iter().map(|(&set, qs)| (client, set, qs.sql.clone())));
        }
        // Every set goes before any comes back, so that no query compiled against the
        // old tables is shared with a new holder.
        for (client, set, _) in &sets {
            self.unsubscribe(*client, *set);
        }
        for (client, set, sql) in sets {
            self.subscribe(db, client, set, &sql, (0, 0));
        }
    }

    pub fn unsubscribe(&mut self, client: ClientKey, set: u32) {
        let Some(c) = self.clients.get_mut(&client) else { return };
        if let Some(old) = c.sets.remove(&set) {
            self.release(client, set, &old.queries);
            self.scans.retain(|s| (s.client, s.set) != (client, set));
        }
    }

    /// Sends a set's initial rows once every query has them.
    fn apply_if_ready(&mut self, db: &Database, client: ClientKey, set: u32) {
        let Some(qs) = self.clients.get_mut(&client).and_then(|c| c.sets.get_mut(&set)) else { return };
        if qs.applied || qs.initial.iter().any(Option::is_none) {
            return;
        }
        qs.applied = true;
        let initial = std::mem::take(&mut qs.initial);
        let queries = qs.queries.clone();
        let mut tables = Vec::new();
        for (q, rows) in queries.iter().zip(initial) {
            let table = self.set.query(*q).expect("held").table();
            let shape = self.shape(db, table);
            let rows = rows.expect("checked");
            tables.push(TableRows {
                table_id: table.0,
                table_name: shape.name.clone(),
                rows: rows.iter().map(Vec::as_slice).collect(),
            });
        }
        let message = ServerMessage::SubscribeApplied {
            query_set_id: set,
            tick: self.tick,
            tables,
            resumed: false,
            missed: Vec::new(),
        };
        self.send_one(client, &message);
    }

    /// What `subs` missed after tick `after`, tick by tick; `None` when a query is not
    /// over one table, or the history no longer holds every tick since.
    fn missed_since(&mut self, db: &Database, subs: &[Subscription], after: u64) -> Option<Vec<MissedTick>> {
        if subs.iter().any(|s| s.tables().len() != 1) {
            return None;
        }
        let mut missed = Vec::new();
        for (tick, changes, _) in self.history.since(after, self.tick)? {
            let mut tables = Vec::new();
            for sub in subs {
                let delta = sub.delta(db, changes, &self.limits).ok()?;
                if !delta.is_empty() {
                    let table = sub.table();
                    let shape = shape_of(&mut self.shapes, db, table);
                    tables.push(table_update(shape, table, &delta, &mut UpdateMemo::default()));
                }
            }
            if !tables.is_empty() {
                missed.push(MissedTick { tick: *tick, tables });
            }
        }
        Some(missed)
    }

    fn shape(&mut self, db: &Database, table: TableId) -> &TableShape {
        shape_of(&mut self.shapes, db, table)
    }

    /// Reads on in the initial scans within one slice's budget.
    pub fn step_scans(&mut self, db: &Database) {
        let mut scans = std::mem::take(&mut self.scans);
        let mut finished = Vec::new();
        let started = std::time::Instant::now();
        scans.retain_mut(|s| {
            if started.elapsed() >= self.slice.time_max {
                return true;
            }
            match s.scan.step(db, &self.slice) {
                Ok(false) => true,
                Ok(true) => {
                    finished.push((s.client, s.set, s.query, Ok(())));
                    true
                }
                Err(e) => {
                    finished.push((s.client, s.set, s.query, Err(e)));
                    false
                }
            }
        });
        self.finish_scans(db, scans, finished);
    }

    fn finish_scans(
        &mut self,
        db: &Database,
        mut scans: Vec<Scan>,
        finished: Vec<(ClientKey, u32, usize, Result<(), SqlError>)>,
    ) {
        for (client, set, query, outcome) in finished {
            match outcome {
                Ok(()) => {
                    // An earlier failure in the same set may have dropped the set, scans and all.
                    let Some(i) =
                        scans.iter().position(|s| (s.client, s.set, s.query) == (client, set, query))
                    else {
                        continue;
                    };
                    let scan = scans.swap_remove(i);
                    if let Some(qs) = self.clients.get_mut(&client).and_then(|c| c.sets.get_mut(&set)) {
                        qs.initial[query] = scan.scan.rows();
                    }
                    self.scans = std::mem::take(&mut scans);
                    self.apply_if_ready(db, client, set);
                    scans = std::mem::take(&mut self.scans);
                }
                Err(e) => {
                    self.scans = std::mem::take(&mut scans);
                    self.unsubscribe(client, set);
                    self.send_one(client, &refused(set, e.to_string()));
                    scans = std::mem::take(&mut self.scans);
                }
            }
        }
        self.scans = scans;
        self.update_status();
    }

    /// After a tick: scans fold in its changes and read on, then each client with
    /// changes gets its update. Returns the messages.
    pub fn after_tick(&mut self, db: &Database, output: &TickOutput) -> Vec<Outgoing> {
        self.tick = output.tick.0;
        self.status.tick.store(self.tick, Ordering::Release);
        let mut out = Vec::new();
        if !output.changes.is_empty() && !self.set.is_empty() {
            let deltas = self.set.evaluate(db, &output.changes);
            for (q, e) in deltas.failed {
                for (client, set) in self.holders.get(&q).cloned().unwrap_or_default() {
                    self.unsubscribe(client, set);
                    let why = format!("the query failed and was dropped: {e}");
                    out.push(Outgoing::Message { client, message: Shared::new(&refused(set, why)) });
                }
            }
            self.updates(db, output, &deltas.deltas, &mut out);
        }
        // Scans take in the tick after its updates are made: a set whose scan finishes
        // now gets rows that include this tick, and no update for it.
        let mut failed_scans = Vec::new();
        for s in &mut self.scans {
            if let Err(e) = s.scan.apply(db, &output.changes) {
                failed_scans.push((s.client, s.set, s.query, Err(e)));
            }
        }
        let scans = std::mem::take(&mut self.scans);
        self.finish_scans(db, scans, failed_scans);
        if !self.scans.is_empty() {
            self.step_scans(db);
        }
        out
    }

    /// Publishes whether scans wait, for the event loop's timer.
    fn update_status(&self) {
        self.status.scanning.store(!self.scans.is_empty(), Ordering::Release);
    }

    /// Each client's one update for the tick, shared between clients that hold the
    /// same queries under the same set ids. The bookkeeping (who holds what changed,
    /// which clients share a message) lives in the hub's per-tick arena.
    fn updates(
        &mut self,
        db: &Database,
        output: &TickOutput,
        deltas: &DeltaMap<'_>,
        out: &mut Vec<Outgoing>,
    ) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.reset();
        self.updates_in(&scratch, db, output, deltas, out);
        self.scratch = scratch;
    }

    fn updates_in(
        &mut self,
        bump: &Bump,
        db: &Database,
        output: &TickOutput,
        deltas: &DeltaMap<'_>,
        out: &mut Vec<Outgoing>,
    ) {
        // Per client, the (set, query) pairs with changes, in a stable order.
        let mut touched: ArenaMap<'_, ClientKey, BumpVec<'_, (u32, QueryId)>> = ArenaMap::new_in(bump);
        for q in deltas.keys() {
            for &(client, set) in self.holders.get(q).into_iter().flatten() {
                let applied =
                    self.clients.get(&client).and_then(|c| c.sets.get(&set)).is_some_and(|s| s.applied);
                if applied {
                    touched.entry(client).or_insert_with(|| BumpVec::new_in(bump)).push((set, *q));
                }
            }
        }
        let mut clients = BumpVec::from_iter_in(touched, bump);
        clients.sort_unstable_by_key(|(client, _)| *client);
        clients.iter_mut().for_each(|(_, pairs)| pairs.sort_unstable());
        let mut tables: ArenaMap<'_, QueryId, TableUpdate> = ArenaMap::new_in(bump);
        // A row that changed is in many queries' deltas (areas of interest overlap): its
        // update is encoded once.
        let mut memo = UpdateMemo::default();
        let mut messages: ArenaMap<'_, &[(u32, QueryId)], Arc<Shared>> = ArenaMap::new_in(bump);
        for (client, pairs) in &clients {
            let (client, pairs) = (*client, pairs.as_slice());
            if let Some(message) = messages.get(pairs) {
                out.push(Outgoing::Message { client, message: Arc::clone(message) });
                continue;
            }
            let mut query_sets: Vec<QuerySetUpdate> = Vec::new();
            for &(set, q) in pairs {
                if query_sets.last().is_none_or(|s| s.query_set_id != set) {
                    query_sets.push(QuerySetUpdate { query_set_id: set, tables: Vec::new() });
                }
                let table = self.set.query(q).expect("held").table();
                // A query held once (an area of interest, say) is encoded for its one
                // holder; one held by several is encoded once and copied.
                let update = if self.holders.get(&q).map_or(0, Vec::len) == 1 {
                    table_update(shape_of(&mut self.shapes, db, table), table, &deltas[&q], &mut memo)
                } else {
                    let shapes = &mut self.shapes;
                    let shared = tables.entry(q).or_insert_with(|| {
                        table_update(shape_of(shapes, db, table), table, &deltas[&q], &mut memo)
                    });
                    shared.clone()
                };
                query_sets.last_mut().expect("pushed").tables.push(update);
            }
            let message = Shared::new(&ServerMessage::TickUpdate {
                tick: output.tick.0,
                timestamp_us: output.timestamp.micros_since_epoch,
                query_sets,
            });
            messages.insert(pairs, Arc::clone(&message));
            out.push(Outgoing::Message { client, message });
        }
    }
}

/// A map whose memory is a tick's arena.
type ArenaMap<'a, K, V> = hashbrown::HashMap<K, V, hashbrown::DefaultHashBuilder, &'a Bump>;

fn shape_of<'a>(
    shapes: &'a mut HashMap<TableId, TableShape>,
    db: &Database,
    table: TableId,
) -> &'a TableShape {
    shapes.entry(table).or_insert_with(|| {
        let schema = Arc::clone(db.table(table).schema());
        let key =
            schema.primary_key.map(|pk| schema.unique[pk].columns.iter().map(|c| c.0 as usize).collect());
        TableShape { name: schema.name.clone(), schema, key }
    })
}

/// A query's delta as the protocol carries it: updates of rows with a primary key as
/// the key and the changed columns; other updates as a delete and an insert.
fn table_update<'d>(
    shape: &TableShape,
    table: TableId,
    delta: &'d Delta<'_>,
    memo: &mut UpdateMemo<'d>,
) -> TableUpdate {
    let mut update = TableUpdate {
        table_id: table.0,
        table_name: shape.name.clone(),
        inserts: row_list(&delta.inserts),
        deletes: row_list(&delta.deletes),
        updates: RowUpdates::default(),
    };
    let Some(key) = &shape.key else {
        for (old, new) in &delta.updates {
            update.deletes.push(old);
            update.inserts.push(new);
        }
        return update;
    };
    let ids: Vec<usize> =
        delta.updates.iter().map(|(old, new)| memo.id(shape, table, key, old, new)).collect();
    let encoded: Vec<Option<&EncodedUpdate>> = ids.iter().map(|&i| memo.encoded[i].as_ref()).collect();
    // Sized up front: growing these a row at a time cost more than filling them.
    let (n, updates) = (encoded.len(), &mut update.updates);
    let bytes = |f: fn(&EncodedUpdate) -> usize| encoded.iter().flatten().map(|e| f(e)).sum::<usize>();
    updates.keys =
        RowList { data: Vec::with_capacity(bytes(|e| e.key.len())), offsets: Vec::with_capacity(n) };
    updates.values =
        RowList { data: Vec::with_capacity(bytes(|e| e.values.len())), offsets: Vec::with_capacity(n) };
    updates.changed.reserve(bytes(|e| e.changed.len()));
    for (e, (old, new)) in encoded.into_iter().zip(&delta.updates) {
        match e {
            Some(e) => {
                updates.keys.push(&e.key);
                updates.changed.extend_from_slice(&e.changed);
                updates.values.push(&e.values);
            }
            None => {
                update.deletes.push(old);
                update.inserts.push(new);
            }
        }
    }
    update
}

/// Rows as a `RowList`, allocated once.
fn row_list(rows: &[std::borrow::Cow<'_, [u8]>]) -> RowList {
    let mut list = RowList {
        data: Vec::with_capacity(rows.iter().map(|r| r.len()).sum()),
        offsets: Vec::with_capacity(rows.len()),
    };
    rows.iter().for_each(|r| list.push(r));
    list
}

/// Row updates encoded in one tick, by table and new row: a row's new version names
/// it (it holds the primary key), and its old version is the same in every delta.
#[derive(Default)]
struct UpdateMemo<'d> {
    ids: hashbrown::HashMap<(TableId, &'d [u8]), usize>,
    /// By id; `None` for a row that does not decode.
    encoded: Vec<Option<EncodedUpdate>>,
}

impl<'d> UpdateMemo<'d> {
    /// The id of the update from `old` to `new`, encoded on first sight.
    fn id(&mut self, shape: &TableShape, table: TableId, key: &[usize], old: &[u8], new: &'d [u8]) -> usize {
        *self.ids.entry((table, new)).or_insert_with(|| {
            self.encoded.push(encode_update(shape, key, old, new));
            self.encoded.len() - 1
        })
    }
}

/// An update as `RowUpdates` carries it: the key, the changed-columns mask, and the
/// changed columns' new values.
struct EncodedUpdate {
    key: Vec<u8>,
    changed: Vec<u8>,
    values: Vec<u8>,
}

/// Where each column of an encoded row starts and ends.
fn columns(schema: &TableSchema, row: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut r = ValueReader::new(row);
    let mut spans = Vec::with_capacity(schema.columns.len());
    for ty in schema.column_types() {
        let start = r.position();
        skip(ty, &mut r).ok()?;
        spans.push((start, r.position()));
    }
    Some(spans)
}

/// `None` when a version does not decode (sent as a delete and an insert instead).
fn encode_update(shape: &TableShape, key: &[usize], old: &[u8], new: &[u8]) -> Option<EncodedUpdate> {
    let (old_cols, new_cols) = (columns(&shape.schema, old)?, columns(&shape.schema, new)?);
    let mut key_bytes = Vec::new();
    for &c in key {
        key_bytes.extend_from_slice(&new[new_cols[c].0..new_cols[c].1]);
    }
    let mut changed = vec![0; new_cols.len().div_ceil(8)];
    let mut values = Vec::new();
    for (c, (&(os, oe), &(ns, ne))) in old_cols.iter().zip(&new_cols).enumerate() {
        if old[os..oe] != new[ns..ne] {
            changed[c / 8] |= 1 << (c % 8);
            values.extend_from_slice(&new[ns..ne]);
        }
    }
    Some(EncodedUpdate { key: key_bytes, changed, values })
}

/// The sink of a served database: after each tick, the hub computes the subscription
/// updates; the log makes the tick durable; the gate lets the updates out once it is.
#[derive(Debug)]
pub struct FanoutSink {
    pub inner: DurableSink,
    pub hub: Arc<Mutex<Hub>>,
    pub gate: Arc<Mutex<Gate>>,
}

impl TickSink for FanoutSink {
    fn tick_committed(
        &mut self,
        db: &Database,
        mut output: TickOutput,
        mut releases: Releases,
    ) -> Result<(), String> {
        let wrote = output.log.as_ref().is_some_and(|log| log.tx_count > 0);
        let tick = output.tick.0;
        {
            let mut hub = lock(&self.hub);
            if wrote {
                hub.written = tick;
            }
            let started = std::time::Instant::now();
            let messages = hub.after_tick(db, &output);
            hub.eval_us.saturating_record(started.elapsed().as_micros() as u64);
            if !output.changes.is_empty() {
                hub.history.record(tick, std::mem::take(&mut output.changes));
            }
            self.gate.lock().expect("gate lock").send(hub.written, messages);
        }
        if wrote {
            releases.push(Box::new(GateRelease { gate: Arc::clone(&self.gate), tick }));
        } else {
            releases.push(Box::new(Wake(Arc::clone(&self.gate))));
        }
        self.inner.tick_committed(db, output, releases)
    }
}

/// Locks a hub. A panic while it was held (a bug) does not stop the event loops and
/// the tick thread from going on with it: they take it as it is.
pub fn lock(hub: &Mutex<Hub>) -> std::sync::MutexGuard<'_, Hub> {
    hub.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A one-off query's answer as a message.
pub fn query_result(
    db: &Database,
    hub: &Hub,
    reader: Reader,
    request_id: u32,
    sql: &str,
    limits: &QueryLimits,
) -> ServerMessage {
    let started = std::time::Instant::now();
    let outcome = hub
        .statements
        .prepare_for(db, &hub.visibility, reader, sql)
        .and_then(|bound| tickdb_sql::run(db, &bound, limits))
        .map_err(|e| e.to_string())
        .and_then(|result| encode_result(&result));
    ServerMessage::QueryResult { request_id, outcome, duration_us: started.elapsed().as_micros() as u64 }
}

fn encode_result(result: &tickdb_sql::QueryResult) -> Result<tickdb_protocol::QueryRows, String> {
    use tickdb_wasm_abi::{ProductType, Value, ValueType};
    let row_type =
        ValueType::Product(ProductType::new(result.columns.iter().map(|(n, t)| (n.clone(), t.clone()))));
    let mut rows = RowList::default();
    let mut buf = Vec::new();
    for row in &result.rows {
        buf.clear();
        tickdb_wasm_abi::encode(&row_type, &Value::Product(row.clone()), &mut buf)
            .map_err(|e| e.to_string())?;
        rows.push(&buf);
    }
    Ok(tickdb_protocol::QueryRows {
        columns: result.columns.iter().map(|(n, _)| n.clone()).collect(),
        row_type: tickdb_wasm_abi::encode_type(&row_type),
        rows,
    })
}

impl Hub {
    /// Sends a one-off query's answer through the gate (after the state it read is durable).
    pub fn answer(&self, client: ClientKey, message: &ServerMessage) {
        self.send_one(client, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(client: ClientKey) -> Outgoing {
        let m = ServerMessage::SubscriptionError { query_set_id: 1, message: String::new() };
        Outgoing::Message { client, message: Shared::new(&m) }
    }

    fn clients(rx: &mpsc::Receiver<Outgoing>) -> Vec<ClientKey> {
        rx.try_iter()
            .map(|o| match o {
                Outgoing::Message { client, .. } => client,
                Outgoing::Stopped { .. } => 0,
            })
            .collect()
    }

    /// Messages wait until the tick they show is durable, then leave in the order they
    /// were queued; messages showing a durable state leave at once unless older ones
    /// still wait; a failed log drops what waits and says the database stopped.
    #[test]
    fn the_gate_holds_messages_until_their_tick_is_durable() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (out, rx) = mpsc::channel();
        let gate = Gate::new("db".into(), 1, Routes::new(vec![(out, waker)]));
        let mut gate = gate.lock().unwrap();
        gate.send(0, vec![message(1)]);
        assert_eq!(clients(&rx), [1], "recovered state is durable");
        gate.send(5, vec![message(2)]);
        gate.send(6, vec![message(3)]);
        gate.send(0, vec![message(4)]);
        assert_eq!(clients(&rx), [] as [u64; 0], "nothing passes a waiting message");
        gate.durable(5);
        assert_eq!(clients(&rx), [2]);
        gate.durable(7);
        assert_eq!(clients(&rx), [3, 4]);
        gate.send(9, vec![message(5)]);
        gate.fail("the disk is full");
        assert_eq!(clients(&rx), [0], "only the stop");
        gate.durable(9);
        gate.send(1, vec![message(6)]);
        assert_eq!(clients(&rx), [] as [u64; 0], "a failed gate sends nothing more");
    }
}

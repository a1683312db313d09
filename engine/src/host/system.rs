//! One database's module instance as the tick loop's system: reducer calls, lifecycle
//! reducers, tick systems and scheduled reducers, each its own transaction.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Arc, mpsc};

use smallvec::SmallVec;
use tickdb_wasm_abi::abi::{CALL_HEADER_BYTES, call_result};
use tickdb_wasm_abi::{
    ColId, ConnectionId, Identity, Lifecycle, ProductType, Reader, ReducerDef, SCHEDULE_AT_INTERVAL,
    SCHEDULE_AT_TIME, TableSchema, TimeDuration, Timestamp, skip,
};

use super::imports::{GuestFault, MemoryLimitHit, Phase};
use super::logs::ModuleLogs;
use super::{HostConfig, Instance, LoadedModule, ModuleError, ModuleHost, trap_message, tx_slot};
use crate::changeset::TableChanges;
use crate::db::{Database, Tx};
use crate::ids::{TableId, TickId};
use crate::tick::{Release, Releases, TickContext, TickOutput, TickSystem};

/// Where the outcome of a call goes: `id` comes back in the [`CallReply`].
#[derive(Debug, Clone)]
pub struct ReplyTo {
    pub id: u64,
    pub to: mpsc::Sender<CallReply>,
}

/// The outcome of a call, sent once the tick that ran it has committed.
#[derive(Debug)]
pub struct CallReply {
    pub id: u64,
    pub tick: TickId,
    /// The reducer's return value in its return type's encoding (empty for `()`).
    pub outcome: Result<Vec<u8>, CallError>,
    /// For a call made [`ModuleWork::with_own_changes`] that committed: what the
    /// system's [`OwnChanges`] view made of its changes.
    pub own_changes: Option<Box<dyn Any + Send>>,
}

/// What a caller is told of its own call's changes: a view of them (through the
/// caller's subscriptions, say), made on the tick thread right after the call
/// commits, with the database as the call left it. See
/// [`ModuleSystem::set_own_changes`].
pub trait OwnChanges: Send + 'static {
    fn view(
        &mut self,
        db: &Database,
        connection: ConnectionId,
        changes: &[TableChanges],
    ) -> Option<Box<dyn Any + Send>>;
}

/// How a trap came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapKind {
    Deadline,
    OutOfMemory,
    StackOverflow,
    Panic,
    /// The module broke the ABI: a pointer outside its memory, a bad return code.
    AbiViolation,
    Other,
}

/// Why a call did not succeed. In every case its transaction rolled back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no reducer {0}")]
    NoSuchReducer(String),
    #[error("reducer `{reducer}`: invalid arguments: {why}")]
    InvalidArguments { reducer: String, why: String },
    /// The reducer returned `Err` with this message.
    #[error("{0}")]
    Failed(String),
    /// The module trapped; its instance was replaced.
    #[error("reducer `{reducer}`: {why}")]
    Trapped { reducer: String, kind: TrapKind, why: String },
    #[error("the module cannot run: {0}")]
    Unavailable(String),
    /// The call committed in memory, but its tick could not be made durable: the
    /// database stopped.
    #[error("the call ran, but the database could not make it durable: {0}")]
    NotDurable(String),
    /// Lifecycle reducers, tick systems and scheduled reducers are the host's to call.
    #[error("reducer `{0}` is called by the database itself, not by clients")]
    NotCallable(String),
}

/// One unit of work for a database's module: a transaction of its own.
#[derive(Debug)]
pub struct ModuleWork(Work);

/// A transaction the host runs natively (SQL DML, say).
pub type NativeFn = Box<dyn FnOnce(&mut Tx<'_>) -> Result<Vec<u8>, String> + Send>;

enum Work {
    Call {
        reducer: u32,
        /// The [`LoadedModule::stamp`] of the module `reducer` was resolved against; 0
        /// for the running one.
        module: u64,
        caller: Identity,
        connection: ConnectionId,
        args: Args,
        reply: Option<ReplyTo>,
        /// Whether the caller wants its changes in the reply.
        own: bool,
    },
    /// Logged as a call of `label` with `args` (the SQL text, say).
    Native {
        label: String,
        caller: Identity,
        connection: ConnectionId,
        args: Vec<u8>,
        run: NativeFn,
        reply: Option<ReplyTo>,
    },
    Lifecycle {
        which: Lifecycle,
        caller: Identity,
        connection: ConnectionId,
        reply: Option<ReplyTo>,
    },
    Tick {
        system: usize,
        delta: TimeDuration,
    },
    Scheduled {
        schedule: usize,
        key: Vec<u8>,
    },
    /// Deletes a one-shot schedule row whose reducer failed, so it does not run again.
    Cleanup {
        schedule: usize,
        key: Vec<u8>,
    },
}

/// Arguments stay inline up to this size: most reducer calls allocate nothing.
type Args = SmallVec<[u8; 40]>;

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Work::Call { reducer, .. } => write!(f, "Call({reducer})"),
            Work::Native { label, .. } => write!(f, "Native({label})"),
            Work::Lifecycle { which, .. } => write!(f, "Lifecycle({which:?})"),
            Work::Tick { system, .. } => write!(f, "Tick({system})"),
            Work::Scheduled { schedule, .. } => write!(f, "Scheduled({schedule})"),
            Work::Cleanup { schedule, .. } => write!(f, "Cleanup({schedule})"),
        }
    }
}

impl ModuleWork {
    /// A transaction run natively rather than by the module: `run` gets the
    /// transaction; its `Ok` bytes are the reply's value, its `Err` rolls back. The
    /// commit log records it as a call of `label` by `caller` with `args`.
    pub fn native(
        label: impl Into<String>,
        caller: Identity,
        connection: ConnectionId,
        args: Vec<u8>,
        run: NativeFn,
        reply: Option<ReplyTo>,
    ) -> ModuleWork {
        ModuleWork(Work::Native { label: label.into(), caller, connection, args, run, reply })
    }

    /// A call of reducer `reducer` (see [`LoadedModule::reducer_id`]) with encoded arguments.
    pub fn call(
        reducer: u32,
        caller: Identity,
        connection: ConnectionId,
        args: &[u8],
        reply: Option<ReplyTo>,
    ) -> ModuleWork {
        let args = Args::from_slice(args);
        ModuleWork(Work::Call { reducer, module: 0, caller, connection, args, reply, own: false })
    }

    /// Asks for a call's own changes in its reply (see [`OwnChanges`]); no effect on
    /// other work.
    pub fn with_own_changes(mut self) -> ModuleWork {
        if let Work::Call { own, .. } = &mut self.0 {
            *own = true;
        }
        self
    }

    /// As [`ModuleWork::call`], with `reducer` resolved against `module`: if the
    /// database's module is replaced before the call runs, it reaches the new module's
    /// reducer of the same name (or fails, naming the reducer, if there is none).
    pub fn call_of(
        module: &LoadedModule,
        reducer: u32,
        caller: Identity,
        connection: ConnectionId,
        args: &[u8],
        reply: Option<ReplyTo>,
    ) -> ModuleWork {
        let mut work = ModuleWork::call(reducer, caller, connection, args, reply);
        if let Work::Call { module: stamp, .. } = &mut work.0 {
            *stamp = module.stamp();
        }
        work
    }

    /// A lifecycle event: runs the module's reducer for it, if it has one. An `Err`
    /// from `ClientConnected` means the client is refused.
    pub fn lifecycle(
        which: Lifecycle,
        caller: Identity,
        connection: ConnectionId,
        reply: Option<ReplyTo>,
    ) -> ModuleWork {
        ModuleWork(Work::Lifecycle { which, caller, connection, reply })
    }
}

#[derive(Debug)]
struct TickTimer {
    reducer: u32,
    /// Whether clients' calls wait for this system's ticks (`batch_calls`).
    batch: bool,
    period: TimeDuration,
    next: Option<Timestamp>,
    last: Option<Timestamp>,
}

#[derive(Debug)]
struct Schedule {
    table: TableId,
    schema: TableSchema,
    pk: usize,
    at: ColId,
    reducer: u32,
}

/// When a schedule row wants its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Interval(TimeDuration),
    Time(Timestamp),
}

/// The shortest interval a repeating schedule may have; shorter ones are raised to it.
const INTERVAL_MIN: TimeDuration = TimeDuration::from_micros(1000);

/// A database's module: the tick loop's [`TickSystem`]; see the module docs.
#[derive(Debug)]
pub struct ModuleSystem {
    engine: wasmtime::Engine,
    _epoch: Arc<super::EpochThread>,
    config: Arc<HostConfig>,
    module: Arc<LoadedModule>,
    instance: Option<Instance>,
    logs: Arc<ModuleLogs>,
    /// The database's own identity: the caller of tick systems and scheduled reducers.
    identity: Identity,
    lifecycle: HashMap<Lifecycle, u32>,
    names: Vec<Arc<str>>,
    /// Per reducer: whether only the host calls it (lifecycle, tick, scheduled).
    internal: Vec<bool>,
    pending: Vec<Pending>,
    ticks: Vec<TickTimer>,
    schedules: Vec<Schedule>,
    queue: BTreeSet<(Timestamp, usize, Vec<u8>)>,
    queued: HashMap<(usize, Vec<u8>), Timestamp>,
    /// Schedule rows found at start, armed by the first tick (which knows the time).
    to_arm: Vec<(usize, Vec<u8>, At)>,
    cleanup: Vec<(usize, Vec<u8>)>,
    replaced: u64,
    /// The module this one replaced: its stamp and reducer names, to route calls
    /// resolved against it.
    previous: Option<Replaced>,
    /// Why the system takes no more work, once halted.
    halted: Option<String>,
    own_view: Option<Box<dyn OwnChanges>>,
    /// The connection of the last call run, whose own changes may follow, and
    /// whether it waits for a reply (which they go with).
    last_connection: ConnectionId,
    last_replied: bool,
}

/// A replaced module's stamp, and its reducers' names and parameters by id.
type Replaced = (u64, Vec<(Arc<str>, ProductType)>);

/// A reply waiting for its tick to commit.
struct Pending {
    reply: ReplyTo,
    outcome: Result<Vec<u8>, CallError>,
    own_changes: Option<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("reply", &self.reply.id).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for dyn OwnChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn OwnChanges")
    }
}

impl ModuleSystem {
    /// Sets up `module` over `db`: creates the tables it declares (or checks that the
    /// database's tables match them) and instantiates it.
    pub fn new(
        host: &ModuleHost,
        module: Arc<LoadedModule>,
        db: &mut Database,
        identity: Identity,
    ) -> Result<ModuleSystem, ModuleError> {
        let logs = Arc::new(ModuleLogs::new(host.config.log_lines_max));
        ModuleSystem::with_logs(host, module, db, identity, logs)
    }

    /// Replaces the running module with `module`, whose tables `db` must already have
    /// (see [`crate::migrate`]): scheduled rows are armed again, tick systems start
    /// over, the log goes on. Calls made against the replaced module (see
    /// [`ModuleWork::call_of`]) still reach the reducer of the same name. On error
    /// nothing changed.
    pub fn replace_module(
        &mut self,
        host: &ModuleHost,
        module: Arc<LoadedModule>,
        db: &mut Database,
    ) -> Result<(), ModuleError> {
        let mut next = ModuleSystem::with_logs(host, module, db, self.identity, Arc::clone(&self.logs))?;
        let reducers =
            self.module.def.reducers.iter().map(|r| (Arc::from(r.name.as_str()), r.params.clone()));
        next.previous = Some((self.module.stamp(), reducers.collect()));
        next.replaced = self.replaced;
        next.own_view = self.own_view.take();
        *self = next;
        Ok(())
    }

    fn with_logs(
        host: &ModuleHost,
        module: Arc<LoadedModule>,
        db: &mut Database,
        identity: Identity,
        logs: Arc<ModuleLogs>,
    ) -> Result<ModuleSystem, ModuleError> {
        // Instantiated first: a module that fails to start leaves the database alone.
        let instance = Instance::new(host, &module, Arc::clone(&logs))?;
        for schema in &module.def.tables {
            match db.table_id(&schema.name) {
                Ok(id) if **db.table(id).schema() == *schema => {}
                Ok(_) => {
                    let why = "its schema changed; migrations come with republishing".into();
                    return Err(ModuleError::SchemaChanged { table: schema.name.clone(), why });
                }
                Err(_) => {
                    db.create_table(schema.clone())?;
                }
            }
        }
        let def = &module.def;
        let reducer = |name: &str| module.reducer_id(name).expect("the definition was validated");
        let lifecycle = def.reducers.iter().enumerate();
        let lifecycle: HashMap<_, _> =
            lifecycle.filter_map(|(i, r)| Some((r.lifecycle?, i as u32))).collect();
        let names: Vec<Arc<str>> = def.reducers.iter().map(|r| Arc::from(r.name.as_str())).collect();
        let internal = def
            .reducers
            .iter()
            .map(|r| {
                r.lifecycle.is_some()
                    || def.tick_systems.iter().any(|t| t.reducer == r.name)
                    || def.schedules.iter().any(|s| s.reducer == r.name)
            })
            .collect();
        let ticks: Vec<_> = def
            .tick_systems
            .iter()
            .map(|t| TickTimer {
                reducer: reducer(&t.reducer),
                batch: t.batch_calls,
                period: TimeDuration::from_micros((1_000_000 / i64::from(t.hz)).max(1)),
                next: None,
                last: None,
            })
            .collect();
        let mut schedules = Vec::new();
        let mut to_arm = Vec::new();
        for (s, sd) in def.schedules.iter().enumerate() {
            let table = db.table_id(&sd.table)?;
            let schema = (**db.table(table).schema()).clone();
            let (pk, at) =
                (schema.primary_key.expect("validated"), schema.column(&sd.at_column).expect("validated"));
            let schedule = Schedule { table, schema, pk, at, reducer: reducer(&sd.reducer) };
            for row in db.table(table).iter() {
                let bytes = row.to_bytes();
                if let Some((key, at)) = schedule.key_and_at(&bytes) {
                    to_arm.push((s, key, at));
                }
            }
            schedules.push(schedule);
        }
        Ok(ModuleSystem {
            engine: host.engine.clone(),
            _epoch: Arc::clone(&host.epoch),
            config: Arc::clone(&host.config),
            module,
            instance: Some(instance),
            logs,
            identity,
            lifecycle,
            names,
            internal,
            pending: Vec::new(),
            ticks,
            schedules,
            queue: BTreeSet::new(),
            queued: HashMap::new(),
            to_arm,
            cleanup: Vec::new(),
            replaced: 0,
            previous: None,
            halted: None,
            own_view: None,
            last_connection: ConnectionId::default(),
            last_replied: false,
        })
    }

    pub fn module(&self) -> &Arc<LoadedModule> {
        &self.module
    }

    /// The database's log: module log lines and the host's notes.
    pub fn logs(&self) -> Arc<ModuleLogs> {
        Arc::clone(&self.logs)
    }

    /// The id in the running module of reducer `reducer` of the module stamped `module`.
    fn route(&self, reducer: u32, module: u64) -> Result<u32, CallError> {
        if module == 0 || module == self.module.stamp() {
            return Ok(reducer);
        }
        let gone =
            || CallError::NoSuchReducer(format!("with id {reducer} (the module was replaced: call again)"));
        let Some((stamp, reducers)) = &self.previous else { return Err(gone()) };
        let (name, params) = reducers.get(reducer as usize).filter(|_| *stamp == module).ok_or_else(gone)?;
        let id = self.module.reducer_id(name).ok_or_else(|| {
            CallError::NoSuchReducer(format!("`{name}` (the module was replaced by one without it)"))
        })?;
        if self.module.def.reducers[id as usize].params != *params {
            // The arguments were encoded for the old parameters.
            let why = "the module was replaced and its parameters changed: call again".to_string();
            return Err(CallError::InvalidArguments { reducer: name.to_string(), why });
        }
        Ok(id)
    }

    /// Sets what callers that ask for their own changes are told of them.
    pub fn set_own_changes(&mut self, view: Box<dyn OwnChanges>) {
        self.own_view = Some(view);
    }

    /// Fails every work item from now on with `why`, changing nothing: for a database
    /// whose state in memory must not reach its log (a migration that could not be
    /// recorded), until it is stopped.
    pub fn halt(&mut self, why: String) {
        self.halted = Some(why);
    }

    /// How many times the instance was replaced after a trap.
    pub fn instances_replaced(&self) -> u64 {
        self.replaced
    }

    /// Runs one reducer in the instance, inside `tx`.
    #[allow(clippy::too_many_arguments)]
    fn invoke(
        &mut self,
        tx: &mut Tx<'_>,
        ctx: &mut TickContext<'_>,
        reducer: u32,
        caller: Identity,
        connection: ConnectionId,
        args: &[u8],
        delta: TimeDuration,
    ) -> Result<Vec<u8>, CallError> {
        let def = &self.module.def.reducers[reducer as usize];
        check_args(def, args)
            .map_err(|why| CallError::InvalidArguments { reducer: def.name.clone(), why })?;
        if self.instance.is_none() {
            self.instance = Some(self.fresh_instance().map_err(|e| CallError::Unavailable(e.to_string()))?);
        }
        let instance = self.instance.as_mut().expect("set above");
        let env = &mut instance.store.data_mut().env;
        env.phase = Phase::Call;
        env.reducer = Some(Arc::clone(&self.names[reducer as usize]));
        env.timestamp = ctx.timestamp;
        env.input.clear();
        env.input.extend_from_slice(&caller.0);
        env.input.extend_from_slice(&connection.0);
        env.input.extend_from_slice(&ctx.timestamp.micros_since_epoch.to_le_bytes());
        env.input.extend_from_slice(&ctx.rng().next_u64().to_le_bytes());
        env.input.extend_from_slice(&delta.micros.to_le_bytes());
        debug_assert_eq!(env.input.len(), CALL_HEADER_BYTES);
        env.input.extend_from_slice(args);
        instance.store.set_epoch_deadline(self.config.deadline_ticks());
        let Instance { store, call, .. } = instance;
        let result = catch_unwind(AssertUnwindSafe(|| {
            tx_slot::with_tx(store, tx, |store| call.call(store, (reducer, args.len() as u32)))
        }));
        let (output, error) = store.data_mut().env.end_call();
        let result = match result {
            Ok(result) => result,
            Err(panic) => {
                // A bug in a host function: the instance may be mid-call; drop it.
                self.instance = None;
                resume_unwind(panic);
            }
        };
        let reducer_name = || def.name.clone();
        match result {
            Ok(call_result::OK) => {
                let value = output.unwrap_or_default();
                let mut r = Reader::new(&value);
                match skip(&def.returns, &mut r) {
                    Ok(()) if r.remaining() == 0 => Ok(value),
                    _ => {
                        let why = format!("ABI violation: the returned value is not a valid {}", def.returns);
                        let error =
                            CallError::Trapped { reducer: reducer_name(), kind: TrapKind::AbiViolation, why };
                        self.replace_instance(ctx.timestamp, &error);
                        Err(error)
                    }
                }
            }
            Ok(call_result::ERR) => {
                Err(CallError::Failed(error.unwrap_or_else(|| "the reducer failed without a message".into())))
            }
            Ok(code) => {
                let why = format!("ABI violation: `__call_reducer__` returned {code}; expected 0 or 1");
                let error = CallError::Trapped { reducer: reducer_name(), kind: TrapKind::AbiViolation, why };
                self.replace_instance(ctx.timestamp, &error);
                Err(error)
            }
            Err(e) => {
                let kind = trap_kind(&e, error.is_some());
                let why = trap_message(&e, error.as_deref(), &self.config);
                let error = CallError::Trapped { reducer: reducer_name(), kind, why };
                self.replace_instance(ctx.timestamp, &error);
                Err(error)
            }
        }
    }

    fn fresh_instance(&self) -> Result<Instance, ModuleError> {
        Instance::with_engine(&self.engine, &self.config, &self.module, Arc::clone(&self.logs))
    }

    /// A trap may leave the module's memory in any state (an allocator halfway through
    /// an update, say): the instance is dropped and a fresh one takes its place.
    fn replace_instance(&mut self, now: Timestamp, cause: &CallError) {
        self.instance = None;
        self.replaced += 1;
        let message = format!("{cause}; the module instance was replaced");
        self.logs.host(1, now, None, message);
        match self.fresh_instance() {
            Ok(instance) => self.instance = Some(instance),
            Err(e) => {
                self.logs.host(1, now, None, format!("the module could not be instantiated again: {e}"))
            }
        }
    }

    /// Keeps the outcome for the caller and tells the tick loop whether to commit.
    fn finish(&mut self, reply: Option<ReplyTo>, outcome: Result<Vec<u8>, CallError>) -> Result<(), String> {
        let result = outcome.as_ref().map(|_| ()).map_err(ToString::to_string);
        if let Some(reply) = reply {
            self.pending.push(Pending { reply, outcome, own_changes: None });
        }
        result
    }

    /// Logs the failure of a call nobody waits for.
    fn log_failure(&self, now: Timestamp, what: String, outcome: &Result<Vec<u8>, CallError>) {
        if let Err(e) = outcome {
            self.logs.host(1, now, None, format!("{what} failed: {e}"));
        }
    }

    fn run_scheduled(
        &mut self,
        tx: &mut Tx<'_>,
        ctx: &mut TickContext<'_>,
        s: usize,
        key: Vec<u8>,
    ) -> Result<(), String> {
        let (table, pk, reducer) = (self.schedules[s].table, self.schedules[s].pk, self.schedules[s].reducer);
        let Ok(Some(row_id)) = tx.table(table).find_unique_encoded(pk, &key) else {
            return Ok(()); // The row was deleted: the call is cancelled.
        };
        let row = tx.table(table).get(row_id).expect("found by key").to_bytes();
        let Some((_, at)) = self.schedules[s].key_and_at(&row) else {
            return Ok(());
        };
        if let At::Time(due) = at
            && due > ctx.timestamp
        {
            // An earlier call this tick postponed it.
            self.arm(s, key, due);
            return Ok(());
        }
        let outcome = self.invoke(
            tx,
            ctx,
            reducer,
            self.identity,
            ConnectionId::default(),
            &row,
            TimeDuration::default(),
        );
        match at {
            At::Interval(every) => self.arm(s, key, add(ctx.timestamp, every.max(INTERVAL_MIN))),
            At::Time(_) if outcome.is_ok() => {
                if let Ok(Some(id)) = tx.table(table).find_unique_encoded(pk, &key) {
                    tx.delete(table, id).map_err(|e| e.to_string())?;
                }
            }
            At::Time(_) => self.cleanup.push((s, key)),
        }
        let name = &self.module.def.reducers[reducer as usize].name;
        self.log_failure(ctx.timestamp, format!("scheduled reducer `{name}`"), &outcome);
        outcome.map(|_| ()).map_err(|e| e.to_string())
    }

    fn arm(&mut self, s: usize, key: Vec<u8>, due: Timestamp) {
        if let Some(old) = self.queued.insert((s, key.clone()), due) {
            self.queue.remove(&(old, s, key.clone()));
        }
        self.queue.insert((due, s, key));
    }

    fn disarm(&mut self, s: usize, key: Vec<u8>) {
        if let Some(old) = self.queued.remove(&(s, key.clone())) {
            self.queue.remove(&(old, s, key));
        }
    }
}

/// A tick's replies, sent once the tick is durable.
struct ReplyBatch {
    tick: TickId,
    replies: Vec<Pending>,
}

impl Release for ReplyBatch {
    fn release(self: Box<Self>, outcome: Result<(), &str>) {
        for Pending { reply, outcome: result, own_changes } in self.replies {
            let (result, own_changes) = match outcome {
                Ok(()) => (result, own_changes),
                Err(why) => (Err(CallError::NotDurable(why.to_string())), None),
            };
            // A caller that hung up no longer wants the answer.
            let _ = reply.to.send(CallReply { id: reply.id, tick: self.tick, outcome: result, own_changes });
        }
    }
}

/// A call's metadata in the commit log: the reducer's name (`u32` length, UTF-8), the
/// caller's identity (32) and connection (16), and the arguments (`u32` length, bytes).
pub fn log_meta(out: &mut Vec<u8>, reducer: &str, caller: Identity, connection: ConnectionId, args: &[u8]) {
    out.extend_from_slice(&(reducer.len() as u32).to_le_bytes());
    out.extend_from_slice(reducer.as_bytes());
    out.extend_from_slice(&caller.0);
    out.extend_from_slice(&connection.0);
    out.extend_from_slice(&(args.len() as u32).to_le_bytes());
    out.extend_from_slice(args);
}

fn add(t: Timestamp, d: TimeDuration) -> Timestamp {
    Timestamp::from_micros(t.micros_since_epoch.saturating_add(d.micros))
}

impl Schedule {
    /// The primary key (concatenated column encodings) and the due time of a row.
    fn key_and_at(&self, row: &[u8]) -> Option<(Vec<u8>, At)> {
        let parts = column_ranges(&self.schema, row)?;
        let key =
            self.schema.unique[self.pk].columns.iter().flat_map(|c| &row[parts[c.index()].clone()]).copied();
        let at = &row[parts[self.at.index()].clone()];
        let micros = i64::from_le_bytes(at.get(1..9)?.try_into().ok()?);
        let at = match at[0] {
            SCHEDULE_AT_INTERVAL => At::Interval(TimeDuration::from_micros(micros)),
            SCHEDULE_AT_TIME => At::Time(Timestamp::from_micros(micros)),
            _ => return None,
        };
        Some((key.collect(), at))
    }
}

/// Where each column's encoding lies in an encoded row.
fn column_ranges(schema: &TableSchema, row: &[u8]) -> Option<SmallVec<[Range<usize>; 16]>> {
    let mut r = Reader::new(row);
    let mut parts = SmallVec::new();
    for column in &schema.columns {
        let start = r.position();
        skip(&column.ty, &mut r).ok()?;
        parts.push(start..r.position());
    }
    Some(parts)
}

fn check_args(def: &ReducerDef, args: &[u8]) -> Result<(), String> {
    let mut r = Reader::new(args);
    for field in &def.params.fields {
        skip(&field.ty, &mut r).map_err(|e| format!("`{}` ({}): {e}", field.name, field.ty))?;
    }
    match r.remaining() {
        0 => Ok(()),
        extra => Err(format!("{extra} bytes after the last argument")),
    }
}

fn trap_kind(error: &wasmtime::Error, panicked: bool) -> TrapKind {
    if error.downcast_ref::<MemoryLimitHit>().is_some() {
        return TrapKind::OutOfMemory;
    }
    if error.downcast_ref::<GuestFault>().is_some() {
        return TrapKind::AbiViolation;
    }
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => TrapKind::Deadline,
        Some(wasmtime::Trap::StackOverflow) => TrapKind::StackOverflow,
        Some(wasmtime::Trap::UnreachableCodeReached) if panicked => TrapKind::Panic,
        _ => TrapKind::Other,
    }
}

impl TickSystem for ModuleSystem {
    type Work = ModuleWork;

    fn batch_due(&self) -> Option<Timestamp> {
        let now_please = Timestamp::from_micros(i64::MIN);
        self.ticks.iter().filter(|t| t.batch).map(|t| t.next.unwrap_or(now_please)).min()
    }

    fn run_work(
        &mut self,
        tx: &mut Tx<'_>,
        ctx: &mut TickContext<'_>,
        work: ModuleWork,
    ) -> Result<(), String> {
        let zero = TimeDuration::default();
        if let Some(why) = &self.halted {
            let why = why.clone();
            let reply = match work.0 {
                Work::Call { reply, .. } | Work::Native { reply, .. } | Work::Lifecycle { reply, .. } => {
                    reply
                }
                _ => None,
            };
            return self.finish(reply, Err(CallError::Failed(why)));
        }
        match work.0 {
            Work::Call { reducer, module, caller, connection, args, reply, .. } => {
                (self.last_connection, self.last_replied) = (connection, reply.is_some());
                let reducer = match self.route(reducer, module) {
                    Ok(reducer) => reducer,
                    Err(e) => return self.finish(reply, Err(e)),
                };
                let outcome = match self.internal.get(reducer as usize) {
                    Some(false) => self.invoke(tx, ctx, reducer, caller, connection, &args, zero),
                    Some(true) => Err(CallError::NotCallable(self.names[reducer as usize].to_string())),
                    None => Err(CallError::NoSuchReducer(format!("with id {reducer}"))),
                };
                self.finish(reply, outcome)
            }
            Work::Native { run, reply, .. } => {
                let outcome = run(tx).map_err(CallError::Failed);
                self.finish(reply, outcome)
            }
            Work::Lifecycle { which, caller, connection, reply } => {
                let outcome = match self.lifecycle.get(&which) {
                    Some(&reducer) => self.invoke(tx, ctx, reducer, caller, connection, &[], zero),
                    None => Ok(Vec::new()),
                };
                self.finish(reply, outcome)
            }
            Work::Tick { system, delta } => {
                let reducer = self.ticks[system].reducer;
                let outcome =
                    self.invoke(tx, ctx, reducer, self.identity, ConnectionId::default(), &[], delta);
                let name = &self.module.def.reducers[reducer as usize].name;
                self.log_failure(ctx.timestamp, format!("tick system `{name}`"), &outcome);
                outcome.map(|_| ()).map_err(|e| e.to_string())
            }
            Work::Scheduled { schedule, key } => self.run_scheduled(tx, ctx, schedule, key),
            Work::Cleanup { schedule, key } => {
                let (table, pk) = (self.schedules[schedule].table, self.schedules[schedule].pk);
                if let Ok(Some(id)) = tx.table(table).find_unique_encoded(pk, &key) {
                    tx.delete(table, id).map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }
    }

    fn due_work(&mut self, now: Timestamp, out: &mut Vec<ModuleWork>) {
        for (system, timer) in self.ticks.iter_mut().enumerate() {
            let next = *timer.next.get_or_insert(now);
            if next > now {
                continue;
            }
            let delta = timer.last.map(|last| now.duration_since(last)).unwrap_or_default();
            timer.last = Some(now);
            let following = add(next, timer.period);
            // Missed periods are skipped, not made up.
            timer.next = Some(if following > now { following } else { add(now, timer.period) });
            out.push(ModuleWork(Work::Tick { system, delta }));
        }
        for (s, key, at) in std::mem::take(&mut self.to_arm) {
            let due = match at {
                At::Time(t) => t,
                At::Interval(every) => add(now, every.max(INTERVAL_MIN)),
            };
            self.arm(s, key, due);
        }
        out.extend(self.cleanup.drain(..).map(|(schedule, key)| ModuleWork(Work::Cleanup { schedule, key })));
        while let Some(first) = self.queue.first()
            && first.0 <= now
        {
            let (_, schedule, key) = self.queue.pop_first().expect("checked");
            self.queued.remove(&(schedule, key.clone()));
            out.push(ModuleWork(Work::Scheduled { schedule, key }));
        }
    }

    fn next_due(&self) -> Option<Timestamp> {
        let now_please = Timestamp::from_micros(i64::MIN);
        if !self.to_arm.is_empty() || !self.cleanup.is_empty() {
            return Some(now_please);
        }
        let ticks = self.ticks.iter().map(|t| t.next.unwrap_or(now_please));
        ticks.chain(self.queue.first().map(|e| e.0)).min()
    }

    fn log_meta(&self, work: &ModuleWork, out: &mut Vec<u8>) {
        let (reducer, caller, connection, args): (&str, Identity, ConnectionId, &[u8]) = match &work.0 {
            Work::Call { reducer, module, caller, connection, args, .. } => {
                // Logged under the reducer it will run as (see `route`).
                let routed = self.route(*reducer, *module).ok();
                let name = routed.and_then(|r| self.names.get(r as usize)).map_or("", |n| n);
                (name, *caller, *connection, args)
            }
            Work::Native { label, caller, connection, args, .. } => {
                (label.as_str(), *caller, *connection, &args[..])
            }
            Work::Lifecycle { which, caller, connection, .. } => {
                let name = self.lifecycle.get(which).map_or("", |&r| &self.names[r as usize]);
                (name, *caller, *connection, &[])
            }
            Work::Tick { system, .. } => (
                &self.names[self.ticks[*system].reducer as usize],
                self.identity,
                ConnectionId::default(),
                &[],
            ),
            Work::Scheduled { schedule, key } | Work::Cleanup { schedule, key } => {
                let reducer = self.schedules[*schedule].reducer;
                (&self.names[reducer as usize], self.identity, ConnectionId::default(), key)
            }
        };
        log_meta(out, reducer, caller, connection, args);
    }

    fn wants_own_changes(&self, work: &ModuleWork) -> bool {
        matches!(work.0, Work::Call { own: true, .. }) && self.own_view.is_some()
    }

    fn own_changes(&mut self, db: &Database, changes: Vec<TableChanges>) {
        if !self.last_replied {
            return;
        }
        let (Some(view), Some(pending)) = (&mut self.own_view, self.pending.last_mut()) else { return };
        pending.own_changes = view.view(db, self.last_connection, &changes);
    }

    fn tick_done(&mut self, _db: &Database, output: &TickOutput, releases: &mut Releases) {
        if !self.pending.is_empty() {
            let replies = std::mem::take(&mut self.pending);
            releases.push(Box::new(ReplyBatch { tick: output.tick, replies }));
        }
        for changes in &output.changes {
            let Some(s) = self.schedules.iter().position(|s| s.table == changes.table) else {
                continue;
            };
            // An update that keeps the row's key and time leaves its timer alone.
            let schedule = &self.schedules[s];
            let moved: Vec<(&[u8], &[u8])> = changes
                .updates()
                .filter(|(old, new)| {
                    let (old, new) = (schedule.key_and_at(old), schedule.key_and_at(new));
                    !matches!((old, new), (Some((ko, ao)), Some((kn, an))) if ko == kn && ao == an)
                })
                .collect();
            let rows = changes.deletes.iter().chain(moved.iter().map(|(old, _)| *old));
            let gone: Vec<_> = rows.filter_map(|row| schedule.key_and_at(row)).collect();
            let rows = changes.inserts.iter().chain(moved.iter().map(|(_, new)| *new));
            let new: Vec<_> = rows.filter_map(|row| schedule.key_and_at(row)).collect();
            gone.into_iter().for_each(|(key, _)| self.disarm(s, key));
            for (key, at) in new {
                let due = match at {
                    At::Time(t) => t,
                    At::Interval(every) => add(output.timestamp, every.max(INTERVAL_MIN)),
                };
                self.arm(s, key, due);
            }
        }
    }
}
